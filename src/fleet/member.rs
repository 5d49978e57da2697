//! A gateway's membership of the fleet, on etcd: it registers under `PREFIX/gateways/NAME` with
//! a lease, keeps the lease alive, publishes its load, and watches the other members and the
//! fleet's allowlist (`PREFIX/edges/NAME`).
//!
//! etcd is control plane only. The agent runs on a thread of its own with its own runtime; the
//! data plane hands it a load report through a `watch` channel (never blocking) and receives the
//! fleet's allowlist on a channel it polls with everything else. When etcd is unreachable the
//! gateway forwards and admits exactly as before: the agent says so (log, `/status`,
//! `/metrics`) and connects again, registering anew, when etcd returns.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, PutOptions, TlsOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::FleetSettings;
use crate::keys::PublicKey;

/// How long one etcd request may take before etcd counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the agent waits before connecting again after losing etcd.
const RETRY: Duration = Duration::from_secs(1);

/// What a member publishes about itself, as JSON under `PREFIX/gateways/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its name, unique in the fleet.
    pub name: String,
    /// Its zone label.
    pub zone: String,
    /// The address edges reach it at.
    pub address: String,
    /// Its public key (base64).
    pub public_key: String,
    /// The Mbit/s it offers.
    pub capacity_mbps: f64,
    /// The edges it offers to carry.
    pub capacity_edges: u32,
    /// Its edges with a live session that carries their stream.
    pub edges: u32,
    /// Their names.
    #[serde(default)]
    pub carrying: Vec<String>,
    /// The edges that keep a session with it as their standby.
    #[serde(default)]
    pub standby_for: Vec<String>,
    /// Mbit/s it receives from its edges.
    pub load_mbps_in: f64,
    /// Mbit/s it sends to its edges.
    pub load_mbps_out: f64,
    /// The share of one core its process used over the last report (0-1 per core).
    pub cpu: f64,
    /// It is being drained.
    pub draining: bool,
    /// Since when (Unix ms) it has been a member without a break: a member takes edges only
    /// after the placement hold-down.
    #[serde(default)]
    pub since_unix_ms: u64,
}

/// An edge admitted by the fleet, as JSON under `PREFIX/edges/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The edge's public key (base64).
    pub public_key: String,
    /// The bridge its TAP joins on every gateway, if not the gateways' `fleet.edge_bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// An edge of the fleet's allowlist, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEdge {
    /// Its name.
    pub name: String,
    /// Its key.
    pub public_key: PublicKey,
    /// The bridge its TAP joins, if its record names one.
    pub bridge: Option<String>,
}

/// What the data plane reports of its load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Load {
    /// Edges whose stream it carries.
    pub carrying: Vec<String>,
    /// Edges that keep it as their standby.
    pub standby_for: Vec<String>,
    /// Mbit/s received from edges.
    pub mbps_in: f64,
    /// Mbit/s sent to edges.
    pub mbps_out: f64,
    /// Being drained.
    pub draining: bool,
}

/// The fleet as this member last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// This member's name.
    pub name: String,
    /// Whether etcd answers now.
    pub etcd_reachable: bool,
    /// Why etcd last failed, if it did.
    pub etcd_error: Option<String>,
    /// Times the agent lost etcd.
    pub etcd_outages: u64,
    /// The members registered now, by name (this one included once registered).
    pub members: Vec<MemberRecord>,
    /// Edges on the fleet's allowlist.
    pub edges: usize,
    /// Records under the prefix that could not be read, skipped.
    pub bad_records: usize,
}

/// The data plane's end of the agent.
#[derive(Debug)]
pub struct Agent {
    /// The fleet as last seen.
    pub view: watch::Receiver<FleetView>,
    /// Where the data plane reports its load.
    pub load: watch::Sender<Load>,
    /// The fleet's allowlist, sent whole each time it changes.
    pub edges: mpsc::UnboundedReceiver<Vec<FleetEdge>>,
}

