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
//!    │ a reply                                   │ silence, stalled        │
//!    │ (or carrier back)                         ▼ feedback, carrier lost  │
//!    └──────────────────────────────────────── Down ◀──────────────────────┘
//! ```
//!
//! A link goes down on evidence about each direction, not on a run of lost probe replies (which
//! a link with 5% loss each way produces every few hundred probes):
//! * **silence**: nothing authenticated arrived on the link for [`LinkMonitor::silence_timeout`],
//!   although the peer probes it every interval and answers our probes: the way back is dead;
//! * **stalled feedback**: the peer's reports (which arrive on every link) stopped confirming the
//!   packets we sent on this link, probes or data: the way out is dead;
//! * **unanswered data**: while data flows on a link, the peer answers on that link at least every
//!   [`ACK_INTERVAL`]; data left unanswered for a probe timeout (or one probe interval plus four
//!   jitters, if sooner, but never less than one probe interval) plus that long means the link is dead, which is noticed well before the
//!   silence timeout on a busy link;
//! * **carrier loss** reported by the OS: at once.
//!
//! The constants below are the defaults of [`MonitorTuning`] (`tuning.monitor`); a monitor reads
//! its tuning, so any of them can be varied per session without a rebuild.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::tuning::MonitorTuning;
use crate::wire::{LinkReport, expand_u32};

/// How often every link is probed, busy or idle.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// A link goes down when it has been silent for the probe timeout plus this many more probe
/// intervals (so about this many of the peer's probes and replies in a row were missed).
pub const MISSED_PROBES_DOWN: u32 = 3;
/// While data arrives on a link, the receiver sends a report back on it at least this often.
pub const ACK_INTERVAL: Duration = Duration::from_millis(10);
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
/// Loss and rate are measured over at least this window.
pub const QUALITY_WINDOW: Duration = Duration::from_secs(2);
/// The loss window stretches past [`QUALITY_WINDOW`] until it spans this many expected packets
/// (a link that carries only probes sees about 40 a second), up to [`MAX_QUALITY_WINDOW`].
pub const LOSS_TARGET_SAMPLES: u64 = 200;
/// The longest the loss window stretches.
pub const MAX_QUALITY_WINDOW: Duration = Duration::from_secs(10);
/// The loss threshold between up and degraded, in either direction.
///
/// A link is degraded when its loss is above this with 95% confidence (the Wilson score interval's
/// lower bound), and up again when its loss is below it with 95% confidence (the upper bound).
/// The width of the interval is the hysteresis, and it is honest about how much was measured:
/// 10% observed over 80 probes does not degrade a link, 30% does.
pub const DEGRADED_LOSS: f64 = 0.10;
/// z for the 95% confidence interval of a loss estimate.
pub const LOSS_CONFIDENCE_Z: f64 = 1.96;
/// Probes answered in time, in a row, that end a delay spike (about 150 ms of probing).
pub const CALM_PROBES: u32 = 3;
/// A link whose smoothed RTT rises this far above its minimum, beyond what its jitter alone
/// shows (the congestion controller's `fifo_jitter` times it, [`crate::cc::FIFO_JITTER`] by
/// default, as the controller allows), is degraded (a filling buffer).
pub const DEGRADED_RTT_RISE: Duration = Duration::from_millis(150);
/// Loss is judged only once this many packets were expected in the window.
pub const MIN_LOSS_SAMPLES: u64 = 20;
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
    /// A link that went down for silence answered a probe sent before it did: it was late, not
    /// dead.
    DelaySpike,
}

impl StateReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::ProbesAnswered,
        Self::ProbesMissed,
        Self::FeedbackStalled,
        Self::CarrierLost,
        Self::CarrierRestored,
        Self::QualityDropped,
        Self::QualityRecovered,
        Self::ReplyOnDownLink,
        Self::DelaySpike,
    ];

    /// A snake_case name for logs, status and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProbesAnswered => "probes_answered",
            Self::ProbesMissed => "probes_missed",
            Self::FeedbackStalled => "feedback_stalled",
            Self::CarrierLost => "carrier_lost",
            Self::CarrierRestored => "carrier_restored",
            Self::QualityDropped => "quality_dropped",
            Self::QualityRecovered => "quality_recovered",
            Self::ReplyOnDownLink => "reply_on_down_link",
            Self::DelaySpike => "delay_spike",
        }
    }
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
    /// When it leaves the sender's own queue on the link (its send time, for a probe).
    departs: Instant,
}

/// Where the tx loss window stands after an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebase {
    /// Measuring normally.
    Done,
    /// Waiting for the first packet sent after the outage.
    AwaitSend,
    /// Waiting for a report that covers this packet number.
    AwaitReport(u64),
}

#[derive(Debug, Clone, Copy)]
struct CounterSample {
    at: Instant,
    highest: u64,
    received: u64,
    bytes: u64,
    /// Of the packets up to `highest`, how many we sent knowing the path might refuse them
    /// (path-MTU probes that went unanswered): not loss.
    excused: u64,
}

/// Windowed loss and rate from cumulative counters.
#[derive(Debug, Default)]
struct CounterWindow {
    samples: VecDeque<CounterSample>,
}

