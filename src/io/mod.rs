//! The tokio I/O layer: the only place that reads the clock and touches the OS.
//!
//! * [`tap`]: the TAP devices (tun-rs), optionally joined to a bridge;
//! * [`udp`]: one UDP socket per uplink, bound to its interface (SO_BINDTODEVICE) and/or source
//!   address, and the gateway's listening sockets;
//! * [`netlink`]: carrier, operstate and address changes of the uplinks, from rtnetlink;
//! * [`edge`] and [`gateway`]: the driver loops ([`workers`]: the gateway's, one per worker). Each `select!`s over its TAPs, sockets, netlink
//!   and `sleep_until(poll_timeout)`, and drains the engine's `poll_*` outputs after every input,
//!   with reused buffers and no per-packet tasks or channels;
//! * [`status`], [`metrics`] and [`http`]: the snapshot the drivers publish every 250 ms, its
//!   Prometheus encoding, and the HTTP endpoint (own thread) serving it with the dashboard.

pub mod batch;
pub mod driver;
pub mod edge;
pub mod feed;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod netlink;
pub mod schema;
pub mod status;
pub mod tap;
pub mod udp;
pub mod usage;
pub mod workers;

use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// An OS-level failure, with what braid was doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct IoError {
    /// What braid was doing.
    pub what: String,
    /// What the OS said.
    pub source: std::io::Error,
}

impl IoError {
    /// Wraps an OS error with what braid was doing.
    pub fn new(what: impl Into<String>, source: std::io::Error) -> Self {
        Self { what: what.into(), source }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (INFO by default: link state changes, handshakes,
/// paths; per-packet events are TRACE). Each line names the daemon it comes from
/// (`braid-edge`, `braid-gateway`), whichever module of the shared code wrote it.
pub fn init_logging(daemon: &'static str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .event_format(DaemonFormat::new(daemon))
        .with_writer(std::io::stderr)
        .try_init();
}

/// A log line as `TIME LEVEL DAEMON: fields`: the time and level as tracing-subscriber writes
/// them, then the daemon's name where its default puts the module path.
#[derive(Debug)]
pub struct DaemonFormat {
    daemon: &'static str,
    rest: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl DaemonFormat {
    /// Lines tagged with `daemon`.
    pub fn new(daemon: &'static str) -> Self {
        let rest = tracing_subscriber::fmt::format().without_time().with_level(false).with_target(false);
        Self { daemon, rest }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for DaemonFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime as _;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} {}: ", event.metadata().level(), self.daemon)?;
        self.rest.format_event(ctx, writer, event)
    }
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Polls each present item in turn, starting after the one that was ready last, so one busy
/// source cannot starve the others. Yields the index of the first ready one and its result.
pub fn poll_round_robin<T, R>(
    cx: &mut Context<'_>,
    items: &[Option<T>],
    cursor: &mut usize,
    mut poll: impl FnMut(&T, &mut Context<'_>) -> Poll<R>,
) -> Poll<(usize, R)> {
    let n = items.len();
    for step in 0..n {
        let i = (*cursor + step) % n;
        let Some(item) = &items[i] else { continue };
        if let Poll::Ready(result) = poll(item, cx) {
            *cursor = (i + 1) % n;
            return Poll::Ready((i, result));
        }
    }
    Poll::Pending
}

/// The clock the driver hands to the engine.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time in Unix nanoseconds, for handshake timestamps.
#[allow(clippy::disallowed_methods)]
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock time in Unix milliseconds, for status snapshots and the link-state log.
pub fn unix_millis() -> u64 {
    unix_nanos() / 1_000_000
}

/// 32 bytes from the OS's entropy, to seed the engine's CSPRNG.
///
/// # Errors
/// [`IoError`] if the OS has none to give.
pub fn os_seed() -> Result<[u8; 32], IoError> {
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed)
        .map_err(|_| IoError::new("reading the OS random source", std::io::Error::other("getrandom failed")))?;
    Ok(seed)
}

/// A future that resolves on SIGINT or SIGTERM.
///
/// # Errors
/// [`IoError`] if the signal handlers cannot be installed.
pub fn shutdown_signal() -> Result<impl Future<Output = &'static str>, IoError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| IoError::new("installing the SIGINT handler", e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| IoError::new("installing the SIGTERM handler", e))?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

#[cfg(test)]
mod logging_tests {
    use std::sync::{Arc, Mutex};

    /// A log writer into shared memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_names_the_daemon_not_the_shared_module_it_comes_from() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(super::DaemonFormat::new("braid-gateway"))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(edge = "van-1", "handshake complete");
        });
        let text = String::from_utf8(captured.0.lock().expect("log").clone()).expect("UTF-8");
        let (time, rest) = text.split_once(' ').expect("a time first");
        assert!(time.ends_with('Z') && time.contains('T'), "{text}");
        assert_eq!(rest.trim_start(), "INFO braid-gateway: handshake complete edge=\"van-1\"\n", "{text}");
    }
}