/// Starts the agent on a thread of its own.
///
/// # Errors
/// If the thread or its runtime cannot be started.
pub fn start(settings: FleetSettings, public_key: PublicKey) -> std::io::Result<Agent> {
    let (view_tx, view) = watch::channel(FleetView { name: settings.name.clone(), ..FleetView::default() });
    let (load, load_rx) = watch::channel(Load::default());
    let (edges_tx, edges) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("braid-fleet".into()).spawn(move || {
        runtime.block_on(run(settings, public_key, view_tx, load_rx, edges_tx));
    })?;
    Ok(Agent { view, load, edges })
}

/// The agent's state across its etcd sessions.
struct State {
    settings: FleetSettings,
    public_key: PublicKey,
    view: watch::Sender<FleetView>,
    load: watch::Receiver<Load>,
    edges: mpsc::UnboundedSender<Vec<FleetEdge>>,
    sent_edges: Option<Vec<FleetEdge>>,
    cpu: CpuMeter,
    /// The current session registered and read the fleet.
    healthy: bool,
    /// Since when (Unix ms) this member has been registered without a break.
    since_unix_ms: Option<u64>,
    /// The etcd member tried first: the last that answered, or the one after it when its
    /// session broke.
    member: usize,
}

async fn run(
    settings: FleetSettings,
    public_key: PublicKey,
    view: watch::Sender<FleetView>,
    load: watch::Receiver<Load>,
    edges: mpsc::UnboundedSender<Vec<FleetEdge>>,
) {
    let mut state = State {
        settings,
        public_key,
        view,
        load,
        edges,
        sent_edges: None,
        cpu: CpuMeter::default(),
        healthy: false,
        member: 0,
        since_unix_ms: None,
    };
    loop {
        let error = state.session().await;
        if state.edges.is_closed() {
            return;
        }
        // A session that was registered and watching broke (its etcd member died, say): another
        // member may answer at once, and etcd counts as unreachable only if none does.
        if std::mem::take(&mut state.healthy) {
            info!(%error, "etcd session lost; connecting again");
            state.member += 1;
            continue;
        }
        let was_reachable = state.view.borrow().etcd_reachable;
        // Past a lease's life, the registration has lapsed: the member starts afresh.
        state.since_unix_ms = None;
        state.view.send_modify(|v| {
            v.etcd_reachable = false;
            v.etcd_outages += u64::from(was_reachable);
            v.etcd_error = Some(error.clone());
        });
        if was_reachable {
            warn!(%error, "etcd unreachable: the gateway keeps its edges and sessions, and stops placing");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Bounds an etcd request in time.
async fn timed<T>(what: &str, request: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// Connects to one member of the etcd cluster that answers, trying them in turn from the
/// `first`-th: one client per member, so that a dead member is left for the next at once
/// (a client balancing over all of them kept sending to a dead one). Returns the client and the
/// member's position.
///
/// # Errors
/// What the last member tried (or the connection) said.
pub async fn connect(settings: &FleetSettings, first: usize) -> Result<(Client, usize), String> {
    let mut last = String::from("no etcd endpoint configured");
    let count = settings.endpoints.len();
    for i in (0..count).map(|k| (first + k) % count) {
        let endpoint = &settings.endpoints[i];
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &settings.auth {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &settings.tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        let attempt = async {
            let mut client =
                timed(&format!("connecting to etcd at {endpoint}"), Client::connect([endpoint], Some(options))).await?;
            timed(&format!("asking etcd at {endpoint}"), client.status()).await?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return Ok((client, i)),
            Err(error) => last = error,
        }
    }
    Err(last)
}

impl State {
    /// One session with etcd: register, then keep the lease, the record and the view fresh until
    /// something fails; returns why.
    async fn session(&mut self) -> String {
        match self.try_session().await {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }

    async fn try_session(&mut self) -> Result<std::convert::Infallible, String> {
        let ttl = self.settings.lease_ttl;
        let (mut client, member) = connect(&self.settings, self.member).await?;
        self.member = member;
        let lease = timed("granting a lease", client.lease_grant(ttl.as_secs() as i64, None)).await?.id();
        let key = format!("{}/gateways/{}", self.settings.prefix, self.settings.name);
        let mut published = self.record();
        let put = |record: &MemberRecord| serde_json::to_string(record).unwrap_or_default();
        timed("registering", client.put(key.as_str(), put(&published), Some(PutOptions::new().with_lease(lease))))
            .await?;
        let (mut keeper, mut answers) = timed("keeping the lease", client.lease_keep_alive(lease)).await?;
        let prefix = format!("{}/", self.settings.prefix);
        let mut watch =
            timed("watching the fleet", client.watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))).await?;
        self.refresh(&mut client, &prefix).await?;
        self.healthy = true;
        info!(name = %self.settings.name, endpoints = ?self.settings.endpoints, "registered in the fleet");
        let mut tick = tokio::time::interval(ttl / 3);
        let mut last_answer = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if last_answer.elapsed() > ttl {
                        return Err(format!("the lease went unanswered for {ttl:?}"));
                    }
                    timed("keeping the lease", keeper.keep_alive()).await?;
                    let record = self.record();
                    if record != published {
                        timed("reporting", client.put(key.as_str(), put(&record), Some(PutOptions::new().with_lease(lease)))).await?;
                        published = record;
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() > 0 => last_answer = tokio::time::Instant::now(),
                    Ok(Some(_)) => return Err("the lease expired".into()),
                    Ok(None) => return Err("the lease's stream ended".into()),
                    Err(error) => return Err(format!("keeping the lease: {error}")),
                },
                change = watch.message() => match change {
                    Ok(Some(response)) if !response.canceled() => self.refresh(&mut client, &prefix).await?,
                    Ok(Some(response)) => return Err(format!("the watch was cancelled: {}", response.cancel_reason())),
                    Ok(None) => return Err("the watch ended".into()),
                    Err(error) => return Err(format!("watching: {error}")),
                },
            }
        }
    }

    fn record(&mut self) -> MemberRecord {
        let load = self.load.borrow().clone();
        let cpu = self.cpu.measure();
        let s = &self.settings;
        MemberRecord {
            name: s.name.clone(),
            zone: s.zone.clone(),
            address: s.address.to_string(),
            public_key: self.public_key.to_base64(),
            capacity_mbps: s.capacity_mbps,
            capacity_edges: s.capacity_edges,
            edges: load.carrying.len() as u32,
            carrying: load.carrying,
            standby_for: load.standby_for,
            load_mbps_in: round(load.mbps_in),
            load_mbps_out: round(load.mbps_out),
            cpu: round(cpu),
            draining: load.draining,
            since_unix_ms: *self.since_unix_ms.get_or_insert_with(crate::io::unix_millis),
        }
    }

    /// Reads the whole prefix again and publishes what changed. (A change notification, not
    /// its events, drives this: the records are few, and a fresh read cannot miss one.)
    async fn refresh(&mut self, client: &mut Client, prefix: &str) -> Result<(), String> {
        let response = timed("reading the fleet", client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
        let parsed = parse_prefix(prefix, response.kvs().iter().map(|kv| (kv.key(), kv.value())));
        if self.sent_edges.as_ref() != Some(&parsed.edges) {
            info!(edges = parsed.edges.len(), "the fleet's allowlist changed");
            let _ = self.edges.send(parsed.edges.clone());
            self.sent_edges = Some(parsed.edges.clone());
        }
        self.view.send_modify(|v| {
            v.etcd_reachable = true;
            v.etcd_error = None;
            v.members = parsed.members;
            v.edges = parsed.edges.len();
            v.bad_records = parsed.bad;
        });
        Ok(())
    }
}

/// The process's CPU use between two calls, in cores, from `/proc/self/stat` (read on the
/// agent's thread, never the data plane's).
#[derive(Debug, Default)]
struct CpuMeter {
    last: Option<(tokio::time::Instant, u64)>,
    share: f64,
}

/// Linux's USER_HZ, the unit of `/proc/self/stat`'s times, on every architecture braid builds for.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuMeter {
    fn measure(&mut self) -> f64 {
        let Some(ticks) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| process_ticks(&s)) else {
            return self.share;
        };
        let now = tokio::time::Instant::now();
        if let Some((at, before)) = self.last {
            let secs = now.duration_since(at).as_secs_f64();
            // Shorter than a few ticks, the share is noise: keep the last.
            if secs >= 0.5 {
                self.share = ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND / secs;
                self.last = Some((now, ticks));
            }
        } else {
            self.last = Some((now, ticks));
        }
        self.share
    }
}

/// utime + stime from `/proc/self/stat` (fields 14 and 15, counted after the command's closing
/// parenthesis, since the command may hold spaces).
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What the keys under the prefix hold.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// The members, by name.
    pub members: Vec<MemberRecord>,
    /// The allowlist, by name.
    pub edges: Vec<FleetEdge>,
    /// Records skipped: not JSON of their kind, a bad name or key, a key used twice.
    pub bad: usize,
}

