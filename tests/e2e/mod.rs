//! Network-namespace topologies for end-to-end tests of the real binaries.
//!
//! Root is needed to create namespaces, veths, bridges, NAT rules and TAP devices. Without it a
//! test prints why it is skipped; with `CI=true` a skip is a failure.
//!
//! ```text
//!  cam (10.77.N.10) ─ br-lan ─ braid0 [edge] ═ up1 ─ isp1 (NAT) ─┐
//!                                            ═ up2 ─ isp2 (NAT) ─┼─ inet ─ wan [gw] braid-X ─ br ─ ing (10.77.N.20)
//!                                            ═ up3 ─ isp3 (NAT) ─┘
//! ```
//! Every address lives inside namespaces the test creates; all of them are deleted on drop, even
//! when an assertion fails, and every process the lab started is killed.

#![allow(dead_code, unreachable_pub, clippy::disallowed_methods, clippy::panic, clippy::unwrap_used)]

pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether the test runs as root: /proc/self/status carries the effective uid.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Whether the test can run; prints why not, and fails under CI.
pub fn root_or_skip(test: &str) -> bool {
    let root = is_root();
    let tools = ["ip", "nft", "iperf3", "ping", "tshark"].iter().all(|t| which(t));
    if root && tools {
        return true;
    }
    let why = if root {
        "iperf3, ping, nft or tshark missing (scripts/test.sh installs them)"
    } else {
        "needs root for namespaces, TAP and NAT"
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: skipped in CI: {why}");
    println!("SKIP {test}: {why}");
    false
}

/// Whether `tools` are all installed; prints which are not, and fails under CI.
pub fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !which(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} missing (scripts/test.sh installs them)", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: skipped in CI: {why}");
    println!("SKIP {test}: {why}");
    false
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A built binary of the workspace: next to the test executable's `deps/` folder, or next to the
/// running binary (`braid-labtool`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>");
    let dir = if dir.ends_with("deps") { dir.parent().expect("target/<profile>") } else { dir };
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built: run `cargo test --workspace`", path.display());
    path
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Labs run one at a time: each drives real traffic, and two at once on a small machine would
/// measure each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lab: namespaces, processes and a scratch directory, all removed on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    pub dir: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    /// A lab whose namespace names start with a prefix unique to this process and `tag`.
    pub fn new(tag: &str) -> Self {
        // A test that failed while holding the lock poisons it; the next lab still runs.
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        remove_stale_namespaces();
        let prefix = format!("brt{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self { prefix, namespaces: Vec::new(), children: Vec::new(), dir, _serial: serial }
    }

    /// The full name of namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Creates namespace `short` with loopback up.
    pub fn add_ns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        // Bridged frames must not pass through netfilter (br_netfilter is loaded on many hosts):
        // conntrack would see them before routing and skip their NAT.
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])
            .args(["net.bridge.bridge-nf-call-ip6tables=0"])
            .stderr(Stdio::null())
            .status();
        ns
    }

    /// Runs a command inside namespace `short`.
    pub fn exec(&self, short: &str, args: &[&str]) -> Output {
        let ns = self.ns(short);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside namespace `short`, returning its output whatever its status.
    pub fn try_exec(&self, short: &str, args: &[&str]) -> Output {
        let ns = self.ns(short);
        Command::new("ip").args(["netns", "exec", &ns]).args(args).output().expect("ip netns exec")
    }

    /// A veth between two namespaces, with an address (CIDR) on each end, up.
    pub fn link(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        let (na, nb) = (self.ns(a.0), self.ns(b.0));
        run(&["ip", "-n", &na, "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", &nb]);
        for (ns, dev, addr) in [(&na, a.1, a.2), (&nb, b.1, b.2)] {
            if !addr.is_empty() {
                run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// A bridge in namespace `short`, up, with the given ports.
    pub fn bridge(&self, short: &str, name: &str, ports: &[&str]) {
        let ns = self.ns(short);
        run(&["ip", "-n", &ns, "link", "add", name, "type", "bridge"]);
        run(&["ip", "-n", &ns, "link", "set", name, "up"]);
        for port in ports {
            run(&["ip", "-n", &ns, "link", "set", port, "master", name]);
        }
    }

    /// Turns namespace `short` into a router (and a NAT masquerading out of `nat_out`, if given).
    pub fn router(&self, short: &str, nat_out: Option<&str>) {
        self.exec(short, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        if let Some(out) = nat_out {
            self.exec(short, &["nft", "add", "table", "ip", "nat"]);
            self.exec(
                short,
                &["nft", "add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }"],
            );
            self.exec(short, &["nft", "add", "rule", "ip", "nat", "post", "oifname", out, "masquerade"]);
        }
    }

    /// Starts a long-running process in namespace `short`; it is killed on drop.
    pub fn spawn(&mut self, short: &str, name: &str, args: &[&str]) {
        let ns = self.ns(short);
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .env("RUST_LOG", std::env::var("LAB_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// The log of a process started with [`Lab::spawn`].
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Sends SIGTERM to a process and waits (bounded) for it to exit; returns whether it did.
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else { return false };
        let (_, mut child) = self.children.remove(i);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The process id of a process started with [`Lab::spawn`] (`ip netns exec` and `prlimit`
    /// exec what they run, so it is the daemon's own).
    pub fn pid(&self, name: &str) -> u32 {
        self.children.iter().find(|(n, _)| n == name).expect("a started process").1.id()
    }

    /// Sends a signal (e.g. "HUP") to a process started with [`Lab::spawn`].
    pub fn signal(&self, name: &str, signal: &str) {
        let (_, child) = self.children.iter().find(|(n, _)| n == name).expect("a started process");
        run(&["kill", &format!("-{signal}"), &child.id().to_string()]);
    }

    /// Polls `check` every 100 ms for up to `limit`; returns whether it held.
    pub fn wait_for(&self, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Writes a file into the scratch directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path
    }

    /// Generates a key pair with the real binary; returns (private key path, public key).
    pub fn keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.join(format!("{name}.key"));
        let out = run(&[
            binary("braid-gateway").to_str().expect("utf-8 path"),
            "keygen",
            "--out",
            path.to_str().expect("utf-8"),
        ]);
        (path, String::from_utf8(out.stdout).expect("utf-8").trim().to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes `brt<pid>…` namespaces whose process is gone (a run killed before its cleanup), and
/// kills what still runs in them.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("brt") else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            // What still runs inside goes first: deleting the name would not stop it.
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// One rig: an edge namespace with `uplinks` NATed ISPs into `inet`, and a camera LAN.
pub struct Rig {
    pub name: String,
    pub uplinks: usize,
    /// The edge's config file.
    pub config: PathBuf,
    pub public_key: String,
    /// Camera and ingest addresses on the rig's L2 segment.
    pub camera: String,
    pub ingest: String,
}

/// Builds the gateway side: `inet` (a router) and `gw` with its public address 10.200.0.2.
pub fn internet(lab: &mut Lab) {
    lab.add_ns("inet");
    lab.add_ns("gw");
    lab.link(("inet", "gw0", "10.200.0.1/24"), ("gw", "wan", "10.200.0.2/24"));
    lab.exec("gw", &["ip", "route", "add", "default", "via", "10.200.0.1"]);
    lab.router("inet", None);
}

/// Builds rig `n` (1-based): its ISPs, edge namespace, camera and ingest hosts, and config.
pub fn rig(lab: &mut Lab, n: usize, uplinks: usize, gateway_public: &str) -> Rig {
    let edge = format!("edge{n}");
    lab.add_ns(&edge);
    for u in 1..=uplinks {
        let isp = format!("isp{n}{u}");
        lab.add_ns(&isp);
        let (inet_dev, inet_addr, isp_addr) =
            (format!("i{n}{u}"), format!("10.201.{n}{u}.1/24"), format!("10.201.{n}{u}.2/24"));
        lab.link(("inet", &inet_dev, &inet_addr), (&isp, "ext0", &isp_addr));
        lab.exec(&isp, &["ip", "route", "add", "default", "via", &format!("10.201.{n}{u}.1")]);
        lab.router(&isp, Some("ext0"));
        let (lan_isp, lan_edge) = (format!("192.168.{u}.1/24"), format!("192.168.{u}.2/24"));
        lab.link((&isp, "int0", &lan_isp), (&edge, &format!("up{u}"), &lan_edge));
        // Each uplink has its own default route; SO_BINDTODEVICE picks the one of its device.
        let metric = (u * 10).to_string();
        lab.exec(
            &edge,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{u}.1"),
                "dev",
                &format!("up{u}"),
                "metric",
                &metric,
            ],
        );
    }
    let (cam, ing) = (format!("cam{n}"), format!("ing{n}"));
    lab.add_ns(&cam);
    lab.add_ns(&ing);
    let (camera, ingest) = (format!("10.77.{n}.10"), format!("10.77.{n}.20"));
    lab.link((&cam, "eth0", &format!("{camera}/24")), (&edge, "lan", ""));
    lab.link((&ing, "eth0", &format!("{ingest}/24")), ("gw", &format!("lan{n}"), ""));
    for (ns, v6) in [(&cam, format!("fd77:{n}::10/64")), (&ing, format!("fd77:{n}::20/64"))] {
        lab.exec(ns, &["ip", "addr", "add", &v6, "dev", "eth0", "nodad"]);
    }
    lab.bridge(&edge, "br-lan", &["lan"]);
    lab.bridge("gw", &format!("br-ing{n}"), &[&format!("lan{n}")]);

    let (key, public_key) = lab.keygen(&edge);
    let uplink_yaml: String = (1..=uplinks).map(|u| format!("  - name: isp{u}\n    interface: up{u}\n")).collect();
    let config = lab.write(
        &format!("{edge}.yaml"),
        &format!(
            "private_key_file: {}\ngateway:\n  address: 10.200.0.2:4754\n  public_key: {gateway_public}\nmode: redundant\ntap:\n  name: braid0\n  bridge: br-lan\nuplinks:\n{uplink_yaml}",
            key.display()
        ),
    );
    Rig { name: edge, uplinks, config, public_key, camera, ingest }
}

/// Writes the gateway's config for `rigs` and returns its path.
pub fn gateway_config(lab: &Lab, key: &Path, rigs: &[&Rig]) -> PathBuf {
    let edges: String = rigs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let n = i + 1;
            format!(
                "  - name: {}\n    public_key: {}\n    tap: braid-r{n}\n    bridge: br-ing{n}\n",
                r.name, r.public_key
            )
        })
        .collect();
    lab.write(
        "gateway.yaml",
        &format!("private_key_file: {}\nlisten: [\"10.200.0.2:4754\"]\nedges:\n{edges}", key.display()),
    )
}

/// Pings `to` from namespace `from` until one answer comes or `limit` passes.
pub fn ping_until(lab: &Lab, from: &str, to: &str, limit: Duration) -> bool {
    lab.wait_for(limit, || lab.try_exec(from, &["ping", "-c", "1", "-W", "1", to]).status.success())
}
