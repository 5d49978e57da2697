//! Observability: the `/status` schema and the `/metrics` encoding, first on a real session pair
//! in virtual time, then on the real binaries in network namespaces: metrics that follow the
//! traffic and a cut link, `status` as a table and as schema-valid JSON, the dashboard in headless
//! Chromium at phone size, and the endpoint's cost in TCP goodput.
//!
//! The namespace tests need root (namespaces, TAP, NAT) and the dashboard test needs
//! `chromium` and `chromium-driver` (scripts/test.sh installs them): without them they print
//! why they skip, and under `CI=true` a skip fails.

#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used, clippy::print_stdout)]

#[path = "../../tests/e2e/mod.rs"]
mod e2e;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use braid::crypto::Cipher;
use braid::endpoint::edge::EdgeStats;
use braid::endpoint::gateway::GatewayStats;
use braid::io::status::{Body, EdgeBody, Endpoint, Flat, GatewayBody, GatewayView, Recorder, SCHEMA_VERSION, Status};
use braid::stats::Counters;
use braid::{LinkConfig, LinkEvent, LinkId, Role, Session, SessionConfig};
use e2e::{Lab, binary, gateway_config, internet, ping_until, rig, root_or_skip};
use openmetrics_parser::OpenMetricsValue;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../docs/status.schema.json");

// ---- without root: a real session pair in virtual time ----

/// An edge and a gateway session over two virtual links, 2 ms each way, stepped 1 ms at a time:
/// the edge sends a frame every step, link 1 loses carrier at 1 s. Returns both snapshots.
fn session_pair_snapshots() -> (Status, Status) {
    let start = Instant::now();
    let remote: SocketAddr = "192.0.2.1:4754".parse().unwrap();
    let edge_address: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let links = (0..2).map(|i| LinkConfig { id: LinkId::new(i), priority: i, rate_bps: None, remote }).collect();
    let (edge_keys, gateway_keys) = braid::testing::key_pair(7, Cipher::ChaCha20Poly1305);
    let edge_config = SessionConfig { links, ..SessionConfig::default() };
    let mut edge = Session::new(Role::Edge, edge_config, edge_keys, start, 1).unwrap();
    let mut gateway = Session::new(Role::Gateway, SessionConfig::default(), gateway_keys, start, 2).unwrap();
    let (mut edge_log, mut gateway_log) = (Recorder::new(), Recorder::new());
    let names = |link: LinkId| ["dsl", "lte"][usize::from(link.get())];
    let gateway_names = |link: LinkId| ["link0", "link1"][usize::from(link.get())];
    let mut in_flight: Vec<(Instant, bool, LinkId, Vec<u8>)> = Vec::new();
    let mut buf = Vec::new();
    let frame = [0x42u8; 200];
    for step in 0..3000u64 {
        let now = start + Duration::from_millis(step);
        if step == 1000 {
            edge.handle_link_event(now, LinkId::new(1), LinkEvent::CarrierDown);
        }
        edge.handle_timeout(now);
        gateway.handle_timeout(now);
        let _ = edge.handle_frame(now, &frame);
        for (at, to_gateway, link, bytes) in std::mem::take(&mut in_flight) {
            if at > now {
                in_flight.push((at, to_gateway, link, bytes));
            } else if to_gateway {
                let _ = gateway.handle_datagram(now, link, edge_address, &bytes);
            } else {
                let _ = edge.handle_datagram(now, link, remote, &bytes);
            }
        }
        while let Some(t) = edge.poll_transmit(now, &mut buf) {
            in_flight.push((now + Duration::from_millis(2), true, t.link, buf.clone()));
        }
        while let Some(t) = gateway.poll_transmit(now, &mut buf) {
            in_flight.push((now + Duration::from_millis(2), false, t.link, buf.clone()));
        }
        while let Some(delivered) = gateway.poll_frame(now, &mut buf) {
            gateway_log.on_delivered(delivered.held);
        }
        while let Some(delivered) = edge.poll_frame(now, &mut buf) {
            edge_log.on_delivered(delivered.held);
        }
        while let Some(event) = edge.poll_event() {
            if let braid::Event::LinkState { link, .. } = &event {
                edge_log.on_event(step, &event, names(*link));
            }
        }
        while let Some(event) = gateway.poll_event() {
            if let braid::Event::LinkState { link, .. } = &event {
                gateway_log.on_event(step, &event, gateway_names(*link));
            }
        }
        if step % 250 == 0 {
            // Snapshots are taken every 250 ms, as the drivers do; the rates need a history.
            edge_log.view(now, "van-1", Some(&edge), names);
            gateway_log.view(now, "van-1", Some(&gateway), gateway_names);
        }
    }
    let now = start + Duration::from_millis(3000);
    let edge_status = Status {
        version: SCHEMA_VERSION,
        time_unix_ms: 3000,
        uptime_s: 3.0,
        body: Body::Edge(Box::new(EdgeBody {
            edge: edge_log.view(now, "van-1", Some(&edge), names),
            counters: Flat(EdgeStats { handshakes_started: 1, handshakes_completed: 1, ..EdgeStats::default() }),
            drops: 0,
            drops_by_reason: BTreeMap::new(),
            gateways: vec![
                GatewayView::of("192.0.2.1:4754".parse().unwrap(), Some(&edge), true, names),
                GatewayView::of("192.0.2.2:4754".parse().unwrap(), None, false, names),
            ],
        })),
    };
    let idle = Recorder::new().view(now, "van-2", None, gateway_names);
    let gateway_status = Status {
        version: SCHEMA_VERSION,
        time_unix_ms: 3000,
        uptime_s: 3.0,
        body: Body::Gateway(Box::new(GatewayBody {
            counters: Flat(GatewayStats { handshakes: 1, sessions_started: 1, ..GatewayStats::default() }),
            sessions: 1,
            draining: false,
            drops: 0,
            drops_by_reason: BTreeMap::new(),
            edges: vec![gateway_log.view(now, "van-1", Some(&gateway), gateway_names), idle],
            fleet: Some(braid::fleet::member::FleetView {
                name: "gw1".into(),
                etcd_reachable: false,
                etcd_error: Some("connecting to etcd at http://10.0.0.1:2379: no answer within 2s".into()),
                etcd_outages: 1,
                members: vec![braid::fleet::member::MemberRecord {
                    name: "gw1".into(),
                    zone: "fra1".into(),
                    address: "198.51.100.7:4754".into(),
                    public_key: "RznYx4+VZSFljYPltjpxHPm793q+ZuATND43ueCelOQ=".into(),
                    capacity_mbps: 1000.0,
                    capacity_edges: 100,
                    edges: 1,
                    carrying: vec!["van-1".into()],
                    standby_for: Vec::new(),
                    load_mbps_in: 6.2,
                    load_mbps_out: 0.3,
                    cpu: 0.04,
                    draining: false,
                    since_unix_ms: 1_700_000_000_000,
                }],
                edges: 1,
                bad_records: 0,
            }),
        })),
    };
    (edge_status, gateway_status)
}