impl CounterWindow {
    fn push(&mut self, sample: CounterSample, tuning: &MonitorTuning) {
        // Drop the oldest sample while the window without it is still long and large enough,
        // or while it is older than the longest window.
        while let (Some(oldest), Some(second)) = (self.samples.front(), self.samples.get(1)) {
            let enough = sample.at.saturating_duration_since(second.at) >= tuning.quality_window
                && sample.highest.saturating_sub(second.highest) >= tuning.loss_target_samples;
            let stale = sample.at.saturating_duration_since(oldest.at) > tuning.max_quality_window;
            if !(enough || stale) {
                break;
            }
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    fn span(&self) -> Option<(CounterSample, CounterSample)> {
        Some((*self.samples.front()?, *self.samples.back()?))
    }

    /// Loss over the window, once enough packets were expected.
    fn loss(&self, tuning: &MonitorTuning) -> Option<LossEstimate> {
        let (old, new) = self.span()?;
        let excused = new.excused.saturating_sub(old.excused);
        let expected = new.highest.saturating_sub(old.highest).saturating_sub(excused);
        if expected < tuning.min_loss_samples {
            return None;
        }
        let received = new.received.saturating_sub(old.received).min(expected);
        Some(LossEstimate::new(expected - received, expected, tuning.loss_confidence_z))
    }

    fn rate(&self) -> f64 {
        let Some((old, new)) = self.span() else {
            return 0.0;
        };
        let secs = new.at.saturating_duration_since(old.at).as_secs_f64();
        if secs <= 0.0 { 0.0 } else { new.bytes.saturating_sub(old.bytes) as f64 / secs }
    }
}

/// A loss rate with its Wilson score interval (95% at the default z of 1.96).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LossEstimate {
    rate: f64,
    lower: f64,
    upper: f64,
}

impl LossEstimate {
    fn new(lost: u64, expected: u64, z: f64) -> Self {
        let n = expected as f64;
        let p = lost as f64 / n;
        let z2 = z * z;
        let denominator = 1.0 + z2 / n;
        let center = (p + z2 / (2.0 * n)) / denominator;
        let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
        Self { rate: p, lower: (center - half).max(0.0), upper: (center + half).min(1.0) }
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
    /// The flap penalty before the last down, restored if that down proves a delay spike.
    penalty_before_down: u32,
    /// Whether the link is down for silence (not carrier) and may yet prove only late.
    silent_down: bool,
    /// While a delay spike holds the link degraded: the probes answered in time since the last
    /// late one. [`CALM_PROBES`] of them in a row end the spike.
    calm_probes: Option<u32>,
    tuning: MonitorTuning,
    /// How many times its jitter a busy link's RTTs stand above its idle ones with no queue,
    /// as the congestion controller reckons it ([`crate::tuning::CcTuning::fifo_jitter`]).
    fifo_jitter: f64,
    outstanding: VecDeque<Outstanding>,
    last_rx: Instant,
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
    /// Packets sent that the path may refuse by design (path-MTU probes unanswered), in all.
    excused: u64,
    /// The same count of the peer's packets, as the peer reports it (`Excused`), widened from
    /// its 32 bits.
    rx_excused: u64,
    rx_excused_low: u32,
    /// After an outage, loss is measured afresh: the rx window from the first packet received
    /// after it, the tx window from the first report that covers a packet sent after it.
    rx_rebase: bool,
    tx_rebase: Rebase,
    /// The first packet sent since the peer last reported progress on this link, and when.
    unconfirmed: Option<Outstanding>,
    last_report: Option<Instant>,
    /// The first data packet sent since anything arrived on this link.
    data_unanswered: Option<Instant>,
    /// A shorter probe interval, in force from the next packet received.
    faster_interval: Option<Duration>,
    /// The probe interval the link started with (the carrying pace): the smoothed RTT's gain is
    /// set for it, and weighs a sample more when probes come less often.
    carrying_interval: Duration,
}

impl LinkMonitor {
    /// A new link starts probing at `now`, probed every `tuning.probe_interval`.
    pub fn new(now: Instant, tuning: MonitorTuning) -> Self {
        Self {
            tuning,
            fifo_jitter: crate::cc::FIFO_JITTER,
            last_rx: now,
            state: LinkState::Probing,
            carrier: true,
            usable_since: None,
            good_probes: 0,
            flap_penalty: 0,
            last_down: None,
            penalty_before_down: 0,
            silent_down: false,
            calm_probes: None,
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
            excused: 0,
            rx_excused: 0,
            rx_excused_low: 0,
            rx_rebase: false,
            tx_rebase: Rebase::Done,
            unconfirmed: None,
            data_unanswered: None,
            last_report: None,
            faster_interval: None,
            carrying_interval: tuning.probe_interval,
        }
    }

    /// Allows a busy link's RTTs `factor` times its jitter above the minimum before a rise
    /// counts, as the congestion controller does (its `fifo_jitter`): the two keep one measure.
    #[must_use]
    pub const fn with_fifo_jitter(mut self, factor: f64) -> Self {
        self.fifo_jitter = factor;
        self
    }

