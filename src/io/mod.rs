//! The tokio I/O layer: the only place that reads the clock and touches the OS.
//!
//! It grows the TAP device, the per-uplink sockets and the netlink watch with the binaries; here
//! is the piece every driver loop shares: sleeping until the engine's next deadline.

use std::time::Instant;

use crate::session::{Session, TimerKind};

/// Sleeps until the session's next deadline (forever if it has none), and returns its reason.
pub async fn sleep_until_timeout(session: &Session) -> Option<TimerKind> {
    match session.poll_timeout() {
        Some((deadline, kind)) => {
            tokio::time::sleep_until(deadline.into()).await;
            Some(kind)
        }
        None => std::future::pending().await,
    }
}

/// The clock the driver hands to the engine.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}
