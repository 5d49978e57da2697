//! The YAML config files of `braid-edge` and `braid-gateway`, loaded into what the driver runs.
//!
//! A config error names the file, the line and the key, and says what would be accepted. Syntax,
//! type and unknown-key errors come located from the YAML parser; the rules checked after parsing
//! (addresses, keys, names, ranges, duplicates) find their line by walking the file's block
//! structure for the key path (see [`line_of`]).
//!
//! Relative paths in a config (`private_key_file`, `psk_file`) are relative to the config file's
//! directory, so a config and its keys can move together.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::crypto::Cipher;
use crate::endpoint::edge::EdgeConfig;
use crate::endpoint::gateway::{DEFAULT_HANDSHAKE_RATE, EdgeEntry, GatewayConfig};
use crate::keys::{KeyError, PrivateKey, Psk, PublicKey};
use crate::wire::DEFAULT_PORT;
use crate::{LinkConfig, LinkId, MAX_LINKS, Mode, SessionConfig, Tuning};

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
    /// The status, metrics and dashboard endpoint.
    pub status: StatusSettings,
}

/// A config the binaries refuse, located in its file.
///
/// Displayed as `FILE:LINE: KEY: MESSAGE`; the line is left out when unknown and the key when the
/// problem is the file as a whole (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}{}: {}{message}",
    file.display(),
    line.map(|l| format!(":{l}")).unwrap_or_default(),
    if key.is_empty() { String::new() } else { format!("{key}: ") }
)]
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

/// The path MTUs a config may set (`path_mtu`): the IPv6 minimum up to jumbo frames.
pub const PATH_MTU_RANGE: core::ops::RangeInclusive<i64> = 1280..=9000;
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
    edge_settings(&doc, file).map_err(|problem| doc.locate(problem))
}

/// Loads and checks a gateway config.
///
/// # Errors
/// [`ConfigError`] for anything the gateway could not run with.
pub fn load_gateway(path: &Path) -> Result<GatewaySettings, ConfigError> {
    let doc = Document::read(path)?;
    let file: GatewayFile = doc.parse()?;
    gateway_settings(&doc, file).map_err(|problem| doc.locate(problem))
}

/// The name of a cipher in config files and logs.
pub const fn cipher_name(cipher: Cipher) -> &'static str {
    match cipher {
        Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        Cipher::Aes256Gcm => "aes-256-gcm",
    }
}

/// The 1-based line of a key path such as `uplinks[1].interface` in a YAML text.
///
/// It follows the block structure by indentation: each key is looked up among the keys of its
/// parent mapping, each index among the items of its parent list. When the path goes deeper than
/// the text (a default, an inline `[a, b]` list), the line of the deepest part found is returned;
/// `None` only when not even the first part is there.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let entries = entries(text);
    let mut block: &[Entry<'_>] = &entries;
    let mut line = None;
    for segment in segments(key) {
        let found = match segment {
            Segment::Key(name) => find_key(block, name),
            Segment::Index(n) => find_item(block, n),
        };
        let Some((at, child)) = found else { break };
        line = Some(block[at].line);
        block = &block[child];
    }
    line
}