    /// Probes come every `interval` from now on (a session that became or stopped being a
    /// standby): the silence that takes the link down scales with it. A shorter interval takes
    /// effect with the next packet from the peer: what was heard so far came at the old pace.
    pub const fn set_probe_interval(&mut self, interval: Duration) {
        if interval.as_nanos() >= self.tuning.probe_interval.as_nanos() {
            self.tuning.probe_interval = interval;
            self.faster_interval = None;
        } else {
            self.faster_interval = Some(interval);
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
        self.tuning.up_after_probes << self.flap_penalty
    }

    /// The probe timeout: smoothed RTT plus four mean deviations (at least [`MIN_RTT_MARGIN`]).
    pub fn probe_timeout(&self) -> Duration {
        match self.srtt {
            Some(srtt) => srtt + (self.rttvar * 4).max(self.tuning.min_rtt_margin),
            None => self.tuning.initial_probe_timeout,
        }
    }

    /// How long the link may be silent, or leave our packets unconfirmed, before it goes down.
    pub fn silence_timeout(&self) -> Duration {
        self.probe_timeout() + self.tuning.probe_interval * (self.tuning.missed_probes_down - 1)
    }

    /// When an authenticated packet last arrived on the link (or carrier changed).
    pub const fn last_heard(&self) -> Instant {
        self.last_rx
    }

    /// The interarrival jitter of the peer's packets (RFC 3550), alone: cheaper than
    /// [`LinkMonitor::quality`] where nothing else is needed.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.delay.jitter_us as u64)
    }

