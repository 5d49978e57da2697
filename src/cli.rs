//! Command-line pieces both binaries share, so `braid-edge` and `braid-gateway` behave alike.

use core::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{EdgeSettings, GatewaySettings, cipher_name, load_edge, load_gateway};
use crate::keys::{KeyError, PrivateKey, PublicKey, generate_key_file};
use crate::tuning::Tuning;

/// Which daemon a command line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `braid-edge`.
    Edge,
    /// `braid-gateway`.
    Gateway,
}

impl Daemon {
    /// Where its config is read from when no `--config` is given.
    pub fn default_config(self) -> &'static Path {
        Path::new(match self {
            Self::Edge => "/etc/braid/edge.yaml",
            Self::Gateway => "/etc/braid/gateway.yaml",
        })
    }
}

/// The `--config` (`-c`) option of the commands that read a config.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigPath {
    /// The config file [default: /etc/braid/edge.yaml for braid-edge, /etc/braid/gateway.yaml
    /// for braid-gateway].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    path: Option<PathBuf>,
}

impl ConfigPath {
    /// The file given, or the daemon's default.
    pub fn resolve(self, daemon: Daemon) -> PathBuf {
        self.path.unwrap_or_else(|| daemon.default_config().to_owned())
    }
}

/// The subcommands both binaries have.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs the tunnel until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigPath,
        /// Sets an engine tunable over the config's `advanced:` (repeatable; `tuning` lists them).
        #[arg(long = "tune", value_name = "SECTION.FIELD=VALUE")]
        tune: Vec<String>,
    },
    /// Shows the running daemon's links and sessions: a table on a terminal, JSON (schema
    /// version 2) when piped, as scripts expect.
    Status {
        /// The config (it names the status address and token).
        #[command(flatten)]
        config: ConfigPath,
        /// Prints the JSON snapshot (docs/status.schema.json), even on a terminal.
        #[arg(long, conflicts_with = "table")]
        json: bool,
        /// Prints the table, even when piped.
        #[arg(long)]
        table: bool,
        /// Refreshes until Ctrl-C (or --count refreshes).
        #[arg(long)]
        watch: bool,
        /// Milliseconds between refreshes with --watch.
        #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(250..=60_000))]
        interval_ms: u64,
        /// Stops --watch after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    #[command(flatten)]
    Key(KeyCommand),
    /// Checks a config file: prints what would run, or every problem (file, line and key).
    CheckConfig {
        #[command(flatten)]
        config: ConfigPath,
        /// Sets an engine tunable, as `run --tune` does.
        #[arg(long = "tune", value_name = "SECTION.FIELD=VALUE")]
        tune: Vec<String>,
        /// Gateway: also compares the file with what the running gateway recorded in its runtime
        /// directory, and fails naming every changed key a reload cannot apply.
        #[arg(long)]
        against_running: bool,
        /// The running gateway's runtime directory (default: $RUNTIME_DIRECTORY, else
        /// /run/braid-gateway).
        #[arg(long, value_name = "DIR", requires = "against_running")]
        runtime_dir: Option<PathBuf>,
    },
    /// Gateway: starts a drain of the running gateway (SIGUSR1): every edge with a standby
    /// gateway moves its stream there, make-before-break, and stays off this one while the
    /// drain lasts; `--end` ends it (SIGUSR2). Edges without a standby stay.
    Drain {
        /// Ends the drain.
        #[arg(long)]
        end: bool,
        /// The gateway's PID (default: the one it recorded in $RUNTIME_DIRECTORY, else
        /// /run/braid-gateway).
        #[arg(long, value_name = "PID")]
        pid: Option<i32>,
    },
    /// Gateway: the fleet on etcd that the config's `fleet:` section names: its state, and the
    /// allowlist every gateway of it applies without a restart.
    Fleet {
        #[command(flatten)]
        config: ConfigPath,
        #[command(subcommand)]
        command: crate::fleet::admin::FleetCommand,
    },
    /// Lists every engine tunable with its value and what it tunes: the defaults, or what a
    /// config (and `--tune`) make of them.
    Tuning {
        /// The config file whose `advanced:` section to apply (none: the defaults).
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Sets an engine tunable, as `run --tune` does.
        #[arg(long = "tune", value_name = "SECTION.FIELD=VALUE")]
        tune: Vec<String>,
    },
}

