//! The gateway fleet on a real etcd: a three-member etcd cluster and two gateways, each in its
//! own namespace; the fleet's allowlist admits a rig on every gateway without a restart, the
//! full first gateway places the rig on the second (which it follows), and losing etcd (one
//! member, then all) never touches forwarding.
//!
//! ```text
//!  etcd1 (10.210.1.2) ─┐
//!  etcd2 (10.210.2.2) ─┼─ inet ─ gw (10.200.0.2), gw2 (10.200.9.2)
//!  etcd3 (10.210.3.2) ─┘    └── the rig's ISPs (tests/e2e)
//! ```

#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

mod e2e;

use std::time::{Duration, Instant};

use e2e::{Lab, binary, internet, ping_until, rig, root_or_skip};

const MEMBERS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];

fn etcd_ip(n: usize) -> String {
    format!("10.210.{n}.2")
}

/// Starts etcd member `n` (1-based) of the three, on its data directory (kept across restarts).
fn start_etcd(lab: &mut Lab, n: usize, run: &str) {
    let ns = MEMBERS[n - 1];
    let cluster: Vec<String> = (1..=3).map(|i| format!("e{i}=http://{}:2380", etcd_ip(i))).collect();
    let ip = etcd_ip(n);
    let data = lab.dir.join(format!("etcd{n}.data"));
    let args = [
        "etcd",
        "--name",
        &format!("e{n}"),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen-peer-urls",
        &format!("http://{ip}:2380"),
        "--initial-advertise-peer-urls",
        &format!("http://{ip}:2380"),
        "--listen-client-urls",
        &format!("http://{ip}:2379"),
        "--advertise-client-urls",
        &format!("http://{ip}:2379"),
        "--initial-cluster",
        &cluster.join(","),
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        "braid-fleet-test",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(ns, &format!("{ns}-{run}"), &args);
}

/// Three etcd members, each in its own namespace behind `inet`, started.
fn etcd_cluster(lab: &mut Lab) {
    for (n, ns) in MEMBERS.iter().enumerate().map(|(i, ns)| (i + 1, *ns)) {
        lab.add_ns(ns);
        lab.link(("inet", &format!("e{n}"), &format!("10.210.{n}.1/24")), (ns, "eth0", &format!("{}/24", etcd_ip(n))));
        lab.exec(ns, &["ip", "route", "add", "default", "via", &format!("10.210.{n}.1")]);
    }
    for n in 1..=3 {
        start_etcd(lab, n, "a");
    }
}

/// The gateway `name`'s config: in the fleet, with no edge of its own, and `extra` fleet keys.
fn gateway_yaml(lab: &Lab, name: &str, key: &std::path::Path, address: &str, extra: &str) -> std::path::PathBuf {
    let endpoints: Vec<String> = (1..=3).map(|i| format!("\"http://{}:2379\"", etcd_ip(i))).collect();
    lab.write(
        &format!("{name}.yaml"),
        &format!(
            "private_key_file: {}\nlisten: [\"{address}\"]\nfleet:\n  etcd: [{}]\n  name: {name}\n  zone: z-{name}\n  lease_ttl_s: 3\n{extra}",
            key.display(),
            endpoints.join(", ")
        ),
    )
}

/// `braid-gateway COMMAND -c CONFIG ARGS...` run in namespace `ns`: (success, stdout + stderr).
fn gateway_cli(lab: &Lab, ns: &str, config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let gateway = binary("braid-gateway");
    let mut full = vec![gateway.to_str().unwrap(), args[0], "-c", config.to_str().unwrap()];
    full.extend_from_slice(&args[1..]);
    let out = lab.try_exec(ns, &full);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The gateway's `/status` JSON.
fn status(lab: &Lab, ns: &str, config: &std::path::Path) -> serde_json::Value {
    let (_, text) = gateway_cli(lab, ns, config, &["status", "--json"]);
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn allows(status: &serde_json::Value, edge: &str) -> bool {
    status["edges"].as_array().is_some_and(|edges| edges.iter().any(|e| e["name"] == edge))
}

fn etcd_reachable(status: &serde_json::Value) -> Option<bool> {
    status["fleet"]["etcd_reachable"].as_bool()
}

#[test]
fn a_fleet_on_etcd_admits_a_rig_on_every_gateway_within_a_second_and_forwards_through_etcd_outages() {
    if !root_or_skip("fleet on etcd") {
        return;
    }
    if !e2e::tools_or_skip("fleet on etcd", &["etcd", "etcdctl"]) {
        return;
    }
    let mut lab = Lab::new("f");
    internet(&mut lab);
    lab.add_ns("gw2");
    lab.link(("inet", "gw9", "10.200.9.1/24"), ("gw2", "wan", "10.200.9.2/24"));
    lab.exec("gw2", &["ip", "route", "add", "default", "via", "10.200.9.1"]);
    etcd_cluster(&mut lab);
    let endpoints: Vec<String> = (1..=3).map(|i| format!("http://{}:2379", etcd_ip(i))).collect();
    let healthy = lab.wait_for(Duration::from_secs(20), || {
        let out = lab.try_exec("gw", &["etcdctl", "--endpoints", &endpoints.join(","), "endpoint", "health"]);
        out.status.success()
    });
    assert!(healthy, "etcd did not become healthy\n{}", lab.log("etcd1-a"));

    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let (gateway2_key, gateway2_public) = lab.keygen("gateway2");
    let rig1 = rig(&mut lab, 1, 2, &gateway_public);
    // gw2 has the rig's ingest bridge too, on the same LAN as gw's: a fleet edge's TAP joins it
    // on every gateway.
    lab.exec("gw2", &["ip", "link", "add", "br-ing1", "type", "bridge"]);
    lab.exec("gw2", &["ip", "link", "set", "br-ing1", "up"]);
    lab.link(("gw", "lan-gw2", ""), ("gw2", "lan-gw1", ""));
    lab.exec("gw", &["ip", "link", "set", "lan-gw2", "master", "br-ing1"]);
    lab.exec("gw2", &["ip", "link", "set", "lan-gw1", "master", "br-ing1"]);
    // The rig lists both gateways, gw1 first; gw1 is full with one edge (its placement share
    // would pass 0.9), so the fleet places the rig on gw2.
    let text = std::fs::read_to_string(&rig1.config).unwrap().replace(
        &format!("gateway:\n  address: 10.200.0.2:4754\n  public_key: {gateway_public}\n"),
        &format!(
            "gateways:\n  - address: 10.200.0.2:4754\n    public_key: {gateway_public}\n  - address: 10.200.9.2:4754\n    public_key: {gateway2_public}\n"
        ),
    );
    assert!(text.contains("gateways:"), "{text}");
    std::fs::write(&rig1.config, text).unwrap();
    let config1 = gateway_yaml(&lab, "gw1", &gateway_key, "10.200.0.2:4754", "  capacity_edges: 1\n  hold_down_s: 0\n");
    let config2 = gateway_yaml(&lab, "gw2", &gateway2_key, "10.200.9.2:4754", "  hold_down_s: 0\n");
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", config1.to_str().unwrap()]);
    lab.spawn("gw2", "gateway2", &[gateway.to_str().unwrap(), "run", "--config", config2.to_str().unwrap()]);
    let both = lab.wait_for(Duration::from_secs(15), || {
        let (ok, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "status"]);
        ok && text.contains(": 2 gateways")
    });
    let (_, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "status"]);
    assert!(both, "both gateways did not register: {text}\n{}\n{}", lab.log("gateway"), lab.log("gateway2"));

    // The rig is not admitted yet: its edge runs and is refused.
    let edge = binary("braid-edge");
    lab.spawn(&rig1.name, &rig1.name, &[edge.to_str().unwrap(), "run", "--config", rig1.config.to_str().unwrap()]);
    assert!(!ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(2)), "rig 1 got in before it was admitted");

    // Bad input is refused before etcd is reached, and says why.
    let (ok, text) = gateway_cli(&lab, "gw2", &config2, &["fleet", "add-edge", "edge 1", &rig1.public_key]);
    assert!(!ok && text.contains("not an edge name"), "{text}");
    let (ok, text) = gateway_cli(&lab, "gw2", &config2, &["fleet", "add-edge", "edge1", "not-a-key"]);
    assert!(!ok && text.contains("not a public key"), "{text}");

    // Admitted from gw2's host: every gateway applies it within a second, without a restart.
    let (ok, text) =
        gateway_cli(&lab, "gw2", &config2, &["fleet", "add-edge", "edge1", &rig1.public_key, "--bridge", "br-ing1"]);
    assert!(ok, "{text}");
    let admitted = Instant::now();
    let on_both = lab.wait_for(Duration::from_secs(5), || {
        allows(&status(&lab, "gw", &config1), "edge1") && allows(&status(&lab, "gw2", &config2), "edge1")
    });
    let took = admitted.elapsed();
    assert!(on_both, "the fleet's allowlist did not reach both gateways\n{}", lab.log("gateway"));
    println!("RESULT fleet admit_ms={}", took.as_millis());
    assert!(took <= Duration::from_secs(1), "admitting took {took:?}");
    let (ok, text) = gateway_cli(&lab, "gw2", &config2, &["fleet", "add-edge", "edge1", &rig1.public_key]);
    assert!(!ok && text.contains("already admitted"), "{text}");
    // The rig starts afresh, admitted: gw1, first in its list, answers within the grace and
    // carries the stream until its placement moves it.
    assert!(lab.stop(&rig1.name), "the edge did not stop");
    let edge_log = format!("{}-admitted", rig1.name);
    lab.spawn(&rig1.name, &edge_log, &[edge.to_str().unwrap(), "run", "--config", rig1.config.to_str().unwrap()]);
    assert!(
        ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(15)),
        "rig 1 not admitted\n{}",
        lab.log("gateway")
    );
    let (_, list) = gateway_cli(&lab, "gw", &config1, &["fleet", "list"]);
    assert!(list.contains(&format!("edge1 {}", rig1.public_key)), "{list}");
    // gw1, full, placed the rig on gw2: the rig moved its stream there.
    let carried = lab.wait_for(Duration::from_secs(10), || {
        let (_, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "status"]);
        let gw2: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("gw2 ")).take(2).collect();
        text.contains("edges 0/1")
            && gw2.len() == 2
            && gw2[0].contains("edges 1/100")
            && gw2[1] == "  edge1 (standby gw1)"
    });
    assert!(
        carried,
        "fleet status does not show gw2 carrying edge1:\n{}\n{}",
        gateway_cli(&lab, "gw", &config1, &["fleet", "status"]).1,
        lab.log(&edge_log)
    );
    let edge_status =
        lab.try_exec(&rig1.name, &[edge.to_str().unwrap(), "status", "--json", "-c", rig1.config.to_str().unwrap()]);
    let edge_status: serde_json::Value = serde_json::from_slice(&edge_status.stdout).unwrap_or_default();
    assert_eq!(edge_status["redirects_followed"], 1, "{edge_status}");
    assert!(lab.log(&edge_log).contains("placed this edge on another gateway"), "{}", lab.log(&edge_log));

    // A stream through everything that follows: etcd's outages must not cost one packet.
    lab.spawn("cam1", "ping", &["ping", "-i", "0.02", "-c", "1500", &rig1.ingest]);

    // One member dies: nothing changes.
    assert!(lab.stop("etcd1-a"), "etcd1 did not stop");
    std::thread::sleep(Duration::from_secs(4));
    for (ns, config) in [("gw", &config1), ("gw2", &config2)] {
        assert_eq!(etcd_reachable(&status(&lab, ns, config)), Some(true), "{ns} lost etcd with two members left");
    }
    let (ok, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "status"]);
    assert!(ok && text.contains(": 2 gateways"), "{text}");

    // All die: the gateways say so, and forward as before.
    for name in ["etcd2-a", "etcd3-a"] {
        assert!(lab.stop(name), "{name} did not stop");
    }
    let lost = lab.wait_for(Duration::from_secs(10), || {
        [("gw", &config1), ("gw2", &config2)].iter().all(|(ns, c)| etcd_reachable(&status(&lab, ns, c)) == Some(false))
    });
    assert!(lost, "the gateways do not report etcd unreachable\n{}", lab.log("gateway"));
    assert!(lab.log("gateway").contains("etcd unreachable"), "{}", lab.log("gateway"));

    // etcd returns: the gateways register again.
    for n in 1..=3 {
        start_etcd(&mut lab, n, "b");
    }
    let back = lab.wait_for(Duration::from_secs(30), || {
        [("gw", &config1), ("gw2", &config2)].iter().all(|(ns, c)| etcd_reachable(&status(&lab, ns, c)) == Some(true))
    });
    assert!(back, "the gateways did not find etcd again\n{}", lab.log("gateway"));
    let both = lab.wait_for(Duration::from_secs(10), || {
        let (ok, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "status"]);
        ok && text.contains(": 2 gateways")
    });
    assert!(both, "{}", gateway_cli(&lab, "gw", &config1, &["fleet", "status"]).1);

    assert!(lab.wait_for(Duration::from_secs(60), || lab.log("ping").contains("packet loss")), "ping did not finish");
    let ping = lab.log("ping");
    println!(
        "RESULT fleet ping_through_etcd_outages={}",
        ping.lines().find(|l| l.contains("packet loss")).unwrap_or("")
    );
    assert!(ping.contains(" 0% packet loss"), "etcd's outages cost the stream: {ping}");

    // Removed: every gateway ends the rig's session within a second.
    let (ok, text) = gateway_cli(&lab, "gw", &config1, &["fleet", "remove-edge", "edge1"]);
    assert!(ok, "{text}");
    let removed = Instant::now();
    let gone = lab.wait_for(Duration::from_secs(5), || {
        !allows(&status(&lab, "gw", &config1), "edge1") && !allows(&status(&lab, "gw2", &config2), "edge1")
    });
    assert!(gone && removed.elapsed() <= Duration::from_secs(1), "removal took {:?}", removed.elapsed());
    assert!(!ping_until(&lab, "cam1", &rig1.ingest, Duration::from_secs(2)), "a removed rig still gets through");
    for log in [lab.log("gateway"), lab.log("gateway2")] {
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Runs `openssl` with `line`'s words as arguments, in the lab's directory.
fn openssl(lab: &Lab, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = std::process::Command::new("openssl").args(&args).current_dir(&lab.dir).output().unwrap();
    assert!(out.status.success(), "openssl {line}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`NAME-ca.pem`), and certificates it signs: `NAME-etcd` for the etcd member's IP and
/// `NAME-client` for a gateway, each `.pem` and `.key` (mode 0600).
fn certificates(lab: &Lab, name: &str, ip: &str) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(lab, &format!("req {ec} -x509 -keyout {name}-ca.key -out {name}-ca.pem -days 1 -subj /CN={name}-ca"));
    for (cert, ext) in [
        ("etcd", format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n")),
        ("client", "extendedKeyUsage=clientAuth\n".to_owned()),
    ] {
        let stem = format!("{name}-{cert}");
        lab.write(&format!("{stem}.ext"), &ext);
        openssl(lab, &format!("req {ec} -keyout {stem}.key -out {stem}.csr -subj /CN={stem}"));
        openssl(
            lab,
            &format!(
                "x509 -req -in {stem}.csr -CA {name}-ca.pem -CAkey {name}-ca.key -CAcreateserial -days 1 -out {stem}.pem -extfile {stem}.ext"
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lab.dir.join(format!("{stem}.key")), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn a_gateway_reaches_etcd_over_tls_with_a_client_certificate_and_refuses_an_unknown_ca() {
    if !root_or_skip("fleet over TLS") || !e2e::tools_or_skip("fleet over TLS", &["etcd", "etcdctl", "openssl"]) {
        return;
    }
    let mut lab = Lab::new("t");
    internet(&mut lab);
    lab.add_ns("etcd1");
    lab.link(("inet", "e1", "10.210.1.1/24"), ("etcd1", "eth0", &format!("{}/24", etcd_ip(1))));
    lab.exec("etcd1", &["ip", "route", "add", "default", "via", "10.210.1.1"]);
    let ip = etcd_ip(1);
    certificates(&lab, "good", &ip);
    certificates(&lab, "other", &ip);
    let dir = lab.dir.clone();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let data = file("etcd-tls.data");
    lab.spawn(
        "etcd1",
        "etcd",
        &[
            "etcd",
            "--name",
            "e1",
            "--data-dir",
            &data,
            "--listen-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-cluster",
            &format!("e1=http://{ip}:2380"),
            "--listen-client-urls",
            &format!("https://{ip}:2379"),
            "--advertise-client-urls",
            &format!("https://{ip}:2379"),
            "--cert-file",
            &file("good-etcd.pem"),
            "--key-file",
            &file("good-etcd.key"),
            "--trusted-ca-file",
            &file("good-ca.pem"),
            "--client-cert-auth",
        ],
    );
    let (key, _) = lab.keygen("gateway");
    let yaml = |ca: &str, client: &str| {
        format!(
            "private_key_file: {}\nlisten: [\"10.200.0.2:4754\"]\nfleet:\n  etcd: [\"https://{ip}:2379\"]\n  name: gw1\n  lease_ttl_s: 3\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
            key.display(),
            file(&format!("{ca}-ca.pem")),
            file(&format!("{client}-client.pem")),
            file(&format!("{client}-client.key"))
        )
    };
    let good = lab.write("good.yaml", &yaml("good", "good"));
    let gateway = binary("braid-gateway");
    lab.spawn("gw", "gateway", &[gateway.to_str().unwrap(), "run", "--config", good.to_str().unwrap()]);
    let registered = lab.wait_for(Duration::from_secs(20), || {
        let (ok, text) = gateway_cli(&lab, "gw", &good, &["fleet", "status"]);
        ok && text.contains(": 1 gateways") && text.contains("gw1  zone default  10.200.0.2:4754")
    });
    assert!(
        registered,
        "the gateway did not register over TLS: {}\n{}\n{}",
        gateway_cli(&lab, "gw", &good, &["fleet", "status"]).1,
        lab.log("gateway"),
        lab.log("etcd")
    );
    // The status snapshot follows within its interval.
    let reachable = lab.wait_for(Duration::from_secs(5), || etcd_reachable(&status(&lab, "gw", &good)) == Some(true));
    assert!(reachable, "the gateway registered, but its status does not say etcd is reachable");

    // A CA that did not sign etcd's certificate: the CLI fails saying why, and the gateway runs
    // with etcd unreachable.
    let other_ca = lab.write("other-ca.yaml", &yaml("other", "good"));
    let (ok, text) = gateway_cli(&lab, "gw", &other_ca, &["fleet", "list"]);
    assert!(!ok && text.contains("etcd"), "{text}");
    // A client certificate etcd's CA did not sign: refused by etcd.
    let stranger = lab.write("stranger.yaml", &yaml("good", "other").replace("name: gw1", "name: gw9"));
    let (ok, text) = gateway_cli(&lab, "gw", &stranger, &["fleet", "list"]);
    assert!(!ok, "etcd let in a client its CA did not sign: {text}");
    assert!(!lab.log("gateway").contains("panicked"), "{}", lab.log("gateway"));
}

/// The longest silence between two answers in `ping -D` output, and the answers counted.
fn ping_stall(text: &str) -> (Duration, usize) {
    let times: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let stall = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (Duration::from_secs_f64(stall.max(0.0)), times.len())
}

/// Each gateway's carried edges, from `fleet status`: (name, edges) per member line.
fn fleet_counts(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| l.starts_with("gw"))
        .filter_map(|l| {
            let name = l.split_whitespace().next()?.to_owned();
            let edges = l.split("edges ").nth(1)?.split('/').next()?.parse().ok()?;
            Some((name, edges))
        })
        .collect()
}

#[test]
fn a_fleet_of_three_gateways_places_six_rigs_two_by_two_and_their_streams_survive_a_dead_gateway_and_etcd() {
    if !root_or_skip("fleet of three") || !e2e::tools_or_skip("fleet of three", &["etcd", "etcdctl"]) {
        return;
    }
    const RIGS: usize = 6;
    const STREAM_S: u32 = 75;
    let mut lab = Lab::new("s");
    internet(&mut lab);
    for (ns, subnet) in [("gw2", 9), ("gw3", 8)] {
        lab.add_ns(ns);
        lab.link(
            ("inet", &format!("gw{subnet}"), &format!("10.200.{subnet}.1/24")),
            (ns, "wan", &format!("10.200.{subnet}.2/24")),
        );
        lab.exec(ns, &["ip", "route", "add", "default", "via", &format!("10.200.{subnet}.1")]);
    }
    etcd_cluster(&mut lab);
    let keys: Vec<(std::path::PathBuf, String)> =
        ["gateway1", "gateway2", "gateway3"].iter().map(|n| lab.keygen(n)).collect();
    let rigs: Vec<e2e::Rig> = (1..=RIGS).map(|n| rig(&mut lab, n, 2, &keys[0].1)).collect();
    let addresses = ["10.200.0.2:4754", "10.200.9.2:4754", "10.200.8.2:4754"];
    // Every gateway reaches every rig's ingest LAN: gw2's and gw3's bridges are wired to gw's.
    for n in 1..=RIGS {
        for (ns, short) in [("gw2", "b"), ("gw3", "c")] {
            lab.exec(ns, &["ip", "link", "add", &format!("br-ing{n}"), "type", "bridge"]);
            lab.exec(ns, &["ip", "link", "set", &format!("br-ing{n}"), "up"]);
            lab.link(("gw", &format!("x{short}{n}"), ""), (ns, &format!("xa{n}"), ""));
            lab.exec("gw", &["ip", "link", "set", &format!("x{short}{n}"), "master", &format!("br-ing{n}")]);
            lab.exec(ns, &["ip", "link", "set", &format!("xa{n}"), "master", &format!("br-ing{n}")]);
        }
    }
    // Each rig pins all three gateways, gw1 first.
    let list: String = keys
        .iter()
        .zip(addresses)
        .map(|((_, public), address)| format!("  - address: {address}\n    public_key: {public}\n"))
        .collect();
    for r in &rigs {
        let text = std::fs::read_to_string(&r.config).unwrap().replace(
            &format!("gateway:\n  address: 10.200.0.2:4754\n  public_key: {}\n", keys[0].1),
            &format!("gateways:\n{list}"),
        );
        assert!(text.contains("gateways:"), "{text}");
        std::fs::write(&r.config, text).unwrap();
    }
    let configs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| gateway_yaml(&lab, &format!("gw{}", i + 1), &keys[i].0, addresses[i], "  hold_down_s: 0\n"))
        .collect();
    let namespaces = ["gw", "gw2", "gw3"];
    let gateway = binary("braid-gateway");
    for i in 0..3 {
        lab.spawn(
            namespaces[i],
            &format!("gateway{}", i + 1),
            &[gateway.to_str().unwrap(), "run", "--config", configs[i].to_str().unwrap()],
        );
    }
    let fleet_status = |lab: &Lab| gateway_cli(lab, "gw", &configs[0], &["fleet", "status"]).1;
    assert!(
        lab.wait_for(Duration::from_secs(20), || fleet_status(&lab).contains(": 3 gateways")),
        "the gateways did not register: {}\n{}",
        fleet_status(&lab),
        lab.log("gateway1")
    );
    for (n, r) in rigs.iter().enumerate() {
        let (ok, text) = gateway_cli(
            &lab,
            "gw",
            &configs[0],
            &["fleet", "add-edge", &r.name, &r.public_key, "--bridge", &format!("br-ing{}", n + 1)],
        );
        assert!(ok, "{text}");
    }
    // The rigs come one after the other, as a fleet's do: each is placed where there is room.
    let edge = binary("braid-edge");
    for r in &rigs {
        lab.spawn(&r.name, &r.name, &[edge.to_str().unwrap(), "run", "--config", r.config.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(2500));
    }
    let even = lab.wait_for(Duration::from_secs(30), || {
        let counts = fleet_counts(&fleet_status(&lab));
        counts.len() == 3 && counts.iter().all(|(_, edges)| *edges == 2)
    });
    let placed = fleet_status(&lab);
    println!("RESULT scenario=fleet placement={:?}", fleet_counts(&placed));
    assert!(even, "six rigs did not land 2/2/2:\n{placed}");

    // A stream on every rig: 2 Mbit/s of UDP (iperf3) and a ping every 10 ms for the stalls.
    for (n, r) in rigs.iter().enumerate() {
        let n = n + 1;
        lab.spawn(&format!("ing{n}"), &format!("iperf-server{n}"), &["iperf3", "-s", "-1", "-J"]);
        std::thread::sleep(Duration::from_millis(100));
        let secs = STREAM_S.to_string();
        lab.spawn(
            &format!("cam{n}"),
            &format!("iperf{n}"),
            &["iperf3", "-c", &r.ingest, "-u", "-b", "2M", "-l", "1200", "-t", &secs],
        );
        lab.spawn(&format!("cam{n}"), &format!("ping{n}"), &["ping", "-D", "-i", "0.01", "-w", &secs, &r.ingest]);
    }
    std::thread::sleep(Duration::from_secs(5));

    // Kill a gateway: its two rigs take over on their standbys, and the fleet ends 3/3.
    let victim = fleet_counts(&fleet_status(&lab)).iter().position(|(name, _)| name == "gw3").map_or(3, |i| i + 1);
    let victim_name = format!("gateway{victim}");
    let victims: Vec<String> = {
        let text = fleet_status(&lab);
        text.lines()
            .skip_while(|l| !l.starts_with(&format!("gw{victim} ")))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    assert_eq!(victims.len(), 2, "gw{victim} should carry two rigs:\n{}", fleet_status(&lab));
    lab.signal(&victim_name, "KILL");
    let rebalanced = lab.wait_for(Duration::from_secs(20), || {
        let counts = fleet_counts(&fleet_status(&lab));
        counts.len() == 2 && counts.iter().all(|(_, edges)| *edges == 3)
    });
    let after = fleet_status(&lab);
    println!("RESULT scenario=fleet after_kill={:?}", fleet_counts(&after));
    let logs: Vec<String> = victims.iter().map(|v| lab.log(v)).collect();
    assert!(rebalanced, "the fleet did not end 3/3:\n{after}\n{}\n{}", logs.join("\n"), lab.log("gateway1"));

    // One etcd member dies: nothing changes. All die: the gateways say so and forward as before.
    assert!(lab.stop("etcd1-a"), "etcd1 did not stop");
    std::thread::sleep(Duration::from_secs(3));
    let alive: Vec<usize> = (1..=3).filter(|&i| i != victim).collect();
    for &i in &alive {
        assert_eq!(
            etcd_reachable(&status(&lab, namespaces[i - 1], &configs[i - 1])),
            Some(true),
            "gw{i} lost etcd with two members left"
        );
    }
    for name in ["etcd2-a", "etcd3-a"] {
        assert!(lab.stop(name), "{name} did not stop");
    }
    let lost = lab.wait_for(Duration::from_secs(10), || {
        alive.iter().all(|&i| etcd_reachable(&status(&lab, namespaces[i - 1], &configs[i - 1])) == Some(false))
    });
    assert!(lost, "the gateways do not report etcd unreachable");
    for n in 1..=3 {
        start_etcd(&mut lab, n, "b");
    }
    let back = lab.wait_for(Duration::from_secs(30), || {
        alive.iter().all(|&i| etcd_reachable(&status(&lab, namespaces[i - 1], &configs[i - 1])) == Some(true))
    });
    assert!(back, "the gateways did not find etcd again");

    // The dead gateway returns: it gets rigs back by planned moves, one at a time, until 2/2/2.
    let returned = format!("gw{victim}");
    lab.spawn(
        namespaces[victim - 1],
        &format!("{victim_name}-back"),
        &[gateway.to_str().unwrap(), "run", "--config", configs[victim - 1].to_str().unwrap()],
    );
    let mut seen = vec![0];
    let even_again = lab.wait_for(Duration::from_secs(40), || {
        let counts = fleet_counts(&fleet_status(&lab));
        if let Some((_, edges)) = counts.iter().find(|(name, _)| *name == returned)
            && seen.last() != Some(edges)
        {
            seen.push(*edges);
        }
        counts.len() == 3 && counts.iter().all(|(_, edges)| *edges == 2)
    });
    println!("RESULT scenario=fleet returned={returned} its_edges_over_time={seen:?}");
    assert!(even_again, "the fleet did not come back to 2/2/2:\n{}", fleet_status(&lab));
    assert!(seen.windows(2).all(|w| w[1] <= w[0] + 1), "edges came back more than one at a time: {seen:?}");

    // Every stream: nothing lost, and the rigs of the dead gateway stalled at most 300 ms.
    assert!(
        lab.wait_for(Duration::from_secs(u64::from(STREAM_S) + 20), || (1..=RIGS)
            .all(|n| lab.log(&format!("ping{n}")).contains("packet loss"))),
        "the pings did not finish"
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut failures = Vec::new();
    for (n, r) in rigs.iter().enumerate() {
        let n = n + 1;
        let server: serde_json::Value = serde_json::from_str(&lab.log(&format!("iperf-server{n}"))).unwrap_or_default();
        let lost = server["end"]["sum"]["lost_packets"].as_i64();
        let packets = server["end"]["sum"]["packets"].as_i64();
        let ping = lab.log(&format!("ping{n}"));
        let (stall, answers) = ping_stall(&ping);
        let summary = ping.lines().find(|l| l.contains("packet loss")).unwrap_or_default().to_owned();
        let moved = victims.contains(&r.name);
        println!(
            "RESULT scenario=fleet rig={} moved={moved} app_lost={lost:?} packets={packets:?} stall_ms={} ping_answers={answers} ping=\"{summary}\"",
            r.name,
            stall.as_millis()
        );
        if lost != Some(0) {
            failures.push(format!("{}: iperf3 lost {lost:?} of {packets:?}", r.name));
        }
        if stall > Duration::from_millis(300) {
            failures.push(format!("{}: stalled {stall:?}", r.name));
        }
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", lab.log("gateway1"));
    for i in 1..=3 {
        assert!(!lab.log(&format!("gateway{i}")).contains("panicked"));
    }
}