/// Validates `instance` against docs/status.schema.json, failing with every error.
#[track_caller]
fn assert_schema_valid(instance: &Value) {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid against docs/status.schema.json:\n{}\n{instance:#}", errors.join("\n"));
}

#[test]
fn snapshots_of_a_real_session_pair_validate_against_the_published_schema() {
    let (edge, gateway) = session_pair_snapshots();
    for status in [&edge, &gateway] {
        let value = serde_json::to_value(status).unwrap();
        assert_schema_valid(&value);
        // Every counter the engine declares is in the JSON under its name, with its value.
        let session = status.edges()[0].session.as_ref().unwrap();
        let json = value.get("session").unwrap_or_else(|| &value["edges"][0]["session"]);
        for (def, count) in session.counters.entries() {
            assert_eq!(json[def.name], count, "session counter {}", def.name);
        }
        for (def, count) in session.links[0].counters.entries() {
            assert_eq!(json["links"][0][def.name], count, "link counter {}", def.name);
        }
        let back: Status = serde_json::from_value(value).unwrap();
        assert_eq!(back.edges()[0].name, "van-1", "the JSON reads back");
    }
    let view = edge.edges()[0];
    let session = view.session.as_ref().unwrap();
    assert_eq!(session.links[1].state, "down");
    assert_eq!(view.safety.level, "at_risk", "{:?}", view.safety);
    let cut = view.transitions.iter().find(|t| t.link == "lte" && t.to == "down").expect("the cut is in the log");
    assert_eq!((cut.from.as_str(), cut.reason.as_str(), cut.time_unix_ms), ("up", "carrier_lost", 1000));
    assert!(session.links[0].tx_bps > 0.0 && session.links[0].tx_share > 0.9, "{:?}", session.links[0]);
    let at_gateway = gateway.edges()[0].session.as_ref().unwrap();
    assert!(at_gateway.counters.frames_delivered > 2500, "{at_gateway:?}");
    assert!(at_gateway.hold.count() >= at_gateway.counters.frames_delivered, "every delivered frame's hold is counted");
    assert!(at_gateway.links[0].rx_share > 0.9, "link0 delivers the stream after the cut: {:?}", at_gateway.links[0]);
}

#[test]
fn the_schema_refuses_snapshots_that_break_it() {
    let (edge, _) = session_pair_snapshots();
    let good = serde_json::to_value(&edge).unwrap();
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&good));
    let mut broken = Vec::new();
    let mut missing = good.clone();
    missing["session"]["links"][0].as_object_mut().unwrap().remove("rtt_ms");
    broken.push(("a link without rtt_ms", missing));
    let mut state = good.clone();
    state["session"]["links"][0]["state"] = json!("sideways");
    broken.push(("an unknown link state", state));
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    broken.push(("an unknown top-level field", extra));
    let mut version = good;
    version["version"] = json!(1);
    broken.push(("version 1", version));
    for (what, instance) in broken {
        assert!(!validator.is_valid(&instance), "the schema accepts {what}");
    }
}

