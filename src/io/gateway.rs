//! The gateway's driver loop.

use std::future::poll_fn;
use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tun_rs::AsyncDevice;

use super::batch::{BatchSocket, poll_recv_any};
use super::driver::{self, Buffers};
use super::netlink::Netlink;
use super::status::{Body, EdgeView, Flat, GatewayBody, Observer, Recorder, Status, by_reason, tick};
use super::udp::{bind_listen_workers, register};
use super::workers::{self, Command, Crew, EdgesUpdate, PartLoad, Plant, Seat, link_name, poll_recv_taps};
use super::{IoError, now, os_seed, shutdown_signal, sleep_until, tap};
use crate::config::{FleetSettings, GatewaySettings, TapSettings, load_gateway};
use crate::endpoint::gateway::{EdgeEntry, Gateway, GatewayStats, PeerId, Shard, worker_of};
use crate::fleet::member::{self, Agent, FleetEdge, Load};
use crate::fleet::placement::Rules;
use crate::fleet::placer::{EdgeNow, Here, Placer};
use crate::stats::Counters;

enum Input {
    Shutdown(&'static str),
    Reload,
    Drain(bool),
    Timeout,
    Tap(usize, io::Result<usize>),
    Udp(io::Result<usize>),
    Worker(Command),
    WorkerFailed(usize, IoError),
    Snapshot,
    FleetEdges(Vec<FleetEdge>),
    FleetTick,
}

/// Runs a gateway until SIGINT or SIGTERM: worker 0 (which also answers the signals) on a
/// current-thread tokio runtime here, each other worker on a thread of its own
/// ([`super::workers`]). SIGHUP reloads the allowlist from the config file without disturbing
/// the other edges' sessions; SIGUSR1 starts a drain (edges with a standby gateway move their
/// streams there) and SIGUSR2 ends it. Its PID is written to its runtime directory, for
/// `braid-gateway drain`. The TAPs are removed on the way out.
///
/// # Errors
/// [`IoError`] if a socket, a TAP or the runtime cannot be set up.
pub fn run(settings: GatewaySettings) -> Result<(), IoError> {
    driver::run(settings.gateway.session.tuning, drive(settings))
}

/// TAPs opened for a worker to register, by allowlist position.
type Opened = Vec<Option<tun_rs::SyncDevice>>;

/// Opens the TAPs of the edges `new` says, for their workers to register.
async fn open_taps(
    settings: &[TapSettings],
    new: impl Fn(usize) -> bool,
    netlink: &Netlink,
) -> Result<Opened, IoError> {
    let mut taps = Vec::with_capacity(settings.len());
    for (slot, tap) in settings.iter().enumerate() {
        let opened = if new(slot) {
            Some(tap::open_unregistered(&tap.name, tap.mtu, tap.mac, tap.bridge.as_deref(), netlink).await?)
        } else {
            None
        };
        taps.push(opened);
    }
    Ok(taps)
}

/// Hands out TAPs just opened (by allowlist position) to the workers that own their edges:
/// worker 0's registered here, the others' in one list per worker.
fn deal_taps(
    opened: Vec<Option<tun_rs::SyncDevice>>,
    edges: &[EdgeEntry],
    settings: &[TapSettings],
    count: usize,
) -> Result<(Vec<Option<AsyncDevice>>, Vec<Opened>), IoError> {
    let mut others: Vec<Opened> =
        (1..count).map(|_| std::iter::repeat_with(|| None).take(opened.len()).collect()).collect();
    let mut own = Vec::with_capacity(opened.len());
    for (slot, device) in opened.into_iter().enumerate() {
        let owner = edges.get(slot).map_or(0, |e| worker_of(&e.public_key, count));
        match (device, owner) {
            (Some(device), 0) => own.push(Some(tap::register(&settings[slot].name, device)?)),
            (Some(device), owner) => {
                own.push(None);
                if let Some(place) = others.get_mut(owner - 1).and_then(|o| o.get_mut(slot)) {
                    *place = Some(device);
                }
            }
            (None, _) => own.push(None),
        }
    }
    Ok((own, others))
}

async fn drive(mut settings: GatewaySettings) -> Result<(), IoError> {
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| IoError::new("installing the SIGHUP handler", e))?;
    let mut drain =
        signal(SignalKind::user_defined1()).map_err(|e| IoError::new("installing the SIGUSR1 handler", e))?;
    let mut undrain =
        signal(SignalKind::user_defined2()).map_err(|e| IoError::new("installing the SIGUSR2 handler", e))?;
    let netlink = Netlink::open()?;
    let forget = netlink.forgetter();
    let count = settings.workers.count();
    let mut names: Vec<String> = settings.gateway.edges.iter().map(|e| e.name.clone()).collect();
    // Each listen address's sockets, one per worker; worker w takes the w-th of each.
    let mut bound: Vec<std::vec::IntoIter<socket2::Socket>> = settings
        .listen
        .iter()
        .map(|&a| bind_listen_workers(a, settings.nonlocal_bind, count).map(Vec::into_iter))
        .collect::<Result<_, _>>()?;
    let mut take_sockets = || bound.iter_mut().filter_map(Iterator::next).collect::<Vec<_>>();
    let sockets: Vec<Option<BatchSocket>> = take_sockets()
        .into_iter()
        .map(|s| register(s).and_then(BatchSocket::new).map(Some).map_err(|e| IoError::new("enabling batched I/O", e)))
        .collect::<Result<_, _>>()?;
    let opened = open_taps(&settings.taps, |_| true, &netlink).await?;
    let (mut taps, dealt) = deal_taps(opened, &settings.gateway.edges, &settings.taps, count)?;
    let mut observer = driver::observer(&settings.status, "gateway")?;
    let seats: Vec<Seat> = dealt
        .into_iter()
        .enumerate()
        .map(|(i, opened)| Seat {
            shard: Shard { worker: i + 1, count },
            config: settings.gateway.clone(),
            taps: settings.taps.clone(),
            sockets: take_sockets(),
            opened,
            observed: observer.is_some(),
            forget: forget.clone(),
        })
        .collect();
    let mut crew = Crew::start(seats)?;
    let mut gateway = Gateway::new(settings.gateway.clone(), now(), os_seed()?)
        .map_err(|e| IoError::new("starting the gateway", io::Error::other(e)))?;
    gateway.set_shard(Shard { worker: 0, count });
    // What the file says; what runs is it with the fleet's allowlist after its own edges.
    let mut file_settings = settings.clone();
    let mut fleet_edges: Vec<FleetEdge> = Vec::new();
    let mut fleet = settings.fleet.as_ref().map(|f| Fleet::start(f, gateway.public_key())).transpose()?;
    let mut fleet_tick = tokio::time::interval(FLEET_REPORT_INTERVAL);
    record_restart_only(&settings);
    record_pid();
    let mut recorders: Vec<Recorder> = names.iter().map(|_| Recorder::new()).collect();
    info!(listen = ?settings.listen, edges = names.len(), workers = count, public_key = %gateway.public_key(), "gateway running");

