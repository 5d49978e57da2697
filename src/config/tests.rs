use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::locate::strip_marks;
use super::rules::ADDRESS_RULE;
use super::*;
use crate::endpoint::gateway::{DEFAULT_HANDSHAKE_RATE, EdgeEntry};
use crate::keys::{PrivateKey, Psk, PublicKey};
use crate::{FecConfig, LinkConfig, Mode, SessionConfig};

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
           fec:\n  block: 12\n  parity: 3\n  max_delay_ms: 8\n\
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
            fec: Some(FecConfig { block: 12, parity: 3, max_delay: Duration::from_millis(8) }),
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
            UplinkSettings {
                id: LinkId::new(0),
                name: "dsl".into(),
                interface: "eth1".into(),
                source: None,
                metered: false,
                cap: None,
            },
            UplinkSettings {
                id: LinkId::new(1),
                name: "lte".into(),
                interface: "wwan0".into(),
                source: Some("10.0.0.2".parse().unwrap()),
                metered: false,
                cap: None,
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
fn a_config_with_a_byte_order_mark_reads_as_the_same_config_without_it() {
    let scratch = Scratch::new("bom");
    let plain = scratch.edge(&edge_yaml()).unwrap();
    let marked = scratch.edge(&format!("\u{feff}{}", edge_yaml())).unwrap();
    assert_eq!(format!("{marked:?}"), format!("{plain:?}"));
}

#[test]
fn a_config_larger_than_the_cap_is_refused_with_its_size() {
    let scratch = Scratch::new("huge");
    let big = format!("{}# {}\n", edge_yaml(), "x".repeat(super::locate::MAX_CONFIG_BYTES as usize));
    let error = scratch.edge(&big).unwrap_err();
    assert_eq!((error.line, error.key.as_str()), (None, ""));
    assert!(error.message.contains("more than the 1048576 a config may have"), "{error}");
}

#[test]
fn a_directory_a_device_or_a_fifo_is_refused_as_not_a_config_file_without_reading_it() {
    let scratch = Scratch::new("special");
    let error = load_edge(&scratch.dir).unwrap_err();
    assert!(error.message.contains("is a directory"), "{error}");
    let error = load_gateway(Path::new("/dev/zero")).unwrap_err();
    assert!(error.message.contains("not a regular file"), "{error}");
    let fifo = scratch.dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    if made {
        // Opening a FIFO with no writer would block: the check must come before.
        let error = load_edge(&fifo).unwrap_err();
        assert!(error.message.contains("not a regular file"), "{error}");
    }
}

#[test]
fn a_config_that_is_not_utf8_is_refused_with_where() {
    let scratch = Scratch::new("latin1");
    let path = scratch.dir.join("edge.yaml");
    std::fs::write(&path, b"name: caf\xe9\n").unwrap();
    let error = load_edge(&path).unwrap_err();
    assert!(error.message.contains("not UTF-8 text (byte 9 is not)"), "{error}");
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
    assert_refused(scratch.edge(&yaml), Some(10), "uplinks[1].colour", "unknown key `colour`, expected one of `name`");
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
    assert_refused(scratch.edge(&yaml), None, "private_key_file", "missing; expected the path of a private key file");
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
        + "listen: [\"0.0.0.0:4754\", \"[::]:4755\"]\nnonlocal_bind: true\nmode: bond\nlatency_budget_ms: 80\nhandshake_rate: 9\nworkers: 3\nstatus:\n  listen: 127.0.0.1:1\n";
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
    assert_eq!(settings.workers, Workers::Count(3));
    assert_eq!(settings.listen, ["0.0.0.0:4754".parse().unwrap(), "[::]:4755".parse().unwrap()]);
    assert!(settings.nonlocal_bind);
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
    assert!(!settings.nonlocal_bind);
    assert_eq!(settings.gateway.handshake_rate, DEFAULT_HANDSHAKE_RATE);
    assert_eq!(settings.workers, Workers::Auto, "one worker per core");
    assert_eq!(Workers::Auto.count(), std::thread::available_parallelism().map_or(1, usize::from).min(64));
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
        (gateway_yaml() + "listen:\n  - 0.0.0.0:1\n  - 0.0.0.0:1\n", Some(9), "listen[1]", "0.0.0.0:1 is listed twice"),
        (gateway_yaml() + "handshake_rate: 0\n", Some(7), "handshake_rate", "expected an integer from 1 to 100000"),
        (
            gateway_yaml() + "workers: 0\n",
            Some(7),
            "workers",
            "0 is out of range; expected an integer from 1 to 64 (threads)",
        ),
        (
            gateway_yaml() + "workers: many\n",
            Some(7),
            "workers",
            "\"many\" is not a number; expected auto (one per core) or an integer from 1 to 64 (threads)",
        ),
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
    let yaml =
        edge_yaml() + "name: van-7\nstatus:\n  listen: 0.0.0.0:8080\n  enabled: false\n  token_file: status.token\n";
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
    let edge = include_str!("../../packaging/examples/edge.yaml").replace("/etc/braid/edge.key", "key.key");
    let settings = scratch.edge(&edge).unwrap();
    assert_eq!(settings.uplinks.len(), 3);
    let gateway = include_str!("../../packaging/examples/gateway.yaml").replace("/etc/braid/gateway.key", "key.key");
    let settings = scratch.gateway(&gateway).unwrap();
    assert_eq!(settings.gateway.edges.len(), 1);
    assert_eq!(settings.listen.len(), 2);
}

#[test]
fn every_problem_of_a_file_is_reported_at_once_in_file_order() {
    let scratch = Scratch::new("edge-many");
    let yaml = edge_yaml().replace("interface: wwan0", "interface: wwan0/bad").replace("- name: dsl", "- name: lte")
        + "cipher: rot13\nname: \"\"\n";
    let error = scratch.edge(&yaml).unwrap_err();
    let found: Vec<(Option<usize>, &str)> = error.problems().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        found,
        [(Some(8), "uplinks[1].name"), (Some(9), "uplinks[1].interface"), (Some(10), "cipher"), (Some(11), "name"),],
        "{error}"
    );
    let text = error.to_string();
    assert_eq!(text.lines().count(), 4, "one line per problem:\n{text}");
    assert!(text.lines().all(|l| l.contains("edge.yaml:")), "each names the file and line:\n{text}");
}

