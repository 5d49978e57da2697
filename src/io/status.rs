//! The status snapshot: what `/status`, `/metrics`, the dashboard and `braid-* status` show.
//!
//! The driver owns a [`Recorder`] per edge. It sees every delivered frame (for the reorder hold
//! histogram, a bucket increment and no lock) and every engine event (the link-state log and the
//! last [`TRANSITION_HISTORY`] changes). Every [`SNAPSHOT_INTERVAL`] the driver builds a
//! [`Status`] from the engine's accessors and the recorders and publishes it on a [`Board`]; the
//! HTTP thread only ever reads the latest published snapshot. So the data path takes no lock per
//! packet and serving a client costs the driver nothing.
//!
//! The JSON form is schema version [`SCHEMA_VERSION`], documented in `docs/status.schema.json`.
//! Version 2 is a superset of version 1: every v1 field is still there with its meaning.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::IoError;
use crate::endpoint::edge::EdgeStats;
use crate::endpoint::gateway::GatewayStats;
use crate::session::{Event, Session};
use crate::stats::{Counters, DropCounts, LinkStats, SessionStats};
use crate::{LinkId, LinkState, MAX_LINKS};

/// The schema version of the JSON snapshot.
pub const SCHEMA_VERSION: u32 = 2;
/// How often the driver publishes a snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);
/// How many link state changes each edge keeps for `/status`.
pub const TRANSITION_HISTORY: usize = 32;
/// Bitrates and stream shares are measured over at least this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The upper bounds of the reorder hold histogram's buckets, in seconds (plus `+Inf`).
pub const HOLD_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// One snapshot of a running daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// When the snapshot was taken, Unix milliseconds.
    pub time_unix_ms: u64,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// The role and what is particular to it.
    #[serde(flatten)]
    pub body: Body,
}

/// What an edge or a gateway reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Body {
    /// `braid-edge`: itself.
    Edge(Box<EdgeBody>),
    /// `braid-gateway`: every allowed edge.
    Gateway(Box<GatewayBody>),
}

/// An edge's own report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeBody {
    /// The edge, its session and its links.
    #[serde(flatten)]
    pub edge: EdgeView,
    /// The edge's own counters (handshakes, cookies), each under its name.
    #[serde(flatten)]
    pub counters: Flat<EdgeStats>,
    /// Drops outside the session.
    pub drops: u64,
    /// Drops outside the session, by reason (non-zero ones).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Each gateway the edge is configured with, in priority order.
    pub gateways: Vec<GatewayView>,
}

/// One of an edge's gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// Its address.
    pub address: String,
    /// `active` (it carries the stream), `standby` (a session answers on some uplink), `down`
    /// (its session answers on none) or `connecting` (no handshake has completed yet).
    pub role: String,
    /// Each uplink's state toward it, by uplink name.
    pub links: BTreeMap<String, String>,
}

impl GatewayView {
    /// The view of a gateway at `address`, with its session if any.
    pub fn of<'a>(
        address: SocketAddr,
        session: Option<&Session>,
        active: bool,
        name: impl Fn(LinkId) -> &'a str,
    ) -> Self {
        let role = match session {
            _ if active => "active",
            None => "connecting",
            Some(s) if s.any_link_usable() => "standby",
            Some(_) => "down",
        };
        let links = session
            .map(|s| {
                s.links().filter_map(|l| Some((name(l).to_owned(), s.link_state(l)?.as_str().to_owned()))).collect()
            })
            .unwrap_or_default();
        Self { address: address.to_string(), role: role.to_owned(), links }
    }
}

/// A gateway's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayBody {
    /// The gateway's own counters (handshakes, cookies, sessions started), each under its name.
    #[serde(flatten)]
    pub counters: Flat<GatewayStats>,
    /// Edges with a live session now.
    pub sessions: u64,
    /// Whether the gateway is being drained (`braid-gateway drain`).
    pub draining: bool,
    /// Drops outside any session.
    pub drops: u64,
    /// Drops outside any session, by reason (non-zero ones).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Every allowed edge, in allowlist order.
    pub edges: Vec<EdgeView>,
    /// The fleet as this gateway sees it, when it is a member of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::member::FleetView>,
}

