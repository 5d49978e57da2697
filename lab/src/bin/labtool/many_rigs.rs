//! The `many-rigs` scenario: many rigs through one gateway, measured.
//!
//! ```text
//!  rigs (10.230.0.2: `braid-labtool rigs`, N edges) ── wan [gw] braid-rK ─ br-ing ─ ing (10.79.0.1, sink)
//! ```
//!
//! The gateway allows every rig (`rig-keys`), each with its own TAP on the ingest bridge. The
//! rigs connect, then each streams the same bitrate for the same time; the sink on the ingest
//! host counts what each delivered. Figures: rigs connected, frames offered, refused by the
//! tunnel, and lost (per rig and in all), and the gateway's CPU over the run (handshakes and
//! the stream), as a share of one core and per Gbit/s delivered.

#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::e2e::{Lab, binary};

const GATEWAY: &str = "10.230.0.1:4754";
const INGEST: &str = "10.79.0.1";
const PORT: &str = "9000";
/// The most rigs of two links `rigs` runs (900 sockets).
const MAX_RIGS: usize = 450;

/// Runs `count` rigs of `links` links at `mbps` each for `secs`, prints the RESULT line of
/// scenario `name`, and copies the logs into `out`.
///
/// # Errors
/// What stopped it before it could measure.
pub(crate) fn run(name: &str, out: &Path, count: usize, mbps: &str, secs: u64, workers: usize) -> Result<(), String> {
    run_once(name, out, count, (mbps, secs), workers).map(|_| ())
}

/// Runs `from` rigs, then `step` more at a time up to `up_to`, until a run loses a frame, and
/// prints the most rigs carried with nothing lost (each run's RESULT line and logs under
/// `out/N`): how many rigs the gateway carries on this machine, as far as the generator, which
/// runs on one thread here too, can offer them (its `rigs_cpu_pct` says when it could not).
///
/// # Errors
/// What stopped a run before it could measure.
pub(crate) fn most(
    out: &Path,
    (from, step, up_to): (usize, usize, usize),
    mbps: &str,
    secs: u64,
    workers: usize,
) -> Result<(), String> {
    if from == 0 || step == 0 || up_to < from {
        return Err("--count, --step and --up-to: at least 1, and --up-to at least --count".into());
    }
    if up_to > MAX_RIGS {
        return Err(format!("--up-to: at most {MAX_RIGS} rigs (two sockets each, within the rigs' 900)"));
    }
    let (mut most, mut tried) = (None, Vec::new());
    for count in (from..=up_to).step_by(step) {
        let carried = run_once("many-rigs", &out.join(count.to_string()), count, (mbps, secs), workers)?;
        tried.push(format!("{count}:{}", if carried { "none_lost" } else { "lost" }));
        if !carried {
            break;
        }
        most = Some(count);
    }
    let most = most.map_or_else(|| "none".to_owned(), |n| n.to_string());
    println!("\nmost rigs carried with nothing lost at {mbps} Mbit/s each: {most} (tried {})", tried.join(" "));
    Ok(())
}

/// As [`run`], and whether every rig's every frame arrived.
fn run_once(name: &str, out: &Path, count: usize, rate: (&str, u64), workers: usize) -> Result<bool, String> {
    let (figures, carried) = run_logged(out, count, rate, workers)?;
    println!("\nRESULT scenario={name} mode=bond {figures}");
    Ok(carried)
}

/// Measures one run, with its logs copied into `out`: its figures, and whether every rig's
/// every frame arrived.
fn run_logged(out: &Path, count: usize, (mbps, secs): (&str, u64), workers: usize) -> Result<(String, bool), String> {
    if !(1..=600).contains(&secs) {
        return Err("--secs: between 1 and 600".into());
    }
    let mut lab = Lab::new("rigs");
    let result = measure(&mut lab, count, (mbps, secs), workers);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    if let Ok(entries) = std::fs::read_dir(&lab.dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log" || e == "yaml") {
                let _ = std::fs::copy(entry.path(), out.join(entry.file_name()));
            }
        }
    }
    result
}

/// Runs `count` rigs through a gateway of one worker and of `workers`, in turns, `rounds`
/// times, and prints the RESULT line of scenario `name`: what each delivered and lost, the
/// gateway's CPU per Gbit/s, and the ratio of the mean delivered (`workers_ratio`). Each run's
/// logs go under `out/ROUND-WORKERS`.
///
/// # Errors
/// What stopped a run before it could measure.
pub(crate) fn compare(
    name: &str,
    out: &Path,
    count: usize,
    rate: (&str, u64),
    workers: usize,
    rounds: usize,
) -> Result<(), String> {
    let mut runs: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (side, w) in [1, workers].into_iter().enumerate() {
            let (figures, _) = run_logged(&out.join(format!("{round}-{w}")), count, rate, w)?;
            println!("run {round}, {w} worker(s): {figures}");
            runs[side].push(figures);
        }
    }
    let value = |figures: &str, key: &str| -> Option<f64> {
        figures.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))?.parse().ok())
    };
    let each = |side: usize, key: &str| -> Vec<f64> { runs[side].iter().filter_map(|f| value(f, key)).collect() };
    let list = |values: &[f64]| values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",");
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let mut figures = format!("rigs={count} mbps_each={} workers={workers} rounds={rounds}", rate.0);
    let connected: Vec<f64> =
        (0..rounds).flat_map(|r| [0, 1].map(|side| value(&runs[side][r], "connected"))).flatten().collect();
    let _ = write!(figures, " connected_each={}", list(&connected));
    for (side, label) in [(0, "one"), (1, "many")] {
        let lost_pct: Vec<f64> = runs[side]
            .iter()
            .filter_map(|f| Some((100.0 * value(f, "lost")? / value(f, "offered")?.max(1.0) * 1000.0).round() / 1000.0))
            .collect();
        let _ = write!(
            figures,
            " delivered_mbps_{label}={} lost_pct_{label}={} gateway_cpu_s_per_gbit_{label}={} rigs_cpu_pct_{label}={}",
            list(&each(side, "delivered_mbps")),
            list(&lost_pct),
            list(&each(side, "gateway_cpu_s_per_gbit")),
            list(&each(side, "rigs_cpu_pct")),
        );
    }
    let ratio = mean(&each(1, "delivered_mbps")) / mean(&each(0, "delivered_mbps")).max(1e-9);
    let _ = write!(figures, " workers_ratio={ratio:.3}");
    println!("\nRESULT scenario={name} mode=bond {figures}");
    Ok(())
}

