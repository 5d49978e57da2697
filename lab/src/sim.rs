//! A deterministic, seeded simulation of an edge and a gateway over virtual links.
//!
//! Time is virtual: the loop jumps from one event to the next (a frame from the source, a packet
//! arriving, a session timer, a scripted action), so a minute of traffic runs in well under a
//! second and the same seed always gives the same run. The links model what the lab's kernel
//! cannot: one-way delay, jitter with or without reordering, random and bursty loss, a rate with
//! a bounded queue, a blackhole, carrier loss and NAT rebinding.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use braid_engine::crypto::Cipher;
use braid_engine::endpoint::edge::{Edge, EdgeConfig, GatewayPeer};
use braid_engine::endpoint::gateway::{EdgeEntry, Gateway, GatewayConfig, PeerId, Shard, steer};
use braid_engine::keys::{PrivateKey, Psk};
use braid_engine::monitor::LinkState;
use braid_engine::session::{
    Delivered, DropReason, Event, LinkConfig, LinkEvent, Role, Session, SessionConfig, Transmit,
};
use braid_engine::{LinkId, Mode};

use crate::scenario::{self, Figures, Scenario, Stream};

/// One end of the tunnel as the simulation drives it: a bare session, or an endpoint with the
/// handshake.
pub trait End {
    fn frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason>;
    fn datagram(&mut self, now: Instant, link: LinkId, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason>;
    fn link_event(&mut self, now: Instant, link: LinkId, event: LinkEvent);
    fn timeout(&mut self, now: Instant);
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;
    fn deliver(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered>;
    fn event(&mut self) -> Option<Event>;
    fn deadline(&self) -> Option<Instant>;
}

/// A session and an edge endpoint have the same inputs and outputs; the harness delegates.
macro_rules! end_by_delegation {
    ($type:ty) => {
        impl End for $type {
            fn frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
                self.handle_frame(now, frame)
            }
            fn datagram(
                &mut self,
                now: Instant,
                link: LinkId,
                from: SocketAddr,
                bytes: &[u8],
            ) -> Result<(), DropReason> {
                self.handle_datagram(now, link, from, bytes)
            }
            fn link_event(&mut self, now: Instant, link: LinkId, event: LinkEvent) {
                self.handle_link_event(now, link, event);
            }
            fn timeout(&mut self, now: Instant) {
                self.handle_timeout(now);
            }
            fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
                self.poll_transmit(now, buf)
            }
            fn deliver(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered> {
                self.poll_frame(now, buf)
            }
            fn event(&mut self) -> Option<Event> {
                self.poll_event()
            }
            fn deadline(&self) -> Option<Instant> {
                self.poll_timeout().map(|(t, _)| t)
            }
        }
    };
}

end_by_delegation!(Session);
end_by_delegation!(Edge);

/// The gateway's first allowed edge is the one the simulation streams to and from.
impl End for Gateway {
    fn frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
        self.handle_frame(now, PeerId(0), frame)
    }
    fn datagram(&mut self, now: Instant, _link: LinkId, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        self.handle_datagram(now, from, bytes)
    }
    fn link_event(&mut self, _now: Instant, _link: LinkId, _event: LinkEvent) {}
    fn timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.poll_transmit(now, buf)
    }
    fn deliver(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered> {
        self.poll_frame(now, buf).map(|(_, d)| d)
    }
    fn event(&mut self) -> Option<Event> {
        self.poll_event().map(|(_, e)| e)
    }
    fn deadline(&self) -> Option<Instant> {
        self.poll_timeout().map(|(t, _)| t)
    }
}

/// A gateway of several workers, as the gateway process runs them: each datagram goes to the
/// worker its session index names ([`steer`], as the kernel's steering program does), an
/// initiation goes to worker 0 and on to the worker that owns the edge, and the edge's frames
/// from the LAN go to that worker.
#[derive(Debug)]
pub struct Workers {
    pub workers: Vec<Gateway>,
}

impl Workers {
    /// `count` workers, each a gateway made by `make` and given its place.
    pub fn new(count: usize, mut make: impl FnMut(usize) -> Gateway) -> Self {
        let workers = (0..count)
            .map(|worker| {
                let mut gateway = make(worker);
                gateway.set_shard(Shard { worker, count });
                gateway
            })
            .collect();
        Self { workers }
    }

    /// The worker that owns the simulation's edge (the allowlist's first).
    pub fn owner(&self) -> usize {
        self.workers.first().map_or(0, |w| w.worker_of(PeerId(0)))
    }

    fn hand_over(&mut self, now: Instant) {
        for _ in 0..self.workers.len() {
            let forwards: Vec<_> =
                self.workers.iter_mut().flat_map(|w| std::iter::from_fn(|| w.poll_forward())).collect();
            if forwards.is_empty() {
                return;
            }
            for forward in forwards {
                if let Some(worker) = self.workers.get_mut(forward.worker) {
                    let _ = worker.handle_forwarded(now, forward.from, &forward.datagram);
                }
            }
        }
    }
}

impl End for Workers {
    fn frame(&mut self, now: Instant, frame: &[u8]) -> Result<(), DropReason> {
        let owner = self.owner();
        self.workers[owner].handle_frame(now, PeerId(0), frame)
    }
    fn datagram(&mut self, now: Instant, _link: LinkId, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        let worker = steer(bytes, self.workers.len());
        let result = self.workers[worker].handle_datagram(now, from, bytes);
        self.hand_over(now);
        result
    }
    fn link_event(&mut self, _now: Instant, _link: LinkId, _event: LinkEvent) {}
    fn timeout(&mut self, now: Instant) {
        for worker in &mut self.workers {
            if worker.poll_timeout().is_some_and(|(at, _)| at <= now) {
                worker.handle_timeout(now);
            }
        }
    }
    fn transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.workers.iter_mut().find_map(|w| w.poll_transmit(now, buf))
    }
    fn deliver(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Delivered> {
        self.workers.iter_mut().find_map(|w| w.poll_frame(now, buf).map(|(_, d)| d))
    }
    fn event(&mut self) -> Option<Event> {
        self.workers.iter_mut().find_map(|w| w.poll_event().map(|(_, e)| e))
    }
    fn deadline(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|w| w.poll_timeout().map(|(t, _)| t)).min()
    }
}

