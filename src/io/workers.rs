//! The gateway's workers: threads that share its listening port, each with its own sockets on it,
//! its own engine ([`Gateway`] as one [`Shard`]) and the TAPs of the edges it owns. The kernel
//! steers every datagram to the worker its session index names; an initiation (index 0) reaches
//! worker 0, whose engine hands it to the edge's worker. Worker 0 also runs the control plane
//! (signals, reloads, the fleet, the status endpoint) and tells the others what changes over a
//! channel; they report their counters, load and edges' status back every
//! [`SNAPSHOT_INTERVAL`]. Nothing on the data path waits for another worker.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use socket2::Socket;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tun_rs::{AsyncDevice, SyncDevice};

use super::batch::{BatchSocket, poll_recv_any};
use super::driver::{self, Buffers, Sinks};
use super::status::{EdgeView, Recorder, SNAPSHOT_INTERVAL};
use super::{IoError, now, os_seed, sleep_until, tap, udp};
use crate::config::TapSettings;
use crate::endpoint::gateway::{EdgeEntry, Forward, Gateway, GatewayConfig, GatewayStats, PeerId, Shard};
use crate::session::{Event, Transmit};
use crate::wire::Placement;

/// What worker 0 tells another worker.
#[derive(Debug)]
pub enum Command {
    /// Stop, closing its TAPs.
    Shutdown,
    /// A new allowlist, already applied by worker 0.
    Edges(EdgesUpdate),
    /// The drain begins or ends.
    Drain(bool),
    /// Where the fleet puts an edge, by its position in the allowlist.
    Placement(usize, Option<Placement>),
    /// An initiation for one of its edges.
    Forward(Forward),
}

/// An allowlist for a worker, and the TAPs of its new edges, in allowlist order (`None` for an
/// edge it does not own or already has).
pub struct EdgesUpdate {
    /// The allowed edges.
    pub edges: Vec<EdgeEntry>,
    /// Their TAPs as they run.
    pub taps: Vec<TapSettings>,
    /// The TAPs opened for this worker's new edges.
    pub opened: Vec<Option<SyncDevice>>,
}

/// What a worker carries, for the fleet.
#[derive(Debug, Clone, Default)]
pub struct PartLoad {
    /// Edges whose stream it carries.
    pub carrying: Vec<String>,
    /// Edges that keep the gateway as their standby.
    pub standby_for: Vec<String>,
    /// Bytes received from edges so far.
    pub rx_bytes: u64,
    /// Bytes sent to edges so far.
    pub tx_bytes: u64,
}

impl PartLoad {
    /// What `gateway`'s sessions carry.
    pub fn of(gateway: &Gateway) -> Self {
        let mut load = Self::default();
        for (PeerId(i), name) in gateway.peers() {
            let Some(session) = gateway.session(PeerId(i)) else { continue };
            if session.is_standby() { &mut load.standby_for } else { &mut load.carrying }.push(name.to_owned());
            for stats in session.links().filter_map(|l| session.link_stats(l)) {
                load.rx_bytes += stats.rx_bytes;
                load.tx_bytes += stats.tx_bytes;
            }
        }
        load
    }
}

/// A worker's report to worker 0.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Its engine's counters.
    pub stats: GatewayStats,
    /// Its edges' status, while the status endpoint is on.
    pub views: Vec<EdgeView>,
    /// What it carries.
    pub load: PartLoad,
}

/// Worker 0's side of the other workers.
#[derive(Debug)]
pub struct Crew {
    /// How many workers there are, worker 0 included.
    pub count: usize,
    senders: Vec<UnboundedSender<Command>>,
    reports: Vec<Arc<Mutex<Report>>>,
    threads: Vec<JoinHandle<()>>,
    /// Worker 0's own commands (initiations another worker handed over).
    pub inbox: UnboundedReceiver<Command>,
    /// A worker that stopped on an error, and the error.
    pub failures: UnboundedReceiver<(usize, IoError)>,
}