#[test]
fn a_gateway_with_several_bad_edges_is_refused_with_each() {
    let scratch = Scratch::new("gateway-many");
    let yaml = gateway_yaml().replacen("public_key: ", "public_key: nonsense", 1) + "handshake_rate: 0\n";
    let error = scratch.gateway(&yaml).unwrap_err();
    let keys: Vec<&str> = error.problems().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["edges[0].public_key", "handshake_rate"], "{error}");
}

#[test]
fn a_reload_names_every_changed_key_it_cannot_apply_and_none_it_can() {
    let scratch = Scratch::new("edge-reload");
    let running = scratch.gateway(&gateway_yaml()).unwrap();
    // Edges added, removed and re-keyed are what a reload applies.
    let allowlist_only = format!(
        "private_key_file: key.key\nedges:\n- name: van-1\n  public_key: {}\n- name: van-3\n  public_key: {}\n",
        key(3),
        key(5)
    );
    assert_eq!(running.restart_needed(&scratch.gateway(&allowlist_only).unwrap()), Vec::<String>::new());
    let everything = format!(
        "private_key_file: key.key\nlisten: [\"0.0.0.0:4999\"]\nmode: bond\nlatency_budget_ms: 300\n\
         path_mtu: 1400\nretransmit: false\nmss_clamp: false\nhandshake_rate: 7\n\
         advanced:\n  scheduler:\n    failback_hold: 500ms\n\
         status:\n  listen: 127.0.0.1:9999\n\
         edges:\n- name: van-1\n  public_key: {}\n  bridge: br-other\n",
        key(3)
    );
    let changed = running.restart_needed(&scratch.gateway(&everything).unwrap());
    assert_eq!(
        changed,
        [
            "listen",
            "handshake_rate",
            "mode",
            "latency_budget_ms",
            "path_mtu",
            "retransmit",
            "mss_clamp",
            "advanced",
            "status",
            "edges[van-1].tap"
        ]
    );
}