/// One edge: its session (if any), whether its stream is safe, and its recent link changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    /// The edge's name.
    pub name: String,
    /// The session, once a handshake has completed.
    pub session: Option<SessionView>,
    /// Whether the stream would survive losing a link.
    pub safety: Safety,
    /// The last link state changes, oldest first.
    pub transitions: Vec<TransitionView>,
    /// Edge only: why its handshakes went unanswered the last time they did, and what to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_problem: Option<HandshakeProblem>,
}

/// Why an edge's handshakes go unanswered, as far as it can tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandshakeProblem {
    /// `no_reply`, `gateway_under_load`, `port_unreachable`, `host_unreachable` or
    /// `wrong_gateway_key`.
    pub cause: String,
    /// What it means and what to check.
    pub advice: String,
    /// The gateway's address.
    pub gateway: String,
    /// The uplinks the initiations went out on.
    pub uplinks: Vec<String>,
    /// Seconds since the first unanswered initiation.
    pub waited_s: f64,
    /// Initiations sent since.
    pub attempts: u64,
    /// When it was last reported, Unix milliseconds.
    pub time_unix_ms: u64,
    /// Whether it still stands: false once a handshake has completed since.
    pub ongoing: bool,
}

/// A session's counters and links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// `auto`, `redundant`, `active-backup` or `bond`.
    pub mode: String,
    /// The session's counters ([`SessionStats`]), each under its name.
    #[serde(flatten)]
    pub counters: Flat<SessionStats>,
    /// Drops, all reasons.
    pub drops: u64,
    /// Drops by reason (non-zero ones).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// The reorder buffer's current hold limit, in milliseconds.
    pub reorder_hold_ms: f64,
    /// The stream bitrate the links can carry now with the mode's protection, bits per second
    /// (what an encoder should stay under; `Session::safe_bitrate`).
    #[serde(default)]
    pub safe_bitrate_bps: u64,
    /// The links, in id order.
    pub links: Vec<LinkView>,
    /// How long delivered frames waited in the reorder buffer (not in the JSON; for metrics).
    #[serde(skip)]
    pub hold: HoldHistogram,
}

/// One link of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// The link id.
    pub id: u8,
    /// Its name (the uplink's at the edge; `linkN` at the gateway).
    pub name: String,
    /// `probing`, `up`, `degraded` or `down`.
    pub state: String,
    /// Smoothed RTT, once measured.
    pub rtt_ms: Option<f64>,
    /// Lowest RTT seen.
    pub min_rtt_ms: Option<f64>,
    /// Interarrival jitter of the peer's packets.
    pub jitter_ms: f64,
    /// Loss from us to the peer (0..=1).
    pub tx_loss: f64,
    /// Loss from the peer to us (0..=1).
    pub rx_loss: f64,
    /// The link's counters ([`LinkStats`]), each under its name.
    #[serde(flatten)]
    pub counters: Flat<LinkStats>,
    /// Copies received after another link had delivered the frame.
    pub duplicates: u64,
    /// Bits per second sent, over the last [`RATE_WINDOW`].
    pub tx_bps: f64,
    /// Bits per second received, over the last [`RATE_WINDOW`].
    pub rx_bps: f64,
    /// Share of the frames handed in that this link carried, over the last [`RATE_WINDOW`]
    /// (each link carries 1.0 in redundant mode; the shares sum to 1 in bond mode).
    pub tx_share: f64,
    /// Share of the delivered frames this link delivered first, over the last [`RATE_WINDOW`].
    pub rx_share: f64,
    /// State changes since start.
    pub state_changes: u64,
    /// The largest datagram (UDP payload) the link sends now: its path MTU as probed, less IP
    /// and UDP. Frames larger than it go in pieces.
    pub max_datagram: u64,
    /// Whether the link's path-MTU search is over (else `max_datagram` is where it stands).
    pub max_datagram_settled: bool,
    /// The sending rate the link's congestion control allows, bits per second.
    pub rate_bps: u64,
    /// Whether `rate_bps` rests on a delivery rate the peer measured recently (false on an idle
    /// link: the controller's starting or last value).
    #[serde(default)]
    pub rate_measured: bool,
    /// Edge only: whether the uplink is metered (paid by the byte).
    #[serde(default)]
    pub metered: bool,
    /// Edge only, metered uplinks: bytes both ways in the current cap period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_bytes: Option<u64>,
    /// Edge only: the uplink's data cap, bytes per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_bytes: Option<u64>,
    /// Edge only: `day` or `month`, with a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_period: Option<String>,
    /// What the scheduler may spend the link on: `free`, `metered` or `backup_only` (past its
    /// cap: used only while no other link is usable).
    #[serde(default)]
    pub spend: String,
}

