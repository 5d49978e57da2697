//! `check-config` run as an operator would, shared by `edge/tests/check_config.rs` and
//! `gateway/tests/check_config.rs` (the gateway's includes this file by path): one good config per
//! binary, and bad ones made from it by one replacement each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use braid::keys::PrivateKey;

/// A public key for configs to pin or allow (any valid one will do).
pub(crate) const PEER_KEY: &str = "Q/Z88tzFtLwu2PasXmQFaLD+cbsVj/eF/+y1aVAZ5gw=";

/// A binary and the configs it is tested with.
#[derive(Debug)]
pub(crate) struct Binary {
    /// Its path (`env!("CARGO_BIN_EXE_…")`).
    pub(crate) exe: &'static str,
    /// A config it accepts; its private key is `key.key` (line 1) next to it, and `{peer}` stands
    /// for [`PEER_KEY`].
    pub(crate) good: &'static str,
    /// What its summary of `good` contains.
    pub(crate) summary: &'static str,
    /// Configs it refuses.
    pub(crate) bad: &'static [Bad],
}

/// A bad config: the good one with `from` replaced by `to`, and where the error must point.
#[derive(Debug)]
pub(crate) struct Bad {
    /// What is wrong, for failure messages.
    pub(crate) what: &'static str,
    /// The text to replace in the good config.
    pub(crate) from: &'static str,
    /// Its replacement.
    pub(crate) to: &'static str,
    /// The line the error names.
    pub(crate) line: usize,
    /// The key the error names.
    pub(crate) key: &'static str,
    /// A part of the error's message.
    pub(crate) message: &'static str,
}

impl Binary {
    /// Runs `check-config` on the good config.
    pub(crate) fn accepts_its_good_config(&self) {
        let scratch = Scratch::new(self, "good");
        let out = scratch.check(self, &self.good_config());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(self.summary), "{stdout}\nshould contain: {}", self.summary);
    }

    /// Runs `check-config` on each bad config, and on the good one with a key others can read.
    pub(crate) fn refuses_each_bad_config_naming_file_line_and_key(&self) {
        let scratch = Scratch::new(self, "bad");
        for bad in self.bad {
            assert!(self.good.contains(bad.from), "{}: {:?} is not in the good config", bad.what, bad.from);
            let out = scratch.check(self, &self.good_config().replace(bad.from, bad.to));
            assert_refused(&out, &scratch.config(), bad.line, bad.key, bad.message, bad.what);
        }
        let key = scratch.dir.join("key.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = scratch.check(self, &self.good_config());
        let fix = format!("run `chmod 600 {}`", key.display());
        assert_refused(&out, &scratch.config(), 1, "private_key_file", &fix, "a world-readable private key");
    }

    /// Runs `check-config` on the good config with `from` replaced by `to`, naming interfaces
    /// this machine does not have: it passes, and warns of each.
    pub(crate) fn warns_of_missing_interfaces(&self, from: &str, to: &str, warnings: &[&str]) {
        let scratch = Scratch::new(self, "missing");
        assert!(self.good.contains(from), "{from:?} is not in the good config");
        let out = scratch.check(self, &self.good_config().replace(from, to));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        for warning in warnings {
            assert!(stderr.contains(warning), "stderr should warn {warning:?}:\n{stderr}");
        }
    }

    fn good_config(&self) -> String {
        self.good.replace("{peer}", PEER_KEY)
    }

    /// Runs `check-config` on a shipped example (`packaging/examples/NAME`) as an operator
    /// would after creating only its key file: here `/etc/braid/` stands for a scratch
    /// directory holding `key_file`. It passes, naming no bridge the operator must create.
    pub(crate) fn accepts_the_example_as_shipped(&self, name: &str, key_file: &str) {
        let scratch = Scratch::new(self, "example");
        let text = std::fs::read_to_string(repo().join("packaging/examples").join(name)).expect("the example");
        PrivateKey::from_bytes([2; 32]).write_file(&scratch.dir.join(key_file)).expect("key file");
        let out = scratch.check(self, &text.replace("/etc/braid/", &format!("{}/", scratch.dir.display())));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} as shipped: {stderr}");
        assert!(!stderr.contains("bridge"), "{name} as shipped names a bridge to create: {stderr}");
    }

    /// Checks that every key of the config reference's table headed `heading` (docs/
    /// configuration.md) is in the example `name`, set or commented out.
    pub(crate) fn example_has_every_reference_key(&self, name: &str, heading: &str) {
        let text = std::fs::read_to_string(repo().join("packaging/examples").join(name)).expect("the example");
        let keys = reference_keys(heading);
        assert!(keys.len() >= 10, "the table {heading:?} names only {keys:?}");
        let missing: Vec<&String> = keys.iter().filter(|k| !has_key(&text, k)).collect();
        assert!(missing.is_empty(), "{name} lacks these keys of the config reference: {missing:?}");
    }
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The keys in the first column of the table headed `| HEADING |` in docs/configuration.md:
/// each backticked name, `a.b` / `.c` read as `a.b` and `a.c`; `advanced.<section>.<field>` is
/// left out (the tunables are `tuning`'s to list).
fn reference_keys(heading: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).expect("docs/configuration.md");
    let rows = doc
        .lines()
        .skip_while(|l| !l.starts_with(&format!("| {heading} |")))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    let mut keys = Vec::new();
    for row in rows {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let mut parent = String::new();
        for name in cell.split('`').skip(1).step_by(2).filter(|n| !n.contains('<')) {
            let key = match name.strip_prefix('.') {
                Some(leaf) => format!("{parent}.{leaf}"),
                None => name.to_owned(),
            };
            parent = key.rsplit_once('.').map_or_else(String::new, |(p, _)| p.to_owned());
            keys.push(key);
        }
    }
    keys
}

/// Whether the YAML text has the dotted key (`uplinks[].name`), set or commented out: each
/// part as a key on a line after the one before.
fn has_key(text: &str, key: &str) -> bool {
    let mut lines = text.lines();
    key.split('.').map(|part| part.trim_end_matches("[]")).all(|part| {
        lines.any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.trim_start_matches("- ").starts_with(&format!("{part}:"))
        })
    })
}

#[track_caller]
fn assert_refused(out: &Output, config: &Path, line: usize, key: &str, message: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    let located = format!("error: {}:{line}: {key}: ", config.display());
    assert!(stderr.starts_with(&located), "{what}: {stderr}\nshould start with: {located}");
    assert!(stderr.contains(message), "{what}: {stderr}\nshould contain: {message}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
}

/// A directory with `key.key` (mode 0600), removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(binary: &Binary, name: &str) -> Self {
        let exe = Path::new(binary.exe).file_name().and_then(|n| n.to_str()).unwrap_or("braid");
        let dir = std::env::temp_dir().join(format!("{exe}-check-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        PrivateKey::from_bytes([1; 32]).write_file(&dir.join("key.key")).expect("key file");
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("braid.yaml")
    }

    fn check(&self, binary: &Binary, config: &str) -> Output {
        std::fs::write(self.config(), config).expect("config file");
        let path = self.config();
        Command::new(binary.exe).arg("check-config").arg("--config").arg(&path).output().expect("the binary runs")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