    /// The measurements so far.
    pub fn quality(&self) -> LinkQuality {
        LinkQuality {
            srtt: self.srtt,
            rttvar: self.rttvar,
            min_rtt: self.min_rtt,
            rx_loss: self.rx_window.loss(&self.tuning).map_or(0.0, |l| l.rate),
            tx_loss: self.tx_window.loss(&self.tuning).map_or(0.0, |l| l.rate),
            delivery_rate: self.tx_window.rate(),
            jitter: self.jitter(),
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

    /// The peer's newest report on this link, expanded: highest packet number and bytes
    /// received in total.
    pub fn reported(&self) -> Option<(u64, u64)> {
        self.report.map(|r| (r.highest, r.bytes))
    }

    /// How many of our packets, in all, the path refused by design (path-MTU probes that went
    /// unanswered): the loss estimate leaves them out, since a refused probe says nothing of
    /// congestion or of the link's health (RFC 8899).
    pub const fn set_excused(&mut self, total: u64) {
        self.excused = total;
    }

    /// The peer's own count of its packets the path refused by design (its `Excused` message,
    /// cumulative and wrapping): the receive loss leaves them out.
    pub const fn set_rx_excused(&mut self, total: u32) {
        self.rx_excused += total.wrapping_sub(self.rx_excused_low) as u64;
        self.rx_excused_low = total;
    }

    /// Our count for the peer's `Excused` message, or `None` while it is zero.
    pub const fn excused(&self) -> Option<u32> {
        if self.excused == 0 { None } else { Some(self.excused as u32) }
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
        self.outstanding.push_back(Outstanding { seq, sent: now, departs: now });
        self.on_packet_sent(now, seq);
    }

    /// Records any packet sent with path packet number `seq`.
    pub fn on_packet_sent(&mut self, now: Instant, seq: u64) {
        self.note_sent(now, seq, now);
    }

    fn note_sent(&mut self, now: Instant, seq: u64, departs: Instant) {
        // Packets sent into a down link prove nothing once it is back: feedback is tracked
        // afresh from the first packet sent after it starts probing again.
        if self.tx_rebase == Rebase::AwaitSend && self.state != LinkState::Down {
            self.tx_rebase = Rebase::AwaitReport(seq);
        }
        if self.unconfirmed.is_none() && self.state != LinkState::Down {
            self.unconfirmed = Some(Outstanding { seq, sent: now, departs });
        }
    }

    /// Records a data packet sent with path packet number `seq` behind `queued` of the sender's
    /// own backlog on this link: no answer can come before the packet has left that queue, so
    /// the wait for one starts then (a burst of re-sent frames must not pass for a dead link).
    pub fn on_data_sent(&mut self, now: Instant, seq: u64, queued: Duration) {
        let departs = now + queued;
        self.note_sent(now, seq, departs);
        if self.data_unanswered.is_none() && self.state != LinkState::Down && self.carrier {
            self.data_unanswered = Some(departs);
        }
    }

    /// Records an authenticated packet from the peer on this link.
    pub fn on_packet_received(&mut self, now: Instant, seq: u64, len: usize, owd_us: i64) {
        self.last_rx = now;
        if let Some(interval) = self.faster_interval.take() {
            self.tuning.probe_interval = interval;
            // What was sent so far was answered at the old pace: feedback is judged afresh from
            // the next packet sent.
            self.unconfirmed = None;
        }
        self.data_unanswered = None;
        self.rx_rebase = false;
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
        let rtt = now.saturating_duration_since(sent);
        self.on_rtt_sample(rtt);
        self.count_calm(rtt);
        self.good_probes = self.good_probes.saturating_add(1);
        match self.state {
            LinkState::Down if self.carrier && self.silent_down && self.last_down.is_some_and(|d| sent < d) => {
                // A probe sent before the link went down was answered: the link delivers, late
                // (a delay spike, a handover). It is degraded, kept out of the only copy and
                // probed, until its RTT settles; and the down costs it no flap penalty.
                self.flap_penalty = self.penalty_before_down;
                self.silent_down = false;
                // The path's delay has stepped up, and one sample barely moves the smoothed RTT:
                // it starts from the spike's, and the link stays degraded until the spike ends.
                self.srtt = self.srtt.map(|s| s.max(rtt));
                self.calm_probes = Some(0);
                self.set_state(now, LinkState::Degraded, StateReason::DelaySpike)
            }
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
    pub fn on_report(&mut self, now: Instant, report: &LinkReport) -> Option<Transition> {
        let expand = |prev: Option<u64>, low: u32| expand_u32(prev.map_or(0, |p| p + 1), low);
        let previous = self.report;
        let sample = CounterSample {
            at: now,
            highest: expand(previous.map(|p| p.highest), report.highest),
            received: expand(previous.map(|p| p.received), report.received),
            bytes: expand(previous.map(|p| p.bytes), report.received_bytes),
            excused: self.excused,
        };
        if previous.is_some_and(|p| sample.highest < p.highest) {
            // A report overtaken by a newer one on a faster link.
            return None;
        }
        self.report = Some(sample);
        match self.tx_rebase {
            Rebase::Done => self.tx_window.push(sample, &self.tuning),
            Rebase::AwaitReport(first) if sample.highest >= first => {
                self.tx_rebase = Rebase::Done;
                self.tx_window.push(sample, &self.tuning);
            }
            Rebase::AwaitSend | Rebase::AwaitReport(_) => {}
        }
        self.last_report = Some(now);
        if self.unconfirmed.is_some_and(|d| sample.highest >= d.seq) {
            self.unconfirmed = None;
        }
        self.check_liveness(now)
    }

    /// The interface lost or regained carrier.
    pub fn on_carrier(&mut self, now: Instant, up: bool) -> Option<Transition> {
        self.carrier = up;
        self.outstanding.clear();
        self.calm_probes = None;
        self.unconfirmed = None;
        self.data_unanswered = None;
        self.good_probes = 0;
        self.last_rx = now;
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
        if let Some(transition) = self.check_liveness(now) {
            return Some(transition);
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

    /// When the link will have been silent too long, unless something arrives first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silence = self.last_rx + self.silence_timeout();
        let live = self.state != LinkState::Down && self.carrier;
        live.then(|| self.data_deadline().map_or(silence, |d| d.min(silence)))
    }

    /// While data flows, when silence since the first data sent after the last arrival shows the
    /// link dead. The peer answers data within [`ACK_INTERVAL`], and probes the link every
    /// interval anyway; so the answer is due within the probe timeout, or within one probe
    /// interval plus four jitters, whichever is sooner, plus [`ACK_INTERVAL`].
    fn data_deadline(&self) -> Option<Instant> {
        // Before an RTT is measured nothing says when an answer is due.
        self.srtt?;
        let jitter = self.jitter();
        // Never below one probe interval: on a link with a tiny RTT, a busy host's scheduling
        // would otherwise pass for a dead link.
        let interval = self.tuning.probe_interval;
        let wait = self.probe_timeout().min(interval + jitter * 4 + self.tuning.min_rtt_margin).max(interval);
        self.data_unanswered.map(|at| at + wait + ACK_INTERVAL)
    }

    fn check_liveness(&mut self, now: Instant) -> Option<Transition> {
        if self.state == LinkState::Down || !self.carrier {
            return None;
        }
        let reason = if now >= self.last_rx + self.silence_timeout() {
            StateReason::ProbesMissed
        } else if self.feedback_stalled(now) || self.data_deadline().is_some_and(|d| now >= d) {
            StateReason::FeedbackStalled
        } else {
            return None;
        };
        self.set_state(now, LinkState::Down, reason)
    }

    /// Whether the peer's reports, sent after our oldest unconfirmed packet should have reached
    /// it, still leave that packet unconfirmed after the silence timeout.
    fn feedback_stalled(&self, now: Instant) -> bool {
        let Some(first) = self.unconfirmed else { return false };
        now >= first.departs + self.silence_timeout()
            && self.last_report.is_some_and(|at| at >= first.departs + self.probe_timeout())
    }

    fn sample_rx(&mut self, now: Instant) {
        if self.rx_rebase {
            return;
        }
        if let Some(highest) = self.rx_highest {
            let sample = CounterSample {
                at: now,
                highest,
                received: self.rx_received,
                bytes: self.rx_bytes,
                excused: self.rx_excused,
            };
            self.rx_window.push(sample, &self.tuning);
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
                let pace = self.tuning.probe_interval.as_secs_f64() / self.carrying_interval.as_secs_f64();
                if pace > 1.0 {
                    // Probed `pace` times less often (a standby): one sample counts as `pace`
                    // would at the carrying pace, so the estimates follow the path as fast in
                    // time.
                    let (keep_var, keep_rtt) = (0.75_f64.powf(pace), 0.875_f64.powf(pace));
                    self.rttvar = self.rttvar.mul_f64(keep_var) + deviation.mul_f64(1.0 - keep_var);
                    self.srtt = Some(srtt.mul_f64(keep_rtt) + rtt.mul_f64(1.0 - keep_rtt));
                } else {
                    self.rttvar = (self.rttvar * 3 + deviation) / 4;
                    self.srtt = Some((srtt * 7 + rtt) / 8);
                }
            }
        }
    }

    fn losses(&self) -> impl Iterator<Item = LossEstimate> {
        [self.rx_window.loss(&self.tuning), self.tx_window.loss(&self.tuning)].into_iter().flatten()
    }

    /// How far above the minimum RTT a round trip may be and still be in time: the degraded
    /// rise, plus what the link's jitter alone shows. The minimum is the luckiest sample, so on
    /// a jittery link the mean sits its jitter above it with no queue at all.
    pub fn rise_allowed(&self) -> Duration {
        self.tuning.degraded_rtt_rise + self.jitter().mul_f64(self.fifo_jitter)
    }

    fn rtt_risen(&self) -> bool {
        matches!((self.srtt, self.min_rtt), (Some(s), Some(m)) if s > m + self.rise_allowed())
    }

    fn quality_is_bad(&self) -> bool {
        self.losses().any(|l| l.lower >= self.tuning.degraded_loss) || self.rtt_risen()
    }

    fn quality_is_good(&self) -> bool {
        self.calm_probes.is_none() && self.losses().all(|l| l.upper < self.tuning.degraded_loss) && !self.rtt_risen()
    }

    /// During a delay spike, counts the probes answered in time ([`Self::rise_allowed`] above
    /// the minimum RTT) since the last late one; at [`CALM_PROBES`] the spike is over, and the
    /// smoothed RTT restarts from the path's delay as it is now.
    fn count_calm(&mut self, rtt: Duration) {
        let Some(calm) = self.calm_probes else { return };
        let in_time = self.min_rtt.is_some_and(|m| rtt <= m + self.rise_allowed());
        if !in_time {
            self.calm_probes = Some(0);
        } else if calm + 1 >= CALM_PROBES {
            self.calm_probes = None;
            self.srtt = Some(rtt);
        } else {
            self.calm_probes = Some(calm + 1);
        }
    }

    fn decay_penalty(&mut self, now: Instant) {
        if let Some(last) = self.last_down
            && self.flap_penalty > 0
            && now.saturating_duration_since(last) >= self.tuning.flap_decay
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
            self.penalty_before_down = self.flap_penalty;
            if from != LinkState::Probing || self.last_down.is_some() {
                self.flap_penalty = (self.flap_penalty + 1).min(self.tuning.max_flap_penalty);
            }
            self.last_down = Some(now);
            self.good_probes = 0;
            self.unconfirmed = None;
            self.data_unanswered = None;
            // The probes still outstanding stay: a late reply to one shows a delay spike. A
            // carrier loss clears them (`on_carrier`).
            self.silent_down = matches!(reason, StateReason::ProbesMissed | StateReason::FeedbackStalled);
        }
        if from == LinkState::Down {
            // What was measured across the outage says nothing about the link now.
            self.rx_window = CounterWindow::default();
            self.tx_window = CounterWindow::default();
            self.rx_rebase = true;
            self.tx_rebase = Rebase::AwaitSend;
            self.unconfirmed = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LinkId;

    const RTT: Duration = Duration::from_millis(30);

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    /// One probe interval on a working link: a probe out, its reply back after `RTT`.
    fn answered_probe(m: &mut LinkMonitor, t: Instant, seq: u64) {
        m.on_probe_sent(t, seq);
        m.on_packet_received(t + RTT, seq, 100, 0);
        m.on_probe_reply(t + RTT, seq as u32);
        m.handle_timeout(t + RTT);
    }

    #[test]
    fn a_shorter_probe_interval_waits_for_the_next_packet_and_a_longer_one_applies_at_once() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let t = bring_up(&mut m, t0);
        let fast = m.silence_timeout();
        m.set_probe_interval(PROBE_INTERVAL * 5);
        let slow = m.silence_timeout();
        assert_eq!(slow - fast, PROBE_INTERVAL * 4 * (m.tuning.missed_probes_down - 1));
        // Heard 200 ms ago at the slow pace: back at the fast one, the link is not down yet.
        m.on_packet_received(t, 999, 100, 0);
        m.set_probe_interval(PROBE_INTERVAL);
        assert_eq!(m.silence_timeout(), slow, "the old pace holds until the peer is heard again");
        assert_eq!(m.handle_timeout(t + Duration::from_millis(200)), None);
        assert_eq!(m.state(), LinkState::Up);
        m.on_packet_received(t + Duration::from_millis(210), 1000, 100, 0);
        assert_eq!(m.silence_timeout(), fast);
    }

    #[test]
    fn back_at_the_fast_pace_a_packet_sent_at_the_slow_one_is_not_taken_for_stalled_feedback() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let t = bring_up(&mut m, t0);
        // The peer has reported everything bring_up sent.
        let report = LinkReport { link: LinkId::new(0), highest: 999, received: 1000, received_bytes: 100_000 };
        m.on_packet_received(t, 4000, 100, 0);
        assert_eq!(m.on_report(t, &report), None);
        m.set_probe_interval(PROBE_INTERVAL * 5);
        // A probe at the slow pace; the peer's next report, 240 ms later, was sent before the
        // probe reached it (the peer reports at the slow pace too). Meanwhile the session went
        // back to the fast pace.
        m.on_probe_sent(t + Duration::from_millis(10), 5000);
        m.set_probe_interval(PROBE_INTERVAL);
        let later = t + Duration::from_millis(250);
        m.on_packet_received(later, 4001, 100, 0);
        assert_eq!(m.on_report(later, &report), None, "the slow pace's probe took the link down");
        assert_eq!(m.state(), LinkState::Up);
    }

    /// The smoothed RTT after a path answered 280 ms (the replies after a cut) and then 30 ms
    /// for a second, probed every `interval`.
    fn srtt_after_a_spike(interval: Duration) -> Duration {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        m.set_probe_interval(interval);
        let mut t = t0;
        let probes = 1 + Duration::from_secs(1).as_nanos() / interval.as_nanos();
        for seq in 0..probes as u32 {
            let rtt = Duration::from_millis(if seq == 0 { 280 } else { 30 });
            m.on_probe_sent(t, u64::from(seq));
            m.on_probe_reply(t + rtt, seq);
            t += interval;
        }
        m.quality().srtt.expect("answered")
    }

    #[test]
    fn a_link_probed_at_the_standby_pace_smooths_its_rtt_over_the_same_time_not_the_same_count() {
        let carrying = srtt_after_a_spike(PROBE_INTERVAL);
        let standby = srtt_after_a_spike(PROBE_INTERVAL * 5);
        // A session that takes the stream over schedules by what its standby pace learned: with
        // one sample weighing as at the fast pace, a 280 ms spike would still count 5x as long.
        assert!(
            standby.abs_diff(carrying) <= Duration::from_millis(2),
            "smoothed RTT {standby:?} at the standby pace, {carrying:?} at the carrying pace"
        );
    }

    /// Probes every interval, answered, until the link is up; returns the time.
    fn bring_up(m: &mut LinkMonitor, t0: Instant) -> Instant {
        let mut t = t0;
        for seq in 0..1000 {
            answered_probe(m, t, seq);
            t += PROBE_INTERVAL;
            if m.state() == LinkState::Up {
                break;
            }
        }
        t
    }

    /// Advances through timeouts only (nothing arrives) until `until` or the link is down.
    fn run_silent(m: &mut LinkMonitor, mut t: Instant, until: Instant) -> Instant {
        let mut seq = 10_000;
        while t < until && m.state() != LinkState::Down {
            m.on_probe_sent(t, seq);
            seq += 1;
            let next = t + PROBE_INTERVAL;
            match m.poll_timeout().filter(|d| *d < next) {
                Some(deadline) => {
                    m.handle_timeout(deadline);
                    t = if m.state() == LinkState::Down { deadline } else { next };
                }
                None => t = next,
            }
        }
        t
    }

    #[test]
    fn a_link_comes_up_after_consecutive_answered_probes() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let t = bring_up(&mut m, t0);
        assert_eq!(m.state(), LinkState::Up);
        assert_eq!(t, t0 + PROBE_INTERVAL * UP_AFTER_PROBES);
        assert_eq!(m.quality().srtt, Some(RTT));
    }

    #[test]
    fn a_silent_link_goes_down_within_the_detection_time() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let cut = bring_up(&mut m, t0);
        let down = run_silent(&mut m, cut, cut + Duration::from_secs(2));
        assert_eq!(m.state(), LinkState::Down);
        let detection = down - cut;
        assert!(detection <= Duration::from_millis(250), "detected after {detection:?}");
        assert_eq!(m.probes_to_come_up(), UP_AFTER_PROBES * 2, "one flap doubles the probes needed");
    }

    #[test]
    fn a_late_reply_to_a_probe_sent_before_the_down_is_a_delay_spike_degraded_at_once_and_not_a_flap() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let spike = bring_up(&mut m, t0);
        run_silent(&mut m, spike, spike + Duration::from_secs(2));
        assert_eq!((m.state(), m.flap_penalty()), (LinkState::Down, 1));
        // The first probe of the silence (10_000, sent as the spike began) is answered 500 ms late.
        let late = spike + RTT + Duration::from_millis(500);
        m.on_packet_received(late, 10_000, 100, 0);
        let back = m.on_probe_reply(late, 10_000).map(|t| (t.to, t.reason));
        assert_eq!(back, Some((LinkState::Degraded, StateReason::DelaySpike)));
        assert_eq!(m.flap_penalty(), 0, "a delay spike is no flap");
    }