/// Whether the stream survives the loss of one more link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safety {
    /// `safe`: two or more links usable, so losing any one leaves the stream flowing;
    /// `at_risk`: one usable link; `down`: none, or no session.
    pub level: String,
    /// Links up or degraded.
    pub usable_links: u32,
    /// Links the session has.
    pub links: u32,
    /// The level in words.
    pub reason: String,
}

/// One link state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionView {
    /// When, Unix milliseconds.
    pub time_unix_ms: u64,
    /// The link id.
    pub link_id: u8,
    /// The link's name.
    pub link: String,
    /// The old state.
    pub from: String,
    /// The new state.
    pub to: String,
    /// Why, e.g. `carrier_lost`, `probes_missed`, `probes_answered`.
    pub reason: String,
    /// Smoothed RTT at the time.
    pub rtt_ms: Option<f64>,
    /// Loss to the peer at the time.
    pub tx_loss: f64,
    /// Loss from the peer at the time.
    pub rx_loss: f64,
}

/// Reorder hold times, in [`HOLD_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HoldHistogram {
    /// Frames per bucket (not cumulative); the last one is `+Inf`.
    pub counts: [u64; HOLD_BUCKETS.len() + 1],
    /// The sum of all hold times, in seconds.
    pub sum: f64,
}

impl HoldHistogram {
    /// Counts one frame that waited `held`.
    pub fn observe(&mut self, held: Duration) {
        let seconds = held.as_secs_f64();
        let bucket = HOLD_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(HOLD_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    /// All frames counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count)` per bucket, ending with `+Inf` (the encoder accumulates them).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        HOLD_BUCKETS.iter().copied().chain([f64::INFINITY]).zip(self.counts).collect()
    }

    /// `(upper bound, cumulative count)` per bucket, ending with `+Inf`, as Prometheus shows them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        HOLD_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .map(|(bound, n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }
}

impl Safety {
    /// The safety of a session with these link states (none: no session).
    pub fn of(states: Option<&[LinkState]>) -> Self {
        let Some(states) = states else {
            return Self { level: "down".into(), usable_links: 0, links: 0, reason: "no session yet".into() };
        };
        let usable = states.iter().filter(|s| s.is_usable()).count() as u32;
        let links = states.len() as u32;
        let (level, reason) = match usable {
            0 => ("down", format!("no usable link of {links}")),
            1 => ("at_risk", format!("1 of {links} links usable: losing it stops the stream")),
            n => ("safe", format!("{n} of {links} links usable: the stream survives losing any one")),
        };
        Self { level: level.into(), usable_links: usable, links, reason }
    }
}

impl Status {
    /// Every edge in the snapshot: the edge itself, or all of a gateway's.
    pub fn edges(&self) -> Vec<&EdgeView> {
        match &self.body {
            Body::Edge(edge) => vec![&edge.edge],
            Body::Gateway(gateway) => gateway.edges.iter().collect(),
        }
    }

    /// `edge` or `gateway`.
    pub const fn role(&self) -> &'static str {
        match self.body {
            Body::Edge(_) => "edge",
            Body::Gateway(_) => "gateway",
        }
    }
}

/// Where the driver publishes snapshots and the HTTP thread reads them.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<Option<Arc<Status>>>>);

