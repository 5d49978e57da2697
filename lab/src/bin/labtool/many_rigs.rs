//! The `many-rigs` scenario: many rigs through one gateway, measured.
//!
//! ```text
//!  rigs (10.230.0.2: `braid-labtool rigs`, N edges) ── wan [gw] braid-rK ─ br-ing ─ ing (10.79.0.1, sink)
//! ```
//!
//! The gateway allows every rig (`rig-keys`), each with its own TAP on the ingest bridge. The
//! rigs connect, then each streams the same bitrate for the same time; the sink on the ingest
//! host counts what each delivered. Figures: rigs connected, frames sent and lost (per rig and
//! in all), the gateway's CPU time over the stream, and that per Gbit/s delivered.

#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::e2e::{Lab, binary};

const GATEWAY: &str = "10.230.0.1:4754";
const INGEST: &str = "10.79.0.1";
const PORT: &str = "9000";

/// Runs `count` rigs of `links` links at `mbps` each for `secs`, prints the RESULT line of
/// scenario `name`, and copies the logs into `out`.
///
/// # Errors
/// What stopped it before it could measure.
pub(crate) fn run(name: &str, out: &Path, count: usize, mbps: &str, secs: u64) -> Result<(), String> {
    let mut lab = Lab::new("rigs");
    let result = measure(&mut lab, count, mbps, secs);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    if let Ok(entries) = std::fs::read_dir(&lab.dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log" || e == "yaml") {
                let _ = std::fs::copy(entry.path(), out.join(entry.file_name()));
            }
        }
    }
    println!("\nRESULT scenario={name} mode=bond {}", result?);
    Ok(())
}

fn measure(lab: &mut Lab, count: usize, mbps: &str, secs: u64) -> Result<String, String> {
    let mut figures = String::new();
    let mut put = |key: &str, value: &dyn std::fmt::Display| {
        let _ = write!(figures, "{key}={value} ");
    };
    for ns in ["rigs", "gw", "ing"] {
        lab.add_ns(ns);
    }
    lab.link(("rigs", "wan", "10.230.0.2/24"), ("gw", "wan", "10.230.0.1/24"));
    lab.link(("ing", "eth0", &format!("{INGEST}/16")), ("gw", "lan", ""));
    lab.bridge("gw", "br-ing", &["lan"]);
    let labtool = binary("braid-labtool");
    let labtool = labtool.to_str().ok_or("a binary path that is not UTF-8")?;
    let keys = lab.exec("rigs", &[labtool, "rig-keys", "--count", &count.to_string()]);
    let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
    let edges: String = keys
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (name, key) = l.split_once(' ')?;
            Some(format!("  - name: {name}\n    public_key: {key}\n    tap: braid-r{}\n    bridge: br-ing\n", i + 1))
        })
        .collect();
    let (gateway_key, gateway_public) = lab.keygen("gateway");
    let config = lab.write(
        "gateway.yaml",
        &format!("private_key_file: {}\nlisten: [\"{GATEWAY}\"]\nedges:\n{edges}", gateway_key.display()),
    );
    let gateway = binary("braid-gateway");
    let gateway = gateway.to_str().ok_or("a binary path that is not UTF-8")?;
    let config = config.to_str().ok_or("a path that is not UTF-8")?;
    lab.spawn("gw", "gateway", &[gateway, "run", "--config", config]);
    let listening = lab.wait_for(Duration::from_secs(20), || {
        lab.try_exec("gw", &[gateway, "status", "--json", "-c", config]).status.success()
    });
    if !listening {
        return Err(format!("the gateway did not start:\n{}", lab.log("gateway")));
    }
    let mac = lab.exec("ing", &["cat", "/sys/class/net/eth0/address"]);
    let mac = String::from_utf8_lossy(&mac.stdout).trim().to_owned();
    let count_text = count.to_string();
    // The sink listens past the rigs' warm-up, stream and linger.
    let sink_secs = (secs + 8).to_string();
    lab.spawn(
        "ing",
        "sink",
        &[labtool, "sink", "--listen", &format!("{INGEST}:{PORT}"), "--count", &count_text, "--secs", &sink_secs],
    );
    std::thread::sleep(Duration::from_millis(300));
    let cpu_before = cpu_ticks(lab.pid("gateway"));
    lab.spawn(
        "rigs",
        "rigs",
        &[
            labtool,
            "rigs",
            "--gateway",
            GATEWAY,
            "--gateway-key",
            &gateway_public,
            "--count",
            &count_text,
            "--links",
            "2",
            "--mbps",
            mbps,
            "--secs",
            &secs.to_string(),
            "--ingest",
            INGEST,
            "--ingest-mac",
            &mac,
            "--port",
            PORT,
        ],
    );
    let limit = Duration::from_secs(secs + 20);
    lab.wait_for(limit, || lab.log("rigs").contains("sent=") && lab.log("sink").contains("received="));
    let cpu_after = cpu_ticks(lab.pid("gateway"));
    let field = |log: &str, key: &str| -> Vec<u64> {
        lab.log(log)
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    let (connected, sent, received) = (field("rigs", "connected"), field("rigs", "sent"), field("sink", "received"));
    put("rigs", &count);
    put("connected", &connected.first().map_or("-".into(), ToString::to_string));
    if sent.len() != count || received.len() != count {
        return Err(format!("rigs said {:?}, the sink {:?}", lab.log("rigs"), lab.log("sink")));
    }
    let lost: Vec<u64> = sent.iter().zip(&received).map(|(s, r)| s.saturating_sub(*r)).collect();
    let sent_total: u64 = sent.iter().sum();
    put("sent", &sent_total);
    put("sent_min", &sent.iter().min().copied().unwrap_or(0));
    put("lost", &lost.iter().sum::<u64>());
    put("rigs_with_loss", &lost.iter().filter(|l| **l > 0).count());
    put("lost_max", &lost.iter().max().copied().unwrap_or(0));
    put("dup", &field("sink", "dup").first().copied().unwrap_or(0));
    // The gateway's CPU over the whole run, per Gbit/s of what it delivered over the stream.
    let ticks = cpu_after.zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    let tick_hz = rustix::param::clock_ticks_per_second() as f64;
    let delivered_bits = received.iter().sum::<u64>() as f64 * 1242.0 * 8.0;
    let gbps = delivered_bits / secs as f64 / 1e9;
    put("delivered_mbps", &format!("{:.1}", gbps * 1000.0));
    match ticks {
        Some(t) => {
            let cpu_s = t as f64 / tick_hz;
            put("gateway_cpu_pct", &format!("{:.1}", 100.0 * cpu_s / (secs as f64 + 4.0)));
            put("gateway_cpu_s_per_gbit", &format!("{:.2}", cpu_s / (delivered_bits / 1e9).max(1e-9)));
        }
        None => {
            put("gateway_cpu_pct", &"-");
            put("gateway_cpu_s_per_gbit", &"-");
        }
    }
    put("panicked", &usize::from(lab.log("gateway").contains("panicked")));
    Ok(figures.trim_end().to_owned())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
