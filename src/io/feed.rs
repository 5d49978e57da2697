//! The bitrate feed: the edge's advice to the encoder ([`crate::session::Session::safe_bitrate`])
//! pushed as one JSON line per UDP datagram to the config's `bitrate_feed` address, at once when
//! it moves by more than [`MOVE`], and every [`REPEAT`] anyway, so that an encoder script can
//! follow it and tell a quiet edge from a gone one. Sending never blocks: a datagram the socket
//! cannot take now is dropped, and the next follows within a second.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::{IoError, unix_millis};

/// The advice is looked at no more often than this.
pub const CHECK: Duration = Duration::from_millis(100);
/// A change of this share of the last value sent is sent at once.
pub const MOVE: f64 = 0.1;
/// The advice is sent at least this often.
pub const REPEAT: Duration = Duration::from_secs(1);

/// The feed's socket and what it last sent.
#[derive(Debug)]
pub struct Feed {
    socket: UdpSocket,
    to: SocketAddr,
    last: Option<(u64, Instant)>,
    checked: Option<Instant>,
}

impl Feed {
    /// A feed to `to`, from an ephemeral port of its family.
    ///
    /// # Errors
    /// [`IoError`] if the socket cannot be opened.
    pub fn open(to: SocketAddr) -> Result<Self, IoError> {
        let local: SocketAddr =
            if to.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(local).map_err(|e| IoError::new("opening the bitrate feed's socket", e))?;
        socket.set_nonblocking(true).map_err(|e| IoError::new("opening the bitrate feed's socket", e))?;
        Ok(Self { socket, to, last: None, checked: None })
    }

    /// Where it sends.
    pub const fn target(&self) -> SocketAddr {
        self.to
    }

    /// Offers the advice as of `now`, `advice` giving the bitrate and the links up: sent if it
    /// moved by more than [`MOVE`] or [`REPEAT`] has passed since the last; worked out no more
    /// often than [`CHECK`] (the driver offers after every input).
    pub fn offer(&mut self, now: Instant, advice: impl FnOnce() -> (u64, usize)) {
        if self.checked.is_some_and(|at| now.saturating_duration_since(at) < CHECK) {
            return;
        }
        self.checked = Some(now);
        let (bitrate_bps, links_up) = advice();
        let due = self.last.is_none_or(|(sent, at)| {
            now.saturating_duration_since(at) >= REPEAT || bitrate_bps.abs_diff(sent) as f64 > sent as f64 * MOVE
        });
        if due {
            let _ = self.socket.send_to(line(bitrate_bps, links_up, unix_millis()).as_bytes(), self.to);
            self.last = Some((bitrate_bps, now));
        }
    }
}

/// One datagram of the feed.
pub fn line(bitrate_bps: u64, links_up: usize, time_unix_ms: u64) -> String {
    format!("{{\"safe_bitrate_bps\":{bitrate_bps},\"links_up\":{links_up},\"time_unix_ms\":{time_unix_ms}}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_sends_at_once_on_a_move_and_every_second_otherwise() {
        let listener = UdpSocket::bind("127.0.0.1:0").expect("listener");
        // Everything sent is queued on loopback by the time the offers return: a short wait
        // for each datagram ends the reading once none is left.
        listener.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut feed = Feed::open(listener.local_addr().expect("address")).expect("feed");
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // First offer; a small change, a change within CHECK, a big change, then quiet.
        for (at, bps) in [(0, 10_000_000), (150, 10_500_000), (200, 5_000_000), (300, 5_000_000), (1_400, 5_000_000)] {
            feed.offer(ms(at), || (bps, 2));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = listener.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            got.push(value["safe_bitrate_bps"].as_u64().expect("bitrate"));
        }
        assert_eq!(got, [10_000_000, 5_000_000, 5_000_000], "first, the move (not the small change), the repeat");
    }
}
