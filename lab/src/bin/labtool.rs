//! `braid-labtool`: the lab's measuring and attacking helpers.
//!
//! ```text
//! braid-labtool list
//! braid-labtool plan NAME
//! braid-labtool check NAME [--commit C] [--seed N] [--out DIR] < RESULT-lines
//! braid-labtool report DIR
//! braid-labtool back NAME --start EPOCH [--applied FILE] < edge-log
//! braid-labtool ping FILE
//! braid-labtool owd-limit --link-rtt-ms MS,MS,...
//! braid-labtool stream --sent N --start EPOCH [--windows NAME:FROM:TO,...] [--marks NAME=EPOCH,...]
//!                      [--owd-limit-ms MS] < tshark-lines
//! braid-labtool feed --listen ADDR --secs S
//! braid-labtool samples --start EPOCH < "UNIX_SECONDS VALUE" lines
//! braid-labtool ts FILE
//! braid-labtool unhex < tshark-lines > FILE
//! braid-labtool flood --to ADDR --pps N --secs S [--seed N]
//! braid-labtool replay --to ADDR [--from ADDR] --pps N --secs S FILE
//! braid-labtool initiations --to ADDR --gateway-key BASE64 --pps N --secs S [--seed N]
//! braid-labtool forge --to ADDR [--from ADDR] --header HEX --gateway-key BASE64 --pps N --secs S [--seed N]
//! braid-labtool fleet --out DIR [--seed N]
//! braid-labtool rig-keys --count N [--seed N]
//! braid-labtool rigs --gateway ADDR --gateway-key BASE64 --count N [--links L] --mbps R --secs S
//!                    --ingest IP --ingest-mac MAC --port P [--seed N]
//! braid-labtool sink --listen ADDR --count N --secs S
//! braid-labtool many-rigs --out DIR [--count N] [--mbps R] [--secs S] [--workers W] [--name SCENARIO]
//!                          [--up-to M [--step K] | --rounds R]
//! ```
//! * `list` names each scenario with its description; `plan` prints a scenario as shell
//!   assignments for `scripts/lab.sh` (mode, budget, links, stream, timeline, windows).
//! * `check` reads a scenario run's `RESULT` lines, adds the derived figures, tests the
//!   scenario's bounds and goals, prints a verdict in words for each, writes a JSON record for
//!   each to `--out`, and fails if a bound failed.
//! * `feed` records the edge's bitrate feed (`UNIX_SECONDS BPS` per datagram); `samples`
//!   turns such lines into `SECONDS:VALUE,...` from the stream's start (`feed_samples`,
//!   `byte_samples`).
//! * `back` reads the edge's log and prints, for each of the scenario's windows that names an
//!   uplink, how long after the window's end that uplink was `up` again (`back_after_W_ms`).
//! * `ping` prints the nearest-rank 50th and 99th percentiles of a ping output's round trips
//!   (`P50 P99`, `- -` without any); `owd-limit` the one-way delay past which a datagram added
//!   more than `bond-latency`'s bound, from each link's round trip alone.
//! * `report` renders the results page (markdown, on stdout) from a directory of JSON records.
//! * `stream` reads `EPOCH HEX` lines (tshark's `frame.time_epoch` and `udp.payload` of an
//!   iperf3 UDP stream captured on the ingest side) and prints loss, duplicates, reordering and
//!   the longest stall, overall and in each window (`gap_after_NAME_ms`, and by send time
//!   `sent_after_NAME` and `lost_after_NAME`), and the one-way latency (capture time minus the send time in iperf3's header; the
//!   sender and the capture share this machine's clocks). iperf3 3.12 stamps `CLOCK_MONOTONIC`:
//!   a header time more than a day from its capture time is moved onto the wall clock by the
//!   offset between the two clocks, read now (run it on the machine, and in the boot, that
//!   captured). With `--owd-limit-ms` it also prints the share of first copies that took
//!   longer (`owd_over_limit_pct`); with `--marks`, for each mark, how long after it the first
//!   datagram came (`resumed_after_NAME_ms`).
//! * `ts` checks an MPEG-TS recording's continuity counters; `unhex` turns tshark's hex
//!   `udp.payload` lines back into the bytes (a TS recording of what crossed the wire).
//! * `flood` sends random garbage datagrams; `replay` sends the payloads of a file of hex lines
//!   (captured tunnel packets) over and over; `initiations` sends fresh handshake initiations
//!   from random keys, correctly addressed (mac1 verifies) but not on any allowlist; `forge`
//!   sends sealed control packets that place the edge on the gateway `--gateway-key`, under the
//!   session index, link and packet numbers of a captured gateway packet (`--header`, its
//!   hex), sealed with a random key: what an attacker who sees the tunnel can write. `--from`
//!   sends from that address (the attacker's host holds it: a spoofed source).
//! * `fleet` runs the `fleet` scenario (it builds its own namespaces: three etcd members, three
//!   gateways, six rigs; see [`fleet`]) and prints its RESULT line, with its logs in `--out`.
//! * `rigs` runs many edges in one process, each with its own key (`rig-keys` prints them for
//!   the gateway's allowlist), sockets and real handshake, streaming at a set bitrate; `sink`
//!   counts what each delivered; `many-rigs` runs the `many-rigs` scenario with them (50 rigs
//!   at 2 Mbit/s for 15 s by default; see [`many_rigs`]); with `--up-to`, runs `--count` rigs,
//!   then `--step` (50) more at a time up to `--up-to`, until one run loses a frame, and prints
//!   the most rigs carried with nothing lost. `--workers` sets the gateway's `workers:` (1), and
//!   `--name` the scenario its RESULT line names (`many-rigs-workers` with two); with
//!   `--rounds`, runs one worker and `--workers` in turns, that many times each, and prints
//!   what each delivered and their ratio (`workers-gain`).
//!
//! Every sending loop stops after `--secs`, whatever happens.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use braid_engine::crypto::{Aead, Cipher, PathNonce, Protection};
use braid_engine::handshake::{self, CryptoRng, InitPayload, Tai64n};
use braid_engine::keys::{PrivateKey, PublicKey};
use braid_engine::wire::{
    ControlMessage, ControlType, GRE_HEADER_LEN, GrePacket, GreRepr, PathKey, Placement, Protocol,
};
use braid_engine::{LinkId, PacketNumber, SessionIndex};
use braid_lab::analyze::{Arrival, StreamReport, TsReport};
use braid_lab::results::{self, Backend, Record};
use braid_lab::scenario::{self, Figures, Scenario};

