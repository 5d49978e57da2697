//! The gateway endpoint: one UDP port for many edges, each with its own session.
//!
//! Datagrams are demultiplexed by the GRE Key (the session index), never by source address, so a
//! modem's new IP or a NAT rebinding keeps its session. A handshake initiation goes through, in
//! order of cost: the length check, mac1 (one hash), the rate limit (a cookie reply under load),
//! the Noise DH, the allowlist and the replay timestamp. Only then does a session exist, and it
//! becomes *live* only when the edge proves it holds the keys with a packet that opens. Nothing is
//! ever sent to an address that has not proven the key, except the small cookie reply.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::{Aead, SessionKeys};
use crate::handshake::{self, CryptoRng, ResponsePayload, Tai64n};
use crate::keys::{PrivateKey, Psk, PublicKey};
use crate::session::{
    Delivered, DropReason, Earliest, Event, REJECT_AFTER_TIME, Role, Session, SessionConfig, SetupError, TimerKind,
    Transmit,
};
use crate::wire::{self, ControlType, GRE_HEADER_LEN, GreRepr, Kind, PathKey, Placement, Protocol};
use crate::{LinkId, LinkSet, SessionIndex};

/// Handshakes per second the gateway does before it asks for cookies.
pub const DEFAULT_HANDSHAKE_RATE: u32 = 50;
/// Handshakes per second one source address may do, even with a valid cookie.
pub const PER_SOURCE_HANDSHAKE_RATE: f64 = 5.0;
/// The cookie secret changes this often; the previous one is still accepted.
pub const COOKIE_ROTATION: Duration = Duration::from_secs(120);
/// A new session whose edge never proves the keys is dropped after this long.
pub const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Source addresses tracked for rate limiting before the table is cleared.
const MAX_TRACKED_SOURCES: usize = 16_384;
/// Initiations sealed for another gateway key are answered (with a cookie reply the edge cannot
/// open, which tells it that it pins the wrong key) at most this often per second in all.
pub const WRONG_KEY_ANSWERS: f64 = 4.0;
/// An unknown edge key is logged at most this often.
pub const UNKNOWN_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Unknown edge keys are logged at most this many times a second in all.
pub const UNKNOWN_LINES_PER_SECOND: f64 = 1.0;
/// Data for a session the gateway does not have is answered with that session's "no such
/// session" token at most this often per second in all...
pub const NO_SESSION_ANSWERS: f64 = 500.0;
/// An initiation's copy that comes on another link within this long of the first is answered
/// with the response the first got (the edge sends each initiation on every link, and again
/// when the gateway says it lost the session).
pub const ANSWER_REUSE: Duration = Duration::from_secs(1);
/// Answered initiations remembered for [`ANSWER_REUSE`].
const MAX_ANSWERED: usize = 64;
/// ... and at most once per index and link in this long: an edge needs one answer, and its
/// links carry hundreds of datagrams a second; one per link, so that a loss on one does not
/// cost the edge the whole interval.
pub const NO_SESSION_INTERVAL: Duration = Duration::from_millis(100);

/// One allowed edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeEntry {
    /// Its name, for logs and metrics.
    pub name: String,
    /// Its static public key.
    pub public_key: PublicKey,
    /// Its optional pre-shared key.
    pub psk: Option<Psk>,
}

/// What the gateway needs to know.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway's static private key.
    pub private_key: PrivateKey,
    /// The allowlist.
    pub edges: Vec<EdgeEntry>,
    /// Mode and budgets for every session (links are learned).
    pub session: SessionConfig,
    /// Handshakes per second before cookies are required.
    pub handshake_rate: u32,
}

/// Identifies an allowed edge: its position in the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub usize);

crate::counters! {
    /// Gateway-level counters (each session has its own).
    pub struct GatewayStats {
        /// Handshakes answered.
        handshakes,
        /// Cookie replies sent under load.
        cookies_sent,
        /// Sessions that became live.
        sessions_started,
        /// Initiations handed to the worker that owns their edge.
        handshakes_forwarded,
    }
    with drops
}

