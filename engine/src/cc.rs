//! Per-link congestion control: how fast each link can carry, without filling its buffer.
//!
//! An LTE modem queues seconds of data before it drops any, so a sender that waits for loss has
//! already added that much delay to the stream. [`RateControl`] is delay-based instead. It keeps
//! one number per link, the rate the scheduler may put on it, and moves it on two measurements
//! the peer's reports give:
//! * the **delivery rate**: bytes the peer received on the link over the last
//!   [`DELIVERY_WINDOW`], timed by the peer's own clock (its reports carry their send time), so
//!   the way back's jitter does not distort it;
//! * the **queueing delay**: the lowest forward delay of the last [`RECENT_WINDOW`] minus the
//!   lowest over [`MIN_RTT_WINDOW`]. Taking the lowest of recent samples filters the link's
//!   jitter; what is left is a standing queue. The forward delay is the peer's send time of the
//!   report less ours of the newest packet it covers: the two clocks' offset is the same in both
//!   minimums and cancels, and the way back is not in it. A report comes back on whichever link
//!   delivers it first, so a round trip would change with the other links: when the fast one is
//!   cut, every other link's RTT lengthens by the slower way back, and that is no queue of theirs.
//!
//! Every [`UPDATE_INTERVAL`]:
//! * a queue above the target ([`BASE_QUEUE_TARGET`] plus [`JITTER_ALLOWANCE`] times the link's
//!   jitter) while the link delivers less than we put on it ([`OVERLOAD_RATIO`]), or that rose
//!   steadily ([`RISING_UPDATES`]), means the link carries less than we give it: the rate drops
//!   to [`DRAIN_FACTOR`] of what was delivered, so the queue drains (at most once per RTT, so a
//!   cut is seen before the next). A steady queue on a link that delivers what it is given is
//!   its jitter, and changes nothing;
//! * a short queue while the scheduler kept the link busy (it had to wait for the link, so demand
//!   exceeded the rate) means the link may carry more: the rate grows by [`PROBE_GAIN`], to at
//!   most [`PROBE_LEAD`] times what the link carried ([`MAX_LEAD`] while it grows at
//!   [`STARTUP_GAIN`]: no queue, and the link delivers what it is given);
//! * a short queue on a link the stream does not fill changes nothing: an idle link proves no
//!   capacity.
//!
//! A link that carries all it is given may never empty its queue, and then its delays never
//! show the path's own: the minimum over [`MIN_RTT_WINDOW`] would take the standing queue for
//! path. A loaded link whose delays have not come near their floor for [`REFRESH_AFTER`] is
//! refreshed: its rate drops until they do.
//!
//! A configured rate is the ceiling (a modem's plan); without one the rate starts at
//! [`crate::scheduler::DEFAULT_LINK_RATE_BPS`] and finds its level within a second or two.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::tuning::CcTuning;

/// How often the rate is reconsidered.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);
/// The delivery rate is measured over this much of the peer's time.
pub const DELIVERY_WINDOW: Duration = Duration::from_millis(250);
/// The queueing delay is the lowest RTT over this window minus the link's minimum.
pub const RECENT_WINDOW: Duration = Duration::from_millis(100);
/// The minimum RTT is kept over this window, so a route change that lengthens the path is
/// learnt (in [`MIN_RTT_BUCKETS`] buckets).
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Buckets of the minimum RTT window.
pub const MIN_RTT_BUCKETS: usize = 10;
/// The standing queue a link may keep before its rate drops.
pub const BASE_QUEUE_TARGET: Duration = Duration::from_millis(15);
/// How many times the link's jitter is added to the target: a jittery link shows a queue that
/// is only its jitter.
pub const JITTER_ALLOWANCE: f64 = 2.0;
/// The largest queue target, however jittery the link.
pub const MAX_QUEUE_TARGET: Duration = Duration::from_millis(80);
/// How many times its jitter a busy jittery link's RTTs stand above its idle ones with no queue
/// at all. Its FIFO holds each packet behind any later-drawn earlier one, so under load every
/// packet takes nearly the worst delay: about three mean deviations (RFC 3550's jitter) above
/// the mean for a uniform spread. A queue past [`MAX_QUEUE_TARGET`] plus this is drained
/// whatever its cause; below it, only while the link delivers less than it is given.
pub const FIFO_JITTER: f64 = 3.0;
/// The rate's growth per update while the link is busy and its queue short.
pub const PROBE_GAIN: f64 = 1.04;
/// The growth per update while the link shows no queue and delivers what it is given: the
/// rate doubles in about three updates, so a stream that starts at once, or a link that must
/// suddenly carry what a cut one did, is not held at the old rate for seconds.
pub const STARTUP_GAIN: f64 = 1.25;
/// ... while the queue is below this...
pub const STARTUP_QUEUE: Duration = Duration::from_millis(5);
/// ... and the link delivers at least this share of the rate.
pub const STARTUP_DELIVERY: f64 = 0.8;
/// A busy link's rate grows at [`STARTUP_GAIN`] to at most this many times what it carried
/// (what it delivered, and what its own loss took on the way). The queue shows only a window or
/// two late, and a jittery link's target is wide, so without this a rate can keep growing well
/// past the capacity until the queue it built cuts it to half. Capacity that is there shows as
/// delivery and lifts the cap with it.
pub const MAX_LEAD: f64 = 1.15;
/// ... and at [`PROBE_GAIN`] (a queue shows, or the link delivers less than it is given) to at
/// most this many times: the rate then sits near the capacity, and each step past it builds a
/// queue that a drain takes back, so a small step keeps the rate, and the queue, from swinging.
pub const PROBE_LEAD: f64 = 1.05;
/// After a queue is seen, the rate is at most this share of what the link delivered...
pub const DRAIN_FACTOR: f64 = 0.9;
/// ... and lower for a longer queue, so the excess over the target drains in about this long...
pub const DRAIN_TIME: Duration = Duration::from_millis(500);
/// ... but never below this share.
pub const MIN_DRAIN_FACTOR: f64 = 0.5;
/// A queue is acted on only while the link delivers at least this many bits per second: below
/// it, the link carries probes and a trickle, and what looks like a queue is its jitter.
pub const MIN_DRAIN_EVIDENCE_BPS: f64 = 500_000.0;
/// A link that delivers less than we put on it, by this ratio, is overloaded: the queue it
/// shows is ours, and the rate drops below what it delivers.
pub const OVERLOAD_RATIO: f64 = 1.05;
/// A queue past the target that grew at each of this many updates in a row, by at least
/// [`RISING_MIN`] in all, is ours whatever the two rates say: a rate a few percent over the
/// capacity (inside [`OVERLOAD_RATIO`]) builds a queue slowly but without end, and a link's
/// jitter does not rise steadily.
pub const RISING_UPDATES: usize = 4;
/// ... by at least this much in all.
pub const RISING_MIN: Duration = Duration::from_millis(4);
/// The overload test needs the link to deliver at least this share of its rate.
pub const MIN_DRAIN_USE: f64 = 0.5;
/// The lowest rate a link is given, in bits per second: enough for probes and a trickle.
pub const MIN_RATE_BPS: f64 = 200_000.0;
/// A loaded link whose delays have not come down near their floor (the lowest seen since the
/// last refresh that could not reach it) for this long is refreshed: its rate drops to
/// [`REFRESH_FACTOR`] until the queue is gone and the floor shows again. A link that never empties its queue would otherwise read
/// the standing queue as its path once the old minimum leaves the window, and keep that much
/// more after it, again each window (as BBR's ProbeRTT). Less than [`MIN_RTT_WINDOW`], so the
/// minimum is confirmed before it leaves.
pub const REFRESH_AFTER: Duration = Duration::from_secs(8);
/// While refreshed, the rate is this share of what the link delivered (or of its rate, if
/// lower): the queue drains at 15% of the rate, and the other links take no more than that
/// from it...
pub const REFRESH_FACTOR: f64 = 0.85;
/// ... for at most this long and a round trip (45 ms of queue drains in it); if the delays are
/// still above the floor then, the path itself got longer, and what the refresh saw is the
/// new floor.
pub const REFRESH_TIME: Duration = Duration::from_millis(300);