#[test]
fn the_metrics_of_a_real_session_pair_parse_as_openmetrics_with_the_links_states() {
    let (edge, gateway) = session_pair_snapshots();
    let text = braid::io::metrics::encode(Some(&edge), "edge");
    let scrape = parse_metrics(&text);
    assert_eq!(metric(&scrape, "braid_link_state", &[("link", "lte"), ("state", "down")]), Some(1.0));
    assert_eq!(metric(&scrape, "braid_link_state_changes", &[("link", "lte")]), Some(2.0), "probing→up→down");
    assert_eq!(metric(&scrape, "braid_stream_safe", &[("edge", "van-1")]), Some(0.0));
    let text = braid::io::metrics::encode(Some(&gateway), "gateway");
    let scrape = parse_metrics(&text);
    assert_eq!(metric(&scrape, "braid_gateway_sessions", &[]), Some(1.0));
    assert_eq!(metric(&scrape, "braid_session_up", &[("edge", "van-2")]), Some(0.0));
    assert!(metric(&scrape, "braid_session_frames_delivered", &[("edge", "van-1")]).unwrap() > 2500.0);
}

// ---- helpers for the namespace tests ----

/// Every series of an OpenMetrics exposition, parsed strictly: (family, labels, value); a
/// histogram's value is its count.
type Scrape = Vec<(String, BTreeMap<String, String>, f64)>;

fn parse_metrics(text: &str) -> Scrape {
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e:?}\n{text}"));
    let mut series = Vec::new();
    for (name, family) in exposition.families {
        for sample in family.iter_samples() {
            let labels = sample.get_labelset().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let value = match &sample.value {
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                other => panic!("{name}: unexpected {other:?}"),
            };
            series.push((name.clone(), labels, value));
        }
    }
    series
}

/// The value of the first series of `family` with these labels.
fn metric(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .iter()
        .find(|(name, set, _)| {
            name == family && labels.iter().all(|(k, v)| set.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| *value)
}

/// Runs `f` on a thread that has joined network namespace `ns`, so it reaches what listens on
/// that namespace's loopback (setns changes only the calling thread).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap()
    })
}

/// GET `path` from the endpoint at `address` inside namespace `ns`.
fn get_in(ns: &str, address: &str, path: &str, token: Option<&str>) -> Result<String, String> {
    let endpoint = Endpoint { address: address.parse().unwrap(), token: token.map(str::to_owned) };
    in_netns(ns, || endpoint.get(path).map_err(|e| e.to_string()))
}

/// Appends `text` to a config file.
fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A lab with the gateway and one rig of three uplinks, the edge named `edge1`, and what
/// `edge_extra` returns appended to the edge's config. Returns the rig once ping crosses the
/// tunnel, and the gateway's config.
fn lab_with_rig(tag: &str, edge_extra: impl FnOnce(&Lab) -> String) -> (Lab, e2e::Rig, PathBuf) {
    let mut lab = Lab::new(tag);
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 3, &gateway_public);
    append(&rig1.config, &format!("name: edge1\n{}", edge_extra(&lab)));
    let gateway_yaml = gateway_config(&lab, &gateway_key, &[&rig1]);
    start(&mut lab, &rig1, &gateway_yaml);
    (lab, rig1, gateway_yaml)
}

fn start(lab: &mut Lab, rig1: &e2e::Rig, gateway_yaml: &Path) {
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", gateway_yaml.to_str().unwrap()]);
    let edge = binary("braid-edge");
    lab.spawn(&rig1.name, "edge1", &[edge.to_str().unwrap(), "run", "--config", rig1.config.to_str().unwrap()]);
    assert!(
        ping_until(lab, "cam1", &rig1.ingest, Duration::from_secs(15)),
        "no ping across the tunnel\n--- gateway\n{}\n--- edge\n{}",
        lab.log("gateway"),
        lab.log("edge1")
    );
}

const EDGE_STATUS: &str = "127.0.0.1:7474";
const GATEWAY_STATUS: &str = "127.0.0.1:7475";

fn scrape_in(lab: &Lab, short: &str, address: &str) -> Scrape {
    parse_metrics(&get_in(&lab.ns(short), address, "/metrics", None).unwrap())
}

fn link_value(scrape: &Scrape, family: &str, link: &str, direction: &str) -> f64 {
    metric(scrape, family, &[("link", link), ("direction", direction)]).unwrap_or_else(|| panic!("no {family} {link}"))
}

