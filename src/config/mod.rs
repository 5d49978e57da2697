//! The YAML config files of `braid-edge` and `braid-gateway`, loaded into what the driver runs.
//!
//! A config error names the file, the line and the key, and says what would be accepted. Syntax,
//! type and unknown-key errors come located from the YAML parser, which stops at the first; the
//! rules checked after parsing (addresses, keys, names, ranges, duplicates) are all checked, and
//! every problem they find is reported at once, each at its line, found by walking the file's
//! block structure for the key path (see [`line_of`]).
//!
//! * `file.rs`: the files as written, what the parser reads;
//! * `rules.rs`: the rules that turn them into settings;
//! * `secrets.rs`: key, PSK and token files and their permission checks;
//! * `locate.rs`: reading a file, and the line of a key path or a parser error.
//!
//! Relative paths in a config (`private_key_file`, `psk_file`) are relative to the config file's
//! directory, so a config and its keys can move together.

mod file;
mod fleet;
mod locate;
mod reload;
mod rules;
mod secrets;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::LinkId;
use crate::crypto::Cipher;
use crate::endpoint::edge::EdgeConfig;
use crate::endpoint::gateway::GatewayConfig;
use crate::wire::DEFAULT_PORT;

use self::file::{EdgeFile, GatewayFile};
pub use self::fleet::{DEFAULT_PREFIX, FleetSettings, FleetTls, fleet_tap_name};
use self::locate::Document;
pub use self::locate::{key_at, line_of};

/// Whether `name` may name a gateway or an edge in the fleet's keys.
pub fn is_fleet_name(name: &str) -> bool {
    fleet::fleet_name("", name).is_ok()
}

/// Whether `name` is a valid Linux interface name.
pub fn is_interface_name(name: &str) -> bool {
    rules::interface_name("", name).is_ok()
}
pub use self::reload::EdgeReload;
use self::rules::{edge_settings, gateway_settings};

/// A TAP device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSettings {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// MTU of the TAP (the inner Ethernet MTU).
    pub mtu: u16,
    /// MAC address; the kernel picks one if absent.
    pub mac: Option<[u8; 6]>,
    /// A bridge to join the TAP to, if any.
    pub bridge: Option<String>,
}

/// One uplink of an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSettings {
    /// Its link id (its position in the config).
    pub id: LinkId,
    /// Its name, for logs.
    pub name: String,
    /// The interface its socket is bound to (SO_BINDTODEVICE).
    pub interface: String,
    /// The source address to bind, if fixed.
    pub source: Option<IpAddr>,
    /// Whether it is paid by the byte (`auto` spends duplicates on it only while no unmetered
    /// link is up).
    pub metered: bool,
    /// Its data cap, if any (a cap makes it metered).
    pub cap: Option<DataCap>,
}

/// A data cap: bytes per period, both directions counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCap {
    /// Bytes allowed per period.
    pub bytes: u64,
    /// The period.
    pub period: CapPeriod,
}

/// The period a data cap counts over, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapPeriod {
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
}

impl CapPeriod {
    /// As the config names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// The local HTTP endpoint: `/status`, `/metrics` and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    /// Where it listens (localhost by default).
    pub listen: SocketAddr,
    /// Whether it runs at all (and the driver takes snapshots).
    pub enabled: bool,
    /// The access token every request must carry, if any; required off loopback.
    pub token: Option<String>,
}

/// Everything `braid-edge run` needs.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The config file it came from.
    pub path: PathBuf,
    /// This edge's name in logs, metrics and the dashboard.
    pub name: String,
    /// The engine's config (keys loaded, one link per uplink, each to the gateway's address).
    pub edge: EdgeConfig,
    /// The TAP.
    pub tap: TapSettings,
    /// The uplinks, in link-id order.
    pub uplinks: Vec<UplinkSettings>,
    /// The status, metrics and dashboard endpoint.
    pub status: StatusSettings,
    /// Where the edge sends its bitrate advice (UDP), if anywhere.
    pub bitrate_feed: Option<SocketAddr>,
}

/// Everything `braid-gateway run` needs.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The config file it came from.
    pub path: PathBuf,
    /// The engine's config (key loaded, the allowlist).
    pub gateway: GatewayConfig,
    /// UDP addresses to listen on (IPv4 and/or IPv6).
    pub listen: Vec<SocketAddr>,
    /// Whether the listen addresses are bound even when this host does not hold them (yet): a
    /// virtual IP that keepalived moves between a pair of gateways.
    pub nonlocal_bind: bool,
    /// How many workers share the sessions.
    pub workers: Workers,
    /// One TAP per allowed edge, in allowlist order (index = `PeerId`).
    pub taps: Vec<TapSettings>,
    /// The status, metrics and dashboard endpoint.
    pub status: StatusSettings,
    /// The fleet it takes part in, if any.
    pub fleet: Option<FleetSettings>,
}