/// Samples kept per window, whatever the packet rate.
const MAX_SAMPLES: usize = 512;

/// What the controller last decided, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No decision yet.
    Starting,
    /// The queue was short and the link busy: the rate grew.
    Probing,
    /// The queue was short and the link not filled: the rate held.
    Holding,
    /// A queue built up: the rate dropped below the delivery rate.
    Draining,
    /// The delays had not shown the path's minimum for long: the rate dropped until they do,
    /// for at most [`REFRESH_TIME`] and a round trip ([`REFRESH_AFTER`]).
    Refreshing,
}

impl Phase {
    /// A lower-case name for status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Probing => "probing",
            Self::Holding => "holding",
            Self::Draining => "draining",
            Self::Refreshing => "refreshing",
        }
    }
}

/// What a controller estimates of its link, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The rate the link may be given, in bits per second.
    pub rate_bps: u64,
    /// What the controller last decided.
    pub phase: Phase,
    /// The standing queue, once measured.
    pub queue_delay: Option<Duration>,
    /// The lowest RTT over [`MIN_RTT_WINDOW`] (less the queue the scheduler's model knew of).
    pub min_rtt: Option<Duration>,
    /// Bits per second the peer received over [`DELIVERY_WINDOW`], once measured.
    pub delivery_bps: Option<u64>,
}

/// What the session measured of a link, for [`RateControl::on_timeout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkSample {
    /// The link's measured jitter.
    pub jitter: Duration,
    /// The controller's smoothed RTT, if any.
    pub srtt: Option<Duration>,
    /// Datagram bytes sent on the link in total.
    pub tx_bytes: u64,
    /// The link's forward loss rate (0..1).
    pub loss: f64,
}

/// One link's congestion controller. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct RateControl {
    rate_bps: f64,
    ceiling_bps: Option<f64>,
    /// Per-bucket minimum RTTs, oldest first: (bucket start, minimum).
    min_rtt: VecDeque<(Instant, Duration)>,
    /// Per-bucket minimum delays in microseconds (see [`Self::on_rtt`]), oldest first.
    min_delay: VecDeque<(Instant, i64)>,
    /// The delays of the last [`RECENT_WINDOW`], in microseconds.
    recent: VecDeque<(Instant, i64)>,
    /// The last forward delay as given (wrapping) and as kept (the sum of the steps between
    /// them since the first, so it never wraps however far the two clocks drift apart).
    forward_last: Option<(u32, i64)>,
    /// The RTT samples' EWMA (1/8, as RFC 6298).
    smoothed: Option<Duration>,
    /// The spread of the delays within a recent window, smoothed (1/16 per update).
    spread: Duration,
    /// (peer time in microseconds, bytes the peer received in total).
    delivered: VecDeque<(u64, u64)>,
    last_peer_ts: Option<u64>,
    /// (when, bytes sent on the link in total), one per update, over [`DELIVERY_WINDOW`].
    sent: VecDeque<(Instant, u64)>,
    busy: bool,
    /// The queue at each of the last [`RISING_UPDATES`] + 1 updates that measured one, oldest
    /// first (so [`RISING_UPDATES`] steps between them).
    queues: VecDeque<Duration>,
    next_update: Instant,
    last_drain: Option<Instant>,
    refresh: Refresh,
    phase: Phase,
    tuning: CcTuning,
}