/// Keys and settings for a secured pair.
#[derive(Debug, Clone)]
pub struct Security {
    pub edge_key: PrivateKey,
    pub gateway_key: PrivateKey,
    /// The standby gateway's key ([`Sim::secure_with_standby`]).
    pub standby_key: PrivateKey,
    /// The edge's hold-down before the stream returns to the first gateway; none by default.
    pub return_after: Option<Duration>,
    /// The key the gateway's allowlist holds for the edge (normally the edge's own public key).
    pub allowed_edge: Option<PrivateKey>,
    pub edge_psk: Option<Psk>,
    pub gateway_psk: Option<Psk>,
    /// The gateway key the edge pins (normally the gateway's).
    pub pinned_gateway: Option<PrivateKey>,
    pub cipher: Cipher,
    pub handshake_rate: u32,
}

impl Default for Security {
    fn default() -> Self {
        Self::new()
    }
}

impl Security {
    pub fn new() -> Self {
        Self {
            edge_key: PrivateKey::from_bytes([0x11; 32]),
            gateway_key: PrivateKey::from_bytes([0x22; 32]),
            standby_key: PrivateKey::from_bytes([0x33; 32]),
            return_after: None,
            allowed_edge: None,
            edge_psk: None,
            gateway_psk: None,
            pinned_gateway: None,
            cipher: Cipher::ChaCha20Poly1305,
            handshake_rate: braid_engine::endpoint::gateway::DEFAULT_HANDSHAKE_RATE,
        }
    }

    pub fn gateway(&self, config: &SessionConfig, now: Instant, seed: u64) -> Gateway {
        self.gateway_keyed(&self.gateway_key, config, now, seed)
    }

    /// The standby gateway, with its own key.
    pub fn standby_gateway(&self, config: &SessionConfig, now: Instant, seed: u64) -> Gateway {
        self.gateway_keyed(&self.standby_key, config, now, seed)
    }

    fn gateway_keyed(&self, key: &PrivateKey, config: &SessionConfig, now: Instant, seed: u64) -> Gateway {
        let allowed = self.allowed_edge.as_ref().unwrap_or(&self.edge_key).public();
        let config = GatewayConfig {
            private_key: key.clone(),
            edges: vec![EdgeEntry { name: "rig".into(), public_key: allowed, psk: self.gateway_psk.clone() }],
            session: SessionConfig { links: Vec::new(), ..config.clone() },
            handshake_rate: self.handshake_rate,
        };
        Gateway::new(config, now, seed_bytes(seed ^ 0x6a7e)).expect("gateway config")
    }
}

pub fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out[8] = 1;
    out
}

/// The link model is the lab's own (`braid-impair` runs the same code between TAPs), so a
/// simulated link and a lab link mean the same thing.
pub use crate::{Burst, Link, Profile};

/// Outer IPv4 + UDP headers: they count against a link's rate, though the sim carries only the
/// UDP payload.
const OUTER_HEADERS: usize = 28;

/// One virtual uplink: two directions, carrier, blackhole and the NAT mapping the gateway sees.
#[derive(Debug)]
pub struct VirtualLink {
    pub up: Link,
    pub down: Link,
    pub carrier: bool,
    pub blackhole: bool,
    /// How many of the next packets the gateway sends down this link are lost
    /// ([`Action::LoseDown`]).
    pub lose_down: u32,
    /// The address the gateway sees for this link (the ISP's NAT mapping).
    pub nat: SocketAddr,
    pub sent_up: u64,
    pub sent_down: u64,
}

/// A scripted change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    CarrierDown(u8),
    CarrierUp(u8),
    Blackhole(u8),
    Restore(u8),
    /// The next packets the first gateway sends down the link are lost, this many in a row: a
    /// one-way outage, as an LTE downlink has, while the uplink delivers.
    LoseDown(u8, u32),
    /// The ISP's NAT gives the link a new public port.
    Rebind(u8),
    /// The uplink's profile changes, on its paths to both gateways.
    SetProfile(u8, Profile),
    /// Nothing reaches the first gateway any more, nor comes from it (killed, or cut off from
    /// the internet); it keeps running.
    GatewayCut,
    /// The first gateway is reachable again.
    GatewayRestore,
    /// The first gateway's process dies: unreachable, and what it held is gone with it.
    GatewayKill,
}

/// A second gateway, the edge's standby, on paths of its own over the same uplinks (another
/// datacenter): the uplink's carrier, blackhole and profile hold for both.
#[derive(Debug)]
pub struct StandbyPeer<G> {
    pub gateway: G,
    pub addr: SocketAddr,
    /// Per uplink: toward it, and back.
    pub up: Vec<Link>,
    pub down: Vec<Link>,
    /// When it delivered each frame to the ingest.
    pub delivered_at: Vec<Instant>,
}