/// The key path of what stands at a 1-based line of a YAML text (the inverse of [`line_of`]), or
/// of the last entry before it when the line is blank; empty before the first key.
pub fn key_at(text: &str, line: usize) -> String {
    // (the column a frame's children are deeper than, the frame)
    let mut stack: Vec<(usize, Segment<'_>)> = Vec::new();
    for entry in entries(text).iter().take_while(|e| e.line <= line) {
        if entry.dash {
            let mut index = 0;
            while let Some(&(col, segment)) = stack.last() {
                match segment {
                    Segment::Index(n) if col == entry.indent => index = n + 1,
                    _ if col > entry.indent => {}
                    _ => break,
                }
                stack.pop();
            }
            stack.push((entry.indent, Segment::Index(index)));
        } else {
            while stack.last().is_some_and(|&(col, _)| col >= entry.col) {
                stack.pop();
            }
        }
        if let Some(name) = key_of(entry.text) {
            stack.push((entry.col, Segment::Key(name)));
        }
    }
    let mut key = String::new();
    for (_, segment) in stack {
        match segment {
            Segment::Key(name) if key.is_empty() => key.push_str(name),
            Segment::Key(name) => {
                key.push('.');
                key.push_str(name);
            }
            Segment::Index(n) => key.push_str(&format!("[{n}]")),
        }
    }
    key
}

// ---- the files as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFile {
    private_key_file: PathBuf,
    gateway: PeerFile,
    cipher: Option<String>,
    mode: Option<String>,
    latency_budget_ms: Option<i64>,
    retransmit: Option<bool>,
    path_mtu: Option<i64>,
    mss_clamp: Option<bool>,
    tap: Option<TapFile>,
    uplinks: Vec<UplinkFile>,
    status: Option<StatusFile>,
    name: Option<String>,
    advanced: Option<Advanced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    address: String,
    public_key: String,
    psk_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TapFile {
    name: Option<String>,
    mtu: Option<i64>,
    mac: Option<String>,
    bridge: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UplinkFile {
    name: String,
    interface: String,
    source: Option<String>,
    priority: Option<i64>,
    rate_mbps: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusFile {
    listen: Option<String>,
    enabled: Option<bool>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    private_key_file: PathBuf,
    listen: Option<Vec<String>>,
    mode: Option<String>,
    latency_budget_ms: Option<i64>,
    retransmit: Option<bool>,
    path_mtu: Option<i64>,
    mss_clamp: Option<bool>,
    handshake_rate: Option<i64>,
    edges: Vec<AllowedEdgeFile>,
    status: Option<StatusFile>,
    advanced: Option<Advanced>,
}

/// `advanced:`: engine tunables by section and field, e.g. `monitor: { probe_interval: 20ms }`:
/// those of [`Tuning::OPERATOR_KEYS`] only. Unset ones keep their defaults.
type Advanced = BTreeMap<String, BTreeMap<String, Scalar>>;

/// A YAML scalar, kept as the text a tunable parses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Float(x) => x.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedEdgeFile {
    name: String,
    public_key: String,
    psk_file: Option<PathBuf>,
    tap: Option<String>,
    mtu: Option<i64>,
    mac: Option<String>,
    bridge: Option<String>,
}

// ---- what would be accepted, said once for the parser's errors and the checks' ----

const INTERFACE_RULE: &str = "1-15 bytes without spaces, '/' or ':'";
const ADDRESS_RULE: &str = "IP:port, \"[IPv6]:port\" (quoted) or host:port; the port is 1-65535, 4754 if left out";
const SOCKET_RULE: &str = "IP:port or \"[IPv6]:port\" (quoted), e.g. 127.0.0.1:7474";
const KEY_RULE: &str = "a base64 key of 32 bytes (44 characters, as `keygen` and `pubkey` print)";
const MODE_RULE: &str = "auto, redundant, active-backup or bond";
const CIPHER_RULE: &str = "chacha20-poly1305 or aes-256-gcm";
const TOKEN_RULE: &str = "a file holding one token of 16 to 256 printable characters without spaces, mode 0600 \
     (e.g. `head -c 24 /dev/urandom | base64 > status.token; chmod 600 status.token`)";
const MAC_RULE: &str = "six hex bytes with ':' of a unicast address, e.g. 02:00:00:00:00:01";

/// What a key accepts, for the parser's own errors (missing keys, wrong types).
fn expected(key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    match leaf {
        "" => "a mapping of config keys, as in packaging/examples".into(),
        "private_key_file" => "the path of a private key file (from `keygen`, mode 0600)".into(),
        "psk_file" => "the path of a pre-shared key file (one base64 line, mode 0600)".into(),
        "gateway" => "a mapping with address, public_key and optionally psk_file".into(),
        "address" => ADDRESS_RULE.into(),
        "public_key" => KEY_RULE.into(),
        "cipher" => CIPHER_RULE.into(),
        "mode" => MODE_RULE.into(),
        "latency_budget_ms" => range_rule(&LATENCY_BUDGET_MS_RANGE, "milliseconds"),
        "retransmit" | "mss_clamp" => "true or false".into(),
        "path_mtu" => range_rule(&PATH_MTU_RANGE, "bytes"),
        "handshake_rate" => range_rule(&HANDSHAKE_RATE_RANGE, "handshakes per second"),
        "tap" if key == "tap" => "a mapping with name, mtu, mac and bridge (all optional)".into(),
        "name" if key == "tap.name" => format!("an interface name of {INTERFACE_RULE}"),
        "tap" | "interface" | "bridge" => format!("an interface name of {INTERFACE_RULE}"),
        "name" if key == "name" => "a name for logs, metrics and the dashboard".into(),
        "name" => "a name, unique in its list".into(),
        "mtu" => range_rule(&TAP_MTU_RANGE, "bytes"),
        "mac" => MAC_RULE.into(),
        "uplinks" => format!("a list of 1 to {MAX_LINKS} uplinks, each with name and interface"),
        "edges" => "a list of allowed edges, each with name and public_key".into(),
        "source" => "an IP address of the uplink, e.g. 192.168.1.10".into(),
        "priority" => "an integer from 0 (most preferred) to 255".into(),
        "rate_mbps" => format!("a rate in Mbit/s above 0 and at most {MAX_RATE_MBPS}"),
        "status" => "a mapping with listen, enabled and token_file (all optional)".into(),
        "enabled" => "true or false".into(),
        "token_file" => TOKEN_RULE.into(),
        "listen" if key == "listen" => format!("a list of UDP addresses, each {SOCKET_RULE}"),
        "listen" => SOCKET_RULE.into(),
        _ => "a value of the right type".into(),
    }
}

fn range_rule(range: &core::ops::RangeInclusive<i64>, unit: &str) -> String {
    format!("an integer from {} to {} ({unit})", range.start(), range.end())
}

// ---- building the settings ----

/// A rule a parsed config breaks: the key path and the message; [`Document::locate`] adds the
/// file and line.
#[derive(Debug)]
struct Problem {
    key: String,
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

fn edge_settings(doc: &Document, file: EdgeFile) -> Result<EdgeSettings, Problem> {
    let private_key = read_private_key(doc, &file.private_key_file)?;
    let remote = resolve("gateway.address", &file.gateway.address)?;
    let gateway_key = public_key("gateway.public_key", &file.gateway.public_key)?;
    let psk = file.gateway.psk_file.as_deref().map(|p| read_psk(doc, "gateway.psk_file", p)).transpose()?;
    let cipher = match file.cipher.as_deref() {
        None | Some("chacha20-poly1305") => Cipher::ChaCha20Poly1305,
        Some("aes-256-gcm") => Cipher::Aes256Gcm,
        Some(other) => return Err(problem("cipher", format!("{other:?} is not a cipher; expected {CIPHER_RULE}"))),
    };
    let mut session =
        session(file.mode.as_deref(), file.latency_budget_ms, file.retransmit, file.path_mtu, file.mss_clamp)?;
    tune(&mut session, file.advanced.as_ref())?;

    let tap_file = file.tap.unwrap_or_default();
    let tap_name = tap_file.name.unwrap_or_else(|| DEFAULT_EDGE_TAP.into());
    let tap = tap("tap.", tap_name, tap_file.mtu, tap_file.mac, tap_file.bridge)?;

    if file.uplinks.is_empty() {
        return Err(problem("uplinks", format!("the list is empty; expected 1 to {MAX_LINKS} uplinks")));
    }
    if file.uplinks.len() > MAX_LINKS {
        let message = format!("{} uplinks; expected at most {MAX_LINKS}", file.uplinks.len());
        return Err(problem(format!("uplinks[{MAX_LINKS}]"), message));
    }
    let mut uplinks: Vec<UplinkSettings> = Vec::with_capacity(file.uplinks.len());
    for (i, uplink) in file.uplinks.into_iter().enumerate() {
        let key = |field: &str| format!("uplinks[{i}].{field}");
        let id = LinkId::new(u8::try_from(i).expect("at most MAX_LINKS uplinks, checked above"));
        interface_name(&key("interface"), &uplink.interface)?;
        if uplink.name.trim().is_empty() {
            return Err(problem(key("name"), "the name is empty; expected a name, unique in its list"));
        }
        unique(&key("name"), &uplink.name, uplinks.iter().map(|u| &u.name), "uplinks", "name")?;
        unique(&key("interface"), &uplink.interface, uplinks.iter().map(|u| &u.interface), "uplinks", "interface")?;
        let source = match uplink.source {
            None => None,
            Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                problem(key("source"), format!("{text:?} is not an IP address; expected {}", expected("source")))
            })?),
        };
        let priority = match uplink.priority {
            None => id.get(),
            Some(p) => u8::try_from(p).map_err(|_| {
                problem(key("priority"), format!("{p} is out of range; expected {}", expected("priority")))
            })?,
        };
        let rate_bps = match uplink.rate_mbps {
            None => None,
            Some(mbps) if mbps > 0.0 && mbps <= MAX_RATE_MBPS => Some((mbps * 1e6).round() as u64),
            Some(mbps) => {
                return Err(problem(
                    key("rate_mbps"),
                    format!("{mbps} is out of range; expected {}", expected("rate_mbps")),
                ));
            }
        };
        session.links.push(LinkConfig { id, priority, rate_bps, remote });
        uplinks.push(UplinkSettings { id, name: uplink.name, interface: uplink.interface, source });
    }
    let status = status(doc, file.status, DEFAULT_EDGE_STATUS)?;
    let name = match file.name {
        None => host_name(),
        Some(name) if name.trim().is_empty() || name.chars().any(char::is_control) => {
            return Err(problem(
                "name",
                format!("{name:?} is empty or has control characters; expected {}", expected("name")),
            ));
        }
        Some(name) => name,
    };
    Ok(EdgeSettings {
        path: doc.path.clone(),
        name,
        edge: EdgeConfig { private_key, gateway_key, psk, cipher, session },
        tap,
        uplinks,
        status,
    })
}

fn gateway_settings(doc: &Document, file: GatewayFile) -> Result<GatewaySettings, Problem> {
    let private_key = read_private_key(doc, &file.private_key_file)?;
    let listen = match file.listen {
        None => vec![DEFAULT_GATEWAY_LISTEN],
        Some(list) if list.is_empty() => {
            return Err(problem("listen", format!("the list is empty; expected {}", expected("listen"))));
        }
        Some(list) => {
            let mut addresses: Vec<SocketAddr> = Vec::with_capacity(list.len());
            for (i, text) in list.iter().enumerate() {
                let address = socket_address(&format!("listen[{i}]"), text)?;
                if addresses.contains(&address) {
                    return Err(problem(format!("listen[{i}]"), format!("{address} is listed twice")));
                }
                addresses.push(address);
            }
            addresses
        }
    };
    let mut session =
        session(file.mode.as_deref(), file.latency_budget_ms, file.retransmit, file.path_mtu, file.mss_clamp)?;
    tune(&mut session, file.advanced.as_ref())?;
    let handshake_rate = match file.handshake_rate {
        None => DEFAULT_HANDSHAKE_RATE,
        Some(rate) => in_range("handshake_rate", rate, &HANDSHAKE_RATE_RANGE, "handshakes per second")?,
    };
    if file.edges.is_empty() {
        return Err(problem("edges", format!("the list is empty; expected {}", expected("edges"))));
    }
    let mut edges: Vec<EdgeEntry> = Vec::with_capacity(file.edges.len());
    let mut taps: Vec<TapSettings> = Vec::with_capacity(file.edges.len());
    for (i, edge) in file.edges.into_iter().enumerate() {
        let key = |field: &str| format!("edges[{i}].{field}");
        if edge.name.trim().is_empty() {
            return Err(problem(key("name"), "the name is empty; expected a name, unique in its list"));
        }
        unique(&key("name"), &edge.name, edges.iter().map(|e| &e.name), "edges", "name")?;
        let public_key = public_key(&key("public_key"), &edge.public_key)?;
        if let Some(first) = edges.iter().position(|e| e.public_key == public_key) {
            let message = format!(
                "the same public key as edges[{first}] ({:?}); expected one key per edge (run `braid-edge keygen` on each)",
                edges[first].name
            );
            return Err(problem(key("public_key"), message));
        }
        let psk = edge.psk_file.as_deref().map(|p| read_psk(doc, &key("psk_file"), p)).transpose()?;
        let tap_name = edge.tap.unwrap_or_else(|| format!("{DEFAULT_GATEWAY_TAP_PREFIX}{i}"));
        let tap = tap(&format!("edges[{i}]."), tap_name, edge.mtu, edge.mac, edge.bridge)?;
        unique(&key("tap"), &tap.name, taps.iter().map(|t| &t.name), "edges", "tap")?;
        edges.push(EdgeEntry { name: edge.name, public_key, psk });
        taps.push(tap);
    }
    let status = status(doc, file.status, DEFAULT_GATEWAY_STATUS)?;
    Ok(GatewaySettings {
        path: doc.path.clone(),
        gateway: GatewayConfig { private_key, edges, session, handshake_rate },
        listen,
        taps,
        status,
    })
}