/// What a gateway runs with that a reload cannot change, one `(key, value)` per config key
/// (each kept edge's TAP under `edges[PUBLIC_KEY].tap`). A running gateway writes it to its
/// runtime directory ([`RUNNING_FILE`]) so that `check-config --against-running` can tell which
/// of a file's changes need a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestartOnly(pub Vec<(String, String)>);

/// The file in the gateway's runtime directory that holds its [`RestartOnly`] settings.
pub const RUNNING_FILE: &str = "restart-only";

/// The file in the gateway's runtime directory that holds its PID.
pub const PID_FILE: &str = "braid-gateway.pid";

/// The runtime directory a gateway records its restart-only settings in: systemd's
/// `$RUNTIME_DIRECTORY` (the first, if it lists several), else `/run/braid-gateway`.
pub fn gateway_runtime_dir() -> PathBuf {
    std::env::var("RUNTIME_DIRECTORY")
        .ok()
        .and_then(|dirs| dirs.split(':').next().filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/braid-gateway"))
}

impl RestartOnly {
    /// As written to [`RUNNING_FILE`]: one `key<TAB>value` line each.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect()
    }

    /// Reads what [`Self::to_text`] wrote.
    pub fn from_text(text: &str) -> Self {
        Self(text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The config keys whose value in `new` differs from this, in config order: what a reload
    /// from `new` cannot apply. An edge that is new has no TAP running yet, so only kept edges'
    /// TAPs count.
    pub fn changed_in(&self, new: &GatewaySettings) -> Vec<String> {
        new.restart_only()
            .0
            .iter()
            .filter(|(key, value)| self.get(key).is_some_and(|running| running != value))
            .map(|(key, _)| {
                let edge = key.strip_prefix("edges[").and_then(|k| k.strip_suffix("].tap"));
                let name = edge.and_then(|k| new.gateway.edges.iter().find(|e| e.public_key.to_base64() == k));
                name.map_or_else(|| key.clone(), |e| format!("edges[{}].tap", e.name))
            })
            .collect()
    }
}

impl GatewaySettings {
    /// What this config sets that a reload cannot change.
    pub fn restart_only(&self) -> RestartOnly {
        let s = &self.gateway.session;
        let status = &self.status;
        let mut settings: Vec<(String, String)> = [
            ("listen", format!("{:?}", self.listen)),
            ("nonlocal_bind", self.nonlocal_bind.to_string()),
            ("private_key_file", self.gateway.private_key.public().to_base64()),
            ("handshake_rate", self.gateway.handshake_rate.to_string()),
            ("workers", self.workers.to_string()),
            ("mode", s.mode.as_str().to_owned()),
            ("latency_budget_ms", s.latency_budget.as_millis().to_string()),
            ("path_mtu", s.max_datagram.to_string()),
            ("retransmit", s.retransmit.to_string()),
            ("mss_clamp", s.clamp_mss.to_string()),
            ("advanced", format!("{:?}", s.tuning)),
            // The token itself never goes to disk: only whether there is one.
            ("status", format!("{} {} token={}", status.listen, status.enabled, status.token.is_some())),
            // Nor the etcd password.
            ("fleet", self.fleet.as_ref().map(FleetSettings::restart_text).unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (entry, tap) in self.gateway.edges.iter().zip(&self.taps) {
            settings.push((format!("edges[{}].tap", entry.public_key.to_base64()), format!("{tap:?}")));
        }
        RestartOnly(settings)
    }

    /// What a reload from `new` cannot apply to a gateway running with `self`: the config keys
    /// that changed and need a restart. A reload applies the allowlist (edges added, removed,
    /// their keys and PSKs); the rest is set at start.
    pub fn restart_needed(&self, new: &Self) -> Vec<String> {
        self.restart_only().changed_in(new)
    }
}

/// A config the binaries refuse, located in its file.
///
/// Displayed as `FILE:LINE: KEY: MESSAGE`; the line is left out when unknown and the key when the
/// problem is the file as a whole (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The key path, e.g. `uplinks[1].interface`.
    pub key: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
    /// The file's other problems, in the order they were found.
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    /// Every problem: this one, then the others.
    pub fn problems(&self) -> impl Iterator<Item = &Self> {
        core::iter::once(self).chain(&self.more)
    }
}

impl core::fmt::Display for ConfigError {
    /// One line per problem: `file:line: key: message`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, problem) in self.problems().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", problem.file.display())?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
            if !problem.key.is_empty() {
                write!(f, "{}: ", problem.key)?;
            }
            f.write_str(&problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The path MTUs a config may set (`path_mtu`): the IPv6 minimum up to jumbo frames.
pub const PATH_MTU_RANGE: core::ops::RangeInclusive<i64> = 1280..=9000;
/// `fec.block`: frames per block.
pub const FEC_BLOCK_RANGE: core::ops::RangeInclusive<i64> = 1..=braid_engine::fec::MAX_ORIGINALS as i64;
/// `fec.parity`: frames' worth of recovery per block.
pub const FEC_PARITY_RANGE: core::ops::RangeInclusive<i64> = 1..=braid_engine::fec::MAX_PARITY as i64;
/// `fec.max_delay_ms`: the most a block stays open.
pub const FEC_MAX_DELAY_MS_RANGE: core::ops::RangeInclusive<i64> = 1..=100;
/// What IP and UDP take of a path's MTU: the IPv6 header (40) and UDP (8), so one setting serves
/// either family.
pub const IP_UDP_OVERHEAD: usize = 48;
/// The TAP MTU when the config names none.
pub const DEFAULT_TAP_MTU: u16 = 1500;
/// The TAP MTUs a config may set: the IPv4 minimum up to jumbo frames.
pub const TAP_MTU_RANGE: core::ops::RangeInclusive<i64> = 576..=9000;
/// The edge's TAP when the config names none.
pub const DEFAULT_EDGE_TAP: &str = "braid0";
/// The gateway names edge `i`'s TAP this prefix plus `i` when the config names none.
pub const DEFAULT_GATEWAY_TAP_PREFIX: &str = "braid-";
/// Where the edge serves `status` by default (localhost only).
pub const DEFAULT_EDGE_STATUS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7474);
/// Where the gateway serves `status` by default (localhost only).
pub const DEFAULT_GATEWAY_STATUS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7475);
/// The shortest access token a config may set.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest access token a config may set.
pub const MAX_TOKEN_LEN: usize = 256;
/// The edge's name when the config names none and the host has no name.
pub const DEFAULT_EDGE_NAME: &str = "edge";
/// The gateway's UDP address when the config names none.
pub const DEFAULT_GATEWAY_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
/// The latency budgets a config may set, in milliseconds.
pub const LATENCY_BUDGET_MS_RANGE: core::ops::RangeInclusive<i64> = 1..=5000;
/// The hold-downs a config may set before the stream returns to an earlier gateway, in seconds
/// (0: it never returns by itself).
pub const GATEWAY_RETURN_AFTER_S_RANGE: core::ops::RangeInclusive<i64> = 0..=86_400;
/// The hold-down when the config sets none.
pub const DEFAULT_GATEWAY_RETURN_AFTER_S: u32 = 60;
/// How many workers a gateway may run.
pub const WORKERS_RANGE: core::ops::RangeInclusive<i64> = 1..=64;

/// How many worker threads a gateway runs, each with its own sockets on the listen port, its
/// own engine and its own edges' TAPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per core the process may run on (at most the range's top).
    Auto,
    /// This many.
    Count(usize),
}

impl Workers {
    /// How many, on this machine.
    pub fn count(self) -> usize {
        let most = *WORKERS_RANGE.end() as usize;
        match self {
            Self::Auto => std::thread::available_parallelism().map_or(1, usize::from).min(most),
            Self::Count(n) => n.clamp(1, most),
        }
    }
}

impl std::fmt::Display for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The handshake rates a config may set, per second.
pub const HANDSHAKE_RATE_RANGE: core::ops::RangeInclusive<i64> = 1..=100_000;
/// The largest uplink rate a config may set, in Mbit/s (1 Tbit/s; keeps bits per second in a `u64`).
pub const MAX_RATE_MBPS: f64 = 1_000_000.0;

/// Loads and checks an edge config.
///
/// # Errors
/// [`ConfigError`] for anything the edge could not run with.
pub fn load_edge(path: &Path) -> Result<EdgeSettings, ConfigError> {
    let doc = Document::read(path)?;
    let file: EdgeFile = doc.parse()?;
    edge_settings(&doc, file).map_err(|problems| doc.locate_all(problems))
}

/// Loads and checks a gateway config.
///
/// # Errors
/// [`ConfigError`] for anything the gateway could not run with.
pub fn load_gateway(path: &Path) -> Result<GatewaySettings, ConfigError> {
    let doc = Document::read(path)?;
    let file: GatewayFile = doc.parse()?;
    gateway_settings(&doc, file).map_err(|problems| doc.locate_all(problems))
}

/// The name of a cipher in config files and logs.
pub const fn cipher_name(cipher: Cipher) -> &'static str {
    match cipher {
        Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        Cipher::Aes256Gcm => "aes-256-gcm",
    }
}