// ---- with root: the real binaries ----

#[test]
fn metrics_and_status_follow_the_traffic_and_a_cut_link_in_namespaces() {
    if !root_or_skip("observability e2e") {
        return;
    }
    let (mut lab, rig1, gateway_yaml) = lab_with_rig("m", |_| String::new());
    let edge_ns = rig1.name.clone();
    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s"]);
    // Redundant mode sends on usable links only: the stream starts once all three are up.
    let all_up = lab.wait_for(Duration::from_secs(10), || {
        let scrape = scrape_in(&lab, &edge_ns, EDGE_STATUS);
        ["isp1", "isp2", "isp3"]
            .iter()
            .all(|link| metric(&scrape, "braid_link_state", &[("link", link), ("state", "up")]) == Some(1.0))
    });
    assert!(all_up, "the three links did not come up within 10 s");

    let before = scrape_in(&lab, &edge_ns, EDGE_STATUS);
    let gateway_before = scrape_in(&lab, "gw", GATEWAY_STATUS);
    lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-u", "-b", "4M", "-t", "2"]);
    std::thread::sleep(Duration::from_millis(600)); // one more snapshot than the traffic
    let after = scrape_in(&lab, &edge_ns, EDGE_STATUS);
    let gateway_after = scrape_in(&lab, "gw", GATEWAY_STATUS);
    for link in ["isp1", "isp2", "isp3"] {
        let sent =
            link_value(&after, "braid_link_bytes", link, "tx") - link_value(&before, "braid_link_bytes", link, "tx");
        // 4 Mbit/s for 2 s is 1 MB; redundant mode sends all of it on every link.
        assert!(sent > 800_000.0, "{link} sent only {sent} bytes during the stream");
        assert_eq!(metric(&after, "braid_link_state", &[("link", link), ("state", "up")]), Some(1.0), "{link}");
        assert!(metric(&after, "braid_link_rtt_seconds", &[("link", link)]).is_some_and(|rtt| rtt > 0.0));
    }
    let delivered = |s: &Scrape| metric(s, "braid_session_frames_delivered", &[("edge", "edge1")]).unwrap();
    assert!(delivered(&gateway_after) - delivered(&gateway_before) > 600.0, "the gateway delivered the stream");
    let holds = |s: &Scrape| metric(s, "braid_session_reorder_hold_seconds", &[("edge", "edge1")]).unwrap();
    assert!(holds(&gateway_after) > holds(&gateway_before), "every delivered frame's hold is counted");
    assert_eq!(metric(&gateway_after, "braid_gateway_sessions", &[]), Some(1.0));
    assert!(metric(&gateway_after, "braid_gateway_handshakes", &[]).unwrap() >= 1.0);
    let shares: f64 = ["link0", "link1", "link2"]
        .iter()
        .map(|l| link_value(&gateway_after, "braid_link_stream_share_ratio", l, "rx"))
        .sum();
    assert!((shares - 1.0).abs() < 0.05 || shares == 0.0, "first-delivery shares sum to 1: {shares}");
    assert_eq!(metric(&after, "braid_stream_safe", &[("edge", "edge1")]), Some(1.0));

    // Cut isp1's carrier: the metrics, the log, /status and the table all say so.
    let changes_before = metric(&after, "braid_link_state_changes", &[("link", "isp1")]).unwrap();
    lab.exec(&edge_ns, &["ip", "link", "set", "up1", "down"]);
    let down = lab.wait_for(Duration::from_secs(3), || {
        metric(&scrape_in(&lab, &edge_ns, EDGE_STATUS), "braid_link_state", &[("link", "isp1"), ("state", "down")])
            == Some(1.0)
    });
    assert!(down, "/metrics never showed isp1 down\n{}", lab.log("edge1"));
    let cut = scrape_in(&lab, &edge_ns, EDGE_STATUS);
    assert!(metric(&cut, "braid_link_state_changes", &[("link", "isp1")]).unwrap() > changes_before);
    assert_eq!(metric(&cut, "braid_stream_usable_links", &[("edge", "edge1")]), Some(2.0));
    let log = lab.log("edge1");
    let line = log
        .lines()
        .find(|l| l.contains("link state") && l.contains("isp1") && l.contains("carrier_lost"))
        .unwrap_or_else(|| panic!("no link-state log line for the cut:\n{log}"));
    for field in ["edge=", "link=", "from=", "to=", "reason=", "rtt_ms=", "tx_loss=", "rx_loss="] {
        assert!(line.contains(field), "the log line lacks {field}: {line}");
    }

    lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-u", "-b", "4M", "-t", "2"]);
    std::thread::sleep(Duration::from_millis(600));
    let later = scrape_in(&lab, &edge_ns, EDGE_STATUS);
    let grew = |link: &str| {
        link_value(&later, "braid_link_bytes", link, "tx") - link_value(&cut, "braid_link_bytes", link, "tx")
    };
    assert!(grew("isp1") < 10_000.0, "a cut link carries nothing: {}", grew("isp1"));
    assert!(grew("isp2") > 800_000.0, "the others carry the stream: {}", grew("isp2"));

    // `status --json` from both daemons is valid against the schema, and shows the cut.
    let status_json = |ns: &str, bin: &str, config: &Path| {
        let out =
            lab.exec(ns, &[binary(bin).to_str().unwrap(), "status", "--json", "--config", config.to_str().unwrap()]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let edge_json = status_json(&edge_ns, "braid-edge", &rig1.config);
    assert_schema_valid(&edge_json);
    let transitions = edge_json["transitions"].as_array().unwrap();
    assert!(
        transitions.iter().any(|t| t["link"] == "isp1" && t["to"] == "down" && t["reason"] == "carrier_lost"),
        "{edge_json:#}"
    );
    assert_eq!(edge_json["safety"]["level"], "safe");
    let gateway_json = status_json("gw", "braid-gateway", &gateway_yaml);
    assert_schema_valid(&gateway_json);
    assert_eq!(gateway_json["edges"][0]["name"], "edge1");

    // Piped without a flag, `status` prints the JSON scripts have parsed since schema v1.
    let piped = lab
        .exec(&edge_ns, &[binary("braid-edge").to_str().unwrap(), "status", "--config", rig1.config.to_str().unwrap()]);
    let piped: Value = serde_json::from_slice(&piped.stdout).expect("piped status is JSON");
    assert_eq!(piped["session"]["links"][0]["name"], "isp1", "{piped:#}");

    // The table, once and watched (bounded by --count).
    let table = lab.exec(
        &edge_ns,
        &[binary("braid-edge").to_str().unwrap(), "status", "--table", "--config", rig1.config.to_str().unwrap()],
    );
    let table = String::from_utf8_lossy(&table.stdout);
    println!("{table}");
    assert!(table.contains("edge1: stream SAFE"), "{table}");
    assert!(table.lines().any(|l| l.contains("isp1") && l.contains("down")), "{table}");
    let watched = lab.exec(
        &edge_ns,
        &[
            binary("braid-edge").to_str().unwrap(),
            "status",
            "--table",
            "--watch",
            "--count",
            "2",
            "--interval-ms",
            "250",
            "--config",
            rig1.config.to_str().unwrap(),
        ],
    );
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.matches("edge1: stream SAFE").count(), 2, "{watched}");
    assert!(!watched.contains('\x1b'), "terminal codes written into a pipe: {watched:?}");

    // With no --config, `status` reads /etc/braid/edge.yaml: here the test's config, in a
    // tmpfs over /etc that only this command's private mount namespace sees.
    let script = format!(
        "mount -t tmpfs braid-etc /etc && mkdir /etc/braid && cp {} /etc/braid/edge.yaml && exec {} status --json",
        rig1.config.display(),
        binary("braid-edge").display()
    );
    let default = lab.exec(&edge_ns, &["unshare", "--mount", "sh", "-c", &script]);
    let default: Value = serde_json::from_slice(&default.stdout).unwrap_or_else(|e| {
        panic!("status with the default config: {e}: {}", String::from_utf8_lossy(&default.stderr))
    });
    assert_eq!(default["session"]["links"][0]["name"], "isp1", "{default:#}");
    lab.exec(&edge_ns, &["ip", "link", "set", "up1", "up"]);
}

/// Files a process holds open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn thousands_of_idle_and_half_sent_status_connections_neither_starve_an_uplink_nor_outlast_their_timeouts() {
    if !root_or_skip("status endpoint attack") {
        return;
    }
    const TOKEN: &str = "attack-test-token-0123456";
    const LAN_STATUS: &str = "10.77.1.1:7474";
    let mut lab = Lab::new("a");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 3, &gateway_public);
    // The status endpoint on the rig's LAN, where any device can reach it.
    lab.exec(&rig1.name, &["ip", "addr", "add", "10.77.1.1/24", "dev", "br-lan"]);
    let token_file = lab.write("status.token", TOKEN);
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    append(
        &rig1.config,
        &format!("name: edge1\nstatus:\n  listen: {LAN_STATUS}\n  token_file: {}\n", token_file.display()),
    );
    let gateway_yaml = gateway_config(&lab, &gateway_key, &[&rig1]);
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", gateway_yaml.to_str().unwrap()]);
    // The systemd default: 1,024 files, soft and hard, so the edge cannot raise it.
    let edge = binary("braid-edge");
    let config = rig1.config.to_str().unwrap();
    lab.spawn(
        &rig1.name,
        "edge1",
        &["prlimit", "--nofile=1024:1024", edge.to_str().unwrap(), "run", "--config", config],
    );
    assert!(ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)), "no tunnel\n{}", lab.log("edge1"));
    let cam = lab.ns("cam1");
    assert!(get_in(&cam, LAN_STATUS, "/status", Some(TOKEN)).is_ok(), "the endpoint answers on the LAN");
    let edge_pid = lab.pid("edge1");
    let baseline = open_files(edge_pid);

    // Only up1 carries the tunnel from now on.
    for up in ["up2", "up3"] {
        lab.exec(&rig1.name, &["ip", "link", "set", up, "down"]);
    }
    // The attacker on the LAN: 2,000 idle connections and 2,000 that send half a request. The
    // test's own limit must allow them.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum },
    )
    .unwrap();
    let attack = in_netns(&cam, || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..4000 {
            if Instant::now() >= deadline {
                break;
            }
            let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&LAN_STATUS.parse().unwrap(), Duration::from_millis(200))
            else {
                continue;
            };
            if i % 2 == 1 {
                let _ = stream.write_all(b"GET /status HTTP/1.1\r\nHost: edge\r\nAuthorization: Bea");
            }
            held.push(stream);
        }
        held
    });
    println!("attacker holds {} connections (the rest refused)", attack.len());

    // Meanwhile up1 is deleted and created again, as a modem re-enumerating does.
    let edge_ns = rig1.name.clone();
    lab.exec(&edge_ns, &["ip", "link", "del", "up1"]);
    std::thread::sleep(Duration::from_secs(1));
    // Deleting one end of the veth deleted the ISP's end too.
    lab.link(("isp11", "int0", "192.168.1.1/24"), (&edge_ns, "up1", "192.168.1.2/24"));
    lab.exec(&edge_ns, &["ip", "route", "add", "default", "via", "192.168.1.1", "dev", "up1", "metric", "10"]);
    let back = ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15));
    assert!(back, "the tunnel did not come back over the re-created up1\n{}", lab.log("edge1"));
    assert!(!lab.log("edge1").contains("Too many open files"), "the edge ran out of files:\n{}", lab.log("edge1"));
    // A stream over up1 alone, the attack still holding on: nothing lost.
    let ping = lab.exec("cam1", &["ping", "-q", "-c", "200", "-i", "0.02", &rig1.ingest]);
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(text.contains(" 0% packet loss"), "loss over the re-created uplink under attack:\n{text}");

    // The endpoint recovers within its timeouts, and the edge's files return to what they were.
    drop(attack);
    let recovered = lab.wait_for(Duration::from_secs(15), || get_in(&cam, LAN_STATUS, "/status", Some(TOKEN)).is_ok());
    assert!(recovered, "the status endpoint did not recover");
    let settled = lab.wait_for(Duration::from_secs(15), || open_files(edge_pid) <= baseline);
    assert!(settled, "the edge holds {} files, against {baseline} before the attack", open_files(edge_pid));
}