impl Command {
    /// Runs the command for `daemon` and returns the process's exit code.
    pub fn run(self, daemon: Daemon) -> ExitCode {
        match (self, daemon) {
            (Self::Run { config, tune }, Daemon::Edge) => run_edge(&config.resolve(daemon), &tune),
            (Self::Run { config, tune }, Daemon::Gateway) => run_gateway(&config.resolve(daemon), &tune),
            (Self::Status { config, json, table, watch, interval_ms, count }, daemon) => {
                // Piped output stays JSON (what scripts have parsed since schema v1).
                let json = json || (!table && !std::io::IsTerminal::is_terminal(&std::io::stdout()));
                let view = StatusView { json, watch, interval: std::time::Duration::from_millis(interval_ms), count };
                status(daemon, &config.resolve(daemon), &view)
            }
            (Self::CheckConfig { against_running: true, .. }, Daemon::Edge) => finish::<&str, _>(Err(
                "--against-running is for the gateway: an edge's reload logs a WARN naming what it could not apply",
            )),
            (Self::CheckConfig { config, tune, .. }, Daemon::Edge) => check_edge_config(&config.resolve(daemon), &tune),
            (Self::CheckConfig { config, tune, against_running: false, .. }, Daemon::Gateway) => {
                check_gateway_config(&config.resolve(daemon), &tune)
            }
            (Self::CheckConfig { config, tune, runtime_dir, .. }, Daemon::Gateway) => {
                finish(check_against_running(&config.resolve(daemon), &tune, runtime_dir))
            }
            (Self::Tuning { config, tune }, daemon) => finish(tuning(daemon, config.as_deref(), &tune)),
            (Self::Drain { .. }, Daemon::Edge) => {
                finish::<&str, _>(Err("drain is for the gateway: it moves the edges off it to their standbys"))
            }
            (Self::Drain { end, pid }, Daemon::Gateway) => finish(drain(end, pid)),
            (Self::Fleet { .. }, Daemon::Edge) => {
                finish::<&str, _>(Err("fleet is for the gateway: an edge lists its gateways in its config"))
            }
            (Self::Fleet { config, command }, Daemon::Gateway) => finish(fleet(&config.resolve(daemon), command)),
            (Self::Key(command), _) => finish(command.run()),
        }
    }
}

/// Runs a `fleet` subcommand with the fleet settings of the gateway config at `path`.
fn fleet(path: &std::path::Path, command: crate::fleet::admin::FleetCommand) -> Result<String, String> {
    let settings = crate::config::load_gateway(path).map_err(|e| e.to_string())?;
    let fleet = settings
        .fleet
        .ok_or_else(|| format!("{}: no fleet: section; the gateway is not in a fleet", path.display()))?;
    command.run(&fleet)
}

/// Signals the running gateway to start (SIGUSR1) or end (SIGUSR2) a drain.
fn drain(end: bool, pid: Option<i32>) -> Result<String, String> {
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let path = crate::config::gateway_runtime_dir().join(crate::config::PID_FILE);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{}: {e}; a gateway records its PID there only under systemd (RuntimeDirectory=): give --pid",
                    path.display()
                )
            })?;
            text.trim().parse().map_err(|_| format!("{}: {:?} is not a PID", path.display(), text.trim()))?
        }
    };
    // A stale PID file must not signal another process (SIGUSR1 would end most).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|e| format!("process {pid}: {e}"))?;
    if comm.trim() != "braid-gateway" {
        return Err(format!("process {pid} is {:?}, not braid-gateway", comm.trim()));
    }
    let target = rustix::process::Pid::from_raw(pid).ok_or(format!("{pid} is not a PID"))?;
    let signal = if end { rustix::process::Signal::USR2 } else { rustix::process::Signal::USR1 };
    rustix::process::kill_process(target, signal).map_err(|e| format!("signalling process {pid}: {e}"))?;
    Ok(if end { format!("drain of gateway {pid} ended") } else { format!("gateway {pid} is draining") })
}

