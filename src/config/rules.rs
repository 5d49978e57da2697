//! The rules that turn a parsed config file into the settings the daemons run with, each
//! broken rule a [`Problem`] at its key path, saying what would be accepted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::file::{Advanced, EdgeFile, FecFile, GatewayEntryFile, GatewayFile, PeerFile, Scalar, StatusFile};
use super::locate::Document;
use super::secrets::{read_private_key, read_psk, read_token};
use super::*;
use crate::endpoint::edge::GatewayPeer;
use crate::endpoint::gateway::{DEFAULT_HANDSHAKE_RATE, EdgeEntry};
use crate::keys::PublicKey;
use crate::{FecConfig, LinkConfig, MAX_LINKS, Mode, SessionConfig, Tuning};

pub(super) const INTERFACE_RULE: &str = "1-15 bytes without spaces, '/' or ':'";
pub(super) const ADDRESS_RULE: &str =
    "IP:port, \"[IPv6]:port\" (quoted) or host:port; the port is 1-65535, 4754 if left out";
pub(super) const SOCKET_RULE: &str = "IP:port or \"[IPv6]:port\" (quoted), e.g. 127.0.0.1:7474";
pub(super) const KEY_RULE: &str = "a base64 key of 32 bytes (44 characters, as `keygen` and `pubkey` print)";
pub(super) const MODE_RULE: &str = "auto, redundant, active-backup or bond";
pub(super) const CIPHER_RULE: &str = "chacha20-poly1305 or aes-256-gcm";
pub(super) const TOKEN_RULE: &str = "a file holding one token of 16 to 256 printable characters without spaces, mode 0600 \
     (e.g. `head -c 24 /dev/urandom | base64 > status.token; chmod 600 status.token`)";
pub(super) const MAC_RULE: &str = "six hex bytes with ':' of a unicast address, e.g. 02:00:00:00:00:01";

/// What a key accepts, for the parser's own errors (missing keys, wrong types).
pub(super) fn expected(key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    if key.starts_with("fleet")
        && let Some(rule) = super::fleet::expected(leaf)
    {
        return rule;
    }
    match leaf {
        "" => "a mapping of config keys, as in packaging/examples".into(),
        "private_key_file" => "the path of a private key file (from `keygen`, mode 0600)".into(),
        "psk_file" => "the path of a pre-shared key file (one base64 line, mode 0600)".into(),
        "gateway" => "a mapping with address, public_key and optionally psk_file (or a gateways: list)".into(),
        "gateways" => "a list of mappings with address, public_key, and optionally psk_file and priority".into(),
        "address" => ADDRESS_RULE.into(),
        "public_key" => KEY_RULE.into(),
        "cipher" => CIPHER_RULE.into(),
        "mode" => MODE_RULE.into(),
        "latency_budget_ms" => range_rule(&LATENCY_BUDGET_MS_RANGE, "milliseconds"),
        "gateway_return_after_s" => range_rule(&GATEWAY_RETURN_AFTER_S_RANGE, "seconds; 0: never"),
        "retransmit" | "mss_clamp" => "true or false".into(),
        "path_mtu" => range_rule(&PATH_MTU_RANGE, "bytes"),
        "fec" => "a mapping with enabled, block, parity and max_delay_ms (all optional)".into(),
        "enabled" if key == "fec.enabled" => "true or false".into(),
        "block" => range_rule(&FEC_BLOCK_RANGE, "frames"),
        "parity" => range_rule(&FEC_PARITY_RANGE, "frames' worth of recovery per block"),
        "max_delay_ms" => range_rule(&FEC_MAX_DELAY_MS_RANGE, "milliseconds"),
        "handshake_rate" => range_rule(&HANDSHAKE_RATE_RANGE, "handshakes per second"),
        "workers" => format!("auto (one per core) or {}", range_rule(&WORKERS_RANGE, "threads")),
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
        "bitrate_feed" => "IP:port the edge sends its bitrate advice to (UDP), e.g. 127.0.0.1:5600".into(),
        "priority" => "an integer from 0 (most preferred) to 255".into(),
        "rate_mbps" => format!("a rate in Mbit/s above 0 and at most {MAX_RATE_MBPS}"),
        "metered" | "nonlocal_bind" => "true or false".into(),
        "cap_mb" => "megabytes (10^6 bytes) per cap_period, above 0, e.g. 20000".into(),
        "cap_period" => "day or month (UTC)".into(),
        "status" => "a mapping with listen, enabled and token_file (all optional)".into(),
        "enabled" => "true or false".into(),
        "token_file" => TOKEN_RULE.into(),
        "listen" if key == "listen" => format!("a list of UDP addresses, each {SOCKET_RULE}"),
        "listen" => SOCKET_RULE.into(),
        _ => "a value of the right type".into(),
    }
}