    let mut buffers = Buffers::default();
    let (mut tap_cursor, mut udp_cursor) = (0, 0);
    let outcome = loop {
        let deadline = gateway.poll_timeout().map(|(at, _)| at);
        let Buffers { tap: tap_buf, batch, .. } = &mut buffers;
        let input = tokio::select! {
            biased;
            signal = &mut shutdown => Input::Shutdown(signal),
            _ = hangup.recv() => Input::Reload,
            _ = drain.recv() => Input::Drain(true),
            _ = undrain.recv() => Input::Drain(false),
            Some((worker, error)) = crew.failures.recv() => Input::WorkerFailed(worker, error),
            Some(command) = crew.inbox.recv() => Input::Worker(command),
            () = sleep_until(deadline) => Input::Timeout,
            () = tick(&mut observer) => Input::Snapshot,
            Some(edges) = fleet_allowlist(&mut fleet) => Input::FleetEdges(edges),
            _ = fleet_tick.tick(), if fleet.is_some() => Input::FleetTick,
            (slot, result) = poll_fn(|cx| poll_recv_taps(cx, &taps, tap_buf, &mut tap_cursor)) => Input::Tap(slot, result),
            (_, result) = poll_fn(|cx| poll_recv_any(cx, &sockets, batch, &mut udp_cursor)) => Input::Udp(result),
        };
        let Buffers { tap: tap_buf, batch, .. } = &mut buffers;
        match input {
            Input::Shutdown(signal) => {
                info!(signal, "shutting down");
                break Ok(());
            }
            Input::WorkerFailed(worker, error) => {
                tracing::error!(worker, %error, "a worker stopped; shutting down");
                break Err(error);
            }
            Input::Worker(Command::Forward(forward)) => {
                let _ = gateway.handle_forwarded(now(), forward.from, &forward.datagram);
            }
            Input::Worker(_) => {}
            Input::Reload => {
                let loaded = load_gateway(&settings.path)
                    .map_err(|e| IoError::new("reloading", io::Error::other(e.to_string())));
                let applied = match loaded {
                    Ok(loaded) => {
                        let merged = with_fleet(&loaded, &fleet_edges);
                        let mut running = Running {
                            settings: &mut settings,
                            gateway: &mut gateway,
                            taps: &mut taps,
                            names: &mut names,
                        };
                        let result = apply(&mut running, merged, &crew, &netlink).await;
                        if result.is_ok() {
                            file_settings = loaded;
                        }
                        result
                    }
                    Err(error) => Err(error),
                };
                recorders = applied_or_warned(applied, recorders, &names, "allowlist reloaded", "reload refused");
            }
            Input::FleetEdges(edges) => {
                fleet_edges = edges;
                let merged = with_fleet(&file_settings, &fleet_edges);
                let mut running =
                    Running { settings: &mut settings, gateway: &mut gateway, taps: &mut taps, names: &mut names };
                let applied = apply(&mut running, merged, &crew, &netlink).await;
                let refused = "the fleet's allowlist could not be applied";
                recorders = applied_or_warned(applied, recorders, &names, "allowlist changed by the fleet", refused);
            }
            Input::FleetTick => {
                if let Some(fleet) = &mut fleet {
                    fleet.tick(&mut gateway, &crew, &names);
                }
            }
            Input::Drain(on) => {
                if on != gateway.draining() {
                    let live = std::iter::once(PartLoad::of(&gateway))
                        .chain(crew.reports().into_iter().map(|r| r.load))
                        .map(|l| l.carrying.len() + l.standby_for.len())
                        .sum::<usize>();
                    if on {
                        info!(edges = live, "draining: edges with a standby gateway move their streams there");
                    } else {
                        info!(edges = live, "drain ended: edges may come back (they do not move by themselves)");
                    }
                }
                gateway.set_draining(on);
                crew.broadcast(|| Command::Drain(on));
            }
            Input::Timeout => gateway.handle_timeout(now()),
            Input::Tap(slot, Ok(len)) => {
                let _ = gateway.handle_frame(now(), PeerId(slot), &tap_buf[..len]);
            }
            Input::Tap(slot, Err(error)) => {
                // A TAP that fails to read (deleted from outside, say) would fail again at once:
                // close it rather than spin, and say so.
                tracing::error!(edge = names.get(slot).map_or("?", String::as_str), %error, "TAP failed; closing it");
                if let Some(tap) = taps.get_mut(slot) {
                    *tap = None;
                }
            }
            Input::Udp(Ok(count)) => {
                let now = now();
                for (from, datagram) in batch.datagrams(count) {
                    let _ = gateway.handle_datagram(now, from, datagram);
                }
            }
            Input::Udp(Err(error)) => tracing::debug!(%error, "receive error"),
            Input::Snapshot => {
                if let Some(observer) = &observer {
                    let fleet = fleet.as_ref().map(|f| f.agent.view.borrow().clone());
                    let parts = Parts { gateway: &gateway, names: &names, reports: crew.reports() };
                    observer.board.publish(snapshot(observer, parts, &mut recorders, fleet));
                }
            }
        }
        let plant = Plant {
            sockets: &sockets,
            taps: &taps,
            names: &names,
            tap_settings: &settings.taps,
            recorders: if observer.is_some() { Some(&mut recorders[..]) } else { None },
            forget: &forget,
            crew: crew.senders(),
        };
        workers::drain(&mut gateway, &mut buffers, plant);
    };
    crew.stop();
    outcome
}

