//! The gateway fleet on a real etcd: a three-member etcd cluster and two gateways, each in its
//! own namespace; the fleet's allowlist admits a rig on every gateway without a restart, the
//! full first gateway places the rig on the second (which it follows), and losing etcd (one
//! member, then all) never touches forwarding. The fleet of three gateways and six rigs is the
//! lab's `fleet` scenario (tests/lab.rs).
//!
//! ```text
//!  etcd1 (10.210.1.2) ─┐
//!  etcd2 (10.210.2.2) ─┼─ inet ─ gw (10.200.0.2), gw2 (10.200.9.2)
//!  etcd3 (10.210.3.2) ─┘    └── the rig's ISPs (tests/e2e)
//! ```

#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

mod e2e;

use std::time::{Duration, Instant};

use e2e::etcd::{allows, etcd_cluster, etcd_ip, etcd_reachable, gateway_cli, gateway_yaml, start_etcd, status};
use e2e::{Lab, binary, internet, ping_until, rig, root_or_skip};

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