#[test]
fn the_dashboard_shows_every_link_marks_a_cut_within_two_seconds_and_fits_a_phone() {
    if !root_or_skip("dashboard e2e") || !chromium_or_skip() {
        return;
    }
    const TOKEN: &str = "dashboard-test-token-0123";
    let (mut lab, rig1, _) = lab_with_rig("d", |lab| {
        let token_file = lab.write("status.token", TOKEN);
        std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        format!("status:\n  token_file: {}\n", token_file.display())
    });
    let edge_ns = lab.ns(&rig1.name);
    assert!(get_in(&edge_ns, EDGE_STATUS, "/status", None).is_err_and(|e| e.contains("401")), "no token, no status");
    assert!(get_in(&edge_ns, EDGE_STATUS, "/status", Some(TOKEN)).is_ok());

    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s"]);
    std::thread::sleep(Duration::from_millis(300));
    lab.spawn("cam1", "stream", &["iperf3", "-c", &rig1.ingest, "-u", "-b", "3M", "-t", "60"]);
    lab.spawn(&rig1.name, "chromedriver", &["chromedriver", "--port=9515"]);
    let driver = WebDriver::start(&edge_ns);
    driver.navigate(&format!("http://{EDGE_STATUS}/?token={TOKEN}"));
    let links = driver.wait_for(
        Duration::from_secs(10),
        "return [...document.querySelectorAll('.link')].map(e => e.dataset.link).join(',')",
        |v| v == "isp1,isp2,isp3",
    );
    assert_eq!(links, "isp1,isp2,isp3", "the dashboard does not show every link");
    let banner = driver.script("return document.querySelector('.banner').dataset.level");
    assert_eq!(banner, "safe");
    let gateways = driver.script(
        "return [...document.querySelectorAll('.gateway')].map(e => e.dataset.role + ' ' + e.querySelectorAll('.uplink').length).join(',')",
    );
    assert_eq!(gateways, "active 3", "the dashboard does not show the gateway as active with its three uplinks");
    std::thread::sleep(Duration::from_secs(8)); // a few seconds of charts

    let cut_at = Instant::now();
    lab.exec(&rig1.name, &["ip", "link", "set", "up2", "down"]);
    let state = driver.wait_for(
        Duration::from_secs(2),
        "return document.querySelector('[data-link=\"isp2\"]').dataset.state",
        |v| v == "down",
    );
    let took = cut_at.elapsed();
    assert_eq!(state, "down", "isp2 not marked down within 2 s of the cut");
    println!("RESULT scenario=dashboard-cut marked_down_ms={}", took.as_millis());
    assert_eq!(driver.script("return document.querySelector('.banner').dataset.level"), "safe", "two links left");

    // Phone width: 390 × 844 CSS pixels, and nothing wider than the screen.
    let width = driver.script("return String(window.innerWidth)");
    assert_eq!(width, "390", "the phone emulation did not apply");
    let overflow = driver.script("return String(document.documentElement.scrollWidth - window.innerWidth)");
    assert!(overflow.parse::<i64>().unwrap() <= 0, "the page is {overflow} px wider than a phone");
    std::thread::sleep(Duration::from_secs(2));
    let png = driver.screenshot();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard-phone.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");

    lab.exec(&rig1.name, &["ip", "link", "set", "up3", "down"]);
    let level =
        driver.wait_for(Duration::from_secs(2), "return document.querySelector('.banner').dataset.level", |v| {
            v == "at_risk"
        });
    assert_eq!(level, "at_risk", "one usable link left is at risk");
    drop(driver);
    lab.stop("chromedriver");
}

