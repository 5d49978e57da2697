//! Results as JSON files, and the results page rendered from them.
//!
//! Every lab run (`braid-labtool check`) and every simulation of a scenario (the `scenarios`
//! test) writes one [`Record`]: the scenario, its parameters, each run's figures, the bounds and
//! goals they were held to with the outcome, pass or fail, the commit and the date.
//! `braid-labtool report DIR` renders `docs/results.md` from a directory of them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::scenario::{Checked, Figures, Outcome, Scenario, Stream};

/// Where the figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The netns lab: real daemons, clients and kernels.
    Netns,
    /// The seeded virtual-time simulator.
    Sim,
}

impl Backend {
    /// Its name in files and tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Netns => "netns",
            Self::Sim => "sim",
        }
    }

    /// Whether every bound's figure must be measured (the lab measures them all; the simulator
    /// only those it models).
    pub const fn measures_every_figure(self) -> bool {
        matches!(self, Self::Netns)
    }
}

/// One run's figures and their check.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The simulator's seed (the lab's impairment seed).
    pub seed: u64,
    /// The figures.
    pub figures: Figures,
    /// The bounds and goals, tested.
    pub checked: Checked,
}

/// A scenario's result in one backend.
#[derive(Debug, Clone)]
pub struct Record {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// What this record covers when a scenario prints several results (`ffmpeg-redundant/srt`),
    /// else the scenario's name.
    pub name: String,
    /// Where from.
    pub backend: Backend,
    /// The runs (one per seed).
    pub runs: Vec<Run>,
    /// The commit measured (`git describe`), or `unknown`.
    pub commit: String,
    /// Seconds since the Unix epoch, when recorded.
    pub unix_secs: u64,
}

impl Record {
    /// A record of one run per figure set.
    pub fn new(
        scenario: &'static Scenario,
        name: &str,
        backend: Backend,
        runs: Vec<(u64, Figures)>,
        commit: &str,
        unix_secs: u64,
    ) -> Self {
        let runs = runs
            .into_iter()
            .map(|(seed, mut figures)| {
                figures.derive(scenario);
                let checked = scenario.check(&figures);
                Run { seed, figures, checked }
            })
            .collect();
        Self { scenario, name: name.to_owned(), backend, runs, commit: commit.to_owned(), unix_secs }
    }