/// Key management subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Writes a new private key (mode 0600, never over an existing file) and prints its public key.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Prints the public key of a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

impl KeyCommand {
    /// Runs the command and returns the public key to print.
    ///
    /// # Errors
    /// [`KeyError`] if the key cannot be written, read, or is readable by others.
    pub fn run(&self) -> Result<PublicKey, KeyError> {
        match self {
            Self::Keygen { out } => generate_key_file(out),
            Self::Pubkey { key } => PrivateKey::read_file(key).map(|k| k.public()),
        }
    }
}

/// Ends a command: its output on stdout and exit 0, or `error: …` on stderr and exit 1.
pub fn finish<T: Display, E: Display>(result: Result<T, E>) -> ExitCode {
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `braid-edge check-config`: a summary of the config on stdout and exit 0, or its problems
/// (file, line, key) on stderr and exit 1.
/// Warns, on stderr, of interfaces the config names that this machine does not have (yet).
pub fn check_edge_config(path: &Path, tune: &[String]) -> ExitCode {
    finish(load_edge_tuned(path, tune).map(|settings| {
        warn_all(&edge_interface_warnings(&settings));
        edge_summary(&settings)
    }))
}

/// `braid-gateway check-config`: as [`check_edge_config`], for a gateway config.
pub fn check_gateway_config(path: &Path, tune: &[String]) -> ExitCode {
    finish(load_gateway_tuned(path, tune).map(|settings| {
        warn_all(&bridge_warnings(&settings.taps));
        gateway_summary(&settings)
    }))
}

fn warn_all(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

/// Whether this machine has a network interface of that name now.
fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The edge's uplink interfaces and TAP bridge this machine does not have.
fn edge_interface_warnings(settings: &EdgeSettings) -> Vec<String> {
    let mut warnings: Vec<String> = settings
        .uplinks
        .iter()
        .filter(|u| !interface_exists(&u.interface))
        .map(|u| {
            format!(
                "uplink {}: interface {} does not exist (yet): the edge binds it when it appears",
                u.name, u.interface
            )
        })
        .collect();
    warnings.extend(bridge_warnings(std::slice::from_ref(&settings.tap)));
    warnings
}

/// The TAP bridges this machine does not have.
fn bridge_warnings(taps: &[crate::config::TapSettings]) -> Vec<String> {
    taps.iter()
        .filter_map(|tap| tap.bridge.as_deref().filter(|b| !interface_exists(b)).map(|b| (tap, b)))
        .map(|(tap, bridge)| {
            format!("TAP {}: bridge {bridge} does not exist: the daemon cannot start until it does", tap.name)
        })
        .collect()
}

/// `braid-gateway check-config --against-running`: the config's summary if a reload applies
/// every change it makes to the running gateway's; otherwise the keys that need a restart.
///
/// # Errors
/// The config's problems, a runtime directory with no record, or the keys a reload cannot apply.
pub fn check_against_running(path: &Path, tune: &[String], dir: Option<PathBuf>) -> Result<String, String> {
    let settings = load_gateway_tuned(path, tune)?;
    let file = dir.unwrap_or_else(crate::config::gateway_runtime_dir).join(crate::config::RUNNING_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e}: no running gateway recorded its settings there (it does in its runtime directory)",
            file.display()
        )
    })?;
    let changed = crate::config::RestartOnly::from_text(&text).changed_in(&settings);
    if changed.is_empty() {
        Ok(format!("{}\na reload applies every change", gateway_summary(&settings)))
    } else {
        Err(format!(
            "{}: a reload cannot apply {}: the running gateway keeps its values until it restarts",
            path.display(),
            changed.join(", ")
        ))
    }
}