fn measure(lab: &mut Lab, count: usize, (mbps, secs): (&str, u64), workers: usize) -> Result<(String, bool), String> {
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
        &format!(
            "private_key_file: {}\nlisten: [\"{GATEWAY}\"]\nworkers: {workers}\nedges:\n{edges}",
            gateway_key.display()
        ),
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
    let cpu_before = (Instant::now(), cpu_ticks(lab.pid("gateway")));
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
    let cpu_after = (Instant::now(), cpu_ticks(lab.pid("gateway")));
    let field = |log: &str, key: &str| -> Vec<u64> {
        lab.log(log)
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default()
    };
    let (offered, sent, received) = (field("rigs", "offered"), field("rigs", "sent"), field("sink", "received"));
    let first = |log: &str, key: &str| field(log, key).first().map_or("-".into(), ToString::to_string);
    put("rigs", &count);
    put("workers", &workers);
    put("connected", &first("rigs", "connected"));
    // Initiations worker 0 handed to the worker that owns their rig (none with one worker).
    let status = lab.try_exec("gw", &[gateway, "status", "--json", "-c", config]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let number = |key: &str| status[key].as_u64().map_or("-".into(), |n| n.to_string());
    put("handshakes_forwarded", &number("handshakes_forwarded"));
    // Sessions as the status endpoint tells them, from every worker.
    put("sessions", &number("sessions"));
    if offered.len() != count || sent.len() != count || received.len() != count {
        return Err(format!("rigs said {:?}, the sink {:?}", lab.log("rigs"), lab.log("sink")));
    }
    // Lost: what a rig offered that its sink never saw (refused by the tunnel or lost on the way).
    let lost: Vec<u64> = offered.iter().zip(&received).map(|(o, r)| o.saturating_sub(*r)).collect();
    put("offered", &offered.iter().sum::<u64>());
    put("offered_min", &offered.iter().min().copied().unwrap_or(0));
    put("refused", &offered.iter().zip(&sent).map(|(o, s)| o.saturating_sub(*s)).sum::<u64>());
    put("send_errors", &first("rigs", "send_errors"));
    put("lost", &lost.iter().sum::<u64>());
    put("rigs_with_loss", &lost.iter().filter(|l| **l > 0).count());
    put("lost_max", &lost.iter().max().copied().unwrap_or(0));
    put("dup", &first("sink", "dup"));
    // The gateway's CPU over the whole run (handshakes and the stream), as a share of one core
    // and per Gbit/s of what it delivered.
    let elapsed = cpu_after.0.duration_since(cpu_before.0).as_secs_f64();
    let ticks = cpu_after.1.zip(cpu_before.1).map(|(a, b)| a.saturating_sub(b));
    let tick_hz = rustix::param::clock_ticks_per_second() as f64;
    let delivered_bits = received.iter().sum::<u64>() as f64 * 1242.0 * 8.0;
    let gbps = delivered_bits / secs as f64 / 1e9;
    put("delivered_mbps", &format!("{:.1}", gbps * 1000.0));
    // The rigs' own, over the same time (they run within it): on one thread, so a share near
    // 100% says the generator, not the gateway, set the pace.
    let rigs_ticks = field("rigs", "cpu_ticks").first().copied();
    for (who, ticks) in [("gateway", ticks), ("rigs", rigs_ticks)] {
        match ticks {
            Some(t) => {
                let cpu_s = t as f64 / tick_hz;
                put(&format!("{who}_cpu_pct"), &format!("{:.1}", 100.0 * cpu_s / elapsed.max(1e-3)));
                put(&format!("{who}_cpu_s_per_gbit"), &format!("{:.2}", cpu_s / (delivered_bits / 1e9).max(1e-9)));
            }
            None => {
                put(&format!("{who}_cpu_pct"), &"-");
                put(&format!("{who}_cpu_s_per_gbit"), &"-");
            }
        }
    }
    put("panicked", &usize::from(lab.log("gateway").contains("panicked")));
    Ok((figures.trim_end().to_owned(), lost.iter().all(|&l| l == 0)))
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