/// How often the data plane reports its load to the fleet agent.
const FLEET_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The fleet's agent's allowlist, when it changes; never, without a fleet.
async fn fleet_allowlist(fleet: &mut Option<Fleet>) -> Option<Vec<FleetEdge>> {
    match fleet {
        Some(fleet) => fleet.agent.edges.recv().await,
        None => std::future::pending().await,
    }
}

/// The data plane's side of the fleet: the agent on its own thread, the placement rules, the
/// placements made, and the load measured between reports.
struct Fleet {
    agent: Agent,
    name: String,
    rules: Rules,
    placer: Placer,
    load: LoadMeter,
}

impl Fleet {
    fn start(settings: &FleetSettings, public_key: crate::keys::PublicKey) -> Result<Self, IoError> {
        let agent =
            member::start(settings.clone(), public_key).map_err(|e| IoError::new("starting the fleet agent", e))?;
        let rules = Rules { hold_down: settings.hold_down, ..Rules::default() };
        Ok(Self { agent, name: settings.name.clone(), rules, placer: Placer::default(), load: LoadMeter::default() })
    }

    /// Reports the gateway's load to the agent, and says to each edge it carries where the
    /// fleet puts it.
    fn tick(&mut self, gateway: &mut Gateway, crew: &Crew, names: &[String]) {
        let parts = std::iter::once(PartLoad::of(gateway)).chain(crew.reports().into_iter().map(|r| r.load));
        let load = self.load.measure(parts, gateway.draining());
        let here = |name: &String| {
            if load.carrying.contains(name) {
                Here::Carried
            } else if load.standby_for.contains(name) {
                Here::Standby
            } else {
                Here::Absent
            }
        };
        let edges: Vec<EdgeNow<'_>> = names.iter().map(|name| EdgeNow { name, here: here(name) }).collect();
        let view = self.agent.view.borrow().clone();
        let placements = self.placer.place(&self.rules, &self.name, &view, &edges, now(), super::unix_millis());
        for (i, placement) in placements.into_iter().enumerate() {
            match gateway.worker_of(PeerId(i)) {
                0 => gateway.set_placement(PeerId(i), placement),
                owner => crew.send(owner, Command::Placement(i, placement)),
            }
        }
        self.agent.load.send_replace(load);
    }
}