/// Applies `--tune section.field=value` arguments, in order, over `tuning`, and checks the
/// tunables that bound one another once all are set.
///
/// # Errors
/// The first argument refused, and why.
pub fn apply_tune(tuning: &mut Tuning, tune: &[String]) -> Result<(), String> {
    tune.iter().try_for_each(|t| tuning.apply(t).map_err(|error| format!("--tune {t}: {error}")))?;
    tuning.validate().map_err(|error| format!("--tune: {error}"))
}

/// An edge config with `--tune` applied.
///
/// # Errors
/// The config's problems, or the first `--tune` refused.
pub fn load_edge_tuned(path: &Path, tune: &[String]) -> Result<EdgeSettings, String> {
    let mut settings = load_edge(path).map_err(|e| e.to_string())?;
    apply_tune(&mut settings.edge.session.tuning, tune)?;
    Ok(settings)
}

/// A gateway config with `--tune` applied.
///
/// # Errors
/// The config's problems, or the first `--tune` refused.
pub fn load_gateway_tuned(path: &Path, tune: &[String]) -> Result<GatewaySettings, String> {
    let mut settings = load_gateway(path).map_err(|e| e.to_string())?;
    apply_tune(&mut settings.gateway.session.tuning, tune)?;
    Ok(settings)
}

/// `tuning`: every tunable, one per line, as the defaults, a config or `--tune` set it.
///
/// # Errors
/// The config's problems, or the first `--tune` refused.
pub fn tuning(daemon: Daemon, config: Option<&Path>, tune: &[String]) -> Result<String, String> {
    let mut tuning = match (config, daemon) {
        (None, _) => Tuning::default(),
        (Some(path), Daemon::Edge) => load_edge(path).map_err(|e| e.to_string())?.edge.session.tuning,
        (Some(path), Daemon::Gateway) => load_gateway(path).map_err(|e| e.to_string())?.gateway.session.tuning,
    };
    apply_tune(&mut tuning, tune)?;
    Ok(tuning.to_string().trim_end().to_owned())
}

/// The tunables that differ from the defaults, for a summary.
fn tuned(tuning: &Tuning) -> String {
    let changed = tuning.changed();
    if changed.is_empty() { String::new() } else { format!("; tuned: {}", changed.join(", ")) }
}

/// One paragraph saying what an edge would run with.
pub fn edge_summary(settings: &EdgeSettings) -> String {
    let edge = &settings.edge;
    let gateway = edge.session.links.first().map_or_else(|| "?".into(), |link| link.remote.to_string());
    let uplinks: Vec<String> = settings
        .uplinks
        .iter()
        .zip(&edge.session.links)
        .map(|(uplink, link)| {
            let source = uplink.source.map(|ip| format!(" from {ip}")).unwrap_or_default();
            let rate = link.rate_bps.map(|bps| format!(", {} Mbit/s", bps as f64 / 1e6)).unwrap_or_default();
            let spend = match uplink.cap {
                Some(cap) => format!(", metered, cap {} MB a {}", cap.bytes as f64 / 1e6, cap.period.as_str()),
                None if uplink.metered => ", metered".to_owned(),
                None => String::new(),
            };
            format!(
                "{} on {}{source} ({}, priority {}{rate}{spend})",
                uplink.name, uplink.interface, uplink.id, link.priority
            )
        })
        .collect();
    let standbys: String = edge
        .standbys
        .iter()
        .map(|g| format!("; standby gateway {} (key {}{})", g.address, g.public_key, psk_note(g.psk.is_some())))
        .collect();
    format!(
        "{}: OK. Edge to gateway {gateway} (key {}{}){standbys}; mode {}, cipher {}, latency budget {} ms{}{}; {}; {} \
         uplink{}: {}; status {}{}.",
        settings.path.display(),
        edge.gateway_key,
        psk_note(edge.psk.is_some()),
        edge.session.mode.as_str(),
        cipher_name(edge.cipher),
        edge.session.latency_budget.as_millis(),
        if edge.session.retransmit { "" } else { ", no retransmission" },
        edge.session.fec.map_or_else(String::new, |f| format!(
            ", forward error correction: {} frames' worth of recovery per {} (blocks closed after {} ms)",
            f.parity,
            f.block,
            f.max_delay.as_millis()
        )),
        tap_summary(&settings.tap),
        uplinks.len(),
        if uplinks.len() == 1 { "" } else { "s" },
        uplinks.join(", "),
        status_summary(&settings.status),
        tuned(&edge.session.tuning),
    )
}

