//! The edge endpoint: a [`Session`] plus the handshake that keys it and keeps it keyed.
//!
//! The edge initiates. It sends an initiation on every link that has carrier (the first to get
//! through wins; the gateway refuses the copies as replays), retries every
//! [`HANDSHAKE_RETRY`], rekeys every [`REKEY_AFTER_TIME`] without interrupting the stream, and
//! starts a new handshake when every link has gone silent, which is how it finds a gateway that
//! restarted and lost its sessions.
//!
//! The call order is the session's: `handle_*`, then drain `poll_*`, then sleep until
//! [`Edge::poll_timeout`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::announce::Announcer;
use crate::crypto::{Aead, Cipher, SessionKeys};
use crate::handshake::{self, CryptoRng, InitPayload, Initiation, Tai64n};
use crate::keys::{PrivateKey, Psk, PublicKey};
use crate::scheduler::{Mode, Spend};
use crate::session::{
    Delivered, DropReason, Earliest, Event, LinkConfig, LinkEvent, Role, Session, SessionConfig, SetupError,
    TakeoverReason, TimerKind, Transmit,
};
use crate::wire::{self, ControlType, GreRepr, Kind, PathKey, Placement, Protocol};
use crate::{LinkId, LinkSet, SessionIndex};

/// The edge starts a new handshake when its keys are this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// ... or when it has sealed this many packets with them, far below any AEAD limit.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 32;
/// An unanswered initiation is sent again (with a fresh ephemeral key) after this long.
pub const HANDSHAKE_RETRY: Duration = Duration::from_millis(500);
/// When every link is down, a new handshake (the gateway may have restarted) is started at most
/// this often, and not within this long of the last one completing.
pub const DEAD_GATEWAY_HANDSHAKE: Duration = Duration::from_secs(2);
/// A cookie from the gateway is used for this long.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// Handshakes unanswered this long are reported ([`Event::HandshakeTrouble`]) even with no
/// cause seen; the report is repeated at twice the interval each time, up to
/// [`TROUBLE_REPEAT_MAX`].
pub const TROUBLE_AFTER: Duration = Duration::from_secs(3);
/// The longest interval between two reports of the same trouble.
pub const TROUBLE_REPEAT_MAX: Duration = Duration::from_secs(60);

/// Why handshakes are not completing, as far as the edge can tell; later variants are the more
/// telling, and a report names the most telling one seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeTrouble {
    /// Nothing came back on any link.
    NoReply,
    /// The gateway answered with a cookie: it is under load, and the edge retries with it.
    UnderLoad,
    /// An ICMP error came back for the gateway's address.
    Unreachable(Unreachable),
    /// A reply came that does not authenticate with the pinned gateway key.
    WrongKey,
}

/// What an ICMP error said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unreachable {
    /// Nothing listens on the gateway's port (port unreachable).
    Port,
    /// The gateway's host or network cannot be reached.
    Host,
}

impl HandshakeTrouble {
    /// A short name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoReply => "no_reply",
            Self::UnderLoad => "gateway_under_load",
            Self::Unreachable(Unreachable::Port) => "port_unreachable",
            Self::Unreachable(Unreachable::Host) => "host_unreachable",
            Self::WrongKey => "wrong_gateway_key",
        }
    }

    /// What it means and what to check, for an operator.
    pub const fn advice(self) -> &'static str {
        match self {
            Self::NoReply => {
                "no reply from the gateway: check gateway.address and its port, a firewall on the way, and that \
                 the gateway's allowlist has this edge's public key (the gateway logs the keys it does not know)"
            }
            Self::UnderLoad => "the gateway is under load (it answered with a cookie); retrying with the cookie",
            Self::Unreachable(Unreachable::Port) => {
                "ICMP port unreachable: nothing listens on the gateway's port; check the port in gateway.address \
                 and that braid-gateway runs"
            }
            Self::Unreachable(Unreachable::Host) => {
                "ICMP host or network unreachable: check gateway.address and the uplinks' routes"
            }
            Self::WrongKey => {
                "the gateway answered, but not with the key this edge pins: check gateway.public_key against what \
                 `braid-gateway pubkey` prints on the gateway"
            }
        }
    }
}

/// The handshakes unanswered since `since`, and what was seen and reported of them.
#[derive(Debug, Clone, Copy)]
struct Trouble {
    since: Instant,
    attempts_before: u64,
    worst: HandshakeTrouble,
    reported: Option<HandshakeTrouble>,
    next_report: Instant,
    every: Duration,
}

