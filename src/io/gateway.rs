//! The gateway's driver loop.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tun_rs::AsyncDevice;

use super::batch::{BatchSocket, poll_recv_any};
use super::driver::{self, Buffers, Sinks};
use super::netlink::Netlink;
use super::status::{Body, Flat, GatewayBody, Observer, Recorder, Status, by_reason, tick};
use super::udp::bind_listen;
use super::{IoError, now, os_seed, shutdown_signal, sleep_until, tap};
use crate::config::{FleetSettings, GatewaySettings, TapSettings, load_gateway};
use crate::endpoint::gateway::{Gateway, PeerId};
use crate::fleet::member::{self, Agent, FleetEdge, Load};
use crate::fleet::placement::Rules;
use crate::fleet::placer::{EdgeNow, Here, Placer};
use crate::session::{Event, Transmit};

enum Input {
    Shutdown(&'static str),
    Reload,
    Drain(bool),
    Timeout,
    Tap(usize, io::Result<usize>),
    Udp(io::Result<usize>),
    Snapshot,
    FleetEdges(Vec<FleetEdge>),
    FleetTick,
}

/// Runs a gateway until SIGINT or SIGTERM, on a current-thread tokio runtime. SIGHUP reloads the
/// allowlist from the config file without disturbing the other edges' sessions; SIGUSR1 starts a
/// drain (edges with a standby gateway move their streams there) and SIGUSR2 ends it. Its PID is
/// written to its runtime directory, for `braid-gateway drain`. The TAPs are removed on the way
/// out.
///
/// # Errors
/// [`IoError`] if a socket, a TAP or the runtime cannot be set up.
pub fn run(settings: GatewaySettings) -> Result<(), IoError> {
    driver::run(settings.gateway.session.tuning, drive(settings))
}

async fn open_taps(settings: &[TapSettings], netlink: &Netlink) -> Result<Vec<AsyncDevice>, IoError> {
    let mut taps = Vec::with_capacity(settings.len());
    for tap in settings {
        taps.push(tap::open(&tap.name, tap.mtu, tap.mac, tap.bridge.as_deref(), netlink).await?);
    }
    Ok(taps)
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
    let mut taps: Vec<Option<AsyncDevice>> = open_taps(&settings.taps, &netlink).await?.into_iter().map(Some).collect();
    let mut names: Vec<String> = settings.gateway.edges.iter().map(|e| e.name.clone()).collect();
    let sockets: Vec<Option<BatchSocket>> = settings
        .listen
        .iter()
        .map(|&a| {
            bind_listen(a, settings.nonlocal_bind)
                .and_then(|s| BatchSocket::new(s).map(Some).map_err(|e| IoError::new("enabling batched I/O", e)))
        })
        .collect::<Result<_, _>>()?;
    let mut gateway = Gateway::new(settings.gateway.clone(), now(), os_seed()?)
        .map_err(|e| IoError::new("starting the gateway", io::Error::other(e)))?;
    let mut observer = driver::observer(&settings.status, "gateway")?;
    // What the file says; what runs is it with the fleet's allowlist after its own edges.
    let mut file_settings = settings.clone();
    let mut fleet_edges: Vec<FleetEdge> = Vec::new();
    let mut fleet = settings.fleet.as_ref().map(|f| Fleet::start(f, gateway.public_key())).transpose()?;
    let mut fleet_tick = tokio::time::interval(FLEET_REPORT_INTERVAL);
    record_restart_only(&settings);
    record_pid();
    let mut recorders: Vec<Recorder> = names.iter().map(|_| Recorder::new()).collect();
    info!(listen = ?settings.listen, edges = names.len(), public_key = %gateway.public_key(), "gateway running");

    let mut buffers = Buffers::default();
    let Buffers { tap: tap_buf, batch, sends, out } = &mut buffers;
    let (mut tap_cursor, mut udp_cursor) = (0, 0);
    loop {
        let deadline = gateway.poll_timeout().map(|(at, _)| at);
        let input = tokio::select! {
            biased;
            signal = &mut shutdown => Input::Shutdown(signal),
            _ = hangup.recv() => Input::Reload,
            _ = drain.recv() => Input::Drain(true),
            _ = undrain.recv() => Input::Drain(false),
            () = sleep_until(deadline) => Input::Timeout,
            () = tick(&mut observer) => Input::Snapshot,
            Some(edges) = fleet_allowlist(&mut fleet) => Input::FleetEdges(edges),
            _ = fleet_tick.tick(), if fleet.is_some() => Input::FleetTick,
            (slot, result) = poll_fn(|cx| poll_recv_taps(cx, &taps, tap_buf, &mut tap_cursor)) => Input::Tap(slot, result),
            (_, result) = poll_fn(|cx| poll_recv_any(cx, &sockets, batch, &mut udp_cursor)) => Input::Udp(result),
        };
        match input {
            Input::Shutdown(signal) => {
                info!(signal, "shutting down");
                break;
            }
            Input::Reload => {
                let loaded = load_gateway(&settings.path)
                    .map_err(|e| IoError::new("reloading", io::Error::other(e.to_string())));
                let applied = match loaded {
                    Ok(loaded) => {
                        let merged = with_fleet(&loaded, &fleet_edges);
                        let result = apply(&mut settings, merged, &mut gateway, &mut taps, &mut names, &netlink).await;
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
                let applied = apply(&mut settings, merged, &mut gateway, &mut taps, &mut names, &netlink).await;
                let refused = "the fleet's allowlist could not be applied";
                recorders = applied_or_warned(applied, recorders, &names, "allowlist changed by the fleet", refused);
            }
            Input::FleetTick => {
                if let Some(fleet) = &mut fleet {
                    fleet.tick(&mut gateway, &names);
                }
            }
            Input::Drain(on) => {
                if on != gateway.draining() {
                    let live = (0..names.len()).filter(|&i| gateway.session(PeerId(i)).is_some()).count();
                    if on {
                        info!(edges = live, "draining: edges with a standby gateway move their streams there");
                    } else {
                        info!(edges = live, "drain ended: edges may come back (they do not move by themselves)");
                    }
                }
                gateway.set_draining(on);
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
                    observer.board.publish(snapshot(observer, &gateway, &names, &mut recorders, fleet));
                }
            }
        }
        let sinks = Sinks {
            sockets: &sockets,
            // Answer from a socket of the destination's family.
            socket_for: |transmit: &Transmit| {
                sockets.iter().position(|s| {
                    s.as_ref().is_some_and(|s| s.local_addr().is_ipv6() == transmit.destination.is_ipv6())
                })
            },
            tap: |peer| taps.get(peer).and_then(Option::as_ref),
            name: |peer| names.get(peer).map_or("?", String::as_str),
            link_name,
            recorders: if observer.is_some() { Some(&mut recorders[..]) } else { None },
            on_event: Some(&mut |peer, event| {
                // A rig that keeps this gateway as a standby is reached through another: the
                // bridge forgets where it learned the rig's addresses.
                if let Event::PeerStandby { standby: true } = event
                    && let Some(tap) = settings.taps.get(peer).filter(|t| t.bridge.is_some())
                {
                    let _ = forget.send(tap.name.clone());
                }
            }),
        };
        driver::drain(&mut gateway, out, sends, sinks);
    }
    Ok(())
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
    fn tick(&mut self, gateway: &mut Gateway, names: &[String]) {
        let load = self.load.measure(gateway, names);
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
            gateway.set_placement(PeerId(i), placement);
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
    fn measure(&mut self, gateway: &Gateway, names: &[String]) -> Load {
        let (mut carrying, mut standby_for, mut rx, mut tx) = (Vec::new(), Vec::new(), 0, 0);
        for (name, session) in names.iter().enumerate().filter_map(|(i, n)| Some((n, gateway.session(PeerId(i))?))) {
            if session.is_standby() { &mut standby_for } else { &mut carrying }.push(name.clone());
            for stats in session.links().filter_map(|l| session.link_stats(l)) {
                rx += stats.rx_bytes;
                tx += stats.tx_bytes;
            }
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
        Load { carrying, standby_for, mbps_in, mbps_out, draining: gateway.draining() }
    }
}

/// Applies `settings`' allowlist, all or nothing: the TAPs of new edges are opened first, and
/// only then are the allowlist, the TAPs and the names swapped together. Kept edges keep their
/// TAPs and sessions; removed edges' TAPs are closed (and so removed). Every other key that
/// changed needs a restart: a WARN names each. `running` follows what the gateway runs with.
async fn apply(
    running: &mut GatewaySettings,
    settings: GatewaySettings,
    gateway: &mut Gateway,
    taps: &mut Vec<Option<AsyncDevice>>,
    names: &mut Vec<String>,
    netlink: &Netlink,
) -> Result<Vec<Option<PeerId>>, IoError> {
    let refused = |e: String| IoError::new("reloading", io::Error::other(e));
    let previous: Vec<Option<PeerId>> = settings.gateway.edges.iter().map(|e| gateway.peer_of(&e.public_key)).collect();
    let mut opened = Vec::with_capacity(previous.len());
    for (slot, before) in previous.iter().enumerate() {
        opened.push(match before {
            Some(_) => None,
            None => {
                let tap = &settings.taps[slot];
                Some(tap::open(&tap.name, tap.mtu, tap.mac, tap.bridge.as_deref(), netlink).await?)
            }
        });
    }
    let moved = gateway.set_edges(settings.gateway.edges.clone()).map_err(|e| refused(e.to_string()))?;
    let mut old = std::mem::take(taps);
    *taps = moved
        .iter()
        .zip(opened)
        .map(|(before, new)| new.or_else(|| before.and_then(|PeerId(i)| old.get_mut(i)?.take())))
        .collect();
    *names = settings.gateway.edges.iter().map(|e| e.name.clone()).collect();
    let ignored = running.restart_needed(&settings);
    // Kept edges run on with their TAPs as they were opened.
    let taps_running: Vec<TapSettings> = moved
        .iter()
        .zip(&settings.taps)
        .map(|(before, new)| before.and_then(|PeerId(i)| running.taps.get(i).cloned()).unwrap_or_else(|| new.clone()))
        .collect();
    running.gateway.edges = settings.gateway.edges;
    running.taps = taps_running;
    record_restart_only(running);
    if !ignored.is_empty() {
        warn!(
            keys = %ignored.join(", "),
            "the config changed keys a reload does not apply: they take effect at the next restart"
        );
    }
    Ok(moved)
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

fn poll_recv_taps(
    cx: &mut Context<'_>,
    taps: &[Option<AsyncDevice>],
    buf: &mut [u8],
    cursor: &mut usize,
) -> Poll<(usize, io::Result<usize>)> {
    super::poll_round_robin(cx, taps, cursor, |tap, cx| tap.poll_recv(cx, buf))
}

fn link_name(link: crate::LinkId) -> &'static str {
    LINK_NAMES.get(usize::from(link.get())).copied().unwrap_or("link?")
}

/// The gateway's status as of now: every allowed edge and its live session.
fn snapshot(
    observer: &Observer,
    gateway: &Gateway,
    names: &[String],
    recorders: &mut [Recorder],
    fleet: Option<crate::fleet::member::FleetView>,
) -> Status {
    let now = now();
    let edges: Vec<_> = names
        .iter()
        .zip(recorders.iter_mut())
        .enumerate()
        .map(|(i, (name, recorder))| recorder.view(now, name, gateway.session(PeerId(i)), link_name))
        .collect();
    let stats = gateway.stats();
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

/// The gateway knows links by number only (the edge names them).
const LINK_NAMES: [&str; 16] = [
    "link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7", "link8", "link9", "link10", "link11",
    "link12", "link13", "link14", "link15",
];