/// What the gateway's side delivered, frame by frame.
#[derive(Debug, Default)]
pub struct Sink {
    /// When each frame (by source index) was sent.
    pub sent_at: Vec<Instant>,
    /// How many times each frame was delivered.
    pub delivered: Vec<u32>,
    pub out_of_order: u64,
    pub highest: Option<u64>,
    /// One-way latency of each first delivery.
    pub latency: Vec<Duration>,
    /// Reorder hold of each delivered frame.
    pub held: Vec<Duration>,
    /// Longest time between two deliveries while the source was running.
    pub max_gap: Duration,
    last_delivery: Option<Instant>,
    /// (time, delivering link) is not visible at the sink; frames carry only their index.
    pub delivered_at: Vec<Option<Instant>>,
    /// RARP announcements delivered: when, and the address announced.
    pub announced: Vec<(Instant, [u8; 6])>,
}

impl Sink {
    /// The next numbered frame from a source, recorded as sent at `now`.
    fn next_frame(&mut self, now: Instant, size: usize) -> Vec<u8> {
        let index = self.sent_at.len() as u64;
        let mut frame = vec![0u8; size.max(22)];
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        frame[14..22].copy_from_slice(&index.to_be_bytes());
        self.sent_at.push(now);
        self.delivered.push(0);
        self.delivered_at.push(None);
        frame
    }

    fn deliver(&mut self, now: Instant, frame: &[u8], streaming: bool) {
        if frame.get(12..14) == Some(&[0x80, 0x35]) {
            if let Some(mac) = frame.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()) {
                self.announced.push((now, mac));
            }
            return;
        }
        let Some(index) = frame.get(14..22).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))) else {
            return;
        };
        let Some(count) = self.delivered.get_mut(index as usize) else { return };
        *count += 1;
        if *count == 1 {
            self.latency.push(now - self.sent_at[index as usize]);
            self.delivered_at[index as usize] = Some(now);
        }
        if self.highest.is_some_and(|h| index < h) {
            self.out_of_order += 1;
        }
        self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
        if let Some(last) = self.last_delivery
            && streaming
        {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last_delivery = Some(now);
    }
}

fn report_of(sink: &Sink) -> Report {
    let sent = sink.sent_at.len() as u64;
    let delivered = sink.delivered.iter().filter(|&&n| n > 0).count() as u64;
    let duplicated = sink.delivered.iter().map(|&n| u64::from(n.saturating_sub(1))).sum();
    Report {
        sent,
        lost: sent - delivered,
        duplicated,
        out_of_order: sink.out_of_order,
        max_gap: sink.max_gap,
        p50: percentile(&sink.latency, 0.50),
        p99: percentile(&sink.latency, 0.99),
        hold_p99: percentile(&sink.held, 0.99),
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub max_gap: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub hold_p99: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} lost={} dup={} reordered={} max_gap_ms={:.1} p50_ms={:.1} p99_ms={:.1} hold_p99_ms={:.1}",
            self.sent,
            self.lost,
            self.duplicated,
            self.out_of_order,
            ms(self.max_gap),
            ms(self.p50),
            ms(self.p99),
            ms(self.hold_p99)
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// A constant-rate source of numbered frames at the edge.
#[derive(Debug, Clone, Copy)]
struct Source {
    interval: Duration,
    size: usize,
    next_at: Instant,
    until: Instant,
}

/// An edge and a gateway over virtual links.
pub struct Sim<E: End = Session, G: End = Session> {
    pub start: Instant,
    pub now: Instant,
    pub edge: E,
    pub gateway: G,
    /// Frames the edge received from the gateway's reverse stream, by index.
    pub reverse: Sink,
    /// Every datagram the edge put on a link, when capturing: (link, bytes).
    pub captured: Vec<(u8, Vec<u8>)>,
    pub capture: bool,
    /// Datagrams to hand the gateway at a time, as if from an address: (at, from, bytes).
    injections: Vec<(Instant, SocketAddr, Vec<u8>)>,
    pub injected_results: Vec<Result<(), DropReason>>,
    /// Addresses the gateway sent to that are no link's current NAT mapping.
    pub misdirected: Vec<SocketAddr>,
    pub links: Vec<VirtualLink>,
    pub sink: Sink,
    pub gateway_addr: SocketAddr,
    /// Whether the first gateway is reachable ([`Action::GatewayCut`]).
    pub gateway_reachable: bool,
    /// Whether the first gateway runs ([`Action::GatewayKill`]).
    pub gateway_alive: bool,
    /// When the first gateway delivered each frame to the ingest.
    pub gateway_delivered_at: Vec<Instant>,
    pub standby: Option<StandbyPeer<G>>,
    /// Every link state change at the edge: (time since start, link, new state).
    pub edge_states: Vec<(Duration, LinkId, LinkState)>,
    /// Every handshake trouble the edge reported: (time since start, cause).
    pub edge_troubles: Vec<(Duration, braid_engine::endpoint::edge::HandshakeTrouble)>,
    pub gateway_states: Vec<(Duration, LinkId, LinkState)>,
    source: Option<Source>,
    reverse_source: Option<Source>,
    actions: Vec<(Instant, Action)>,
    next_port: u16,
    buf: Vec<u8>,
    steps: u64,
}

impl<E: End, G: End> std::fmt::Debug for Sim<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("at", &(self.now - self.start)).field("links", &self.links).finish_non_exhaustive()
    }
}

/// How long after the stream ends every frame has either arrived or been given up.
pub const DRAIN: Duration = Duration::from_millis(500);

/// The most loop steps one run may take: a runaway timer fails the test instead of hanging it.
pub const MAX_STEPS: u64 = 20_000_000;

/// The edge's side of each link: the gateway address and the links' settings. With `rated`,
/// each link's configured rate is its profile's (a modem's plan); without, the congestion
/// controllers must find the rates.
fn edge_session_config(
    config: &SessionConfig,
    profiles: &[Profile],
    gateway_addr: SocketAddr,
    rated: bool,
) -> SessionConfig {
    let mut edge_config = config.clone();
    edge_config.links = profiles
        .iter()
        .enumerate()
        .map(|(i, p)| LinkConfig {
            id: LinkId::new(i as u8),
            priority: i as u8,
            rate_bps: p.rate_bps.filter(|_| rated),
            remote: gateway_addr,
        })
        .collect();
    edge_config
}

