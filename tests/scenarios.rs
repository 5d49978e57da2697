//! Every lab scenario the simulator can run (`lab/src/scenario.rs`), run there over seeds and
//! held to the same bounds as in the netns lab, on the figures the simulator measures. Each
//! writes a JSON record (to `BRAID_RESULTS`, or `target/results`); the ones it cannot run are
//! printed with the reason.

#![allow(clippy::panic)]

use std::path::PathBuf;

use braid_lab::results::{Backend, Record};
use braid_lab::scenario::ALL;
use braid_lab::sim::simulate;

/// Seeds per scenario: each is a different draw of every link's jitter and loss.
const SEEDS: u64 = 3;

fn results_dir() -> PathBuf {
    std::env::var_os("BRAID_RESULTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/results"), PathBuf::from)
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[test]
fn every_scenario_the_simulator_models_holds_its_bounds_in_simulation() {
    let (commit, now, dir) = (commit(), unix_now(), results_dir());
    let (mut simulated, mut failed) = (0, Vec::new());
    for scenario in ALL {
        if let Some(why) = scenario.unsimulated() {
            println!("{}: not simulated: {why}", scenario.name);
            continue;
        }
        let runs = (1..=SEEDS)
            .map(|seed| simulate(scenario, seed).map(|f| (seed, f)))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        let record = Record::new(scenario, scenario.name, Backend::Sim, runs, &commit, now);
        for line in record.verdicts() {
            println!("{line}");
        }
        let path = record.write(&dir).unwrap_or_else(|e| panic!("writing {}'s record: {e}", scenario.name));
        println!("  recorded in {}", path.display());
        simulated += 1;
        if !record.pass() {
            failed.push(scenario.name);
        }
    }
    assert!(simulated >= 8, "only {simulated} scenarios simulated");
    let known: Vec<&str> = ALL.iter().filter(|s| s.fails_in_simulation.is_some()).map(|s| s.name).collect();
    for s in ALL {
        if let Some(why) = s.fails_in_simulation {
            println!("known to fail in simulation: {}: {why}", s.name);
        }
    }
    assert_eq!(
        failed, known,
        "the scenarios that fail their bounds in simulation, against those whose `fails_in_simulation` says so"
    );
}

#[test]
fn a_simulated_scenario_is_the_same_for_the_same_seed() {
    let scenario = braid_lab::scenario::find("flap").expect("the flap scenario");
    let a = simulate(scenario, 7).expect("simulates");
    let b = simulate(scenario, 7).expect("simulates");
    assert_eq!(a, b);
    assert!(a.number("flap_packets").is_some_and(|n| n > 0.0), "{a:?}");
}

#[test]
fn the_results_page_is_rendered_from_the_committed_records() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let records = braid_lab::results::read_dir(&root.join("docs/results")).unwrap_or_else(|e| panic!("{e}"));
    let page = braid_lab::results::report(&records);
    let committed = std::fs::read_to_string(root.join("docs/results.md")).unwrap_or_default();
    assert!(
        page == committed,
        "docs/results.md is not what docs/results/ renders: run \
         `cargo run -p braid-lab --bin braid-labtool -- report docs/results > docs/results.md`"
    );
    let names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
    for r in &records {
        let scenario = r["scenario"].as_str().unwrap_or_default();
        assert!(names.contains(&scenario), "a record of {scenario}, which is no scenario");
    }
}