#[derive(Debug)]
struct Peer {
    entry: EdgeEntry,
    last_timestamp: Option<Tai64n>,
    live: Option<Session>,
    epoch: Option<u64>,
    candidate: Option<(Session, u64, Instant)>,
    /// Where the fleet puts the edge, said on every probe.
    placement: Option<Placement>,
    /// When its sessions next need [`Gateway::handle_timeout`], as last computed; while
    /// `wake_known` is false it must be computed again (something changed them since).
    wake: Cell<Option<(Instant, TimerKind)>>,
    wake_known: Cell<bool>,
    /// The outputs (`OUTPUT_*`) its live session may have that were not yet polled empty since
    /// it last changed; a peer with any is in [`Gateway::active`].
    unpolled: u8,
}

/// A transmit, a frame and an event: the outputs a session may have after it changed.
const OUTPUT_TRANSMIT: u8 = 1;
const OUTPUT_FRAME: u8 = 2;
const OUTPUT_EVENT: u8 = 4;
const OUTPUT_ALL: u8 = OUTPUT_TRANSMIT | OUTPUT_FRAME | OUTPUT_EVENT;

impl Peer {
    fn new(entry: EdgeEntry) -> Self {
        Self {
            entry,
            last_timestamp: None,
            live: None,
            epoch: None,
            candidate: None,
            placement: None,
            wake: Cell::new(None),
            wake_known: Cell::new(false),
            unpolled: 0,
        }
    }

    /// When its sessions next need a timeout: the live one's own deadline and the end of its
    /// keys, and how long a candidate may wait to prove its keys.
    fn compute_wake(&self) -> Option<(Instant, TimerKind)> {
        let mut best = Earliest::new();
        if let Some(session) = &self.live {
            best.consider_opt(session.poll_timeout());
            best.consider(session.keys_created() + REJECT_AFTER_TIME, TimerKind::Handshake);
        }
        if let Some((_, _, at)) = &self.candidate {
            best.consider(*at + CANDIDATE_TIMEOUT, TimerKind::Handshake);
        }
        best.get()
    }

    /// Its deadline, computed again only if its sessions changed since it last was.
    fn wake(&self) -> Option<(Instant, TimerKind)> {
        if !self.wake_known.get() {
            self.wake.set(self.compute_wake());
            self.wake_known.set(true);
        }
        self.wake.get()
    }
}

/// A response sent, for copies of its initiation on other links.
#[derive(Debug)]
struct Answered {
    mac1: [u8; 16],
    index: SessionIndex,
    response: Vec<u8>,
    links: LinkSet,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn full(rate: f64, now: Instant) -> Self {
        Self { tokens: rate, at: now }
    }

    fn take(&mut self, now: Instant, rate: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The gateway's end of every edge's tunnel.
#[derive(Debug)]
pub struct Gateway {
    private_key: PrivateKey,
    public_key: PublicKey,
    mac1_key: [u8; 32],
    template: SessionConfig,
    handshake_rate: f64,
    rng: CryptoRng,
    peers: Vec<Peer>,
    by_key: BTreeMap<PublicKey, usize>,
    by_index: BTreeMap<u32, usize>,
    cookie_secret: [u8; 32],
    previous_cookie_secret: [u8; 32],
    cookie_rotated: Instant,
    global: TokenBucket,
    per_source: BTreeMap<IpAddr, TokenBucket>,
    /// Answers to initiations sealed for another key (see [`WRONG_KEY_ANSWERS`]).
    wrong_key: TokenBucket,
    /// When each unknown edge key was last logged, and the lines left to log this second.
    unknown_logged: BTreeMap<PublicKey, Instant>,
    unknown_lines: TokenBucket,
    /// The secret behind "no such session" tokens, and when each unknown index was last
    /// answered with its token on each link.
    no_session_key: [u8; 32],
    no_session_answered: BTreeMap<(u32, LinkId), Instant>,
    no_session_answers: TokenBucket,
    answered: VecDeque<Answered>,
    out: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<(PeerId, Event)>,
    stats: GatewayStats,
    /// The peers whose live session may have output not yet polled (see [`Peer::unpolled`]):
    /// only they are polled, so an input costs the same however many edges are idle.
    active: Vec<usize>,
    /// Where the next [`Gateway::poll_transmit`] starts in `active`.
    cursor: usize,
    /// Being drained: every session says so on every probe, and edges with a standby move.
    draining: bool,
    /// This gateway's place among the gateway process's workers.
    shard: Shard,
    /// Initiations for edges another worker owns, to hand to it.
    forwards: VecDeque<Forward>,
}

/// One worker's place among `count` workers that share a gateway's port. Each edge belongs to
/// one worker ([`worker_of`]), and each worker hands out session indices that are its own
/// modulo `count`, so the kernel can steer every datagram by its GRE Key alone (index 0, an
/// initiation's, goes to worker 0, which hands it to the edge's worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker, below `count`.
    pub worker: usize,
    /// How many workers there are.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { worker: 0, count: 1 }
    }
}

