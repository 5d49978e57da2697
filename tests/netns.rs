//! End-to-end tests of the real `braid-edge` and `braid-gateway` in network namespaces, with
//! real clients (ping, iperf3) and tshark on the wire. They need root (namespaces, TAP, NAT):
//! without it they print why they skip, and under `CI=true` a skip fails.

#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

mod e2e;

use std::time::Duration;

use e2e::{Lab, binary, gateway_config, internet, ping_until, rig, root_or_skip};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Starts the gateway for `rigs` and each rig's edge.
fn start(lab: &mut Lab, rigs: &[&e2e::Rig], gateway_key: &std::path::Path) {
    let config = gateway_config(lab, gateway_key, rigs);
    let gateway = binary("braid-gateway");
    // A runtime directory, as systemd's RuntimeDirectory= gives the gateway.
    let runtime = lab.dir.join("run-gateway");
    std::fs::create_dir_all(&runtime).unwrap();
    let runtime_env = format!("RUNTIME_DIRECTORY={}", runtime.display());
    lab.spawn(
        "gw",
        "gateway",
        &["env", &runtime_env, gateway.to_str().unwrap(), "run", "--config", config.to_str().unwrap()],
    );
    let edge = binary("braid-edge");
    for r in rigs {
        lab.spawn(&r.name, &r.name, &[edge.to_str().unwrap(), "run", "--config", r.config.to_str().unwrap()]);
    }
}