/// Where virtual time starts. Any instant serves: the run only ever adds to it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn gateway_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4754))
}

impl Sim<Edge, Gateway> {
    /// An edge and a gateway endpoint that must complete a real handshake first.
    pub fn secure(seed: u64, config: SessionConfig, profiles: &[Profile], security: &Security) -> Self {
        let start = origin();
        let edge = secure_edge(seed, start, &config, profiles, security, true, Vec::new());
        let gateway = security.gateway(&config, start, seed);
        Self::assemble(seed, start, edge, gateway, profiles)
    }

    /// As [`Sim::secure`], with a standby gateway that the edge keeps a session with, reached
    /// over paths of its own with the same profiles.
    pub fn secure_with_standby(seed: u64, config: SessionConfig, profiles: &[Profile], security: &Security) -> Self {
        let start = origin();
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 4754));
        let standby =
            GatewayPeer { address: addr, public_key: security.standby_key.public(), psk: security.edge_psk.clone() };
        let edge = secure_edge(seed, start, &config, profiles, security, false, vec![standby]);
        let gateway = security.gateway(&config, start, seed);
        let mut sim = Self::assemble(seed, start, edge, gateway, profiles);
        let path = |i: usize, n: u64| Link::new(profiles[i], seed.wrapping_mul(37).wrapping_add(2 * i as u64 + n));
        sim.standby = Some(StandbyPeer {
            gateway: security.standby_gateway(&config, start, seed ^ 0x5757),
            addr,
            up: (0..profiles.len()).map(|i| path(i, 1)).collect(),
            down: (0..profiles.len()).map(|i| path(i, 2)).collect(),
            delivered_at: Vec::new(),
        });
        sim
    }
}

impl Sim<Edge, Workers> {
    /// As [`Sim::secure`], with a gateway of `count` workers ([`Workers`]).
    pub fn secure_workers(
        seed: u64,
        config: SessionConfig,
        profiles: &[Profile],
        security: &Security,
        count: usize,
    ) -> Self {
        let start = origin();
        let edge = secure_edge(seed, start, &config, profiles, security, true, Vec::new());
        let workers = Workers::new(count, |w| security.gateway(&config, start, seed ^ (w as u64) << 32));
        Self::assemble(seed, start, edge, workers, profiles)
    }
}

/// The edge endpoint of a secure sim: its keys from `security`, the first gateway pinned (or
/// the key the test pins instead), and `standbys` after it.
fn secure_edge(
    seed: u64,
    start: Instant,
    config: &SessionConfig,
    profiles: &[Profile],
    security: &Security,
    rated: bool,
    standbys: Vec<GatewayPeer>,
) -> Edge {
    let edge_config = EdgeConfig {
        private_key: security.edge_key.clone(),
        gateway_key: security.pinned_gateway.as_ref().unwrap_or(&security.gateway_key).public(),
        psk: security.edge_psk.clone(),
        cipher: security.cipher,
        session: edge_session_config(config, profiles, gateway_addr(), rated),
        standbys,
        return_after: security.return_after,
    };
    Edge::new(edge_config, start, 1_700_000_000_000_000_000, seed_bytes(seed)).expect("edge config")
}

impl Sim {
    /// Builds a sim with one link per profile (the same profile both ways), links numbered in
    /// order with priority equal to their number.
    pub fn new(seed: u64, mode: Mode, profiles: &[Profile]) -> Self {
        Self::with_config(seed, SessionConfig { mode, ..SessionConfig::default() }, profiles)
    }

    pub fn with_config(seed: u64, config: SessionConfig, profiles: &[Profile]) -> Self {
        Self::build(seed, config, profiles, true)
    }

    /// As [`Sim::with_config`], but no link's rate is configured: the engine measures them, as
    /// in the lab.
    pub fn unrated(seed: u64, config: SessionConfig, profiles: &[Profile]) -> Self {
        Self::build(seed, config, profiles, false)
    }

    fn build(seed: u64, config: SessionConfig, profiles: &[Profile], rated: bool) -> Self {
        let start = origin();
        let edge_config = edge_session_config(&config, profiles, gateway_addr(), rated);
        let gateway_config = SessionConfig { links: Vec::new(), ..config };
        let (edge_keys, gateway_keys) = braid_engine::testing::key_pair(seed, Cipher::ChaCha20Poly1305);
        let edge = Session::new(Role::Edge, edge_config, edge_keys, start, seed).expect("edge config");
        let gateway =
            Session::new(Role::Gateway, gateway_config, gateway_keys, start, seed ^ 0x5a5a).expect("gw config");
        Self::assemble(seed, start, edge, gateway, profiles)
    }
}