impl Shard {
    /// Whether `index` is one this worker hands out.
    pub fn owns_index(self, index: u32) -> bool {
        index as usize % self.count.max(1) == self.worker
    }
}

/// The worker, of `count`, that a datagram goes to: its session index (the GRE Key's upper 24
/// bits) modulo `count`; a datagram too short to hold a Key goes to worker 0. The gateway's
/// I/O has the kernel steer by the same rule (a classic BPF program on the port's sockets).
pub fn steer(datagram: &[u8], count: usize) -> usize {
    match datagram.get(4..8) {
        Some(&[a, b, c, _]) => (u32::from_be_bytes([0, a, b, c]) as usize) % count.max(1),
        _ => 0,
    }
}

/// The worker, of `count`, that owns the edge whose public key is `key`: a hash of the key, so
/// it stays the same while the edge is allowed, whatever a reload renames or reorders.
pub fn worker_of(key: &PublicKey, count: usize) -> usize {
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
    let hash = key.0.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash % count.max(1) as u64) as usize
}

/// An initiation for an edge another worker owns: hand it to that worker's
/// [`Gateway::handle_forwarded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The worker that owns the edge.
    pub worker: usize,
    /// Where the initiation came from.
    pub from: SocketAddr,
    /// The whole datagram.
    pub datagram: Vec<u8>,
}

impl Gateway {
    /// A gateway with no sessions yet. `seed` must come from the OS's entropy outside tests.
    ///
    /// # Errors
    /// [`SetupError`] if two edges share a key.
    pub fn new(config: GatewayConfig, now: Instant, seed: [u8; 32]) -> Result<Self, SetupError> {
        let mut rng = CryptoRng::new(seed);
        let mut by_key = BTreeMap::new();
        for (i, edge) in config.edges.iter().enumerate() {
            if by_key.insert(edge.public_key, i).is_some() {
                return Err(SetupError::DuplicateEdgeKey(edge.name.clone()));
            }
        }
        let public_key = config.private_key.public();
        let no_session_key = handshake::no_session_key(&config.private_key);
        let rate = f64::from(config.handshake_rate.max(1));
        Ok(Self {
            mac1_key: handshake::mac1_key(&public_key),
            public_key,
            private_key: config.private_key,
            template: SessionConfig { links: Vec::new(), ..config.session },
            handshake_rate: rate,
            cookie_secret: rng.fork(),
            previous_cookie_secret: rng.fork(),
            rng,
            peers: config.edges.into_iter().map(Peer::new).collect(),
            by_key,
            by_index: BTreeMap::new(),
            cookie_rotated: now,
            global: TokenBucket::full(rate, now),
            per_source: BTreeMap::new(),
            wrong_key: TokenBucket::full(WRONG_KEY_ANSWERS, now),
            unknown_logged: BTreeMap::new(),
            unknown_lines: TokenBucket::full(UNKNOWN_LINES_PER_SECOND, now),
            no_session_key,
            no_session_answered: BTreeMap::new(),
            no_session_answers: TokenBucket::full(NO_SESSION_ANSWERS, now),
            answered: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: GatewayStats::default(),
            active: Vec::new(),
            cursor: 0,
            draining: false,
            shard: Shard::default(),
            forwards: VecDeque::new(),
        })
    }

    /// Makes this gateway one worker of several (see [`Shard`]): it hands out only its own
    /// session indices, and hands initiations for edges it does not own to their worker.
    pub fn set_shard(&mut self, shard: Shard) {
        self.shard = Shard { worker: shard.worker.min(shard.count.max(1) - 1), count: shard.count.max(1) };
    }

    /// The worker that owns an edge (0 for one not allowed).
    pub fn worker_of(&self, peer: PeerId) -> usize {
        self.peers.get(peer.0).map_or(0, |p| worker_of(&p.entry.public_key, self.shard.count))
    }

