//! Paces the frames the reorder buffer releases to the local side.
//!
//! A gap held for a while releases every frame behind it at once when it fills or is given up:
//! hundreds of frames back to back, which overflow a receiving application's socket buffer
//! (a default UDP buffer holds about 90 datagrams of 1200 bytes) though none was lost on the
//! way. So frames go out at once while a token bucket allows, and past it at a bounded multiple
//! of the stream's recent arrival rate; a frame never waits past the latency budget for it.
//!
//! The bucket holds [`RELEASE_BURST`] bytes, or 10 ms at the paced rate if more: a stream
//! without gaps never waits, and a burst after a gap leaves the bucket's worth at once and the
//! rest at [`RELEASE_RATE_FACTOR`] times the rate it arrives at.

use std::time::{Duration, Instant};

use crate::tuning::ReleaseTuning;

/// The paced rate is this multiple of the stream's recent arrival rate.
pub const RELEASE_RATE_FACTOR: f64 = 2.0;
/// Bytes that may leave back to back.
pub const RELEASE_BURST: usize = 64 * 1024;
/// The arrival rate is averaged over about this long (an exponential decay's time constant).
pub const RATE_WINDOW: Duration = Duration::from_millis(250);
/// The paced rate is never below this, bits per second.
pub const MIN_RELEASE_BPS: f64 = 1_000_000.0;
/// The bucket holds at least this long at the paced rate.
const BURST_TIME: f64 = 0.010;
/// The shortest age, seconds, the arrival rate's start-up scaling divides by: a microsecond,
/// so that the first frame's rate is finite.
const MIN_AGE: f64 = 1e-6;

/// A token bucket refilled at a multiple of the arrival rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    tuning: ReleaseTuning,
    /// The decaying arrival rate, bits per second, as of `arrived`.
    arrival_bps: f64,
    arrived: Option<Instant>,
    /// The first arrival.
    first: Option<Instant>,
    /// Bytes that may leave now, as of `refilled`.
    tokens: f64,
    refilled: Option<Instant>,
}

impl Pacer {
    /// A pacer with a full bucket.
    pub fn new(tuning: ReleaseTuning) -> Self {
        Self { tuning, arrival_bps: 0.0, arrived: None, first: None, tokens: tuning.burst as f64, refilled: None }
    }

    /// A frame of `len` bytes arrived from the peer.
    pub fn on_arrival(&mut self, now: Instant, len: usize) {
        let window = self.tuning.rate_window.as_secs_f64();
        let since = self.arrived.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.arrival_bps = self.arrival_bps * (-since / window).exp() + len as f64 * 8.0 / window;
        self.arrived = Some(now);
        self.first.get_or_insert(now);
    }

    /// Whether a frame of `len` bytes may leave at `now`; `overdue` (it has waited its budget)
    /// lets it leave anyway. Either way it is charged.
    pub fn take(&mut self, now: Instant, len: usize, overdue: bool) -> bool {
        self.refill(now);
        let len = len as f64;
        if self.tokens + 1e-6 < len && !overdue {
            return false;
        }
        self.tokens = (self.tokens - len).max(-self.capacity(now));
        true
    }

    /// When a frame of `len` bytes may leave, if it cannot now.
    pub fn ready_at(&self, len: usize) -> Option<Instant> {
        let refilled = self.refilled?;
        let deficit = len as f64 - self.tokens;
        if deficit <= 0.0 {
            return None;
        }
        let secs = deficit * 8.0 / self.paced_bps(refilled);
        // Rounded up to the microsecond, so that the frame may leave when it is due.
        Some(refilled + Duration::from_micros((secs * 1e6).ceil() as u64 + 1))
    }

    /// The rate frames past the bucket leave at, bits per second.
    pub fn paced_bps(&self, now: Instant) -> f64 {
        (self.arrival_at(now) * self.tuning.rate_factor).max(self.tuning.min_rate_bps)
    }