    #[test]
    fn a_delay_spike_holds_the_link_degraded_until_its_probes_are_answered_in_time_again() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let spike = bring_up(&mut m, t0);
        run_silent(&mut m, spike, spike + Duration::from_secs(2));
        let late = spike + RTT + Duration::from_millis(500);
        m.on_packet_received(late, 10_000, 100, 0);
        m.on_probe_reply(late, 10_000);
        // One late sample barely moves the smoothed RTT; the spike still holds the link out.
        assert_eq!(m.handle_timeout(late).map(|t| t.to), None, "back up on the spike's first late reply");
        // Probes during the spike come back 500 ms late: still degraded.
        let mut t = late;
        for seq in 20_000..20_010 {
            m.on_probe_sent(t, seq);
            m.on_packet_received(t + RTT + Duration::from_millis(500), seq, 100, 0);
            m.on_probe_reply(t + RTT + Duration::from_millis(500), seq as u32);
            m.handle_timeout(t + RTT + Duration::from_millis(500));
            assert_eq!(m.state(), LinkState::Degraded, "up while its replies are 500 ms late");
            t += PROBE_INTERVAL;
        }
        // The spike ends: answered in time again, the link is up within a few probes.
        let end = t + Duration::from_millis(500);
        let mut up_at = None;
        for (i, seq) in (30_000..30_020).enumerate() {
            let sent = end + PROBE_INTERVAL * i as u32;
            answered_probe(&mut m, sent, seq);
            if m.state() == LinkState::Up {
                up_at = Some(sent + RTT);
                break;
            }
        }
        let back = up_at.map(|at| at - end);
        assert!(back.is_some_and(|b| b <= PROBE_INTERVAL * 4), "up {back:?} after the spike ended");
    }