    /// The next initiation to hand to another worker.
    pub fn poll_forward(&mut self) -> Option<Forward> {
        self.forwards.pop_front()
    }

    /// Takes in an initiation another worker handed over ([`Gateway::poll_forward`]): that
    /// worker already let it through the rate limit, so it is not counted against this one's.
    ///
    /// # Errors
    /// The [`DropReason`] if it was dropped.
    pub fn handle_forwarded(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Result<(), DropReason> {
        let outcome = match wire::classify(datagram) {
            Ok((repr, Kind::Handshake(ControlType::HandshakeInitiation, body))) => {
                self.handle_initiation(now, repr.key.link, from, body, Admission::Forwarded)
            }
            Ok(_) => Err(DropReason::UnexpectedHandshake),
            Err(reason) => Err(reason),
        };
        outcome.map_err(|reason| self.drop(reason))
    }

    /// The gateway's public key (what edges pin).
    pub const fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Gateway-level counters.
    pub const fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// The allowed edges, in allowlist order.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, &str)> {
        self.peers.iter().enumerate().map(|(i, p)| (PeerId(i), p.entry.name.as_str()))
    }

    /// Replaces the allowlist (a reload). An edge whose public key stays keeps its sessions, with
    /// its name and PSK updated; a removed edge's sessions end. Returns, for each new position,
    /// the edge's old position if it was already allowed, so the driver can keep its TAP.
    ///
    /// # Errors
    /// [`SetupError::DuplicateEdgeKey`] (and nothing changes) if two edges share a key.
    pub fn set_edges(&mut self, edges: Vec<EdgeEntry>) -> Result<Vec<Option<PeerId>>, SetupError> {
        let mut by_key = BTreeMap::new();
        for (i, edge) in edges.iter().enumerate() {
            if by_key.insert(edge.public_key, i).is_some() {
                return Err(SetupError::DuplicateEdgeKey(edge.name.clone()));
            }
        }
        let mut old: Vec<Option<Peer>> = std::mem::take(&mut self.peers).into_iter().map(Some).collect();
        let mut moved = Vec::with_capacity(edges.len());
        for entry in edges {
            let previous = self.by_key.get(&entry.public_key).copied();
            let peer = match previous.and_then(|slot| old.get_mut(slot)?.take()) {
                Some(mut peer) => {
                    peer.entry = entry;
                    peer
                }
                None => Peer::new(entry),
            };
            moved.push(previous.map(PeerId));
            self.peers.push(peer);
        }
        for removed in old.into_iter().flatten() {
            tracing::info!(edge = %removed.entry.name, "edge removed from the allowlist");
        }
        self.by_key = by_key;
        self.by_index.clear();
        for (slot, peer) in self.peers.iter().enumerate() {
            let candidate = peer.candidate.as_ref().map(|(s, _, _)| s);
            for session in peer.live.iter().chain(candidate) {
                for index in session.local_indices() {
                    self.by_index.insert(index.get(), slot);
                }
            }
        }
        self.active.clear();
        self.cursor = 0;
        for slot in 0..self.peers.len() {
            self.peers[slot].unpolled = 0;
            self.touch(slot);
        }
        Ok(moved)
    }

    /// The current position of the edge with `key` in the allowlist.
    pub fn peer_of(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied().map(PeerId)
    }

    /// The live session of an edge.
    pub fn session(&self, peer: PeerId) -> Option<&Session> {
        self.peers.get(peer.0)?.live.as_ref()
    }

