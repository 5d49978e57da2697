//! `braid-impair`: forwards Ethernet frames between two TAP devices through a seeded impairment
//! model in each direction, because this kernel has no netem.
//!
//! ```text
//! braid-impair --a TAP --b TAP --up FILE --down FILE [--seed N]
//! ```
//! `--up` is the profile for frames from `a` to `b`, `--down` for `b` to `a` (see
//! `braid_lab::Profile::parse`). SIGHUP re-reads both files, so a scenario changes a link
//! mid-stream by rewriting a file, and prints `applied at=EPOCH` (seconds) once the new profiles
//! hold: the lab measures how the tunnel answers a change from that instant. SIGUSR1 prints the
//! counters so far (the lab checks that every datagram of the tunnel went through the
//! impairment); SIGINT or SIGTERM stops it and removes the TAPs.

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use braid_lab::{Link, Profile};
use tokio::signal::unix::{SignalKind, signal};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

struct Args {
    a: String,
    b: String,
    up: PathBuf,
    down: PathBuf,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut a, mut b, mut up, mut down, mut seed) = (None, None, None, None, 1u64);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--a" => a = Some(value),
            "--b" => b = Some(value),
            "--up" => up = Some(PathBuf::from(value)),
            "--down" => down = Some(PathBuf::from(value)),
            "--seed" => seed = value.parse().map_err(|_| format!("--seed {value}: expected a number"))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: braid-impair --a TAP --b TAP --up FILE --down FILE [--seed N]"
                ));
            }
        }
    }
    let missing = |name: &str| format!("{name} is required");
    Ok(Args {
        a: a.ok_or_else(|| missing("--a"))?,
        b: b.ok_or_else(|| missing("--b"))?,
        up: up.ok_or_else(|| missing("--up"))?,
        down: down.ok_or_else(|| missing("--down"))?,
        seed,
    })
}

fn load(path: &Path) -> Result<Profile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Profile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn tap(name: &str) -> Result<AsyncDevice, String> {
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .mtu(9000)
        .enable(true)
        .build_async()
        .map_err(|e| format!("TAP {name}: {e}"))
}

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Seconds since the Unix epoch, as the lab's `date +%s.%N` reads them.
#[allow(clippy::disallowed_methods)]
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn main() -> ExitCode {
    let result = args().and_then(|args| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(run(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (tap_a, tap_b) = (tap(&args.a)?, tap(&args.b)?);
    let mut up = Link::new(load(&args.up)?, args.seed);
    let mut down = Link::new(load(&args.down)?, args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1);
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let (mut buf_a, mut buf_b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    loop {
        let due = [up.next_due(), down.next_due()].into_iter().flatten().min();
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => eprintln!("{}", counters("counters", &up, &down)),
            _ = hangup.recv() => match (load(&args.up), load(&args.down)) {
                (Ok(u), Ok(d)) => {
                    up.set_profile(u);
                    down.set_profile(d);
                    eprintln!("applied at={:.6}", epoch_seconds());
                }
                (Err(e), _) | (_, Err(e)) => eprintln!("reload refused: {e}"),
            },
            () = async { match due { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {}
            n = poll_fn(|cx| tap_a.poll_recv(cx, &mut buf_a)) => {
                if let Ok(n) = n { up.offer(now(), &buf_a[..n]); }
            }
            n = poll_fn(|cx| tap_b.poll_recv(cx, &mut buf_b)) => {
                if let Ok(n) = n { down.offer(now(), &buf_b[..n]); }
            }
        }
        let t = now();
        while let Some(frame) = up.pop_due(t) {
            let _ = tap_b.try_send(&frame);
        }
        while let Some(frame) = down.pop_due(t) {
            let _ = tap_a.try_send(&frame);
        }
    }
    eprintln!("{}", counters("stopped", &up, &down));
    Ok(())
}

fn counters(what: &str, up: &Link, down: &Link) -> String {
    let (u, d) = (up.stats(), down.stats());
    format!(
        "{what}: up offered={} delivered={} dropped={}; down offered={} delivered={} dropped={}",
        u.offered, u.delivered, u.dropped, d.offered, d.delivered, d.dropped
    )
}
