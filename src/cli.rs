//! Command-line pieces both binaries share, so `braid-edge` and `braid-gateway` behave alike.

use core::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{EdgeSettings, GatewaySettings, cipher_name, load_edge, load_gateway};
use crate::keys::{KeyError, PrivateKey, PublicKey, generate_key_file};

/// Which daemon a command line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `braid-edge`.
    Edge,
    /// `braid-gateway`.
    Gateway,
}

/// The subcommands both binaries have.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs the tunnel until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Prints the running daemon's status (JSON, schema version 1).
    Status {
        /// The config file (it names the status address).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    #[command(flatten)]
    Key(KeyCommand),
    /// Checks a config file: prints what would run, or the first problem (file, line and key).
    CheckConfig {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

impl Command {
    /// Runs the command for `daemon` and returns the process's exit code.
    pub fn run(self, daemon: Daemon) -> ExitCode {
        match (self, daemon) {
            (Self::Run { config }, Daemon::Edge) => run_edge(&config),
            (Self::Run { config }, Daemon::Gateway) => run_gateway(&config),
            (Self::Status { config }, Daemon::Edge) => status_edge(&config),
            (Self::Status { config }, Daemon::Gateway) => status_gateway(&config),
            (Self::CheckConfig { config }, Daemon::Edge) => check_edge_config(&config),
            (Self::CheckConfig { config }, Daemon::Gateway) => check_gateway_config(&config),
            (Self::Key(command), _) => finish(command.run()),
        }
    }
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

/// `braid-edge check-config`: a summary of the config on stdout and exit 0, or its first problem
/// (file, line, key) on stderr and exit 1.
pub fn check_edge_config(path: &Path) -> ExitCode {
    finish(load_edge(path).map(|settings| edge_summary(&settings)))
}

/// `braid-gateway check-config`: as [`check_edge_config`], for a gateway config.
pub fn check_gateway_config(path: &Path) -> ExitCode {
    finish(load_gateway(path).map(|settings| gateway_summary(&settings)))
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
            format!("{} on {}{source} ({}, priority {}{rate})", uplink.name, uplink.interface, uplink.id, link.priority)
        })
        .collect();
    format!(
        "{}: OK. Edge to gateway {gateway} (key {}{}), mode {}, cipher {}, latency budget {} ms; {}; {} uplink{}: {}; \
         status on {}.",
        settings.path.display(),
        edge.gateway_key,
        if edge.psk.is_some() { ", with a PSK" } else { "" },
        edge.session.mode.as_str(),
        cipher_name(edge.cipher),
        edge.session.latency_budget.as_millis(),
        tap_summary(&settings.tap),
        uplinks.len(),
        if uplinks.len() == 1 { "" } else { "s" },
        uplinks.join(", "),
        settings.status_listen,
    )
}

/// One paragraph saying what a gateway would run with.
pub fn gateway_summary(settings: &GatewaySettings) -> String {
    let gateway = &settings.gateway;
    let listen: Vec<String> = settings.listen.iter().map(ToString::to_string).collect();
    let edges: Vec<String> = gateway
        .edges
        .iter()
        .zip(&settings.taps)
        .map(|(edge, tap)| {
            format!("{} on {}{}", edge.name, tap_summary(tap), if edge.psk.is_some() { " with a PSK" } else { "" })
        })
        .collect();
    format!(
        "{}: OK. Gateway listening on {}, mode {}, latency budget {} ms, {} handshakes/s before cookies; \
         {} allowed edge{}: {}; status on {}.",
        settings.path.display(),
        listen.join(" and "),
        gateway.session.mode.as_str(),
        gateway.session.latency_budget.as_millis(),
        gateway.handshake_rate,
        edges.len(),
        if edges.len() == 1 { "" } else { "s" },
        edges.join(", "),
        settings.status_listen,
    )
}

fn tap_summary(tap: &crate::config::TapSettings) -> String {
    let bridge = tap.bridge.as_ref().map(|b| format!(", in bridge {b}")).unwrap_or_default();
    format!("TAP {} (MTU {}{bridge})", tap.name, tap.mtu)
}

/// `run`: loads the edge config and runs until SIGINT or SIGTERM.
pub fn run_edge(path: &Path) -> ExitCode {
    crate::io::init_logging();
    match crate::config::load_edge(path) {
        Ok(settings) => finish(crate::io::edge::run(settings).map(|()| "stopped")),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}

/// `run`: loads the gateway config and runs until SIGINT or SIGTERM (SIGHUP reloads the edges).
pub fn run_gateway(path: &Path) -> ExitCode {
    crate::io::init_logging();
    match crate::config::load_gateway(path) {
        Ok(settings) => finish(crate::io::gateway::run(settings).map(|()| "stopped")),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}

/// `status`: prints the running edge's JSON snapshot, found through its config.
pub fn status_edge(path: &Path) -> ExitCode {
    match crate::config::load_edge(path) {
        Ok(settings) => finish(crate::io::status::fetch(settings.status_listen).map(|s| s.trim_end().to_string())),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}

/// `status`: prints the running gateway's JSON snapshot, found through its config.
pub fn status_gateway(path: &Path) -> ExitCode {
    match crate::config::load_gateway(path) {
        Ok(settings) => finish(crate::io::status::fetch(settings.status_listen).map(|s| s.trim_end().to_string())),
        Err(error) => finish::<&str, _>(Err(error)),
    }
}
