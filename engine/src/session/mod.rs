//! The session: the one public state machine of the engine.
//!
//! A [`Session`] is one end of a bonded tunnel (an edge, or the gateway's state for one edge).
//! It owns the links, their monitors, the scheduler, the send queue, the dedup window and the
//! reorder buffer. It never reads a clock, never draws randomness from anywhere but its seed, and
//! never touches a socket.
//!
//! # Call order
//! 1. Feed inputs: [`Session::handle_frame`] (a frame from the local TAP),
//!    [`Session::handle_datagram`] (a UDP payload from a link), [`Session::handle_link_event`]
//!    (carrier from netlink), [`Session::handle_timeout`] (when [`Session::poll_timeout`] is due).
//! 2. After *any* input, drain [`Session::poll_transmit`], [`Session::poll_frame`] and
//!    [`Session::poll_event`] until each returns `None`.
//! 3. Sleep until [`Session::poll_timeout`], or the next input, whichever is first.
//!
//! # Layout
//! The session's state is split into sub-state types, each in its own file with its own tests:
//! * `config.rs`: [`Role`], [`LinkConfig`], [`SessionConfig`] and [`SetupError`];
//! * `link.rs`: one link, as what it sends, what it receives and what it owes the peer;
//! * `keys.rs`: key generations and their rotation;
//! * `recv.rs`: opening a datagram, path migration, data and control messages;
//! * `send.rs`: a frame's entry, the order of what goes out, and sealing;
//! * `recovery.rs`: NAKs, re-sends, and what a dead link swallowed;
//! * `fec.rs`: recovery shards out, and frames rebuilt from the peer's;
//! * `timers.rs`: [`TimerKind`], [`Session::poll_timeout`] and [`Session::handle_timeout`].

mod config;
mod fec;
mod keys;
mod link;
mod recovery;
mod recv;
mod send;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::SessionKeys;
use crate::fragment::Reassembly;
use crate::monitor::{LinkQuality, LinkState, Transition};
use crate::pmtu::Phase;
use crate::release::Pacer;
use crate::reorder::ReorderBuffer;
use crate::rng::Rng;
use crate::scheduler::{LinkView, Mode, Scheduler};
use crate::stats::{LinkStats, SessionStats};
use crate::window::SeqWindow;
use crate::wire::{ControlMessage, Placement};
use crate::{FrameSeq, LinkId, LinkSet, MAX_LINKS, SessionIndex};

pub use self::config::{
    DEFAULT_LATENCY_BUDGET, DEFAULT_MAX_DATAGRAM, DEFAULT_MAX_FRAME_RATE, FecConfig, LinkConfig, Role, SessionConfig,
    SetupError,
};
pub use self::fec::FEC_SPREAD;
pub use self::keys::{KEY_GRACE, REJECT_AFTER_TIME};
pub use self::link::{ENTRY_SUSTAIN, MTU_SUSPECT_LOSS, PATH_REPLAY_WINDOW, SENT_LOG_SPACING};
pub use self::recovery::{DATA_RECENT, DEFAULT_RTO, MAX_NAKS_PER_PACKET, MIN_RESEND_GAP, RESEND_SPACING};
pub use self::send::{BUSY_QUEUE, MAX_QUEUE_DELAY, MAX_QUEUED_FRAMES, MIN_FRAME_LEN};
pub use self::timers::{Earliest, TimerKind};
pub use crate::reorder::REORDER_MARGIN;
pub use crate::stats::DropReason;

use self::keys::Keys;
use self::link::Link;
use self::recovery::{Recovery, Swallowed};
use self::send::Pending;

/// A carrier change reported by the OS (netlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkEvent {
    /// The interface has carrier again.
    CarrierUp,
    /// The interface lost carrier: the link goes down at once.
    CarrierDown,
}

/// Why the stream moved to another gateway ([`Event::GatewayTakeover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverReason {
    /// The active gateway stopped answering on every link while another answered.
    Silent,
    /// The active gateway said it is being drained: the move was make-before-break.
    Drained,
    /// A gateway earlier in the list answered for the hold-down: the stream went back to it,
    /// make-before-break.
    Returned,
    /// The active gateway's fleet placed the edge on another gateway it pins: the stream went
    /// there, make-before-break.
    Redirected,
}