/// The session settings both ends share: the mode and the latency budget.
fn session(
    mode: Option<&str>,
    latency_budget_ms: Option<i64>,
    retransmit: Option<bool>,
    path_mtu: Option<i64>,
    mss_clamp: Option<bool>,
) -> Result<SessionConfig, Problem> {
    let mode = match mode {
        None => Mode::default(),
        Some(name) => Mode::from_name(name)
            .ok_or_else(|| problem("mode", format!("{name:?} is not a mode; expected {MODE_RULE}")))?,
    };
    let mut session = SessionConfig { mode, ..SessionConfig::default() };
    session.retransmit = retransmit.unwrap_or(session.retransmit);
    session.clamp_mss = mss_clamp.unwrap_or(session.clamp_mss);
    if let Some(mtu) = path_mtu {
        let mtu: usize = in_range("path_mtu", mtu, &PATH_MTU_RANGE, "bytes")?;
        session.max_datagram = mtu - IP_UDP_OVERHEAD;
    }
    if let Some(ms) = latency_budget_ms {
        let ms: u32 = in_range("latency_budget_ms", ms, &LATENCY_BUDGET_MS_RANGE, "milliseconds")?;
        session.latency_budget = Duration::from_millis(u64::from(ms));
    }
    Ok(session)
}

/// Applies `advanced:` to the session's tunables.
fn tune(session: &mut SessionConfig, advanced: Option<&Advanced>) -> Result<(), Problem> {
    for (section, fields) in advanced.into_iter().flatten() {
        for (field, value) in fields {
            let key = format!("{section}.{field}");
            let path = format!("advanced.{key}");
            if session.tuning.get(&key).is_some() && !Tuning::OPERATOR_KEYS.contains(&key.as_str()) {
                let message = format!(
                    "{key} is for experiments, not the config file (use `run --tune {key}=...`); the file may set {}",
                    Tuning::OPERATOR_KEYS.join(", ")
                );
                return Err(problem(path, message));
            }
            session.tuning.set(&key, &value.text()).map_err(|error| problem(path, error.to_string()))?;
        }
    }
    Ok(())
}

/// A TAP's settings; `prefix` is the key path its fields sit under (`tap.` or `edges[2].`).
fn tap(
    prefix: &str,
    name: String,
    mtu: Option<i64>,
    mac: Option<String>,
    bridge: Option<String>,
) -> Result<TapSettings, Problem> {
    let name_key = if prefix == "tap." { "tap.name".to_owned() } else { format!("{prefix}tap") };
    interface_name(&name_key, &name)?;
    let mtu = match mtu {
        None => DEFAULT_TAP_MTU,
        Some(mtu) => in_range(&format!("{prefix}mtu"), mtu, &TAP_MTU_RANGE, "bytes")?,
    };
    let mac = mac.map(|text| parse_mac(&text).ok_or_else(|| bad_mac(prefix, &text))).transpose()?;
    if let Some(bridge) = &bridge {
        interface_name(&format!("{prefix}bridge"), bridge)?;
    }
    Ok(TapSettings { name, mtu, mac, bridge })
}

fn bad_mac(prefix: &str, text: &str) -> Problem {
    problem(format!("{prefix}mac"), format!("{text:?} is not a MAC address for a TAP; expected {MAC_RULE}"))
}

/// Six hex bytes with `:`, unicast (a TAP cannot have a multicast address).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// Linux's rule for interface names (`dev_valid_name`).
fn interface_name(key: &str, name: &str) -> Result<(), Problem> {
    let valid = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(problem(key, format!("{name:?} is not an interface name; expected {INTERFACE_RULE}")))
    }
}

/// Refuses `value` if an earlier entry of `list` has it too.
fn unique<'a>(
    key: &str,
    value: &str,
    earlier: impl Iterator<Item = &'a String>,
    list: &str,
    field: &str,
) -> Result<(), Problem> {
    match earlier.into_iter().position(|v| v == value) {
        Some(first) => Err(problem(
            key,
            format!(
                "{value:?} is also the {field} of {list}[{first}]; expected a unique {field} in each entry of {list}"
            ),
        )),
        None => Ok(()),
    }
}

fn in_range<T: TryFrom<i64>>(
    key: &str,
    value: i64,
    range: &core::ops::RangeInclusive<i64>,
    unit: &str,
) -> Result<T, Problem> {
    range
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| problem(key, format!("{value} is out of range; expected {}", range_rule(range, unit))))
}

fn public_key(key: &str, text: &str) -> Result<PublicKey, Problem> {
    PublicKey::from_base64(text).map_err(|_| problem(key, format!("{text:?} is not a public key; expected {KEY_RULE}")))
}

fn socket_address(key: &str, text: &str) -> Result<SocketAddr, Problem> {
    text.trim().parse().map_err(|_| problem(key, format!("{text:?} is not a socket address; expected {SOCKET_RULE}")))
}

/// The status endpoint. Off loopback it must have a token: the dashboard shows where a rig is
/// and how healthy its links are, and `/status` names the gateway.
fn status(doc: &Document, status: Option<StatusFile>, default: SocketAddr) -> Result<StatusSettings, Problem> {
    let file = status.unwrap_or_default();
    let listen = match file.listen {
        None => default,
        Some(text) => socket_address("status.listen", &text)?,
    };
    let token = file.token_file.as_deref().map(|path| read_token(&doc.resolve(path))).transpose()?;
    let enabled = file.enabled.unwrap_or(true);
    if enabled && token.is_none() && !listen.ip().is_loopback() {
        return Err(problem(
            "status.listen",
            format!(
                "{listen} is not a loopback address, and without a token anyone who reaches it sees the rig; \
                 expected a loopback address such as 127.0.0.1:{}, or status.token_file set to {TOKEN_RULE}",
                listen.port()
            ),
        ));
    }
    Ok(StatusSettings { listen, enabled, token })
}

/// Reads an access token: one line, refused if others can read the file (like a key).
fn read_token(path: &Path) -> Result<String, Problem> {
    use std::os::unix::fs::PermissionsExt;
    let key = "status.token_file";
    let shown = path.display();
    let bad = |why: String| problem(key, format!("{why}; expected {TOKEN_RULE}"));
    let mode = std::fs::metadata(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(problem(
            key,
            format!("{shown}: the token is readable by others (mode {:o}); run `chmod 600 {shown}`", mode & 0o777),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?;
    let token = text.trim();
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(format!("{shown} holds {} characters or some that are not printable", token.len())));
    }
    Ok(token.to_owned())
}

/// The host's name, the edge's name when the config sets none.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_EDGE_NAME.to_owned())
}