impl RateControl {
    /// A controller starting at `ceiling_bps` if set, else at `initial_bps`.
    pub fn new(now: Instant, initial_bps: u64, ceiling_bps: Option<u64>, tuning: CcTuning) -> Self {
        let ceiling_bps = ceiling_bps.map(|c| c as f64);
        Self {
            rate_bps: ceiling_bps.unwrap_or(initial_bps as f64).max(tuning.min_rate_bps),
            ceiling_bps,
            min_rtt: VecDeque::with_capacity(MIN_RTT_BUCKETS + 1),
            min_delay: VecDeque::with_capacity(MIN_RTT_BUCKETS + 1),
            recent: VecDeque::new(),
            forward_last: None,
            smoothed: None,
            spread: Duration::ZERO,
            delivered: VecDeque::new(),
            last_peer_ts: None,
            sent: VecDeque::new(),
            busy: false,
            queues: VecDeque::with_capacity(tuning.rising_updates + 1),
            next_update: now + tuning.update_interval,
            last_drain: None,
            refresh: Refresh::default(),
            phase: Phase::Starting,
            tuning,
        }
    }

    /// Starts again from `rate_bps`, what another controller measured on the same uplink (the
    /// stream moved to this session's peer from another's): what this one kept from when it
    /// last carried is stale. It starts as a new controller would, but at that rate and keeping
    /// its own path's RTT measurements (its minimum, smoothed RTT and spread). The forward delays
    /// start again: they were read against the other peer's clock.
    pub fn adopt_rate(&mut self, now: Instant, rate_bps: u64) {
        let rate = (rate_bps as f64).min(self.ceiling_bps.unwrap_or(f64::INFINITY)).max(self.tuning.min_rate_bps);
        *self = Self {
            rate_bps: rate,
            ceiling_bps: self.ceiling_bps,
            min_rtt: std::mem::take(&mut self.min_rtt),
            smoothed: self.smoothed,
            spread: self.spread,
            ..Self::new(now, rate_bps, None, self.tuning)
        };
    }