    /// The arrival rate as of `now`. The average starts from nothing, so over the first windows
    /// it is scaled up by the share of its weight it has had time to gather: a stream's start is
    /// paced no tighter than its middle. For a steady stream that gives its rate from the second
    /// frame on (a little more, never less); the first frame alone reads as a very fast stream.
    fn arrival_at(&self, now: Instant) -> f64 {
        let (Some(first), Some(arrived)) = (self.first, self.arrived) else { return 0.0 };
        let window = self.tuning.rate_window.as_secs_f64();
        let since = now.saturating_duration_since(arrived).as_secs_f64();
        let age = now.saturating_duration_since(first).as_secs_f64().max(MIN_AGE);
        self.arrival_bps * (-since / window).exp() / (1.0 - (-age / window).exp())
    }

    fn capacity(&self, now: Instant) -> f64 {
        (self.tuning.burst as f64).max(self.paced_bps(now) / 8.0 * BURST_TIME)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self.refilled.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        let rate = self.paced_bps(self.refilled.unwrap_or(now));
        self.tokens = (self.tokens + elapsed * rate / 8.0).min(self.capacity(now));
        self.refilled = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    /// A stream of 1200-byte frames at `bps` for `secs`, one frame each interval.
    fn steady(p: &mut Pacer, t0: Instant, bps: f64, secs: f64) -> Instant {
        let interval = Duration::from_secs_f64(1200.0 * 8.0 / bps);
        let mut t = t0;
        while t < t0 + Duration::from_secs_f64(secs) {
            p.on_arrival(t, 1200);
            assert!(p.take(t, 1200, false), "a steady stream waited at {:?}", t - t0);
            t += interval;
        }
        t
    }

    #[test]
    fn a_steady_stream_never_waits_and_its_rate_is_measured() {
        let mut p = Pacer::new(ReleaseTuning::default());
        let t = steady(&mut p, start(), 6e6, 2.0);
        let paced = p.paced_bps(t);
        assert!((11e6..13e6).contains(&paced), "paced at {paced} bit/s, not about twice 6 Mbit/s");
    }

    #[test]
    fn a_fast_steady_stream_never_waits_from_its_first_frame() {
        // 1400-byte frames every 10 us: the 64 KiB bucket lasts under half a millisecond, so
        // the rate must be known from the first frames, not grown into over the window.
        let mut p = Pacer::new(ReleaseTuning::default());
        let t0 = start();
        for i in 0..5_000u32 {
            let t = t0 + Duration::from_micros(10 * u64::from(i));
            p.on_arrival(t, 1400);
            assert!(p.take(t, 1400, false), "frame {i} of a steady 1.12 Gbit/s stream waited");
        }
    }

    #[test]
    fn a_burst_leaves_the_bucket_at_once_and_the_rest_at_twice_the_rate() {
        let mut p = Pacer::new(ReleaseTuning::default());
        let t = steady(&mut p, start(), 8e6, 2.0);
        // 300 frames released at once after a gap, while the stream goes on at 8 Mbit/s behind
        // them: the queue drains at twice the rate less the arrivals.
        let mut queued = 300_usize;
        let mut at_once = 0;
        while queued > 0 && p.take(t, 1200, false) {
            queued -= 1;
            at_once += 1;
        }
        assert!((50..=60).contains(&at_once), "{at_once} frames left at once, not the 64 KiB bucket's");
        let interval = Duration::from_secs_f64(1200.0 * 8.0 / 8e6);
        let (mut now, mut next_arrival) = (t, t + interval);
        for _ in 0..100_000 {
            if queued == 0 {
                break;
            }
            let ready = p.ready_at(1200).unwrap_or(now);
            now = ready.min(next_arrival);
            if now == next_arrival {
                p.on_arrival(now, 1200);
                queued += 1;
                next_arrival += interval;
            }
            while queued > 0 && p.take(now, 1200, false) {
                queued -= 1;
            }
        }
        // (300 × 1200 − 64 KiB) bytes at 16 − 8 Mbit/s: 294 ms.
        let took = now - t;
        assert!(
            (Duration::from_millis(270)..Duration::from_millis(320)).contains(&took),
            "the queue took {took:?} to drain, not about 294 ms at twice the stream's rate"
        );
    }

    #[test]
    fn an_overdue_frame_leaves_whatever_the_bucket_holds() {
        let mut p = Pacer::new(ReleaseTuning::default());
        let t = start();
        while p.take(t, 1200, false) {}
        assert!(!p.take(t, 1200, false));
        assert!(p.take(t, 1200, true), "an overdue frame waits no longer");
        assert!(p.ready_at(1200).is_some_and(|at| at > t));
    }
}