/// What the edge needs to know.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The edge's static private key.
    pub private_key: PrivateKey,
    /// The gateway's public key, pinned.
    pub gateway_key: PublicKey,
    /// The optional pre-shared key the gateway holds for this edge.
    pub psk: Option<Psk>,
    /// The data-plane cipher.
    pub cipher: Cipher,
    /// Links, mode and budgets; each link's `remote` is the gateway's address.
    pub session: SessionConfig,
    /// Standby gateways, by priority: each keeps a session ready (handshaked and probed on
    /// every link, carrying no data), and the first that answers takes the stream over when the
    /// active gateway stops answering on every link.
    pub standbys: Vec<GatewayPeer>,
    /// The stream returns, make-before-break, to a gateway earlier in the list once it has
    /// answered (and not said it is being drained) for this long: the hold-down that keeps a
    /// flapping gateway from pulling the stream back and forth. `None`: it stays where it is.
    pub return_after: Option<Duration>,
}

/// A gateway the edge may carry its stream to: where it listens and its pinned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPeer {
    /// Its UDP address.
    pub address: SocketAddr,
    /// Its public key, pinned.
    pub public_key: PublicKey,
    /// The optional pre-shared key it holds for this edge.
    pub psk: Option<Psk>,
}

crate::counters! {
    /// Edge-level counters (the session has its own).
    pub struct EdgeStats {
        /// Initiations sent (one per attempt, however many links carried it).
        handshakes_started,
        /// Handshakes completed.
        handshakes_completed,
        /// Cookie replies received (the gateway is under load).
        cookies,
        /// Times the gateway answered that it had lost the session (it restarted, or another
        /// gateway took over its address), each followed at once by a new handshake.
        sessions_lost,
        /// Times the stream moved to a standby gateway because the active one stopped answering.
        gateway_takeovers,
        /// Frames moved to the new gateway in a takeover: sent to the old one and not confirmed,
        /// or not yet sent. The most the ingest can see twice.
        frames_moved,
        /// Frames a gateway that does not carry the stream sent down, discarded.
        standby_frames_discarded,
        /// Times the stream moved to the gateway the active one's fleet placed it on.
        redirects_followed,
        /// Placements not followed: a gateway this edge does not pin, or past
        /// [`MAX_REDIRECTS`] in [`REDIRECT_WINDOW`] (each distinct placement counted once).
        redirects_refused,
    }
    with drops
}

#[derive(Debug)]
struct Pending {
    initiation: Initiation,
    sent_at: Instant,
    /// The first frame the initiation told the gateway to expect: a gateway that starts afresh
    /// gets every kept frame from there on again.
    next_frame_seq: u64,
}

/// "No such session" tokens kept: those of the current keys and of the previous ones, which
/// the gateway may still be answering for.
const TOKENS_KEPT: usize = 2;

/// Before its first session, the first gateway has this long to answer before a standby that
/// did takes the stream.
pub const FIRST_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The most moves the edge makes on a fleet's placements in [`REDIRECT_WINDOW`]: gateways that
/// disagree cannot bounce the stream between them.
pub const MAX_REDIRECTS: usize = 2;
/// See [`MAX_REDIRECTS`].
pub const REDIRECT_WINDOW: Duration = Duration::from_secs(60);

/// One gateway the edge handshakes with, and its session.
#[derive(Debug)]
struct Peer {
    address: SocketAddr,
    key: PublicKey,
    psk: Option<Psk>,
    session: Option<Session>,
    pending: Option<Pending>,
    /// The initiation body, and the links it still has to go out on.
    init_body: Vec<u8>,
    init_due: LinkSet,
    retry_at: Option<Instant>,
    last_completed: Option<Instant>,
    /// The gateway's cookie for each link's source address, and when it came.
    cookies: [Option<([u8; 16], Instant)>; crate::MAX_LINKS],
    trouble: Option<Trouble>,
    /// The gateway's "no such session" token for each of its recent indices, newest last.
    tokens: VecDeque<(SessionIndex, [u8; handshake::TOKEN_LEN])>,
    /// Since when its session has answered on some link without saying it is being drained.
    answering_since: Option<Instant>,
}

impl Peer {
    fn new(address: SocketAddr, key: PublicKey, psk: Option<Psk>) -> Self {
        Self {
            address,
            key,
            psk,
            session: None,
            pending: None,
            init_body: Vec::new(),
            init_due: LinkSet::EMPTY,
            retry_at: None,
            last_completed: None,
            cookies: [None; crate::MAX_LINKS],
            trouble: None,
            tokens: VecDeque::new(),
            answering_since: None,
        }
    }

    /// A session that answers on some link.
    fn answers(&self) -> bool {
        self.session.as_ref().is_some_and(Session::any_link_usable)
    }

    /// A session that answers on some link and whose gateway is not being drained: one the
    /// stream may go to.
    fn available(&self, now: Instant) -> bool {
        self.answers() && !self.session.as_ref().is_some_and(|s| s.peer_draining(now))
    }