    /// The rate the link may be given, in bits per second.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps as u64
    }

    /// What the controller last decided.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// Its estimates.
    pub fn estimate(&self) -> Estimate {
        Estimate {
            rate_bps: self.rate_bps(),
            phase: self.phase,
            queue_delay: self.queue_delay(),
            min_rtt: self.min_rtt(),
            delivery_bps: self.delivery_rate().map(|d| (d * 8.0) as u64),
        }
    }

    /// The lowest RTT over [`MIN_RTT_WINDOW`].
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.iter().map(|&(_, rtt)| rtt).min()
    }

    /// The smoothed RTT of the samples.
    pub const fn smoothed_rtt(&self) -> Option<Duration> {
        self.smoothed
    }

    /// The standing queue: the lowest recent delay above the minimum.
    pub fn queue_delay(&self) -> Option<Duration> {
        let recent = self.recent.iter().map(|&(_, d)| d).min()?;
        let min = self.min_delay.iter().map(|&(_, d)| d).min()?;
        Some(Duration::from_micros(recent.saturating_sub(min).max(0) as u64))
    }

    /// The bytes per second the peer received over the last [`DELIVERY_WINDOW`], once measured.
    pub fn delivery_rate(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.delivered.front()?, self.delivered.back()?);
        let span = t1.saturating_sub(t0);
        // Less than half a window says little: one report's worth of bytes.
        (span >= self.tuning.delivery_window.as_micros() as u64 / 2)
            .then(|| b1.saturating_sub(b0) as f64 * 1e6 / span as f64)
    }

    /// The bits per second put on the link over the last [`DELIVERY_WINDOW`], once measured.
    pub fn send_rate_bps(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.sent.front()?, self.sent.back()?);
        let span = t1.saturating_duration_since(t0);
        (span >= self.tuning.delivery_window / 2).then(|| b1.saturating_sub(b0) as f64 * 8.0 / span.as_secs_f64())
    }

    /// The standing queue a link may keep: [`BASE_QUEUE_TARGET`], plus its jitter as the larger
    /// of [`JITTER_ALLOWANCE`] times the measured jitter (`jitter`, the peer's packets) and the
    /// usual spread of our own delay samples within a [`RECENT_WINDOW`]. On a jittery link a
    /// packet that is held back holds back those behind it, so under load even the lowest recent
    /// sample sits well above the link's minimum: the spread covers that. It is smoothed over
    /// many windows, so the ramp of a queue building up does not raise the target with it.
    pub fn queue_target(&self, jitter: Duration) -> Duration {
        (self.tuning.base_queue_target + jitter.mul_f64(self.tuning.jitter_allowance).max(self.spread))
            .min(self.tuning.max_queue_target)
    }

    /// The queue past which the link is over capacity whatever it delivers: [`MAX_QUEUE_TARGET`]
    /// above what its jitter alone shows under load ([`FIFO_JITTER`]).
    pub fn queue_limit(&self, jitter: Duration) -> Duration {
        self.tuning.max_queue_target + jitter.mul_f64(self.tuning.fifo_jitter)
    }

    /// Takes in an RTT sample from a report covering a data packet, with `forward`, the
    /// report's send time on the peer's clock less the packet's on ours (both in microseconds,
    /// wrapping at 2³²). The queue is measured on the forward delays; a controller given none
    /// (`None`: only its unit tests) measures it on the round trips.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration, forward: Option<u32>) {
        let bucket = self.tuning.min_rtt_window / MIN_RTT_BUCKETS as u32;
        Self::keep_min(&mut self.min_rtt, now, rtt, bucket);
        let delay = match forward {
            Some(forward) => {
                // A step of less than ±35 minutes from the last: far more than a path's delay moves.
                let (last_raw, last) = self.forward_last.unwrap_or((forward, 0));
                let delay = last.saturating_add(i64::from(forward.wrapping_sub(last_raw) as i32));
                self.forward_last = Some((forward, delay));
                delay
            }
            None => rtt.as_micros() as i64,
        };
        Self::keep_min(&mut self.min_delay, now, delay, bucket);
        self.refresh.on_delay(delay);
        if self.recent.len() == MAX_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back((now, delay));
        self.smoothed = Some(self.smoothed.map_or(rtt, |s| (s * 7 + rtt) / 8));
    }

    /// What the link delivers, bits per second, if it carries enough to read a queue from: at
    /// least [`MIN_DRAIN_EVIDENCE_BPS`] and [`MIN_DRAIN_USE`] of the rate. On a link given far
    /// less than its rate, the delivery and the sends over one window are noise.
    fn loaded_delivery(&self) -> Option<f64> {
        let delivered = self.delivery_rate()? * 8.0;
        (delivered >= self.tuning.min_drain_evidence_bps && delivered >= self.rate_bps * self.tuning.min_drain_use)
            .then_some(delivered)
    }

    /// Keeps the minimum of each `bucket` of time, over [`MIN_RTT_BUCKETS`] buckets.
    fn keep_min<T: Ord + Copy>(mins: &mut VecDeque<(Instant, T)>, now: Instant, sample: T, bucket: Duration) {
        match mins.back_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < bucket => *min = (*min).min(sample),
            _ => mins.push_back((now, sample)),
        }
        while mins.len() > MIN_RTT_BUCKETS {
            mins.pop_front();
        }
    }

    /// Starts, keeps or ends a refresh ([`REFRESH_AFTER`]); whether the link is refreshing, so
    /// that the rate stays where the refresh put it. A refresh starts only on a queue within
    /// its `target` (a longer one is drained instead), and ends once the recent delays come near
    /// the floor, after [`REFRESH_TIME`] and a round trip (the path itself got longer), or on a
    /// queue past its `limit` (to be drained); the rate then goes back to where it was.
    fn refreshed(
        &mut self,
        now: Instant,
        rtt: Duration,
        queue: Option<Duration>,
        target: Duration,
        limit: Duration,
    ) -> bool {
        if let Some(restore) = self.refresh.restore() {
            let overloaded = queue.is_some_and(|q| q > limit);
            let confirmed = self.refresh.confirmed();
            if !confirmed && !overloaded && !self.refresh.overdue(now) {
                return true;
            }
            self.refresh.end(!confirmed && !overloaded);
            self.rate_bps = restore;
            self.queues.clear();
            return false;
        }
        let Some(delivered) = self.loaded_delivery() else { return false };
        let lowered = self.rate_bps.min(delivered) * self.tuning.refresh_factor;
        let short = queue.is_some_and(|q| q <= target);
        if !short || lowered <= self.tuning.min_rate_bps || !self.refresh.due(now, self.tuning.refresh_after) {
            return false;
        }
        self.refresh.start(now, now + rtt + self.tuning.refresh_time, self.rate_bps);
        self.rate_bps = lowered;
        self.phase = Phase::Refreshing;
        true
    }

    /// Takes in the peer's count of bytes received on the link, with the peer's send time of the
    /// report (microseconds, wrapping at 2³²) and the total expanded from the report.
    pub fn on_delivered(&mut self, peer_ts: u32, bytes: u64) {
        let ts = match self.last_peer_ts {
            Some(last) => crate::wire::expand_u32(last, peer_ts),
            None => u64::from(peer_ts),
        };
        if self.last_peer_ts.is_some_and(|last| ts <= last) {
            return;
        }
        self.last_peer_ts = Some(ts);
        if self.delivered.len() == MAX_SAMPLES {
            self.delivered.pop_front();
        }
        self.delivered.push_back((ts, bytes));
        let window = self.tuning.delivery_window.as_micros() as u64;
        while self.delivered.front().is_some_and(|&(t, _)| ts.saturating_sub(t) > window) {
            self.delivered.pop_front();
        }
    }

    /// The scheduler had to queue on this link: demand reached the rate.
    pub fn on_busy(&mut self) {
        self.busy = true;
    }

    /// When [`Self::on_timeout`] is next due.
    pub const fn poll_timeout(&self) -> Instant {
        self.next_update
    }

    /// Reconsiders the rate, if an update is due. `jitter` is the link's measured jitter and
    /// `srtt` its smoothed RTT, `tx_bytes` the bytes sent on it in total and `loss` its forward
    /// loss rate. Returns whether an update was due.
    pub fn on_timeout(&mut self, now: Instant, link: LinkSample) -> bool {
        let LinkSample { jitter, srtt, tx_bytes, loss } = link;
        if now < self.next_update {
            return false;
        }
        self.next_update = now + self.tuning.update_interval;
        self.sent.push_back((now, tx_bytes));
        while self.sent.front().is_some_and(|&(t, _)| now.saturating_duration_since(t) > self.tuning.delivery_window) {
            self.sent.pop_front();
        }
        while self.recent.front().is_some_and(|&(t, _)| now.saturating_duration_since(t) > self.tuning.recent_window) {
            self.recent.pop_front();
        }
        let busy = std::mem::take(&mut self.busy);
        let lo = self.recent.iter().map(|&(_, r)| r).min();
        let hi = self.recent.iter().map(|&(_, r)| r).max();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            self.spread = (self.spread * 15 + Duration::from_micros(hi.saturating_sub(lo).max(0) as u64)) / 16;
        }
        // Near the floor: within what startup counts as no queue, and what a loaded link's
        // jitter alone holds its delays above their minimum.
        self.refresh.on_recent(now, lo, self.tuning.startup_queue + jitter.mul_f64(self.tuning.jitter_allowance));
        let rtt = srtt.unwrap_or(self.tuning.recent_window).max(self.tuning.update_interval);
        let target = self.queue_target(jitter);
        let queue = self.queue_delay();
        if self.refreshed(now, rtt, queue, target, self.queue_limit(jitter)) {
            return true;
        }
        let Some(queue) = queue else {
            return true;
        };
        self.queues.push_back(queue);
        if self.queues.len() > self.tuning.rising_updates + 1 {
            self.queues.pop_front();
        }
        let rising = self.queues.len() > self.tuning.rising_updates
            && self.queues.iter().zip(self.queues.iter().skip(1)).all(|(a, b)| b > a)
            && self
                .queues
                .back()
                .zip(self.queues.front())
                .is_some_and(|(&last, &first)| last.saturating_sub(first) >= self.tuning.rising_min);
        if queue >= self.tuning.startup_queue {
            self.refresh.emptied = false;
        }
        if queue > target {
            // One cut per RTT and window: the queue the last cut drains takes that long to show.
            if self.last_drain.is_some_and(|at| now.saturating_duration_since(at) < rtt + self.tuning.recent_window) {
                return true;
            }
            // The queue is ours only while the link delivers less than we put on it, or while it
            // keeps rising (a rate a few percent over the capacity, inside OVERLOAD_RATIO): a
            // steady queue on a link that carries what it is given is its jitter (a jittery link
            // holds packets behind a late one), or someone else's traffic, and cutting the rate
            // would not shorten it. Nor is a queue on a link that carries next to nothing (probes).
            // What was lost on the way (the link's own loss) was not delivered either, and is no
            // sign of a queue. A queue past the limit (queue_limit) is drained whatever its cause.
            let delivered = self.delivery_rate().map(|d| d * 8.0).filter(|&d| d >= self.tuning.min_drain_evidence_bps);
            let arrived = self.send_rate_bps().map(|sent| sent * (1.0 - loss.clamp(0.0, 0.5)));
            let loaded = self.loaded_delivery().is_some();
            if let (Some(delivered), Some(arrived)) = (delivered, arrived)
                && ((loaded && (rising || arrived > delivered * self.tuning.overload_ratio))
                    || queue > self.queue_limit(jitter))
            {
                // Below the delivery rate by enough to drain the excess within DRAIN_TIME. From
                // the delivery rate, not below our rate: a link that delivers more than our rate
                // (the scheduler had nowhere else to send) shows our rate was too low, and cutting
                // it further starved the link when it was left alone.
                let excess = (queue - target).as_secs_f64() / self.tuning.drain_time.as_secs_f64();
                let factor = (1.0 - excess).clamp(self.tuning.min_drain_factor, self.tuning.drain_factor);
                self.rate_bps = delivered * factor;
                self.last_drain = Some(now);
                self.phase = Phase::Draining;
            } else {
                self.phase = Phase::Holding;
            }
        } else if busy {
            let delivered = self.delivery_rate().map_or(0.0, |d| d * 8.0);
            // Fast growth while the path shows no queue at all and carries what it is given (the
            // queue shows only a window late): at the start, and whenever a link suddenly
            // has to carry more than the share its rate was set for (the others were cut).
            let fast = queue < self.tuning.startup_queue
                && delivered >= self.rate_bps * self.tuning.startup_delivery
                && !self.refresh.emptied;
            let grown =
                self.rate_bps.max(delivered) * if fast { self.tuning.startup_gain } else { self.tuning.probe_gain };
            // Not past what the link shows it carries (what it delivered, and what its own loss
            // took on the way: a lossy link must still grow), but never below where the rate was.
            let carried = delivered / (1.0 - loss.clamp(0.0, 0.5));
            let lead = if fast { self.tuning.max_lead } else { self.tuning.probe_lead };
            self.rate_bps = if delivered > 0.0 { grown.min((carried * lead).max(self.rate_bps)) } else { grown };
            self.phase = Phase::Probing;
        } else {
            self.phase = Phase::Holding;
        }
        self.rate_bps = self.rate_bps.max(self.tuning.min_rate_bps);
        if let Some(ceiling) = self.ceiling_bps {
            self.rate_bps = self.rate_bps.min(ceiling);
        }
        true
    }
}

