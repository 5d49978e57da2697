//! The gateway's `fleet:` section: the etcd cluster it registers in, and what it tells the
//! fleet about itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::locate::Document;
use super::rules::{Problem, Problems, in_range, interface_name, problem, range_rule, socket_address};

/// `fleet:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetFile {
    etcd: Vec<String>,
    name: Option<String>,
    prefix: Option<String>,
    zone: Option<String>,
    address: Option<String>,
    capacity_mbps: Option<f64>,
    capacity_edges: Option<i64>,
    lease_ttl_s: Option<i64>,
    hold_down_s: Option<i64>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    edge_bridge: Option<String>,
}

/// The key prefix the fleet's keys live under, unless the config sets one.
pub const DEFAULT_PREFIX: &str = "/braid";
/// The zone of a gateway whose config sets none.
pub(super) const DEFAULT_ZONE: &str = "default";
/// The Mbit/s a gateway offers the fleet unless its config says otherwise.
pub(super) const DEFAULT_CAPACITY_MBPS: f64 = 1000.0;
/// The edges a gateway offers the fleet unless its config says otherwise.
pub(super) const DEFAULT_CAPACITY_EDGES: u32 = 100;
/// How long a gateway's registration outlives its last keep-alive.
pub(super) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Lease TTLs a config may set, in seconds: etcd's minimum is 2 (shorter leases are extended to
/// its election timeout), and past a minute a dead gateway lingers in the fleet too long.
pub(super) const LEASE_TTL_S_RANGE: core::ops::RangeInclusive<i64> = 2..=60;
/// Placement hold-downs a config may set, in seconds.
const HOLD_DOWN_S_RANGE: core::ops::RangeInclusive<i64> = 0..=3600;
/// The most Mbit/s a gateway may offer.
const MAX_CAPACITY_MBPS: f64 = 1_000_000.0;
const CAPACITY_EDGES_RANGE: core::ops::RangeInclusive<i64> = 1..=100_000;
pub(super) const ENDPOINT_RULE: &str = "a list of etcd client URLs, e.g. [\"http://10.0.0.1:2379\"]";
pub(super) const FLEET_NAME_RULE: &str = "1-64 letters, digits, '-', '_' or '.'";

/// Where and how a gateway takes part in a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// The etcd cluster's client URLs.
    pub endpoints: Vec<String>,
    /// This gateway's name in the fleet (unique).
    pub name: String,
    /// The key prefix of the fleet's keys.
    pub prefix: String,
    /// Its zone label.
    pub zone: String,
    /// The address edges reach it at.
    pub address: SocketAddr,
    /// The Mbit/s it offers.
    pub capacity_mbps: f64,
    /// The edges it offers to carry.
    pub capacity_edges: u32,
    /// How long its registration outlives its last keep-alive.
    pub lease_ttl: Duration,
    /// How long a member must have been in the fleet before edges are placed on it.
    pub hold_down: Duration,
    /// etcd's user and password, if the cluster has authentication on.
    pub auth: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints).
    pub tls: Option<FleetTls>,
    /// The bridge the TAPs of edges admitted through the fleet join, unless their entry names one.
    pub edge_bridge: Option<String>,
}

/// TLS to etcd: the CA that signed its certificates, and this gateway's client certificate and
/// key if etcd asks for one (`--client-cert-auth`), all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetTls {
    /// The CA certificate(s).
    pub ca: Vec<u8>,
    /// The client certificate and its private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for FleetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("FleetTls")
            .field("ca_bytes", &self.ca.len())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

impl FleetSettings {
    /// As `check-config --against-running` compares it: every setting but the password.
    pub(super) fn restart_text(&self) -> String {
        let Self {
            endpoints,
            name,
            prefix,
            zone,
            address,
            capacity_mbps,
            capacity_edges,
            lease_ttl,
            hold_down,
            auth,
            tls,
            edge_bridge,
        } = self;
        let user = auth.as_ref().map(|(user, _)| user);
        format!(
            "{endpoints:?} {name} {prefix} {zone} {address} {capacity_mbps} {capacity_edges} {lease_ttl:?} {hold_down:?} {user:?} {tls:?} {edge_bridge:?}"
        )
    }
}

/// A fleet name: a gateway's or an edge's, as it appears in etcd keys.
pub(crate) fn fleet_name(key: &str, name: &str) -> Result<(), Problem> {
    let valid = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if valid { Ok(()) } else { Err(problem(key, format!("{name:?} is not a fleet name; expected {FLEET_NAME_RULE}"))) }
}