impl Board {
    /// Replaces the published snapshot (a pointer swap under the lock).
    pub fn publish(&self, status: Status) {
        let status = Arc::new(status);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(status);
        }
    }

    /// The latest snapshot, if one was published.
    pub fn latest(&self) -> Option<Arc<Status>> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// What the driver remembers about one edge between snapshots.
#[derive(Debug)]
pub struct Recorder {
    transitions: VecDeque<TransitionView>,
    changes: [u64; MAX_LINKS],
    hold: HoldHistogram,
    /// Recent counters, oldest first, for rates and shares.
    history: VecDeque<Sample>,
    /// The handshake trouble last reported.
    problem: Option<HandshakeProblem>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    frames_in: u64,
    links: [LinkStats; MAX_LINKS],
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder with nothing recorded.
    pub fn new() -> Self {
        Self {
            transitions: VecDeque::with_capacity(TRANSITION_HISTORY),
            changes: [0; MAX_LINKS],
            hold: HoldHistogram::default(),
            history: VecDeque::new(),
            problem: None,
        }
    }

    /// Counts a delivered frame's reorder hold.
    pub fn on_delivered(&mut self, held: Duration) {
        self.hold.observe(held);
    }

    /// Records a link state change (other events are ignored).
    pub fn on_event(&mut self, time_unix_ms: u64, event: &Event, link_name: &str) {
        let Event::LinkState { link, transition, quality } = event else { return };
        if let Some(i) = link.index() {
            self.changes[i] += 1;
        }
        if self.transitions.len() == TRANSITION_HISTORY {
            self.transitions.pop_front();
        }
        self.transitions.push_back(TransitionView {
            time_unix_ms,
            link_id: link.get(),
            link: link_name.to_owned(),
            from: transition.from.as_str().into(),
            to: transition.to.as_str().into(),
            reason: transition.reason.as_str().into(),
            rtt_ms: quality.srtt.map(ms),
            tx_loss: quality.tx_loss,
            rx_loss: quality.rx_loss,
        });
    }

    /// Forgets the rate baseline of a session that was replaced (a restart): its counters start
    /// again from zero. The log and the hold histogram (a counter for Prometheus) go on.
    pub fn session_restarted(&mut self) {
        self.history.clear();
    }

    /// Records why handshakes go unanswered.
    pub fn on_handshake_problem(&mut self, problem: HandshakeProblem) {
        self.problem = Some(problem);
    }

    /// A handshake completed: the last problem no longer stands (it stays on view).
    pub fn handshake_completed(&mut self) {
        if let Some(problem) = self.problem.as_mut() {
            problem.ongoing = false;
        }
    }