/// The refresh of a link's delay floor ([`REFRESH_AFTER`]): the floor, when the delays last
/// came near it, and the refresh under way.
#[derive(Debug, Clone, Default)]
struct Refresh {
    /// The lowest delay seen since the last refresh that could not come down to it: the path's
    /// own delay.
    floor: Option<i64>,
    /// When the lowest recent delay last came near the floor.
    confirmed_at: Option<Instant>,
    /// When the last refresh began.
    began: Option<Instant>,
    /// The refresh under way.
    active: Option<ActiveRefresh>,
    /// The queue is empty because a refresh drained it, not because the link has room: the
    /// rate does not grow at [`STARTUP_GAIN`] until a queue shows again.
    emptied: bool,
}

/// A refresh under way.
#[derive(Debug, Clone, Copy)]
struct ActiveRefresh {
    /// When it ends at the latest.
    until: Instant,
    /// The rate to go back to.
    restore: f64,
    /// The lowest delay seen since it began.
    lowest: Option<i64>,
}

impl Refresh {
    /// Takes in a delay sample (microseconds, as [`RateControl::on_rtt`] keeps them).
    fn on_delay(&mut self, delay: i64) {
        self.floor = Some(self.floor.map_or(delay, |f| f.min(delay)));
        if let Some(active) = self.active.as_mut() {
            active.lowest = Some(active.lowest.map_or(delay, |l| l.min(delay)));
        }
    }

    /// Takes in the lowest recent delay: within `near` of the floor, the floor is confirmed.
    fn on_recent(&mut self, now: Instant, lowest: Option<i64>, near: Duration) {
        let near = i64::try_from(near.as_micros()).unwrap_or(i64::MAX);
        if lowest.zip(self.floor).is_some_and(|(lowest, floor)| lowest <= floor.saturating_add(near)) {
            self.confirmed_at = Some(now);
        }
    }