/// `file` with the fleet's allowlist after its own edges; an edge left out is warned of.
fn with_fleet(file: &GatewaySettings, edges: &[FleetEdge]) -> GatewaySettings {
    let (merged, skipped) = file.with_fleet_edges(edges);
    if !skipped.is_empty() {
        warn!(edges = ?skipped, "fleet edges left out: the config file has an edge of the same name, key or TAP");
    }
    merged
}

/// After an allowlist change: each kept edge's recorder at its new place (new edges start
/// afresh) and `done` logged, or, if it was refused, the recorders as they were and `refused`
/// warned of.
fn applied_or_warned(
    applied: Result<Vec<Option<PeerId>>, IoError>,
    mut old: Vec<Recorder>,
    names: &[String],
    done: &str,
    refused: &str,
) -> Vec<Recorder> {
    match applied {
        Ok(moved) => {
            info!(edges = ?names, "{done}");
            moved
                .iter()
                .map(|before| before.and_then(|PeerId(i)| old.get_mut(i).map(std::mem::take)).unwrap_or_default())
                .collect()
        }
        Err(error) => {
            warn!(%error, "{refused}; the running allowlist is unchanged");
            old
        }
    }
}

/// What the gateway carries, measured between two calls, for the fleet.
#[derive(Debug, Default)]
struct LoadMeter {
    last: Option<(std::time::Instant, u64, u64)>,
}

impl LoadMeter {
    fn measure(&mut self, parts: impl Iterator<Item = PartLoad>, draining: bool) -> Load {
        let (mut carrying, mut standby_for, mut rx, mut tx) = (Vec::new(), Vec::new(), 0, 0);
        for part in parts {
            carrying.extend(part.carrying);
            standby_for.extend(part.standby_for);
            rx += part.rx_bytes;
            tx += part.tx_bytes;
        }
        let now = now();
        let mbps = |after: u64, before: u64, secs: f64| after.saturating_sub(before) as f64 * 8.0 / secs / 1e6;
        let (mbps_in, mbps_out) = match self.last {
            Some((at, last_rx, last_tx)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                (mbps(rx, last_rx, secs), mbps(tx, last_tx, secs))
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, rx, tx));
        Load { carrying, standby_for, mbps_in, mbps_out, draining }
    }
}

/// Applies `settings`' allowlist, all or nothing: the TAPs of new edges are opened first, and
/// only then are the allowlist, the TAPs and the names swapped together. Kept edges keep their
/// TAPs and sessions; removed edges' TAPs are closed (and so removed). Every other key that
/// changed needs a restart: a WARN names each. `running` follows what the gateway runs with.
async fn apply(
    running: &mut Running<'_>,
    settings: GatewaySettings,
    crew: &Crew,
    netlink: &Netlink,
) -> Result<Vec<Option<PeerId>>, IoError> {
    let refused = |e: String| IoError::new("reloading", io::Error::other(e));
    let Running { settings: current, gateway, taps, names } = running;
    let previous: Vec<Option<PeerId>> = settings.gateway.edges.iter().map(|e| gateway.peer_of(&e.public_key)).collect();
    let opened = open_taps(&settings.taps, |slot| previous[slot].is_none(), netlink).await?;
    let moved = gateway.set_edges(settings.gateway.edges.clone()).map_err(|e| refused(e.to_string()))?;
    let (own, dealt) = deal_taps(opened, &settings.gateway.edges, &settings.taps, crew.count)?;
    let mut old = std::mem::take(*taps);
    **taps = moved
        .iter()
        .zip(own)
        .map(|(before, new)| new.or_else(|| before.and_then(|PeerId(i)| old.get_mut(i)?.take())))
        .collect();
    **names = settings.gateway.edges.iter().map(|e| e.name.clone()).collect();
    let ignored = current.restart_needed(&settings);
    // Kept edges run on with their TAPs as they were opened.
    let taps_running: Vec<TapSettings> = moved
        .iter()
        .zip(&settings.taps)
        .map(|(before, new)| before.and_then(|PeerId(i)| current.taps.get(i).cloned()).unwrap_or_else(|| new.clone()))
        .collect();
    for (i, opened) in dealt.into_iter().enumerate() {
        let update = EdgesUpdate { edges: settings.gateway.edges.clone(), taps: taps_running.clone(), opened };
        crew.send(i + 1, Command::Edges(update));
    }
    current.gateway.edges = settings.gateway.edges;
    current.taps = taps_running;
    record_restart_only(current);
    if !ignored.is_empty() {
        warn!(
            keys = %ignored.join(", "),
            "the config changed keys a reload does not apply: they take effect at the next restart"
        );
    }
    Ok(moved)
}

