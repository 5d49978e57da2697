//! The YAML config files of `braid-edge` and `braid-gateway`, loaded into what the driver runs.
//!
//! A config error names the file, the line and the key, and says what would be accepted.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::LinkId;
use crate::edge::EdgeConfig;
use crate::gateway::GatewayConfig;

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
}

/// Everything `braid-edge run` needs.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The config file it came from.
    pub path: PathBuf,
    /// The engine's config (keys loaded, one link per uplink, each to the gateway's address).
    pub edge: EdgeConfig,
    /// The TAP.
    pub tap: TapSettings,
    /// The uplinks, in link-id order.
    pub uplinks: Vec<UplinkSettings>,
    /// Where `status` is served (localhost by default).
    pub status_listen: SocketAddr,
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
    /// One TAP per allowed edge, in allowlist order (index = `PeerId`).
    pub taps: Vec<TapSettings>,
    /// Where `status` is served (localhost by default).
    pub status_listen: SocketAddr,
}

/// A config the binaries refuse, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {key}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The key path, e.g. `uplinks[1].interface`.
    pub key: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
}

/// Loads and checks an edge config.
///
/// # Errors
/// [`ConfigError`] for anything the edge could not run with.
pub fn load_edge(path: &Path) -> Result<EdgeSettings, ConfigError> {
    Err(ConfigError { file: path.into(), line: None, key: String::new(), message: "not implemented yet".into() })
}

/// Loads and checks a gateway config.
///
/// # Errors
/// [`ConfigError`] for anything the gateway could not run with.
pub fn load_gateway(path: &Path) -> Result<GatewaySettings, ConfigError> {
    Err(ConfigError { file: path.into(), line: None, key: String::new(), message: "not implemented yet".into() })
}