    fn needs_handshake(&self, now: Instant) -> bool {
        if self.pending.is_some() {
            return false;
        }
        let Some(session) = &self.session else { return true };
        let settled = self.last_completed.is_none_or(|at| now.saturating_duration_since(at) >= DEAD_GATEWAY_HANDSHAKE);
        now.saturating_duration_since(session.keys_created()) >= REKEY_AFTER_TIME
            || session.keys_used() >= REKEY_AFTER_PACKETS
            || (session.all_links_down() && settled)
    }
}

/// The edge's end of the tunnel.
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    local_public: PublicKey,
    rng: CryptoRng,
    start: Instant,
    unix_nanos_at_start: u64,
    epoch: u64,
    session_seed: u64,
    /// The gateways: the configured one first, then the standbys by priority.
    peers: Vec<Peer>,
    /// The peer that carries the stream.
    active: usize,
    /// Until when the first gateway may answer before a standby that did takes the stream;
    /// `None` once passed (or with one gateway).
    first_answer_due: Option<Instant>,
    carrier: LinkSet,
    events: VecDeque<Event>,
    stats: EdgeStats,
    /// What each link may be spent on, by slot, for the sessions to come.
    spend: [Spend; crate::MAX_LINKS],
    /// The LAN's addresses, announced through a gateway that starts afresh.
    announcer: Announcer,
    /// When the stream last moved on a fleet's placement (at most [`MAX_REDIRECTS`] kept).
    redirects: VecDeque<Instant>,
    /// The standby the active gateway's fleet named, first in line for a takeover.
    preferred_standby: Option<usize>,
    /// Whether a gateway's fleet has placed this edge: its placements, not the order of the
    /// edge's list, then say where the stream belongs, and the stream never returns by the list.
    placed_by_fleet: bool,
    /// The last placement not followed, so that it is counted once.
    refused: Option<[u8; 32]>,
}

impl Edge {
    /// An edge that starts its first handshake with every gateway at once.
    ///
    /// `unix_nanos` is the wall-clock time at `now` (for the initiation's replay timestamp);
    /// `seed` must come from the OS's entropy outside tests.
    ///
    /// # Errors
    /// [`SetupError`] if the session config is unusable, or two gateways share a key or an
    /// address.
    pub fn new(config: EdgeConfig, now: Instant, unix_nanos: u64, seed: [u8; 32]) -> Result<Self, SetupError> {
        let Some(primary) = config.session.links.first().map(|l| l.remote) else {
            return Err(SetupError::NoLinks);
        };
        let mut peers = vec![Peer::new(primary, config.gateway_key, config.psk.clone())];
        for standby in &config.standbys {
            if peers.iter().any(|p| p.address == standby.address) {
                return Err(SetupError::DuplicateGatewayAddress(standby.address));
            }
            if peers.iter().any(|p| p.key == standby.public_key) {
                return Err(SetupError::DuplicateGatewayKey(standby.address));
            }
            peers.push(Peer::new(standby.address, standby.public_key, standby.psk.clone()));
        }
        let mut rng = CryptoRng::new(seed);
        let carrier = config.session.links.iter().map(|l| l.id).collect();
        let mut edge = Self {
            epoch: rng.next_u64(),
            session_seed: rng.next_u64(),
            rng,
            local_public: config.private_key.public(),
            config,
            start: now,
            unix_nanos_at_start: unix_nanos,
            first_answer_due: (peers.len() > 1).then_some(now + FIRST_ANSWER_GRACE),
            peers,
            active: 0,
            carrier,
            events: VecDeque::new(),
            stats: EdgeStats::default(),
            spend: [Spend::Free; crate::MAX_LINKS],
            announcer: Announcer::default(),
            redirects: VecDeque::new(),
            preferred_standby: None,
            placed_by_fleet: false,
            refused: None,
        };
        for peer in 0..edge.peers.len() {
            edge.initiate(now, peer);
        }
        Ok(edge)
    }

    /// The session with the gateway that carries the stream, once a handshake has completed.
    pub fn session(&self) -> Option<&Session> {
        self.peers.get(self.active)?.session.as_ref()
    }

    /// The address of the gateway that carries the stream.
    pub fn active_gateway(&self) -> SocketAddr {
        self.peers[self.active].address
    }

    /// Each gateway's address and session, the active one included, in the configured order.
    pub fn gateways(&self) -> impl Iterator<Item = (SocketAddr, Option<&Session>)> {
        self.peers.iter().map(|p| (p.address, p.session.as_ref()))
    }

    /// Edge-level counters.
    pub const fn stats(&self) -> EdgeStats {
        self.stats
    }

    fn active_session(&mut self) -> Option<&mut Session> {
        self.peers.get_mut(self.active)?.session.as_mut()
    }

    fn sessions(&mut self) -> impl Iterator<Item = &mut Session> {
        self.peers.iter_mut().filter_map(|p| p.session.as_mut())
    }