#[test]
fn the_endpoint_costs_no_measurable_goodput() {
    if !root_or_skip("observability overhead") {
        return;
    }
    let (mut lab, rig1, gateway_yaml) = lab_with_rig("t", |_| String::new());
    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s"]);
    let edge_yaml = std::fs::read_to_string(&rig1.config).unwrap();
    let gateway_text = std::fs::read_to_string(&gateway_yaml).unwrap();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let enabled = round % 2 == 0;
        if round > 0 {
            lab.stop("edge1");
            lab.stop("gateway");
            std::fs::write(&rig1.config, format!("{edge_yaml}status:\n  enabled: {enabled}\n")).unwrap();
            std::fs::write(&gateway_yaml, format!("{gateway_text}status:\n  enabled: {enabled}\n")).unwrap();
            start(&mut lab, &rig1, &gateway_yaml);
        }
        std::thread::sleep(Duration::from_millis(500));
        // While on, a dashboard-like client polls /status and /metrics every 500 ms at both ends.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mbps = std::thread::scope(|scope| {
            if enabled {
                for (ns, address) in [(lab.ns(&rig1.name), EDGE_STATUS), (lab.ns("gw"), GATEWAY_STATUS)] {
                    let stop = &stop;
                    scope.spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let _ = get_in(&ns, address, "/status", None);
                            let _ = get_in(&ns, address, "/metrics", None);
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    });
                }
            }
            let out = lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-t", "3", "-J"]);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let json: Value = serde_json::from_slice(&out.stdout).unwrap();
            json["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
        });
        if enabled { on.push(mbps) } else { off.push(mbps) }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    println!(
        "RESULT scenario=obs-overhead tcp_goodput_on_mbps={on:.0?} tcp_goodput_off_mbps={off:.0?} median_on={on_median:.1} median_off={off_median:.1} ratio_on_off={:.3}",
        on_median / off_median
    );
    assert!(on_median > 1.0 && off_median > 1.0, "TCP through the tunnel: on {on:?} off {off:?}");
}

