//! The fuzz harnesses, shared by the fuzz targets and the corpus generator.
//!
//! * [`parse_datagram`]: arbitrary bytes through every parser a datagram meets.
//! * [`run_session`]: arbitrary [`Step`]s through a gateway [`Session`] and its edge peer.
//! * [`handshake::run_handshake`]: arbitrary datagrams at a `Gateway`'s and an `Edge`'s
//!   handshake surface.
//!
//! A session input is a sequence of steps, each a 4-byte header and maybe a body:
//!
//! ```text
//! byte 0: kind (top 2 bits) | argument (low 6 bits)
//! byte 1: wait in units of WAIT_UNIT (low 7 bits) | send from the second edge address (top bit)
//! byte 2-3: big-endian u16: body length (Datagram, EdgeFrame) or datagram index (Deliver)
//! ```
//!
//! Raw datagrams can only reach the gateway's parsers and its AEAD, never its state, because a
//! fuzzer cannot forge a tag. So the edge seals real traffic ([`Op::EdgeFrame`] and its probes)
//! into a capture list, and the input decides which captured datagrams reach the gateway, in which
//! order, how often and with which byte flipped. The gateway's own datagrams go straight back to
//! the edge, so probes are answered and links come up.

pub mod handshake;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use braid_engine::crypto::Cipher;
use braid_engine::fec::{FecDecoder, ParityHeader};
use braid_engine::stats::SessionStats;
use braid_engine::wire::{
    ControlHeader, ControlMessage, ControlMessages, DataHeader, GRE_HEADER_LEN, GrePacket, GreRepr,
};
use braid_engine::{FrameSeq, LinkConfig, LinkId, Role, Session, SessionConfig};

/// The gateway's address, as the edge's links are configured.
pub const GATEWAY: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), braid_engine::wire::DEFAULT_PORT);
/// The edge's usual source address.
pub const EDGE_A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40_000);
/// The edge's address after a NAT rebinding.
pub const EDGE_B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 51_000);
/// The edge's links.
pub const EDGE_LINKS: [LinkId; 2] = [LinkId::new(0), LinkId::new(1)];
/// One unit of [`Step::wait`].
pub const WAIT_UNIT: Duration = Duration::from_millis(8);
/// The most edge datagrams kept for delivery; older ones are forgotten.
pub const MAX_CAPTURED: usize = 1024;
/// Length of a step's header.
pub const STEP_HEADER_LEN: usize = 4;
/// Steps past this many are ignored, so each run stays short and the fuzzer stays fast.
pub const MAX_STEPS: usize = 256;
/// Virtual time past this is not granted (waits become zero): a minute covers every timer the
/// engine has (probe ticks, link timeouts, reorder holds, flap decay) many times over.
pub const MAX_VIRTUAL_TIME: Duration = Duration::from_secs(60);

/// Feeds arbitrary bytes to every wire parser, as a datagram and as an opened payload.
///
/// Checks that what parses also emits back to the same bytes.
pub fn parse_datagram(data: &[u8]) {
    if let Ok(packet) = GrePacket::new_checked(data) {
        if let Ok(repr) = GreRepr::parse(&packet) {
            let mut header = [0u8; GRE_HEADER_LEN];
            repr.emit(&mut header).expect("the buffer holds a GRE header");
            assert_eq!(header[..], data[..GRE_HEADER_LEN], "GRE header does not round-trip");
        }
        let payload = packet.payload();
        parse_payload(payload);
        // A control payload starts with a cleartext control type byte.
        parse_payload(payload.get(1..).unwrap_or_default());
    }
    parse_payload(data);
}

fn parse_payload(payload: &[u8]) {
    if let Ok((header, shard)) = ParityHeader::parse(payload) {
        let mut out = Vec::new();
        header.emit(&mut out);
        assert_eq!(out[..], payload[..out.len()], "recovery shard header does not round-trip");
        assert_eq!(shard.len(), usize::from(header.shard_len));
    }
    // As a recovery shard of a block the decoder holds frames of: it rebuilds, refuses or
    // waits, and never panics.
    let mut decoder = FecDecoder::new(64);
    decoder.on_frame(0, payload.get(..40).unwrap_or(payload));
    let _ = decoder.on_parity(payload);
    if let Ok((header, frame)) = DataHeader::parse(payload) {
        let mut out = [0u8; braid_engine::wire::DATA_HEADER_LEN];
        header.emit(&mut out).expect("the buffer holds a data header");
        assert_eq!(out[..], payload[..out.len()], "data header does not round-trip");
        assert_eq!(frame.len() + out.len(), payload.len());
    }
    if let Ok((_, messages)) = ControlHeader::parse(payload) {
        let mut items = 0;
        let mut emitted = Vec::new();
        for message in ControlMessages::new(messages) {
            items += 1;
            assert!(items <= messages.len(), "more control messages than bytes");
            if let Ok(message) = message {
                let before = emitted.len();
                message.emit(&mut emitted);
                assert_eq!(emitted.len() - before, ControlMessage::encoded_len(&message));
            }
        }
        assert!(emitted.len() <= messages.len(), "parsed messages encode longer than their source");
    }
}