    /// Takes in a frame from the TAP.
    ///
    /// # Errors
    /// [`DropReason::NoSession`] before the first handshake completes, or the session's reason.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
        self.announcer.note(frame);
        match self.active_session() {
            Some(session) => session.handle_frame(now, frame),
            None => {
                self.stats.drops.add(DropReason::NoSession);
                Err(DropReason::NoSession)
            }
        }
    }

    /// Takes in a UDP payload that arrived on `link` from `from`.
    ///
    /// # Errors
    /// The [`DropReason`] if it was dropped (also counted, by the edge or its session).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        link: LinkId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        // Each gateway answers from its own address; anything else meets the first's keys.
        let peer = self.peer_at(from).unwrap_or(0);
        let outcome = match wire::classify(datagram) {
            Err(reason) => Err(reason),
            Ok((repr, Kind::Handshake(kind, body))) => match kind {
                ControlType::HandshakeResponse => self.handle_response(now, peer, repr.key.index, body),
                ControlType::CookieReply => self.handle_cookie(now, peer, link, repr.key.index, body),
                ControlType::NoSession => self.handle_no_session(now, peer, link, from, repr.key.index, body),
                ControlType::HandshakeInitiation | ControlType::Sealed => Err(DropReason::UnexpectedHandshake),
            },
            // The session counts its own drops.
            Ok((_, Kind::Data | Kind::SealedControl)) => match self.peers[peer].session.as_mut() {
                Some(session) => return session.handle_datagram(now, link, from, datagram),
                None => Err(DropReason::NoSession),
            },
        };
        outcome.map_err(|reason| self.drop(reason))
    }

    fn drop(&mut self, reason: DropReason) -> DropReason {
        self.stats.drops.add(reason);
        reason
    }

    /// Takes in a carrier change.
    pub fn handle_link_event(&mut self, now: Instant, link: LinkId, event: LinkEvent) {
        match event {
            LinkEvent::CarrierUp => self.carrier.insert(link),
            LinkEvent::CarrierDown => {
                self.carrier.remove(link);
                for peer in &mut self.peers {
                    peer.init_due.remove(link);
                }
            }
        }
        for session in self.sessions() {
            session.handle_link_event(now, link, event);
        }
    }

    /// Adds a link while running (an uplink a reload added); it is taken to have carrier
    /// until [`Edge::handle_link_event`] says otherwise.
    ///
    /// # Errors
    /// [`SetupError`] if its id is out of range or taken.
    pub fn add_link(&mut self, now: Instant, link: LinkConfig) -> Result<(), SetupError> {
        if link.id.index().is_none() {
            return Err(SetupError::LinkOutOfRange(link.id.get()));
        }
        if self.config.session.links.iter().any(|l| l.id == link.id) {
            return Err(SetupError::DuplicateLink(link.id.get()));
        }
        for peer in &mut self.peers {
            if let Some(session) = peer.session.as_mut() {
                session.add_link(now, &LinkConfig { remote: peer.address, ..link })?;
            }
            if peer.pending.is_some() {
                peer.init_due.insert(link.id);
            }
        }
        self.config.session.links.push(link);
        self.carrier.insert(link.id);
        Ok(())
    }

    /// Removes a link while running (an uplink a reload removed): what it carried and was not
    /// yet answered is re-sent on the others.
    pub fn remove_link(&mut self, now: Instant, link: LinkId) {
        for peer in &mut self.peers {
            if let Some(session) = peer.session.as_mut() {
                session.remove_link(now, link);
            }
            peer.init_due.remove(link);
            if let Some(slot) = link.index() {
                peer.cookies[slot] = None;
            }
        }
        self.config.session.links.retain(|l| l.id != link);
        self.carrier.remove(link);
    }

    /// Sets a link's priority (lower is preferred).
    pub fn set_link_priority(&mut self, link: LinkId, priority: u8) {
        for session in self.sessions() {
            session.set_link_priority(link, priority);
        }
        for l in self.config.session.links.iter_mut().filter(|l| l.id == link) {
            l.priority = priority;
        }
    }

    /// Sets what a link may be spent on (metered, past its cap); it holds for every session.
    pub fn set_link_spend(&mut self, link: LinkId, spend: Spend) {
        if let Some(slot) = link.index() {
            self.spend[slot] = spend;
        }
        for session in self.sessions() {
            session.set_link_spend(link, spend);
        }
    }

    /// Changes the mode, from the next frame on.
    pub fn set_mode(&mut self, mode: Mode) {
        for session in self.sessions() {
            session.set_mode(mode);
        }
        self.config.session.mode = mode;
    }

    /// The links it runs with now.
    pub fn links(&self) -> &[LinkConfig] {
        &self.config.session.links
    }

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in 0..self.peers.len() {
            if let Some(session) = self.peers[peer].session.as_mut() {
                session.handle_timeout(now);
                if peer == self.active {
                    // Announcements are best effort: a frame the session refuses now is
                    // counted there.
                    self.announcer.take_due(now, |frame| {
                        let _ = session.handle_frame(now, frame);
                    });
                }
            }
            let p = &self.peers[peer];
            if p.retry_at.is_some_and(|at| at <= now) || p.needs_handshake(now) {
                self.initiate(now, peer);
            }
            if self.peers[peer].trouble.is_some_and(|t| t.next_report <= now) {
                self.report_trouble(now, peer);
            }
            let p = &mut self.peers[peer];
            p.answering_since = if p.available(now) { Some(p.answering_since.unwrap_or(now)) } else { None };
        }
        self.choose_gateway(now);
    }

    /// Moves the stream to another gateway when the active one is silent or drained, or back to
    /// an earlier one. Silent: it answers on no link (or, before its first session, has not
    /// answered within [`FIRST_ANSWER_GRACE`]); the stream goes to the first standby that
    /// answers, preferring one not being drained, with the frames the old one may not have
    /// delivered, since it will not. Drained: the stream goes, make-before-break, to the first
    /// standby that answers and is not being drained; only the frames not yet sent move, and the
    /// old session stays to answer its gateway's NAKs for what it sent, so nothing is lost or
    /// sent twice. Returned: a gateway earlier in the list has answered, undrained, for
    /// [`EdgeConfig::return_after`]; the stream goes back to it make-before-break, as from a
    /// drained one, unless a fleet has placed the edge (its placements decide then). Either way
    /// the LAN's addresses are announced through the new gateway, and the old session is kept
    /// as a standby.
    fn choose_gateway(&mut self, now: Instant) {
        if self.first_answer_due.is_some_and(|due| due <= now) {
            self.first_answer_due = None;
        }
        let active = self.active;
        let (silent, drained) = match &self.peers[active].session {
            Some(session) => (session.all_links_down(), session.peer_draining(now)),
            None => (self.first_answer_due.is_none(), false),
        };
        let placed = self.peers[active].session.as_ref().and_then(|s| s.peer_placement(now));
        if let Some(placement) = placed {
            self.placed_by_fleet = true;
            self.preferred_standby = placement.standby.and_then(|key| self.peer_by_key(key)).filter(|&i| i != active);
        }
        let (next, reason) = if silent || drained {
            let preferred = self.preferred_standby.filter(|&i| i != active && self.peers[i].available(now));
            let next = preferred.or_else(|| {
                self.peers.iter().enumerate().find(|(i, p)| *i != active && p.available(now)).map(|(i, _)| i)
            });
            let next = next.or_else(|| silent.then(|| self.peers.iter().position(Peer::answers)).flatten());
            let Some(next) = next else { return };
            (next, if silent { TakeoverReason::Silent } else { TakeoverReason::Drained })
        } else if let Some(placement) = placed {
            // A fleet places the edge: its placement, not the list's order, says where the
            // stream belongs.
            let Some(next) = self.follow(now, placement) else { return };
            (next, TakeoverReason::Redirected)
        } else {
            let Some(next) = self.return_due().filter(|(_, due)| *due <= now).map(|(i, _)| i) else { return };
            (next, TakeoverReason::Returned)
        };
        let from = self.peers[active].address;
        let frames = match self.peers[active].session.as_mut() {
            Some(session) if silent => session.take_undelivered(now),
            Some(session) => session.take_queued(),
            None => Vec::new(),
        };
        let rates = self.peers[active].session.as_mut().map_or_else(Vec::new, |session| {
            session.set_standby(now, true);
            session.link_rates()
        });
        self.active = next;
        let to = self.peers[next].address;
        if let Some(session) = self.peers[next].session.as_mut() {
            // The uplinks are the same: what the old session measured on them holds.
            session.adopt_link_rates(now, &rates);
            session.set_standby(now, false);
            for frame in &frames {
                // Refused frames are counted by the session.
                let _ = session.adopt_frame(now, frame);
            }
        }
        self.announcer.schedule(now);
        self.stats.gateway_takeovers += 1;
        self.stats.frames_moved += frames.len() as u64;
        tracing::debug!(%from, %to, frames = frames.len(), ?reason, "the stream moves to another gateway");
        self.events.push_back(Event::GatewayTakeover { from, to, frames: frames.len(), reason });
    }

    /// The gateway to move the stream to on the active gateway's `placement`, if it is another
    /// one this edge pins, it answers and is not being drained, and the edge has not moved
    /// [`MAX_REDIRECTS`] times in [`REDIRECT_WINDOW`]; the move is then counted.
    fn follow(&mut self, now: Instant, placement: Placement) -> Option<usize> {
        let target = self.peer_by_key(placement.gateway);
        if target == Some(self.active) {
            self.refused = None;
            return None;
        }
        while self.redirects.front().is_some_and(|&at| now.saturating_duration_since(at) >= REDIRECT_WINDOW) {
            self.redirects.pop_front();
        }
        let Some(target) = target.filter(|_| self.redirects.len() < MAX_REDIRECTS) else {
            if self.refused != Some(placement.gateway) {
                self.refused = Some(placement.gateway);
                self.stats.redirects_refused += 1;
                tracing::warn!(
                    gateway = %PublicKey(placement.gateway).to_base64(),
                    "the fleet placed this edge on a gateway it does not pin, or moved it too often: staying"
                );
            }
            return None;
        };
        if !self.peers[target].available(now) {
            return None;
        }
        self.redirects.push_back(now);
        self.stats.redirects_followed += 1;
        Some(target)
    }

    /// The gateway with public key `key`, if this edge pins it.
    fn peer_by_key(&self, key: [u8; 32]) -> Option<usize> {
        self.peers.iter().position(|p| p.key.0 == key)
    }

    /// The first gateway before the active one that has answered, undrained, since long enough
    /// ago for the stream to return to it, and when it may.
    fn return_due(&self) -> Option<(usize, Instant)> {
        if self.placed_by_fleet {
            return None;
        }
        let after = self.config.return_after?;
        self.peers[..self.active].iter().enumerate().find_map(|(i, p)| Some((i, p.answering_since? + after)))
    }

    /// The gateway that listens at `address`, if any.
    fn peer_at(&self, address: SocketAddr) -> Option<usize> {
        self.peers.iter().position(|p| p.address == address)
    }

    /// Takes in an ICMP error that came back on `link`, from `origin` if the OS said: it counts
    /// against the gateway at that address, or against every gateway if it names none of them
    /// (a router on the way).
    pub fn handle_unreachable(&mut self, now: Instant, link: LinkId, origin: Option<SocketAddr>, what: Unreachable) {
        tracing::debug!(%link, ?origin, ?what, "ICMP error");
        let named = origin.and_then(|origin| self.peer_at(origin));
        for peer in 0..self.peers.len() {
            if named.is_none_or(|n| n == peer) {
                self.observe(now, peer, HandshakeTrouble::Unreachable(what));
            }
        }
    }

    /// Notes what a handshake attempt met, and reports it at once if it tells more than what
    /// was reported.
    fn observe(&mut self, now: Instant, peer: usize, seen: HandshakeTrouble) {
        let Some(trouble) = self.peers[peer].trouble.as_mut() else { return };
        trouble.worst = trouble.worst.max(seen);
        if trouble.reported.is_none_or(|r| seen > r) {
            self.report_trouble(now, peer);
        }
    }

    fn report_trouble(&mut self, now: Instant, peer: usize) {
        let p = &mut self.peers[peer];
        let Some(trouble) = p.trouble.as_mut() else { return };
        trouble.reported = Some(trouble.worst);
        trouble.next_report = now + trouble.every;
        trouble.every = (trouble.every * 2).min(TROUBLE_REPEAT_MAX);
        self.events.push_back(Event::HandshakeTrouble {
            trouble: trouble.worst,
            gateway: p.address,
            links: self.carrier,
            waited: now.saturating_duration_since(trouble.since),
            attempts: self.stats.handshakes_started - trouble.attempts_before,
        });
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        for peer in &mut self.peers {
            while let Some(link) = peer.init_due.pop_first() {
                if !self.config.session.links.iter().any(|l| l.id == link) {
                    continue;
                }
                buf.clear();
                buf.resize(crate::wire::GRE_HEADER_LEN, 0);
                let repr = GreRepr {
                    protocol: Protocol::Control,
                    key: PathKey { index: SessionIndex::default(), link },
                    sequence: 0,
                };
                if repr.emit(buf).is_ok() {
                    buf.extend_from_slice(&peer.init_body);
                    let cookie = link
                        .index()
                        .and_then(|i| peer.cookies[i])
                        .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_LIFETIME)
                        .map(|(cookie, _)| cookie);
                    handshake::set_mac2(&mut buf[crate::wire::GRE_HEADER_LEN..], cookie.as_ref());
                    return Some(Transmit { link, destination: peer.address });
                }
            }
        }
        if let Some(t) = self.active_session().and_then(|s| s.poll_transmit(now, buf)) {
            return Some(t);
        }
        let active = self.active;
        self.peers
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != active)
            .find_map(|(_, p)| p.session.as_mut()?.poll_transmit(now, buf))
    }

    /// The next frame for the TAP, written into `buf`. Frames from a gateway that does not
    /// carry the stream are discarded (counted): the LAN hears from one gateway at a time.
    pub fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered> {
        let active = self.active;
        for (_, peer) in self.peers.iter_mut().enumerate().filter(|(i, _)| *i != active) {
            if let Some(session) = peer.session.as_mut() {
                while session.poll_frame(now, buf).is_some() {
                    self.stats.standby_frames_discarded += 1;
                }
            }
        }
        self.active_session()?.poll_frame(now, buf)
    }

    /// The next event. A standby's own link events are not reported: its links' health shows
    /// in [`Edge::gateways`].
    pub fn poll_event(&mut self) -> Option<Event> {
        let active = self.active;
        for (_, peer) in self.peers.iter_mut().enumerate().filter(|(i, _)| *i != active) {
            if let Some(session) = peer.session.as_mut() {
                while session.poll_event().is_some() {}
            }
        }
        self.events.pop_front().or_else(|| self.active_session()?.poll_event())
    }

    /// When [`Edge::handle_timeout`] is next due, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        let mut best = Earliest::new();
        for peer in &self.peers {
            best.consider_opt(peer.session.as_ref().and_then(Session::poll_timeout));
            let handshake =
                peer.retry_at.or_else(|| peer.session.as_ref().map(|s| s.keys_created() + REKEY_AFTER_TIME));
            best.consider_opt(handshake.map(|at| (at, TimerKind::Handshake)));
            best.consider_opt(peer.trouble.map(|t| (t.next_report, TimerKind::Handshake)));
        }
        if self.session().is_some() {
            best.consider_opt(self.announcer.next().map(|at| (at, TimerKind::Announce)));
        }
        best.consider_opt(self.first_answer_due.map(|at| (at, TimerKind::Handshake)));
        best.consider_opt(self.return_due().map(|(_, at)| (at, TimerKind::Handshake)));
        best.get()
    }

    fn initiate(&mut self, now: Instant, peer: usize) {
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as u64;
        let p = &mut self.peers[peer];
        // A gateway that resumes the session ignores it; one that starts afresh expects frames
        // from the first it may not have had, which come again once the keys are in place.
        let next_frame_seq =
            p.session.as_ref().map_or(0, |s| s.first_unconfirmed_frame().unwrap_or_else(|| s.next_frame_seq()));
        let payload = InitPayload {
            timestamp: Tai64n::from_unix_nanos(self.unix_nanos_at_start.saturating_add(elapsed)),
            cipher: self.config.cipher,
            epoch: self.epoch,
            next_frame_seq,
        };
        let local_index = self.rng.session_index();
        let initiation = handshake::initiate(
            &self.config.private_key,
            &p.key,
            p.psk.as_ref(),
            &mut self.rng,
            local_index,
            &payload,
            &mut p.init_body,
        );
        // Retry with a little jitter, so many edges behind one outage do not retry in step.
        let jitter = Duration::from_micros(self.rng.next_u64() % (HANDSHAKE_RETRY.as_micros() as u64 / 5));
        p.retry_at = Some(now + HANDSHAKE_RETRY + jitter);
        match initiation {
            Ok(initiation) => {
                p.trouble.get_or_insert(Trouble {
                    since: now,
                    attempts_before: self.stats.handshakes_started,
                    worst: HandshakeTrouble::NoReply,
                    reported: None,
                    next_report: now + TROUBLE_AFTER,
                    every: TROUBLE_AFTER,
                });
                self.stats.handshakes_started += 1;
                p.init_due = self.carrier;
                p.pending = Some(Pending { initiation, sent_at: now, next_frame_seq });
                tracing::debug!(index = ?local_index, gateway = %p.address, "handshake initiated");
            }
            Err(error) => {
                tracing::warn!(%error, "could not build a handshake initiation");
                p.pending = None;
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        peer: usize,
        index: SessionIndex,
        body: &[u8],
    ) -> Result<(), DropReason> {
        let p = &self.peers[peer];
        if p.pending.as_ref().is_none_or(|p| p.initiation.local_index != index) {
            return Err(DropReason::UnknownSession);
        }
        // Junk must not cancel the handshake: only a response with a valid mac1 (the sender
        // knows this edge's public key) is allowed to consume the pending initiation.
        if handshake::check_response(body, &self.local_public).is_err() {
            self.observe(now, peer, HandshakeTrouble::WrongKey);
            return Err(DropReason::BadMac);
        }
        let pending = self.peers[peer].pending.take().ok_or(DropReason::UnknownSession)?;
        let (sent_at, resend_from) = (pending.sent_at, pending.next_frame_seq);
        let (remote_index, payload, split) = match pending.initiation.finish(body) {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(%error, "handshake response refused");
                self.observe(now, peer, HandshakeTrouble::WrongKey);
                return Err(if error == handshake::HandshakeError::BadMac {
                    DropReason::BadMac
                } else {
                    DropReason::HandshakeFailed
                });
            }
        };
        let protection = Aead::new(self.config.cipher, &split.initiator_to_responder, &split.responder_to_initiator)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let keys = SessionKeys { local_index: index, remote_index, protection: Box::new(protection) };
        let rtt = now.saturating_duration_since(sent_at);
        let active = peer == self.active;
        let p = &mut self.peers[peer];
        match p.session.as_mut() {
            Some(session) => {
                session.install_keys(now, keys, true);
                if !payload.resumed {
                    // The gateway started afresh (it restarted): nothing of the old one applies,
                    // and what it may not have delivered goes again.
                    session.peer_restarted(now, payload.next_frame_seq);
                    session.resend_to_new_peer(now, resend_from);
                    if active {
                        self.announcer.schedule(now);
                    }
                }
            }
            None => {
                let mut config = self.config.session.clone();
                for link in &mut config.links {
                    link.remote = p.address;
                }
                let mut session = Session::new(Role::Edge, config, keys, now, self.session_seed ^ peer as u64)
                    .map_err(|_| DropReason::HandshakeFailed)?;
                session.restart_receive(payload.next_frame_seq);
                session.set_standby(now, !active);
                for link in &self.config.session.links {
                    if let Some(&spend) = link.id.index().and_then(|i| self.spend.get(i)) {
                        session.set_link_spend(link.id, spend);
                    }
                }
                p.session = Some(session);
            }
        }
        if p.tokens.len() == TOKENS_KEPT {
            p.tokens.pop_front();
        }
        p.tokens.push_back((remote_index, payload.no_session_token));
        p.retry_at = None;
        p.init_due = LinkSet::EMPTY;
        p.last_completed = Some(now);
        p.trouble = None;
        self.stats.handshakes_completed += 1;
        tracing::debug!(index = ?index, gateway = %p.address, resumed = payload.resumed, ?rtt, "handshake complete");
        self.events.push_back(Event::Handshake { index, resumed: payload.resumed, peer: p.address, carrying: active });
        Ok(())
    }

    /// The gateway says it has no session for `index`. Only the gateway that handed out the
    /// token can say so (an attacker's guess is refused): it lost every session of this edge,
    /// so a handshake starts at once. One already under way goes out again as it is, on every
    /// link: its copies may have gone out while the gateway was not listening (a slow link's may
    /// still reach it, too late), and a gateway that did answer it sends the same answer back on
    /// each new copy's link, so the fastest completes the handshake.
    fn handle_no_session(
        &mut self,
        now: Instant,
        peer: usize,
        link: LinkId,
        from: SocketAddr,
        index: SessionIndex,
        body: &[u8],
    ) -> Result<(), DropReason> {
        let p = &mut self.peers[peer];
        let (_, token) = p.tokens.iter().find(|(i, _)| *i == index).ok_or(DropReason::UnknownSession)?;
        if !handshake::check_no_session(body, token) {
            return Err(DropReason::BadMac);
        }
        if p.tokens.back().is_some_and(|(newest, _)| *newest != index) {
            // An answer to data sent under the keys before the newest handshake: the gateway
            // that sent it has answered that handshake since, so it has the session now.
            return Err(DropReason::StaleNoSession);
        }
        p.tokens.clear();
        self.stats.sessions_lost += 1;
        self.events.push_back(Event::NoSession { link, gateway: from });
        if p.pending.is_some() {
            p.init_due = self.carrier;
        } else {
            self.initiate(now, peer);
        }
        Ok(())
    }

    fn handle_cookie(
        &mut self,
        now: Instant,
        peer: usize,
        link: LinkId,
        index: SessionIndex,
        body: &[u8],
    ) -> Result<(), DropReason> {
        let p = &self.peers[peer];
        let pending =
            p.pending.as_ref().filter(|p| p.initiation.local_index == index).ok_or(DropReason::UnknownSession)?;
        let Some(cookie) = handshake::open_cookie_reply(&p.key, &pending.initiation.mac1, body) else {
            // Sealed with another key than the one pinned: the gateway there holds another key.
            self.observe(now, peer, HandshakeTrouble::WrongKey);
            return Err(DropReason::HandshakeFailed);
        };
        let slot = link.index().ok_or(DropReason::BadLink)?;
        self.stats.cookies += 1;
        self.observe(now, peer, HandshakeTrouble::UnderLoad);
        let p = &mut self.peers[peer];
        p.cookies[slot] = Some((cookie, now));
        // The gateway is loaded, not gone: the same initiation goes again on this link, now
        // with mac2. It was refused before any handshake work, so it is no replay, and the
        // copies on other links carry on undisturbed.
        if self.carrier.contains(link) {
            p.init_due.insert(link);
        }
        Ok(())
    }
}