// ---- headless Chromium over WebDriver ----

/// Whether chromium and chromedriver are installed; prints why not, and fails under CI.
fn chromium_or_skip() -> bool {
    let have = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if have("chromium") && have("chromedriver") {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "dashboard e2e: skipped in CI: chromium missing");
    println!("SKIP dashboard e2e: chromium or chromedriver missing (apt-get install chromium chromium-driver)");
    false
}

/// A minimal WebDriver client: a handful of JSON-over-HTTP calls to chromedriver.
///
/// Hand-written rather than `fantoccini`: the test needs six endpoints (new session, navigate,
/// execute, screenshot, delete), while fantoccini would bring hyper, a TLS stack and its own
/// async runtime into the dev-dependencies of a 2-core build, and could not reach a
/// chromedriver that listens inside another network namespace without the same setns dance.
struct WebDriver {
    ns: String,
    session: String,
}

impl WebDriver {
    const ADDRESS: &str = "127.0.0.1:9515";

    /// A headless Chromium session emulating a 390 × 844 phone.
    fn start(ns: &str) -> Self {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                "mobileEmulation": {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0}}
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match call(ns, "POST", "/session", Some(&capabilities)) {
                Ok(answer) if answer["value"]["sessionId"].is_string() => {
                    let session = answer["value"]["sessionId"].as_str().unwrap().to_owned();
                    return Self { ns: ns.to_owned(), session };
                }
                answer if Instant::now() > deadline => panic!("chromedriver gave no session: {answer:?}"),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        call(&self.ns, "POST", &format!("/session/{}{path}", self.session), Some(body)).unwrap()
    }