impl<E: End, G: End> Sim<E, G> {
    fn assemble(seed: u64, start: Instant, edge: E, gateway: G, profiles: &[Profile]) -> Self {
        let gateway_addr = gateway_addr();
        let links = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| VirtualLink {
                up: Link::new(*p, seed.wrapping_mul(31).wrapping_add(2 * i as u64 + 1)),
                down: Link::new(*p, seed.wrapping_mul(31).wrapping_add(2 * i as u64 + 2)),
                carrier: true,
                blackhole: false,
                lose_down: 0,
                nat: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, i as u8 + 1), 40_000)),
                sent_up: 0,
                sent_down: 0,
            })
            .collect();
        Self {
            start,
            now: start,
            edge,
            gateway,
            reverse: Sink::default(),
            captured: Vec::new(),
            capture: false,
            injections: Vec::new(),
            injected_results: Vec::new(),
            misdirected: Vec::new(),
            links,
            sink: Sink::default(),
            gateway_addr,
            gateway_reachable: true,
            gateway_alive: true,
            gateway_delivered_at: Vec::new(),
            standby: None,
            edge_states: Vec::new(),
            edge_troubles: Vec::new(),
            gateway_states: Vec::new(),
            source: None,
            reverse_source: None,
            actions: Vec::new(),
            next_port: 40_001,
            buf: Vec::with_capacity(2048),
            steps: 0,
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs)
    }

    /// Schedules an action at `secs` after the start.
    pub fn schedule(&mut self, secs: f64, action: Action) {
        let at = self.at(secs);
        self.actions.push((at, action));
        self.actions.sort_by_key(|(at, _)| *at);
    }

    /// Streams `size`-byte frames at `mbps` from `from` to `until` seconds.
    pub fn stream(&mut self, from: f64, until: f64, mbps: f64, size: usize) {
        let interval = Duration::from_secs_f64(size as f64 * 8.0 / (mbps * 1e6));
        self.source = Some(Source { interval, size, next_at: self.at(from), until: self.at(until) });
    }

    /// When the stream set by [`Sim::stream`] ends, in seconds after the start.
    pub fn stream_end(&self) -> Option<f64> {
        self.source.as_ref().map(|source| (source.until - self.start).as_secs_f64())
    }

    /// Streams from the gateway to the edge as well (its frames land in [`Sim::reverse`]).
    pub fn stream_reverse(&mut self, from: f64, until: f64, mbps: f64, size: usize) {
        let interval = Duration::from_secs_f64(size as f64 * 8.0 / (mbps * 1e6));
        self.reverse_source = Some(Source { interval, size, next_at: self.at(from), until: self.at(until) });
    }

    /// Hands `bytes` to the gateway at `secs`, as if sent from `from` (an attacker, a replay).
    pub fn inject(&mut self, secs: f64, from: SocketAddr, bytes: Vec<u8>) {
        let at = self.at(secs);
        self.injections.push((at, from, bytes));
        self.injections.sort_by_key(|(at, _, _)| *at);
    }

    /// The reverse stream's figures (frames still in flight at the end count as lost).
    pub fn reverse_report(&self) -> Report {
        report_of(&self.reverse)
    }

    /// Runs until `secs` after the start.
    pub fn run_until(&mut self, secs: f64) {
        let end = self.at(secs);
        loop {
            self.steps += 1;
            assert!(self.steps < MAX_STEPS, "the simulation ran away at {:?}", self.now - self.start);
            let Some(next) = self.next_event().filter(|t| *t <= end) else {
                self.now = end;
                break;
            };
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// The figures of the run. The stream must have ended at least [`DRAIN`] before now, so that
    /// frames still in flight are never counted as lost.
    pub fn report(&self) -> Report {
        for source in [self.source, self.reverse_source].into_iter().flatten() {
            assert!(
                self.now >= source.until + DRAIN,
                "report() while frames may be in flight: the stream ends at {:?}, now is {:?}",
                source.until - self.start,
                self.now - self.start
            );
        }
        report_of(&self.sink)
    }

    /// Frames sent from `from` until `until` (on the edge's stream) that never arrived.
    pub fn lost_between(&self, from: Instant, until: Instant) -> u64 {
        let sink = &self.sink;
        sink.sent_at.iter().zip(&sink.delivered).filter(|&(&at, &n)| at >= from && at < until && n == 0).count() as u64
    }

    /// The edge's link state over time, as a compact string for failure messages.
    pub fn state_log(&self) -> String {
        self.edge_states
            .iter()
            .map(|(t, l, s)| format!("{:.3}s {l} {}", t.as_secs_f64(), s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Datagrams on the wire from the edge to the gateway on a link right now.
    pub fn in_flight_up(&self, link: usize) -> u64 {
        self.links[link].up.in_flight() as u64
    }

    /// Replaces the gateway (a restart: all its state is gone).
    pub fn replace_gateway(&mut self, gateway: G) {
        self.gateway = gateway;
    }

    fn next_event(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.source.filter(|s| s.next_at <= s.until).map(|s| s.next_at));
        consider(self.reverse_source.filter(|s| s.next_at <= s.until).map(|s| s.next_at));
        consider(self.edge.deadline());
        consider(self.gateway.deadline());
        if let Some(standby) = &self.standby {
            consider(standby.gateway.deadline());
            for link in standby.up.iter().chain(&standby.down) {
                consider(link.next_due());
            }
        }
        consider(self.actions.first().map(|(t, _)| *t));
        consider(self.injections.first().map(|(t, _, _)| *t));
        for link in &self.links {
            consider(link.up.next_due());
            consider(link.down.next_due());
        }
        next
    }

    fn step(&mut self) {
        let now = self.now;
        while self.actions.first().is_some_and(|(t, _)| *t <= now) {
            let (_, action) = self.actions.remove(0);
            self.apply(action);
        }
        if let Some(mut source) = self.source {
            while source.next_at <= now && source.next_at <= source.until {
                let frame = self.sink.next_frame(now, source.size);
                let _ = self.edge.frame(now, &frame);
                source.next_at += source.interval;
            }
            self.source = Some(source);
        }
        if let Some(mut source) = self.reverse_source {
            while source.next_at <= now && source.next_at <= source.until {
                let frame = self.reverse.next_frame(now, source.size);
                let _ = self.gateway.frame(now, &frame);
                source.next_at += source.interval;
            }
            self.reverse_source = Some(source);
        }
        while self.injections.first().is_some_and(|(t, _, _)| *t <= now) {
            let (_, from, bytes) = self.injections.remove(0);
            let result = self.gateway.datagram(now, LinkId::new(0), from, &bytes);
            self.injected_results.push(result);
        }
        for i in 0..self.links.len() {
            while let Some(bytes) = self.links[i].up.pop_due(now) {
                let from = self.links[i].nat;
                if self.gateway_reachable {
                    let _ = self.gateway.datagram(now, LinkId::new(i as u8), from, &bytes);
                }
            }
            while let Some(bytes) = self.links[i].down.pop_due(now) {
                if self.gateway_reachable {
                    let _ = self.edge.datagram(now, LinkId::new(i as u8), self.gateway_addr, &bytes);
                }
            }
            if let Some(standby) = self.standby.as_mut() {
                while let Some(bytes) = standby.up.get_mut(i).and_then(|l| l.pop_due(now)) {
                    let _ = standby.gateway.datagram(now, LinkId::new(i as u8), self.links[i].nat, &bytes);
                }
                while let Some(bytes) = standby.down.get_mut(i).and_then(|l| l.pop_due(now)) {
                    let _ = self.edge.datagram(now, LinkId::new(i as u8), standby.addr, &bytes);
                }
            }
        }
        if self.edge.deadline().is_some_and(|t| t <= now) {
            self.edge.timeout(now);
        }
        if self.gateway.deadline().is_some_and(|t| t <= now) {
            self.gateway.timeout(now);
        }
        if let Some(standby) = self.standby.as_mut()
            && standby.gateway.deadline().is_some_and(|t| t <= now)
        {
            standby.gateway.timeout(now);
        }
        self.drain();
    }

    fn apply(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::CarrierDown(l) => {
                let link = &mut self.links[usize::from(l)];
                // Packets already past the interface are in the network and still arrive, as
                // in the lab when a veth goes down; nothing new leaves or enters.
                link.carrier = false;
                self.edge.link_event(now, LinkId::new(l), LinkEvent::CarrierDown);
            }
            Action::CarrierUp(l) => {
                self.links[usize::from(l)].carrier = true;
                self.edge.link_event(now, LinkId::new(l), LinkEvent::CarrierUp);
            }
            Action::Blackhole(l) => self.links[usize::from(l)].blackhole = true,
            Action::Restore(l) => self.links[usize::from(l)].blackhole = false,
            Action::LoseDown(l, count) => self.links[usize::from(l)].lose_down = count,
            Action::Rebind(l) => {
                let port = self.next_port;
                self.next_port += 1;
                let link = &mut self.links[usize::from(l)];
                link.nat.set_port(port);
            }
            Action::SetProfile(l, profile) => {
                let link = &mut self.links[usize::from(l)];
                link.up.set_profile(profile);
                link.down.set_profile(profile);
                // The uplink's: it holds on the paths to the standby too.
                if let Some(standby) = self.standby.as_mut() {
                    for path in [&mut standby.up, &mut standby.down] {
                        if let Some(path) = path.get_mut(usize::from(l)) {
                            path.set_profile(profile);
                        }
                    }
                }
            }
            Action::GatewayCut => self.gateway_reachable = false,
            Action::GatewayRestore => self.gateway_reachable = true,
            Action::GatewayKill => {
                self.gateway_reachable = false;
                self.gateway_alive = false;
            }
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let mut progress = false;
            while let Some(t) = self.edge.transmit(now, &mut buf) {
                progress = true;
                if self.capture {
                    self.captured.push((t.link.get(), buf.clone()));
                }
                let i = usize::from(t.link.get());
                let link = &mut self.links[i];
                if !link.carrier || link.blackhole {
                    continue;
                }
                if t.destination == self.gateway_addr {
                    link.sent_up += 1;
                    link.up.offer_sized(now, &buf, buf.len() + OUTER_HEADERS);
                    continue;
                }
                let standby = self.standby.as_mut().filter(|s| s.addr == t.destination);
                let standby = standby.expect("the edge sends only to its gateways");
                standby.up[i].offer_sized(now, &buf, buf.len() + OUTER_HEADERS);
            }
            while let Some(t) = self.gateway.transmit(now, &mut buf) {
                progress = true;
                // A packet to a stale NAT mapping (or to an attacker) goes nowhere near the edge.
                let Some(link) = self.links.iter_mut().find(|l| l.nat == t.destination) else {
                    self.misdirected.push(t.destination);
                    continue;
                };
                if link.carrier && !link.blackhole {
                    if link.lose_down > 0 {
                        link.lose_down -= 1;
                        continue;
                    }
                    link.sent_down += 1;
                    link.down.offer_sized(now, &buf, buf.len() + OUTER_HEADERS);
                }
            }
            if let Some(standby) = self.standby.as_mut() {
                while let Some(t) = standby.gateway.transmit(now, &mut buf) {
                    progress = true;
                    let Some(i) = self.links.iter().position(|l| l.nat == t.destination) else {
                        self.misdirected.push(t.destination);
                        continue;
                    };
                    if self.links[i].carrier && !self.links[i].blackhole {
                        standby.down[i].offer_sized(now, &buf, buf.len() + OUTER_HEADERS);
                    }
                }
            }
            let streaming = self.source.is_some_and(|s| now <= s.until + Duration::from_millis(300));
            while self.gateway_alive
                && let Some(delivered) = self.gateway.deliver(now, &mut buf)
            {
                progress = true;
                self.sink.held.push(delivered.held);
                self.sink.deliver(now, &buf, streaming);
                self.gateway_delivered_at.push(now);
            }
            if let Some(standby) = self.standby.as_mut() {
                while let Some(delivered) = standby.gateway.deliver(now, &mut buf) {
                    progress = true;
                    self.sink.held.push(delivered.held);
                    self.sink.deliver(now, &buf, streaming);
                    standby.delivered_at.push(now);
                }
                while standby.gateway.event().is_some() {
                    progress = true;
                }
            }
            let streaming = self.reverse_source.is_some_and(|s| now <= s.until + Duration::from_millis(300));
            while let Some(delivered) = self.edge.deliver(now, &mut buf) {
                progress = true;
                self.reverse.held.push(delivered.held);
                self.reverse.deliver(now, &buf, streaming);
            }
            while let Some(event) = self.edge.event() {
                progress = true;
                match event {
                    Event::LinkState { link, transition, .. } => {
                        self.edge_states.push((now - self.start, link, transition.to));
                    }
                    Event::HandshakeTrouble { trouble, .. } => self.edge_troubles.push((now - self.start, trouble)),
                    _ => {}
                }
            }
            while let Some(event) = self.gateway.event() {
                progress = true;
                if let Event::LinkState { link, transition, .. } = event {
                    self.gateway_states.push((now - self.start, link, transition.to));
                }
            }
            if !progress {
                break;
            }
        }
        self.buf = buf;
    }

    /// The largest gap between deliveries within `[from, to]` seconds.
    pub fn max_gap_between(&self, from: f64, to: f64) -> Duration {
        let (from, to) = (self.at(from), self.at(to));
        let mut times: Vec<Instant> =
            self.sink.delivered_at.iter().flatten().copied().filter(|t| *t >= from && *t <= to).collect();
        times.sort_unstable();
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::ZERO)
    }
}

/// How long the links run before a scenario's stream starts (the lab's tunnel is up first).
pub const WARM_UP: f64 = 1.0;

/// An iperf3 datagram's Ethernet frame: its payload with UDP (8), IPv4 (20) and Ethernet (14)
/// headers.
const FRAME: usize = scenario::DATAGRAM + 42;

/// A typed scenario's simulation, ready to run: its links, its stream (iperf3's frames from
/// `WARM_UP`), its timeline shifted by `WARM_UP`, and its metered links. A test may add to its
/// timeline before running it.
///
/// # Errors
/// As `simulate`.
pub fn scenario_sim(scenario: &Scenario, seed: u64) -> Result<Sim, String> {
    prepare(scenario, seed).map(|prepared| prepared.sim)
}

/// A scenario's simulation ready to run, with what `simulate` reads of the scenario to report it.
struct Prepared {
    sim: Sim,
    profiles: [Profile; 3],
    /// The stream's length, seconds.
    secs: u32,
}

fn prepare(scenario: &Scenario, seed: u64) -> Result<Prepared, String> {
    if let Some(why) = scenario.unsimulated() {
        return Err(why);
    }
    let Stream::Udp { mbps, secs } = scenario.stream else {
        return Err("not a UDP stream".to_owned());
    };
    let profiles = scenario.profiles().map_err(|e| e.to_string())?;
    let config = SessionConfig {
        mode: scenario.mode,
        latency_budget: Duration::from_millis(scenario.budget_ms),
        fec: scenario.fec,
        ..SessionConfig::default()
    };
    let mut sim = Sim::unrated(seed, config, &profiles);
    // iperf3's rate is of its payload; the frames on the wire are larger.
    sim.stream(WARM_UP, WARM_UP + f64::from(secs), mbps * FRAME as f64 / scenario::DATAGRAM as f64, FRAME);
    for &(t, action) in scenario.timeline {
        let at = WARM_UP + t;
        match action {
            scenario::Action::CarrierDown(l) => sim.schedule(at, Action::CarrierDown(l)),
            scenario::Action::CarrierUp(l) => sim.schedule(at, Action::CarrierUp(l)),
            scenario::Action::Blackhole(l) => sim.schedule(at, Action::Blackhole(l)),
            scenario::Action::Restore(l) => sim.schedule(at, Action::Restore(l)),
            scenario::Action::Rebind(l) => sim.schedule(at, Action::Rebind(l)),
            scenario::Action::SetProfile(l, text) => {
                let profile = Profile::parse(text).map_err(|e| e.to_string())?;
                sim.schedule(at, Action::SetProfile(l, profile));
            }
            scenario::Action::Flap { link, times } => {
                for i in 0..times {
                    sim.schedule(at + 0.4 * f64::from(i), Action::Blackhole(link));
                    sim.schedule(at + 0.4 * f64::from(i) + 0.2, Action::Restore(link));
                }
            }
            scenario::Action::KillGateway
            | scenario::Action::KillMaster
            | scenario::Action::CutFirstGateway
            | scenario::Action::RestoreFirstGateway
            | scenario::Action::DrainFirstGateway
            | scenario::Action::Attack => {
                return Err(format!("{action:?}"));
            }
        }
    }
    for (i, _) in scenario.metered.iter().enumerate().filter(|(_, m)| **m) {
        sim.edge.set_link_spend(LinkId::new(i as u8), braid_engine::scheduler::Spend::Metered);
    }
    Ok(Prepared { sim, profiles, secs })
}

/// Runs a scenario in simulation with a seed and returns its figures, named as the lab names
/// them; an error says why the simulator cannot run it.
///
/// # Errors
/// The scenario's stream or an action the simulator does not model, or a profile that does not
/// parse.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Figures, String> {
    let Prepared { mut sim, profiles, secs } = prepare(scenario, seed)?;
    let end = WARM_UP + f64::from(secs);
    let flaps = scenario.timeline.iter().filter_map(|&(t, action)| match action {
        scenario::Action::Flap { link, times } => Some((link, WARM_UP + t, WARM_UP + t + 0.4 * f64::from(times))),
        _ => None,
    });
    // Run in stretches, to read the edge's packet count on a flapping link at each end.
    let mut flap_packets = 0;
    for (link, from, until) in flaps {
        let tx = |sim: &Sim| sim.edge.link_stats(LinkId::new(link)).map_or(0, |s| s.tx_packets);
        sim.run_until(from);
        let before = tx(&sim);
        sim.run_until(until);
        flap_packets += tx(&sim) - before;
    }
    // The bitrate feed, as the edge would push it (its advice every 100 ms), and the uplinks'
    // bytes sent every second.
    let (mut feed, mut bytes) = (Vec::new(), Vec::new());
    if scenario.feed || scenario.metered.contains(&true) {
        for step in 0..=secs * 10 {
            let t = WARM_UP + f64::from(step) / 10.0;
            sim.run_until(t);
            if scenario.feed {
                feed.push(format!("{:.3}:{}", t - WARM_UP, sim.edge.safe_bitrate()));
            }
            if step % 10 == 0 {
                let tx = |l: u8| sim.edge.link_stats(LinkId::new(l)).map_or(0, |s| s.tx_bytes).to_string();
                bytes.push(format!("{:.3}:{}", t - WARM_UP, (0..3).map(tx).collect::<Vec<_>>().join(":")));
            }
        }
    }
    sim.run_until(end + 1.0);
    let r = sim.report();
    let mut figures = Figures::default();
    figures.set("scenario", scenario.name);
    figures.set("mode", scenario.mode.as_str());
    figures.set("seed", seed);
    figures.set("sent", r.sent);
    figures.set("lost", r.lost);
    figures.set("dup", r.duplicated);
    figures.set("reordered", r.out_of_order);
    figures.set("max_gap_ms", format!("{:.1}", ms(r.max_gap)));
    figures.set("owd_p50_ms", format!("{:.1}", ms(r.p50)));
    figures.set("owd_p99_ms", format!("{:.1}", ms(r.p99)));
    // The links' round trips as the lab pings them alone: twice their one-way delay.
    let rtts: Vec<String> = profiles.iter().map(|p| format!("{:.1}", 2.0 * ms(p.delay))).collect();
    figures.set("link_rtt_p50_ms", rtts.join(","));
    if !feed.is_empty() {
        figures.set("feed_samples", feed.join(","));
    }
    if scenario.metered.contains(&true) {
        figures.set("byte_samples", bytes.join(","));
    }
    if scenario.timeline.iter().any(|(_, a)| matches!(a, scenario::Action::Flap { .. })) {
        figures.set("flap_packets", flap_packets);
    }
    let unique = r.sent - r.lost;
    figures
        .set("goodput_mbps", format!("{:.2}", unique as f64 * scenario::DATAGRAM as f64 * 8.0 / f64::from(secs) / 1e6));
    let edge = sim.edge.stats();
    // Where losses went, named as the lab names them: the edge's drops by reason, the
    // gateway's frames given up (lost: a gap never filled; late: after its gap was released).
    let drops: Vec<String> =
        edge.drops.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{}:{n}", r.as_str())).collect();
    figures.set("edge_drops", if drops.is_empty() { "none".to_owned() } else { drops.join(",") });
    figures.set("edge_resent", edge.frames_retransmitted);
    figures.set("edge_naks_early", edge.naks_early);
    let gateway = sim.gateway.stats();
    figures.set("gw_lost", gateway.frames_lost);
    figures.set("gw_late", gateway.frames_late);
    figures.set("gw_nacked", gateway.frames_nacked);
    figures.set("gw_recovered", gateway.frames_recovered);
    if scenario.fec.is_some() {
        figures.set("gw_rebuilt", gateway.frames_rebuilt);
        figures.set("fec_pct", format!("{:.2}", edge.fec_bytes as f64 * 100.0 / edge.data_bytes_first.max(1) as f64));
    }
    if edge.data_bytes_first > 0 {
        figures.set("extra_pct", format!("{:.2}", edge.data_bytes_extra as f64 * 100.0 / edge.data_bytes_first as f64));
    }
    for w in scenario.windows {
        let (from, to) = (sim.at(WARM_UP + w.from), sim.at(WARM_UP + w.to));
        figures.set(&format!("gap_after_{}_ms", w.name), format!("{:.0}", ms(sim.stall_beginning_between(from, to))));
        figures.set(&format!("lost_after_{}", w.name), sim.lost_between(from, to));
        let sent = sim.sink.sent_at.iter().filter(|&&at| at >= from && at < to).count();
        figures.set(&format!("sent_after_{}", w.name), sent);
        if let Some(link) = w.link {
            let changes: Vec<(f64, &str)> = sim
                .edge_states
                .iter()
                .filter(|(_, l, _)| l.get() == link)
                .map(|(t, _, s)| (t.as_secs_f64() - WARM_UP, s.as_str()))
                .collect();
            let back = scenario::back_after(&changes, w.to, f64::from(secs) + 1.0);
            figures.set(&format!("back_after_{}_ms", w.name), format!("{back:.0}"));
            if let Some(down) = scenario::down_after(&changes, w.from, w.to) {
                figures.set(&format!("down_after_{}_ms", w.name), format!("{down:.0}"));
            }
        }
    }
    figures.derive(scenario);
    Ok(figures)
}

impl<E: End, G: End> Sim<E, G> {
    /// The longest time between two consecutive deliveries, the first of them within
    /// `[from, to)`: the stall an event in that stretch caused (as the lab measures it).
    pub fn stall_beginning_between(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self.sink.delivered_at.iter().flatten().copied().collect();
        times.sort_unstable();
        times.windows(2).filter(|w| w[0] >= from && w[0] < to).map(|w| w[1] - w[0]).max().unwrap_or(Duration::ZERO)
    }
}