/// The fleet settings, every problem noted; `listen` gives the default address.
pub(super) fn fleet(
    doc: &Document,
    problems: &mut Problems,
    file: FleetFile,
    listen: &[SocketAddr],
) -> Option<FleetSettings> {
    let before = problems.0.len();
    if file.etcd.is_empty() {
        problems.push(problem("fleet.etcd", format!("the list is empty; expected {ENDPOINT_RULE}")));
    }
    for (i, url) in file.etcd.iter().enumerate() {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/') && !r.ends_with('/')) {
            let message = format!("{url:?} is not an etcd client URL; expected {ENDPOINT_RULE}");
            problems.push(problem(format!("fleet.etcd[{i}]"), message));
        }
    }
    let name = file.name.unwrap_or_else(super::rules::host_name);
    if let Err(p) = fleet_name("fleet.name", &name) {
        problems.push(p);
    }
    let prefix = file.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        problems.push(problem(
            "fleet.prefix",
            format!("{prefix:?} is not a key prefix; expected a path such as /braid (a leading '/', no trailing one)"),
        ));
    }
    let zone = file.zone.unwrap_or_else(|| DEFAULT_ZONE.to_owned());
    if let Err(p) = fleet_name("fleet.zone", &zone) {
        problems.push(p);
    }
    let address = match file.address {
        Some(text) => problems.check(socket_address("fleet.address", &text)),
        None => match listen.iter().find(|a| !a.ip().is_unspecified()) {
            Some(&a) => Some(a),
            None => {
                problems.push(problem(
                    "fleet.address",
                    "missing, and every listen address is a wildcard; expected the IP:port edges reach this gateway at",
                ));
                None
            }
        },
    };
    let capacity_mbps = file.capacity_mbps.unwrap_or(DEFAULT_CAPACITY_MBPS);
    if !(capacity_mbps > 0.0 && capacity_mbps <= MAX_CAPACITY_MBPS) {
        problems.push(problem(
            "fleet.capacity_mbps",
            format!("{capacity_mbps} is out of range; expected Mbit/s above 0 and at most {MAX_CAPACITY_MBPS}"),
        ));
    }
    let capacity_edges = match file.capacity_edges {
        None => Some(DEFAULT_CAPACITY_EDGES),
        Some(n) => problems.check(in_range("fleet.capacity_edges", n, &CAPACITY_EDGES_RANGE, "edges")),
    };
    let lease_ttl = match file.lease_ttl_s {
        None => Some(DEFAULT_LEASE_TTL),
        Some(s) => problems
            .check(in_range::<u64>("fleet.lease_ttl_s", s, &LEASE_TTL_S_RANGE, "seconds"))
            .map(Duration::from_secs),
    };
    let hold_down = match file.hold_down_s {
        None => Some(crate::fleet::placement::HOLD_DOWN),
        Some(s) => problems
            .check(in_range::<u64>("fleet.hold_down_s", s, &HOLD_DOWN_S_RANGE, "seconds"))
            .map(Duration::from_secs),
    };
    let auth = match (file.username, file.password_file) {
        (None, None) => Some(None),
        (Some(user), Some(path)) => {
            let path = doc.resolve(&path);
            match super::secrets::read_secret_file(&path) {
                Ok(password) => Some(Some((user, password))),
                Err(why) => {
                    problems.push(problem("fleet.password_file", why));
                    None
                }
            }
        }
        (Some(_), None) => {
            problems
                .push(problem("fleet.password_file", "missing; expected it with fleet.username (a file, mode 0600)"));
            None
        }
        (None, Some(_)) => {
            problems.push(problem("fleet.username", "missing; expected it with fleet.password_file"));
            None
        }
    };
    let tls = tls(doc, problems, &file.etcd, (file.ca_file, file.cert_file, file.key_file));
    if let Some(bridge) = &file.edge_bridge
        && let Err(p) = interface_name("fleet.edge_bridge", bridge)
    {
        problems.push(p);
    }
    if problems.0.len() > before {
        return None;
    }
    Some(FleetSettings {
        endpoints: file.etcd,
        name,
        prefix,
        zone,
        address: address?,
        capacity_mbps,
        capacity_edges: capacity_edges?,
        lease_ttl: lease_ttl?,
        hold_down: hold_down?,
        auth: auth?,
        tls: tls?,
        edge_bridge: file.edge_bridge,
    })
}

/// TLS to etcd: with `https://` endpoints a CA is required (no system roots are trusted for
/// etcd), and a client certificate and key go together; the key is refused when others can
/// read it. `None` when a problem was noted.
fn tls(
    doc: &Document,
    problems: &mut Problems,
    endpoints: &[String],
    (ca, cert, key): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
) -> Option<Option<FleetTls>> {
    let https = endpoints.iter().filter(|u| u.starts_with("https://")).count();
    if https > 0 && https < endpoints.len() {
        problems.push(problem("fleet.etcd", "mixes http:// and https://; expected one scheme for the cluster"));
        return None;
    }
    if https == 0 {
        if ca.is_some() || cert.is_some() || key.is_some() {
            let message = "TLS files are set but the etcd endpoints are http://; expected https:// endpoints";
            problems.push(problem("fleet.ca_file", message));
            return None;
        }
        return Some(None);
    }
    let Some(ca) = ca else {
        let message = "missing; expected the PEM file of the CA that signed etcd's certificates (https:// endpoints)";
        problems.push(problem("fleet.ca_file", message));
        return None;
    };
    let ca = read_pem(doc, problems, "fleet.ca_file", &ca, false);
    let identity = match (cert, key) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let cert = read_pem(doc, problems, "fleet.cert_file", &cert, false);
            let key = read_pem(doc, problems, "fleet.key_file", &key, true);
            cert.zip(key).map(Some)
        }
        (Some(_), None) => {
            problems.push(problem("fleet.key_file", "missing; expected it with fleet.cert_file (PEM, mode 0600)"));
            None
        }
        (None, Some(_)) => {
            problems.push(problem("fleet.cert_file", "missing; expected it with fleet.key_file (PEM)"));
            None
        }
    };
    Some(Some(FleetTls { ca: ca?, identity: identity? }))
}