    #[test]
    fn round_trips_that_swing_by_the_links_jitter_keep_it_up_and_a_standing_rise_degrades_it() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let mut t = bring_up(&mut m, t0);
        // One way 15 or 195 ms in turn: the smoothed RTT settles about 180 ms above the
        // minimum (30 ms), past the degraded rise, and all of it is the path's jitter.
        let answer = |m: &mut LinkMonitor, t: &mut Instant, seq: u64, one_way_ms: u64| {
            let rtt = Duration::from_millis(2 * one_way_ms);
            m.on_probe_sent(*t, seq);
            m.on_packet_received(*t + rtt, seq, 100, one_way_ms as i64 * 1000);
            m.on_probe_reply(*t + rtt, seq as u32);
            m.handle_timeout(*t + rtt);
            *t += rtt + Duration::from_millis(5);
        };
        for seq in 10_000..10_200 {
            answer(&mut m, &mut t, seq, if seq % 2 == 0 { 15 } else { 195 });
            assert_eq!(m.state(), LinkState::Up, "degraded by its jitter alone at probe {seq}: {:?}", m.quality());
        }
        let swing = m.quality();
        assert!(
            swing.srtt.is_some_and(|s| s > RTT + DEGRADED_RTT_RISE),
            "the test means something only if the smoothed RTT passed the rise: {swing:?}"
        );
        // The same mean, steady: a standing queue of about 200 ms, and no jitter to explain it.
        let mut degraded = false;
        for seq in 20_000..20_200 {
            answer(&mut m, &mut t, seq, 115);
            if m.state() == LinkState::Degraded {
                degraded = true;
                break;
            }
        }
        assert!(degraded, "a steady 200 ms rise left the link {:?}: {:?}", m.state(), m.quality());
        // The allowance is the congestion controller's: with none, the same swing degrades it.
        let mut strict = LinkMonitor::new(t0, MonitorTuning::default()).with_fifo_jitter(0.0);
        let mut t = bring_up(&mut strict, t0);
        let degraded = (10_000..10_200).any(|seq| {
            answer(&mut strict, &mut t, seq, if seq % 2 == 0 { 15 } else { 195 });
            strict.state() == LinkState::Degraded
        });
        assert!(degraded, "a swing of 180 ms with no jitter allowed left the link {:?}", strict.state());
    }