impl TakeoverReason {
    /// A short name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::Drained => "drained",
            Self::Returned => "returned",
            Self::Redirected => "redirected",
        }
    }
}

/// Something the session wants the driver to know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A link changed state.
    LinkState {
        /// The link.
        link: LinkId,
        /// What changed, and why.
        transition: Transition,
        /// Its measurements at the time.
        quality: LinkQuality,
    },
    /// A handshake completed and its keys are in use (or, at the gateway, installed).
    Handshake {
        /// This end's index for the new keys.
        index: SessionIndex,
        /// Whether the peer continued the session rather than starting afresh.
        resumed: bool,
        /// The peer's address.
        peer: SocketAddr,
        /// Whether the session carries the stream: always at a gateway; at an edge, false for a
        /// standby gateway's.
        carrying: bool,
    },
    /// Handshakes have not completed for a while, and this is why as far as the edge can tell
    /// (edge only): at once for a cause seen, after [`crate::endpoint::edge::TROUBLE_AFTER`]
    /// of silence, and again with backoff while it lasts.
    HandshakeTrouble {
        /// The cause.
        trouble: crate::endpoint::edge::HandshakeTrouble,
        /// The gateway's address.
        gateway: SocketAddr,
        /// The links the initiations went out on (those with carrier).
        links: LinkSet,
        /// How long since the first initiation that is still unanswered.
        waited: Duration,
        /// Initiations sent since.
        attempts: u64,
    },
    /// The gateway answered data with this session's "no such session" token: it lost the
    /// session (it restarted), and a new handshake is under way at once (edge only).
    NoSession {
        /// The link the answer came in on.
        link: LinkId,
        /// The gateway's address.
        gateway: SocketAddr,
    },
    /// The stream moved to another gateway (edge only): the active one stopped answering on
    /// every link or is being drained while a standby answered, or an earlier one is back.
    GatewayTakeover {
        /// The gateway that stopped answering.
        from: SocketAddr,
        /// The gateway that carries the stream now.
        to: SocketAddr,
        /// Frames moved: sent to the old gateway and not confirmed, or not yet sent.
        frames: usize,
        /// Why the stream moved.
        reason: TakeoverReason,
    },
    /// The edge made this gateway's session a standby (another gateway carries its stream), or
    /// took it up again (gateway only). A standby session takes no frames from the LAN
    /// ([`DropReason::Standby`]): the driver forgets the rig's addresses on its bridge.
    PeerStandby {
        /// Whether the session is a standby now.
        standby: bool,
    },
    /// A link's remote address changed, proven by an authenticated packet (gateway only).
    PathChanged {
        /// The link.
        link: LinkId,
        /// The old address, if any.
        from: Option<SocketAddr>,
        /// The new address.
        to: SocketAddr,
    },
}

/// A peer that said it is being drained is taken to be for this long after it last said so (it
/// says so on every probe, every link's probe interval).
pub const DRAINING_HEARD: Duration = Duration::from_secs(1);
/// A standby session (the edge keeps it ready while another gateway carries the stream) is
/// probed this many times less often, at both ends (`monitor.standby_probe_factor`): its
/// per-link health stays known at a fifth of the carrying session's probe traffic.
pub const STANDBY_PROBE_FACTOR: u32 = 5;

/// The share of what the links carry that [`Session::safe_bitrate`] advises the stream to use:
/// headroom for the rate estimates' error, retransmissions, and the tunnel's and the stream's
/// own headers (about 8% of a 1316-byte MPEG-TS datagram).
pub const SAFE_BITRATE_SHARE: f64 = 0.8;

/// A datagram to send: its bytes are in the buffer passed to [`Session::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The link (socket) to send it on.
    pub link: LinkId,
    /// Where to send it.
    pub destination: SocketAddr,
}

/// A frame delivered by [`Session::poll_frame`]; its bytes are in the buffer passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The frame's sequence.
    pub seq: FrameSeq,
    /// How long it waited in the reorder buffer.
    pub held: Duration,
}