pub(super) fn range_rule(range: &core::ops::RangeInclusive<i64>, unit: &str) -> String {
    format!("an integer from {} to {} ({unit})", range.start(), range.end())
}

/// A rule a parsed config breaks: the key path and the message; [`Document::locate`] adds the
/// file and line.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) message: String,
}

pub(super) fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

/// The problems found so far: every rule is checked, and a file's problems are reported
/// together.
#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    /// The value, or `None` with its problem noted.
    pub(super) fn check<T>(&mut self, result: Result<T, Problem>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.0.push(problem);
                None
            }
        }
    }

    pub(super) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }
}

pub(super) fn edge_settings(doc: &Document, file: EdgeFile) -> Result<EdgeSettings, Vec<Problem>> {
    let mut problems = Problems::default();
    let private_key = problems.check(read_private_key(doc, &file.private_key_file));
    let (remote, gateway_key, psk, standbys) = match gateways(doc, &mut problems, file.gateway, file.gateways) {
        Some((first, standbys)) => (Some(first.address), Some(first.public_key), Some(first.psk), Some(standbys)),
        None => (None, None, None, None),
    };
    let return_after_s = file.gateway_return_after_s.map_or(Some(DEFAULT_GATEWAY_RETURN_AFTER_S), |s| {
        problems.check(in_range::<u32>("gateway_return_after_s", s, &GATEWAY_RETURN_AFTER_S_RANGE, "seconds; 0: never"))
    });
    let return_after = return_after_s.map(|s| (s > 0).then(|| Duration::from_secs(u64::from(s))));
    let cipher = match file.cipher.as_deref() {
        None | Some("chacha20-poly1305") => Some(Cipher::ChaCha20Poly1305),
        Some("aes-256-gcm") => Some(Cipher::Aes256Gcm),
        Some(other) => {
            problems.push(problem("cipher", format!("{other:?} is not a cipher; expected {CIPHER_RULE}")));
            None
        }
    };
    let session = session(
        &mut problems,
        (file.mode.as_deref(), file.latency_budget_ms, file.retransmit, file.path_mtu, file.mss_clamp),
        file.advanced.as_ref(),
    );
    let fec = file.fec.map_or(Some(None), |f| fec(&mut problems, f));
    let session = session.zip(fec).map(|(session, fec)| SessionConfig { fec, ..session });

    let tap_file = file.tap.unwrap_or_default();
    let tap_name = tap_file.name.unwrap_or_else(|| DEFAULT_EDGE_TAP.into());
    let tap = problems.check(tap("tap.", tap_name, tap_file.mtu, tap_file.mac, tap_file.bridge));

    if file.uplinks.is_empty() {
        problems.push(problem("uplinks", format!("the list is empty; expected 1 to {MAX_LINKS} uplinks")));
    }
    if file.uplinks.len() > MAX_LINKS {
        let message = format!("{} uplinks; expected at most {MAX_LINKS}", file.uplinks.len());
        problems.push(problem(format!("uplinks[{MAX_LINKS}]"), message));
    }
    let mut uplinks: Vec<UplinkSettings> = Vec::with_capacity(file.uplinks.len());
    let mut links: Vec<LinkConfig> = Vec::with_capacity(file.uplinks.len());
    for (i, uplink) in file.uplinks.into_iter().enumerate().take(MAX_LINKS) {
        let key = |field: &str| format!("uplinks[{i}].{field}");
        let id = LinkId::new(u8::try_from(i).expect("at most MAX_LINKS uplinks are taken"));
        let mut ok = problems.check(interface_name(&key("interface"), &uplink.interface)).is_some();
        ok &=
            problems.check(list_name(&key("name"), &uplink.name, uplinks.iter().map(|u| &u.name), "uplinks")).is_some();
        ok &= problems
            .check(unique(
                &key("interface"),
                &uplink.interface,
                uplinks.iter().map(|u| &u.interface),
                "uplinks",
                "interface",
            ))
            .is_some();
        let source = match uplink.source {
            None => Some(None),
            Some(text) => problems.check(text.trim().parse::<IpAddr>().map(Some).map_err(|_| {
                problem(key("source"), format!("{text:?} is not an IP address; expected {}", expected("source")))
            })),
        };
        let priority = match uplink.priority {
            None => Some(id.get()),
            Some(p) => problems.check(u8::try_from(p).map_err(|_| {
                problem(key("priority"), format!("{p} is out of range; expected {}", expected("priority")))
            })),
        };
        let rate_bps = match uplink.rate_mbps {
            None => Some(None),
            Some(mbps) if mbps > 0.0 && mbps <= MAX_RATE_MBPS => Some(Some((mbps * 1e6).round() as u64)),
            Some(mbps) => {
                problems.push(problem(
                    key("rate_mbps"),
                    format!("{mbps} is out of range; expected {}", expected("rate_mbps")),
                ));
                None
            }
        };
        let period = match uplink.cap_period.as_deref() {
            None | Some("month") => Some(CapPeriod::Month),
            Some("day") => Some(CapPeriod::Day),
            Some(other) => {
                problems.push(problem(key("cap_period"), format!("{other:?}; expected {}", expected("cap_period"))));
                None
            }
        };
        let cap = match (uplink.cap_mb, period) {
            (None, _) => Some(None),
            (Some(mb), Some(period)) if mb > 0.0 && mb.is_finite() && mb <= 1e12 => {
                Some(Some(DataCap { bytes: (mb * 1e6).round() as u64, period }))
            }
            (Some(mb), _) => {
                problems.push(problem(key("cap_mb"), format!("{mb} is out of range; expected {}", expected("cap_mb"))));
                None
            }
        };
        if uplink.cap_mb.is_none() && uplink.cap_period.is_some() {
            problems.push(problem(key("cap_period"), "without cap_mb it caps nothing; expected cap_mb beside it"));
        }
        // A refused uplink is left out, so that the next ones are checked against the good ones.
        if let (true, Some(source), Some(priority), Some(rate_bps), Some(cap)) = (ok, source, priority, rate_bps, cap) {
            links.extend(remote.map(|remote| LinkConfig { id, priority, rate_bps, remote }));
            let metered = uplink.metered.unwrap_or(false) || cap.is_some();
            uplinks.push(UplinkSettings { id, name: uplink.name, interface: uplink.interface, source, metered, cap });
        }
    }
    let status = problems.check(status(doc, file.status, DEFAULT_EDGE_STATUS));
    let name = match file.name {
        None => Some(host_name()),
        Some(name) if name.trim().is_empty() || name.chars().any(char::is_control) => {
            problems.push(problem(
                "name",
                format!("{name:?} is empty or has control characters; expected {}", expected("name")),
            ));
            None
        }
        Some(name) => Some(name),
    };
    let bitrate_feed = match file.bitrate_feed {
        None => Some(None),
        Some(text) => problems.check(text.trim().parse::<SocketAddr>().map(Some).map_err(|_| {
            problem("bitrate_feed", format!("{text:?} is not an address; expected {}", expected("bitrate_feed")))
        })),
    };
    let (
        Some(private_key),
        Some(gateway_key),
        Some(psk),
        Some(cipher),
        Some(mut session),
        Some(tap),
        Some(status),
        Some(name),
        Some(bitrate_feed),
        Some(standbys),
        Some(return_after),
    ) = (private_key, gateway_key, psk, cipher, session, tap, status, name, bitrate_feed, standbys, return_after)
    else {
        return Err(problems.0);
    };
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    session.links = links;
    Ok(EdgeSettings {
        path: doc.path.clone(),
        name,
        edge: EdgeConfig { private_key, gateway_key, psk, cipher, session, standbys, return_after },
        tap,
        uplinks,
        status,
        bitrate_feed,
    })
}