/// What an allowlist change changes in worker 0: what it runs with, its engine, its TAPs and
/// the edges' names.
struct Running<'a> {
    settings: &'a mut GatewaySettings,
    gateway: &'a mut Gateway,
    taps: &'a mut Vec<Option<AsyncDevice>>,
    names: &'a mut Vec<String>,
}

/// Records what the gateway runs with that a reload cannot change in its runtime directory,
/// for `check-config --against-running`; only under systemd, which gives it one
/// (`RuntimeDirectory=`, exported as `$RUNTIME_DIRECTORY`). A few hundred bytes on tmpfs, at start
/// and at each reload.
fn record_restart_only(settings: &GatewaySettings) {
    record_runtime_file(
        crate::config::RUNNING_FILE,
        &settings.restart_only().to_text(),
        "check-config --against-running",
    );
}

/// Writes the process's PID to its runtime directory, for `braid-gateway drain`; only under
/// systemd, as above. Without, `drain --pid` names the process.
fn record_pid() {
    record_runtime_file(crate::config::PID_FILE, &std::process::id().to_string(), "braid-gateway drain");
}

/// Writes `name` in the runtime directory when the process has one; a failure is logged with
/// the command (`reader`) that will miss the file, and the gateway runs on.
fn record_runtime_file(name: &str, text: &str, reader: &str) {
    if std::env::var_os("RUNTIME_DIRECTORY").is_none() {
        return;
    }
    let path = crate::config::gateway_runtime_dir().join(name);
    if let Err(error) = std::fs::write(&path, text) {
        warn!(%error, path = %path.display(), "could not write a runtime file for `{reader}`");
    }
}

/// Worker 0's engine and the other workers' latest reports.
struct Parts<'a> {
    gateway: &'a Gateway,
    names: &'a [String],
    reports: Vec<workers::Report>,
}

/// The gateway's status as of now: every allowed edge and its live session (from the worker
/// that owns it), and the counters of every worker summed.
fn snapshot(
    observer: &Observer,
    parts: Parts<'_>,
    recorders: &mut [Recorder],
    fleet: Option<crate::fleet::member::FleetView>,
) -> Status {
    let now = now();
    let Parts { gateway, names, reports } = parts;
    let edges: Vec<EdgeView> = names
        .iter()
        .zip(recorders.iter_mut())
        .enumerate()
        .map(|(i, (name, recorder))| {
            let owner = gateway.worker_of(PeerId(i));
            let reported = owner.checked_sub(1).and_then(|r| reports.get(r)?.views.iter().find(|v| v.name == *name));
            match (owner, reported) {
                (0, _) => recorder.view(now, name, gateway.session(PeerId(i)), link_name),
                (_, Some(view)) => view.clone(),
                (_, None) => recorder.view(now, name, None, link_name),
            }
        })
        .collect();
    let stats = summed(std::iter::once(gateway.stats()).chain(reports.iter().map(|r| r.stats)));
    observer.status(
        now,
        Body::Gateway(Box::new(GatewayBody {
            counters: Flat(stats),
            sessions: edges.iter().filter(|e| e.session.is_some()).count() as u64,
            draining: gateway.draining(),
            drops: stats.drops.total(),
            drops_by_reason: by_reason(&stats.drops),
            edges,
            fleet,
        })),
    )
}

/// The workers' counters, summed.
fn summed(parts: impl Iterator<Item = GatewayStats>) -> GatewayStats {
    let mut sum = GatewayStats::default();
    for part in parts {
        for i in 0..GatewayStats::DEFS.len() {
            sum.set(i, sum.get(i) + part.get(i));
        }
        sum.drops.add_all(&part.drops);
    }
    sum
}
