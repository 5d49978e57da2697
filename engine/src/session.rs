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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cc::{LinkSample, RateControl};
use crate::crypto::{PathNonce, Protection, SessionKeys};
use crate::fragment::{Joined, Piece, Reassembly, Split, emit_piece_header};
use crate::monitor::{ACK_INTERVAL, LinkMonitor, LinkQuality, LinkState, PROBE_INTERVAL, StateReason, Transition};
use crate::pmtu::{PathMtu, Phase};
use crate::reorder::{Arrival, ReorderBuffer};
use crate::retransmit::{Gaps, MAX_MISSING, NakTiming, SentFrames};
use crate::rng::Rng;
use crate::scheduler::{DEFAULT_LINK_RATE_BPS, FrameMeta, LinkView, Mode, Scheduler};
use crate::stats::{LinkStats, SessionStats};
use crate::window::{SeqWindow, Verdict};
use crate::wire::{
    self, ControlHeader, ControlMessage, ControlMessages, ControlType, DataHeader, FLAG_RETRANSMIT, FRAGMENT_PIECE,
    GRE_HEADER_LEN, GreRepr, Kind, LinkReport, MAX_FRAME_LEN, PathKey, Protocol, WireError, expand_u32,
};
use crate::{FrameSeq, LinkId, LinkSet, MAX_LINKS, PacketNumber, SessionIndex};

pub use crate::stats::DropReason;

/// The most a gap is held by default, however the links measure.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_millis(500);
/// The reorder hold is the measured delay spread (jitter included) plus this margin.
pub const REORDER_MARGIN: Duration = Duration::from_millis(5);
/// The largest UDP payload by default: a 1500-byte path less IPv6 and UDP headers (48 bytes),
/// so one setting serves either family.
pub const DEFAULT_MAX_DATAGRAM: usize = 1500 - 48;
/// The frame rate the dedup window is sized for by default, with the latency budget.
pub const DEFAULT_MAX_FRAME_RATE: u32 = 100_000;
/// Per-path replay windows cover reordering within one link only.
pub const PATH_REPLAY_WINDOW: usize = 4096;
/// A link's sent packets are sampled for RTT at most this often.
pub const SENT_LOG_SPACING: Duration = Duration::from_millis(1);
/// Sampled sent packets kept per link.
const MAX_SENT_LOG: usize = 1024;
/// A frame given to a link whose model queue is at least this long finds the link busy: the
/// demand reached its rate, which may then grow.
pub const BUSY_QUEUE: Duration = Duration::from_millis(2);
/// In the modes that spread frames by capacity, a frame is dropped at the tunnel's entry
/// rather than queued behind more than this on the link chosen for it (the modem's buffer is
/// not to fill: inner TCP sees the drop and backs off at once), if the path agrees
/// ([`ENTRY_SUSTAIN`]).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(100);
/// How long the path's own round trips must have shown a queue past its limit
/// ([`RateControl::queue_limit`]) before a frame is dropped at the entry: a sustained overload
/// keeps it there, while the burst of re-sent frames after a cut (a real queue of 110-120 ms
/// for a moment, in the lab) passes, and the latency budget waits it out.
pub const ENTRY_SUSTAIN: Duration = Duration::from_millis(200);
/// Frames queued for sending before the oldest is dropped.
pub const MAX_QUEUED_FRAMES: usize = 4096;
/// Ethernet header length: the shortest frame the engine carries.
pub const MIN_FRAME_LEN: usize = 14;
/// After new keys take over, the previous ones still open packets this long, so packets in
/// flight on a slow link when the keys changed are not lost.
pub const KEY_GRACE: Duration = Duration::from_secs(10);
/// A link that delivered a data frame this recently counts as carrying data: a frame it has
/// passed is not coming on it.
pub const DATA_RECENT: Duration = Duration::from_millis(50);
/// The retransmission timeout assumed before any RTT is measured.
pub const DEFAULT_RTO: Duration = Duration::from_millis(200);
/// One frame is re-sent at most this often (or every half RTT, if longer), however many NAKs
/// ask for it: the copies of one NAK sent on two links bring one retransmission.
pub const MIN_RESEND_GAP: Duration = Duration::from_millis(10);
/// A re-sent frame goes out twice on the link the NAK came in on (the freshest proof that it
/// works), this far apart, so that one loss burst does not take both copies.
pub const RESEND_SPACING: Duration = Duration::from_millis(10);
/// A link losing this share of what it sends has its path MTU confirmed at once: a path that
/// shrank below the size in use loses every large datagram.
pub const MTU_SUSPECT_LOSS: f64 = 0.2;
/// Spare frame buffers kept for reuse.
const MAX_POOLED: usize = 1024;
/// NAK ranges in one control packet.
pub const MAX_NAKS_PER_PACKET: usize = 32;
/// Keys this old are never used to seal (the edge rekeys long before, at
/// [`crate::endpoint::edge::REKEY_AFTER_TIME`]).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// Which end of the tunnel a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The rig: its links are configured, each sends to the gateway's fixed address.
    Edge,
    /// The datacenter: links appear as they prove the key, each at the address it last proved
    /// from (so NAT rebinding and a modem's new IP are followed).
    Gateway,
}

/// One link of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Its id, below [`MAX_LINKS`].
    pub id: LinkId,
    /// Lower is preferred (active-backup order, bond tie-break).
    pub priority: u8,
    /// Its capacity in bits per second, if known.
    pub rate_bps: Option<u64>,
    /// Where to send on this link (the gateway's address).
    pub remote: SocketAddr,
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How frames are spread over links.
    pub mode: Mode,
    /// The most a gap is held before the frames behind it are released.
    pub latency_budget: Duration,
    /// How often each link is probed.
    pub probe_interval: Duration,
    /// The frame rate the dedup window is sized for.
    pub max_frame_rate: u32,
    /// The edge's links (the gateway's list is empty: it learns links).
    pub links: Vec<LinkConfig>,
    /// Whether missing frames are asked for again (NAK) and re-sent within the budget.
    pub retransmit: bool,
    /// The largest UDP payload a link's path carries: larger frames are split in the tunnel.
    pub max_datagram: usize,
    /// Whether TCP SYNs crossing the tunnel have their MSS lowered so that segments fit one
    /// datagram ([`crate::mss`]).
    pub clamp_mss: bool,
    /// Whether each link probes its path for the largest datagram it carries, up to
    /// `max_datagram` ([`crate::pmtu`]). Without it every link uses `max_datagram` as given.
    pub probe_mtu: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            latency_budget: DEFAULT_LATENCY_BUDGET,
            probe_interval: PROBE_INTERVAL,
            max_frame_rate: DEFAULT_MAX_FRAME_RATE,
            links: Vec::new(),
            retransmit: true,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            clamp_mss: true,
            probe_mtu: true,
        }
    }
}

/// A config the session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A link id at or above [`MAX_LINKS`].
    #[error("link id {0} is out of range (0..{MAX_LINKS})")]
    LinkOutOfRange(u8),
    /// Two links with one id.
    #[error("link id {0} is configured twice")]
    DuplicateLink(u8),
    /// An edge with no links.
    #[error("an edge needs at least one link")]
    NoLinks,
    /// Two allowed edges with one public key.
    #[error("edge {0:?} has the same public key as an earlier edge")]
    DuplicateEdgeKey(String),
    /// A zero probe interval or latency budget.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// A carrier change reported by the OS (netlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkEvent {
    /// The interface has carrier again.
    CarrierUp,
    /// The interface lost carrier: the link goes down at once.
    CarrierDown,
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

/// What a [`Session::poll_timeout`] deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// A link's probe tick.
    Probe(LinkId),
    /// A link's probe or feedback timeout.
    LinkTimeout(LinkId),
    /// The reorder buffer gives up a gap.
    Reorder,
    /// A missing frame is due to be asked for again.
    Nak,
    /// A spaced second copy of a re-sent frame is due.
    Resend,
    /// Data that arrived on a link is owed a report ([`ACK_INTERVAL`]).
    Ack(LinkId),
    /// A link's path-MTU probe is due, or its answer is overdue.
    PathMtu(LinkId),
    /// The previous keys stop opening packets.
    KeyRetire,
    /// A handshake is due: first, retry, rekey, or a gateway/session deadline.
    Handshake,
}