    /// Every run held every bound.
    pub fn pass(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| r.checked.pass(self.backend.measures_every_figure()))
    }

    /// One verdict line per run.
    pub fn verdicts(&self) -> Vec<String> {
        let every = self.backend.measures_every_figure();
        self.runs
            .iter()
            .map(|r| {
                let reported: Vec<String> = self
                    .scenario
                    .reported
                    .iter()
                    .map(|f| format!("{f}={}", r.figures.text(f).unwrap_or("-")))
                    .collect();
                let reported =
                    if reported.is_empty() { String::new() } else { format!(" | reported: {}", reported.join(" ")) };
                format!(
                    "{} [{} seed {}] {}{reported}",
                    self.name,
                    self.backend.as_str(),
                    r.seed,
                    r.checked.verdict(every)
                )
            })
            .collect()
    }

    /// The record as JSON.
    pub fn to_json(&self) -> Value {
        let s = self.scenario;
        let outcomes = |o: &[Outcome]| -> Value {
            o.iter()
                .map(|o| json!({ "bound": o.bound.to_string(), "figure": o.bound.figure, "value": o.value, "pass": o.pass }))
                .collect()
        };
        let stream = match s.stream {
            Stream::Udp { mbps, secs } => format!("UDP {mbps} Mbit/s for {secs} s"),
            Stream::Custom => "its own measurement".to_owned(),
        };
        json!({
            "scenario": s.name,
            "name": self.name,
            "describe": s.describe,
            "backend": self.backend.as_str(),
            "parameters": {
                "mode": s.mode.as_str(),
                "budget_ms": s.budget_ms,
                "links": s.links,
                "stream": stream,
                "timeline": s.timeline.iter().map(|(t, a)| format!("{t} s: {}", a.verb())).collect::<Vec<_>>(),
            },
            "runs": self.runs.iter().map(|r| json!({
                "seed": r.seed,
                "figures": r.figures.0,
                "bounds": outcomes(&r.checked.bounds),
                "goals": outcomes(&r.checked.goals),
                "pass": r.checked.pass(self.backend.measures_every_figure()),
            })).collect::<Vec<_>>(),
            "pass": self.pass(),
            "known_failure": if self.backend == Backend::Sim { s.fails_in_simulation } else { None },
            "commit": self.commit,
            "date": utc_date(self.unix_secs),
        })
    }

    /// Writes the record as `DIR/NAME.BACKEND.json` (a `/` in the name becomes `-`).
    ///
    /// # Errors
    /// The directory cannot be made or the file written.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.{}.json", self.name.replace('/', "-"), self.backend.as_str()));
        let mut text = serde_json::to_string_pretty(&self.to_json()).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn utc_date(unix_secs: u64) -> String {
    let (year, month, day) = braid_engine::calendar::civil_from_days((unix_secs / 86_400) as i64);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Reads every `*.json` record in a directory, sorted by file name.
///
/// # Errors
/// The directory or a file cannot be read, or a file is not JSON.
pub fn read_dir(dir: &Path) -> Result<Vec<Value>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

const PAGE_HEAD: &str = "# Results

<!-- Generated by `braid-labtool report docs/results > docs/results.md`: edit the scenarios
(lab/src/scenario.rs) or re-run them, not this page. -->

Each scenario is one value in `lab/src/scenario.rs`: the tunnel's mode, the uplinks' profiles,
the stream, a timeline of actions, and the bounds it must hold. The netns lab
(`scripts/lab.sh run NAME`, root) runs it with the real daemons and clients; the seeded simulator
runs those whose stream and actions it models (`cargo test --test scenarios`). Each run writes a
JSON record; this page is rendered from the records in `docs/results/`. A bound is asserted by
the tests; a goal is reported only, with the reason it is not met. A figure no bound names is
reported only. See [the lab](lab.md) for how the figures are measured.

To refresh it: run the scenarios with `LAB_RESULTS=docs/results scripts/lab.sh run NAME...` and
`BRAID_RESULTS=docs/results cargo test --release --test scenarios`, then
`cargo run -p braid-lab --bin braid-labtool -- report docs/results > docs/results.md`.
";

/// The results page, from records.
pub fn report(records: &[Value]) -> String {
    let mut out = PAGE_HEAD.to_owned();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "\n## Summary\n\n| result | backend | runs | verdict | commit | date |\n|---|---|---|---|---|---|"
    );
    for r in records {
        let runs = r["runs"].as_array().map_or(0, Vec::len);
        let verdict = match (&r["pass"], &r["known_failure"]) {
            (Value::Bool(true), _) => "pass",
            (_, Value::String(_)) => "**fail** (known)",
            _ => "**fail**",
        };
        let _ = writeln!(
            out,
            "| [{}](#{}) | {} | {runs} | {verdict} | {} | {} |",
            text(&r["name"]),
            anchor(&format!("{} {}", text(&r["name"]), text(&r["backend"]))),
            text(&r["backend"]),
            text(&r["commit"]),
            text(&r["date"])
        );
    }
    for r in records {
        let p = &r["parameters"];
        let _ = writeln!(out, "\n## {} ({})\n\n{}.\n", text(&r["name"]), text(&r["backend"]), text(&r["describe"]));
        if let Value::String(why) = &r["known_failure"] {
            let _ = writeln!(out, "**Known to fail here, though the lab holds it:** {why}.\n");
        }
        let links: Vec<String> = p["links"].as_array().into_iter().flatten().map(text).collect();
        let timeline: Vec<String> = p["timeline"].as_array().into_iter().flatten().map(text).collect();
        let _ = writeln!(
            out,
            "Mode `{}`, budget {} ms, {}; links `{}`{}.\n",
            text(&p["mode"]),
            text(&p["budget_ms"]),
            text(&p["stream"]),
            links.join("`, `"),
            if timeline.is_empty() { String::new() } else { format!("; timeline: {}", timeline.join(", ")) }
        );
        let runs = r["runs"].as_array().cloned().unwrap_or_default();
        let seeds: Vec<String> = runs.iter().map(|run| text(&run["seed"])).collect();
        let _ = writeln!(
            out,
            "| bound | {} |\n|---|{}",
            seeds.iter().map(|s| format!("seed {s}")).collect::<Vec<_>>().join(" | "),
            "---|".repeat(seeds.len())
        );
        for (kind, key) in [("", "bounds"), ("goal: ", "goals")] {
            let Some(first) = runs.first() else { break };
            for (i, b) in first[key].as_array().into_iter().flatten().enumerate() {
                let cells: Vec<String> = runs
                    .iter()
                    .map(|run| {
                        let o = &run[key][i];
                        let mark = match o["pass"] {
                            Value::Bool(true) => "✓",
                            Value::Bool(false) => "✗",
                            _ => "not measured",
                        };
                        format!("{} {mark}", text(&o["value"]))
                    })
                    .collect();
                let _ = writeln!(out, "| {kind}{} | {} |", text(&b["bound"]), cells.join(" | "));
            }
        }
        let named: Vec<String> = runs
            .first()
            .map(|run| {
                ["bounds", "goals"]
                    .iter()
                    .flat_map(|k| run[*k].as_array().cloned().unwrap_or_default())
                    .map(|b| text(&b["figure"]))
                    .collect()
            })
            .unwrap_or_default();
        let Some(Value::Object(figures)) = runs.first().map(|run| &run["figures"]) else { continue };
        let reported: Vec<String> = figures
            .iter()
            .filter(|(k, _)| !named.contains(k) && !matches!(k.as_str(), "scenario" | "mode" | "seed"))
            .map(|(k, v)| format!("`{k}` {}", text(v)))
            .collect();
        if !reported.is_empty() {
            let _ = writeln!(
                out,
                "\nReported only (seed {}): {}.",
                seeds.first().map_or("-", String::as_str),
                reported.join(", ")
            );
        }
    }
    out
}