#[test]
fn an_edge_with_three_natted_uplinks_carries_ping_arp_ipv6_and_iperf3_to_the_gateway_lan() {
    if !root_or_skip("netns e2e") {
        return;
    }
    let mut lab = Lab::new("a");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 3, &gateway_public);
    start(&mut lab, &[&rig1], &gateway_key);

    assert!(
        ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)),
        "no ping across the tunnel\n--- gateway\n{}\n--- edge\n{}",
        lab.log("gateway"),
        lab.log("edge1")
    );
    // ARP resolved across the tunnel: the camera knows the ingest host's MAC.
    let neigh = String::from_utf8(lab.exec("cam1", &["ip", "neigh", "show", &rig1.ingest]).stdout).unwrap();
    assert!(neigh.contains("lladdr"), "no ARP entry for the ingest host: {neigh}");
    // IPv6 neighbour discovery and ping.
    assert!(ping_until(&lab, "cam1", "fd77:1::20", Duration::from_secs(10)), "no IPv6 ping across the tunnel");

    // tshark on the gateway's wire sees GRE-in-UDP with Key and Sequence.
    let capture = lab.try_exec(
        "gw",
        &[
            "timeout",
            "10",
            "tshark",
            "-i",
            "wan",
            "-c",
            "20",
            "-f",
            "udp port 4754",
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "gre.proto",
            "-e",
            "gre.key",
            "-e",
            "gre.sequence_number",
        ],
    );
    let fields = String::from_utf8_lossy(&capture.stdout);
    let rows: Vec<&str> = fields.lines().filter(|l| !l.is_empty()).collect();
    assert!(rows.len() >= 10, "tshark saw too little: {fields}\n{}", String::from_utf8_lossy(&capture.stderr));
    for row in &rows {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols.len(), 3, "{row}");
        assert!(cols[0] == "0x6558" || cols[0] == "0x88b5", "GRE protocol in {row}");
        assert!(!cols[1].is_empty() && !cols[2].is_empty(), "GRE key and sequence in {row}");
    }

    // iperf3 through the tunnel: TCP, then UDP.
    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s"]);
    std::thread::sleep(Duration::from_millis(500));
    let tcp = json(&lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-t", "3", "-J"]));
    let tcp_mbps = tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
    let udp = json(&lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-u", "-b", "20M", "-t", "3", "-J"]));
    let udp_lost = udp["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0);
    println!(
        "RESULT scenario=netns-e2e mode=redundant uplinks=3 tcp_goodput_mbps={tcp_mbps:.1} udp_20M_lost_percent={udp_lost:.2}"
    );
    assert!(tcp_mbps > 1.0, "TCP through the tunnel: {tcp_mbps:.1} Mbit/s");
    assert!(udp_lost < 1.0, "UDP at 20 Mbit/s lost {udp_lost}%");

    // Carrier loss on one uplink: netlink tells the edge at once, the stream goes on over the
    // others, and `status` shows the link down.
    lab.exec(&rig1.name, &["ip", "link", "set", "up1", "down"]);
    let edge_bin = binary("braid-edge");
    let status = || {
        let out = lab
            .try_exec(&rig1.name, &[edge_bin.to_str().unwrap(), "status", "--config", rig1.config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let down = lab.wait_for(Duration::from_secs(3), || {
        let text = status();
        serde_json::from_str::<serde_json::Value>(&text).ok().is_some_and(|v| {
            v["session"]["links"]
                .as_array()
                .is_some_and(|links| links.iter().any(|l| l["name"] == "isp1" && l["state"] == "down"))
        })
    });
    assert!(down, "status never showed isp1 down: {}\n{}", status(), lab.log("edge1"));
    assert!(lab.log("edge1").contains("carrier changed"), "{}", lab.log("edge1"));
    let during = lab.exec("cam1", &["ping", "-c", "20", "-i", "0.05", "-W", "1", &rig1.ingest]);
    let during = String::from_utf8_lossy(&during.stdout);
    assert!(during.contains(" 0% packet loss"), "ping lost packets with one uplink down: {during}");
    lab.exec(&rig1.name, &["ip", "link", "set", "up1", "up"]);

    // A modem unplugged and plugged in again: the interface disappears, the edge waits for it,
    // and takes it back into use when it returns.
    lab.exec(&rig1.name, &["ip", "link", "del", "up3"]);
    assert!(
        lab.wait_for(Duration::from_secs(3), || lab.log("edge1").contains("interface removed")),
        "{}",
        lab.log("edge1")
    );
    lab.link(("isp13", "int0", "192.168.3.1/24"), (&rig1.name, "up3", "192.168.3.2/24"));
    lab.exec(&rig1.name, &["ip", "route", "add", "default", "via", "192.168.3.1", "dev", "up3", "metric", "30"]);
    let back = lab.wait_for(Duration::from_secs(10), || {
        serde_json::from_str::<serde_json::Value>(&status()).ok().is_some_and(|v| {
            v["session"]["links"]
                .as_array()
                .is_some_and(|links| links.iter().any(|l| l["name"] == "isp3" && l["state"] == "up"))
        })
    });
    assert!(back, "isp3 did not come back: {}\n{}", status(), lab.log("edge1"));

    // SIGTERM: a clean exit that removes the TAP.
    assert!(lab.stop("edge1"), "the edge did not exit on SIGTERM\n{}", lab.log("edge1"));
    let tap = lab.try_exec(&rig1.name, &["ip", "link", "show", "braid0"]);
    assert!(!tap.status.success(), "the edge's TAP is still there after shutdown");
    assert!(!lab.log("edge1").contains("panicked"), "{}", lab.log("edge1"));
}

#[test]
fn two_edges_share_one_gateway_port_and_a_reload_adds_one_without_disturbing_the_other() {
    if !root_or_skip("netns two edges") {
        return;
    }
    let mut lab = Lab::new("b");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 2, &gateway_public);
    let rig2 = rig(&mut lab, 2, 2, &gateway_public);
    // The gateway first allows rig 1 only; rig 2's edge runs and is refused.
    start(&mut lab, &[&rig1], &gateway_key);
    let edge = binary("braid-edge");
    lab.spawn(&rig2.name, &rig2.name, &[edge.to_str().unwrap(), "run", "--config", rig2.config.to_str().unwrap()]);
    assert!(ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)), "rig 1\n{}", lab.log("gateway"));
    assert!(!ping_until(&lab, "cam2", &rig2.ingest, Duration::from_secs(2)), "rig 2 got in before it was allowed");

    // Allow rig 2 and reload (SIGHUP) while rig 1 streams. First a reload that cannot be applied
    // (rig 2's TAP name is taken): it is refused whole, and rig 1 carries on.
    lab.spawn("cam1", "ping1", &["ping", "-i", "0.05", "-c", "200", &rig1.ingest]);
    let config = gateway_config(&lab, &gateway_key, &[&rig1, &rig2]);
    let text = std::fs::read_to_string(&config).unwrap().replace("tap: braid-r2", "tap: wan");
    std::fs::write(&config, text).unwrap();
    lab.signal("gateway", "HUP");
    assert!(
        lab.wait_for(Duration::from_secs(3), || lab.log("gateway").contains("reload refused")),
        "{}",
        lab.log("gateway")
    );
    assert!(!ping_until(&lab, "cam2", &rig2.ingest, Duration::from_secs(1)), "a refused reload admitted rig 2");
    // The applied reload also moves the port and changes the mode: neither can change live, and
    // the gateway says so, naming them, and stays on its port.
    let config = gateway_config(&lab, &gateway_key, &[&rig1, &rig2]);
    let text = std::fs::read_to_string(&config).unwrap().replace("10.200.0.2:4754", "10.200.0.2:4755");
    std::fs::write(&config, format!("{text}mode: bond\n")).unwrap();
    lab.signal("gateway", "HUP");
    assert!(
        ping_until(&lab, "cam2", &rig2.ingest, Duration::from_secs(15)),
        "rig 2 not admitted by the reload\n{}",
        lab.log("gateway")
    );
    assert!(lab.wait_for(Duration::from_secs(15), || lab.log("ping1").contains("packet loss")), "ping did not finish");
    let ping1 = lab.log("ping1");
    assert!(ping1.contains(" 0% packet loss"), "rig 1's stream was disturbed by the reload: {ping1}");
    // One TAP per edge at the gateway, each in its own ingest bridge.
    for (tap, bridge) in [("braid-r1", "br-ing1"), ("braid-r2", "br-ing2")] {
        let link = String::from_utf8(lab.exec("gw", &["ip", "link", "show", tap]).stdout).unwrap();
        assert!(link.contains(&format!("master {bridge}")), "{tap}: {link}");
    }
    let log = lab.log("gateway");
    assert!(log.contains("allowlist reloaded"), "{log}");
    let warning = log.lines().find(|l| l.contains("WARN") && l.contains("next restart")).unwrap_or_default();
    assert!(warning.contains("keys=listen, mode"), "the reload did not name what it ignored:\n{log}");
    // And `check-config --against-running` fails on the same file, naming the same keys.
    let runtime = lab.dir.join("run-gateway");
    let check = std::process::Command::new(binary("braid-gateway"))
        .args(["check-config", "--config", config.to_str().unwrap(), "--against-running", "--runtime-dir"])
        .arg(&runtime)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success() && stderr.contains("a reload cannot apply listen, mode"), "{stderr}");
    assert!(lab.stop("gateway"), "the gateway did not exit on SIGTERM");
}

#[test]
fn an_edge_names_why_its_handshakes_go_unanswered_within_five_seconds_in_its_log_and_its_status() {
    if !root_or_skip("netns handshake diagnostics") {
        return;
    }
    let mut lab = Lab::new("d");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 2, &gateway_public);
    let gateway = binary("braid-gateway");
    let config = gateway_config(&lab, &gateway_key, &[&rig1]);
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", config.to_str().unwrap()]);
    let edge = binary("braid-edge");
    let base = std::fs::read_to_string(&rig1.config).unwrap();
    let (_, other_public) = lab.keygen("other");
    // Each edge in turn (one TAP, one status port), its config changed one way, and the cause
    // its WARN line and /status must name.
    let cases = [
        ("wrong-port", base.replace("10.200.0.2:4754", "10.200.0.2:4799"), "port_unreachable"),
        ("other-key", base.replace(&gateway_public, &other_public), "wrong_gateway_key"),
        ("flood", base.clone(), "gateway_under_load"),
    ];
    for (name, text, cause) in cases {
        if name == "flood" {
            // A flood of initiations from another edge's would-be address, far above the
            // gateway's handshake rate (50/s), running when the edge starts.
            let labtool = binary("braid-labtool");
            lab.spawn(
                "inet",
                "flood",
                &[
                    labtool.to_str().unwrap(),
                    "initiations",
                    "--to",
                    "10.200.0.2:4754",
                    "--gateway-key",
                    &gateway_public,
                    "--pps",
                    "2000",
                    "--secs",
                    "20",
                ],
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let path = lab.write(&format!("edge-{name}.yaml"), &text);
        lab.spawn(&rig1.name, name, &[edge.to_str().unwrap(), "run", "--config", path.to_str().unwrap()]);
        let field = format!("cause=\"{cause}\"");
        let named = lab.wait_for(Duration::from_secs(5), || {
            lab.log(name)
                .lines()
                .any(|l| l.contains("WARN") && l.contains("handshake not completing") && l.contains(&field))
        });
        assert!(named, "{name}: no WARN naming {cause} within 5 s:\n{}", lab.log(name));
        // The status snapshot is published every second: the next carries it.
        let status = || {
            let out = lab.exec(&rig1.name, &[edge.to_str().unwrap(), "status", "--json", "-c", path.to_str().unwrap()]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let carried = lab.wait_for(Duration::from_secs(3), || status()["handshake_problem"]["cause"] == cause);
        let status = status();
        assert!(carried, "{name}: /status does not name {cause}: {status:#}");
        let gateway = if name == "wrong-port" { "10.200.0.2:4799" } else { "10.200.0.2:4754" };
        assert_eq!(status["handshake_problem"]["gateway"], gateway, "{status:#}");
        if name == "flood" {
            // The cookie gets the edge through all the same.
            assert!(
                lab.wait_for(Duration::from_secs(5), || lab.log(name).contains("handshake complete")),
                "{}",
                lab.log(name)
            );
        }
        assert!(lab.stop(name), "{name}: the edge did not exit on SIGTERM");
    }
    // The flood's made-up keys are named in the gateway's log, at most one line a second: the
    // flood ran at most 25 s by now.
    let log = lab.log("gateway");
    let unknown = log.lines().filter(|l| l.contains("not on the allowlist")).count();
    assert!((1..=26).contains(&unknown), "{unknown} lines on unknown keys:\n{log}");
}

#[test]
fn a_sighup_adds_a_third_uplink_and_removes_one_during_a_stream_losing_nothing() {
    if !root_or_skip("netns edge reload") {
        return;
    }
    let mut lab = Lab::new("r");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    // Three ISPs wired to the rig; the config names the first two.
    let rig1 = rig(&mut lab, 1, 3, &gateway_public);
    let full = std::fs::read_to_string(&rig1.config).unwrap();
    let two = full.replace("  - name: isp3\n    interface: up3\n", "");
    std::fs::write(&rig1.config, &two).unwrap();
    start(&mut lab, &[&rig1], &gateway_key);
    assert!(ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)), "no tunnel\n{}", lab.log("edge1"));

    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(500));
    let client = lab.dir.join("iperf3-udp.json");
    let script = format!("iperf3 -c {} -u -b 4M -l 1200 -t 10 -J > {}", rig1.ingest, client.display());
    lab.spawn("cam1", "iperf3-client", &["sh", "-c", &script]);
    std::thread::sleep(Duration::from_secs(2));
    // A broken file is refused whole, and the edge runs on as it was.
    std::fs::write(&rig1.config, two.replace("interface: up2", "interface: up2/bad")).unwrap();
    lab.signal("edge1", "HUP");
    assert!(
        lab.wait_for(Duration::from_secs(3), || lab.log("edge1").contains("reload refused")),
        "{}",
        lab.log("edge1")
    );
    std::thread::sleep(Duration::from_secs(1));
    // isp3 added, isp1 removed, while the stream runs.
    let reloaded = full.replace("  - name: isp1\n    interface: up1\n", "");
    std::fs::write(&rig1.config, &reloaded).unwrap();
    lab.signal("edge1", "HUP");
    assert!(
        lab.wait_for(Duration::from_secs(3), || lab.log("edge1").contains("config reloaded")),
        "{}",
        lab.log("edge1")
    );
    assert!(
        lab.wait_for(Duration::from_secs(15), || std::fs::read_to_string(&client).is_ok_and(|t| t.contains("\"end\""))),
        "iperf3 did not finish"
    );
    let udp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&client).unwrap()).unwrap();
    let sum = &udp["end"]["sum"];
    assert!(sum["packets"].as_u64().unwrap_or(0) > 3000, "{sum}");
    assert_eq!(sum["lost_packets"], 0, "frames lost across the reload: {sum}\n{}", lab.log("edge1"));
    // The edge runs on isp2 and isp3 now, both up, with isp2 under the id it had.
    let edge = binary("braid-edge");
    let status = lab.exec("edge1", &[edge.to_str().unwrap(), "status", "--json", "-c", rig1.config.to_str().unwrap()]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let links: Vec<(String, u64, String)> = status["session"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (l["name"].as_str().unwrap().to_owned(), l["id"].as_u64().unwrap(), l["state"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(links, [("isp2".to_owned(), 1, "up".to_owned()), ("isp3".to_owned(), 2, "up".to_owned())], "{status:#}");
}

#[test]
fn an_uplink_past_its_data_cap_is_warned_of_and_becomes_a_backup_and_its_use_outlives_a_restart() {
    if !root_or_skip("netns data cap") {
        return;
    }
    let mut lab = Lab::new("c");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let rig1 = rig(&mut lab, 1, 2, &gateway_public);
    // isp2 may carry 1 MB a day; the rig is redundant, so it carries the whole stream until then.
    let text = std::fs::read_to_string(&rig1.config)
        .unwrap()
        .replace("    interface: up2\n", "    interface: up2\n    cap_mb: 1\n    cap_period: day\n");
    std::fs::write(&rig1.config, text).unwrap();
    let state = lab.dir.join("state-edge");
    std::fs::create_dir_all(&state).unwrap();
    let state_env = format!("STATE_DIRECTORY={}", state.display());
    let config = gateway_config(&lab, &gateway_key, &[&rig1]);
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", config.to_str().unwrap()]);
    let edge = binary("braid-edge");
    let run = ["env", &state_env, edge.to_str().unwrap(), "run", "--config", rig1.config.to_str().unwrap()];
    lab.spawn("edge1", "edge1", &run);
    assert!(ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)), "no tunnel\n{}", lab.log("edge1"));

    lab.spawn("ing1", "iperf3-server", &["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = lab.exec("cam1", &["iperf3", "-c", &rig1.ingest, "-u", "-b", "2M", "-l", "1200", "-t", "8", "-J"]);
    let udp = json(&out);
    assert_eq!(udp["end"]["sum"]["lost_packets"], 0, "{}", udp["end"]["sum"]);
    let log = lab.log("edge1");
    assert!(log.contains("uplink has used 80% of its data cap") && log.contains("uplink=isp2"), "{log}");
    assert!(log.contains("uplink used its data cap: backup only"), "{log}");
    let status = lab.exec("edge1", &[edge.to_str().unwrap(), "status", "--json", "-c", rig1.config.to_str().unwrap()]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let isp2 = &status["session"]["links"][1];
    assert_eq!((isp2["name"].as_str(), isp2["spend"].as_str()), (Some("isp2"), Some("backup_only")), "{status:#}");
    assert!(isp2["period_bytes"].as_u64().unwrap_or(0) >= 1_000_000, "{isp2}");
    assert_eq!(isp2["cap_bytes"], 1_000_000);
    // Past the cap it carries no frame while isp1 is up.
    let frames = |status: &serde_json::Value| status["session"]["links"][1]["tx_frames"].as_u64().unwrap_or(0);
    let before = frames(&status);
    lab.exec("cam1", &["ping", "-c", "20", "-i", "0.05", &rig1.ingest]);
    std::thread::sleep(Duration::from_millis(1200));
    let after = lab.exec("edge1", &[edge.to_str().unwrap(), "status", "--json", "-c", rig1.config.to_str().unwrap()]);
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(frames(&after), before, "the capped uplink still carried frames");
    // A restart does not hand it a fresh allowance: the use is kept in the state directory.
    assert!(lab.stop("edge1"), "the edge did not exit on SIGTERM");
    let saved = std::fs::read_to_string(state.join("usage")).unwrap_or_default();
    assert!(saved.starts_with("isp2\t"), "{saved:?}");
    lab.spawn("edge1", "edge1-again", &run);
    // (Its endpoint answers a moment after it starts.)
    let status = || {
        let out =
            lab.try_exec("edge1", &[edge.to_str().unwrap(), "status", "--json", "-c", rig1.config.to_str().unwrap()]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        lab.wait_for(Duration::from_secs(10), || status()["session"]["links"][1]["spend"] == "backup_only"),
        "after a restart the capped uplink is not a backup: {:#}\n{}",
        status(),
        lab.log("edge1-again")
    );
}

/// Parses ping's summary: (packet loss %, average RTT in ms).
fn ping_summary(text: &str) -> (f64, f64) {
    let loss = text
        .split([',', '\n'])
        .find_map(|part| part.trim().strip_suffix("% packet loss").and_then(|n| n.parse().ok()))
        .unwrap_or(100.0);
    let avg = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (loss, avg)
}

#[test]
fn the_impairment_forwarder_delays_and_drops_as_set_between_real_namespaces() {
    if !root_or_skip("netns impairment forwarder") {
        return;
    }
    let mut lab = Lab::new("c");
    for ns in ["a", "imp", "b"] {
        lab.add_ns(ns);
    }
    lab.link(("a", "eth0", "10.9.0.1/24"), ("imp", "va", ""));
    lab.link(("b", "eth0", "10.9.0.2/24"), ("imp", "vb", ""));
    let profile = lab.write("link.profile", "delay_ms=20 jitter_ms=0");
    let impair = binary("braid-impair");
    let p = profile.to_str().unwrap();
    lab.spawn(
        "imp",
        "impair",
        &[impair.to_str().unwrap(), "--a", "ta", "--b", "tb", "--up", p, "--down", p, "--seed", "3"],
    );
    let ready =
        lab.wait_for(Duration::from_secs(5), || lab.try_exec("imp", &["ip", "link", "show", "tb"]).status.success());
    assert!(ready, "braid-impair made no TAPs: {}", lab.log("impair"));
    lab.bridge("imp", "bra", &["va", "ta"]);
    lab.bridge("imp", "brb", &["vb", "tb"]);
    assert!(ping_until(&lab, "a", "10.9.0.2", Duration::from_secs(5)), "{}", lab.log("impair"));

    // 20 ms each way: the round trip is at least 40 ms (the delay is applied) and not far above it
    // (the precise checks are in lab/tests/emulator.rs, in virtual time; this machine is noisy).
    let out = lab.exec("a", &["ping", "-c", "20", "-i", "0.05", "10.9.0.2"]);
    let (loss, rtt) = ping_summary(&String::from_utf8_lossy(&out.stdout));
    println!("RESULT scenario=impair-delay set_rtt_ms=40 measured_rtt_ms={rtt:.1} lost_percent={loss}");
    assert!((40.0..60.0).contains(&rtt), "RTT {rtt} ms for 20 ms each way");
    assert_eq!(loss, 0.0);

    // 20% loss each way: a round trip survives with 0.8² = 64%, so 36% of pings are lost.
    std::fs::write(&profile, "delay_ms=1 loss=0.2").unwrap();
    lab.signal("impair", "HUP");
    std::thread::sleep(Duration::from_millis(200));
    let out = lab.try_exec("a", &["ping", "-c", "400", "-i", "0.005", "-W", "1", "10.9.0.2"]);
    let (loss, _) = ping_summary(&String::from_utf8_lossy(&out.stdout));
    // 400 round trips: sigma = sqrt(0.36 * 0.64 / 400) = 2.4 points; allow four sigma.
    println!("RESULT scenario=impair-loss set_loss_each_way=0.2 expected_ping_loss_percent=36 measured={loss}");
    assert!((26.4..45.6).contains(&loss), "ping loss {loss}% for 20% each way (expected 36 ± 9.6)");

    // A blackhole drops everything while the interfaces stay up.
    std::fs::write(&profile, "blackhole=1").unwrap();
    lab.signal("impair", "HUP");
    std::thread::sleep(Duration::from_millis(200));
    let out = lab.try_exec("a", &["ping", "-c", "5", "-i", "0.1", "-W", "1", "10.9.0.2"]);
    assert_eq!(ping_summary(&String::from_utf8_lossy(&out.stdout)).0, 100.0, "the blackhole let pings through");
}

/// Gives `rig` fresh keys until worker `worker` of a gateway of `count` owns it (the owner is a
/// hash of the edge's public key).
fn owned_by(lab: &Lab, rig: &mut e2e::Rig, worker: usize, count: usize) {
    use braid::endpoint::gateway::worker_of;
    use braid::keys::PublicKey;
    for attempt in 0..64 {
        if worker_of(&PublicKey::from_base64(&rig.public_key).unwrap(), count) == worker {
            return;
        }
        let (path, public) = lab.keygen(&format!("{}-{attempt}", rig.name));
        let text: String = std::fs::read_to_string(&rig.config)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("private_key_file:") {
                    format!("private_key_file: {}\n", path.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&rig.config, text).unwrap();
        rig.public_key = public;
    }
    panic!("64 keys and none owned by worker {worker} of {count}");
}

#[test]
fn a_gateway_of_two_workers_carries_an_edge_on_each_and_a_reload_adds_one_to_the_second_without_disturbing_the_first() {
    if !root_or_skip("netns gateway workers") {
        return;
    }
    let mut lab = Lab::new("w");
    internet(&mut lab);
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let mut rig1 = rig(&mut lab, 1, 2, &gateway_public);
    let mut rig2 = rig(&mut lab, 2, 2, &gateway_public);
    owned_by(&lab, &mut rig1, 0, 2);
    owned_by(&lab, &mut rig2, 1, 2);
    let with_workers = |lab: &Lab, rigs: &[&e2e::Rig]| {
        let config = gateway_config(lab, &gateway_key, rigs);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}workers: 2\n")).unwrap();
        config
    };
    let config = with_workers(&lab, &[&rig1]);
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", config.to_str().unwrap()]);
    let edge = binary("braid-edge");
    for r in [&rig1, &rig2] {
        lab.spawn(&r.name, &r.name, &[edge.to_str().unwrap(), "run", "--config", r.config.to_str().unwrap()]);
    }
    assert!(ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)), "rig 1\n{}", lab.log("gateway"));
    assert!(lab.log("gateway").contains("workers=2"), "{}", lab.log("gateway"));

    // Rig 2 (worker 1's) is allowed by a reload while rig 1 (worker 0's) streams: worker 0
    // opens its TAP and hands it to worker 1, and hands worker 1 rig 2's initiations.
    lab.spawn("cam1", "ping1", &["ping", "-i", "0.05", "-c", "200", &rig1.ingest]);
    with_workers(&lab, &[&rig1, &rig2]);
    lab.signal("gateway", "HUP");
    assert!(
        ping_until(&lab, "cam2", &rig2.ingest, Duration::from_secs(15)),
        "rig 2 not carried by worker 1 after the reload\n{}",
        lab.log("gateway")
    );
    assert!(lab.wait_for(Duration::from_secs(15), || lab.log("ping1").contains("packet loss")), "ping did not finish");
    let ping1 = lab.log("ping1");
    assert!(ping1.contains(" 0% packet loss"), "rig 1's stream was disturbed by the reload: {ping1}");
    let link = String::from_utf8(lab.exec("gw", &["ip", "link", "show", "braid-r2"]).stdout).unwrap();
    assert!(link.contains("master br-ing2"), "braid-r2: {link}");

    // The status endpoint tells both sessions, whichever worker carries them, and the counters
    // of both workers.
    let carried = lab.wait_for(Duration::from_secs(5), || {
        let out = lab.try_exec("gw", &[gateway.to_str().unwrap(), "status", "--json", "-c", config.to_str().unwrap()]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let live = |i: usize| !status["edges"][i]["session"].is_null();
        status["sessions"] == 2 && live(0) && live(1) && status["handshakes_forwarded"].as_u64() >= Some(1)
    });
    let out = lab.try_exec("gw", &[gateway.to_str().unwrap(), "status", "--json", "-c", config.to_str().unwrap()]);
    assert!(carried, "the status does not tell both workers' sessions: {}", String::from_utf8_lossy(&out.stdout));

    // On SIGTERM every worker stops and removes its TAPs.
    assert!(lab.stop("gateway"), "the gateway did not exit on SIGTERM");
    for tap in ["braid-r1", "braid-r2"] {
        assert!(!lab.try_exec("gw", &["ip", "link", "show", tap]).status.success(), "{tap} outlived the gateway");
    }
}