    #[test]
    fn a_reply_only_to_probes_sent_after_the_down_keeps_the_flap_penalty() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let cut = bring_up(&mut m, t0);
        let down = run_silent(&mut m, cut, cut + Duration::from_secs(2));
        // A blackhole: nothing sent before the down ever comes back; a probe after it does.
        m.on_probe_sent(down + PROBE_INTERVAL, 20_000);
        let reply = down + PROBE_INTERVAL + RTT;
        m.on_packet_received(reply, 20_000, 100, 0);
        let back = m.on_probe_reply(reply, 20_000).map(|t| (t.to, t.reason));
        assert_eq!(back, Some((LinkState::Probing, StateReason::ReplyOnDownLink)));
        assert_eq!(m.flap_penalty(), 1);
    }

    #[test]
    fn a_link_whose_reports_stop_confirming_our_packets_goes_down_although_the_peer_is_heard() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let mut t = bring_up(&mut m, t0);
        let report = |highest: u32| LinkReport { link: LinkId::new(0), highest, received: highest, received_bytes: 0 };
        m.on_report(t, &report(3));
        let cut = t;
        let mut seq = 100;
        while m.state() != LinkState::Down && t < cut + Duration::from_secs(2) {
            // Our probes vanish, yet the peer's packets and reports (stuck at 3) keep coming.
            m.on_probe_sent(t, seq);
            seq += 1;
            m.on_packet_received(t, seq, 100, 0);
            m.on_report(t, &report(3));
            m.handle_timeout(t);
            t += Duration::from_millis(10);
        }
        assert_eq!(m.state(), LinkState::Down);
        assert!(t - cut <= Duration::from_millis(250), "detected after {:?}", t - cut);
    }

    #[test]
    fn a_busy_link_whose_data_goes_unanswered_goes_down_a_probe_timeout_after_the_first_packet() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let cut = bring_up(&mut m, t0);
        let mut t = cut;
        let mut seq = 100;
        while m.state() != LinkState::Down && t < cut + Duration::from_secs(2) {
            // Data every 2 ms into a blackhole; nothing comes back.
            m.on_data_sent(t, seq, Duration::ZERO);
            seq += 1;
            m.handle_timeout(t);
            t += Duration::from_millis(2);
        }
        assert_eq!(m.state(), LinkState::Down);
        let detection = t - cut;
        let bound = m.probe_timeout().min(PROBE_INTERVAL + MIN_RTT_MARGIN).max(PROBE_INTERVAL)
            + ACK_INTERVAL
            + Duration::from_millis(4);
        assert!(detection <= bound, "detected after {detection:?}, bound {bound:?}");
        assert!(detection < m.silence_timeout(), "faster than silence ({:?})", m.silence_timeout());
    }

    #[test]
    fn data_sent_behind_the_senders_own_queue_is_awaited_until_it_has_left_it() {
        // A burst puts 200 ms of our own queue in front of the link: the peer keeps talking,
        // but its reports cannot confirm the burst until it has drained and crossed.
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let sent = bring_up(&mut m, t0);
        let report = |highest: u32| LinkReport { link: LinkId::new(0), highest, received: highest, received_bytes: 0 };
        m.on_report(sent, &report(3));
        let queued = Duration::from_millis(200);
        let mut t = sent;
        let mut seq = 100;
        while t < sent + queued + RTT {
            // More data joins the back of the queue as the front drains.
            m.on_data_sent(t, seq, queued.saturating_sub(t - sent));
            seq += 1;
            m.on_packet_received(t, seq, 100, 0);
            m.on_report(t, &report(3));
            m.handle_timeout(t);
            assert!(m.state().is_usable(), "went {:?} {:?} after the burst, inside its own queue", m.state(), t - sent);
            t += Duration::from_millis(10);
        }
        // Past that, reports that still confirm nothing show the link dead.
        while m.state() != LinkState::Down && t < sent + Duration::from_secs(2) {
            m.on_data_sent(t, seq, Duration::ZERO);
            seq += 1;
            m.on_packet_received(t, seq, 100, 0);
            m.on_report(t, &report(3));
            m.handle_timeout(t);
            t += Duration::from_millis(10);
        }
        assert_eq!(m.state(), LinkState::Down, "no confirmation once the queue has drained");
        assert!(t - sent <= queued + Duration::from_millis(250), "detected {:?} after the burst", t - sent);
    }

    #[test]
    fn answered_data_keeps_a_busy_link_up() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let mut t = bring_up(&mut m, t0);
        for seq in 100..2100u64 {
            m.on_data_sent(t, seq, Duration::ZERO);
            if seq % 5 == 0 {
                // The peer's answer to data sent one RTT ago, every 10 ms.
                m.on_packet_received(t, seq, 80, 0);
            }
            m.handle_timeout(t);
            assert!(m.state().is_usable(), "went {:?} at packet {seq}", m.state());
            t += Duration::from_millis(2);
        }
    }

    #[test]
    fn isolated_losses_never_take_a_link_down() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let mut t = bring_up(&mut m, t0);
        for seq in 100..1100u64 {
            // Every third probe and its reply are lost; the peer's own probes still arrive.
            if seq % 3 == 0 {
                m.on_probe_sent(t, seq);
                m.on_packet_received(t + PROBE_INTERVAL / 2, seq, 100, 0);
                m.handle_timeout(t + PROBE_INTERVAL / 2);
            } else {
                answered_probe(&mut m, t, seq);
            }
            assert!(m.state().is_usable(), "went {:?} at probe {seq}", m.state());
            t += PROBE_INTERVAL;
        }
    }

    #[test]
    fn the_loss_interval_is_wide_on_few_samples_and_narrow_on_many() {
        let few = LossEstimate::new(8, 80, LOSS_CONFIDENCE_Z);
        assert!(few.lower < DEGRADED_LOSS, "10% of 80 is not confidently above 10%: {few:?}");
        let bad = LossEstimate::new(24, 80, LOSS_CONFIDENCE_Z);
        assert!(bad.lower >= DEGRADED_LOSS, "30% of 80 is: {bad:?}");
        let fine = LossEstimate::new(10, 1000, LOSS_CONFIDENCE_Z);
        assert!(fine.upper < DEGRADED_LOSS, "1% of 1000 is confidently below 10%: {fine:?}");
    }

    #[test]
    fn carrier_loss_takes_a_link_down_at_once_and_carrier_back_probes_again() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let t = bring_up(&mut m, t0);
        let tr = m.on_carrier(t, false).unwrap();
        assert_eq!((tr.from, tr.to, tr.reason), (LinkState::Up, LinkState::Down, StateReason::CarrierLost));
        assert!(!m.can_probe());
        assert_eq!(m.poll_timeout(), None);
        let tr = m.on_carrier(t, true).unwrap();
        assert_eq!(tr.to, LinkState::Probing);
    }

    #[test]
    fn reported_forward_loss_degrades_a_link_and_recovery_restores_it() {
        let t0 = start();
        let mut m = LinkMonitor::new(t0, MonitorTuning::default());
        let mut t = bring_up(&mut m, t0);
        let report = |highest: u32, received: u32| LinkReport {
            link: LinkId::new(0),
            highest,
            received,
            received_bytes: received * 100,
        };
        // Ten packets a probe interval, the tenth a probe; the peer reports 8 of each 10 received.
        for i in 0..40u32 {
            let probe = 100 + 10 * i + 9;
            answered_probe(&mut m, t, u64::from(probe));
            m.on_report(t + RTT, &report(probe, 8 * (i + 1)));
            t += PROBE_INTERVAL;
        }
        assert_eq!(m.state(), LinkState::Degraded);
        assert!((m.quality().tx_loss - 0.2).abs() < 0.01);
        for i in 40..120u32 {
            let probe = 100 + 10 * i + 9;
            answered_probe(&mut m, t, u64::from(probe));
            m.on_report(t + RTT, &report(probe, 320 + (i - 39) * 10));
            t += PROBE_INTERVAL;
        }
        assert_eq!(m.state(), LinkState::Up);
    }
}