/// What a worker starts with.
pub struct Seat {
    /// Its place.
    pub shard: Shard,
    /// The engine's config, with the whole allowlist.
    pub config: GatewayConfig,
    /// Every edge's TAP settings, in allowlist order.
    pub taps: Vec<TapSettings>,
    /// Its sockets, one per listen address.
    pub sockets: Vec<Socket>,
    /// Its edges' TAPs, in allowlist order.
    pub opened: Vec<Option<SyncDevice>>,
    /// Whether the status endpoint is on (its edges' status is reported).
    pub observed: bool,
    /// Where the bridge is told to forget a rig's addresses.
    pub forget: UnboundedSender<String>,
}

/// How many TAPs a list holds, for `Debug` (tun-rs's devices have none).
fn opened_count(opened: &[Option<SyncDevice>]) -> usize {
    opened.iter().flatten().count()
}

impl std::fmt::Debug for EdgesUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgesUpdate")
            .field("edges", &self.edges)
            .field("taps", &self.taps)
            .field("opened", &opened_count(&self.opened))
            .finish()
    }
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("shard", &self.shard)
            .field("sockets", &self.sockets)
            .field("opened", &opened_count(&self.opened))
            .finish_non_exhaustive()
    }
}

impl Crew {
    /// Starts workers 1 to `seats.len()` on threads of their own, with the senders of every
    /// worker's commands (worker 0's first).
    ///
    /// # Errors
    /// [`IoError`] if a thread cannot be started.
    pub fn start(seats: Vec<Seat>) -> Result<Self, IoError> {
        let count = seats.len() + 1;
        let (failed, failures) = unbounded_channel();
        let (mut senders, mut receivers) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for _ in 0..count {
            let (tx, rx) = unbounded_channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let inbox = receivers[0].take().ok_or_else(|| IoError::new("starting workers", std::io::Error::other("?")))?;
        let (mut reports, mut threads) = (vec![Arc::new(Mutex::new(Report::default()))], Vec::new());
        for seat in seats {
            let worker = seat.shard.worker;
            let report = Arc::new(Mutex::new(Report::default()));
            reports.push(report.clone());
            let commands = receivers.get_mut(worker).and_then(Option::take);
            let (crew, failed) = (senders.clone(), failed.clone());
            let thread = std::thread::Builder::new().name(format!("braid-worker-{worker}")).spawn(move || {
                let Some(commands) = commands else { return };
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let result = match runtime {
                    Ok(runtime) => runtime.block_on(serve(seat, commands, crew, report)),
                    Err(error) => Err(IoError::new("starting a worker's tokio runtime", error)),
                };
                if let Err(error) = result {
                    let _ = failed.send((worker, error));
                }
            });
            threads.push(thread.map_err(|e| IoError::new("starting a worker thread", e))?);
        }
        Ok(Self { count, senders, reports, threads, inbox, failures })
    }

    /// Sends `command` to worker `worker` (not 0); a worker that stopped is left out.
    pub fn send(&self, worker: usize, command: Command) {
        if worker != 0
            && let Some(sender) = self.senders.get(worker)
        {
            let _ = sender.send(command);
        }
    }

    /// Sends what `make` makes to every other worker.
    pub fn broadcast(&self, make: impl Fn() -> Command) {
        for worker in 1..self.count {
            self.send(worker, make());
        }
    }

    /// The senders of every worker's commands, worker 0's first.
    pub fn senders(&self) -> &[UnboundedSender<Command>] {
        &self.senders
    }

    /// The other workers' latest reports.
    pub fn reports(&self) -> Vec<Report> {
        self.reports.iter().skip(1).filter_map(|r| r.lock().ok().map(|r| r.clone())).collect()
    }

    /// Stops the other workers and waits for them (their TAPs are removed on the way out).
    pub fn stop(self) {
        self.broadcast(|| Command::Shutdown);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A worker's loop, until [`Command::Shutdown`].
async fn serve(
    seat: Seat,
    mut commands: UnboundedReceiver<Command>,
    crew: Vec<UnboundedSender<Command>>,
    report: Arc<Mutex<Report>>,
) -> Result<(), IoError> {
    let Seat { shard, config, taps: mut tap_settings, sockets, opened, observed, forget } = seat;
    let sockets: Vec<Option<BatchSocket>> = sockets
        .into_iter()
        .map(|s| {
            udp::register(s)
                .and_then(BatchSocket::new)
                .map(Some)
                .map_err(|e| IoError::new("setting up a worker's socket", e))
        })
        .collect::<Result<_, _>>()?;
    let mut taps = register_taps(opened, &tap_settings).into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<String> = config.edges.iter().map(|e| e.name.clone()).collect();
    let mut gateway = Gateway::new(config, now(), os_seed()?)
        .map_err(|e| IoError::new("starting a worker", std::io::Error::other(e)))?;
    gateway.set_shard(shard);
    let mut recorders: Vec<Recorder> = names.iter().map(|_| Recorder::new()).collect();
    let mut report_tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffers = Buffers::default();
    let (mut tap_cursor, mut udp_cursor) = (0, 0);
    loop {
        let deadline = gateway.poll_timeout().map(|(at, _)| at);
        let Buffers { tap: tap_buf, batch, .. } = &mut buffers;
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None | Some(Command::Shutdown) => break,
                Some(Command::Edges(update)) => {
                    let Ok(moved) = gateway.set_edges(update.edges) else {
                        tracing::warn!(worker = shard.worker, "a worker refused the allowlist worker 0 applied");
                        continue;
                    };
                    // A TAP that cannot be registered leaves its edge without one, as a TAP
                    // that fails to read does; the others carry on.
                    let mut opened: Vec<Option<AsyncDevice>> = register_taps(update.opened, &update.taps)
                        .into_iter()
                        .map(|tap| {
                            tap.unwrap_or_else(|error| {
                                tracing::error!(worker = shard.worker, %error, "a TAP the reload opened cannot be used");
                                None
                            })
                        })
                        .collect();
                    let mut old_taps = std::mem::take(&mut taps);
                    taps = moved
                        .iter()
                        .enumerate()
                        .map(|(i, before)| {
                            opened.get_mut(i).and_then(Option::take).or_else(|| before.and_then(|PeerId(b)| old_taps.get_mut(b)?.take()))
                        })
                        .collect();
                    recorders = moved
                        .iter()
                        .map(|before| before.and_then(|PeerId(b)| recorders.get_mut(b).map(std::mem::take)).unwrap_or_default())
                        .collect();
                    names = gateway.peers().map(|(_, n)| n.to_owned()).collect();
                    tap_settings = update.taps;
                }
                Some(Command::Drain(on)) => gateway.set_draining(on),
                Some(Command::Placement(slot, placement)) => gateway.set_placement(PeerId(slot), placement),
                Some(Command::Forward(forward)) => {
                    let _ = gateway.handle_forwarded(now(), forward.from, &forward.datagram);
                }
            },
            () = sleep_until(deadline) => gateway.handle_timeout(now()),
            _ = report_tick.tick() => {
                let now = now();
                let views = if observed {
                    names
                        .iter()
                        .zip(recorders.iter_mut())
                        .enumerate()
                        .filter(|&(i, _)| gateway.session(PeerId(i)).is_some())
                        .map(|(i, (name, recorder))| recorder.view(now, name, gateway.session(PeerId(i)), link_name))
                        .collect()
                } else {
                    Vec::new()
                };
                let fresh = Report { stats: gateway.stats(), views, load: PartLoad::of(&gateway) };
                if let Ok(mut slot) = report.lock() {
                    *slot = fresh;
                }
            }
            (slot, result) = poll_fn(|cx| poll_recv_taps(cx, &taps, tap_buf, &mut tap_cursor)) => match result {
                Ok(len) => {
                    let _ = gateway.handle_frame(now(), PeerId(slot), &tap_buf[..len]);
                }
                Err(error) => {
                    tracing::error!(edge = names.get(slot).map_or("?", String::as_str), %error, "TAP failed; closing it");
                    if let Some(tap) = taps.get_mut(slot) {
                        *tap = None;
                    }
                }
            },
            (_, result) = poll_fn(|cx| poll_recv_any(cx, &sockets, batch, &mut udp_cursor)) => match result {
                Ok(count) => {
                    let now = now();
                    for (from, datagram) in batch.datagrams(count) {
                        let _ = gateway.handle_datagram(now, from, datagram);
                    }
                }
                Err(error) => tracing::debug!(%error, "receive error"),
            },
        }
        let plant = Plant {
            sockets: &sockets,
            taps: &taps,
            names: &names,
            tap_settings: &tap_settings,
            recorders: if observed { Some(&mut recorders[..]) } else { None },
            forget: &forget,
            crew: &crew,
        };
        drain(&mut gateway, &mut buffers, plant);
    }
    Ok(())
}

/// Registers the TAPs opened for a worker on its runtime, each on its own.
fn register_taps(
    opened: Vec<Option<SyncDevice>>,
    settings: &[TapSettings],
) -> Vec<Result<Option<AsyncDevice>, IoError>> {
    opened
        .into_iter()
        .enumerate()
        .map(|(i, device)| {
            let name = settings.get(i).map_or("?", |t| t.name.as_str());
            device.map(|d| tap::register(name, d)).transpose()
        })
        .collect()
}

/// Where a worker's engine output goes.
pub struct Plant<'a> {
    /// Its sockets.
    pub sockets: &'a [Option<BatchSocket>],
    /// Its edges' TAPs, by allowlist position.
    pub taps: &'a [Option<AsyncDevice>],
    /// Every edge's name, by allowlist position.
    pub names: &'a [String],
    /// Every edge's TAP settings, by allowlist position.
    pub tap_settings: &'a [TapSettings],
    /// Its recorders, while the status endpoint is on.
    pub recorders: Option<&'a mut [Recorder]>,
    /// Where the bridge is told to forget a rig's addresses.
    pub forget: &'a UnboundedSender<String>,
    /// Every worker's commands, worker 0's first.
    pub crew: &'a [UnboundedSender<Command>],
}