pub(super) fn gateway_settings(doc: &Document, file: GatewayFile) -> Result<GatewaySettings, Vec<Problem>> {
    let mut problems = Problems::default();
    let private_key = problems.check(read_private_key(doc, &file.private_key_file));
    let listen = match file.listen {
        None => vec![DEFAULT_GATEWAY_LISTEN],
        Some(list) if list.is_empty() => {
            problems.push(problem("listen", format!("the list is empty; expected {}", expected("listen"))));
            Vec::new()
        }
        Some(list) => {
            let mut addresses: Vec<SocketAddr> = Vec::with_capacity(list.len());
            for (i, text) in list.iter().enumerate() {
                let Some(address) = problems.check(socket_address(&format!("listen[{i}]"), text)) else { continue };
                if addresses.contains(&address) {
                    problems.push(problem(format!("listen[{i}]"), format!("{address} is listed twice")));
                    continue;
                }
                addresses.push(address);
            }
            addresses
        }
    };
    let session = session(
        &mut problems,
        (file.mode.as_deref(), file.latency_budget_ms, file.retransmit, file.path_mtu, file.mss_clamp),
        file.advanced.as_ref(),
    );
    let handshake_rate = match file.handshake_rate {
        None => Some(DEFAULT_HANDSHAKE_RATE),
        Some(rate) => problems.check(in_range("handshake_rate", rate, &HANDSHAKE_RATE_RANGE, "handshakes per second")),
    };
    let workers = match &file.workers {
        None => Some(Workers::Auto),
        Some(Scalar::Text(text)) if text == "auto" => Some(Workers::Auto),
        Some(Scalar::Int(n)) => problems.check(in_range("workers", *n, &WORKERS_RANGE, "threads").map(Workers::Count)),
        Some(other) => {
            problems.push(problem(
                "workers",
                format!("{:?} is not a number; expected {}", other.text(), expected("workers")),
            ));
            None
        }
    };
    // A fleet member may start with no edge of its own: the fleet's allowlist admits them.
    let fleet = file.fleet.map(|fleet| super::fleet::fleet(doc, &mut problems, fleet, &listen));
    if file.edges.is_empty() && fleet.is_none() {
        problems.push(problem("edges", format!("the list is empty; expected {}", expected("edges"))));
    }
    let mut edges: Vec<EdgeEntry> = Vec::with_capacity(file.edges.len());
    let mut taps: Vec<TapSettings> = Vec::with_capacity(file.edges.len());
    for (i, edge) in file.edges.into_iter().enumerate() {
        let key = |field: &str| format!("edges[{i}].{field}");
        let mut ok =
            problems.check(list_name(&key("name"), &edge.name, edges.iter().map(|e| &e.name), "edges")).is_some();
        let public_key = problems.check(public_key(&key("public_key"), &edge.public_key));
        if let Some(public_key) = &public_key
            && let Some(first) = edges.iter().position(|e| e.public_key == *public_key)
        {
            let message = format!(
                "the same public key as edges[{first}] ({:?}); expected one key per edge (run `braid-edge keygen` on each)",
                edges[first].name
            );
            problems.push(problem(key("public_key"), message));
            ok = false;
        }
        let psk = problems.check(edge.psk_file.as_deref().map(|p| read_psk(doc, &key("psk_file"), p)).transpose());
        let tap_name = edge.tap.unwrap_or_else(|| format!("{DEFAULT_GATEWAY_TAP_PREFIX}{i}"));
        let tap = problems.check(tap(&format!("edges[{i}]."), tap_name, edge.mtu, edge.mac, edge.bridge));
        if let Some(tap) = &tap {
            ok &=
                problems.check(unique(&key("tap"), &tap.name, taps.iter().map(|t| &t.name), "edges", "tap")).is_some();
        }
        // A refused edge is left out, so that the next ones are checked against the good ones.
        if let (true, Some(public_key), Some(psk), Some(tap)) = (ok, public_key, psk, tap) {
            edges.push(EdgeEntry { name: edge.name, public_key, psk });
            taps.push(tap);
        }
    }
    let status = problems.check(status(doc, file.status, DEFAULT_GATEWAY_STATUS));
    let (Some(private_key), Some(session), Some(handshake_rate), Some(status), Some(workers)) =
        (private_key, session, handshake_rate, status, workers)
    else {
        return Err(problems.0);
    };
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(GatewaySettings {
        path: doc.path.clone(),
        gateway: GatewayConfig { private_key, edges, session, handshake_rate },
        listen,
        nonlocal_bind: file.nonlocal_bind.unwrap_or(false),
        workers,
        taps,
        status,
        fleet: fleet.flatten(),
    })
}