/// One end of a bonded tunnel. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    epoch: Instant,
    rng: Rng,
    keys: Keys,
    links: Vec<Option<Link>>,
    scheduler: Box<dyn Scheduler>,
    next_frame_seq: u64,
    queue: VecDeque<Pending>,
    /// This end is being drained: every probe says so.
    draining: bool,
    /// When the peer last said it was being drained.
    peer_draining_at: Option<Instant>,
    /// Where this end (a gateway of a fleet) puts the peer: every probe says so.
    placement: Option<Placement>,
    /// Where the peer last said this end belongs, and when.
    peer_placement: Option<(Placement, Instant)>,
    /// Until when a one-time backlog drains (see [`Session::adopt_frame`]).
    backlog_until: Option<Instant>,
    /// The frames, `[from, to)`, this session handed over to another: its peer never gets them.
    handed_over: Option<(u64, u64)>,
    /// This end keeps the session as a standby: every probe says so.
    standby: bool,
    /// The peer's last probe said it keeps the session as a standby, and no data came since.
    peer_standby: bool,
    recovery: Recovery,
    reorder: ReorderBuffer,
    /// Paces what the reorder buffer releases to the local side.
    pacer: Pacer,
    /// Frames arriving in pieces.
    reassembly: Reassembly,
    /// The blocks of frames this end protects with recovery shards, if it does.
    fec_tx: Option<self::fec::FecSend>,
    /// The peer's frames kept for rebuilding, once it has sent a recovery shard.
    fec_rx: Option<crate::fec::FecDecoder>,
    /// The first one-way delay sample: later samples are relative to it, so the two clocks'
    /// offset cancels and only differences between links matter.
    owd_base: Option<u32>,
    events: VecDeque<Event>,
    stats: SessionStats,
    /// The next packet number of each link removed while running: a link added again in its
    /// slot goes on from there, so that no nonce is used twice under the same keys.
    retired_pn: [u64; MAX_LINKS],
    views: Vec<LinkView>,
    scratch: Vec<u8>,
    pool: Vec<Vec<u8>>,
}

impl Session {
    /// Builds a session from the keys a handshake produced.
    ///
    /// # Errors
    /// [`SetupError`] if the links or durations make no sense.
    pub fn new(
        role: Role,
        config: SessionConfig,
        keys: SessionKeys,
        now: Instant,
        seed: u64,
    ) -> Result<Self, SetupError> {
        config.validate(role)?;
        let mut rng = Rng::new(seed);
        let mut links: Vec<Option<Link>> = (0..MAX_LINKS).map(|_| None).collect();
        for link in &config.links {
            let slot = link.id.index().ok_or(SetupError::LinkOutOfRange(link.id.get()))?;
            // Spread the first probes over the first interval so links do not tick in lockstep.
            let interval = config.tuning.monitor.probe_interval;
            let offset = Duration::from_micros(rng.below(interval.as_micros() as u64 / 4));
            links[slot] = Some(Link::of(
                &config,
                link.id,
                link.priority,
                link.rate_bps,
                Some(link.remote),
                now + offset,
                interval,
            ));
        }
        let window = SeqWindow::for_budget(config.latency_budget, config.max_frame_rate);
        Ok(Self {
            role,
            scheduler: config.mode.scheduler(&config.tuning),
            reorder: ReorderBuffer::new(config.latency_budget, window),
            pacer: Pacer::new(config.tuning.release),
            recovery: Recovery::new(config.latency_budget, config.tuning.recovery.max_naks_per_packet),
            reassembly: Reassembly::default(),
            fec_tx: config.fec.and_then(self::fec::FecSend::new),
            fec_rx: None,
            config,
            epoch: now,
            rng,
            keys: Keys::new(keys, now),
            links,
            next_frame_seq: 0,
            queue: VecDeque::new(),
            draining: false,
            peer_draining_at: None,
            placement: None,
            peer_placement: None,
            standby: false,
            peer_standby: false,
            backlog_until: None,
            handed_over: None,
            owd_base: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
            retired_pn: [0; MAX_LINKS],
            views: Vec::with_capacity(MAX_LINKS),
            scratch: Vec::new(),
            pool: Vec::new(),
        })
    }

    /// This end's role.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The session index the peer addresses this end by.
    pub const fn local_index(&self) -> SessionIndex {
        self.keys.current.local_index
    }