/// The gateway's address: an IP (port 4754 if left out) or a host name, resolved now.
fn resolve(key: &str, text: &str) -> Result<SocketAddr, Problem> {
    let bad = |why: String| problem(key, format!("{text:?} is not an address: {why}; expected {ADDRESS_RULE}"));
    let trimmed = text.trim();
    let address = if let Ok(address) = trimmed.parse::<SocketAddr>() {
        address
    } else if let Ok(ip) = trimmed.parse::<IpAddr>() {
        SocketAddr::new(ip, DEFAULT_PORT)
    } else if let Some(v6) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let ip = v6.parse::<Ipv6Addr>().map_err(|_| bad(format!("{v6:?} is not an IPv6 address")))?;
        SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT)
    } else {
        let (host, port) = match trimmed.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| bad(format!("port {port:?} is out of range")))?;
                (host, port)
            }
            None => (trimmed, DEFAULT_PORT),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !host_ok {
            return Err(bad(format!("{host:?} is not an IP address or host name")));
        }
        let mut resolved = (host, port).to_socket_addrs().map_err(|e| bad(format!("cannot resolve {host:?}: {e}")))?;
        resolved.next().ok_or_else(|| bad(format!("{host:?} resolves to no address")))?
    };
    if address.port() == 0 {
        return Err(bad("port 0".into()));
    }
    Ok(address)
}

fn read_private_key(doc: &Document, path: &Path) -> Result<PrivateKey, Problem> {
    PrivateKey::read_file(&doc.resolve(path)).map_err(|e| key_file_problem("private_key_file", "private key", e))
}

/// A PSK file is read as a private key is: one base64 line, refused if others can read it.
fn read_psk(doc: &Document, key: &str, path: &Path) -> Result<Psk, Problem> {
    let private = PrivateKey::read_file(&doc.resolve(path)).map_err(|e| key_file_problem(key, "pre-shared key", e))?;
    Ok(Psk(*private.as_bytes()))
}

fn key_file_problem(key: &str, what: &str, error: KeyError) -> Problem {
    let message = match error {
        KeyError::Io { path, error } => {
            format!("cannot read {path}: {error}; expected a {what} file (one base64 line, mode 0600, from `keygen`)")
        }
        KeyError::Permissions { path, mode } => {
            format!("{path}: {what} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
        }
        KeyError::Format => format!("the file does not hold a {what}; expected {KEY_RULE}"),
    };
    problem(key, message)
}

// ---- the file, and locating errors in it ----

/// A config file's path and text.
#[derive(Debug)]
struct Document {
    path: PathBuf,
    text: String,
}

impl Document {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self { path: path.into(), text }),
            Err(error) => Err(ConfigError {
                file: path.into(),
                line: None,
                key: String::new(),
                message: format!("cannot read the config file: {error}"),
            }),
        }
    }

    /// A path in the config, relative to the config file's directory unless absolute.
    fn resolve(&self, path: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.into(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        yaml_serde::from_str(&self.text).map_err(|error| self.yaml_error(&error))
    }

    fn locate(&self, problem: Problem) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: line_of(&self.text, &problem.key),
            key: problem.key,
            message: problem.message,
        }
    }

    /// The parser's error, with its key path split off and its own "at line N column M" marks
    /// dropped (the line goes in [`ConfigError::line`]).
    fn yaml_error(&self, error: &yaml_serde::Error) -> ConfigError {
        let parser_line = error.location().map(|l| l.line());
        let text = strip_marks(&error.to_string());
        // Serde's errors read `path: message`, with `.` for the top level.
        let (path, message) = match text.split_once(": ") {
            Some((path, message)) if is_key_path(path) => (path.trim_start_matches('.'), message),
            _ => ("", text.as_str()),
        };
        let join = |field: &str| if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
        let (key, message, line) = if let Some(field) = between(message, "unknown field `", "`") {
            (join(field), message.replacen("unknown field", "unknown key", 1), parser_line)
        } else if let Some(field) = between(message, "missing field `", "`") {
            // The parser points at the start of the mapping; the mapping's own key says more.
            let key = join(field);
            let line = line_of(&self.text, &key);
            (key, format!("missing; expected {}", expected(&join(field))), line)
        } else if let Some(field) = between(message, "duplicate field `", "`") {
            let key = join(field);
            let line = second_line_of(&self.text, &key).or(parser_line);
            (
                key,
                format!(
                    "given twice; expected each key once (the first is on line {})",
                    line_of(&self.text, &join(field)).unwrap_or(0)
                ),
                line,
            )
        } else if let Some((what, _)) = message.split_once(", expected ") {
            (path.to_owned(), format!("{what}; expected {}", expected(path)), parser_line)
        } else if path.is_empty() {
            let key = parser_line.map(|line| key_at(&self.text, line)).unwrap_or_default();
            (key, message.to_owned(), parser_line)
        } else {
            (path.to_owned(), message.to_owned(), parser_line)
        };
        ConfigError { file: self.path.clone(), line, key, message }
    }
}

fn is_key_path(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]?".contains(c))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Drops every " at line N column M" from a parser message.
fn strip_marks(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let line_len = digits(after);
        match after[line_len..].strip_prefix(" column ") {
            Some(column) if line_len > 0 && digits(column) > 0 => rest = &column[digits(column)..],
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One line of YAML block structure (blank lines, comments and `---` are left out).
#[derive(Debug)]
struct Entry<'a> {
    /// 1-based.
    line: usize,
    /// Spaces before the first character (the dash, for a list item).
    indent: usize,
    /// Whether the line starts a list item (`- `).
    dash: bool,
    /// The column the text starts at (after the dash).
    col: usize,
    /// The text from `col`, e.g. `name: dsl`.
    text: &'a str,
}

fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        let body = body.trim_end();
        if body.is_empty() || body.starts_with('#') || body == "---" {
            continue;
        }
        let (dash, col, text) = match body.strip_prefix('-') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                let item = rest.trim_start_matches(' ');
                (true, indent + body.len() - item.len(), item)
            }
            _ => (false, indent, body),
        };
        out.push(Entry { line: i + 1, indent, dash, col, text });
    }
    out
}

/// The key a line sets, if it is `key:` or `key: value`.
fn key_of(text: &str) -> Option<&str> {
    let (key, rest) = text.split_once(':')?;
    let key = key.trim().trim_matches('"').trim_matches('\'');
    (!key.is_empty() && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `uplinks[1].interface` as `uplinks`, `1`, `interface`.
fn segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(Segment::Key(name));
        }
        out.extend(pieces.filter_map(|p| p.trim_end_matches(']').parse().ok()).map(Segment::Index));
    }
    out
}

/// The line of a key's second occurrence in its mapping (a key given twice).
fn second_line_of(text: &str, key: &str) -> Option<usize> {
    let first = line_of(text, key)?;
    let leaf = segments(key).into_iter().rev().find_map(|s| match s {
        Segment::Key(name) => Some(name),
        Segment::Index(_) => None,
    })?;
    let entries = entries(text);
    let at = entries.iter().position(|e| e.line == first)?;
    let col = entries[at].col;
    entries[at + 1..]
        .iter()
        .take_while(|e| e.col >= col)
        .find(|e| e.col == col && key_of(e.text) == Some(leaf))
        .map(|e| e.line)
}