    fn navigate(&self, url: &str) {
        self.post("/url", &json!({ "url": url }));
    }

    /// Runs `script` in the page; its return value as a string ("" for anything else).
    fn script(&self, script: &str) -> String {
        let answer = self.post("/execute/sync", &json!({ "script": script, "args": [] }));
        answer["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` every 100 ms until `done` accepts its value or `limit` passes; the last value.
    fn wait_for(&self, limit: Duration, script: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.script(script);
            if done(&value) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let answer = call(&self.ns, "GET", &format!("/session/{}/screenshot", self.session), None).unwrap();
        base64::engine::general_purpose::STANDARD.decode(answer["value"].as_str().unwrap()).unwrap()
    }
}

impl Drop for WebDriver {
    /// Ends the session, so Chromium exits even when an assertion failed.
    fn drop(&mut self) {
        let _ = call(&self.ns, "DELETE", &format!("/session/{}", self.session), None);
    }
}

/// One WebDriver call: HTTP/1.1 with `Connection: close`, the JSON answer.
fn call(ns: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    in_netns(ns, || {
        let mut stream = std::net::TcpStream::connect(WebDriver::ADDRESS).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            WebDriver::ADDRESS,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open whatever the request says: read the head, then
        // exactly Content-Length bytes.
        let mut reader = std::io::BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| format!("bad length {value}"))?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))
    })
}

#[test]
fn the_gateway_dashboard_shows_its_fleet_and_says_when_etcd_goes_away() {
    if !root_or_skip("dashboard fleet") || !chromium_or_skip() || !e2e::tools_or_skip("dashboard fleet", &["etcd"]) {
        return;
    }
    let mut lab = Lab::new("k");
    internet(&mut lab);
    lab.add_ns("etcd1");
    lab.link(("inet", "e1", "10.210.1.1/24"), ("etcd1", "eth0", "10.210.1.2/24"));
    lab.exec("etcd1", &["ip", "route", "add", "default", "via", "10.210.1.1"]);
    let data = lab.dir.join("etcd.data");
    lab.spawn(
        "etcd1",
        "etcd",
        &[
            "etcd",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            "http://10.210.1.2:2379",
            "--advertise-client-urls",
            "http://10.210.1.2:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
        ],
    );
    let (key, _) = lab.keygen("gateway");
    let config = lab.write(
        "gateway.yaml",
        &format!(
            "private_key_file: {}\nlisten: [\"10.200.0.2:4754\"]\nfleet:\n  etcd: [\"http://10.210.1.2:2379\"]\n  name: gw1\n  zone: fra1\n  lease_ttl_s: 2\n",
            key.display()
        ),
    );
    lab.spawn(
        "gw",
        "gateway",
        &[binary("braid-gateway").to_str().unwrap(), "run", "--config", config.to_str().unwrap()],
    );
    lab.spawn("gw", "chromedriver", &["chromedriver", "--port=9515"]);
    let gw_ns = lab.ns("gw");
    let driver = WebDriver::start(&gw_ns);
    driver.navigate("http://127.0.0.1:7475/");
    let members = driver.wait_for(
        Duration::from_secs(20),
        "return [...document.querySelectorAll('.fleet .member')].map(e => e.dataset.member).join(',')",
        |v| v == "gw1",
    );
    assert_eq!(members, "gw1", "the dashboard does not show the fleet\n{}", lab.log("gateway"));
    let line = driver.script("return document.querySelector('.fleet .member').textContent");
    assert!(line.contains("zone fra1") && line.contains("edges 0/100"), "{line}");
    assert_eq!(driver.script("return document.querySelector('.fleet').dataset.etcd"), "reachable");
    let overflow = driver.script("return String(document.documentElement.scrollWidth - window.innerWidth)");
    assert!(overflow.parse::<i64>().unwrap() <= 0, "the page is {overflow} px wider than a phone");
    assert!(lab.stop("etcd"), "etcd did not stop");
    let etcd = driver.wait_for(Duration::from_secs(15), "return document.querySelector('.fleet').dataset.etcd", |v| {
        v == "unreachable"
    });
    assert_eq!(etcd, "unreachable", "the dashboard did not say etcd went away\n{}", lab.log("gateway"));
}