#[path = "../../../tests/e2e/mod.rs"]
mod e2e;
#[path = "labtool/fleet.rs"]
mod fleet;
#[path = "labtool/many_rigs.rs"]
mod many_rigs;
#[path = "labtool/rigs.rs"]
mod rigs;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("braid-labtool: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args
        .split_first()
        .ok_or("expected list, plan, check, report, stream, ts, unhex, flood, replay, initiations, forge, fleet, rig-keys, rigs, sink or many-rigs")?;
    let flags = Flags::parse(rest)?;
    match command.as_str() {
        "list" => {
            for s in scenario::ALL {
                println!("{:<20} {}", s.name, s.describe);
            }
            Ok(())
        }
        "plan" => {
            let name = flags.positional.first().ok_or("plan NAME")?;
            print!("{}", find(name)?.plan());
            Ok(())
        }
        "check" => check(&flags),
        "back" => back(&flags),
        "ping" => {
            let path = flags.positional.first().ok_or("ping FILE")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            match scenario::ping_percentiles(&text) {
                Some((p50, p99)) => println!("{p50:.1} {p99:.1}"),
                None => println!("- -"),
            }
            Ok(())
        }
        "owd-limit" => {
            let list = flags.text("link-rtt-ms").ok_or("--link-rtt-ms MS,MS,...")?;
            let rtts: Vec<f64> = list.split(',').filter_map(|v| v.parse().ok()).collect();
            // Without every link's delay there is no bound, and no limit.
            if rtts.len() == list.split(',').count()
                && let Some(bound) = scenario::owd_bound(&rtts)
            {
                println!("{:.1}", bound.limit_ms());
            }
            Ok(())
        }
        "report" => {
            let dir = flags.positional.first().ok_or("report DIR")?;
            print!("{}", results::report(&results::read_dir(std::path::Path::new(dir))?));
            Ok(())
        }
        "stream" => stream(&flags),
        "ts" => {
            let path = flags.positional.first().ok_or("ts FILE")?;
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            println!("{}", TsReport::check(&bytes));
            Ok(())
        }
        "feed" => feed(&flags),
        "samples" => {
            let start = flags.text("start").and_then(|t| t.parse::<f64>().ok()).ok_or("--start UNIX_SECONDS")?;
            let mut input = String::new();
            std::io::stdin().lock().read_to_string(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
            let samples: Vec<String> = input
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter_map(|(t, value)| Some((t.parse::<f64>().ok()? - start, value.trim())))
                .filter(|(_, value)| !value.is_empty() && !value.contains([' ', ',']))
                .map(|(t, value)| format!("{t:.3}:{value}"))
                .collect();
            println!("{}", samples.join(","));
            Ok(())
        }
        "unhex" => {
            let mut input = String::new();
            std::io::stdin().lock().read_to_string(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
            let bytes: Vec<u8> = input.lines().filter_map(hex).flatten().collect();
            std::io::stdout().lock().write_all(&bytes).map_err(|e| format!("writing stdout: {e}"))
        }
        "flood" => {
            let mut rng = CryptoRng::new(seed_bytes(flags.number("seed").unwrap_or(1)));
            send_for(&flags, |buf| {
                let len = 1 + (rng.next_u64() % 1400) as usize;
                buf.resize(len, 0);
                rng.fill(buf);
            })
        }
        "replay" => {
            let path = flags.positional.first().ok_or("replay FILE")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            let packets: Vec<Vec<u8>> = text.lines().filter_map(hex).filter(|p| !p.is_empty()).collect();
            if packets.is_empty() {
                return Err(format!("{path}: no packets to replay"));
            }
            let mut next = packets.iter().cycle();
            send_for(&flags, |buf| {
                buf.clear();
                buf.extend_from_slice(next.next().map_or(&[][..], Vec::as_slice));
            })
        }
        "initiations" => {
            let key = flags.text("gateway-key").ok_or("--gateway-key BASE64")?;
            let gateway = PublicKey::from_base64(key).map_err(|e| format!("--gateway-key: {e}"))?;
            let mut rng = CryptoRng::new(seed_bytes(flags.number("seed").unwrap_or(1)));
            let mut body = Vec::new();
            let mut nanos = 1u64 << 60;
            send_for(&flags, |buf| {
                let stranger = PrivateKey::generate(&mut rng);
                nanos += 1;
                let payload = InitPayload {
                    timestamp: Tai64n::from_unix_nanos(nanos),
                    cipher: Cipher::ChaCha20Poly1305,
                    epoch: rng.next_u64(),
                    next_frame_seq: 0,
                };
                let index = rng.session_index();
                buf.clear();
                if handshake::initiate(&stranger, &gateway, None, &mut rng, index, &payload, &mut body).is_ok() {
                    buf.resize(GRE_HEADER_LEN, 0);
                    let repr = GreRepr {
                        protocol: Protocol::Control,
                        key: PathKey { index: SessionIndex::default(), link: LinkId::new(0) },
                        sequence: 0,
                    };
                    if repr.emit(buf).is_ok() {
                        buf.extend_from_slice(&body);
                    }
                }
            })
        }
        "forge" => forge(&flags),
        "fleet" => {
            let out = flags.text("out").ok_or("--out DIR")?;
            fleet::run(std::path::Path::new(out), flags.number("seed").unwrap_or(1))
        }
        "rig-keys" => rigs::print_keys(&flags),
        "rigs" => rigs::run(&flags),
        "sink" => rigs::sink(&flags),
        "many-rigs" => {
            let out = flags.text("out").ok_or("--out DIR")?;
            let count = flags.number("count").unwrap_or(50).clamp(1, 1000) as usize;
            let mbps = flags.text("mbps").unwrap_or("2");
            let secs = flags.number("secs").unwrap_or(15);
            let workers = flags.number("workers").unwrap_or(1).clamp(1, 64) as usize;
            let name = flags.text("name").unwrap_or("many-rigs");
            if let Some(rounds) = flags.number("rounds") {
                let rounds = rounds.clamp(1, 20) as usize;
                return many_rigs::compare(name, std::path::Path::new(out), count, (mbps, secs), workers, rounds);
            }
            match flags.number("up-to") {
                None => many_rigs::run(name, std::path::Path::new(out), count, mbps, secs, workers),
                Some(up_to) => {
                    let step = flags.number("step").unwrap_or(50).clamp(1, 1000) as usize;
                    let up_to = up_to.clamp(1, 1000) as usize;
                    many_rigs::most(std::path::Path::new(out), (count, step, up_to), mbps, secs, workers)
                }
            }
        }
        other => Err(format!(
            "no command {other:?}; expected list, plan, check, report, stream, ts, unhex, flood, replay, initiations, forge, fleet, rig-keys, rigs, sink or many-rigs"
        )),
    }
}

fn find(name: &str) -> Result<&'static Scenario, String> {
    scenario::find(name).ok_or_else(|| format!("no scenario {name:?} (braid-labtool list names them)"))
}

/// Tests a scenario's bounds on the RESULT lines on stdin, prints the verdicts and writes the
/// records.
fn check(flags: &Flags) -> Result<(), String> {
    let scenario = find(flags.positional.first().ok_or("check NAME")?)?;
    let mut input = String::new();
    std::io::stdin().lock().read_to_string(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    let lines: Vec<&str> = input.lines().filter(|l| l.starts_with("RESULT ")).collect();
    if lines.is_empty() {
        println!("FAIL: {}: the run printed no RESULT line", scenario.name);
        return Err("no RESULT line".to_owned());
    }
    // The one clock read of `check`: the record's date.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let commit = flags.text("commit").unwrap_or("unknown");
    let seed = flags.number("seed").unwrap_or(1);
    let mut failed = false;
    for line in lines {
        let figures = Figures::from_result_line(line);
        let name = figures.text("scenario").unwrap_or(scenario.name).to_owned();
        let record = Record::new(scenario, &name, Backend::Netns, vec![(seed, figures)], commit, now);
        for verdict in record.verdicts() {
            println!("{verdict}");
        }
        if let Some(dir) = flags.text("out") {
            let path = record.write(std::path::Path::new(dir)).map_err(|e| format!("{dir}: {e}"))?;
            println!("recorded in {}", path.display());
        }
        failed |= !record.pass();
    }
    if failed { Err(format!("{}: a bound failed", scenario.name)) } else { Ok(()) }
}

/// Prints `back_after_W_ms` (and `down_after_W_ms`) for the scenario's windows with an uplink,
/// from the edge's log lines `TIMESTAMP INFO ... link state ... link="NAME" from="..."
/// to="STATE"` on stdin. Each window is measured from when its impairment took hold, where
/// `--applied FILE` (lines `OFFSET EPOCH`) says so, else from its time on the timeline.
fn back(flags: &Flags) -> Result<(), String> {
    let scenario = find(flags.positional.first().ok_or("back NAME")?)?;
    let start: f64 = flags.text("start").ok_or("--start EPOCH")?.parse().map_err(|_| "--start: expected seconds")?;
    let applied = match flags.text("applied") {
        Some(path) => applied_times(path)?,
        None => Vec::new(),
    };
    let mut log = String::new();
    std::io::stdin().lock().read_to_string(&mut log).map_err(|e| format!("reading stdin: {e}"))?;
    let mut words = Vec::new();
    for w in scenario.windows {
        let Some(link) = w.link else { continue };
        let name = scenario::UPLINKS.get(usize::from(link)).ok_or("a window's uplink is out of range")?;
        let field = format!("link=\"{name}\"");
        let changes: Vec<(f64, &str)> = log
            .lines()
            .filter(|l| l.contains("link state") && l.contains(&field))
            .filter_map(|l| {
                let at = utc_seconds(l.split_whitespace().next()?)?;
                let to = l.split("to=\"").nth(1)?.split('"').next()?;
                Some((at - start, to))
            })
            .collect();
        let (from, to) = (scenario::took_hold(&applied, start, w.from), scenario::took_hold(&applied, start, w.to));
        let back = scenario::back_after(&changes, to, f64::from(scenario.secs()) + 1.0);
        words.push(format!("back_after_{}_ms={back:.0}", w.name));
        if let Some(down) = scenario::down_after(&changes, from, to) {
            words.push(format!("down_after_{}_ms={down:.0}", w.name));
        }
    }
    println!("{}", words.join(" "));
    Ok(())
}

/// The lab's record of when each impairment change took hold: `OFFSET EPOCH` lines (none if the
/// file is absent: the timeline changed no impairment).
fn applied_times(path: &str) -> Result<Vec<(f64, f64)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace().map(str::parse::<f64>);
            match (words.next(), words.next(), words.next()) {
                (Some(Ok(offset)), Some(Ok(at)), None) => Ok((offset, at)),
                _ => Err(format!("{path}: expected `OFFSET EPOCH`, got {l:?}")),
            }
        })
        .collect()
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as tracing writes it
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
fn utc_seconds(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (d.next()?.parse::<i64>().ok()?, d.next()?.parse::<u32>().ok()?, d.next()?.parse::<u32>().ok()?);
    let mut t = time.split(':');
    let (h, min, sec) =
        (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    let days = braid_engine::calendar::days_from_civil(y, m, day);
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

fn stream(flags: &Flags) -> Result<(), String> {
    let sent = flags.number("sent").ok_or("--sent N")?;
    let start: f64 = flags.text("start").ok_or("--start EPOCH")?.parse().map_err(|_| "--start: expected seconds")?;
    let mut names = Vec::new();
    let mut windows = Vec::new();
    for w in flags.text("windows").unwrap_or("").split(',').filter(|w| !w.is_empty()) {
        let parts: Vec<&str> = w.split(':').collect();
        let [name, from, to] = parts[..] else { return Err(format!("--windows: {w:?} is not NAME:FROM:TO")) };
        let secs = |s: &str| s.parse::<f64>().map_err(|_| format!("--windows: {s:?} is not seconds"));
        names.push(name.to_owned());
        windows.push((secs(from)?, secs(to)?));
    }
    let mut input = String::new();
    std::io::stdin().lock().read_to_string(&mut input).map_err(|e| format!("reading stdin: {e}"))?;
    let mut arrivals: Vec<Arrival> = input.lines().filter_map(Arrival::parse).collect();
    let on_wall_clock = arrivals.first().is_none_or(|a| (a.at - a.sent).abs() < 86_400.0);
    if !on_wall_clock {
        let offset = wall_minus_monotonic();
        arrivals.iter_mut().for_each(|a| *a = a.with_clock_offset(offset));
    }
    let report = StreamReport::new(sent, start, &windows, &arrivals);
    let mut line = report.to_string();
    // From each mark (an instant on the wall clock, such as a restarted gateway's first log
    // line) to the first datagram captured after it.
    for mark in flags.text("marks").unwrap_or("").split(',').filter(|m| !m.is_empty()) {
        let Some((name, at)) = mark.split_once('=') else { return Err(format!("--marks: {mark:?} is not NAME=EPOCH")) };
        let at: f64 = at.parse().map_err(|_| format!("--marks: {at:?} is not seconds"))?;
        let resumed = arrivals.iter().map(|a| a.at).filter(|&t| t >= at).reduce(f64::min);
        let resumed = resumed.map_or_else(|| "-".to_owned(), |t| format!("{:.0}", (t - at) * 1000.0));
        line += &format!(" resumed_after_{name}_ms={resumed}");
    }
    for (i, name) in names.iter().enumerate() {
        line += &format!(
            " gap_after_{name}_ms={:.0} sent_after_{name}={} lost_after_{name}={}",
            report.window_gaps_ms[i], report.window_sent[i], report.window_lost[i]
        );
    }
    if let Some(limit) = flags.text("owd-limit-ms").filter(|l| !l.is_empty()) {
        let limit: f64 = limit.parse().map_err(|_| "--owd-limit-ms: expected milliseconds")?;
        let share = report.share_over(limit).map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s * 100.0));
        line += &format!(" owd_over_limit_pct={share}");
    }
    println!("{line}");
    Ok(())
}