/// A PEM file; a `secret` one (a private key) is refused when others can read it.
fn read_pem(
    doc: &Document,
    problems: &mut Problems,
    key: &str,
    path: &std::path::Path,
    secret: bool,
) -> Option<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let path = doc.resolve(path);
    let shown = path.display();
    if secret
        && let Ok(meta) = std::fs::metadata(&path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let mode = meta.permissions().mode() & 0o777;
        problems.push(problem(key, format!("{shown} is readable by others (mode {mode:o}); run `chmod 600 {shown}`")));
        return None;
    }
    match std::fs::read(&path) {
        Ok(pem) if pem.starts_with(b"-----BEGIN ") => Some(pem),
        Ok(_) => {
            problems.push(problem(key, format!("{shown} is not PEM; expected a PEM file")));
            None
        }
        Err(e) => {
            problems.push(problem(key, format!("cannot read {shown}: {e}")));
            None
        }
    }
}

/// What `fleet.*` keys accept, for the parser's own errors.
pub(super) fn expected(leaf: &str) -> Option<String> {
    Some(match leaf {
        "fleet" => "a mapping with etcd (required) and name, prefix, zone, address, capacity_mbps, capacity_edges, \
                    lease_ttl_s, hold_down_s, username, password_file, ca_file, cert_file, key_file, edge_bridge"
            .into(),
        "etcd" => ENDPOINT_RULE.into(),
        "zone" | "name" => FLEET_NAME_RULE.into(),
        "address" => super::rules::SOCKET_RULE.into(),
        "prefix" => "a key prefix such as /braid".into(),
        "capacity_mbps" => format!("Mbit/s above 0 and at most {MAX_CAPACITY_MBPS}"),
        "capacity_edges" => range_rule(&CAPACITY_EDGES_RANGE, "edges"),
        "lease_ttl_s" => range_rule(&LEASE_TTL_S_RANGE, "seconds"),
        "hold_down_s" => range_rule(&HOLD_DOWN_S_RANGE, "seconds"),
        "username" => "etcd's user name".into(),
        "password_file" => "a file holding etcd's password, mode 0600".into(),
        "ca_file" => "the PEM file of the CA that signed etcd's certificates".into(),
        "cert_file" => "this gateway's client certificate for etcd, PEM".into(),
        "key_file" => "the client certificate's private key, PEM, mode 0600".into(),
        "edge_bridge" => format!("a bridge name of {}", super::rules::INTERFACE_RULE),
        _ => return None,
    })
}

/// The TAP of an edge the fleet admitted: named from its key, so that it is the same on every
/// gateway of the fleet.
pub fn fleet_tap_name(key: &crate::keys::PublicKey) -> String {
    let hex: String = key.0[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("braid-f{hex}")
}

impl super::GatewaySettings {
    /// These settings with the fleet's allowlist after the file's own edges: each admitted
    /// edge gets a TAP named from its key (1500 bytes, on its record's bridge or
    /// `fleet.edge_bridge`). An edge whose name, key or TAP name the file (or an earlier one)
    /// already has is left out, and named in the second value.
    pub fn with_fleet_edges(&self, edges: &[crate::fleet::member::FleetEdge]) -> (Self, Vec<String>) {
        let mut settings = self.clone();
        let mut skipped = Vec::new();
        let edge_bridge = self.fleet.as_ref().and_then(|f| f.edge_bridge.clone());
        for edge in edges {
            let tap = fleet_tap_name(&edge.public_key);
            let clash = settings.gateway.edges.iter().any(|e| e.name == edge.name || e.public_key == edge.public_key)
                || settings.taps.iter().any(|t| t.name == tap);
            if clash {
                skipped.push(edge.name.clone());
                continue;
            }
            settings.gateway.edges.push(crate::endpoint::gateway::EdgeEntry {
                name: edge.name.clone(),
                public_key: edge.public_key,
                psk: None,
            });
            settings.taps.push(super::TapSettings {
                name: tap,
                mtu: 1500,
                mac: None,
                bridge: edge.bridge.clone().or_else(|| edge_bridge.clone()),
            });
        }
        (settings, skipped)
    }
}