    /// The edge as of `now`, named `name`, with its links named by `link_name`.
    pub fn view<'a>(
        &mut self,
        now: Instant,
        name: &str,
        session: Option<&Session>,
        link_name: impl Fn(LinkId) -> &'a str,
    ) -> EdgeView {
        let session = session.map(|s| self.session_view(now, s, &link_name));
        let states: Option<Vec<LinkState>> =
            session.as_ref().map(|s| s.links.iter().map(|l| state_of(&l.state)).collect());
        let mut safety = Safety::of(states.as_deref());
        if let (None, Some(problem)) = (&session, self.problem.as_ref().filter(|p| p.ongoing)) {
            safety.reason = format!("no session yet: {}", problem.advice);
        }
        EdgeView {
            name: name.to_owned(),
            safety,
            session,
            transitions: self.transitions.iter().cloned().collect(),
            handshake_problem: self.problem.clone(),
        }
    }

    fn session_view<'a>(
        &mut self,
        now: Instant,
        session: &Session,
        link_name: &impl Fn(LinkId) -> &'a str,
    ) -> SessionView {
        let stats = session.stats();
        let mut sample = Sample { at: now, frames_in: stats.frames_in, links: [LinkStats::default(); MAX_LINKS] };
        for link in session.links() {
            if let (Some(i), Some(counters)) = (link.index(), session.link_stats(link)) {
                sample.links[i] = counters;
            }
        }
        // The oldest sample at least RATE_WINDOW old (or the oldest there is) is the baseline.
        while self.history.len() > 1 && self.history[1].at + RATE_WINDOW <= now {
            self.history.pop_front();
        }
        let base = self.history.front().copied().filter(|b| b.at < now);
        self.history.push_back(sample);
        let elapsed = base.map_or(0.0, |b| now.saturating_duration_since(b.at).as_secs_f64());
        let delta =
            |f: fn(&LinkStats) -> u64, i: usize| base.map_or(0, |b| f(&sample.links[i]).saturating_sub(f(&b.links[i])));
        let frames_in = base.map_or(0, |b| sample.frames_in.saturating_sub(b.frames_in));
        let first_total: u64 = (0..MAX_LINKS).map(|i| delta(|s| s.rx_frames_first, i)).sum();
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let rate = |bytes: u64| if elapsed > 0.0 { bytes as f64 * 8.0 / elapsed } else { 0.0 };

        let links = session
            .links()
            .filter_map(|link| {
                let i = link.index()?;
                let (state, quality, counters) =
                    (session.link_state(link)?, session.link_quality(link)?, session.link_stats(link)?);
                let (max_datagram, max_datagram_settled) = session.link_path_mtu(link)?;
                let estimate = session.link_estimate(link);
                Some(LinkView {
                    id: link.get(),
                    name: link_name(link).to_owned(),
                    state: state.as_str().into(),
                    rtt_ms: quality.srtt.map(ms),
                    min_rtt_ms: quality.min_rtt.map(ms),
                    jitter_ms: ms(quality.jitter),
                    tx_loss: quality.tx_loss,
                    rx_loss: quality.rx_loss,
                    counters: Flat(counters),
                    duplicates: counters.rx_frames.saturating_sub(counters.rx_frames_first),
                    tx_bps: rate(delta(|s| s.tx_bytes, i)),
                    rx_bps: rate(delta(|s| s.rx_bytes, i)),
                    tx_share: ratio(delta(|s| s.tx_frames, i), frames_in),
                    rx_share: ratio(delta(|s| s.rx_frames_first, i), first_total),
                    state_changes: self.changes[i],
                    max_datagram: max_datagram as u64,
                    max_datagram_settled,
                    rate_bps: estimate.map_or(0, |e| e.rate_bps),
                    rate_measured: estimate.is_some_and(|e| e.delivery_bps.is_some()),
                    metered: false,
                    period_bytes: None,
                    cap_bytes: None,
                    cap_period: None,
                    spend: session.link_spend(link).unwrap_or_default().as_str().to_owned(),
                })
            })
            .collect();
        SessionView {
            mode: session.mode().as_str().into(),
            counters: Flat(stats),
            drops: stats.drops.total(),
            drops_by_reason: by_reason(&stats.drops),
            reorder_hold_ms: ms(session.reorder_hold()),
            safe_bitrate_bps: session.safe_bitrate(),
            links,
            hold: self.hold.clone(),
        }
    }
}

/// A set of engine counters in the status JSON: each counter is a key of the object it is
/// flattened into, named and ordered as declared ([`Counters::DEFS`]). Reading JSON, a missing
/// counter is zero and keys that are not counters are left to the other fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flat<T>(pub T);

impl<T> std::ops::Deref for Flat<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Counters> Serialize for Flat<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(T::DEFS.len()))?;
        for (def, value) in self.0.entries() {
            map.serialize_entry(def.name, &value)?;
        }
        map.end()
    }
}