/// `CLOCK_REALTIME` minus `CLOCK_MONOTONIC`, in seconds: the wall clock read between two reads
/// of the monotonic one, the closest of a few tries.
fn wall_minus_monotonic() -> f64 {
    use rustix::time::{ClockId, clock_gettime};
    let secs = |t: rustix::time::Timespec| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
    let mut best = (f64::INFINITY, 0.0);
    for _ in 0..5 {
        let before = secs(clock_gettime(ClockId::Monotonic));
        let wall = secs(clock_gettime(ClockId::Realtime));
        let after = secs(clock_gettime(ClockId::Monotonic));
        if after - before < best.0 {
            best = (after - before, wall - (before + after) / 2.0);
        }
    }
    best.1
}

/// Sends datagrams built by `fill` to `--to` at `--pps` for `--secs`, then prints the count.
/// Listens on `--listen` for `--secs` seconds for the edge's bitrate feed and prints each
/// datagram as `UNIX_SECONDS SAFE_BITRATE_BPS`.
fn feed(flags: &Flags) -> Result<(), String> {
    let listen: SocketAddr = flags.text("listen").ok_or("--listen ADDR")?.parse().map_err(|_| "--listen: IP:PORT")?;
    let secs = flags.number("secs").ok_or("--secs S")?;
    let socket = UdpSocket::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    #[allow(clippy::disallowed_methods)]
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 512];
    let mut out = std::io::stdout().lock();
    #[allow(clippy::disallowed_methods)]
    while Instant::now() < end {
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&buf[..n]) else { continue };
        if let (Some(ms), Some(bps)) = (value["time_unix_ms"].as_u64(), value["safe_bitrate_bps"].as_u64()) {
            writeln!(out, "{:.3} {bps}", ms as f64 / 1e3).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn send_for(flags: &Flags, mut fill: impl FnMut(&mut Vec<u8>)) -> Result<(), String> {
    let to: SocketAddr = flags.text("to").ok_or("--to ADDR")?.parse().map_err(|_| "--to: expected IP:PORT")?;
    let pps = flags.number("pps").ok_or("--pps N")?.max(1);
    let secs = flags.number("secs").ok_or("--secs S")?;
    let bind = match flags.text("from") {
        Some(from) => from.parse().map_err(|_| "--from: expected IP:PORT")?,
        None if to.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    let interval = Duration::from_secs_f64(1.0 / pps as f64);
    // The lab's only clock user outside the daemons: this is a load generator, not the engine.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut buf, mut sent, mut failed) = (Vec::with_capacity(1500), 0u64, 0u64);
    let mut next = start;
    #[allow(clippy::disallowed_methods)]
    while Instant::now() < end {
        fill(&mut buf);
        if socket.send_to(&buf, to).is_ok() {
            sent += 1
        } else {
            failed += 1
        }
        next += interval;
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now;
        }
    }
    println!("sent={sent} failed={failed}");
    Ok(())
}

/// Sealed control packets that place the edge on `--gateway-key`, under a captured packet's
/// session index and link, with packet numbers counting up from past its own, sealed with a
/// random key.
fn forge(flags: &Flags) -> Result<(), String> {
    let captured = flags.text("header").and_then(hex).ok_or("--header HEX (a captured tunnel packet)")?;
    let packet = GrePacket::new_checked(&captured[..]).map_err(|_| "--header: not a tunnel packet")?;
    let header = GreRepr::parse(&packet).map_err(|_| "--header: not a tunnel packet")?;
    let key = flags.text("gateway-key").ok_or("--gateway-key BASE64")?;
    let gateway = PublicKey::from_base64(key).map_err(|e| format!("--gateway-key: {e}"))?;
    let mut rng = CryptoRng::new(seed_bytes(flags.number("seed").unwrap_or(1)));
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    let aead = Aead::new(Cipher::ChaCha20Poly1305, &secret, &secret).map_err(|e| format!("a random key: {e}"))?;
    let placement = ControlMessage::Placement(Placement { gateway: gateway.0, standby: None });
    let mut sequence = header.sequence;
    send_for(flags, |buf| {
        sequence = sequence.wrapping_add(1 + (rng.next_u64() % 4) as u32);
        let repr = GreRepr { protocol: Protocol::Control, key: header.key, sequence };
        buf.clear();
        buf.resize(GRE_HEADER_LEN, 0);
        if repr.emit(buf).is_err() {
            return;
        }
        buf.push(ControlType::Sealed.to_u8());
        let aad_len = buf.len();
        buf.extend_from_slice(&rng.next_u64().to_be_bytes());
        placement.emit(buf);
        let nonce = PathNonce { link: header.key.link, packet_number: PacketNumber(u64::from(sequence)) };
        if aead.seal(nonce, buf, aad_len).is_err() {
            buf.clear();
        }
    })
}

fn hex(line: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = line.trim().bytes().filter(|b| *b != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::utc_seconds;

    #[test]
    fn log_times_read_as_unix_seconds() {
        assert_eq!(utc_seconds("1970-01-01T00:00:00.5Z"), Some(0.5));
        assert_eq!(utc_seconds("2026-12-04T00:00:00Z"), Some(1_796_342_400.0));
        assert_eq!(utc_seconds("2000-02-29T01:02:03.25Z"), Some(951_786_123.25));
        assert_eq!(utc_seconds("2026-12-04 17:00"), None);
    }
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out
}

#[derive(Debug, Default)]
struct Flags {
    named: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut flags = Self::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.strip_prefix("--") {
                Some(name) => {
                    let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    flags.named.push((name.to_string(), value.clone()));
                }
                None => flags.positional.push(arg.clone()),
            }
        }
        Ok(flags)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.named.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.text(name)?.parse().ok()
    }
}