/// One generation of keys.
#[derive(Debug)]
struct KeyGen {
    local_index: SessionIndex,
    remote_index: SessionIndex,
    protection: Box<dyn Protection>,
    created: Instant,
    sealed: u64,
}

impl KeyGen {
    fn new(keys: SessionKeys, now: Instant) -> Self {
        Self {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            protection: keys.protection,
            created: now,
            sealed: 0,
        }
    }
}

/// Which generation of keys a datagram was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    Current,
    Previous,
    Next,
}

/// A data packet sent, kept for an RTT sample and to check the scheduler's model.
#[derive(Debug, Clone, Copy)]
struct SentSample {
    pn: u64,
    at: Instant,
    /// The link's datagram bytes sent once it was.
    tx_bytes: u64,
}

/// One link's state inside the session.
#[derive(Debug)]
struct Link {
    id: LinkId,
    priority: u8,
    remote: Option<SocketAddr>,
    next_pn: u64,
    replay: SeqWindow,
    monitor: LinkMonitor,
    next_probe: Instant,
    probe_due: bool,
    reply_due: Option<(u32, u32)>,
    backlog_bytes: f64,
    backlog_at: Instant,
    cc: RateControl,
    /// Data packets sent, sampled at most every [`SENT_LOG_SPACING`]: packet number, when, and
    /// the link's bytes sent by then. A report that covers one gives an RTT sample and bounds
    /// the model's backlog by what is really in flight. Only data: the peer answers data within
    /// [`ACK_INTERVAL`], while the reports in its probes may come up to a probe interval late.
    sent_log: VecDeque<SentSample>,
    /// The highest frame sequence that arrived on this link, and when the last data came.
    highest_frame: Option<u64>,
    last_data: Option<Instant>,
    /// When a control packet last went out on this link, and whether data that arrived since
    /// is owed an answer ([`crate::monitor::ACK_INTERVAL`]).
    last_control: Option<Instant>,
    ack_due: bool,
    /// The report `ack_due` asks for is due and a `handle_timeout` has seen it: the next
    /// `poll_transmit` sends it, and `poll_timeout` no longer wakes the driver for it.
    ack_woken: bool,
    stats: LinkStats,
    /// The largest datagram the link's path carries, as probed.
    pmtu: PathMtu,
    /// A path-MTU probe of this size is to go out (a `handle_timeout` asked for it).
    mtu_probe_due: Option<usize>,
    /// The peer's path-MTU probe of this size is owed an answer.
    mtu_ack_due: Option<u16>,
    /// Since when the path's measured queue has stood past its limit, if it does now.
    queue_over_since: Option<Instant>,
    /// Whether the mode sends on this link by its rate (bond, auto). In the other modes a link
    /// carries what the mode gives it, and the model's queue drains at least as fast as the
    /// peer reports it delivers.
    steered: bool,
}

impl Link {
    fn new(
        id: LinkId,
        priority: u8,
        rate_bps: Option<u64>,
        remote: Option<SocketAddr>,
        first_probe: Instant,
        interval: Duration,
    ) -> Self {
        Self {
            id,
            priority,
            remote,
            next_pn: 0,
            replay: SeqWindow::new(PATH_REPLAY_WINDOW),
            monitor: LinkMonitor::new(first_probe, interval),
            next_probe: first_probe,
            probe_due: false,
            reply_due: None,
            backlog_bytes: 0.0,
            backlog_at: first_probe,
            cc: RateControl::new(first_probe, DEFAULT_LINK_RATE_BPS, rate_bps),
            sent_log: VecDeque::new(),
            highest_frame: None,
            last_data: None,
            last_control: None,
            ack_due: false,
            ack_woken: false,
            stats: LinkStats::default(),
            pmtu: PathMtu::new(DEFAULT_MAX_DATAGRAM),
            mtu_probe_due: None,
            mtu_ack_due: None,
            queue_over_since: None,
            steered: false,
        }
    }

    /// Sets the path-MTU search: up to `max` bytes, probed from `now` on, or `max` as given.
    fn path_mtu(mut self, now: Instant, max: usize, probe: bool) -> Self {
        self.pmtu = if probe { PathMtu::new(max) } else { PathMtu::fixed(max) };
        self.pmtu.restart(now);
        self
    }

    /// Whether the link can carry a path-MTU probe now.
    fn can_probe_mtu(&self) -> bool {
        self.remote.is_some() && self.monitor.carrier() && self.monitor.state() != LinkState::Down
    }

    /// When the report owed for data on this link is due.
    fn ack_at(&self) -> Instant {
        self.last_control.map_or(self.next_probe, |t| t + ACK_INTERVAL)
    }

    const fn steered(mut self, steered: bool) -> Self {
        self.steered = steered;
        self
    }

    fn rate_bps(&self) -> u64 {
        let rate = self.cc.rate_bps();
        if self.steered { rate } else { rate.max(self.cc.delivery_rate().map_or(0, |d| (d * 8.0) as u64)) }
    }

    /// Notes packet `pn` sent at `now`, for an RTT sample when a report covers it.
    fn log_sent(&mut self, now: Instant, pn: u64) {
        if self.sent_log.back().is_some_and(|s| now.saturating_duration_since(s.at) < SENT_LOG_SPACING) {
            return;
        }
        if self.sent_log.len() == MAX_SENT_LOG {
            self.sent_log.pop_front();
        }
        self.sent_log.push_back(SentSample { pn, at: now, tx_bytes: self.stats.tx_bytes });
    }

    /// Takes in the peer's report on this link, sent at `peer_ts` on its clock: the delivery
    /// rate and an RTT sample for the controller.
    fn on_report(&mut self, now: Instant, peer_ts: u32) {
        let Some((highest, bytes)) = self.monitor.reported() else { return };
        self.cc.on_delivered(peer_ts, bytes);
        let mut newest = None;
        while self.sent_log.front().is_some_and(|s| s.pn <= highest) {
            newest = self.sent_log.pop_front();
        }
        let Some(sample) = newest else { return };
        // The raw round trip, queue included: the controller's minimum filter finds the path's
        // own delay, and what lies above it is the real queue (the model's guess of the queue
        // must not be subtracted: a rate estimated too low would make every sample look short
        // and poison the minimum).
        self.cc.on_rtt(now, now.saturating_duration_since(sample.at));
        // What was sent after the newest packet the peer has is all that can be queued: the
        // model never holds more (a rate estimated too low would otherwise build a queue that
        // exists only in the model).
        self.drain_backlog(now);
        let in_flight = self.stats.tx_bytes.saturating_sub(sample.tx_bytes) as f64;
        self.backlog_bytes = self.backlog_bytes.min(in_flight);
        if self.cc.on_timeout(now, self.cc_sample()) {
            self.trace_cc();
        }
    }

    /// What the controller needs of the link's measurements.
    fn cc_sample(&self) -> LinkSample {
        let quality = self.monitor.quality();
        LinkSample {
            jitter: quality.jitter,
            srtt: self.cc.smoothed_rtt(),
            tx_bytes: self.stats.tx_bytes,
            loss: quality.tx_loss,
        }
    }

    fn trace_cc(&self) {
        let e = self.cc.estimate();
        tracing::debug!(link = %self.id, rate = e.rate_bps, phase = e.phase.as_str(), queue = ?e.queue_delay,
            min_rtt = ?e.min_rtt, delivery = ?e.delivery_bps, model = self.backlog_bytes, "rate");
    }

    /// Whether the path's own round trips have shown a queue past its limit for
    /// [`ENTRY_SUSTAIN`] (or show none at all, not yet measured), noting since when.
    fn overrun_sustained(&mut self, now: Instant) -> bool {
        let Some(queue) = self.cc.queue_delay() else {
            return true;
        };
        if queue < RateControl::queue_limit(self.monitor.jitter()) {
            self.queue_over_since = None;
            return false;
        }
        let since = *self.queue_over_since.get_or_insert(now);
        now.saturating_duration_since(since) >= ENTRY_SUSTAIN
    }