/// What both ends' files say of the session: mode, latency budget, retransmission, path MTU and
/// MSS clamping, as written.
pub(super) type SessionKeys<'a> = (Option<&'a str>, Option<i64>, Option<bool>, Option<i64>, Option<bool>);

/// The session settings both ends share, with `advanced:` applied; `None` if any is refused
/// (each problem is noted).
pub(super) fn session(
    problems: &mut Problems,
    (mode, latency_budget_ms, retransmit, path_mtu, mss_clamp): SessionKeys<'_>,
    advanced: Option<&Advanced>,
) -> Option<SessionConfig> {
    let mut ok = true;
    let mode = match mode {
        None => Mode::default(),
        Some(name) => Mode::from_name(name).unwrap_or_else(|| {
            problems.push(problem("mode", format!("{name:?} is not a mode; expected {MODE_RULE}")));
            ok = false;
            Mode::default()
        }),
    };
    let mut session = SessionConfig { mode, ..SessionConfig::default() };
    session.retransmit = retransmit.unwrap_or(session.retransmit);
    session.clamp_mss = mss_clamp.unwrap_or(session.clamp_mss);
    if let Some(mtu) = path_mtu {
        match problems.check(in_range::<usize>("path_mtu", mtu, &PATH_MTU_RANGE, "bytes")) {
            Some(mtu) => session.max_datagram = mtu - IP_UDP_OVERHEAD,
            None => ok = false,
        }
    }
    if let Some(ms) = latency_budget_ms {
        match problems.check(in_range::<u32>("latency_budget_ms", ms, &LATENCY_BUDGET_MS_RANGE, "milliseconds")) {
            Some(ms) => session.latency_budget = Duration::from_millis(u64::from(ms)),
            None => ok = false,
        }
    }
    for (section, fields) in advanced.into_iter().flatten() {
        for (field, value) in fields {
            ok &= problems.check(tune(&mut session, section, field, &value.text())).is_some();
        }
    }
    ok.then_some(session)
}