    /// Starts or ends a drain: while it lasts, every session tells its edge so on every probe,
    /// and an edge with a standby gateway moves its stream there, make-before-break, and does not
    /// come back while the drain lasts. Edges without a standby stay.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        for slot in 0..self.peers.len() {
            let peer = &mut self.peers[slot];
            for session in peer.live.iter_mut().chain(peer.candidate.iter_mut().map(|(s, _, _)| s)) {
                session.set_draining(draining);
            }
            self.touch(slot);
        }
    }

    /// Says to `peer`'s edge, on every probe of its session from now on (or no longer), where
    /// the fleet puts it: the gateway to carry its stream and the standby to keep. An edge that
    /// pins the gateway named moves its stream there. The placement it already has changes
    /// nothing (a fleet sets every edge's on each of its rounds).
    pub fn set_placement(&mut self, peer: PeerId, placement: Option<Placement>) {
        let slot = peer.0;
        let Some(peer) = self.peers.get_mut(slot).filter(|p| p.placement != placement) else { return };
        peer.placement = placement;
        for session in peer.live.iter_mut().chain(peer.candidate.iter_mut().map(|(s, _, _)| s)) {
            session.set_placement(placement);
        }
        self.touch(slot);
    }

    /// Whether the gateway is being drained.
    pub const fn draining(&self) -> bool {
        self.draining
    }

    /// Takes in one UDP payload from `from`.
    ///
    /// # Errors
    /// The [`DropReason`] if it was dropped (counted by the gateway or the session).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Result<(), DropReason> {
        let repr = match wire::classify(datagram) {
            Err(reason) => return Err(self.drop(reason)),
            Ok((repr, Kind::Handshake(kind, body))) => {
                let outcome = match kind {
                    ControlType::HandshakeInitiation => {
                        self.handle_initiation(now, repr.key.link, from, body, Admission::Received(datagram))
                    }
                    _ => Err(DropReason::UnexpectedHandshake),
                };
                return outcome.map_err(|reason| self.drop(reason));
            }
            Ok((repr, Kind::Data | Kind::SealedControl)) => repr,
        };
        let Some(&slot) = self.by_index.get(&repr.key.index.get()) else {
            self.answer_no_session(now, repr.key, from, datagram.len());
            return Err(self.drop(DropReason::UnknownSession));
        };
        self.touch(slot);
        let peer = &mut self.peers[slot];
        if let Some((candidate, epoch, _)) = peer.candidate.as_mut()
            && candidate.local_indices().any(|i| i == repr.key.index)
        {
            candidate.handle_datagram(now, repr.key.link, from, datagram)?;
            // The edge proved the new session's keys: it replaces whatever was live.
            let epoch = *epoch;
            let promoted = peer.candidate.take().map(|(s, _, _)| s);
            let old = std::mem::replace(&mut peer.live, promoted);
            peer.epoch = Some(epoch);
            self.stats.sessions_started += 1;
            tracing::info!(edge = %peer.entry.name, "session live");
            if let Some(old) = old {
                for index in old.local_indices() {
                    self.by_index.remove(&index.get());
                }
            }
            return Ok(());
        }
        match peer.live.as_mut() {
            Some(session) => session.handle_datagram(now, repr.key.link, from, datagram),
            None => Err(self.drop(DropReason::UnknownSession)),
        }
    }

    /// Takes in a frame from an edge's TAP, to send to that edge.
    ///
    /// # Errors
    /// [`DropReason::NoSession`] if the edge has no live session, or the session's reason.
    pub fn handle_frame(&mut self, now: Instant, peer: PeerId, frame: &[u8]) -> Result<(), DropReason> {
        match self.peers.get_mut(peer.0).and_then(|p| p.live.as_mut()) {
            Some(session) => {
                let handled = session.handle_frame(now, frame);
                self.touch(peer.0);
                handled
            }
            None => Err(self.drop(DropReason::NoSession)),
        }
    }

    /// Runs what is due: the sessions whose deadline came (worked out again for those that
    /// changed since), and the cookie secret's rotation.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now.saturating_duration_since(self.cookie_rotated) >= COOKIE_ROTATION {
            self.previous_cookie_secret = self.cookie_secret;
            self.cookie_secret = self.rng.fork();
            self.cookie_rotated = now;
            self.per_source.clear();
        }
        let mut ran = false;
        for slot in 0..self.peers.len() {
            let peer = &mut self.peers[slot];
            if peer.wake().is_none_or(|(at, _)| at > now) {
                continue;
            }
            ran = true;
            if let Some(session) = peer.live.as_mut() {
                session.handle_timeout(now);
                if now.saturating_duration_since(session.keys_created()) >= REJECT_AFTER_TIME {
                    tracing::info!(edge = %peer.entry.name, "session expired without a rekey");
                    peer.live = None;
                    peer.epoch = None;
                }
            }
            if peer.candidate.as_ref().is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= CANDIDATE_TIMEOUT)
            {
                peer.candidate = None;
            }
            self.touch(slot);
        }
        if !ran {
            return;
        }
        // Forget indices whose keys retired or whose session ended.
        let peers = &self.peers;
        self.by_index.retain(|&index, &mut slot| {
            let peer = &peers[slot];
            let owns = |s: &Session| s.local_indices().any(|i| i.get() == index);
            peer.live.as_ref().is_some_and(owns) || peer.candidate.as_ref().is_some_and(|(s, _, _)| owns(s))
        });
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((transmit, bytes)) = self.out.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(transmit);
        }
        // Round-robin, so one busy edge cannot starve the others.
        let n = self.active.len();
        for step in 0..n {
            let at = (self.cursor + step) % n;
            let slot = self.active[at];
            if let Some(transmit) = self.poll_output(slot, OUTPUT_TRANSMIT, |s| s.poll_transmit(now, buf)) {
                self.cursor = (at + 1) % n;
                return Some(transmit);
            }
        }
        self.settle();
        None
    }

    /// The next frame from an edge, written into `buf`.
    pub fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(PeerId, Delivered)> {
        for at in 0..self.active.len() {
            let slot = self.active[at];
            if let Some(delivered) = self.poll_output(slot, OUTPUT_FRAME, |s| s.poll_frame(now, buf)) {
                return Some((PeerId(slot), delivered));
            }
        }
        self.settle();
        None
    }

    /// The next event, with the edge it concerns.
    pub fn poll_event(&mut self) -> Option<(PeerId, Event)> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        for at in 0..self.active.len() {
            let slot = self.active[at];
            if let Some(event) = self.poll_output(slot, OUTPUT_EVENT, Session::poll_event) {
                return Some((PeerId(slot), event));
            }
        }
        self.settle();
        None
    }

    /// When [`Gateway::handle_timeout`] is next due, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        let mut best = Earliest::new();
        best.consider(self.cookie_rotated + COOKIE_ROTATION, TimerKind::Handshake);
        for peer in &self.peers {
            best.consider_opt(peer.wake());
        }
        best.get()
    }

    /// Notes that `slot`'s sessions changed: its deadline is computed again, and its live
    /// session is polled for every output until each comes back empty.
    fn touch(&mut self, slot: usize) {
        let Some(peer) = self.peers.get_mut(slot) else { return };
        peer.wake_known.set(false);
        if peer.unpolled == 0 {
            self.active.push(slot);
        }
        peer.unpolled = OUTPUT_ALL;
    }

    /// Polls `slot`'s live session for one `output`, unless it came back empty since the
    /// session last changed. Anything polled changes the session: it is touched again.
    fn poll_output<T>(&mut self, slot: usize, output: u8, poll: impl FnOnce(&mut Session) -> Option<T>) -> Option<T> {
        let peer = &mut self.peers[slot];
        if peer.unpolled & output == 0 {
            return None;
        }
        match peer.live.as_mut().and_then(poll) {
            Some(out) => {
                peer.wake_known.set(false);
                peer.unpolled = OUTPUT_ALL;
                Some(out)
            }
            None => {
                peer.unpolled &= !output;
                None
            }
        }
    }

    /// Takes the peers with nothing left to poll out of `active`.
    fn settle(&mut self) {
        let peers = &self.peers;
        let before = self.active.len();
        self.active.retain(|&slot| peers[slot].unpolled != 0);
        if self.active.len() != before {
            self.cursor = 0;
        }
    }

    fn drop(&mut self, reason: DropReason) -> DropReason {
        self.stats.drops.add(reason);
        reason
    }

    fn handle_initiation(
        &mut self,
        now: Instant,
        link: LinkId,
        from: SocketAddr,
        body: &[u8],
        admission: Admission<'_>,
    ) -> Result<(), DropReason> {
        if body.len() != handshake::INIT_LEN {
            return Err(DropReason::HandshakeFailed);
        }
        if !handshake::check_mac1(body, &self.mac1_key) {
            // An edge that pins another gateway key. A cookie reply, sealed with this
            // gateway's key, tells it so (it cannot open it), a few times a second at most;
            // it is smaller than the initiation, so it amplifies nothing.
            if self.wrong_key.take(now, WRONG_KEY_ANSWERS) {
                self.send_cookie(link, from, body);
            }
            return Err(DropReason::BadMac);
        }
        // A copy of an initiation answered moments ago, on another link: the same response goes
        // back on this one, with no handshake work (the copy on the faster link may be the one
        // that came second).
        let mac1 = handshake::mac1_of(body);
        if let Some(a) = self
            .answered
            .iter_mut()
            .find(|a| Some(a.mac1) == mac1 && now.saturating_duration_since(a.at) < ANSWER_REUSE)
        {
            if a.links.contains(link) {
                return Err(DropReason::HandshakeReplay);
            }
            a.links.insert(link);
            let (index, response) = (a.index, a.response.clone());
            self.queue_control(link, index, from, &response);
            return Ok(());
        }
        let received = matches!(admission, Admission::Received(_));
        if received && !self.global.take(now, self.handshake_rate) {
            // Under load: only senders that prove they receive at their address get through,
            // and each of those only so often.
            let cookie_ok = [self.cookie_secret, self.previous_cookie_secret]
                .iter()
                .any(|secret| handshake::check_mac2(body, &handshake::cookie_for(secret, from)));
            if !cookie_ok {
                self.send_cookie(link, from, body);
                return Err(DropReason::HandshakeRateLimited);
            }
            if self.per_source.len() >= MAX_TRACKED_SOURCES {
                self.per_source.clear();
            }
            let bucket = self.per_source.entry(from.ip()).or_insert(TokenBucket::full(PER_SOURCE_HANDSHAKE_RATE, now));
            if !bucket.take(now, PER_SOURCE_HANDSHAKE_RATE) {
                return Err(DropReason::HandshakeRateLimited);
            }
        }
        let read = handshake::read_initiation(&self.private_key, &mut self.rng, body)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let Some(&slot) = self.by_key.get(&read.peer) else {
            self.log_unknown(now, read.peer, from);
            return Err(DropReason::UnknownPeer);
        };
        let owner = self.worker_of(PeerId(slot));
        if let Admission::Received(datagram) = admission
            && owner != self.shard.worker
        {
            self.forwards.push_back(Forward { worker: owner, from, datagram: datagram.to_vec() });
            self.stats.handshakes_forwarded += 1;
            return Ok(());
        }
        if self.peers[slot].last_timestamp.is_some_and(|last| read.payload.timestamp <= last) {
            return Err(DropReason::HandshakeReplay);
        }
        let local_index = loop {
            let index = self.rng.session_index();
            if index.get() != 0 && self.shard.owns_index(index.get()) && !self.by_index.contains_key(&index.get()) {
                break index;
            }
        };
        let sender_index = read.sender_index;
        let payload = read.payload;
        self.touch(slot);
        let peer = &mut self.peers[slot];
        let resumed = peer.live.is_some() && peer.epoch == Some(payload.epoch);
        let next_frame_seq = if resumed { peer.live.as_ref().map_or(0, Session::next_frame_seq) } else { 0 };
        let mut response = Vec::with_capacity(GRE_HEADER_LEN + handshake::RESPONSE_LEN);
        let split = read
            .respond(
                peer.entry.psk.as_ref(),
                local_index,
                &ResponsePayload {
                    resumed,
                    next_frame_seq,
                    no_session_token: handshake::no_session_token(&self.no_session_key, local_index),
                },
                &mut response,
            )
            .map_err(|_| DropReason::HandshakeFailed)?;
        let protection = Aead::new(payload.cipher, &split.responder_to_initiator, &split.initiator_to_responder)
            .map_err(|_| DropReason::HandshakeFailed)?;
        let keys = SessionKeys { local_index, remote_index: sender_index, protection: Box::new(protection) };
        peer.last_timestamp = Some(payload.timestamp);
        if resumed {
            if let Some(session) = peer.live.as_mut() {
                session.install_keys(now, keys, false);
            }
        } else {
            if let Some((old, _, _)) = peer.candidate.take() {
                for index in old.local_indices() {
                    self.by_index.remove(&index.get());
                }
            }
            let seed = self.rng.next_u64();
            let mut session = Session::new(Role::Gateway, self.template.clone(), keys, now, seed)
                .map_err(|_| DropReason::HandshakeFailed)?;
            session.restart_receive(payload.next_frame_seq);
            session.set_draining(self.draining);
            session.set_placement(peer.placement);
            peer.candidate = Some((session, payload.epoch, now));
        }
        self.by_index.insert(local_index.get(), slot);
        self.stats.handshakes += 1;
        tracing::info!(edge = %self.peers[slot].entry.name, %from, resumed, "handshake");
        self.events
            .push_back((PeerId(slot), Event::Handshake { index: local_index, resumed, peer: from, carrying: true }));
        self.queue_control(link, sender_index, from, &response);
        if let Some(mac1) = mac1 {
            if self.answered.len() == MAX_ANSWERED {
                self.answered.pop_front();
            }
            let links = [link].into_iter().collect();
            self.answered.push_back(Answered { mac1, index: sender_index, response, links, at: now });
        }
        Ok(())
    }

    /// Answers data for session index `key.index`, which this gateway does not have, with the
    /// token it hands out for that index in a handshake: the edge that holds the session learns
    /// at once that it is gone (this gateway restarted) and handshakes again. The answer is
    /// smaller than what it answers, and rate-limited in all and per index and link, so it
    /// amplifies nothing; it tells an attacker nothing it could forge for another index.
    fn answer_no_session(&mut self, now: Instant, key: PathKey, from: SocketAddr, len: usize) {
        if len < GRE_HEADER_LEN + handshake::NO_SESSION_LEN {
            return;
        }
        let index = (key.index.get(), key.link);
        if self
            .no_session_answered
            .get(&index)
            .is_some_and(|&at| now.saturating_duration_since(at) < NO_SESSION_INTERVAL)
            || !self.no_session_answers.take(now, NO_SESSION_ANSWERS)
        {
            return;
        }
        if self.no_session_answered.len() >= MAX_TRACKED_SOURCES {
            self.no_session_answered.clear();
        }
        self.no_session_answered.insert(index, now);
        let mut body = Vec::with_capacity(handshake::NO_SESSION_LEN);
        handshake::no_session(&handshake::no_session_token(&self.no_session_key, key.index), &mut body);
        self.queue_control(key.link, key.index, from, &body);
    }

    /// Logs an edge key that is not on the allowlist, once per [`UNKNOWN_LOG_INTERVAL`] per
    /// key and [`UNKNOWN_LINES_PER_SECOND`] in all (a flood of made-up keys must not flood the
    /// log), so that the operator can add it.
    fn log_unknown(&mut self, now: Instant, key: PublicKey, from: SocketAddr) {
        if self.unknown_logged.get(&key).is_some_and(|&at| now.saturating_duration_since(at) < UNKNOWN_LOG_INTERVAL)
            || !self.unknown_lines.take(now, UNKNOWN_LINES_PER_SECOND)
        {
            return;
        }
        if self.unknown_logged.len() >= MAX_TRACKED_SOURCES {
            self.unknown_logged.clear();
        }
        self.unknown_logged.insert(key, now);
        tracing::warn!(
            public_key = %key,
            %from,
            "handshake from an edge key not on the allowlist: add it under `edges` (and reload) if it is yours"
        );
    }

    fn send_cookie(&mut self, link: LinkId, from: SocketAddr, body: &[u8]) {
        let (Some(mac1), Some(sender)) = (handshake::mac1_of(body), body.get(1..5)) else { return };
        let sender = SessionIndex::from_wire(u32::from_be_bytes([sender[0], sender[1], sender[2], sender[3]]));
        let cookie = handshake::cookie_for(&self.cookie_secret, from);
        let mut reply = Vec::with_capacity(handshake::COOKIE_REPLY_LEN);
        handshake::cookie_reply(&self.public_key, &mut self.rng, &mac1, &cookie, &mut reply);
        if !reply.is_empty() {
            self.stats.cookies_sent += 1;
            self.queue_control(link, sender, from, &reply);
        }
    }

    fn queue_control(&mut self, link: LinkId, index: SessionIndex, to: SocketAddr, body: &[u8]) {
        let mut bytes = vec![0u8; GRE_HEADER_LEN];
        let repr = GreRepr { protocol: Protocol::Control, key: PathKey { index, link }, sequence: 0 };
        if repr.emit(&mut bytes).is_ok() {
            bytes.extend_from_slice(body);
            self.out.push_back((Transmit { link, destination: to }, bytes));
        }
    }
}

/// How an initiation reached this worker: from the network (the whole datagram, to hand over
/// if another worker owns the edge), or handed over by the worker that received it.
#[derive(Debug, Clone, Copy)]
enum Admission<'a> {
    Received(&'a [u8]),
    Forwarded,
}