    fn drain_backlog(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.backlog_at).as_secs_f64();
        self.backlog_bytes = (self.backlog_bytes - elapsed * self.rate_bps() as f64 / 8.0).max(0.0);
        self.backlog_at = now;
    }

    fn view(&self) -> LinkView {
        let quality = self.monitor.quality();
        let rate_bps = self.rate_bps();
        LinkView {
            id: self.id,
            state: self.monitor.state(),
            priority: self.priority,
            usable_since: self.monitor.usable_since(),
            carrier: self.monitor.carrier(),
            // The path's own delay and its usual jitter; the queue we add is the model's
            // (`queue_delay`), so it is not counted twice.
            one_way_delay: self
                .cc
                .min_rtt()
                .or(quality.srtt)
                .map_or(Duration::from_millis(50), |rtt| rtt / 2 + quality.jitter),
            rate_bps,
            queue_delay: Duration::from_secs_f64(self.backlog_bytes * 8.0 / rate_bps.max(1) as f64),
            loss: quality.tx_loss,
            path_queue: self.cc.queue_delay(),
        }
    }

    fn report(&self) -> Option<LinkReport> {
        let (highest, received, bytes) = self.monitor.rx_counters();
        Some(LinkReport {
            link: self.id,
            highest: highest? as u32,
            received: received as u32,
            received_bytes: bytes as u32,
        })
    }
}

/// Counts a frame of `len` bytes chosen for `links` in their views, so that the next frame of
/// the same batch is chosen, and its deadline checked, behind it.
fn charge_views(views: &mut [LinkView], links: LinkSet, len: usize) {
    for view in views.iter_mut().filter(|v| links.contains(v.id)) {
        view.charge(len + crate::wire::DATA_OVERHEAD);
    }
}

/// Why a link's recent frames are taken for lost ([`Session::resend_in_flight`]).
#[derive(Debug, Clone, Copy)]
enum Swallowed {
    /// The link went down.
    Down(StateReason),
    /// The path stopped carrying the datagram size in use.
    BlackHole,
}

/// A frame waiting to be sealed onto the links chosen for it.
#[derive(Debug)]
struct Pending {
    seq: u64,
    frame: Vec<u8>,
    links: LinkSet,
    /// A copy answering a NAK: it is not kept for retransmission again.
    retransmit: bool,
    /// The links a copy actually went out on.
    sent_on: LinkSet,
    /// The link whose pieces are going out, how the frame is split for it (fixed when the
    /// link's turn starts, so a path-MTU change mid-frame cannot mix two splits), and the next
    /// piece.
    current: Option<(LinkId, Split)>,
    piece: u8,
}

impl Pending {
    /// A frame handed in, to go out on `links`.
    const fn new(seq: u64, frame: Vec<u8>, links: LinkSet) -> Self {
        Self { seq, frame, links, retransmit: false, sent_on: LinkSet::EMPTY, current: None, piece: 0 }
    }

    /// A copy of a frame sent before, to go out again on `links`.
    fn resend(seq: u64, frame: Vec<u8>, links: LinkSet) -> Self {
        Self { retransmit: true, ..Self::new(seq, frame, links) }
    }
}

/// One end of a bonded tunnel. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    epoch: Instant,
    rng: Rng,
    current: KeyGen,
    /// The keys before the last rekey, and when they stop opening packets.
    previous: Option<(KeyGen, Instant)>,
    /// Keys the gateway answered a rekey with, used once the edge proves it has them.
    next: Option<KeyGen>,
    links: Vec<Option<Link>>,
    scheduler: Box<dyn Scheduler>,
    next_frame_seq: u64,
    queue: VecDeque<Pending>,
    /// Frames sent, kept for the budget to answer NAKs.
    sent: SentFrames,
    /// Second copies of re-sent frames, each with the time it joins the queue.
    delayed: VecDeque<(Instant, Pending)>,
    reorder: ReorderBuffer,
    /// Frames missing on the receive side, and the NAKs for them.
    gaps: Gaps,
    /// Frames arriving in pieces.
    reassembly: Reassembly,
    /// NAKs (and answers to the peer's NAKs) to send, and the links they still go out on.
    feedback: Vec<ControlMessage>,
    feedback_links: LinkSet,
    /// The first one-way delay sample: later samples are relative to it, so the two clocks'
    /// offset cancels and only differences between links matter.
    owd_base: Option<u32>,
    events: VecDeque<Event>,
    stats: SessionStats,
    views: Vec<LinkView>,
    scratch: Vec<u8>,
    pool: Vec<Vec<u8>>,
}