    /// Every index this end answers to now: current, previous (in its grace) and next keys.
    pub fn local_indices(&self) -> impl Iterator<Item = SessionIndex> + '_ {
        self.keys.indices()
    }

    /// When the current keys were installed.
    pub const fn keys_created(&self) -> Instant {
        self.keys.current.created
    }

    /// Packets sealed with the current keys.
    pub const fn keys_used(&self) -> u64 {
        self.keys.current.sealed
    }

    /// Whether every link is down (the peer may have restarted, or the network is gone).
    pub fn all_links_down(&self) -> bool {
        self.links.iter().flatten().all(|l| l.monitor.state() == LinkState::Down)
    }

    /// Says on every probe, from now on or no longer, that this end is being drained.
    pub const fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Says on every probe, from now on or no longer, where the fleet puts the peer.
    pub const fn set_placement(&mut self, placement: Option<Placement>) {
        self.placement = placement;
    }

    /// Where the peer (a gateway of a fleet) said, within the last [`DRAINING_HEARD`], that this
    /// end belongs.
    pub fn peer_placement(&self, now: Instant) -> Option<Placement> {
        self.peer_placement.filter(|(_, at)| now.saturating_duration_since(*at) < DRAINING_HEARD).map(|(p, _)| p)
    }

    /// Whether the peer said it is being drained within the last [`DRAINING_HEARD`].
    pub fn peer_draining(&self, now: Instant) -> bool {
        self.peer_draining_at.is_some_and(|at| now.saturating_duration_since(at) < DRAINING_HEARD)
    }

    /// Keeps the session, from now on or no longer, as a standby: probed every
    /// `monitor.standby_probe_factor` intervals at both ends, every probe saying so. A session that
    /// stops being a standby probes every link at once, and tells its peer again which frames
    /// went to another session while it was away.
    pub fn set_standby(&mut self, now: Instant, standby: bool) {
        if self.standby != standby {
            self.standby = standby;
            self.retune_probes(now);
        }
        if !standby {
            // Carrying the stream again: the frames handed over while it was away are gone,
            // once more, ahead of the first new frame.
            self.announce_handed_over();
            self.handed_over = None;
        }
    }

    /// Whether this end or the peer keeps the session as a standby.
    pub const fn is_standby(&self) -> bool {
        self.standby || self.peer_standby
    }

    pub(crate) fn set_peer_standby(&mut self, now: Instant, standby: bool) {
        if self.peer_standby != standby {
            self.peer_standby = standby;
            self.retune_probes(now);
            self.events.push_back(Event::PeerStandby { standby });
        }
    }

    /// The interval between two probes of a link: longer for a standby.
    pub(crate) fn probe_interval(&self) -> Duration {
        let interval = self.config.tuning.monitor.probe_interval;
        if self.is_standby() { interval * self.config.tuning.monitor.standby_probe_factor } else { interval }
    }

    /// Gives every link's monitor the probe interval in force; back at the carrying rate, every
    /// link is probed at once.
    fn retune_probes(&mut self, now: Instant) {
        let interval = self.probe_interval();
        let fast = !self.is_standby();
        for link in self.links.iter_mut().flatten() {
            link.monitor.set_probe_interval(interval);
            if fast {
                link.owed.next_probe = link.owed.next_probe.min(now);
            }
        }
    }

    /// Whether some link is up or degraded: the peer answers on it.
    pub fn any_link_usable(&self) -> bool {
        self.links.iter().flatten().any(|l| l.monitor.state().is_usable())
    }

    /// The sequence the next frame handed in will get.
    pub const fn next_frame_seq(&self) -> u64 {
        self.next_frame_seq
    }

    /// Installs keys from a new handshake.
    ///
    /// `confirmed` keys (the initiator's, once it has the response) take over sealing at once;
    /// unconfirmed ones (the responder's) wait until a packet opens under them. Either way the
    /// keys they replace keep opening packets for [`KEY_GRACE`].
    pub fn install_keys(&mut self, now: Instant, keys: SessionKeys, confirmed: bool) {
        self.keys.install(now, keys, confirmed);
        tracing::info!(index = ?self.keys.current.local_index, confirmed, "keys installed");
    }

    /// Restarts the receive side at frame sequence `next`: a peer that started a new session
    /// numbers its frames from there.
    pub fn restart_receive(&mut self, next: u64) {
        let window = SeqWindow::for_budget(self.config.latency_budget, self.config.max_frame_rate);
        self.reorder = ReorderBuffer::starting_at(self.config.latency_budget, window, next);
        self.recovery.gaps.clear();
    }

    /// The peer is a new session (it restarted and lost its state) keyed by the current keys:
    /// forget everything that belonged to the old one. Its path counters, clock and frame
    /// sequence start afresh, so the replay windows, receive counters, delay base and reorder
    /// buffer do too; the old keys are useless; and this end's path counters restart as well,
    /// since the new peer's windows start at zero (safe: the keys are new, so no nonce repeats).
    pub fn peer_restarted(&mut self, now: Instant, next_frame: u64) {
        self.restart_receive(next_frame);
        self.keys.forget_others();
        self.owd_base = None;
        self.retired_pn = [0; MAX_LINKS];
        let interval = self.probe_interval();
        for link in self.links.iter_mut().flatten() {
            link.restart(now, &self.config.tuning, interval);
        }
    }

    /// The scheduling mode.
    pub const fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Session-wide counters.
    pub fn stats(&self) -> SessionStats {
        let reorder = self.reorder.stats();
        SessionStats {
            frames_delivered: reorder.released,
            frames_lost: reorder.lost,
            frames_late: reorder.late,
            frames_reordered: reorder.reordered,
            duplicate_copies: reorder.duplicates,
            ..self.stats
        }
    }

    /// The links this session has, in id order.
    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links.iter().flatten().map(|l| l.id)
    }

    /// A link's state, if the session has the link.
    pub fn link_state(&self, link: LinkId) -> Option<LinkState> {
        self.link(link).map(|l| l.monitor.state())
    }

    /// A link's measurements.
    pub fn link_quality(&self, link: LinkId) -> Option<LinkQuality> {
        self.link(link).map(|l| l.monitor.quality())
    }

    /// The stream bitrate the links can carry now with the mode's protection, bits per second
    /// (what an encoder should stay under). Each link that is up counts with its congestion
    /// control's rate less its loss: summed in bond and auto (auto's duplicates use only what
    /// is left), the lowest in redundant mode (every link carries every frame), the preferred
    /// link's in active-backup; and the total is scaled by [`SAFE_BITRATE_SHARE`]. 0 with no
    /// link up.
    pub fn safe_bitrate(&self) -> u64 {
        let up = self.links.iter().flatten().filter(|l| l.can_send() && l.monitor.state() == LinkState::Up);
        let usable = |l: &Link| l.tx.cc.rate_bps() as f64 * (1.0 - l.monitor.quality().tx_loss).clamp(0.0, 1.0);
        let carried = match self.config.mode {
            Mode::Bond | Mode::Auto => up.map(usable).sum::<f64>(),
            Mode::Redundant => up.map(usable).reduce(f64::min).unwrap_or(0.0),
            Mode::ActiveBackup => up.min_by_key(|l| (l.priority, l.id)).map_or(0.0, usable),
        };
        (carried * SAFE_BITRATE_SHARE) as u64
    }

    /// A link's congestion controller's estimates.
    pub fn link_estimate(&self, link: LinkId) -> Option<crate::cc::Estimate> {
        self.link(link).map(|l| l.tx.cc.estimate())
    }

    /// Each link's rate, as its congestion control has it now.
    pub fn link_rates(&self) -> Vec<(LinkId, u64)> {
        self.links.iter().flatten().map(|l| (l.id, l.tx.cc.rate_bps())).collect()
    }

    /// Takes up the rates another session measured on the same uplinks (`link_rates` of the
    /// one that carried the stream until now): they are this session's rates from here on.
    pub fn adopt_link_rates(&mut self, now: Instant, rates: &[(LinkId, u64)]) {
        for &(id, rate) in rates {
            if let Some(link) = self.link_mut(id) {
                link.tx.cc.adopt_rate(now, rate);
            }
        }
    }

    /// A link's counters.
    pub fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        self.link(link).map(|l| l.stats)
    }

    /// The largest datagram a link uses now, and whether that is final: false while its
    /// path-MTU search is on (a down link keeps the size it had).
    pub fn link_path_mtu(&self, link: LinkId) -> Option<(usize, bool)> {
        self.link(link).map(|l| (l.pmtu.current(), l.pmtu.phase() != Phase::Searching))
    }

    /// A link's current remote address.
    pub fn link_remote(&self, link: LinkId) -> Option<SocketAddr> {
        self.link(link).and_then(|l| l.remote)
    }

    /// The current reorder hold.
    pub const fn reorder_hold(&self) -> Duration {
        self.reorder.hold()
    }

    /// Takes in a frame from the local side and schedules it onto links.
    ///
    /// # Errors
    /// A [`DropReason`] (also counted) if the frame is dropped: bad length, or no link.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
        if self.peer_standby {
            return Err(self.count(DropReason::Standby));
        }
        self.enter_frame(now, frame, false)
    }

    /// Takes in a frame another session had already taken in (the stream moved here from a
    /// gateway that stopped answering or is being drained): it is sent whatever the links'
    /// queues, since refusing it now would lose what the stream was promised. The burst is
    /// bounded by what one session holds within the budget.
    ///
    /// # Errors
    /// A [`DropReason`] (also counted) if the frame is dropped: bad length, or no link.
    pub fn adopt_frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
        self.enter_frame(now, frame, true)?;
        self.add_backlog(now, frame.len());
        Ok(())
    }

    /// Notes `bytes` of one-time backlog (frames adopted from another session): they drain at
    /// the usable links' summed rate, and until then the queue is theirs, not the stream's, and
    /// new frames are not refused for it. Call with the views fresh.
    fn add_backlog(&mut self, now: Instant, bytes: usize) {
        let rate: u64 = self.views.iter().filter(|v| v.state.is_usable()).map(|v| v.rate_bps).sum();
        if rate > 0 {
            let from = self.backlog_until.filter(|&until| until > now).unwrap_or(now);
            self.backlog_until = Some(from + Duration::from_secs_f64(bytes as f64 * 8.0 / rate as f64));
        }
    }

    /// Takes in one UDP payload received on `link` from `from`.
    ///
    /// `link` is the socket it arrived on (edge) or the link its Key names (gateway demux).
    ///
    /// # Errors
    /// A [`DropReason`] (also counted) if the datagram is dropped. Duplicate copies of a frame
    /// are not errors; they are counted in [`SessionStats::duplicate_copies`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        link: LinkId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        self.open_datagram(now, link, from, datagram).map_err(|reason| self.count(reason))
    }

    /// Takes in a carrier change for a link.
    pub fn handle_link_event(&mut self, now: Instant, link: LinkId, event: LinkEvent) {
        let Some(l) = self.link_mut(link) else { return };
        let up = event == LinkEvent::CarrierUp;
        let transition = l.monitor.on_carrier(now, up);
        if up {
            // Probe at once: the sooner a restored link proves itself, the sooner it helps.
            l.owed.next_probe = now;
        }
        self.emit_transition(now, link, transition);
    }

    /// Adds a link to a running session (an uplink a reload added). It starts probing at once.
    ///
    /// # Errors
    /// [`SetupError`] if its id is out of range or taken.
    pub fn add_link(&mut self, now: Instant, link: &LinkConfig) -> Result<(), SetupError> {
        let slot = link.id.index().ok_or(SetupError::LinkOutOfRange(link.id.get()))?;
        if self.links[slot].is_some() {
            return Err(SetupError::DuplicateLink(link.id.get()));
        }
        let pace = self.probe_interval();
        let mut added = Link::of(&self.config, link.id, link.priority, link.rate_bps, Some(link.remote), now, pace);
        added.tx.next_pn = self.retired_pn[slot];
        self.links[slot] = Some(added);
        self.config.links.push(*link);
        Ok(())
    }

    /// Removes a link from a running session (an uplink a reload removed). It goes down as on a
    /// carrier loss first, so that what it carried and was not yet answered is re-sent on the
    /// others.
    pub fn remove_link(&mut self, now: Instant, link: LinkId) {
        self.handle_link_event(now, link, LinkEvent::CarrierDown);
        if let Some(slot) = link.index()
            && let Some(removed) = self.links[slot].take()
        {
            self.retired_pn[slot] = removed.tx.next_pn;
        }
        self.config.links.retain(|l| l.id != link);
    }

    /// Sets a link's priority (lower is preferred).
    pub fn set_link_priority(&mut self, link: LinkId, priority: u8) {
        if let Some(l) = self.link_mut(link) {
            l.priority = priority;
        }
        for l in self.config.links.iter_mut().filter(|l| l.id == link) {
            l.priority = priority;
        }
    }

    /// Sets what a link may be spent on (metered, past its cap), from the next frame on.
    pub fn set_link_spend(&mut self, link: LinkId, spend: crate::scheduler::Spend) {
        if let Some(l) = self.link_mut(link) {
            l.spend = spend;
        }
    }

    /// What a link may be spent on.
    pub fn link_spend(&self, link: LinkId) -> Option<crate::scheduler::Spend> {
        self.link(link).map(|l| l.spend)
    }

    /// Changes how frames are spread over the links, from the next frame on.
    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
        self.scheduler = mode.scheduler(&self.config.tuning);
        for link in self.links.iter_mut().flatten() {
            link.tx.steered = mode.spreads_by_capacity();
        }
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.next_transmit(now, buf)
    }

    /// The next frame for the local side, in order, written into `buf`, if it may leave at
    /// `now`: frames released together (a gap filled or given up) leave paced
    /// ([`crate::release`]), each within the latency budget; [`Session::poll_timeout`] says when
    /// the next may.
    pub fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered> {
        let next = self.reorder.peek()?;
        let overdue = now >= next.overdue_at(self.config.latency_budget);
        if !self.pacer.take(now, next.frame.len(), overdue) {
            return None;
        }
        let released = self.reorder.pop()?;
        buf.clear();
        buf.extend_from_slice(&released.frame);
        self.reorder.recycle(released.frame);
        Some(Delivered { seq: released.seq, held: released.held })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn emit_transition(&mut self, now: Instant, link: LinkId, transition: Option<Transition>) {
        let Some(transition) = transition else { return };
        if let Some(l) = self.link_mut(link) {
            if transition.to == LinkState::Down {
                l.went_down();
            } else if transition.from == LinkState::Down {
                l.came_back(now);
            }
        }
        if transition.to == LinkState::Down {
            self.resend_in_flight(now, link, Swallowed::Down(transition.reason));
        }
        let Some(quality) = self.link_quality(link) else {
            return;
        };
        // The driver logs the event (naming the link); the engine only reports it.
        self.events.push_back(Event::LinkState { link, transition, quality });
    }

    fn count(&mut self, reason: DropReason) -> DropReason {
        self.stats.drops.add(reason);
        tracing::trace!(reason = reason.as_str(), "drop");
        reason
    }

    /// The datagram TCP segments are sized for: the smallest a link's last finished search found,
    /// so a segment fits one datagram on every link, or the configured size before any search
    /// has finished (a SYN then must not be clamped for good to the base every search starts
    /// from).
    fn mss_datagram(&self) -> usize {
        self.links.iter().flatten().filter_map(|l| l.pmtu.last_settled()).min().unwrap_or(self.config.max_datagram)
    }

    /// A receive report for every link that has received something, for a control packet.
    fn reports(&self) -> impl Iterator<Item = ControlMessage> + '_ {
        self.links.iter().flatten().filter_map(Link::report).map(ControlMessage::Report)
    }

    fn link(&self, link: LinkId) -> Option<&Link> {
        self.links.get(link.index()?)?.as_ref()
    }

    fn link_mut(&mut self, link: LinkId) -> Option<&mut Link> {
        self.links.get_mut(link.index()?)?.as_mut()
    }

    /// Microseconds since the session started, wrapping at 2³².
    fn timestamp(epoch: Instant, now: Instant) -> u32 {
        now.saturating_duration_since(epoch).as_micros() as u32
    }
}

/// What the session's sub-state tests share: the addresses of an edge and a gateway, and the
/// one clock read their virtual time starts from.
#[cfg(test)]
mod tests_support {
    use std::time::Instant;

    /// The gateway's address.
    pub(super) const GATEWAY: &str = "192.0.2.1:4754";
    /// The edge's address, as the gateway sees it.
    pub(super) const RIG: &str = "198.51.100.7:40000";

    #[allow(clippy::disallowed_methods)]
    pub(super) fn start() -> Instant {
        Instant::now()
    }
}
