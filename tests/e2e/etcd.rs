//! A gateway fleet's parts for the tests and the lab: a three-member etcd cluster, each member
//! in its own namespace behind `inet`, gateway configs in the fleet, and readers of what the
//! gateways say.

use std::time::Duration;

use super::{Lab, binary};

pub const MEMBERS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];

pub fn etcd_ip(n: usize) -> String {
    format!("10.210.{n}.2")
}

/// Starts etcd member `n` (1-based) of the three, on its data directory (kept across restarts).
pub fn start_etcd(lab: &mut Lab, n: usize, run: &str) {
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
pub fn etcd_cluster(lab: &mut Lab) {
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
pub fn gateway_yaml(lab: &Lab, name: &str, key: &std::path::Path, address: &str, extra: &str) -> std::path::PathBuf {
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
pub fn gateway_cli(lab: &Lab, ns: &str, config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let gateway = binary("braid-gateway");
    let mut full = vec![gateway.to_str().unwrap(), args[0], "-c", config.to_str().unwrap()];
    full.extend_from_slice(&args[1..]);
    let out = lab.try_exec(ns, &full);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The gateway's `/status` JSON.
pub fn status(lab: &Lab, ns: &str, config: &std::path::Path) -> serde_json::Value {
    let (_, text) = gateway_cli(lab, ns, config, &["status", "--json"]);
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

pub fn allows(status: &serde_json::Value, edge: &str) -> bool {
    status["edges"].as_array().is_some_and(|edges| edges.iter().any(|e| e["name"] == edge))
}

pub fn etcd_reachable(status: &serde_json::Value) -> Option<bool> {
    status["fleet"]["etcd_reachable"].as_bool()
}

pub fn ping_stall(text: &str) -> (Duration, usize) {
    let times: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let stall = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (Duration::from_secs_f64(stall.max(0.0)), times.len())
}

/// Each gateway's carried edges, from `fleet status`: (name, edges) per member line.
pub fn fleet_counts(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| l.starts_with("gw"))
        .filter_map(|l| {
            let name = l.split_whitespace().next()?.to_owned();
            let edges = l.split("edges ").nth(1)?.split('/').next()?.parse().ok()?;
            Some((name, edges))
        })
        .collect()
}