#[test]
fn what_a_reload_cannot_change_survives_its_file_and_names_kept_edges_taps_by_name() {
    let scratch = Scratch::new("restart-only");
    let running = scratch.gateway(&gateway_yaml()).unwrap();
    let recorded = RestartOnly::from_text(&running.restart_only().to_text());
    assert_eq!(recorded, running.restart_only());
    assert!(recorded.to_text().contains(" token=false\n"), "only whether there is a token is recorded");
    let moved = gateway_yaml()
        .replace("edges:\n", "mode: bond\nedges:\n")
        .replace(&format!("public_key: {}\n", key(4)), &format!("public_key: {}\n  bridge: br-x\n", key(4)));
    let new = scratch.gateway(&moved).unwrap();
    assert_eq!(recorded.changed_in(&new), ["mode", "edges[van-2].tap"]);
    assert_eq!(recorded.changed_in(&running), Vec::<String>::new());
}

#[test]
fn an_edge_reload_keeps_the_ids_of_kept_uplinks_and_gives_new_ones_a_fresh_id() {
    let scratch = Scratch::new("edge-reload-ids");
    let running = scratch.edge(&edge_yaml()).unwrap();
    // dsl removed, lte kept (priority changed), lte-2 added, and the mode changed.
    let yaml = edge_yaml()
        .replace("  - name: dsl\n    interface: eth1\n", "")
        .replace("interface: wwan0\n", "interface: wwan0\n    priority: 5\n  - name: lte-2\n    interface: wwan1\n")
        + "mode: redundant\n";
    let plan = running.reload_to(&scratch.edge(&yaml).unwrap());
    let ids: Vec<(String, u8)> = plan.settings.uplinks.iter().map(|u| (u.name.clone(), u.id.get())).collect();
    assert_eq!(ids, [("lte".to_owned(), 1), ("lte-2".to_owned(), 2)]);
    assert_eq!(plan.removed, [LinkId::new(0)]);
    assert_eq!(plan.added.iter().map(|(u, l)| (u.name.as_str(), l.id.get())).collect::<Vec<_>>(), [("lte-2", 2)]);
    assert_eq!(plan.priorities, [(LinkId::new(1), 5)]);
    assert_eq!(plan.mode, Some(braid_engine::Mode::Redundant));
    assert!(plan.new_session.is_empty() && plan.restart_only.is_empty(), "{plan:?}");
    let links: Vec<u8> = plan.settings.edge.session.links.iter().map(|l| l.id.get()).collect();
    assert_eq!(links, [1, 2]);

    // Applied, it is what runs: a reload of the same file changes nothing.
    let again = plan.settings.reload_to(&scratch.edge(&yaml).unwrap());
    assert!(again.removed.is_empty() && again.added.is_empty() && again.priorities.is_empty() && again.mode.is_none());
}

#[test]
fn an_edge_reload_names_what_needs_a_new_session_and_what_needs_a_restart() {
    let scratch = Scratch::new("edge-reload-keys");
    let running = scratch.edge(&edge_yaml()).unwrap();
    let yaml =
        edge_yaml().replace("203.0.113.10:4754", "203.0.113.11:4754").replace("interface: eth1", "interface: eth2")
            + "latency_budget_ms: 800\ntap:\n  mtu: 1400\n";
    let plan = running.reload_to(&scratch.edge(&yaml).unwrap());
    assert_eq!(plan.new_session, ["gateway.address", "latency_budget_ms"]);
    assert_eq!(plan.restart_only, ["tap"]);
    // dsl moved to another interface: the same id, as a new link.
    assert_eq!(plan.removed, [LinkId::new(0)]);
    assert_eq!(plan.added.iter().map(|(u, l)| (u.interface.as_str(), l.id.get())).collect::<Vec<_>>(), [("eth2", 0)]);
}