/// `fec:`: on unless `enabled: false`, each count in its range; `None` if any is refused (each
/// problem is noted).
fn fec(problems: &mut Problems, file: FecFile) -> Option<Option<FecConfig>> {
    let default = FecConfig::default();
    let block = file
        .block
        .map_or(Some(default.block), |v| problems.check(in_range::<u8>("fec.block", v, &FEC_BLOCK_RANGE, "frames")));
    let parity = file.parity.map_or(Some(default.parity), |v| {
        problems.check(in_range::<u8>("fec.parity", v, &FEC_PARITY_RANGE, "frames' worth of recovery per block"))
    });
    let max_delay = file.max_delay_ms.map_or(Some(default.max_delay), |v| {
        problems
            .check(in_range::<u64>("fec.max_delay_ms", v, &FEC_MAX_DELAY_MS_RANGE, "milliseconds"))
            .map(Duration::from_millis)
    });
    let (block, parity, max_delay) = (block?, parity?, max_delay?);
    Some(file.enabled.unwrap_or(true).then_some(FecConfig { block, parity, max_delay }))
}

/// Sets one tunable of `advanced:`: one of [`Tuning::OPERATOR_KEYS`] only.
fn tune(session: &mut SessionConfig, section: &str, field: &str, value: &str) -> Result<(), Problem> {
    let key = format!("{section}.{field}");
    let path = format!("advanced.{key}");
    if session.tuning.get(&key).is_some() && !Tuning::OPERATOR_KEYS.contains(&key.as_str()) {
        let message = format!(
            "{key} is for experiments, not the config file (use `run --tune {key}=...`); the file may set {}",
            Tuning::OPERATOR_KEYS.join(", ")
        );
        return Err(problem(path, message));
    }
    session.tuning.set(&key, value).map_err(|error| problem(path, error.to_string()))
}