/// Reads the fleet's records from `(key, value)` pairs under `prefix` (with its trailing '/').
/// Nothing in them is trusted: a record that does not parse is skipped and counted.
pub fn parse_prefix<'a>(prefix: &str, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Parsed {
    let mut members = BTreeMap::new();
    let mut edges: BTreeMap<String, FleetEdge> = BTreeMap::new();
    let mut bad = 0;
    for (key, value) in pairs {
        let Some(rest) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(prefix)) else {
            bad += 1;
            continue;
        };
        let named = |kind: &str| rest.strip_prefix(kind).filter(|n| crate::config::is_fleet_name(n));
        if let Some(name) = named("gateways/") {
            match serde_json::from_slice::<MemberRecord>(value) {
                Ok(record) if record.name == name => {
                    members.insert(name.to_owned(), record);
                }
                _ => bad += 1,
            }
        } else if let Some(name) = named("edges/") {
            let record = serde_json::from_slice::<EdgeRecord>(value).ok();
            let key = record.as_ref().and_then(|r| PublicKey::from_base64(&r.public_key).ok());
            let bridge_ok =
                record.as_ref().is_some_and(|r| r.bridge.as_deref().is_none_or(crate::config::is_interface_name));
            match (record, key) {
                (Some(record), Some(public_key))
                    if bridge_ok && !edges.values().any(|e| e.public_key == public_key) =>
                {
                    edges.insert(
                        name.to_owned(),
                        FleetEdge { name: name.to_owned(), public_key, bridge: record.bridge },
                    );
                }
                _ => bad += 1,
            }
        } else {
            bad += 1;
        }
    }
    Parsed { members: members.into_values().collect(), edges: edges.into_values().collect(), bad }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "RznYx4+VZSFljYPltjpxHPm793q+ZuATND43ueCelOQ=";

    #[test]
    fn process_ticks_are_read_past_a_command_with_spaces() {
        let stat = "42 (braid gw) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(process_ticks(stat), Some(325));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn records_that_do_not_parse_are_skipped_and_counted() {
        let edge = format!("{{\"public_key\":\"{KEY}\"}}");
        let pairs: Vec<(String, String)> = vec![
            ("/braid/edges/van-1".into(), edge.clone()),
            ("/braid/edges/van-2".into(), edge),
            ("/braid/edges/bad key".into(), format!("{{\"public_key\":\"{KEY}\"}}")),
            ("/braid/edges/van-3".into(), "{\"public_key\":\"short\"}".into()),
            ("/braid/edges/van-4".into(), format!("{{\"public_key\":\"{KEY}\",\"bridge\":\"a/b\"}}")),
            ("/braid/gateways/gw1".into(), "not json".into()),
            ("/braid/other".into(), "{}".into()),
        ];
        let parsed = parse_prefix("/braid/", pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        assert_eq!(parsed.edges.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["van-1"]);
        assert_eq!(parsed.bad, 6, "van-2 reuses van-1's key; the rest do not parse: {parsed:?}");
        assert!(parsed.members.is_empty());
    }
}