#[test]
fn an_uplink_may_be_metered_and_capped_per_day_or_month() {
    let scratch = Scratch::new("metered");
    let yaml = edge_yaml().replace(
        "interface: wwan0\n",
        "interface: wwan0\n    cap_mb: 2000\n    cap_period: day\n  - name: lte-2\n    interface: wwan1\n    metered: true\n",
    );
    let settings = scratch.edge(&yaml).unwrap();
    let got: Vec<(bool, Option<DataCap>)> = settings.uplinks.iter().map(|u| (u.metered, u.cap)).collect();
    assert_eq!(
        got,
        [(false, None), (true, Some(DataCap { bytes: 2_000_000_000, period: CapPeriod::Day })), (true, None),]
    );
    let bad = edge_yaml().replace("interface: wwan0\n", "interface: wwan0\n    cap_mb: -5\n    cap_period: week\n");
    let error = scratch.edge(&bad).unwrap_err().to_string();
    assert!(error.contains("uplinks[1].cap_period") && error.contains("day or month"), "{error}");
}

/// `gateway:` of [`edge_yaml`] replaced by a `gateways:` list of `entries` (lines 2 on).
fn edge_yaml_with_gateways(entries: &str) -> String {
    let one = format!("gateway:\n  address: 203.0.113.10:4754\n  public_key: {}\n", key(2));
    edge_yaml().replace(&one, &format!("gateways:\n{entries}"))
}

#[test]
fn a_gateways_list_is_ordered_by_priority_and_its_first_carries_the_stream() {
    let scratch = Scratch::new("gateways");
    let yaml = edge_yaml_with_gateways(&format!(
        "  - address: 203.0.113.20:4754\n    public_key: {}\n    priority: 2\n  \
           - address: 203.0.113.10\n    public_key: {}\n    priority: 1\n",
        key(5),
        key(2)
    ));
    let settings = scratch.edge(&yaml).unwrap();
    assert_eq!(settings.edge.gateway_key, key(2));
    assert!(settings.edge.session.links.iter().all(|l| l.remote == "203.0.113.10:4754".parse().unwrap()));
    let standbys: Vec<_> = settings.edge.standbys.iter().map(|s| (s.address.to_string(), s.public_key)).collect();
    assert_eq!(standbys, [("203.0.113.20:4754".to_owned(), key(5))]);
    assert_eq!(settings.edge.return_after, Some(Duration::from_secs(60)), "the default hold-down");
    let never = scratch.edge(&(yaml.clone() + "gateway_return_after_s: 0\n")).unwrap();
    assert_eq!(never.edge.return_after, None, "0: the stream never returns by itself");
    let error = scratch.edge(&(yaml + "gateway_return_after_s: -5\n")).unwrap_err().to_string();
    assert!(
        error.contains("gateway_return_after_s") && error.contains("from 0 to 86400 (seconds; 0: never)"),
        "{error}"
    );
}

#[test]
fn gateways_sharing_a_key_or_an_address_or_given_twice_are_refused() {
    let scratch = Scratch::new("gateways-bad");
    let entry = |address: &str, k: PublicKey| format!("  - address: {address}\n    public_key: {k}\n");
    let yaml = edge_yaml_with_gateways(&(entry("203.0.113.10", key(2)) + &entry("203.0.113.20", key(2))));
    assert_refused(scratch.edge(&yaml), Some(6), "gateways[1].public_key", "the same key as an earlier gateway");
    let yaml = edge_yaml_with_gateways(&(entry("203.0.113.10", key(2)) + &entry("203.0.113.10:4754", key(5))));
    assert_refused(scratch.edge(&yaml), Some(5), "gateways[1].address", "203.0.113.10:4754 is listed twice");
    let yaml = edge_yaml_with_gateways("  []\n").replace("gateways:\n  []", "gateways: []");
    assert_refused(scratch.edge(&yaml), Some(2), "gateways", "the list is empty");
    let yaml = format!("{}gateways:\n{}", edge_yaml(), entry("203.0.113.20", key(5)));
    assert_refused(scratch.edge(&yaml), Some(10), "gateways", "both gateway and gateways are given");
    let yaml = edge_yaml_with_gateways(&(entry("203.0.113.10", key(2)) + "    priority: 300\n"));
    assert_refused(scratch.edge(&yaml), Some(5), "gateways[0].priority", "300 is out of range");
}