/// A TAP's settings; `prefix` is the key path its fields sit under (`tap.` or `edges[2].`).
pub(super) fn tap(
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

pub(super) fn bad_mac(prefix: &str, text: &str) -> Problem {
    problem(format!("{prefix}mac"), format!("{text:?} is not a MAC address for a TAP; expected {MAC_RULE}"))
}

/// Six hex bytes with `:`, unicast (a TAP cannot have a multicast address).
pub(super) fn parse_mac(text: &str) -> Option<[u8; 6]> {
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

/// The name of an entry of `list` (an uplink, an edge): not empty, and unlike the names before it.
fn list_name<'a>(key: &str, name: &str, before: impl Iterator<Item = &'a String>, list: &str) -> Result<(), Problem> {
    if name.trim().is_empty() {
        return Err(problem(key, "the name is empty; expected a name, unique in its list"));
    }
    unique(key, name, before, list, "name")
}

/// Linux's rule for interface names (`dev_valid_name`).
pub(super) fn interface_name(key: &str, name: &str) -> Result<(), Problem> {
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
pub(super) fn unique<'a>(
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

pub(super) fn in_range<T: TryFrom<i64>>(
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

/// The edge's gateways: `gateway:` alone, or `gateways:` ordered by priority (lower first, then
/// as listed). The first carries the stream; the others are its standbys.
fn gateways(
    doc: &Document,
    problems: &mut Problems,
    one: Option<PeerFile>,
    many: Option<Vec<GatewayEntryFile>>,
) -> Option<(GatewayPeer, Vec<GatewayPeer>)> {
    let entries: Vec<(String, GatewayEntryFile)> = match (one, many) {
        (Some(_), Some(_)) => {
            problems.push(problem("gateways", "both gateway and gateways are given; expected one of them"));
            return None;
        }
        (None, None) => {
            problems.push(problem("gateway", format!("missing; expected {}", expected("gateway"))));
            return None;
        }
        (Some(peer), None) => {
            let PeerFile { address, public_key, psk_file } = peer;
            vec![("gateway".into(), GatewayEntryFile { address, public_key, psk_file, priority: None })]
        }
        (None, Some(list)) if list.is_empty() => {
            problems.push(problem("gateways", format!("the list is empty; expected {}", expected("gateways"))));
            return None;
        }
        (None, Some(list)) => list.into_iter().enumerate().map(|(i, e)| (format!("gateways[{i}]"), e)).collect(),
    };
    let mut gateways: Vec<(u8, GatewayPeer)> = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (prefix, entry) in entries {
        let key = |field: &str| format!("{prefix}.{field}");
        let address = problems.check(resolve(&key("address"), &entry.address));
        let public_key = problems.check(public_key(&key("public_key"), &entry.public_key));
        let psk = problems.check(entry.psk_file.as_deref().map(|p| read_psk(doc, &key("psk_file"), p)).transpose());
        let priority = match entry.priority {
            None => Some(0),
            Some(p) => problems.check(u8::try_from(p).map_err(|_| {
                problem(key("priority"), format!("{p} is out of range; expected {}", expected("priority")))
            })),
        };
        let (Some(address), Some(public_key), Some(psk), Some(priority)) = (address, public_key, psk, priority) else {
            ok = false;
            continue;
        };
        if gateways.iter().any(|(_, g)| g.address == address) {
            problems
                .push(problem(key("address"), format!("{address} is listed twice; expected one entry per gateway")));
            ok = false;
        } else if gateways.iter().any(|(_, g)| g.public_key == public_key) {
            let message =
                "the same key as an earlier gateway; expected each gateway's own key (`braid-gateway pubkey`)";
            problems.push(problem(key("public_key"), message));
            ok = false;
        }
        gateways.push((priority, GatewayPeer { address, public_key, psk }));
    }
    if !ok {
        return None;
    }
    gateways.sort_by_key(|(priority, _)| *priority);
    let mut gateways = gateways.into_iter().map(|(_, g)| g);
    let first = gateways.next()?;
    Some((first, gateways.collect()))
}

pub(super) fn public_key(key: &str, text: &str) -> Result<PublicKey, Problem> {
    PublicKey::from_base64(text).map_err(|_| problem(key, format!("{text:?} is not a public key; expected {KEY_RULE}")))
}

pub(super) fn socket_address(key: &str, text: &str) -> Result<SocketAddr, Problem> {
    text.trim().parse().map_err(|_| problem(key, format!("{text:?} is not a socket address; expected {SOCKET_RULE}")))
}

/// The status endpoint. Off loopback it must have a token: the dashboard shows where a rig is
/// and how healthy its links are, and `/status` names the gateway.
pub(super) fn status(
    doc: &Document,
    status: Option<StatusFile>,
    default: SocketAddr,
) -> Result<StatusSettings, Problem> {
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

/// The host's name, the edge's name when the config sets none.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_EDGE_NAME.to_owned())
}

/// The gateway's address: an IP (port 4754 if left out) or a host name, resolved now.
pub(super) fn resolve(key: &str, text: &str) -> Result<SocketAddr, Problem> {
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