impl Session {
    /// Builds a session from the keys a handshake produced.
    ///
    /// # Errors
    /// [`ConfigError`] if the links or durations make no sense.
    pub fn new(
        role: Role,
        config: SessionConfig,
        keys: SessionKeys,
        now: Instant,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        if config.probe_interval.is_zero() {
            return Err(ConfigError::Zero("probe interval"));
        }
        if config.latency_budget.is_zero() {
            return Err(ConfigError::Zero("latency budget"));
        }
        if role == Role::Edge && config.links.is_empty() {
            return Err(ConfigError::NoLinks);
        }
        let mut rng = Rng::new(seed);
        let mut links: Vec<Option<Link>> = (0..MAX_LINKS).map(|_| None).collect();
        for link in &config.links {
            let slot = link.id.index().ok_or(ConfigError::LinkOutOfRange(link.id.get()))?;
            if links[slot].is_some() {
                return Err(ConfigError::DuplicateLink(link.id.get()));
            }
            // Spread the first probes over the first interval so links do not tick in lockstep.
            let offset = Duration::from_micros(rng.below(config.probe_interval.as_micros() as u64 / 4));
            links[slot] = Some(
                Link::new(
                    link.id,
                    link.priority,
                    link.rate_bps,
                    Some(link.remote),
                    now + offset,
                    config.probe_interval,
                )
                .steered(config.mode.spreads_by_capacity())
                .path_mtu(now + offset, config.max_datagram, config.probe_mtu),
            );
        }
        let window = SeqWindow::for_budget(config.latency_budget, config.max_frame_rate);
        Ok(Self {
            role,
            scheduler: config.mode.scheduler(),
            reorder: ReorderBuffer::new(config.latency_budget, window),
            sent: SentFrames::new(config.latency_budget),
            delayed: VecDeque::new(),
            gaps: Gaps::default(),
            reassembly: Reassembly::default(),
            feedback: Vec::new(),
            feedback_links: LinkSet::default(),
            config,
            epoch: now,
            rng,
            current: KeyGen::new(keys, now),
            previous: None,
            next: None,
            links,
            next_frame_seq: 0,
            queue: VecDeque::new(),
            owd_base: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
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
        self.current.local_index
    }

    /// Every index this end answers to now: current, previous (in its grace) and next keys.
    pub fn local_indices(&self) -> impl Iterator<Item = SessionIndex> + '_ {
        let previous = self.previous.as_ref().map(|(k, _)| k.local_index);
        let next = self.next.as_ref().map(|k| k.local_index);
        core::iter::once(self.current.local_index).chain(previous).chain(next)
    }

    /// When the current keys were installed.
    pub const fn keys_created(&self) -> Instant {
        self.current.created
    }

    /// Packets sealed with the current keys.
    pub const fn keys_used(&self) -> u64 {
        self.current.sealed
    }

    /// Whether every link is down (the peer may have restarted, or the network is gone).
    pub fn all_links_down(&self) -> bool {
        self.links.iter().flatten().all(|l| l.monitor.state() == LinkState::Down)
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
        let generation = KeyGen::new(keys, now);
        if confirmed {
            let old = std::mem::replace(&mut self.current, generation);
            self.previous = Some((old, now + KEY_GRACE));
            self.next = None;
        } else {
            self.next = Some(generation);
        }
        tracing::info!(index = ?self.current.local_index, confirmed, "keys installed");
    }

    /// Restarts the receive side at frame sequence `next`: a peer that started a new session
    /// numbers its frames from there.
    pub fn restart_receive(&mut self, next: u64) {
        let window = SeqWindow::for_budget(self.config.latency_budget, self.config.max_frame_rate);
        self.reorder = ReorderBuffer::starting_at(self.config.latency_budget, window, next);
        self.gaps.clear();
    }

    /// The peer is a new session (it restarted and lost its state) keyed by the current keys:
    /// forget everything that belonged to the old one. Its path counters, clock and frame
    /// sequence start afresh, so the replay windows, receive counters, delay base and reorder
    /// buffer do too; the old keys are useless; and this end's path counters restart as well,
    /// since the new peer's windows start at zero (safe: the keys are new, so no nonce repeats).
    pub fn peer_restarted(&mut self, now: Instant, next_frame: u64) {
        self.restart_receive(next_frame);
        self.previous = None;
        self.next = None;
        self.owd_base = None;
        let interval = self.config.probe_interval;
        for link in self.links.iter_mut().flatten() {
            let carrier = link.monitor.carrier();
            link.replay = SeqWindow::new(PATH_REPLAY_WINDOW);
            link.next_pn = 0;
            link.reply_due = None;
            link.monitor = LinkMonitor::new(now, interval);
            if !carrier {
                link.monitor.on_carrier(now, false);
            }
            link.next_probe = now;
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

    /// A link's congestion controller's estimates.
    pub fn link_estimate(&self, link: LinkId) -> Option<crate::cc::Estimate> {
        self.link(link).map(|l| l.cc.estimate())
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
        self.stats.frames_in += 1;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(self.count(DropReason::BadFrameLength));
        }
        // A frame dropped here takes no sequence: the peer would wait for it as a gap, and ask.
        let seq = self.next_frame_seq;
        self.views.clear();
        let mut sustained = LinkSet::EMPTY;
        for link in self.links.iter_mut().flatten() {
            link.drain_backlog(now);
            if link.overrun_sustained(now) {
                sustained.insert(link.id);
            }
            self.views.push(link.view());
        }
        let meta = FrameMeta { seq: FrameSeq(seq), len: frame.len(), critical: crate::scheduler::is_critical(frame) };
        let mut chosen = self.scheduler.schedule(now, &meta, &self.views);
        let queue_of = |views: &[LinkView], id: LinkId| {
            views.iter().find(|v| v.id == id).map_or(Duration::ZERO, |v| v.queue_delay)
        };
        // Over capacity only where the path agrees, and has for a while: a model queue that the
        // measured round trips do not show (beyond what the link's jitter alone shows,
        // RateControl::queue_limit) is the model's error, a rate not yet grown to the link's,
        // and the frame goes out, which is what lets the rate grow; a moment's real queue
        // (ENTRY_SUSTAIN) is waited out.
        let overrun = |id: LinkId| queue_of(&self.views, id) > MAX_QUEUE_DELAY && sustained.contains(id);
        if self.config.mode.spreads_by_capacity() && !chosen.is_empty() && chosen.iter().all(overrun) {
            if tracing::enabled!(tracing::Level::DEBUG) {
                for id in chosen.iter() {
                    if let Some(l) = self.link(id) {
                        tracing::debug!(link = %id, rate = l.cc.rate_bps(), model_queue = ?queue_of(&self.views, id),
                            path_queue = ?l.cc.queue_delay(), jitter = ?l.monitor.jitter(), "over capacity");
                    }
                }
            }
            return Err(self.count(DropReason::OverCapacity));
        }
        for id in chosen.iter() {
            let queue = queue_of(&self.views, id);
            match self.link_mut(id) {
                Some(link) if link.remote.is_some() => {
                    link.backlog_bytes += (frame.len() + crate::wire::DATA_OVERHEAD) as f64;
                    if queue >= BUSY_QUEUE {
                        link.cc.on_busy();
                    }
                }
                _ => chosen.remove(id),
            }
        }
        if chosen.is_empty() {
            return Err(self.count(DropReason::NoLink));
        }
        self.next_frame_seq += 1;
        if self.queue.len() >= MAX_QUEUED_FRAMES {
            if let Some(old) = self.queue.pop_front() {
                self.pool.push(old.frame);
            }
            self.count(DropReason::QueueFull);
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        if self.config.clamp_mss && crate::mss::clamp(&mut buf, self.mss_datagram()).is_some() {
            self.stats.mss_clamped += 1;
        }
        self.queue.push_back(Pending::new(seq, buf, chosen));
        Ok(())
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
            l.next_probe = now;
        }
        self.emit_transition(now, link, transition);
    }

    /// Runs timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        let mut transitions = Vec::new();
        let mut shrunk = Vec::new();
        for link in self.links.iter_mut().flatten() {
            if link.next_probe <= now {
                link.monitor.on_tick(now);
                if link.monitor.can_probe() && link.remote.is_some() {
                    link.probe_due = true;
                }
                // A little jitter keeps the links' probes (and the two ends') from locking step.
                let jitter = Duration::from_micros(self.rng.below(interval.as_micros() as u64 / 10));
                let late = link.next_probe + interval <= now;
                let base = if late { now } else { link.next_probe };
                link.next_probe = base + interval + jitter;
            }
            if let Some(t) = link.monitor.handle_timeout(now) {
                transitions.push((link.id, t));
            }
            link.ack_woken |= link.ack_due && link.ack_at() <= now;
            if link.mtu_probe_due.is_none() && link.can_probe_mtu() {
                if link.monitor.quality().tx_loss >= MTU_SUSPECT_LOSS {
                    link.pmtu.suspect(now);
                }
                let black_holes = link.pmtu.black_holes();
                link.mtu_probe_due = link.pmtu.poll_probe(now, link.monitor.probe_timeout(), link.monitor.last_heard());
                link.monitor.set_excused(link.pmtu.unanswered());
                if link.pmtu.black_holes() > black_holes {
                    shrunk.push(link.id);
                }
            }
            if link.cc.on_timeout(now, link.cc_sample()) {
                link.trace_cc();
            }
        }
        for (id, t) in transitions {
            self.emit_transition(now, id, Some(t));
        }
        for id in shrunk {
            self.resend_in_flight(now, id, Swallowed::BlackHole);
        }
        if self.previous.as_ref().is_some_and(|(_, retire)| *retire <= now) {
            self.previous = None;
        }
        self.update_hold(now);
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, pending)) = self.delayed.pop_front() {
                self.queue.push_front(pending);
            }
        }
        self.collect_naks(now);
        self.reorder.handle_timeout(now);
        self.gaps.forget_below(self.reorder.expected());
        self.reassembly.expire(now, self.config.latency_budget, self.reorder.expected());
        let pool = &mut self.pool;
        self.sent.expire(now, |buf| pool.push(buf));
        self.pool.truncate(MAX_POOLED);
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        for slot in 0..MAX_LINKS {
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if let Some((echo_seq, echo_ts)) = link.reply_due.take() {
                let reply = [ControlMessage::ProbeReply { echo_seq, echo_ts }];
                if let Some(t) = self.seal_control(now, slot, &reply, buf) {
                    return Some(t);
                }
            }
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if let Some(size) = link.mtu_ack_due.take() {
                // With the reports: the packet answers the data that came in on the link.
                let mut reply = vec![ControlMessage::MtuAck { size }];
                reply.extend(self.reports());
                if let Some(t) = self.seal_control(now, slot, &reply, buf) {
                    return Some(t);
                }
            }
        }
        for slot in 0..MAX_LINKS {
            // Data that arrived is answered on its link at least every ACK_INTERVAL, so the
            // sender sees at once when a busy link stops carrying.
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if !link.ack_due || link.last_control.is_some_and(|at| now.saturating_duration_since(at) < ACK_INTERVAL) {
                continue;
            }
            link.ack_due = false;
            let messages: Vec<ControlMessage> = self.reports().collect();
            if let Some(t) = self.seal_control(now, slot, &messages, buf) {
                return Some(t);
            }
        }
        for slot in 0..MAX_LINKS {
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if !std::mem::take(&mut link.probe_due) {
                continue;
            }
            let priority = link.priority;
            let excused = link.monitor.excused();
            let mut messages = Vec::with_capacity(MAX_LINKS + 3);
            messages.push(ControlMessage::Probe { priority });
            messages.extend(excused.map(|total| ControlMessage::Excused { total }));
            if let Some(next) = self.sent.next_seq() {
                messages.push(ControlMessage::Sent { next: next as u32 });
            }
            messages.extend(self.reports());
            if let Some(t) = self.seal_control(now, slot, &messages, buf) {
                if let Some(link) = self.links[slot].as_mut() {
                    let pn = link.next_pn - 1;
                    link.monitor.on_probe_sent(now, pn);
                    link.stats.probes_sent += 1;
                }
                return Some(t);
            }
        }
        if let Some(t) = self.send_naks(now, buf) {
            return Some(t);
        }
        for slot in 0..MAX_LINKS {
            let Some(size) = self.links[slot].as_mut().and_then(|link| link.mtu_probe_due.take()) else {
                continue;
            };
            // With the reports, as every probe: the packet answers the data that came in.
            let excused = self.links[slot].as_ref().and_then(|l| l.monitor.excused());
            let mut probe = vec![ControlMessage::MtuProbe { size: size as u16 }];
            probe.extend(excused.map(|total| ControlMessage::Excused { total }));
            probe.extend(self.reports());
            if let Some(t) = self.seal_control_padded(now, slot, &probe, size, buf) {
                if let Some(link) = self.links[slot].as_mut() {
                    link.stats.mtu_probes_sent += 1;
                }
                return Some(t);
            }
        }
        while let Some(pending) = self.queue.front_mut() {
            // One link at a time, each piece of the frame in turn.
            let (id, split) = match pending.current {
                Some(current) => current,
                None => {
                    let Some(id) = pending.links.pop_first() else {
                        if let Some(done) = self.queue.pop_front() {
                            self.keep_sent(now, done);
                        }
                        continue;
                    };
                    let Some(max_datagram) = id.index().and_then(|i| self.links[i].as_ref()).map(|l| l.pmtu.current())
                    else {
                        continue;
                    };
                    let split = Split::new(pending.frame.len(), max_datagram);
                    pending.current = Some((id, split));
                    pending.piece = 0;
                    (id, split)
                }
            };
            let piece = usize::from(pending.piece);
            pending.piece += 1;
            if usize::from(pending.piece) >= split.pieces() {
                pending.current = None;
            }
            let seq = pending.seq;
            let Some(slot) = id.index() else { continue };
            if let Some(t) = self.seal_data(now, slot, seq, split, piece, buf) {
                return Some(t);
            }
        }
        None
    }

    /// The next frame for the local side, in order, written into `buf`.
    pub fn poll_frame(&mut self, buf: &mut Vec<u8>) -> Option<Delivered> {
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

    /// When [`Session::handle_timeout`] is next due, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        let mut best: Option<(Instant, TimerKind)> = None;
        let mut consider = |at: Instant, kind: TimerKind| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, kind));
            }
        };
        for link in self.links.iter().flatten() {
            consider(link.next_probe, TimerKind::Probe(link.id));
            if let Some(at) = link.monitor.poll_timeout() {
                consider(at, TimerKind::LinkTimeout(link.id));
            }
            if link.mtu_probe_due.is_none()
                && link.can_probe_mtu()
                && let Some(at) = link.pmtu.poll_timeout(link.monitor.probe_timeout())
            {
                consider(at, TimerKind::PathMtu(link.id));
            }
            if link.ack_due && !link.ack_woken {
                // The first poll_transmit at or after this sends the report.
                consider(link.ack_at(), TimerKind::Ack(link.id));
            }
        }
        if let Some(at) = self.reorder.poll_timeout() {
            consider(at, TimerKind::Reorder);
        }
        if self.config.retransmit
            && let Some(at) = self.gaps.next_due(&self.nak_timing(None))
        {
            consider(at, TimerKind::Nak);
        }
        if let Some((at, _)) = self.delayed.front() {
            consider(*at, TimerKind::Resend);
        }
        if let Some((_, retire)) = &self.previous {
            consider(*retire, TimerKind::KeyRetire);
        }
        best
    }

    fn open_datagram(
        &mut self,
        now: Instant,
        via: LinkId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (repr, kind) = wire::classify(datagram)?;
        let aad_len = match kind {
            Kind::Data | Kind::SealedControl => kind.aad_len(),
            Kind::Handshake(..) => return Err(DropReason::UnexpectedHandshake),
        };
        let generation = if repr.key.index == self.current.local_index {
            Generation::Current
        } else if self.previous.as_ref().is_some_and(|(k, _)| k.local_index == repr.key.index) {
            Generation::Previous
        } else if self.next.as_ref().is_some_and(|k| k.local_index == repr.key.index) {
            Generation::Next
        } else {
            return Err(DropReason::UnknownSession);
        };
        if repr.key.link != via {
            return Err(DropReason::BadLink);
        }
        let slot = via.index().ok_or(DropReason::BadLink)?;
        let expected = match &self.links[slot] {
            Some(link) => link.replay.highest().map_or(0, |h| h + 1),
            None if self.role == Role::Gateway => 0,
            None => return Err(DropReason::BadLink),
        };
        let pn = expand_u32(expected, repr.sequence);
        if let Some(link) = &self.links[slot] {
            match link.replay.check(pn) {
                Verdict::Accept => {}
                Verdict::Duplicate => return Err(DropReason::Replay),
                Verdict::TooOld => return Err(DropReason::TooOld),
            }
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(datagram);
        let nonce = PathNonce { link: via, packet_number: PacketNumber(pn) };
        let keys = match generation {
            Generation::Current => Some(&self.current),
            Generation::Previous => self.previous.as_ref().map(|(k, _)| k),
            Generation::Next => self.next.as_ref(),
        };
        let keys = keys.ok_or(DropReason::UnknownSession)?;
        let plain_len = keys.protection.open(nonce, &mut self.scratch, aad_len).map_err(|_| DropReason::OpenFailed)?;
        if generation == Generation::Next
            && let Some(next) = self.next.take()
        {
            // The peer proved it holds the new keys: they take over sealing.
            let old = std::mem::replace(&mut self.current, next);
            self.previous = Some((old, now + KEY_GRACE));
            tracing::info!(index = ?self.current.local_index, "new keys confirmed");
        }

        // Authenticated: from here on the packet may change state.
        if self.links[slot].is_none() {
            self.links[slot] = Some(
                Link::new(via, 0, None, None, now, self.config.probe_interval)
                    .steered(self.config.mode.spreads_by_capacity())
                    .path_mtu(now, self.config.max_datagram, self.config.probe_mtu),
            );
        }
        let link = self.links[slot].as_mut().ok_or(DropReason::BadLink)?;
        let newest = link.replay.highest().is_none_or(|h| pn > h);
        link.replay.mark(pn);
        if self.role == Role::Gateway && newest && link.remote != Some(from) {
            // Only the newest authenticated packet moves a path: a replayed or delayed one never
            // drags the path back to an address the peer has left.
            let old = link.remote.replace(from);
            if old.is_some() {
                // Another path (a modem's new address) may carry less: search it afresh.
                link.pmtu.restart(now);
                link.mtu_probe_due = None;
            }
            tracing::info!(link = %via, ?old, new = %from, "path moved");
            self.events.push_back(Event::PathChanged { link: via, from: old, to: from });
        }
        let plain = &self.scratch[aad_len..aad_len + plain_len];
        let local_ts = Self::timestamp(self.epoch, now);
        let (send_ts, body) = match repr.protocol {
            Protocol::Ethernet => {
                let (header, _) = DataHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                (header.send_ts, None)
            }
            Protocol::Control => {
                let (header, messages) = ControlHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                (header.send_ts, Some(messages))
            }
        };
        let base = *self.owd_base.get_or_insert(local_ts.wrapping_sub(send_ts));
        let owd_us = i64::from(local_ts.wrapping_sub(send_ts).wrapping_sub(base) as i32);
        link.monitor.on_packet_received(now, pn, datagram.len(), owd_us);
        link.stats.rx_packets += 1;
        link.stats.rx_bytes += datagram.len() as u64;

        match body {
            None => {
                let (header, frame) = DataHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                link.stats.rx_frames += 1;
                let expected = self.reorder.expected();
                let seq = expand_u32(expected, header.frame_seq);
                link.highest_frame = link.highest_frame.max(Some(seq));
                link.last_data = Some(now);
                if !link.ack_due {
                    link.ack_due = true;
                    link.ack_woken = false;
                }
                let joined;
                let frame = if header.fragment == FRAGMENT_PIECE {
                    let piece = Piece::parse(frame).map_err(|_| DropReason::BadPayload)?;
                    if self.reorder.has(seq) {
                        // A piece of a frame already delivered or held: a redundant copy.
                        self.stats.duplicate_pieces += 1;
                        return Ok(());
                    }
                    match self.reassembly.add(now, seq, piece) {
                        Joined::Frame(frame) => {
                            self.stats.frames_reassembled += 1;
                            joined = frame;
                            &joined[..]
                        }
                        Joined::Waiting => return Ok(()),
                        Joined::Inconsistent => return Err(DropReason::BadPayload),
                    }
                } else {
                    frame
                };
                let Some(link) = self.links[slot].as_mut() else { return Err(DropReason::BadLink) };
                match self.reorder.insert(now, seq, frame) {
                    Arrival::Ready | Arrival::Held => {
                        link.stats.rx_frames_first += 1;
                        if header.flags & FLAG_RETRANSMIT != 0 {
                            self.stats.frames_recovered += 1;
                        }
                        self.gaps.on_frame(now, seq, expected);
                    }
                    Arrival::Duplicate | Arrival::Late => {}
                }
                tracing::trace!(link = %via, seq, "frame");
                self.gaps.forget_below(self.reorder.expected());
                self.collect_naks(now);
                Ok(())
            }
            Some(messages) => {
                let messages: Vec<ControlMessage> = ControlMessages::new(messages)
                    .collect::<Result<_, WireError>>()
                    .map_err(|_| DropReason::BadPayload)?;
                self.handle_control(now, slot, repr.sequence, send_ts, &messages);
                Ok(())
            }
        }
    }

    fn handle_control(&mut self, now: Instant, slot: usize, seq: u32, send_ts: u32, messages: &[ControlMessage]) {
        for message in messages {
            match *message {
                ControlMessage::Probe { priority } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        if self.role == Role::Gateway {
                            link.priority = priority;
                        }
                        link.reply_due = Some((seq, send_ts));
                    }
                }
                ControlMessage::ProbeReply { echo_seq, .. } => {
                    let Some(link) = self.links[slot].as_mut() else {
                        continue;
                    };
                    let transition = link.monitor.on_probe_reply(now, echo_seq);
                    let id = link.id;
                    self.emit_transition(now, id, transition);
                }
                ControlMessage::Report(report) => {
                    if let Some(link) = report.link.index().and_then(|i| self.links[i].as_mut()) {
                        let before = link.monitor.reported();
                        let transition = link.monitor.on_report(now, &report);
                        if link.monitor.reported() != before {
                            link.on_report(now, send_ts);
                        }
                        let id = link.id;
                        self.emit_transition(now, id, transition);
                    }
                }
                ControlMessage::Nak { first, count } => self.resend(now, slot, first, count),
                ControlMessage::MtuProbe { size } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.mtu_ack_due = Some(size);
                    }
                }
                ControlMessage::MtuAck { size } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.pmtu.on_ack(now, usize::from(size));
                    }
                }
                ControlMessage::Excused { total } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.monitor.set_rx_excused(total);
                    }
                }
                ControlMessage::Sent { next } => {
                    let expected = self.reorder.expected();
                    self.gaps.on_sent(now, expand_u32(expected, next), expected);
                    self.collect_naks(now);
                }
                ControlMessage::Gone { first, count } => {
                    let first = expand_u32(self.reorder.expected(), first);
                    for seq in first..first + u64::from(count).min(MAX_MISSING as u64) {
                        self.reorder.abandon(now, seq);
                    }
                    self.gaps.forget_below(self.reorder.expected());
                }
            }
        }
    }

    fn seal_control(
        &mut self,
        now: Instant,
        slot: usize,
        messages: &[ControlMessage],
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        self.seal_control_padded(now, slot, messages, 0, buf)
    }

    /// Seals `messages` onto the link in `slot`, padded to a datagram of `size` bytes if it
    /// would be shorter (a path-MTU probe).
    fn seal_control_padded(
        &mut self,
        now: Instant,
        slot: usize,
        messages: &[ControlMessage],
        size: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let ts = Self::timestamp(self.epoch, now);
        let build = |buf: &mut Vec<u8>| {
            buf.push(ControlType::Sealed.to_u8());
            let aad_len = buf.len();
            buf.extend_from_slice(&ts.to_be_bytes());
            for message in messages {
                message.emit(buf);
            }
            let sealed = buf.len() + crate::wire::TAG_LEN;
            if size > sealed + 1 {
                crate::wire::emit_padding(buf, size - sealed);
            }
            aad_len
        };
        let transmit = self.seal(now, slot, Protocol::Control, build, buf);
        if transmit.is_some()
            && let Some(link) = self.links[slot].as_mut()
        {
            // Any packet on the link answers the data that came in on it.
            link.last_control = Some(now);
            link.ack_due = false;
        }
        transmit
    }

    /// Seals piece `piece` of the frame at the front of the queue (the whole frame if `split`
    /// has one piece) onto the link in `slot`.
    fn seal_data(
        &mut self,
        now: Instant,
        slot: usize,
        seq: u64,
        split: Split,
        piece: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let ts = Self::timestamp(self.epoch, now);
        let pending = self.queue.front()?;
        let retransmit = pending.retransmit;
        let flags = if retransmit { FLAG_RETRANSMIT } else { 0 };
        let whole = split.pieces() == 1;
        let fragment = if whole { 0 } else { FRAGMENT_PIECE };
        let header = DataHeader { frame_seq: seq as u32, send_ts: ts, flags, fragment };
        let frame = &pending.frame;
        let range = split.range(piece);
        let build = |buf: &mut Vec<u8>| {
            let aad_len = buf.len();
            buf.resize(aad_len + crate::wire::DATA_HEADER_LEN, 0);
            // The buffer was just sized for the header, so emitting cannot fail.
            let _ = header.emit(&mut buf[aad_len..]);
            if !whole {
                emit_piece_header(range.start, frame.len(), buf);
            }
            buf.extend_from_slice(&frame[range]);
            aad_len
        };
        // The first copy is every piece on the first link a frame goes out on.
        let first_copy = !retransmit && pending.sent_on.iter().all(|l| l.index() == Some(slot));
        let transmit = Self::seal_with(&mut self.links, &mut self.current, now, slot, Protocol::Ethernet, build, buf);
        let first_piece = piece == 0;
        match transmit {
            Ok(t) => {
                if t.is_some() {
                    let bytes = buf.len() as u64;
                    if first_copy {
                        self.stats.data_bytes_first += bytes;
                    } else {
                        self.stats.data_bytes_extra += bytes;
                    }
                }
                self.stats.frame_copies_sent += u64::from(first_piece);
                self.stats.frames_retransmitted += u64::from(retransmit && t.is_some() && first_piece);
                self.stats.frames_fragmented += u64::from(!whole && first_piece && t.is_some());
                if let (Some(t), Some(pending)) = (t, self.queue.front_mut()) {
                    pending.sent_on.insert(t.link);
                }
                if let Some(link) = self.links[slot].as_mut() {
                    link.stats.tx_frames += u64::from(first_piece);
                    link.stats.tx_retransmits += u64::from(retransmit && first_piece);
                    let pn = link.next_pn - 1;
                    link.monitor.on_packet_sent(now, pn);
                    link.monitor.on_data_sent(now);
                    link.log_sent(now, pn);
                }
                t
            }
            Err(reason) => {
                self.count(reason);
                None
            }
        }
    }

    fn seal(
        &mut self,
        now: Instant,
        slot: usize,
        protocol: Protocol,
        build: impl FnOnce(&mut Vec<u8>) -> usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        match Self::seal_with(&mut self.links, &mut self.current, now, slot, protocol, build, buf) {
            Ok(t) => t,
            Err(reason) => {
                self.count(reason);
                None
            }
        }
    }

    /// Writes GRE header + body into `buf` and seals it on the link in `slot`. `Ok(None)` when the
    /// link cannot send (no remote address or no carrier).
    fn seal_with(
        links: &mut [Option<Link>],
        keys: &mut KeyGen,
        now: Instant,
        slot: usize,
        protocol: Protocol,
        build: impl FnOnce(&mut Vec<u8>) -> usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Transmit>, DropReason> {
        let Some(link) = links.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(None);
        };
        let Some(destination) = link.remote.filter(|_| link.monitor.carrier()) else {
            return Ok(None);
        };
        if now.saturating_duration_since(keys.created) >= REJECT_AFTER_TIME {
            return Err(DropReason::KeyExpired);
        }
        let remote_index = keys.remote_index;
        let pn = link.next_pn;
        buf.clear();
        buf.resize(GRE_HEADER_LEN, 0);
        let repr = GreRepr { protocol, key: PathKey { index: remote_index, link: link.id }, sequence: pn as u32 };
        repr.emit(buf).map_err(|_| DropReason::SealFailed)?;
        let aad_len = build(buf);
        let nonce = PathNonce { link: link.id, packet_number: PacketNumber(pn) };
        keys.protection.seal(nonce, buf, aad_len).map_err(|_| DropReason::SealFailed)?;
        keys.sealed += 1;
        link.next_pn += 1;
        link.stats.tx_packets += 1;
        link.stats.tx_bytes += buf.len() as u64;
        tracing::trace!(link = %link.id, pn, len = buf.len(), "sealed");
        Ok(Some(Transmit { link: link.id, destination }))
    }

    /// Sets the reorder hold from the links' one-way delay windows: the latest a frame can
    /// arrive minus the earliest another can, plus a margin.
    fn update_hold(&mut self, now: Instant) {
        let ranges = self
            .links
            .iter()
            .flatten()
            .filter(|l| l.monitor.state() != LinkState::Down)
            .filter_map(|l| l.monitor.delay_range(now));
        let span = ranges.fold(None, |acc: Option<(i64, i64)>, (lo, hi)| match acc {
            None => Some((lo, hi)),
            Some((a, b)) => Some((a.min(lo), b.max(hi))),
        });
        if let Some((lo, hi)) = span {
            let spread = Duration::from_micros((hi - lo).max(0) as u64);
            self.reorder.set_hold(spread + REORDER_MARGIN);
        }
    }

    /// A frame has gone out on every link chosen for it: keep it to answer NAKs.
    fn keep_sent(&mut self, now: Instant, done: Pending) {
        if done.retransmit || !self.config.retransmit {
            self.pool.push(done.frame);
        } else if let Some(buf) = self.sent.insert(now, done.seq, done.sent_on, done.frame) {
            self.pool.push(buf);
        }
    }

    /// How missing frames are timed, from the links as they measure now. With `now`, only links
    /// that carried data within [`DATA_RECENT`] count as having passed a frame; without it (for
    /// a wake-up time) every link that ever carried data counts, which can only make a NAK later.
    fn nak_timing(&self, now: Option<Instant>) -> NakTiming {
        let carrying =
            self.links.iter().flatten().filter(|l| l.monitor.state() != LinkState::Down).filter(|l| {
                match (now, l.last_data) {
                    (Some(now), Some(at)) => now.saturating_duration_since(at) <= DATA_RECENT,
                    (None, Some(_)) => true,
                    (_, None) => false,
                }
            });
        let passed_everywhere = carrying.map(|l| l.highest_frame.map_or(0, |h| h + 1)).min().unwrap_or(0);
        let rto = self.nak_route().first().map_or(DEFAULT_RTO, |(_, rto)| *rto);
        let rtt = self.best_rtt().unwrap_or(DEFAULT_RTO);
        NakTiming {
            passed_everywhere,
            hold: self.reorder.hold(),
            rto,
            last_useful: self.config.latency_budget.saturating_sub(rtt),
        }
    }

    /// The links a NAK goes out on, best first (lowest retransmission timeout): at most two,
    /// and never one that is down.
    fn nak_route(&self) -> Vec<(LinkId, Duration)> {
        let mut route: Vec<(LinkId, Duration)> = self
            .links
            .iter()
            .flatten()
            .filter(|l| l.monitor.state() != LinkState::Down && l.monitor.carrier() && l.remote.is_some())
            .map(|l| (l.id, l.monitor.probe_timeout()))
            .collect();
        route.sort_by_key(|&(id, rto)| (rto, id));
        route.truncate(2);
        route
    }

    /// The lowest smoothed RTT of the links that are not down.
    fn best_rtt(&self) -> Option<Duration> {
        self.links
            .iter()
            .flatten()
            .filter(|l| l.monitor.state() != LinkState::Down)
            .filter_map(|l| l.monitor.quality().srtt)
            .min()
    }

    /// Moves the missing frames that are due into the NAK to send.
    fn collect_naks(&mut self, now: Instant) {
        if !self.config.retransmit || self.gaps.is_empty() {
            return;
        }
        let timing = self.nak_timing(Some(now));
        let mut due = Vec::new();
        self.gaps.take_due(now, &timing, &mut due);
        let Some(&last) = due.last() else { return };
        self.reorder.await_retransmit(last);
        self.stats.frames_nacked += due.len() as u64;
        tracing::trace!(frames = due.len(), "nak");
        self.queue_feedback(&due, |first, count| ControlMessage::Nak { first, count });
    }

    /// Queues ascending frame sequences as ranges of `message`, to go out on the NAK route.
    fn queue_feedback(&mut self, seqs: &[u64], message: fn(u32, u16) -> ControlMessage) {
        let mut run: Option<(u64, u16)> = None;
        for &seq in seqs {
            run = match run {
                Some((first, count)) if first + u64::from(count) == seq && count < u16::MAX => Some((first, count + 1)),
                Some((first, count)) => {
                    self.feedback.push(message(first as u32, count));
                    Some((seq, 1))
                }
                None => Some((seq, 1)),
            };
        }
        if let Some((first, count)) = run {
            self.feedback.push(message(first as u32, count));
        }
        if self.feedback_links.is_empty() {
            self.feedback_links = self.nak_route().into_iter().map(|(id, _)| id).collect();
        }
    }

    /// Seals the next NAK packet onto the next link of its route.
    fn send_naks(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        while !self.feedback.is_empty() {
            let Some(id) = self.feedback_links.pop_first() else {
                self.feedback.clear();
                return None;
            };
            let take = self.feedback.len().min(MAX_NAKS_PER_PACKET);
            let messages: Vec<ControlMessage> = self.feedback[..take].to_vec();
            if self.feedback_links.is_empty() {
                self.feedback.drain(..take);
                if !self.feedback.is_empty() {
                    self.feedback_links = self.nak_route().into_iter().map(|(id, _)| id).collect();
                }
            }
            if let Some(t) = id.index().and_then(|slot| self.seal_control(now, slot, &messages, buf)) {
                return Some(t);
            }
        }
        None
    }

    /// Answers a NAK that came in on the link in `via`: re-sends the frames it names that are
    /// still kept and can still arrive within the budget, ahead of new frames, on the links the
    /// scheduler's retransmission policy picks; and a second copy [`RESEND_SPACING`] later, on
    /// `via` if the policy picked it, else on the first link picked. Frames that cannot be
    /// re-sent are answered with `Gone`, so the peer stops waiting for them.
    fn resend(&mut self, now: Instant, via: usize, first: u32, count: u16) {
        if !self.config.retransmit {
            return;
        }
        let first = expand_u32(self.next_frame_seq, first);
        let count = u64::from(count).min(MAX_MISSING as u64);
        self.views.clear();
        for link in self.links.iter_mut().flatten() {
            link.drain_backlog(now);
            if link.remote.is_some() && link.monitor.carrier() {
                self.views.push(link.view());
            }
        }
        let via = self.views.iter().find(|v| v.id.index() == Some(via)).map(|v| v.id);
        let guard = self.best_rtt().map_or(MIN_RESEND_GAP, |rtt| (rtt / 2).max(MIN_RESEND_GAP));
        let budget = self.config.latency_budget;
        // Frames from here on are still queued for their first sending: not gone.
        let queued = self.queue.iter().find(|p| !p.retransmit).map_or(self.next_frame_seq, |p| p.seq);
        let mut resent = Vec::new();
        let mut gone = Vec::new();
        for seq in first..first + count {
            let Some(sent) = self.sent.get_mut(seq) else {
                if seq < queued {
                    gone.push(seq);
                }
                continue;
            };
            // A NAK for a first copy that cannot have arrived yet is the peer's guess (it did
            // not know the link carried data), not a loss: the copy is still on its way, and
            // the peer asks again after its RTO if it never comes.
            // Half the link's lowest RTT: no copy arrives sooner, whatever the jitter.
            let links = &self.links;
            let owd = |id: LinkId| {
                id.index()
                    .and_then(|i| links.get(i))
                    .and_then(Option::as_ref)
                    .and_then(|l| l.cc.min_rtt().or(l.monitor.quality().min_rtt))
                    .map(|r| r / 2)
            };
            let in_flight = sent.links.iter().filter_map(owd).max();
            let back = via.and_then(owd).unwrap_or_default();
            // So is a NAK for a re-sent copy that cannot have arrived yet, behind the queue it
            // joined: answering it would send the frame again onto that queue, which grows the
            // queue and delays the copy the NAK asks for (on the last link left, the queue grew
            // past its limit and new frames were dropped at the entry).
            let early = match sent.resent_due {
                None => in_flight.is_some_and(|d| now.saturating_duration_since(sent.at) < d + back),
                Some(due) => now < due + back,
            };
            if early {
                self.stats.naks_early += 1;
                continue;
            }
            let meta = FrameMeta { seq: FrameSeq(seq), len: sent.frame.len(), critical: false };
            let links = self.scheduler.retransmit(now, &meta, &self.views, via);
            let arrival = self.views.iter().filter(|v| links.contains(v.id)).map(|v| v.resend_arrival(meta.len)).min();
            if arrival.is_none_or(|a| now.saturating_duration_since(sent.at) + a > budget) {
                gone.push(seq);
                continue;
            }
            if sent.resent_at.is_some_and(|at| now.saturating_duration_since(at) < guard) {
                continue;
            }
            sent.resent_at = Some(now);
            sent.resent_due = arrival.map(|a| now + a);
            // The first copy on each link picked, and the spaced second one.
            let second = via.filter(|&id| links.contains(id)).or_else(|| links.iter().next());
            charge_views(&mut self.views, links, meta.len);
            if let Some(id) = second {
                charge_views(&mut self.views, [id].into_iter().collect(), meta.len);
            }
            resent.push((seq, links, second));
        }
        if !gone.is_empty() {
            self.queue_feedback(&gone, |first, count| ControlMessage::Gone { first, count });
        }
        for &(seq, links, second) in resent.iter().rev() {
            self.queue_resend(seq, links);
            if let Some(id) = second {
                let frame = self.copy_sent(seq);
                let links: LinkSet = [id].into_iter().collect();
                self.charge(links, frame.len());
                self.delayed.push_back((now + RESEND_SPACING, Pending::resend(seq, frame, links)));
            }
        }
    }

    /// A link went down, or its path stopped carrying the size in use: the frames it carried in
    /// the time it takes to notice are probably lost, so they are re-sent now, on the links the
    /// scheduler's retransmission policy picks, without waiting for the peer's NAK a round trip
    /// later (a NAK's answer on a black-holed link, before the black hole is found, is swallowed
    /// too). Copies that did arrive are dropped by the peer's dedup.
    fn resend_in_flight(&mut self, now: Instant, lost_on: LinkId, why: Swallowed) {
        let Some(link) = self.link(lost_on) else { return };
        if !self.config.retransmit || self.sent.is_empty() {
            return;
        }
        // What a dead link swallowed: for a carrier loss, what was on the wire (one probe
        // timeout); else everything sent since one RTT before the last packet heard on it (the
        // peer had answered what came before). What a black hole swallowed: every frame too big
        // for the base size, since the probe that last showed the size in use getting through.
        let rtt = link.monitor.quality().srtt.unwrap_or(DEFAULT_RTO);
        let since = match why {
            Swallowed::Down(StateReason::CarrierLost) => now.checked_sub(link.monitor.probe_timeout()),
            Swallowed::Down(_) => link.monitor.last_heard().checked_sub(rtt),
            Swallowed::BlackHole => link.pmtu.confirmed_sent(),
        }
        .unwrap_or(now);
        // After a black hole the link is back at its base size.
        let base = link.pmtu.current();
        self.views.clear();
        for link in self.links.iter_mut().flatten() {
            link.drain_backlog(now);
            if link.remote.is_some() && link.monitor.carrier() {
                self.views.push(link.view());
            }
        }
        let usable: LinkSet = self.views.iter().filter(|v| v.state.is_usable()).map(|v| v.id).collect();
        let budget = self.config.latency_budget;
        let mut resend = Vec::new();
        for sent in self.sent.iter_mut().filter(|s| s.at >= since && s.links.contains(lost_on)) {
            let safe = match why {
                Swallowed::Down(_) => sent.links.iter().any(|id| usable.contains(id)),
                // Another link's path may have shrunk too, not yet found: each is re-sent, even
                // what a NAK already had re-sent (at the old size, maybe on this link: in the
                // simulator skipping those lost 136 frames instead of 101). Copies the peer
                // already has cost bandwidth once, within the latency budget.
                Swallowed::BlackHole => Split::new(sent.frame.len(), base).pieces() == 1,
            };
            if safe {
                continue;
            }
            let meta = FrameMeta { seq: FrameSeq(sent.seq), len: sent.frame.len(), critical: false };
            let links = self.scheduler.retransmit(now, &meta, &self.views, None);
            let arrival = self.views.iter().filter(|v| links.contains(v.id)).map(|v| v.resend_arrival(meta.len)).min();
            if arrival.is_none_or(|a| now.saturating_duration_since(sent.at) + a > budget) {
                continue;
            }
            charge_views(&mut self.views, links, meta.len);
            sent.resent_at = Some(now);
            sent.resent_due = arrival.map(|a| now + a);
            resend.push((sent.seq, links));
        }
        tracing::debug!(link = %lost_on, frames = resend.len(), ?why, "re-sending what a link swallowed");
        for &(seq, links) in resend.iter().rev() {
            self.queue_resend(seq, links);
        }
    }

    /// Queues a copy of kept frame `seq` on `links`, ahead of new frames.
    fn queue_resend(&mut self, seq: u64, links: LinkSet) {
        let frame = self.copy_sent(seq);
        self.charge(links, frame.len());
        self.queue.push_front(Pending::resend(seq, frame, links));
    }

    /// A copy of kept frame `seq`, in a pooled buffer.
    fn copy_sent(&mut self, seq: u64) -> Vec<u8> {
        let mut frame = self.pool.pop().unwrap_or_default();
        frame.clear();
        if let Some(sent) = self.sent.get_mut(seq) {
            frame.extend_from_slice(&sent.frame);
        }
        frame
    }

    /// Counts a frame about to be queued on `links` against their backlog.
    fn charge(&mut self, links: LinkSet, len: usize) {
        for id in links.iter() {
            if let Some(link) = self.link_mut(id) {
                link.backlog_bytes += (len + crate::wire::DATA_OVERHEAD) as f64;
            }
        }
    }

    fn emit_transition(&mut self, now: Instant, link: LinkId, transition: Option<Transition>) {
        let Some(transition) = transition else { return };
        if let Some(l) = self.link_mut(link) {
            // A link back from down may have a new path: its MTU is searched for again.
            if transition.to == LinkState::Down {
                l.pmtu.stop();
                l.mtu_probe_due = None;
            } else if transition.from == LinkState::Down {
                l.pmtu.restart(now);
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