#[test]
fn a_fleet_member_needs_no_edge_of_its_own_and_takes_the_fleet_defaults() {
    let scratch = Scratch::new("fleet-defaults");
    let yaml = "private_key_file: key.key\nlisten: [\"198.51.100.7:4754\"]\nfleet:\n  etcd: [\"http://10.0.0.1:2379\"]\n  name: gw-a\n";
    let gateway = scratch.gateway(yaml).unwrap();
    assert!(gateway.gateway.edges.is_empty());
    let fleet = gateway.fleet.expect("a fleet");
    assert_eq!(fleet.address, "198.51.100.7:4754".parse().unwrap(), "the address edges reach: the listen address");
    assert_eq!((fleet.prefix.as_str(), fleet.zone.as_str()), ("/braid", "default"));
    assert_eq!((fleet.capacity_edges, fleet.lease_ttl), (100, Duration::from_secs(5)));
    assert_eq!(fleet.auth, None);
    // Without a fleet, an empty allowlist is still refused.
    assert_refused(scratch.gateway("private_key_file: key.key\n"), None, "edges", "");
}

#[test]
fn every_bad_fleet_setting_is_refused_at_its_line() {
    let scratch = Scratch::new("fleet-bad");
    let yaml = "private_key_file: key.key\n\
                fleet:\n  \
                  etcd: [\"10.0.0.1:2379\"]\n  \
                  name: \"gw a\"\n  \
                  lease_ttl_s: 1\n  \
                  username: root\n";
    let error = scratch.gateway(yaml).expect_err("refused");
    let text = error.to_string();
    for expected in [
        "fleet.etcd[0]: \"10.0.0.1:2379\" is not an etcd client URL",
        "fleet.name: \"gw a\" is not a fleet name",
        "fleet.lease_ttl_s: 1 is out of range; expected an integer from 2 to 60",
        "fleet.password_file: missing",
        "fleet.address: missing, and every listen address is a wildcard",
    ] {
        assert!(text.contains(expected), "{text}\nshould contain: {expected}");
    }
    // A password file others can read is refused like a key.
    let password = scratch.write("etcd.password", "s3cret\n");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = "private_key_file: key.key\nlisten: [\"198.51.100.7:4754\"]\nfleet:\n  etcd: [\"http://10.0.0.1:2379\"]\n  username: braid\n  password_file: etcd.password\n";
    assert_refused(scratch.gateway(yaml), Some(6), "fleet.password_file", "readable by others (mode 644)");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fleet = scratch.gateway(yaml).unwrap().fleet.unwrap();
    assert_eq!(fleet.auth, Some(("braid".to_owned(), "s3cret".to_owned())));
}