/// The anchor GitHub and mdBook give a heading.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::find;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_796_342_400), "2026-12-04");
    }

    #[test]
    fn a_record_holds_its_bounds_and_renders_on_the_page() {
        let s = find("redundant-cuts").expect("exists");
        let good = Figures::from_result_line("RESULT sent=15000 lost=0 dup=0 reordered=0 max_gap_ms=12");
        let bad = Figures::from_result_line("RESULT sent=15000 lost=3 dup=0 reordered=0 max_gap_ms=12");
        let record = Record::new(s, s.name, Backend::Netns, vec![(1, good.clone())], "abc", 1_796_342_400);
        assert!(record.pass(), "{:?}", record.verdicts());
        assert!(!Record::new(s, s.name, Backend::Netns, vec![(1, good), (2, bad)], "abc", 0).pass());
        let json = record.to_json();
        assert_eq!(json["pass"], Value::Bool(true));
        assert_eq!(json["date"], "2026-12-04");
        assert_eq!(json["runs"][0]["figures"]["loss_pct"], "0.0000");
        let page = report(&[json]);
        assert!(
            page.contains("| [redundant-cuts](#redundant-cuts-netns) | netns | 1 | pass | abc | 2026-12-04 |"),
            "{page}"
        );
        assert!(page.contains("| lost = 0 | 0 ✓ |"), "{page}");
        assert!(page.contains("Reported only (seed 1): `loss_pct` 0.0000, `max_gap_ms` 12."), "{page}");
    }
}