    /// Whether a refresh is due: none under way, and neither a confirmation nor a refresh for
    /// `after`.
    fn due(&self, now: Instant, after: Duration) -> bool {
        let stale = |at: Option<Instant>| at.is_none_or(|at| now.saturating_duration_since(at) >= after);
        self.active.is_none() && stale(self.confirmed_at) && stale(self.began)
    }

    fn start(&mut self, now: Instant, until: Instant, restore: f64) {
        self.began = Some(now);
        self.active = Some(ActiveRefresh { until, restore, lowest: None });
    }

    /// The rate to go back to, while a refresh is under way.
    fn restore(&self) -> Option<f64> {
        self.active.map(|a| a.restore)
    }

    /// Whether the floor was confirmed since the refresh began.
    fn confirmed(&self) -> bool {
        self.began.zip(self.confirmed_at).is_some_and(|(began, confirmed)| confirmed > began)
    }

    fn overdue(&self, now: Instant) -> bool {
        self.active.is_some_and(|a| now >= a.until)
    }

    /// Ends the refresh under way; with `longer` (it ran its course and the delays never came
    /// near the floor: the path itself got longer), the lowest delay it saw is the new floor.
    fn end(&mut self, longer: bool) {
        if let Some(active) = self.active.take()
            && longer
        {
            self.floor = active.lowest.or(self.floor);
        }
        self.emptied = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    /// What a run of the controller over a modelled link showed.
    struct Run {
        cc: RateControl,
        /// The share of the capacity used over the run's last half.
        utilization: f64,
        /// The longest queue over the run's last half.
        settled_queue: Duration,
        /// The longest queue over the whole run.
        worst_queue: Duration,
        /// The lowest and the highest rate over the run's last half, bits per second, outside
        /// refreshes (a refresh lowers the rate on purpose).
        settled_rates: (u64, u64),
    }

    /// A modelled link: `capacity` bits per second, losing `loss` of what is put on it on the
    /// way, with a queue that grows when the feed exceeds the capacity. A fluid model, stepped
    /// every [`FLUID_STEP`], with an RTT sample and a report each step.
    struct Fluid {
        capacity: f64,
        loss: f64,
        queue_bits: f64,
        delivered_bytes: u64,
        sent_bytes: u64,
    }

    impl Fluid {
        fn new(capacity: f64, loss: f64) -> Self {
            Self { capacity, loss, queue_bits: 0.0, delivered_bytes: 0, sent_bytes: 0 }
        }

        /// Step `i` (ending at `t0` + `i` steps): `offered` bits per second are put on the link
        /// over a path of `base` RTT, and `cc` is told what it would see. Returns the bits the
        /// link delivered and the queue it holds.
        fn step(&mut self, cc: &mut RateControl, t0: Instant, i: u32, offered: f64, base: Duration) -> (f64, Duration) {
            let now = t0 + FLUID_STEP * i;
            let bits = offered * FLUID_STEP.as_secs_f64();
            self.sent_bytes += (bits / 8.0) as u64;
            self.queue_bits += bits * (1.0 - self.loss);
            let served = self.queue_bits.min(self.capacity * FLUID_STEP.as_secs_f64());
            self.queue_bits -= served;
            self.delivered_bytes += (served / 8.0) as u64;
            let queue = Duration::from_secs_f64(self.queue_bits / self.capacity);
            let rtt = base + queue;
            cc.on_rtt(now, rtt, None);
            cc.on_delivered((FLUID_STEP * i).as_micros() as u32, self.delivered_bytes);
            let sample =
                LinkSample { srtt: Some(rtt), tx_bytes: self.sent_bytes, loss: self.loss, ..LinkSample::default() };
            cc.on_timeout(now, sample);
            (served, queue)
        }

        /// [`Fluid::step`], fed `demand` bits per second or the controller's rate if lower (the
        /// scheduler finds the link busy when the demand is higher).
        fn demand(
            &mut self,
            cc: &mut RateControl,
            t0: Instant,
            i: u32,
            demand: f64,
            base: Duration,
        ) -> (f64, Duration) {
            let rate = cc.rate_bps() as f64;
            if demand > rate {
                cc.on_busy();
            }
            self.step(cc, t0, i, demand.min(rate), base)
        }
    }

    /// [`Fluid`]'s step.
    const FLUID_STEP: Duration = Duration::from_millis(5);

    /// A [`Fluid`] link of `capacity` and `base` RTT fed `demand` for `secs`, the controller
    /// starting at `initial`.
    fn run(capacity: f64, base: Duration, initial: u64, secs: f64, demand: f64) -> Run {
        run_tuned(CcTuning::default(), capacity, base, initial, secs, demand)
    }

    /// [`run`], with the controller tuned by `tuning`.
    fn run_tuned(tuning: CcTuning, capacity: f64, base: Duration, initial: u64, secs: f64, demand: f64) -> Run {
        let t0 = start();
        let mut cc = RateControl::new(t0, initial, None, tuning);
        let mut link = Fluid::new(capacity, 0.0);
        let mut settled_rates = (u64::MAX, 0);
        let (mut worst_queue, mut settled_queue, mut settled_bits) = (Duration::ZERO, Duration::ZERO, 0.0);
        let steps = (secs / FLUID_STEP.as_secs_f64()) as u32;
        for i in 1..=steps {
            let (served, queue) = link.demand(&mut cc, t0, i, demand, base);
            worst_queue = worst_queue.max(queue);
            if i > steps / 2 {
                settled_queue = settled_queue.max(queue);
                settled_bits += served;
                if cc.phase() != Phase::Refreshing {
                    settled_rates = (settled_rates.0.min(cc.rate_bps()), settled_rates.1.max(cc.rate_bps()));
                }
            }
        }
        let utilization = settled_bits / (capacity * secs / 2.0);
        println!("utilization {utilization:.3}, queue settled {settled_queue:?}, worst {worst_queue:?}");
        Run { cc, utilization, settled_queue, worst_queue, settled_rates }
    }

    /// A 20 Mbit/s [`Fluid`] link fed `demand` for `steps`, over a path whose RTT is `base` at
    /// each step's end. Returns whether the controller was refreshing after each step.
    fn fluid(
        cc: &mut RateControl,
        t0: Instant,
        steps: u32,
        demand: f64,
        base: impl Fn(Instant) -> Duration,
    ) -> Vec<bool> {
        let mut link = Fluid::new(20e6, 0.0);
        (1..=steps)
            .map(|i| {
                link.demand(cc, t0, i, demand, base(t0 + FLUID_STEP * i));
                cc.phase() == Phase::Refreshing
            })
            .collect()
    }

    /// The refreshes in a [`fluid`] run: when each began and how long it lasted.
    fn refreshes(refreshing: &[bool]) -> Vec<(Duration, Duration)> {
        let mut found = Vec::new();
        let mut began = None;
        for (i, &on) in refreshing.iter().enumerate() {
            let at = FLUID_STEP * (i as u32 + 1);
            match (on, began) {
                (true, None) => began = Some(at),
                (false, Some(from)) => {
                    found.push((from, at - from));
                    began = None;
                }
                _ => {}
            }
        }
        found
    }

    #[test]
    fn a_refresh_ends_as_soon_as_the_floor_shows() {
        // A busy 20 Mbit/s link keeps a standing queue, so it is refreshed; the path has not
        // changed, so the drained queue shows the floor well before REFRESH_TIME, and the rate
        // goes back at once rather than staying low for the whole of it.
        let t0 = start();
        let mut cc = RateControl::new(t0, 5_000_000, None, CcTuning::default());
        let lasted: Vec<Duration> =
            refreshes(&fluid(&mut cc, t0, 6000, 100e6, |_| Duration::from_millis(30))).iter().map(|r| r.1).collect();
        assert!(!lasted.is_empty(), "a link that keeps a standing queue for 30 s was never refreshed");
        for d in &lasted {
            assert!(*d < REFRESH_TIME, "a refresh lasted {d:?} though the path never changed: {lasted:?}");
        }
    }

    #[test]
    fn a_path_that_gets_longer_for_good_is_refreshed_once_and_then_taken_as_it_is() {
        // A 20 Mbit/s link carries a 15 Mbit/s stream with no queue, and its path lengthens by
        // 30 ms at 10 s, for good (a route change). Its delays never come back down to the floor,
        // so one refresh drains the link; what it sees is the path's new delay, so no second
        // refresh follows (taking the old floor as the path's, one would follow every
        // REFRESH_AFTER), and once the old minimum has left the window the link reads no queue
        // and carries the stream as before.
        let t0 = start();
        let mut cc = RateControl::new(t0, 5_000_000, None, CcTuning::default());
        let base = |now: Instant| Duration::from_millis(if now - t0 < Duration::from_secs(10) { 30 } else { 60 });
        let refreshes: Vec<f64> =
            refreshes(&fluid(&mut cc, t0, 8000, 15e6, base)).iter().map(|r| r.0.as_secs_f64()).collect();
        let late: Vec<&f64> = refreshes.iter().filter(|&&t| t > 10.0).collect();
        assert_eq!(late.len(), 1, "refreshes after the path changed, at (s): {late:?}");
        assert!(
            cc.queue_delay() < Some(Duration::from_millis(5)),
            "the longer path reads as {:?} of queue",
            cc.queue_delay()
        );
        assert!(cc.rate_bps() >= 15_000_000, "the rate is {:.1} Mbit/s for 15", cc.rate_bps() as f64 / 1e6);
    }

    #[test]
    fn a_busy_link_with_no_queue_grows_to_use_its_capacity_with_a_short_queue() {
        let r = run(20e6, Duration::from_millis(30), 5_000_000, 10.0, 100e6);
        assert!(r.utilization >= 0.9, "used {:.2} of the capacity once settled", r.utilization);
        assert!(r.settled_queue <= Duration::from_millis(60), "the queue reached {:?} once settled", r.settled_queue);
    }

    #[test]
    fn a_rate_twice_the_capacity_drops_and_drains_the_queue_it_built() {
        let r = run(5e6, Duration::from_millis(30), 10_000_000, 10.0, 100e6);
        assert!(r.worst_queue <= Duration::from_millis(250), "the queue peaked at {:?}", r.worst_queue);
        assert!(r.utilization >= 0.85, "used {:.2} of the capacity once settled", r.utilization);
        assert!(r.settled_queue <= Duration::from_millis(60), "the queue reached {:?} once settled", r.settled_queue);
    }

    /// A busy [`Fluid`] link of `capacity` with `loss` on the way and a 30 ms RTT, fed for `secs`
    /// at `load` bits per second or, without one, at the controller's rate: the highest rate over
    /// the run's second half. The scheduler finds the link busy at every update (a bursty load
    /// reaches the rate now and then even when its average does not).
    fn peak_rate(capacity: f64, loss: f64, load: Option<f64>, secs: f64) -> f64 {
        let t0 = start();
        let mut cc = RateControl::new(t0, 5_000_000, None, CcTuning::default());
        let mut link = Fluid::new(capacity, loss);
        let steps = (secs / FLUID_STEP.as_secs_f64()) as u32;
        let mut peak = 0.0f64;
        for i in 1..=steps {
            cc.on_busy();
            let offered = load.unwrap_or(cc.rate_bps() as f64);
            link.step(&mut cc, t0, i, offered, Duration::from_millis(30));
            if i > steps / 2 {
                peak = peak.max(cc.rate_bps() as f64);
            }
        }
        peak
    }

    #[test]
    fn a_link_given_all_its_rate_allows_keeps_the_rate_steady() {
        // Past startup the rate sits near the capacity: each step past what the link carries
        // builds a queue that a drain takes back, so the steps are small.
        let swing = |tuning| {
            let r = run_tuned(tuning, 20e6, Duration::from_millis(30), 5_000_000, 10.0, 100e6);
            let (lo, hi) = r.settled_rates;
            println!("rate {:.1}..{:.1} Mbit/s, used {:.3}", lo as f64 / 1e6, hi as f64 / 1e6, r.utilization);
            (hi as f64 / lo as f64, r.utilization)
        };
        let (steady, used) = swing(CcTuning::default());
        let (wide, _) = swing(CcTuning { probe_lead: MAX_LEAD, ..CcTuning::default() });
        assert!(steady <= 1.2, "the rate swings by {steady:.3}x (with steps as large as startup's: {wide:.3}x)");
        assert!(wide > 1.2, "with steps as large as startup's the rate swings by {wide:.3}x: the test shows nothing");
        assert!(used >= 0.9, "used {used:.3} of the capacity");
    }

    #[test]
    fn a_busy_links_rate_stays_near_what_it_carries() {
        // The link carries all it is given (19 Mbit/s of its 20) and shows no queue, so nothing
        // but what it delivered holds the rate near it.
        let peak = peak_rate(20e6, 0.0, Some(19e6), 10.0);
        assert!(peak <= 19e6 * MAX_LEAD * STARTUP_GAIN, "the rate reached {:.1} Mbit/s for 19 carried", peak / 1e6);
    }

    #[test]
    fn a_lossy_link_still_grows_to_its_capacity() {
        // 20% of what is sent is lost on the way: what arrives is all the link can be credited.
        let peak = peak_rate(20e6, 0.2, None, 10.0);
        assert!(peak >= 20e6 * 0.9, "with 20% loss the rate only reached {:.1} Mbit/s", peak / 1e6);
    }

    #[test]
    fn an_idle_link_does_not_grow() {
        let r = run(20e6, Duration::from_millis(30), 5_000_000, 3.0, 1e6);
        assert_eq!(r.cc.rate_bps(), 5_000_000, "an app-limited link proves no capacity");
    }

    #[test]
    fn a_configured_rate_is_the_ceiling() {
        let t0 = start();
        let mut cc = RateControl::new(t0, 10_000_000, Some(8_000_000), CcTuning::default());
        assert_eq!(cc.rate_bps(), 8_000_000);
        cc.on_rtt(t0, Duration::from_millis(20), None);
        cc.on_busy();
        cc.on_timeout(t0 + UPDATE_INTERVAL, LinkSample::default());
        assert_eq!(cc.rate_bps(), 8_000_000);
    }

    /// A link that carries 8 Mbit/s of which 7.5 arrive (so a queue over the target would be
    /// drained), with a forward delay of 40 ms throughout; its reports come back in 15 ms for 2 s
    /// (on a fast link) and then in 70 ms (that link was cut). Returns the controller, given the
    /// forward delays or only the round trips.
    fn way_back_lengthens(forward_delays: bool) -> RateControl {
        let t0 = start();
        let mut cc = RateControl::new(t0, 10_000_000, None, CcTuning::default());
        let (step, forward) = (Duration::from_millis(10), Duration::from_millis(40));
        // The peer's clock started long before ours.
        let offset_us = 3_000_000_000u64;
        for i in 1..=400u32 {
            let now = t0 + step * i;
            let back = Duration::from_millis(if i <= 200 { 15 } else { 70 });
            let peer_now = ((now - t0).as_micros() as u64 + offset_us) as u32;
            let raw = (forward.as_micros() as u64 + offset_us) as u32;
            cc.on_rtt(now, forward + back, forward_delays.then_some(raw));
            cc.on_delivered(peer_now, u64::from(i) * 7_500_000 / 8 / 100);
            let sample = LinkSample {
                srtt: cc.smoothed_rtt(),
                tx_bytes: u64::from(i) * 8_000_000 / 8 / 100,
                ..LinkSample::default()
            };
            cc.on_timeout(now, sample);
        }
        cc
    }

    #[test]
    fn clocks_that_drift_apart_by_an_hour_show_no_queue() {
        // The peer's clock loses 20 minutes against ours between samples 11 s apart (each alone
        // in its minimum's bucket): past ±2³¹ µs from the first, where a wrapping difference
        // taken from the first sample would jump by 71 minutes.
        let t0 = start();
        let mut cc = RateControl::new(t0, 10_000_000, None, CcTuning::default());
        let twenty_minutes = 1_200_000_000u32;
        for i in 0..4u32 {
            let now = t0 + Duration::from_secs(11) * i;
            cc.on_rtt(now, Duration::from_millis(50), Some(0u32.wrapping_sub(twenty_minutes * i)));
            cc.on_timeout(now + UPDATE_INTERVAL, LinkSample::default());
            assert_eq!(cc.queue_delay(), Some(Duration::ZERO), "sample {i}");
        }
    }

    #[test]
    fn a_longer_way_back_is_no_queue() {
        let cc = way_back_lengthens(true);
        assert!(cc.queue_delay() < Some(Duration::from_millis(1)), "queue read as {:?}", cc.queue_delay());
        assert_eq!(cc.rate_bps(), 10_000_000, "the rate was cut ({:?})", cc.phase());
        // What the test guards against: the round trips alone read the way back as a queue.
        let rtt_only = way_back_lengthens(false);
        assert!(rtt_only.queue_delay() >= Some(Duration::from_millis(50)), "{:?}", rtt_only.queue_delay());
        assert!(rtt_only.rate_bps() < 10_000_000);
    }
}