impl<'de, T: Counters> Deserialize<'de> for Flat<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Counters> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Flat<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("counters, each a non-negative integer under its name")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut counters = T::default();
                while let Some(key) = map.next_key::<String>()? {
                    match T::position(&key) {
                        Some(i) => counters.set(i, map.next_value::<u64>()?),
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Flat(counters))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// The non-zero drop counts by name.
pub fn by_reason(drops: &DropCounts) -> BTreeMap<String, u64> {
    drops.iter().filter(|(_, n)| *n > 0).map(|(reason, n)| (reason.as_str().to_owned(), n)).collect()
}

fn state_of(name: &str) -> LinkState {
    match name {
        "up" => LinkState::Up,
        "degraded" => LinkState::Degraded,
        "probing" => LinkState::Probing,
        _ => LinkState::Down,
    }
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The driver's side of the endpoint while it is enabled: the board it publishes on, the
/// snapshot tick, and when the daemon started.
#[derive(Debug)]
pub struct Observer {
    /// Where snapshots go.
    pub board: Board,
    interval: tokio::time::Interval,
    started: Instant,
    started_unix_ms: u64,
}

impl Observer {
    /// An observer publishing on `board`, started at `now` (Unix time `now_unix_ms`).
    pub fn new(board: Board, now: Instant, now_unix_ms: u64) -> Self {
        let mut interval = tokio::time::interval(SNAPSHOT_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { board, interval, started: now, started_unix_ms: now_unix_ms }
    }

    /// A snapshot of `body` as of `now`.
    pub fn status(&self, now: Instant, body: Body) -> Status {
        let uptime = now.saturating_duration_since(self.started);
        Status {
            version: SCHEMA_VERSION,
            time_unix_ms: self.started_unix_ms + uptime.as_millis() as u64,
            uptime_s: (uptime.as_secs_f64() * 10.0).round() / 10.0,
            body,
        }
    }
}

/// Resolves at the next snapshot tick, or never when the endpoint is off.
pub async fn tick(observer: &mut Option<Observer>) {
    match observer {
        Some(observer) => {
            observer.interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What to ask a running daemon for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its access token, if it has one.
    pub token: Option<String>,
}

impl Endpoint {
    /// `GET path` from the daemon: the body of a 200 answer.
    ///
    /// # Errors
    /// [`IoError`] if nothing answers, or the answer is not 200 OK.
    pub fn get(&self, path: &str) -> Result<String, IoError> {
        let address = self.address;
        let what = || format!("reading {path} from {address} (is the daemon running?)");
        let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .map_err(|e| IoError::new(what(), e))?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| IoError::new(what(), e))?;
        stream.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| IoError::new(what(), e))?;
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).map_err(|e| IoError::new(what(), e))?;
        let mut answer = Vec::new();
        stream.take(16 << 20).read_to_end(&mut answer).map_err(|e| IoError::new(what(), e))?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status_line = head.lines().next().unwrap_or_default();
        if status_line.split_whitespace().nth(1) != Some("200") {
            let why = format!("the daemon answered {status_line:?}: {}", body.trim());
            return Err(IoError::new(what(), std::io::Error::other(why)));
        }
        // The server sends a Content-Length body; chunked encoding is not used for these.
        Ok(body.to_owned())
    }

    /// The daemon's snapshot, parsed.
    ///
    /// # Errors
    /// [`IoError`] if nothing answers or the answer is not a snapshot of this version.
    pub fn status(&self) -> Result<(String, Status), IoError> {
        let text = self.get("/status")?;
        let status: Status = serde_json::from_str(&text).map_err(|e| {
            IoError::new(format!("reading /status from {}", self.address), std::io::Error::other(e.to_string()))
        })?;
        Ok((text, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_times_fall_in_the_first_bucket_they_fit_and_accumulate() {
        let mut hold = HoldHistogram::default();
        hold.observe(Duration::ZERO);
        hold.observe(Duration::from_millis(3));
        hold.observe(Duration::from_secs(5));
        let cumulative = hold.cumulative();
        assert_eq!(cumulative.first(), Some(&(0.001, 1)));
        assert_eq!(cumulative[2], (0.005, 2));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(hold.count(), 3);
        assert!((hold.sum - 5.003).abs() < 1e-9);
    }

    #[test]
    fn a_stream_is_safe_with_two_usable_links_at_risk_with_one_and_down_with_none() {
        use LinkState::{Degraded, Down, Probing, Up};
        assert_eq!(Safety::of(Some(&[Up, Degraded, Down])).level, "safe");
        assert_eq!(Safety::of(Some(&[Up, Down, Probing])).level, "at_risk");
        assert_eq!(Safety::of(Some(&[Down, Probing])).level, "down");
        assert_eq!(Safety::of(None).level, "down");
        assert_eq!(Safety::of(Some(&[Up, Up, Down])).usable_links, 2);
    }
}
