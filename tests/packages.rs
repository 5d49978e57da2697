//! The Debian packages: `cargo deb` packages the `braid-edge` and `braid-gateway` binaries this
//! test run built (the lab tests' build; the README's commands package a release build with the
//! same manifests), lintian finds no error in them, and dpkg installs them into a scratch root
//! whose installed binaries then run `--version` and `check-config` on the shipped examples. Needs
//! root (dpkg), cargo-deb and lintian (scripts/test.sh installs both); without them it prints
//! why it skips, and under `CI=true` a skip fails.

#![allow(clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGES: [&str; 2] = ["braid-edge", "braid-gateway"];

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn runs(command: &mut Command) -> bool {
    command.output().is_ok_and(|o| o.status.success())
}

/// Whether the test can run; prints why not, and fails under CI.
fn can_run() -> bool {
    let why = if !e2e::is_root() {
        "needs root for dpkg"
    } else if !runs(cargo().args(["deb", "--version"])) {
        "cargo-deb is missing (cargo install cargo-deb --locked; scripts/test.sh does)"
    } else if !runs(Command::new("lintian").arg("--version")) {
        "lintian is missing (apt-get install lintian; scripts/test.sh does)"
    } else {
        return true;
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "packages: skipped in CI: {why}");
    println!("SKIP packages: {why}");
    false
}

#[track_caller]
fn succeeds(what: &str, command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    println!("{what}:\n{text}");
    out
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An empty dpkg database under `root`, and stand-ins for the systemd helpers the packages'
/// scripts call (they log their arguments to `stubs/calls`), so that nothing outside the
/// scratch directory is touched.
fn scratch_root(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(root.join("var/lib/dpkg").join(sub)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    for tool in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
        let path = stubs.join(tool);
        std::fs::write(&path, format!("#!/bin/sh\necho \"{tool} $*\" >> {}/calls\n", stubs.display())).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    (root, stubs)
}

#[test]
fn the_debian_packages_build_pass_lintian_install_and_check_their_shipped_examples() {
    if !can_run() {
        return;
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("braid-packages-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    // `cargo deb --no-build` packages what it finds in a target directory's `release/`: there, in
    // a scratch target, the binaries beside this test, rather than a release build of its own.
    let target = scratch.0.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    let mut debs = Vec::new();
    for package in PACKAGES {
        std::fs::copy(e2e::binary(package), target.join("release").join(package)).unwrap();
        let out = succeeds(
            &format!("cargo deb -p {package}"),
            cargo().env("CARGO_TARGET_DIR", &target).args(["deb", "--no-build", "-p", package]),
        );
        let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
        assert!(path.ends_with(".deb") && Path::new(&path).is_file(), "cargo deb printed no package: {path:?}");
        debs.push(path);
    }
    // Warnings (no manual page, ...) are reported; an error fails.
    succeeds("lintian", Command::new("lintian").args(["--fail-on", "error", "--info"]).args(&debs));

    let (root, stubs) = scratch_root(&scratch.0);
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap_or_default());
    // Chrootless: the scripts run here with DPKG_ROOT set, and the scratch root has no libc
    // package to satisfy the dependency.
    succeeds(
        "dpkg -i",
        Command::new("dpkg")
            .env("PATH", &path)
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "-i"])
            .args(&debs),
    );
    let etc = root.join("etc/braid");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&etc).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o750, "/etc/braid's mode");
    let calls = std::fs::read_to_string(stubs.join("calls")).unwrap_or_default();
    for package in PACKAGES {
        let binary = root.join("usr/bin").join(package);
        let version = succeeds(&format!("{package} --version"), Command::new(&binary).arg("--version"));
        assert!(String::from_utf8_lossy(&version.stdout).starts_with(&format!("{package} ")), "{version:?}");
        let unit = std::fs::read_to_string(root.join(format!("usr/lib/systemd/system/{package}.service"))).unwrap();
        assert!(unit.contains(&format!("ExecStart=/usr/bin/{package} run")), "{unit}");
        assert!(calls.contains(&format!("deb-systemd-helper update-state {package}.service")), "{calls}");
        // The shipped example, as an operator would use it: a key made where the config
        // expects it (the scratch root's /etc/braid), and check-config from the installed path.
        let example = format!("{}.yaml", package.trim_start_matches("braid-"));
        let shipped = root.join(format!("usr/share/doc/{package}/examples/{example}"));
        let text = std::fs::read_to_string(&shipped).unwrap();
        let key = etc.join(format!("{}.key", package.trim_start_matches("braid-")));
        succeeds("keygen", Command::new(&binary).arg("keygen").arg("--out").arg(&key));
        let config = etc.join(&example);
        std::fs::write(&config, text.replace("/etc/braid/", &format!("{}/", etc.display()))).unwrap();
        succeeds(&format!("{package} check-config"), Command::new(&binary).arg("check-config").arg("-c").arg(&config));
    }
}