impl std::fmt::Debug for Plant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plant")
            .field("sockets", &self.sockets.len())
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Drains a worker's engine after an input: datagrams, frames and events (see
/// [`driver::drain`]), and initiations for other workers' edges to those workers.
pub fn drain(gateway: &mut Gateway, buffers: &mut Buffers, plant: Plant<'_>) {
    let Plant { sockets, taps, names, tap_settings, recorders, forget, crew } = plant;
    let Buffers { sends, out, .. } = buffers;
    while let Some(forward) = gateway.poll_forward() {
        if let Some(sender) = crew.get(forward.worker) {
            let _ = sender.send(Command::Forward(forward));
        }
    }
    let sinks = Sinks {
        sockets,
        // Answer from a socket of the destination's family.
        socket_for: |transmit: &Transmit| {
            sockets
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.local_addr().is_ipv6() == transmit.destination.is_ipv6()))
        },
        tap: |peer| taps.get(peer).and_then(Option::as_ref),
        name: |peer| names.get(peer).map_or("?", String::as_str),
        link_name,
        recorders,
        on_event: Some(&mut |peer, event| {
            // A rig that keeps this gateway as a standby is reached through another: the
            // bridge forgets where it learned the rig's addresses.
            if let Event::PeerStandby { standby: true } = event
                && let Some(tap) = tap_settings.get(peer).filter(|t| t.bridge.is_some())
            {
                let _ = forget.send(tap.name.clone());
            }
        }),
    };
    driver::drain(gateway, out, sends, sinks);
}

/// Polls the TAPs in turn.
pub fn poll_recv_taps(
    cx: &mut std::task::Context<'_>,
    taps: &[Option<AsyncDevice>],
    buf: &mut [u8],
    cursor: &mut usize,
) -> std::task::Poll<(usize, std::io::Result<usize>)> {
    super::poll_round_robin(cx, taps, cursor, |tap, cx| tap.poll_recv(cx, buf))
}

/// A link's name: the gateway knows links by number only (the edge names them).
pub fn link_name(link: crate::LinkId) -> &'static str {
    LINK_NAMES.get(usize::from(link.get())).copied().unwrap_or("link?")
}

const LINK_NAMES: [&str; 16] = [
    "link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7", "link8", "link9", "link10", "link11",
    "link12", "link13", "link14", "link15",
];