/// Runs a session input (see the [crate docs](crate)) from a fixed start.
pub fn run_session(data: &[u8]) {
    let mut harness = Harness::new(base_time());
    for step in Step::parse_all(data).take(MAX_STEPS) {
        harness.step(&step);
    }
}

/// One step of a session input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Virtual time to let pass first, in units of [`WAIT_UNIT`] (below 128).
    pub wait: u8,
    /// Whether datagrams to the gateway come from [`EDGE_B`] instead of [`EDGE_A`].
    pub alt_from: bool,
    /// What happens.
    pub op: Op<'a>,
}

/// What a [`Step`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Raw bytes to the gateway, received on `link` (below 64).
    Datagram {
        /// The link the gateway's demux attributes it to.
        link: u8,
        /// The datagram.
        bytes: &'a [u8],
    },
    /// A frame into the edge; its sealed copies are captured.
    EdgeFrame(&'a [u8]),
    /// Delivers captured datagram `index` (modulo their number) to the gateway, with the byte at
    /// `flip - 1` (modulo its length) inverted unless `flip` is 0 (below 64).
    Deliver {
        /// Which captured datagram.
        index: u16,
        /// Which byte to corrupt, plus one; 0 leaves it intact.
        flip: u8,
    },
    /// Delivers every captured datagram in capture order and forgets them.
    Flush,
}

impl<'a> Step<'a> {
    /// Splits an input into steps; a trailing partial header is ignored and a short body is
    /// taken as it is.
    pub fn parse_all(mut data: &'a [u8]) -> impl Iterator<Item = Self> + 'a {
        core::iter::from_fn(move || {
            let ([kind, time, hi, lo], rest) = data.split_first_chunk::<STEP_HEADER_LEN>().map(|(h, r)| (*h, r))?;
            let value = u16::from_be_bytes([hi, lo]);
            let mut body = || {
                let (body, rest) = rest.split_at(usize::from(value).min(rest.len()));
                data = rest;
                body
            };
            let arg = kind & 0x3f;
            let op = match kind >> 6 {
                0 => Op::Datagram { link: arg, bytes: body() },
                1 => Op::EdgeFrame(body()),
                2 => {
                    data = rest;
                    Op::Deliver { index: value, flip: arg }
                }
                _ => {
                    data = rest;
                    Op::Flush
                }
            };
            Some(Self { wait: time & 0x7f, alt_from: time & 0x80 != 0, op })
        })
    }

    /// Appends the step's encoding to `out`.
    ///
    /// # Panics
    /// If a field is out of range or a body is longer than a u16.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.wait < 128, "wait is 7 bits");
        let time = self.wait | if self.alt_from { 0x80 } else { 0 };
        let len = |bytes: &[u8]| u16::try_from(bytes.len()).expect("a body fits a u16");
        let (kind, value, body): (u8, u16, &[u8]) = match self.op {
            Op::Datagram { link, bytes } => {
                assert!(link < 64, "link is 6 bits");
                (link, len(bytes), bytes)
            }
            Op::EdgeFrame(bytes) => (1 << 6, len(bytes), bytes),
            Op::Deliver { index, flip } => {
                assert!(flip < 64, "flip is 6 bits");
                ((2 << 6) | flip, index, &[])
            }
            Op::Flush => (3 << 6, 0, &[]),
        };
        out.extend_from_slice(&[kind, time]);
        out.extend_from_slice(&value.to_be_bytes());
        out.extend_from_slice(body);
    }
}

/// An edge and a gateway session wired together by the input.
#[derive(Debug)]
pub struct Harness {
    /// The edge: its datagrams are captured, and reach the gateway only when a step says so.
    pub edge: Session,
    /// The gateway under test.
    pub gateway: Session,
    start: Instant,
    now: Instant,
    captured: VecDeque<(LinkId, Vec<u8>)>,
    buf: Vec<u8>,
    last_delivered: Option<FrameSeq>,
    delivered: u64,
}

impl Harness {
    /// Both sessions, keyed with `key_pair(1, ChaCha20-Poly1305)`, starting at `now`.
    pub fn new(now: Instant) -> Self {
        let (edge_keys, gateway_keys) = braid_engine::testing::key_pair(1, Cipher::ChaCha20Poly1305);
        let edge = Session::new(Role::Edge, edge_config(), edge_keys, now, 1).expect("the edge config is valid");
        let gateway = Session::new(Role::Gateway, SessionConfig::default(), gateway_keys, now, 2)
            .expect("the default gateway config is valid");
        Self {
            edge,
            gateway,
            start: now,
            now,
            captured: VecDeque::new(),
            buf: Vec::new(),
            last_delivered: None,
            delivered: 0,
        }
    }

    /// The virtual time.
    pub const fn now(&self) -> Instant {
        self.now
    }