fn psk_note(psk: bool) -> &'static str {
    if psk { ", with a PSK" } else { "" }
}

/// One paragraph saying what a gateway would run with.
pub fn gateway_summary(settings: &GatewaySettings) -> String {
    let gateway = &settings.gateway;
    let listen: Vec<String> = settings.listen.iter().map(ToString::to_string).collect();
    let edges: Vec<String> = gateway
        .edges
        .iter()
        .zip(&settings.taps)
        .map(|(edge, tap)| format!("{} on {}{}", edge.name, tap_summary(tap), psk_note(edge.psk.is_some())))
        .collect();
    format!(
        "{}: OK. Gateway listening on {} with {}, mode {}, latency budget {} ms, {} handshakes/s before \
         cookies; {} allowed edge{}: {}; status {}{}.",
        settings.path.display(),
        listen.join(" and "),
        workers_summary(settings.workers),
        gateway.session.mode.as_str(),
        gateway.session.latency_budget.as_millis(),
        gateway.handshake_rate,
        edges.len(),
        if edges.len() == 1 { "" } else { "s" },
        edges.join(", "),
        status_summary(&settings.status),
        tuned(&gateway.session.tuning),
    )
}

fn workers_summary(workers: crate::config::Workers) -> String {
    match (workers, workers.count()) {
        (crate::config::Workers::Auto, n) => format!("one worker per core ({n} here)"),
        (_, 1) => "one worker".into(),
        (_, n) => format!("{n} workers"),
    }
}

fn status_summary(status: &crate::config::StatusSettings) -> String {
    match (status.enabled, &status.token) {
        (false, _) => "off".into(),
        (true, None) => format!("on http://{}/", status.listen),
        (true, Some(_)) => format!("on http://{}/ (token required)", status.listen),
    }
}

fn tap_summary(tap: &crate::config::TapSettings) -> String {
    let bridge = tap.bridge.as_ref().map(|b| format!(", in bridge {b}")).unwrap_or_default();
    format!("TAP {} (MTU {}{bridge})", tap.name, tap.mtu)
}

