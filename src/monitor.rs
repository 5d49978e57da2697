//! Per-link liveness and quality.
//!
//! Every link is probed, idle ones included, so a link held out of rotation never "measures
//! beautifully" and then collapses when it takes the stream. From the probes, the replies and the
//! peer's receive reports the monitor measures, per link and per direction:
//! * RTT (EWMA and mean deviation, as RFC 6298) and the minimum RTT;
//! * loss in each direction, from the link's own packet numbers, never from the frame sequence;
//! * the delivery rate the peer saw;
//! * one-way delay, relative to the peer's clock, with a windowed minimum and maximum and jitter.
//!
//! States and transitions:
//! ```text
//!            N good probes (N grows with flaps)          loss/RTT bad
//! Probing ────────────────────────────────────▶ Up ◀────────────────▶ Degraded
//!    ▲                                           │  loss/RTT good again    │
//!    │ a reply                                   │ missed probes, stalled  │
//!    │ (or carrier back)                         ▼ feedback, carrier lost  │
//!    └──────────────────────────────────────── Down ◀──────────────────────┘
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{LinkReport, expand_u32};

/// How often every link is probed, busy or idle.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// A link goes down when this many consecutive probes are unanswered past their timeout.
pub const MISSED_PROBES_DOWN: usize = 3;
/// The probe timeout before any RTT sample.
pub const INITIAL_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The least margin over the smoothed RTT a probe gets before it counts as missed (RFC 6298's
/// 4 × RTTVAR, but never below this, so a very steady link does not time out on a hiccup).
pub const MIN_RTT_MARGIN: Duration = Duration::from_millis(15);
/// Consecutive answered probes before a link comes up, at flap penalty 0.
pub const UP_AFTER_PROBES: u32 = 4;
/// Each down transition doubles the probes a link needs to come up, up to `2^MAX_FLAP_PENALTY`.
pub const MAX_FLAP_PENALTY: u32 = 5;
/// The flap penalty drops by one after this long without a down transition.
pub const FLAP_DECAY: Duration = Duration::from_secs(10);
/// Loss and rate are measured over this window.
pub const QUALITY_WINDOW: Duration = Duration::from_secs(2);
/// A link whose loss in either direction reaches this is degraded.
pub const DEGRADED_LOSS: f64 = 0.10;
/// A degraded link recovers when its loss falls to this (hysteresis).
pub const RECOVERED_LOSS: f64 = 0.03;
/// A link whose smoothed RTT rises this far above its minimum is degraded (a filling buffer).
pub const DEGRADED_RTT_RISE: Duration = Duration::from_millis(150);
/// Loss is judged only once this many packets were expected in the window.
pub const MIN_LOSS_SAMPLES: u64 = 20;
/// Data sent on a link must show up in the peer's reports within the probe timeout plus this;
/// otherwise the forward direction has stalled and the link goes down.
pub const FEEDBACK_GRACE: Duration = Duration::from_millis(100);
/// One-way delay minimum and maximum are kept over this window (in [`DELAY_BUCKETS`] buckets).
pub const DELAY_WINDOW: Duration = Duration::from_secs(2);
/// Buckets of the delay window.
pub const DELAY_BUCKETS: usize = 4;

/// Outstanding probes remembered per link.
const MAX_OUTSTANDING: usize = 64;

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkState {
    /// Proving itself: not used for data yet.
    Probing,
    /// Healthy and used.
    Up,
    /// Used, but lossy or slow; schedulers prefer Up links.
    Degraded,
    /// Not used.
    Down,
}

impl LinkState {
    /// Whether data may be scheduled on the link.
    pub const fn is_usable(self) -> bool {
        matches!(self, Self::Up | Self::Degraded)
    }

    /// A lower-case name for logs and status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Probing => "probing",
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// Why a link changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateReason {
    /// Enough consecutive probes were answered.
    ProbesAnswered,
    /// Probes went unanswered.
    ProbesMissed,
    /// Data sent on the link never showed up in the peer's reports.
    FeedbackStalled,
    /// The interface lost carrier.
    CarrierLost,
    /// The interface regained carrier.
    CarrierRestored,
    /// Loss or RTT crossed the degraded threshold.
    QualityDropped,
    /// Loss and RTT are good again.
    QualityRecovered,
    /// A reply arrived on a down link.
    ReplyOnDownLink,
}

/// A state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The old state.
    pub from: LinkState,
    /// The new state.
    pub to: LinkState,
    /// Why.
    pub reason: StateReason,
}

