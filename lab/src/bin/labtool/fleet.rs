//! The `fleet` scenario: a gateway fleet on a real etcd, measured.
//!
//! ```text
//!  etcd1..3 (10.210.N.2) ─┐
//!  attacker (10.200.66.2) ─┼─ inet ─ gw1 (10.200.0.2), gw2 (10.200.9.2), gw3 (10.200.8.2)
//!  rig1..6, 2 NATed ISPs ─┘   every gateway bridges every rig's ingest LAN
//! ```
//!
//! Three etcd members and three gateways register; six rigs are admitted with `fleet add-edge`
//! (the first one timed until every gateway allows it) and come one after the other, each
//! pinning the three gateways; each streams 2 Mbit/s of UDP (iperf3) with a 10 ms ping beside
//! it. Then: an attacker on the internet, holding the address of the gateway that carries rig 1,
//! sends it forged placements (sealed with a random key, under a captured packet's session
//! index) and replays of captured packets; the gateway that carries two rigs is SIGKILLed; one
//! etcd member stops, then all three, and all come back; the killed gateway returns. Every
//! figure goes into one RESULT line for `braid-labtool check fleet`.

// A lab run drives real daemons in real time: it reads the clock and sleeps between steps.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e::etcd::{
    MEMBERS, allows, etcd_cluster, etcd_reachable, fleet_counts, gateway_cli, gateway_yaml, ping_stall, start_etcd,
    status,
};
use crate::e2e::{Lab, Rig, binary, internet, rig};

const RIGS: usize = 6;
const STREAM_S: u32 = 75;
const ADDRESSES: [&str; 3] = ["10.200.0.2:4754", "10.200.9.2:4754", "10.200.8.2:4754"];
const NAMESPACES: [&str; 3] = ["gw", "gw2", "gw3"];

/// Runs the scenario, prints its RESULT line and copies its logs into `out`.
///
/// # Errors
/// What stopped it before it could measure (every measured figure is left to the check).
pub(crate) fn run(out: &Path, seed: u64) -> Result<(), String> {
    let mut lab = Lab::new("fleet");
    let result = measure(&mut lab, seed);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    if let Ok(entries) = std::fs::read_dir(&lab.dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log" || e == "yaml") {
                let _ = std::fs::copy(&path, out.join(entry.file_name()));
            }
        }
    }
    let figures = result?;
    println!("\nRESULT scenario=fleet mode=redundant {figures}");
    Ok(())
}