/// `run`: loads the edge config and runs until SIGINT or SIGTERM.
pub fn run_edge(path: &Path, tune: &[String]) -> ExitCode {
    crate::io::init_logging("braid-edge");
    match load_edge_tuned(path, tune) {
        Ok(settings) => finish(crate::io::edge::run(settings).map(|()| "stopped")),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}

/// `run`: loads the gateway config and runs until SIGINT or SIGTERM (SIGHUP reloads the edges).
pub fn run_gateway(path: &Path, tune: &[String]) -> ExitCode {
    crate::io::init_logging("braid-gateway");
    match load_gateway_tuned(path, tune) {
        Ok(settings) => finish(crate::io::gateway::run(settings).map(|()| "stopped")),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}

/// How `status` shows the snapshot.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// JSON instead of the table.
    pub json: bool,
    /// Refresh until Ctrl-C.
    pub watch: bool,
    /// Time between refreshes.
    pub interval: std::time::Duration,
    /// Stop after this many refreshes.
    pub count: Option<u64>,
}

/// `status`: the running daemon's snapshot, found through its config, as a table or JSON; with
/// `--watch`, refreshed until Ctrl-C.
pub fn status(daemon: Daemon, path: &Path, view: &StatusView) -> ExitCode {
    let settings = match daemon {
        Daemon::Edge => crate::config::load_edge(path).map(|s| s.status),
        Daemon::Gateway => crate::config::load_gateway(path).map(|s| s.status),
    };
    let settings = match settings {
        Ok(settings) if settings.enabled => settings,
        Ok(_) => return finish::<&str, _>(Err(format!("{}: status.enabled is false", path.display()))),
        Err(error) => return finish::<&str, _>(Err(error)),
    };
    let endpoint = crate::io::status::Endpoint { address: settings.listen, token: settings.token };
    let show = |view: &StatusView| {
        endpoint.status().map(|(text, status)| if view.json { text.trim_end().to_owned() } else { table(&status) })
    };
    if !view.watch {
        return finish(show(view));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return finish::<&str, _>(Err(error)),
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    runtime.block_on(async {
        let mut shown = 0u64;
        loop {
            let text = match show(view) {
                Ok(text) => text,
                Err(error) => format!("error: {error}"),
            };
            if view.json {
                println!("{text}");
            } else if terminal {
                // Home the cursor and clear the screen: the table redraws in place.
                print!("\x1b[H\x1b[2J{text}\n(every {} ms; Ctrl-C to stop)\n", view.interval.as_millis());
            } else {
                // Into a pipe or a file: one table after another, no terminal codes.
                println!("{text}\n");
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            shown += 1;
            if view.count.is_some_and(|count| shown >= count) {
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                () = tokio::time::sleep(view.interval) => {}
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
    })
}

/// Bytes sent beyond the first copies, as a share of the first copies' bytes ("-" before any).
fn extra_share(extra: u64, first: u64) -> String {
    if first == 0 { "-".to_owned() } else { format!("{:.1}%", extra as f64 * 100.0 / first as f64) }
}

/// The snapshot as a terminal table: one block per edge, one row per link.
pub fn table(status: &crate::io::status::Status) -> String {
    use core::fmt::Write as _;
    let draining = matches!(&status.body, crate::io::status::Body::Gateway(g) if g.draining);
    let mut out =
        format!("braid {} · up {:.0} s{}\n", status.role(), status.uptime_s, if draining { " · DRAINING" } else { "" });
    for edge in status.edges() {
        let level = match edge.safety.level.as_str() {
            "safe" => "SAFE",
            "at_risk" => "AT RISK",
            _ => "DOWN",
        };
        let _ = writeln!(out, "\n{}: stream {level} ({})", edge.name, edge.safety.reason);
        if let Some(problem) = &edge.handshake_problem {
            let _ = writeln!(
                out,
                "  handshake{}: {} from {} for {:.0} s, {} attempts on {}",
                if problem.ongoing { "" } else { " (last trouble, since resolved)" },
                problem.cause,
                problem.gateway,
                problem.waited_s,
                problem.attempts,
                if problem.uplinks.is_empty() { "no uplink".to_owned() } else { problem.uplinks.join(", ") }
            );
        }
        let Some(session) = &edge.session else { continue };
        let _ = writeln!(
            out,
            "  {} · delivered {} · lost {} · late {} · reordered {} · recovered {} · dup {} · extra {} · drops {} · hold {:.0} ms",
            session.mode,
            session.counters.frames_delivered,
            session.counters.frames_lost,
            session.counters.frames_late,
            session.counters.frames_reordered,
            session.counters.frames_recovered,
            session.counters.duplicate_copies,
            extra_share(session.counters.data_bytes_extra, session.counters.data_bytes_first),
            session.drops,
            session.reorder_hold_ms
        );
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10} {:>10} {:>6} {:>6} {:>6}",
            "LINK", "STATE", "RTT ms", "JIT ms", "LOSS>", "LOSS<", "OUT", "RATE", "IN", "SHARE>", "1ST<", "DGRAM"
        );
        for link in &session.links {
            let rtt = link.rtt_ms.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
            let _ = writeln!(
                out,
                "  {:<12} {:<9} {:>8} {:>7.1} {:>6.1}% {:>6.1}% {:>10} {:>10} {:>10} {:>5.0}% {:>5.0}% {:>6}",
                link.name,
                link.state,
                rtt,
                link.jitter_ms,
                link.tx_loss * 100.0,
                link.rx_loss * 100.0,
                rate(link.tx_bps),
                // An idle link's rate is the controller's guess, not a measurement.
                if link.rate_measured { rate(link.rate_bps as f64) } else { "unmeasured".to_owned() },
                rate(link.rx_bps),
                link.tx_share * 100.0,
                link.rx_share * 100.0,
                // The largest datagram the path carries as probed, marked while the search is on.
                format!("{}{}", link.max_datagram, if link.max_datagram_settled { "" } else { "?" })
            );
        }
        for link in session.links.iter().filter(|l| l.metered) {
            let used = link.period_bytes.unwrap_or(0) as f64 / 1e9;
            let _ = match (link.cap_bytes, &link.cap_period) {
                (Some(cap), Some(period)) => writeln!(
                    out,
                    "  {}: {used:.2} of {:.2} GB this {period} ({:.0}%){}",
                    link.name,
                    cap as f64 / 1e9,
                    used * 1e9 * 100.0 / cap.max(1) as f64,
                    if link.spend == "backup_only" { ", cap used: backup only" } else { "" }
                ),
                _ => writeln!(out, "  {}: {used:.2} GB this month (metered, no cap)", link.name),
            };
        }
        if let Some(last) = edge.transitions.last() {
            let _ = writeln!(out, "  last change: {} {} → {} ({})", last.link, last.from, last.to, last.reason);
        }
    }
    if let crate::io::status::Body::Edge(body) = &status.body
        && body.gateways.len() > 1
    {
        let _ = writeln!(out, "\n  {:<24} {:<11} UPLINKS", "GATEWAY", "ROLE");
        for gateway in &body.gateways {
            let links: Vec<String> = gateway.links.iter().map(|(name, state)| format!("{name} {state}")).collect();
            let _ = writeln!(out, "  {:<24} {:<11} {}", gateway.address, gateway.role, links.join(", "));
        }
        if body.counters.0.gateway_takeovers > 0 {
            let _ = writeln!(
                out,
                "  takeovers: {} ({} frames moved)",
                body.counters.0.gateway_takeovers, body.counters.0.frames_moved
            );
        }
    }
    out
}

fn rate(bps: f64) -> String {
    if bps >= 1e6 { format!("{:.1} Mb/s", bps / 1e6) } else { format!("{:.0} kb/s", bps / 1e3) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::endpoint::edge::EdgeStats;
    use crate::io::status::{Body, EdgeView, Flat, GatewayBody, Safety, Status};

    #[test]
    fn tune_arguments_that_bound_one_another_are_checked_once_all_are_set() {
        let mut tuning = Tuning::default();
        let pair = ["cc.min_drain_factor=0.95".to_owned(), "cc.drain_factor=0.97".to_owned()];
        assert_eq!(apply_tune(&mut tuning, &pair), Ok(()));
        let error = apply_tune(&mut Tuning::default(), &pair[..1]).unwrap_err();
        assert_eq!(error, "--tune: cc.min_drain_factor: at most cc.drain_factor");
    }

    /// An edge's snapshot for the table.
    fn edge_status(
        session: Option<crate::io::status::SessionView>,
        counters: EdgeStats,
        gateways: Vec<crate::io::status::GatewayView>,
    ) -> Status {
        Status {
            version: crate::io::status::SCHEMA_VERSION,
            time_unix_ms: 0,
            uptime_s: 1.0,
            body: Body::Edge(Box::new(crate::io::status::EdgeBody {
                edge: EdgeView {
                    name: "van-1".into(),
                    session,
                    safety: Safety::of(None),
                    transitions: Vec::new(),
                    handshake_problem: None,
                },
                counters: Flat(counters),
                drops: 0,
                drops_by_reason: BTreeMap::new(),
                gateways,
            })),
        }
    }

    #[test]
    fn the_table_marks_an_idle_links_rate_as_unmeasured() {
        let mut session = crate::io::metrics::tests::session();
        session.links =
            vec![crate::io::metrics::tests::link(0, "dsl", "up"), crate::io::metrics::tests::link(1, "lte", "up")];
        session.links[1].rate_measured = false;
        let text = table(&edge_status(Some(session), EdgeStats::default(), Vec::new()));
        let row = |name: &str| text.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
        assert!(row("dsl").contains("8.0 Mb/s"), "{text}");
        assert!(row("lte").contains("unmeasured") && !row("lte").contains("8.0 Mb/s"), "{text}");
    }

    #[test]
    fn the_table_lists_an_edges_gateways_with_their_roles_and_takeovers() {
        let gateway = |address: &str, role: &str| crate::io::status::GatewayView {
            address: address.into(),
            role: role.into(),
            links: [("dsl".to_owned(), "up".to_owned()), ("lte".to_owned(), "down".to_owned())].into(),
        };
        let stats = EdgeStats { gateway_takeovers: 1, frames_moved: 42, ..EdgeStats::default() };
        let gateways = vec![gateway("192.0.2.1:4754", "down"), gateway("192.0.2.2:4754", "active")];
        let text = table(&edge_status(None, stats, gateways));
        let row = |name: &str| text.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
        assert!(row("192.0.2.1:4754").contains("down") && row("192.0.2.1:4754").contains("dsl up, lte down"), "{text}");
        assert!(row("192.0.2.2:4754").contains("active"), "{text}");
        assert!(row("takeovers").contains("1 (42 frames moved)"), "{text}");
    }

    #[test]
    fn the_table_names_each_edge_with_its_safety_and_says_when_it_has_no_session() {
        let edge = |name: &str| EdgeView {
            name: name.into(),
            session: None,
            safety: Safety::of(None),
            transitions: Vec::new(),
            handshake_problem: None,
        };
        let status = Status {
            version: crate::io::status::SCHEMA_VERSION,
            time_unix_ms: 0,
            uptime_s: 61.0,
            body: Body::Gateway(Box::new(GatewayBody {
                counters: Flat::default(),
                sessions: 0,
                draining: true,
                drops: 0,
                drops_by_reason: BTreeMap::new(),
                edges: vec![edge("van-1"), edge("van-2")],
                fleet: None,
            })),
        };
        let text = table(&status);
        assert!(text.starts_with("braid gateway · up 61 s · DRAINING\n"), "{text}");
        assert!(text.contains("van-1: stream DOWN (no session yet)"), "{text}");
        assert!(text.contains("van-2: stream DOWN"), "{text}");
    }

    #[test]
    fn drain_signals_nothing_but_a_braid_gateway() {
        let me = std::process::id() as i32;
        let error = drain(false, Some(me)).unwrap_err();
        assert!(error.contains("not braid-gateway"), "{error}");
        let error = drain(true, Some(i32::MAX)).unwrap_err();
        assert!(error.starts_with(&format!("process {}", i32::MAX)), "{error}");
    }

    #[test]
    fn tuning_lists_every_tunable_and_tune_arguments_apply_in_order() {
        let listing = tuning(Daemon::Edge, None, &[]).unwrap();
        assert_eq!(listing.lines().count(), Tuning::default().entries().count());
        assert!(listing.contains("monitor.probe_interval = 50ms  # How often each link is probed."), "{listing}");
        let tune = ["monitor.probe_interval=20ms".to_owned(), "monitor.probe_interval=30ms".to_owned()];
        let listing = tuning(Daemon::Gateway, None, &tune).unwrap();
        assert!(listing.contains("monitor.probe_interval = 30ms"), "the last one wins: {listing}");
        let error = tuning(Daemon::Edge, None, &["monitor.probe=1ms".to_owned()]).unwrap_err();
        assert!(error.starts_with("--tune monitor.probe=1ms: "), "{error}");
        let error = tuning(Daemon::Edge, None, &["monitor.probe_interval".to_owned()]).unwrap_err();
        assert!(error.contains("is not section.field=value"), "{error}");
    }
}