/// A snapshot of a link's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkQuality {
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// RTT mean deviation.
    pub rttvar: Duration,
    /// Minimum RTT seen.
    pub min_rtt: Option<Duration>,
    /// Loss from the peer to us over the quality window (0..=1).
    pub rx_loss: f64,
    /// Loss from us to the peer over the quality window, from its reports (0..=1).
    pub tx_loss: f64,
    /// Bytes per second the peer received on this link over the quality window.
    pub delivery_rate: f64,
    /// Interarrival jitter of the peer's packets (RFC 3550).
    pub jitter: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u64,
    sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct CounterSample {
    at: Instant,
    highest: u64,
    received: u64,
    bytes: u64,
}

/// Windowed loss and rate from cumulative counters.
#[derive(Debug, Default)]
struct CounterWindow {
    samples: VecDeque<CounterSample>,
}

impl CounterWindow {
    fn push(&mut self, sample: CounterSample) {
        while self.samples.len() > 1
            && self.samples.get(1).is_some_and(|s| sample.at.saturating_duration_since(s.at) >= QUALITY_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    fn span(&self) -> Option<(CounterSample, CounterSample)> {
        Some((*self.samples.front()?, *self.samples.back()?))
    }

    /// Loss over the window, once enough packets were expected.
    fn loss(&self) -> Option<f64> {
        let (old, new) = self.span()?;
        let expected = new.highest.saturating_sub(old.highest);
        if expected < MIN_LOSS_SAMPLES {
            return None;
        }
        let received = new.received.saturating_sub(old.received).min(expected);
        Some(1.0 - received as f64 / expected as f64)
    }

    fn rate(&self) -> f64 {
        let Some((old, new)) = self.span() else {
            return 0.0;
        };
        let secs = new.at.saturating_duration_since(old.at).as_secs_f64();
        if secs <= 0.0 { 0.0 } else { new.bytes.saturating_sub(old.bytes) as f64 / secs }
    }
}

/// Windowed min and max of one-way delay samples (µs relative to a session base).
#[derive(Debug, Default)]
struct DelayWindow {
    buckets: VecDeque<(Instant, i64, i64)>,
    last: Option<i64>,
    jitter_us: f64,
}

impl DelayWindow {
    fn push(&mut self, now: Instant, owd_us: i64) {
        let bucket_len = DELAY_WINDOW / DELAY_BUCKETS as u32;
        match self.buckets.back_mut() {
            Some((start, lo, hi)) if now.saturating_duration_since(*start) < bucket_len => {
                *lo = (*lo).min(owd_us);
                *hi = (*hi).max(owd_us);
            }
            _ => {
                self.buckets.push_back((now, owd_us, owd_us));
                while self.buckets.len() > DELAY_BUCKETS {
                    self.buckets.pop_front();
                }
            }
        }
        if let Some(last) = self.last {
            let d = (owd_us - last).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last = Some(owd_us);
    }

    fn range(&self, now: Instant) -> Option<(i64, i64)> {
        self.buckets.iter().filter(|(start, _, _)| now.saturating_duration_since(*start) < DELAY_WINDOW).fold(
            None,
            |acc, &(_, lo, hi)| match acc {
                None => Some((lo, hi)),
                Some((a, b)) => Some((a.min(lo), b.max(hi))),
            },
        )
    }
}

/// Liveness and quality of one link.
#[derive(Debug)]
pub struct LinkMonitor {
    state: LinkState,
    carrier: bool,
    usable_since: Option<Instant>,
    good_probes: u32,
    flap_penalty: u32,
    last_down: Option<Instant>,
    outstanding: VecDeque<Outstanding>,
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    // What we receive from the peer on this link.
    rx_highest: Option<u64>,
    rx_received: u64,
    rx_bytes: u64,
    rx_window: CounterWindow,
    delay: DelayWindow,
    // What the peer reports it received from us on this link.
    report: Option<CounterSample>,
    tx_window: CounterWindow,
    /// The first data packet sent since the peer last reported progress, and when.
    unconfirmed_data: Option<Outstanding>,
    last_report: Option<Instant>,
}

impl LinkMonitor {
    /// A new link starts probing.
    pub fn new() -> Self {
        Self {
            state: LinkState::Probing,
            carrier: true,
            usable_since: None,
            good_probes: 0,
            flap_penalty: 0,
            last_down: None,
            outstanding: VecDeque::new(),
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            rx_highest: None,
            rx_received: 0,
            rx_bytes: 0,
            rx_window: CounterWindow::default(),
            delay: DelayWindow::default(),
            report: None,
            tx_window: CounterWindow::default(),
            unconfirmed_data: None,
            last_report: None,
        }
    }

    /// The current state.
    pub const fn state(&self) -> LinkState {
        self.state
    }

    /// Whether the interface has carrier.
    pub const fn carrier(&self) -> bool {
        self.carrier
    }

    /// Since when the link has been usable without interruption.
    pub const fn usable_since(&self) -> Option<Instant> {
        self.usable_since
    }

    /// The current flap penalty (0 = none).
    pub const fn flap_penalty(&self) -> u32 {
        self.flap_penalty
    }

    /// Consecutive answered probes needed to come up now.
    pub fn probes_to_come_up(&self) -> u32 {
        UP_AFTER_PROBES << self.flap_penalty
    }

    /// The probe timeout: smoothed RTT plus four mean deviations (at least [`MIN_RTT_MARGIN`]).
    pub fn probe_timeout(&self) -> Duration {
        match self.srtt {
            Some(srtt) => srtt + (self.rttvar * 4).max(MIN_RTT_MARGIN),
            None => INITIAL_PROBE_TIMEOUT,
        }
    }

    /// The measurements so far.
    pub fn quality(&self) -> LinkQuality {
        LinkQuality {
            srtt: self.srtt,
            rttvar: self.rttvar,
            min_rtt: self.min_rtt,
            rx_loss: self.rx_window.loss().unwrap_or(0.0),
            tx_loss: self.tx_window.loss().unwrap_or(0.0),
            delivery_rate: self.tx_window.rate(),
            jitter: Duration::from_micros(self.delay.jitter_us as u64),
        }
    }

    /// The windowed minimum and maximum one-way delay (µs, relative to the session's base).
    pub fn delay_range(&self, now: Instant) -> Option<(i64, i64)> {
        self.delay.range(now)
    }

    /// Receive counters for a [`LinkReport`]: highest packet number, packets and bytes.
    pub const fn rx_counters(&self) -> (Option<u64>, u64, u64) {
        (self.rx_highest, self.rx_received, self.rx_bytes)
    }

    /// Whether a probe may be sent: not while the interface has no carrier.
    pub const fn can_probe(&self) -> bool {
        self.carrier
    }

    /// Records a probe sent with path packet number `seq`.
    pub fn on_probe_sent(&mut self, now: Instant, seq: u64) {
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(Outstanding { seq, sent: now });
    }

    /// Records a data packet sent with path packet number `seq`.
    pub fn on_data_sent(&mut self, now: Instant, seq: u64) {
        if self.unconfirmed_data.is_none() {
            self.unconfirmed_data = Some(Outstanding { seq, sent: now });
        }
    }

    /// Records an authenticated packet from the peer on this link.
    pub fn on_packet_received(&mut self, now: Instant, seq: u64, len: usize, owd_us: i64) {
        self.rx_highest = Some(self.rx_highest.map_or(seq, |h| h.max(seq)));
        self.rx_received += 1;
        self.rx_bytes += len as u64;
        self.delay.push(now, owd_us);
    }

    /// Handles a reply to the probe with the given low 32 bits of its packet number.
    pub fn on_probe_reply(&mut self, now: Instant, echo_seq: u32) -> Option<Transition> {
        let newest = self.outstanding.back()?.seq;
        let seq = expand_u32(newest + 1, echo_seq);
        let position = self.outstanding.iter().position(|p| p.seq == seq)?;
        let sent = self.outstanding[position].sent;
        // Older unanswered probes are lost: their replies would not change anything, and the
        // run of consecutive good probes starts again.
        if position > 0 {
            self.good_probes = 0;
        }
        self.outstanding.drain(..=position);
        self.on_rtt_sample(now.saturating_duration_since(sent));
        self.good_probes = self.good_probes.saturating_add(1);
        match self.state {
            LinkState::Down if self.carrier => {
                self.good_probes = 1;
                self.set_state(now, LinkState::Probing, StateReason::ReplyOnDownLink)
            }
            LinkState::Probing if self.good_probes >= self.probes_to_come_up() => {
                let to = if self.quality_is_bad() { LinkState::Degraded } else { LinkState::Up };
                self.set_state(now, to, StateReason::ProbesAnswered)
            }
            _ => None,
        }
    }

    /// Handles the peer's report of what it received from us on this link.
    pub fn on_report(&mut self, now: Instant, report: &LinkReport) {
        let expand = |prev: Option<u64>, low: u32| expand_u32(prev.map_or(0, |p| p + 1), low);
        let previous = self.report;
        let sample = CounterSample {
            at: now,
            highest: expand(previous.map(|p| p.highest), report.highest),
            received: expand(previous.map(|p| p.received), report.received),
            bytes: expand(previous.map(|p| p.bytes), report.received_bytes),
        };
        if previous.is_some_and(|p| sample.highest < p.highest) {
            // A report overtaken by a newer one on a faster link.
            return;
        }
        self.report = Some(sample);
        self.tx_window.push(sample);
        self.last_report = Some(now);
        if self.unconfirmed_data.is_some_and(|d| sample.highest >= d.seq) {
            self.unconfirmed_data = None;
        }
    }

    /// The interface lost or regained carrier.
    pub fn on_carrier(&mut self, now: Instant, up: bool) -> Option<Transition> {
        self.carrier = up;
        self.outstanding.clear();
        self.unconfirmed_data = None;
        self.good_probes = 0;
        if up {
            (self.state == LinkState::Down)
                .then(|| self.set_state(now, LinkState::Probing, StateReason::CarrierRestored))
                .flatten()
        } else {
            self.set_state(now, LinkState::Down, StateReason::CarrierLost)
        }
    }

    /// Samples the receive counters and decays the flap penalty; call once per probe interval.
    pub fn on_tick(&mut self, now: Instant) {
        self.decay_penalty(now);
        self.sample_rx(now);
    }

    /// Checks timeouts and quality; call at every probe tick and at [`Self::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        if self.missed_probes(now) >= MISSED_PROBES_DOWN {
            self.good_probes = 0;
            if self.state != LinkState::Down {
                return self.set_state(now, LinkState::Down, StateReason::ProbesMissed);
            }
            return None;
        }
        if self.feedback_stalled(now) {
            self.unconfirmed_data = None;
            self.good_probes = 0;
            if self.state.is_usable() {
                return self.set_state(now, LinkState::Down, StateReason::FeedbackStalled);
            }
        }
        match self.state {
            LinkState::Up if self.quality_is_bad() => {
                self.set_state(now, LinkState::Degraded, StateReason::QualityDropped)
            }
            LinkState::Degraded if self.quality_is_good() => {
                self.set_state(now, LinkState::Up, StateReason::QualityRecovered)
            }
            _ => None,
        }
    }

    /// When the monitor next needs [`Self::handle_timeout`], apart from the probe tick.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.probe_timeout();
        let probes = self
            .outstanding
            .get(MISSED_PROBES_DOWN - 1)
            .filter(|_| self.state != LinkState::Down)
            .map(|p| p.sent + timeout);
        let feedback =
            self.unconfirmed_data.filter(|_| self.state.is_usable()).map(|d| d.sent + timeout + FEEDBACK_GRACE);
        match (probes, feedback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn missed_probes(&self, now: Instant) -> usize {
        let timeout = self.probe_timeout();
        self.outstanding.iter().take_while(|p| p.sent + timeout <= now).count()
    }

    fn feedback_stalled(&self, now: Instant) -> bool {
        let Some(data) = self.unconfirmed_data else {
            return false;
        };
        let deadline = data.sent + self.probe_timeout() + FEEDBACK_GRACE;
        // Only a report sent after the data should have arrived counts as silence about it.
        now >= deadline && self.last_report.is_some_and(|r| r >= deadline - FEEDBACK_GRACE)
    }

    fn sample_rx(&mut self, now: Instant) {
        if let Some(highest) = self.rx_highest {
            self.rx_window.push(CounterSample { at: now, highest, received: self.rx_received, bytes: self.rx_bytes });
        }
    }

    fn on_rtt_sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    fn loss(&self) -> f64 {
        let rx = self.rx_window.loss().unwrap_or(0.0);
        let tx = self.tx_window.loss().unwrap_or(0.0);
        rx.max(tx)
    }

    fn rtt_risen(&self) -> bool {
        matches!((self.srtt, self.min_rtt), (Some(s), Some(m)) if s > m + DEGRADED_RTT_RISE)
    }

    fn quality_is_bad(&self) -> bool {
        self.loss() >= DEGRADED_LOSS || self.rtt_risen()
    }

    fn quality_is_good(&self) -> bool {
        self.loss() <= RECOVERED_LOSS && !self.rtt_risen()
    }

    fn decay_penalty(&mut self, now: Instant) {
        if let Some(last) = self.last_down
            && self.flap_penalty > 0
            && now.saturating_duration_since(last) >= FLAP_DECAY
        {
            self.flap_penalty -= 1;
            self.last_down = Some(now);
        }
    }

    fn set_state(&mut self, now: Instant, to: LinkState, reason: StateReason) -> Option<Transition> {
        let from = self.state;
        if from == to {
            return None;
        }
        if to == LinkState::Down {
            if from != LinkState::Probing || self.last_down.is_some() {
                self.flap_penalty = (self.flap_penalty + 1).min(MAX_FLAP_PENALTY);
            }
            self.last_down = Some(now);
            self.good_probes = 0;
        }
        if to.is_usable() && !from.is_usable() {
            self.usable_since = Some(now);
        } else if !to.is_usable() {
            self.usable_since = None;
        }
        self.state = to;
        Some(Transition { from, to, reason })
    }
}

impl Default for LinkMonitor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LinkId;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    /// Probes every interval, answered after `rtt`, until the link is up; returns the time.
    fn bring_up(m: &mut LinkMonitor, t0: Instant, rtt: Duration) -> Instant {
        let mut t = t0;
        for seq in 0.. {
            m.on_probe_sent(t, seq);
            m.on_probe_reply(t + rtt, seq as u32);
            m.handle_timeout(t + rtt);
            t += PROBE_INTERVAL;
            if m.state() == LinkState::Up || seq > 1000 {
                break;
            }
        }
        t
    }

    #[test]
    fn a_link_comes_up_after_consecutive_answered_probes() {
        let t0 = start();
        let mut m = LinkMonitor::new();
        let t = bring_up(&mut m, t0, Duration::from_millis(30));
        assert_eq!(m.state(), LinkState::Up);
        assert_eq!(t, t0 + PROBE_INTERVAL * UP_AFTER_PROBES);
        assert_eq!(m.quality().srtt, Some(Duration::from_millis(30)));
    }

    #[test]
    fn unanswered_probes_take_a_link_down_within_the_detection_time() {
        let t0 = start();
        let mut m = LinkMonitor::new();
        let mut t = bring_up(&mut m, t0, Duration::from_millis(30));
        let cut = t;
        let mut seq = 100;
        while m.state() != LinkState::Down {
            m.on_probe_sent(t, seq);
            seq += 1;
            let next = t + PROBE_INTERVAL;
            while let Some(deadline) = m.poll_timeout().filter(|d| *d < next) {
                m.handle_timeout(deadline);
                if m.state() == LinkState::Down {
                    t = deadline;
                    break;
                }
            }
            if m.state() != LinkState::Down {
                t = next;
            }
        }
        let detection = t - cut;
        assert!(detection <= Duration::from_millis(250), "detected after {detection:?}");
        assert_eq!(m.probes_to_come_up(), UP_AFTER_PROBES * 2, "one flap doubles the probes needed");
    }

    #[test]
    fn carrier_loss_takes_a_link_down_at_once_and_carrier_back_probes_again() {
        let t0 = start();
        let mut m = LinkMonitor::new();
        let t = bring_up(&mut m, t0, Duration::from_millis(30));
        let tr = m.on_carrier(t, false).unwrap();
        assert_eq!((tr.from, tr.to, tr.reason), (LinkState::Up, LinkState::Down, StateReason::CarrierLost));
        assert!(!m.can_probe());
        let tr = m.on_carrier(t, true).unwrap();
        assert_eq!(tr.to, LinkState::Probing);
    }

    #[test]
    fn reported_forward_loss_degrades_a_link_and_recovery_restores_it() {
        let t0 = start();
        let mut m = LinkMonitor::new();
        let mut t = bring_up(&mut m, t0, Duration::from_millis(30));
        let report = |highest: u32, received: u32| LinkReport {
            link: LinkId::new(0),
            highest,
            received,
            received_bytes: received * 100,
        };
        for i in 0..40u32 {
            m.on_report(t, &report(i * 10, i * 8));
            m.on_probe_sent(t, 1000 + u64::from(i));
            m.on_probe_reply(t, 1000 + i);
            m.handle_timeout(t);
            t += PROBE_INTERVAL;
        }
        assert_eq!(m.state(), LinkState::Degraded);
        assert!((m.quality().tx_loss - 0.2).abs() < 0.01);
        for i in 40..120u32 {
            m.on_report(t, &report(i * 10, 320 + (i - 40) * 10));
            m.on_probe_sent(t, 1000 + u64::from(i));
            m.on_probe_reply(t, 1000 + i);
            m.handle_timeout(t);
            t += PROBE_INTERVAL;
        }
        assert_eq!(m.state(), LinkState::Up);
    }
}