    /// The edge datagrams captured so far and not flushed, oldest first.
    pub fn captured(&self) -> impl Iterator<Item = &(LinkId, Vec<u8>)> {
        self.captured.iter()
    }

    /// Frames the gateway delivered.
    pub const fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The gateway's counters.
    pub fn gateway_stats(&self) -> SessionStats {
        self.gateway.stats()
    }

    /// Runs one step: lets time pass (running every timer on the way), applies the step, then
    /// drains both sessions.
    pub fn step(&mut self, step: &Step<'_>) {
        let to = (self.now + WAIT_UNIT * u32::from(step.wait)).min(self.start + MAX_VIRTUAL_TIME);
        self.advance(to.max(self.now));
        let from = if step.alt_from { EDGE_B } else { EDGE_A };
        match step.op {
            Op::Datagram { link, bytes } => {
                let _ = self.gateway.handle_datagram(self.now, LinkId::new(link), from, bytes);
            }
            Op::EdgeFrame(frame) => {
                let _ = self.edge.handle_frame(self.now, frame);
            }
            Op::Deliver { index, flip } => {
                if !self.captured.is_empty() {
                    let (link, mut datagram) = self.captured[usize::from(index) % self.captured.len()].clone();
                    if flip != 0 && !datagram.is_empty() {
                        let at = (usize::from(flip) - 1) % datagram.len();
                        datagram[at] ^= 0xff;
                    }
                    let _ = self.gateway.handle_datagram(self.now, link, from, &datagram);
                }
            }
            Op::Flush => {
                for (link, datagram) in std::mem::take(&mut self.captured) {
                    let _ = self.gateway.handle_datagram(self.now, link, from, &datagram);
                    self.settle();
                }
            }
        }
        self.settle();
    }

    /// Moves time to `to`, running each timer at its own deadline as a driver would.
    fn advance(&mut self, to: Instant) {
        // Each link ticks every probe interval; this bounds a second of timers many times over.
        for _ in 0..100_000 {
            let due = |s: &Session| s.poll_timeout().map(|(at, _)| at).filter(|&at| at <= to);
            let Some(at) = due(&self.edge).into_iter().chain(due(&self.gateway)).min() else {
                self.now = to;
                return;
            };
            self.now = self.now.max(at);
            for session in [&mut self.edge, &mut self.gateway] {
                if session.poll_timeout().is_some_and(|(at, _)| at <= self.now) {
                    session.handle_timeout(self.now);
                    if let Some((next, kind)) = session.poll_timeout() {
                        assert!(
                            next > self.now,
                            "{:?} timer {kind:?} is still due right after handle_timeout: a driver would spin",
                            session.role()
                        );
                    }
                }
            }
            self.settle();
        }
        panic!("timers fired 100000 times within one step");
    }

    /// Drains both sessions: edge datagrams are captured, gateway datagrams go to the edge.
    fn settle(&mut self) {
        // Each round trip is bounded (a probe gets one reply); a few rounds settle everything.
        for _ in 0..8 {
            while let Some(transmit) = self.edge.poll_transmit(self.now, &mut self.buf) {
                assert_eq!(transmit.destination, GATEWAY, "the edge sends only to its configured gateway");
                if self.captured.len() == MAX_CAPTURED {
                    self.captured.pop_front();
                }
                self.captured.push_back((transmit.link, self.buf.clone()));
            }
            let mut replies = Vec::new();
            while let Some(transmit) = self.gateway.poll_transmit(self.now, &mut self.buf) {
                assert!(
                    [EDGE_A, EDGE_B].contains(&transmit.destination),
                    "the gateway sends to {} where no edge ever was",
                    transmit.destination
                );
                replies.push((transmit.link, self.buf.clone()));
            }
            while let Some(delivered) = self.gateway.poll_frame(self.now, &mut self.buf) {
                assert!(
                    self.last_delivered.is_none_or(|last| delivered.seq > last),
                    "frame {:?} delivered after {:?}",
                    delivered.seq,
                    self.last_delivered
                );
                self.last_delivered = Some(delivered.seq);
                self.delivered += 1;
            }
            while self.gateway.poll_event().is_some() {}
            while self.edge.poll_frame(self.now, &mut self.buf).is_some() {}
            while self.edge.poll_event().is_some() {}
            if replies.is_empty() {
                return;
            }
            for (link, datagram) in replies {
                let _ = self.edge.handle_datagram(self.now, link, GATEWAY, &datagram);
            }
        }
    }
}

/// The edge's config: two links to [`GATEWAY`], redundant mode.
pub fn edge_config() -> SessionConfig {
    let links =
        EDGE_LINKS.iter().map(|&id| LinkConfig { id, priority: id.get(), rate_bps: None, remote: GATEWAY }).collect();
    SessionConfig { links, ..SessionConfig::default() }
}

/// The one clock read: a base that virtual time is added to. Sessions only see differences, so
/// a run depends on the input alone.
#[allow(clippy::disallowed_methods)]
pub fn base_time() -> Instant {
    Instant::now()
}