/// The figures, `key=value` separated by spaces.
fn measure(lab: &mut Lab, seed: u64) -> Result<String, String> {
    let mut figures = String::new();
    let mut put = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(figures, "{key}={value} ");
    };
    internet(lab);
    for (ns, subnet) in [("gw2", 9), ("gw3", 8), ("attacker", 66)] {
        lab.add_ns(ns);
        lab.link(
            ("inet", &format!("x{subnet}"), &format!("10.200.{subnet}.1/24")),
            (ns, "wan", &format!("10.200.{subnet}.2/24")),
        );
        lab.exec(ns, &["ip", "route", "add", "default", "via", &format!("10.200.{subnet}.1")]);
    }
    // The internet does not filter sources: the attacker can send as any gateway.
    lab.exec("inet", &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.x66.rp_filter=0"]);
    etcd_cluster(lab);
    let keys: Vec<(std::path::PathBuf, String)> =
        ["gateway1", "gateway2", "gateway3"].iter().map(|n| lab.keygen(n)).collect();
    let rigs: Vec<Rig> = (1..=RIGS).map(|n| rig(lab, n, 2, &keys[0].1)).collect();
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
        .zip(ADDRESSES)
        .map(|((_, public), address)| format!("  - address: {address}\n    public_key: {public}\n"))
        .collect();
    for r in &rigs {
        let single = format!("gateway:\n  address: 10.200.0.2:4754\n  public_key: {}\n", keys[0].1);
        let text = std::fs::read_to_string(&r.config).map_err(|e| e.to_string())?;
        if !text.contains(&single) {
            return Err(format!("{}: no single gateway to replace:\n{text}", r.config.display()));
        }
        std::fs::write(&r.config, text.replace(&single, &format!("gateways:\n{list}"))).map_err(|e| e.to_string())?;
    }
    let configs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| gateway_yaml(lab, &format!("gw{}", i + 1), &keys[i].0, ADDRESSES[i], "  hold_down_s: 0\n"))
        .collect();
    let gateway = binary("braid-gateway");
    let gateway = gateway.to_str().ok_or("a binary path that is not UTF-8")?;
    for i in 0..3 {
        lab.spawn(NAMESPACES[i], &format!("gateway{}", i + 1), &[gateway, "run", "--config", path(&configs[i])?]);
    }
    let fleet_status = |lab: &Lab| gateway_cli(lab, "gw", &configs[0], &["fleet", "status"]).1;
    if !lab.wait_for(Duration::from_secs(20), || fleet_status(lab).contains(": 3 gateways")) {
        return Err(format!("the gateways did not register: {}", fleet_status(lab)));
    }

    // Admitted on any gateway, allowed on every one within a second, without a restart.
    for (n, r) in rigs.iter().enumerate() {
        let bridge = format!("br-ing{}", n + 1);
        let (ok, text) = gateway_cli(
            lab,
            NAMESPACES[n % 3],
            &configs[n % 3],
            &["fleet", "add-edge", &r.name, &r.public_key, "--bridge", &bridge],
        );
        if !ok {
            return Err(format!("fleet add-edge {}: {text}", r.name));
        }
        if n == 0 {
            let admitted = Instant::now();
            let everywhere = lab.wait_for(Duration::from_secs(5), || {
                (0..3).all(|i| allows(&status(lab, NAMESPACES[i], &configs[i]), &r.name))
            });
            put("admit_ms", &if everywhere { admitted.elapsed().as_millis().to_string() } else { "-".into() });
        }
    }
    // The rigs come one after the other, as a fleet's do: each is placed where there is room.
    let edge = binary("braid-edge");
    let edge = edge.to_str().ok_or("a binary path that is not UTF-8")?;
    for r in &rigs {
        lab.spawn(&r.name, &r.name, &[edge, "run", "--config", path(&r.config)?]);
        std::thread::sleep(Duration::from_millis(2500));
    }
    let even = |lab: &Lab, n: usize, each: u32| {
        let counts = fleet_counts(&fleet_status(lab));
        counts.len() == n && counts.iter().all(|(_, edges)| *edges == each)
    };
    lab.wait_for(Duration::from_secs(30), || even(lab, 3, 2));
    put("placement", &counts(&fleet_status(lab)));

    // A stream on every rig: 2 Mbit/s of UDP (iperf3) and a ping every 10 ms for the stalls.
    let secs = STREAM_S.to_string();
    for (n, r) in rigs.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        lab.spawn(&format!("ing{n}"), &format!("iperf-server{n}"), &["iperf3", "-s", "-1", "-J"]);
        std::thread::sleep(Duration::from_millis(100));
        lab.spawn(
            &format!("cam{n}"),
            &format!("iperf{n}"),
            &["iperf3", "-c", &r.ingest, "-u", "-b", "2M", "-l", "1200", "-t", &secs],
        );
        lab.spawn(&format!("cam{n}"), &format!("ping{n}"), &["ping", "-D", "-i", "0.01", "-w", &secs, &r.ingest]);
    }
    // Every phase below must end while the streams still run, or they would not measure it.
    let streaming = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    attack(lab, &rigs[0], &fleet_status(lab), &keys, seed, &mut put)?;

    // Kill the gateway that carries rig 6 (two rigs): they take over on their standbys, and
    // the fleet ends 3/3.
    let before = fleet_status(lab);
    let victim = carrier_of(&before, &rigs[RIGS - 1].name).ok_or(format!("no gateway carries rig 6:\n{before}"))?;
    let victims: Vec<String> = carried_by(&before, victim);
    put("victim", &format!("gw{victim}"));
    put("victim_rigs", &victims.len());
    lab.signal(&format!("gateway{victim}"), "KILL");
    lab.wait_for(Duration::from_secs(20), || even(lab, 2, 3));
    put("after_kill", &counts(&fleet_status(lab)));

    // One etcd member stops: nothing changes. All stop: the gateways say so and forward as
    // before. They come back: the gateways find them.
    let alive: Vec<usize> = (1..=3).filter(|&i| i != victim).collect();
    let reachable = |lab: &Lab, want: bool| {
        alive.iter().all(|&i| etcd_reachable(&status(lab, NAMESPACES[i - 1], &configs[i - 1])) == Some(want))
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    lab.stop(&format!("{}-a", MEMBERS[0]));
    std::thread::sleep(Duration::from_secs(3));
    put("etcd_one_down_reachable", &yes_no(reachable(lab, true)));
    for member in &MEMBERS[1..] {
        lab.stop(&format!("{member}-a"));
    }
    put("etcd_all_down_reported", &yes_no(lab.wait_for(Duration::from_secs(10), || reachable(lab, false))));
    for n in 1..=3 {
        start_etcd(lab, n, "b");
    }
    put("etcd_back", &yes_no(lab.wait_for(Duration::from_secs(30), || reachable(lab, true))));

    // The killed gateway returns: it gets rigs back by planned moves, one at a time.
    let returned = format!("gw{victim}");
    lab.spawn(
        NAMESPACES[victim - 1],
        &format!("gateway{victim}-back"),
        &[gateway, "run", "--config", path(&configs[victim - 1])?],
    );
    let mut seen = vec![0];
    lab.wait_for(Duration::from_secs(40), || {
        let counts = fleet_counts(&fleet_status(lab));
        if let Some((_, edges)) = counts.iter().find(|(name, _)| *name == returned)
            && seen.last() != Some(edges)
        {
            seen.push(*edges);
        }
        even(lab, 3, 2)
    });
    put("placement_after_return", &counts(&fleet_status(lab)));
    put("returned_edges_over_time", &join(&seen));
    put("returned_step_max", &seen.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0));
    put("phases_done_s", &streaming.elapsed().as_secs());

    // Every stream: what iperf3's server received, and the longest ping silence.
    lab.wait_for(Duration::from_secs(u64::from(STREAM_S) + 20), || {
        (1..=RIGS).all(|n| lab.log(&format!("ping{n}")).contains("packet loss"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let (mut lost, mut packets, mut stalls, mut moved_stalls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ping_loss_max = 0.0f64;
    for (n, r) in rigs.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        let server: serde_json::Value = serde_json::from_str(&lab.log(&format!("iperf-server{n}"))).unwrap_or_default();
        let sum = &server["end"]["sum"];
        lost.push(sum["lost_packets"].as_i64().map_or("-".into(), |v| v.to_string()));
        packets.push(sum["packets"].as_i64().map_or("-".into(), |v| v.to_string()));
        let ping = lab.log(&format!("ping{n}"));
        let (stall, _) = ping_stall(&ping);
        // A rig whose pings went unanswered (or were never sent) fails, whatever its stalls.
        ping_loss_max = ping_loss_max.max(ping_loss_pct(&ping).unwrap_or(100.0));
        stalls.push(stall.as_millis().to_string());
        if victims.contains(&r.name) {
            moved_stalls.push(stall.as_millis());
        }
    }
    put("iperf_lost_each", &lost.join(","));
    put("iperf_lost", &sum_or_dash(&lost));
    put("iperf_packets_each", &packets.join(","));
    put("ping_stall_ms_each", &stalls.join(","));
    put("ping_loss_max_pct", &format!("{ping_loss_max:.2}"));
    put("moved_stall_ms", &moved_stalls.iter().max().map_or("-".into(), ToString::to_string));
    let panicked = (1..=3)
        .flat_map(|i| [format!("gateway{i}"), format!("gateway{i}-back")])
        .chain(rigs.iter().map(|r| r.name.clone()))
        .filter(|name| lab.log(name).contains("panicked"))
        .count();
    put("panicked", &panicked);
    Ok(figures.trim_end().to_owned())
}

/// The attacker holds the address of the gateway that carries `target` and sends the rig, for
/// 3 s, forged placements onto another pinned gateway, then for 2 s replays of captured packets. Figures:
/// what it sent, what the edge dropped meanwhile, and whether it followed or moved.
fn attack(
    lab: &mut Lab,
    target: &Rig,
    fleet: &str,
    keys: &[(std::path::PathBuf, String)],
    seed: u64,
    put: &mut impl FnMut(&str, &dyn std::fmt::Display),
) -> Result<(), String> {
    let carrier = carrier_of(fleet, &target.name).ok_or(format!("no gateway carries {}:\n{fleet}", target.name))?;
    let address = ADDRESSES[carrier - 1];
    let ip = address.split(':').next().unwrap_or_default();
    // What an on-path observer sees of the gateway's packets to the rig's first ISP: where they
    // go (the NAT's mapping) and their headers.
    let capture = lab.try_exec(
        "inet",
        &[
            "timeout",
            "10",
            "tshark",
            "-i",
            "i11",
            "-c",
            "20",
            "-f",
            &format!("udp and src host {ip} and src port 4754"),
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "udp.payload",
        ],
    );
    let captured: Vec<(String, String)> = String::from_utf8_lossy(&capture.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((format!("{}:{}", f.next()?, f.next()?), f.next()?.to_owned()))
        })
        .collect();
    let Some((to, header)) = captured.first().cloned() else {
        return Err(format!("captured nothing from {address} to rig 1: {}", String::from_utf8_lossy(&capture.stderr)));
    };
    let replays = lab.write("captured.hex", &captured.iter().map(|(_, hex)| format!("{hex}\n")).collect::<String>());
    let elsewhere = (carrier % 3) + 1;
    let edge = binary("braid-edge");
    let edge_status = |lab: &Lab| -> serde_json::Value {
        let out = lab.try_exec(
            &target.name,
            &[edge.to_str().unwrap_or_default(), "status", "--json", "-c", target.config.to_str().unwrap_or_default()],
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let active = |s: &serde_json::Value| {
        s["gateways"].as_array().and_then(|g| g.iter().find(|g| g["role"] == "active")).map(|g| g["address"].clone())
    };
    // Drops by reason, the edge's own and its active session's.
    let drops = |s: &serde_json::Value| -> std::collections::BTreeMap<String, u64> {
        let mut all = std::collections::BTreeMap::new();
        for by in [&s["drops_by_reason"], &s["session"]["drops_by_reason"]] {
            for (reason, n) in by.as_object().into_iter().flatten() {
                *all.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        all
    };
    let before = edge_status(lab);
    lab.exec("attacker", &["ip", "addr", "add", &format!("{ip}/32"), "dev", "wan"]);
    let labtool = binary("braid-labtool");
    let labtool = labtool.to_str().ok_or("a binary path that is not UTF-8")?;
    let seed = seed.to_string();
    lab.spawn(
        "attacker",
        "forge",
        &[
            labtool,
            "forge",
            "--from",
            address,
            "--to",
            &to,
            "--header",
            &header,
            "--gateway-key",
            &keys[elsewhere - 1].1,
            "--pps",
            "300",
            "--secs",
            "3",
            "--seed",
            &seed,
        ],
    );
    lab.wait_for(Duration::from_secs(8), || lab.log("forge").contains("sent="));
    // Its socket must be gone before the replay binds the same address and port.
    lab.stop("forge");
    lab.spawn(
        "attacker",
        "replay",
        &[labtool, "replay", "--from", address, "--to", &to, "--pps", "300", "--secs", "2", path(&replays)?],
    );
    lab.wait_for(Duration::from_secs(8), || lab.log("replay").contains("sent="));
    std::thread::sleep(Duration::from_millis(300));
    let after = edge_status(lab);
    let sent = |name: &str| {
        lab.log(name).split_whitespace().find_map(|w| w.strip_prefix("sent=")?.parse::<u64>().ok()).unwrap_or(0)
    };
    put("forged_sent", &sent("forge"));
    put("replayed_sent", &sent("replay"));
    put("attack_sent", &(sent("forge") + sent("replay")));
    // What the edge dropped while the attack ran, by reason.
    let (was, is) = (drops(&before), drops(&after));
    let during: Vec<(String, u64)> = is
        .iter()
        .map(|(reason, n)| (reason.clone(), n.saturating_sub(was.get(reason).copied().unwrap_or(0))))
        .filter(|(_, n)| *n > 0)
        .collect();
    let list: Vec<String> = during.iter().map(|(reason, n)| format!("{reason}:{n}")).collect();
    put("edge_drops_during_attack", &if list.is_empty() { "-".to_owned() } else { list.join(",") });
    let rejected: u64 = during
        .iter()
        .filter(|(reason, _)| ["open_failed", "replay", "too_old"].contains(&reason.as_str()))
        .map(|(_, n)| n)
        .sum();
    put("attack_rejected", &rejected);
    let followed = after["redirects_followed"].as_u64().zip(before["redirects_followed"].as_u64());
    put("forged_followed", &followed.map_or("-".into(), |(a, b)| a.saturating_sub(b).to_string()));
    let moved = match (active(&before), active(&after)) {
        (Some(a), Some(b)) => {
            if a == b {
                "no"
            } else {
                "yes"
            }
        }
        _ => "-",
    };
    put("forged_moved", &moved);
    Ok(())
}

/// The share of a ping run's echo requests that went unanswered, from its summary line.
fn ping_loss_pct(ping: &str) -> Option<f64> {
    let line = ping.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line.split(',').map(|part| part.split_whitespace().next()?.parse::<f64>().ok());
    let (sent, received) = (numbers.next()??, numbers.next()??);
    (sent > 0.0).then(|| 100.0 * (sent - received) / sent)
}

/// The gateway (1-based) that carries `rig`, from `fleet status`.
fn carrier_of(fleet: &str, rig: &str) -> Option<usize> {
    (1..=3).find(|&i| carried_by(fleet, i).iter().any(|r| r == rig))
}

/// The rigs gateway `i` (1-based) carries, from `fleet status`.
fn carried_by(fleet: &str, i: usize) -> Vec<String> {
    fleet
        .lines()
        .skip_while(|l| !l.starts_with(&format!("gw{i} ")))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Each member's carried edges, in name order, comma-separated (`-` with none).
fn counts(fleet: &str) -> String {
    let mut counts = fleet_counts(fleet);
    counts.sort();
    let each: Vec<u32> = counts.into_iter().map(|(_, edges)| edges).collect();
    if each.is_empty() { "-".into() } else { join(&each) }
}

fn join(values: &[u32]) -> String {
    values.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn sum_or_dash(values: &[String]) -> String {
    values.iter().map(|v| v.parse::<u64>().ok()).sum::<Option<u64>>().map_or("-".into(), |v| v.to_string())
}

fn path(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("{}: not UTF-8", p.display()))
}