/// The entry of `name` among a mapping block's keys, and the range of its children.
fn find_key(block: &[Entry<'_>], name: &str) -> Option<(usize, core::ops::Range<usize>)> {
    let base = block.iter().filter(|e| !e.text.is_empty()).map(|e| e.col).min()?;
    let at = block.iter().position(|e| e.col == base && key_of(e.text) == Some(name))?;
    let col = block[at].col;
    let end = (at + 1..block.len())
        .find(|&j| !(block[j].indent > col || (block[j].dash && block[j].indent == col)))
        .unwrap_or(block.len());
    Some((at, at + 1..end))
}

/// The entry of item `n` of a list block, and the range of the item (its first line included).
fn find_item(block: &[Entry<'_>], n: usize) -> Option<(usize, core::ops::Range<usize>)> {
    let base = block.iter().filter(|e| e.dash).map(|e| e.indent).min()?;
    let at = block.iter().enumerate().filter(|(_, e)| e.dash && e.indent == base).nth(n)?.0;
    let end = (at + 1..block.len()).find(|&j| block[j].indent <= base).unwrap_or(block.len());
    Some((at, at..end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory holding `key.key` (mode 0600), removed on drop. Configs refer to the key by
    /// the relative path `key.key`, which resolves against the config's directory.
    struct Scratch {
        dir: PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("braid-config-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            PrivateKey::from_bytes([1; 32]).write_file(&dir.join("key.key")).unwrap();
            Self { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn edge(&self, yaml: &str) -> Result<EdgeSettings, ConfigError> {
            load_edge(&self.write("edge.yaml", yaml))
        }

        fn gateway(&self, yaml: &str) -> Result<GatewaySettings, ConfigError> {
            load_gateway(&self.write("gateway.yaml", yaml))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn key(seed: u8) -> PublicKey {
        PrivateKey::from_bytes([seed; 32]).public()
    }

    /// Two uplinks; lines 1-9.
    fn edge_yaml() -> String {
        format!(
            "private_key_file: key.key\n\
             gateway:\n  \
               address: 203.0.113.10:4754\n  \
               public_key: {}\n\
             uplinks:\n  \
               - name: dsl\n    \
                 interface: eth1\n  \
               - name: lte\n    \
                 interface: wwan0\n",
            key(2)
        )
    }

    /// Two edges; lines 1-6.
    fn gateway_yaml() -> String {
        format!(
            "private_key_file: key.key\n\
             edges:\n\
             - name: van-1\n  \
               public_key: {}\n\
             - name: van-2\n  \
               public_key: {}\n",
            key(3),
            key(4)
        )
    }

    #[track_caller]
    fn assert_refused<T: core::fmt::Debug>(
        result: Result<T, ConfigError>,
        line: Option<usize>,
        key: &str,
        message: &str,
    ) -> ConfigError {
        let error = result.expect_err("the config is refused");
        assert_eq!((error.line, error.key.as_str()), (line, key), "{error}");
        assert!(error.message.contains(message), "{error}\nshould contain: {message}");
        error
    }

    const NESTED: &str = "# comment\n\
        top: 1\n\
        \n\
        map:\n  \
          inner: x\n  \
          deep:\n    \
            leaf: y\n\
        list:\n  \
          - name: a\n    \
            interface: eth0\n  \
          -   name: b\n      \
              interface: eth1\n\
        flush:\n\
        - first: 1\n  \
          second: 2\n\
        - first: 3\n\
        flow: [a, b]\n";

    #[test]
    fn line_of_follows_keys_list_items_and_nesting() {
        assert_eq!(line_of(NESTED, "top"), Some(2));
        assert_eq!(line_of(NESTED, "map.inner"), Some(5));
        assert_eq!(line_of(NESTED, "map.deep.leaf"), Some(7));
        assert_eq!(line_of(NESTED, "list[0]"), Some(9));
        assert_eq!(line_of(NESTED, "list[0].name"), Some(9));
        assert_eq!(line_of(NESTED, "list[0].interface"), Some(10));
        assert_eq!(line_of(NESTED, "list[1].name"), Some(11));
        assert_eq!(line_of(NESTED, "list[1].interface"), Some(12));
        assert_eq!(line_of(NESTED, "flush[0].second"), Some(15));
        assert_eq!(line_of(NESTED, "flush[1].first"), Some(16));
    }

    #[test]
    fn line_of_gives_the_deepest_part_it_finds() {
        assert_eq!(line_of(NESTED, "flow[1]"), Some(17), "an inline list: the key's line");
        assert_eq!(line_of(NESTED, "list[1].mtu"), Some(11), "a default: the item's line");
        assert_eq!(line_of(NESTED, "list[7].name"), Some(8), "no such item: the list's line");
        assert_eq!(line_of(NESTED, "inner"), None, "keys are looked up in their own mapping only");
        assert_eq!(line_of(NESTED, "missing"), None);
        assert_eq!(line_of("", "top"), None);
    }

    #[test]
    fn key_at_is_the_inverse_of_line_of() {
        for key in ["top", "map.inner", "map.deep.leaf", "list[0].name", "list[1].interface", "flush[1].first"] {
            let line = line_of(NESTED, key).unwrap();
            assert_eq!(key_at(NESTED, line), key, "line {line}");
        }
        assert_eq!(key_at(NESTED, 3), "top", "a blank line belongs to the entry before it");
        assert_eq!(key_at(NESTED, 1), "", "nothing before the first key");
    }

    #[test]
    fn parser_marks_are_dropped_from_messages() {
        assert_eq!(
            strip_marks("did not find expected key at line 5 column 3, while x at line 1 column 1"),
            "did not find expected key, while x"
        );
        assert_eq!(strip_marks("at line unchanged at line 2"), "at line unchanged at line 2");
    }

    #[test]
    fn a_full_edge_config_fills_every_setting() {
        let scratch = Scratch::new("edge-full");
        let yaml = edge_yaml()
            .replace("  - name: lte\n", "  - name: lte\n    source: 10.0.0.2\n    priority: 7\n    rate_mbps: 2.5\n")
            + "cipher: aes-256-gcm\nmode: active-backup\nlatency_budget_ms: 120\nretransmit: false\npath_mtu: 1420\nmss_clamp: false\n\
               tap:\n  name: tap9\n  mtu: 9000\n  mac: 02:00:00:00:00:0a\n  bridge: br0\n\
               status:\n  listen: \"[::1]:9000\"\n";
        let settings = scratch.edge(&yaml).unwrap();
        let remote: SocketAddr = "203.0.113.10:4754".parse().unwrap();
        assert_eq!(settings.path, scratch.dir.join("edge.yaml"));
        assert_eq!(settings.edge.private_key, PrivateKey::from_bytes([1; 32]));
        assert_eq!(settings.edge.gateway_key, key(2));
        assert_eq!(settings.edge.psk, None);
        assert_eq!(settings.edge.cipher, Cipher::Aes256Gcm);
        assert_eq!(
            settings.edge.session,
            SessionConfig {
                mode: Mode::ActiveBackup,
                latency_budget: Duration::from_millis(120),
                retransmit: false,
                max_datagram: 1420 - 48,
                clamp_mss: false,
                links: vec![
                    LinkConfig { id: LinkId::new(0), priority: 0, rate_bps: None, remote },
                    LinkConfig { id: LinkId::new(1), priority: 7, rate_bps: Some(2_500_000), remote },
                ],
                ..SessionConfig::default()
            }
        );
        assert_eq!(
            settings.tap,
            TapSettings { name: "tap9".into(), mtu: 9000, mac: Some([2, 0, 0, 0, 0, 10]), bridge: Some("br0".into()) }
        );
        assert_eq!(
            settings.uplinks,
            [
                UplinkSettings { id: LinkId::new(0), name: "dsl".into(), interface: "eth1".into(), source: None },
                UplinkSettings {
                    id: LinkId::new(1),
                    name: "lte".into(),
                    interface: "wwan0".into(),
                    source: Some("10.0.0.2".parse().unwrap()),
                },
            ]
        );
        assert_eq!(settings.status.listen, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn a_minimal_edge_config_takes_the_defaults() {
        let scratch = Scratch::new("edge-min");
        let settings = scratch.edge(&edge_yaml().replace("203.0.113.10:4754", "203.0.113.10")).unwrap();
        assert_eq!(settings.edge.cipher, Cipher::ChaCha20Poly1305);
        assert_eq!(settings.edge.session.mode, Mode::Auto);
        assert_eq!(settings.edge.session.latency_budget, SessionConfig::default().latency_budget);
        assert_eq!(settings.edge.session.links[1].priority, 1, "priority defaults to the position");
        assert_eq!(settings.edge.session.links[1].remote, SocketAddr::new([203, 0, 113, 10].into(), DEFAULT_PORT));
        assert_eq!(settings.tap, TapSettings { name: "braid0".into(), mtu: 1500, mac: None, bridge: None });
        assert_eq!(settings.status.listen, DEFAULT_EDGE_STATUS);
    }

    #[test]
    fn advanced_sets_engine_tunables_and_the_rest_keep_their_defaults() {
        let scratch = Scratch::new("edge-advanced");
        let yaml = edge_yaml()
            + "advanced:\n  monitor:\n    probe_interval: 20ms\n    degraded_loss: 0.2\n  scheduler:\n    failback_hold: 5s\n";
        let settings = scratch.edge(&yaml).unwrap();
        let tuning = settings.edge.session.tuning;
        assert_eq!(tuning.monitor.probe_interval, Duration::from_millis(20));
        assert_eq!(tuning.monitor.degraded_loss, 0.2);
        assert_eq!(tuning.scheduler.failback_hold, Duration::from_secs(5));
        assert_eq!(tuning.changed().len(), 3, "{:?}", tuning.changed());
        let gateway = scratch.gateway(&(gateway_yaml() + "advanced:\n  send:\n    max_queue_delay: 60ms\n")).unwrap();
        assert_eq!(gateway.gateway.session.tuning.send.max_queue_delay, Duration::from_millis(60));
    }

    #[test]
    fn a_bad_tunable_is_refused_at_its_line() {
        let scratch = Scratch::new("edge-advanced-bad");
        let yaml = edge_yaml() + "advanced:\n  monitor:\n    probe_interval: 20\n";
        assert_refused(scratch.edge(&yaml), Some(12), "advanced.monitor.probe_interval", "give a unit");
        let yaml = edge_yaml() + "advanced:\n  monitor:\n    probe_intervl: 20ms\n";
        assert_refused(scratch.edge(&yaml), Some(12), "advanced.monitor.probe_intervl", "is not a tunable");
        let yaml = edge_yaml() + "advanced:\n  monitor:\n    missed_probes_down: 0\n";
        assert_refused(scratch.edge(&yaml), Some(12), "advanced.monitor.missed_probes_down", "greater than zero");
        let yaml = edge_yaml() + "advanced:\n  cc:\n    probe_gain: 1.1\n";
        assert_refused(scratch.edge(&yaml), Some(12), "advanced.cc.probe_gain", "use `run --tune cc.probe_gain=...`");
    }

    #[test]
    fn the_gateway_address_may_be_a_host_name_or_a_bracketed_ipv6_address() {
        let scratch = Scratch::new("edge-host");
        for (written, resolved) in [
            ("localhost:5000", "127.0.0.1:5000"),
            ("localhost", "127.0.0.1:4754"),
            ("\"[2001:db8::1]\"", "[2001:db8::1]:4754"),
            ("\"[2001:db8::1]:7\"", "[2001:db8::1]:7"),
            ("2001:db8::1", "[2001:db8::1]:4754"),
        ] {
            let settings = scratch.edge(&edge_yaml().replace("203.0.113.10:4754", written)).unwrap();
            let remote = settings.edge.session.links[0].remote;
            assert!(remote == resolved.parse().unwrap() || written.starts_with("localhost"), "{written}: {remote}");
            assert_eq!(remote.port(), resolved.parse::<SocketAddr>().unwrap().port(), "{written}");
        }
    }

    #[test]
    fn a_missing_config_file_is_refused_without_a_key() {
        let error = load_edge(Path::new("/nonexistent/braid/edge.yaml")).unwrap_err();
        assert_eq!((error.line, error.key.as_str()), (None, ""));
        assert_eq!(
            error.to_string(),
            "/nonexistent/braid/edge.yaml: cannot read the config file: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_missing_private_key_file_is_refused_at_its_line() {
        let scratch = Scratch::new("no-key");
        let yaml = edge_yaml().replace("key.key", "absent.key");
        let error = assert_refused(scratch.edge(&yaml), Some(1), "private_key_file", "cannot read");
        assert!(error.message.contains("absent.key") && error.message.contains("No such file"), "{error}");
    }

    #[test]
    fn a_private_key_others_can_read_is_refused_with_the_chmod_that_fixes_it() {
        let scratch = Scratch::new("key-perms");
        let key_path = scratch.dir.join("key.key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let fix = format!("run `chmod 600 {}`", key_path.display());
        assert_refused(scratch.edge(&edge_yaml()), Some(1), "private_key_file", &fix);
        assert_refused(scratch.gateway(&gateway_yaml()), Some(1), "private_key_file", "readable by others (mode 644)");
    }

    #[test]
    fn a_psk_file_is_read_and_held_to_the_private_key_rule() {
        let scratch = Scratch::new("psk");
        let psk_path = scratch.dir.join("edge.psk");
        PrivateKey::from_bytes([5; 32]).write_file(&psk_path).unwrap();
        let yaml = edge_yaml().replace("uplinks:", "  psk_file: edge.psk\nuplinks:");
        assert_eq!(scratch.edge(&yaml).unwrap().edge.psk, Some(Psk([5; 32])));
        std::fs::set_permissions(&psk_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_refused(scratch.edge(&yaml), Some(5), "gateway.psk_file", "pre-shared key is readable by others");
        std::fs::write(&psk_path, "not a key\n").unwrap();
        std::fs::set_permissions(&psk_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_refused(scratch.edge(&yaml), Some(5), "gateway.psk_file", "does not hold a pre-shared key");
    }

    #[test]
    fn an_unknown_key_is_refused_where_it_stands_with_the_keys_that_would_be_accepted() {
        let scratch = Scratch::new("unknown");
        let yaml = edge_yaml().replace("    interface: wwan0\n", "    interface: wwan0\n    colour: red\n");
        assert_refused(
            scratch.edge(&yaml),
            Some(10),
            "uplinks[1].colour",
            "unknown key `colour`, expected one of `name`",
        );
        let yaml = edge_yaml() + "latency: 3\n";
        assert_refused(scratch.edge(&yaml), Some(10), "latency", "expected one of `private_key_file`");
        let yaml = gateway_yaml().replace("edges:", "listen_on: [\"0.0.0.0:1\"]\nedges:");
        assert_refused(scratch.gateway(&yaml), Some(2), "listen_on", "unknown key");
    }

    #[test]
    fn a_bad_gateway_address_is_refused_with_the_forms_that_would_be_accepted() {
        let scratch = Scratch::new("address");
        for (written, why) in [
            ("203.0.113.10:99999", "port \"99999\" is out of range"),
            ("203.0.113.10:0", "port 0"),
            ("not an address", "is not an IP address or host name"),
            ("\"[fe80::zz]\"", "is not an IPv6 address"),
            ("\"\"", "is not an IP address or host name"),
        ] {
            let yaml = edge_yaml().replace("203.0.113.10:4754", written);
            let error = assert_refused(scratch.edge(&yaml), Some(3), "gateway.address", why);
            assert!(error.message.ends_with(&format!("expected {ADDRESS_RULE}")), "{error}");
        }
        let yaml = edge_yaml().replace("203.0.113.10:4754", "[::1]:4754");
        assert_refused(scratch.edge(&yaml), Some(3), "gateway.address", "(quoted)");
    }

    #[test]
    fn two_uplinks_with_one_name_or_one_interface_are_refused_at_the_second() {
        let scratch = Scratch::new("dup-uplink");
        let yaml = edge_yaml().replace("name: lte", "name: dsl");
        assert_refused(scratch.edge(&yaml), Some(8), "uplinks[1].name", "\"dsl\" is also the name of uplinks[0]");
        let yaml = edge_yaml().replace("wwan0", "eth1");
        assert_refused(
            scratch.edge(&yaml),
            Some(9),
            "uplinks[1].interface",
            "\"eth1\" is also the interface of uplinks[0]",
        );
    }

    #[test]
    fn a_bad_public_key_is_refused_with_what_a_key_looks_like() {
        let scratch = Scratch::new("bad-pub");
        let yaml = edge_yaml().replace(&key(2).to_base64(), "c2hvcnQ=");
        assert_refused(
            scratch.edge(&yaml),
            Some(4),
            "gateway.public_key",
            "\"c2hvcnQ=\" is not a public key; expected a base64 key of 32 bytes",
        );
        let yaml = gateway_yaml().replace(&key(4).to_base64(), "abc");
        assert_refused(scratch.gateway(&yaml), Some(6), "edges[1].public_key", "44 characters");
    }

    #[test]
    fn a_missing_required_key_is_refused_at_its_parent() {
        let scratch = Scratch::new("missing");
        let yaml = edge_yaml().replace("    interface: wwan0\n", "");
        assert_refused(scratch.edge(&yaml), Some(8), "uplinks[1].interface", "missing; expected an interface name");
        let yaml = edge_yaml().replace(&format!("  public_key: {}\n", key(2)), "");
        assert_refused(scratch.edge(&yaml), Some(2), "gateway.public_key", "missing; expected a base64 key");
        let yaml = edge_yaml().replace("private_key_file: key.key\n", "");
        assert_refused(
            scratch.edge(&yaml),
            None,
            "private_key_file",
            "missing; expected the path of a private key file",
        );
    }

    #[test]
    fn an_edge_needs_between_one_and_sixteen_uplinks() {
        let scratch = Scratch::new("uplink-count");
        let head = edge_yaml().split("uplinks:").next().unwrap().to_owned();
        assert_refused(
            scratch.edge(&format!("{head}uplinks: []\n")),
            Some(5),
            "uplinks",
            "the list is empty; expected 1 to 16",
        );
        let many: String = (0..17).map(|i| format!("  - name: u{i}\n    interface: eth{i}\n")).collect();
        assert_refused(
            scratch.edge(&format!("{head}uplinks:\n{many}")),
            Some(38),
            "uplinks[16]",
            "17 uplinks; expected at most 16",
        );
    }

    #[test]
    fn a_bad_mode_or_cipher_is_refused_with_the_names_that_would_be_accepted() {
        let scratch = Scratch::new("mode");
        let yaml = edge_yaml() + "mode: fast\n";
        assert_refused(
            scratch.edge(&yaml),
            Some(10),
            "mode",
            "\"fast\" is not a mode; expected auto, redundant, active-backup or bond",
        );
        let yaml = edge_yaml() + "cipher: aes\n";
        assert_refused(scratch.edge(&yaml), Some(10), "cipher", "expected chacha20-poly1305 or aes-256-gcm");
        let yaml = gateway_yaml() + "mode: mirror\n";
        assert_refused(scratch.gateway(&yaml), Some(7), "mode", "\"mirror\" is not a mode");
    }

    #[test]
    fn names_ranges_and_addresses_are_checked_with_what_would_be_accepted() {
        let scratch = Scratch::new("rules");
        let uplink = |from: &str, to: &str| edge_yaml().replace(from, to);
        for (yaml, line, key, message) in [
            (
                uplink("wwan0", "\"eth 1\""),
                9,
                "uplinks[1].interface",
                "\"eth 1\" is not an interface name; expected 1-15 bytes without spaces, '/' or ':'",
            ),
            (uplink("wwan0", "a-very-long-name0"), 9, "uplinks[1].interface", "1-15 bytes"),
            (uplink("wwan0", "eth/1"), 9, "uplinks[1].interface", "not an interface name"),
            (uplink("name: lte", "name: \" \""), 8, "uplinks[1].name", "the name is empty"),
            (
                uplink("    interface: eth1\n", "    interface: eth1\n    source: 10.0.0\n"),
                8,
                "uplinks[0].source",
                "\"10.0.0\" is not an IP address",
            ),
            (
                uplink("    interface: eth1\n", "    interface: eth1\n    priority: 256\n"),
                8,
                "uplinks[0].priority",
                "256 is out of range; expected an integer from 0",
            ),
            (
                uplink("    interface: eth1\n", "    interface: eth1\n    rate_mbps: 0\n"),
                8,
                "uplinks[0].rate_mbps",
                "0 is out of range; expected a rate in Mbit/s above 0",
            ),
            (
                edge_yaml() + "latency_budget_ms: 0\n",
                10,
                "latency_budget_ms",
                "0 is out of range; expected an integer from 1 to 5000",
            ),
            (
                edge_yaml() + "latency_budget_ms: 300ms\n",
                10,
                "latency_budget_ms",
                "invalid type: string \"300ms\"; expected an integer from 1 to 5000",
            ),
            (
                edge_yaml() + "tap:\n  mtu: 100\n",
                11,
                "tap.mtu",
                "100 is out of range; expected an integer from 576 to 9000",
            ),
            (edge_yaml() + "tap:\n  name: braid/0\n", 11, "tap.name", "not an interface name"),
            (
                edge_yaml() + "tap:\n  mac: 03:00:00:00:00:01\n",
                11,
                "tap.mac",
                "is not a MAC address for a TAP; expected six hex bytes",
            ),
            (edge_yaml() + "tap:\n  mac: 02:00:00:00:00\n", 11, "tap.mac", "is not a MAC address"),
            (edge_yaml() + "tap:\n  bridge: \"\"\n", 11, "tap.bridge", "not an interface name"),
            (
                edge_yaml() + "status:\n  listen: localhost:80\n",
                11,
                "status.listen",
                "is not a socket address; expected IP:port",
            ),
        ] {
            assert_refused(scratch.edge(&yaml), Some(line), key, message);
        }
    }

    #[test]
    fn yaml_syntax_errors_are_located_and_keyed() {
        let scratch = Scratch::new("syntax");
        let yaml = edge_yaml() + "mode: \"redundant\n";
        assert_refused(scratch.edge(&yaml), Some(11), "mode", "found unexpected end of stream");
        let yaml = edge_yaml() + "uplinks:\n  - name: x\n";
        assert_refused(
            scratch.edge(&yaml),
            Some(10),
            "uplinks",
            "given twice; expected each key once (the first is on line 5)",
        );
        assert_refused(scratch.edge("- a\n"), Some(1), "", "expected a mapping of config keys");
    }

    #[test]
    fn a_full_gateway_config_fills_every_setting() {
        let scratch = Scratch::new("gateway-full");
        PrivateKey::from_bytes([6; 32]).write_file(&scratch.dir.join("van.psk")).unwrap();
        let yaml = gateway_yaml().replace("- name: van-2\n", "- name: van-2\n  psk_file: van.psk\n  tap: ingest2\n  mtu: 1400\n  mac: 02:00:00:00:00:02\n  bridge: br-ingest\n")
            + "listen: [\"0.0.0.0:4754\", \"[::]:4755\"]\nmode: bond\nlatency_budget_ms: 80\nhandshake_rate: 9\nstatus:\n  listen: 127.0.0.1:1\n";
        let settings = scratch.gateway(&yaml).unwrap();
        let gateway = &settings.gateway;
        assert_eq!(gateway.private_key, PrivateKey::from_bytes([1; 32]));
        assert_eq!(
            gateway.edges,
            [
                EdgeEntry { name: "van-1".into(), public_key: key(3), psk: None },
                EdgeEntry { name: "van-2".into(), public_key: key(4), psk: Some(Psk([6; 32])) },
            ]
        );
        assert_eq!(
            gateway.session,
            SessionConfig { mode: Mode::Bond, latency_budget: Duration::from_millis(80), ..SessionConfig::default() }
        );
        assert_eq!(gateway.handshake_rate, 9);
        assert_eq!(settings.listen, ["0.0.0.0:4754".parse().unwrap(), "[::]:4755".parse().unwrap()]);
        assert_eq!(
            settings.taps,
            [
                TapSettings { name: "braid-0".into(), mtu: 1500, mac: None, bridge: None },
                TapSettings {
                    name: "ingest2".into(),
                    mtu: 1400,
                    mac: Some([2, 0, 0, 0, 0, 2]),
                    bridge: Some("br-ingest".into())
                },
            ]
        );
        assert_eq!(settings.status.listen, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn a_minimal_gateway_config_takes_the_defaults() {
        let scratch = Scratch::new("gateway-min");
        let settings = scratch.gateway(&gateway_yaml()).unwrap();
        assert_eq!(settings.listen, [DEFAULT_GATEWAY_LISTEN]);
        assert_eq!(settings.gateway.handshake_rate, DEFAULT_HANDSHAKE_RATE);
        assert_eq!(settings.gateway.session, SessionConfig::default());
        assert_eq!(settings.taps.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["braid-0", "braid-1"]);
        assert_eq!(settings.status.listen, DEFAULT_GATEWAY_STATUS);
    }

    #[test]
    fn gateway_rules_refuse_duplicates_empty_lists_and_bad_addresses() {
        let scratch = Scratch::new("gateway-rules");
        let yaml = |from: &str, to: &str| gateway_yaml().replace(from, to);
        for (yaml, line, key, message) in [
            (
                yaml(&key(4).to_base64(), &key(3).to_base64()),
                Some(6),
                "edges[1].public_key",
                "the same public key as edges[0] (\"van-1\")",
            ),
            (yaml("van-2", "van-1"), Some(5), "edges[1].name", "\"van-1\" is also the name of edges[0]"),
            (
                yaml("- name: van-2\n", "- name: van-2\n  tap: braid-0\n"),
                Some(6),
                "edges[1].tap",
                "\"braid-0\" is also the tap of edges[0]",
            ),
            (
                yaml("- name: van-1\n", "- name: van-1\n  mtu: 10000\n"),
                Some(4),
                "edges[0].mtu",
                "expected an integer from 576 to 9000",
            ),
            (gateway_yaml() + "listen: [\"0.0.0.0\"]\n", Some(7), "listen[0]", "\"0.0.0.0\" is not a socket address"),
            (gateway_yaml() + "listen: []\n", Some(7), "listen", "the list is empty"),
            (
                gateway_yaml() + "listen:\n  - 0.0.0.0:1\n  - 0.0.0.0:1\n",
                Some(9),
                "listen[1]",
                "0.0.0.0:1 is listed twice",
            ),
            (gateway_yaml() + "handshake_rate: 0\n", Some(7), "handshake_rate", "expected an integer from 1 to 100000"),
            (
                "private_key_file: key.key\nedges: []\n".into(),
                Some(2),
                "edges",
                "the list is empty; expected a list of allowed edges",
            ),
        ] {
            assert_refused(scratch.gateway(&yaml), line, key, message);
        }
    }

    #[test]
    fn the_status_endpoint_is_on_by_default_on_loopback_without_a_token() {
        let scratch = Scratch::new("status-default");
        let settings = scratch.edge(&edge_yaml()).unwrap();
        assert_eq!(settings.status, StatusSettings { listen: DEFAULT_EDGE_STATUS, enabled: true, token: None });
        assert!(!settings.name.is_empty(), "the edge is named after the host");
        let settings = scratch.gateway(&gateway_yaml()).unwrap();
        assert_eq!(settings.status, StatusSettings { listen: DEFAULT_GATEWAY_STATUS, enabled: true, token: None });
    }

    #[test]
    fn an_edge_name_enabled_flag_and_token_file_are_read() {
        let scratch = Scratch::new("status-full");
        let token = scratch.write("status.token", "s3cret-token-0123456789\n");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let yaml = edge_yaml()
            + "name: van-7\nstatus:\n  listen: 0.0.0.0:8080\n  enabled: false\n  token_file: status.token\n";
        let settings = scratch.edge(&yaml).unwrap();
        assert_eq!(settings.name, "van-7");
        assert_eq!(
            settings.status,
            StatusSettings {
                listen: "0.0.0.0:8080".parse().unwrap(),
                enabled: false,
                token: Some("s3cret-token-0123456789".into())
            }
        );
        let gateway = gateway_yaml() + "status:\n  listen: \"[::]:7475\"\n  token_file: status.token\n";
        assert_eq!(scratch.gateway(&gateway).unwrap().status.token.as_deref(), Some("s3cret-token-0123456789"));
    }

    #[test]
    fn listening_off_loopback_without_a_token_is_refused_at_the_listen_line() {
        let scratch = Scratch::new("status-public");
        let error = assert_refused(
            scratch.edge(&(edge_yaml() + "status:\n  listen: 0.0.0.0:7474\n")),
            Some(11),
            "status.listen",
            "0.0.0.0:7474 is not a loopback address",
        );
        assert!(error.to_string().contains("edge.yaml:11: status.listen: "), "{error}");
        assert!(error.message.contains("status.token_file"), "{error}");
        assert_refused(
            scratch.gateway(&(gateway_yaml() + "status:\n  listen: \"[::]:7475\"\n")),
            Some(8),
            "status.listen",
            "is not a loopback address",
        );
        // Switched off, the address is never bound, so no token is needed.
        let off = edge_yaml() + "status:\n  listen: 0.0.0.0:7474\n  enabled: false\n";
        assert!(!scratch.edge(&off).unwrap().status.enabled);
        assert!(scratch.edge(&(edge_yaml() + "status:\n  listen: \"[::1]:7474\"\n")).is_ok());
    }

    #[test]
    fn a_weak_or_readable_token_file_is_refused_with_what_would_be_accepted() {
        let scratch = Scratch::new("status-token");
        let short = scratch.write("short.token", "tooshort\n");
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = scratch.write("open.token", "a-long-enough-token-123456\n");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let with = |file: &str| edge_yaml() + &format!("status:\n  token_file: {file}\n");
        assert_refused(scratch.edge(&with("short.token")), Some(11), "status.token_file", "holds 8 characters");
        assert_refused(scratch.edge(&with("open.token")), Some(11), "status.token_file", "run `chmod 600");
        assert_refused(scratch.edge(&with("missing.token")), Some(11), "status.token_file", "cannot read");
        assert_refused(
            scratch.edge(&(edge_yaml() + "status:\n  enabled: maybe\n")),
            Some(11),
            "status.enabled",
            "expected true or false",
        );
        assert_refused(scratch.edge(&(edge_yaml() + "name: \"\"\n")), Some(10), "name", "is empty");
    }

    #[test]
    fn the_packaged_examples_load_once_their_key_paths_point_at_a_key() {
        let scratch = Scratch::new("examples");
        let edge = include_str!("../packaging/examples/edge.yaml").replace("/etc/braid/edge.key", "key.key");
        let settings = scratch.edge(&edge).unwrap();
        assert_eq!(settings.uplinks.len(), 3);
        let gateway = include_str!("../packaging/examples/gateway.yaml").replace("/etc/braid/gateway.key", "key.key");
        let settings = scratch.gateway(&gateway).unwrap();
        assert_eq!(settings.gateway.edges.len(), 2);
        assert_eq!(settings.listen.len(), 2);
    }
}