#[test]
fn tls_to_etcd_needs_https_endpoints_and_a_ca_and_a_private_key_only_its_owner_reads() {
    let scratch = Scratch::new("fleet-tls");
    let base = "private_key_file: key.key\nlisten: [\"198.51.100.7:4754\"]\nfleet:\n";
    let mixed = format!("{base}  etcd: [\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n  ca_file: ca.pem\n");
    assert_refused(scratch.gateway(&mixed), Some(4), "fleet.etcd", "mixes http:// and https://");
    let no_ca = format!("{base}  etcd: [\"https://10.0.0.1:2379\"]\n");
    assert_refused(scratch.gateway(&no_ca), Some(3), "fleet.ca_file", "missing; expected the PEM file of the CA");
    let plain = format!("{base}  etcd: [\"http://10.0.0.1:2379\"]\n  ca_file: ca.pem\n");
    assert_refused(scratch.gateway(&plain), Some(5), "fleet.ca_file", "endpoints are http://");
    scratch.write("ca.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    scratch.write("client.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    let key = scratch.write("client.key", "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let full = format!(
        "{base}  etcd: [\"https://10.0.0.1:2379\"]\n  ca_file: ca.pem\n  cert_file: client.pem\n  key_file: client.key\n"
    );
    assert_refused(scratch.gateway(&full), Some(7), "fleet.key_file", "readable by others (mode 640)");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = scratch.gateway(&full).unwrap().fleet.unwrap().tls.expect("TLS");
    assert!(tls.identity.is_some());
    assert!(!format!("{tls:?}").contains("PRIVATE"), "the key must never be printed: {tls:?}");
}

#[test]
fn forward_error_correction_is_off_unless_asked_for_and_its_counts_are_checked() {
    let scratch = Scratch::new("edge-fec");
    assert_eq!(scratch.edge(&edge_yaml()).unwrap().edge.session.fec, None);
    let on = scratch.edge(&(edge_yaml() + "fec: {}\n")).unwrap();
    assert_eq!(on.edge.session.fec, Some(FecConfig::default()));
    let off = scratch.edge(&(edge_yaml() + "fec: {enabled: false, block: 8}\n")).unwrap();
    assert_eq!(off.edge.session.fec, None);
    let problems =
        scratch.edge(&(edge_yaml() + "fec: {block: 0, parity: 40, max_delay_ms: 500}\n")).unwrap_err().to_string();
    for expected in [
        "fec.block: 0 is out of range; expected an integer from 1 to 64 (frames)",
        "fec.parity: 40 is out of range; expected an integer from 1 to 32",
        "fec.max_delay_ms: 500 is out of range; expected an integer from 1 to 100 (milliseconds)",
    ] {
        assert!(problems.contains(expected), "{expected:?} not in:\n{problems}");
    }
    let unknown = scratch.edge(&(edge_yaml() + "fec: {blocks: 8}\n")).unwrap_err().to_string();
    assert!(unknown.contains("blocks"), "{unknown}");
}

#[test]
fn check_configs_summary_names_the_standby_gateways_fec_retransmission_and_metered_uplinks() {
    let scratch = Scratch::new("edge-summary");
    let plain = crate::cli::edge_summary(&scratch.edge(&edge_yaml()).unwrap());
    for absent in ["standby", "forward error correction", "retransmission", "metered"] {
        assert!(!plain.contains(absent), "{absent:?} in a plain config's summary: {plain}");
    }
    let yaml = edge_yaml_with_gateways(&format!(
        "  - address: 203.0.113.10\n    public_key: {}\n  - address: 203.0.113.20\n    public_key: {}\n",
        key(2),
        key(5)
    ))
    .replace("    interface: eth1\n", "    interface: eth1\n    metered: true\n")
    .replace("    interface: wwan0\n", "    interface: wwan0\n    cap_mb: 5000\n    cap_period: day\n")
        + "retransmit: false\nfec: {}\n";
    let summary = crate::cli::edge_summary(&scratch.edge(&yaml).unwrap());
    for present in [
        format!("; standby gateway 203.0.113.20:4754 (key {})", key(5)),
        "latency budget 500 ms, no retransmission, forward error correction: 2 frames' worth of recovery per 16 \
         (blocks closed after 10 ms);"
            .to_owned(),
        "dsl on eth1 (link0, priority 0, metered)".to_owned(),
        "lte on wwan0 (link1, priority 1, metered, cap 5000 MB a day)".to_owned(),
    ] {
        assert!(summary.contains(&present), "{present:?} not in: {summary}");
    }
}
