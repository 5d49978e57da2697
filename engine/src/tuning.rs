//! Every tunable of the engine in one struct, [`Tuning`], grouped by the part it tunes. A
//! session takes its `Tuning` in its [`crate::SessionConfig`], so the simulator, the lab and an
//! operator (`advanced:` in the config file, `--tune section.field=value` on the command line)
//! can vary any of them without a rebuild. Each default is the named constant beside the code
//! it tunes (`monitor::PROBE_INTERVAL`, `cc::PROBE_GAIN`, ...): the values the engine is tested
//! and measured with. The engine reads the tunables only from here.

use core::fmt;
use std::time::Duration;

use crate::{cc, monitor, pmtu, release, scheduler, session};

/// A value a tunable holds: parsed from text and shown as text.
pub trait Tunable: Copy {
    /// Parses `text`, or says what is wrong with it.
    ///
    /// # Errors
    /// What a value of this kind looks like.
    fn parse(text: &str) -> Result<Self, String>;

    /// The value as [`Tunable::parse`] reads it.
    fn show(&self) -> String;

    /// Whether the value is usable for a tunable: every one must be above zero.
    fn positive(&self) -> bool;

    /// The value as a number, to hold against a [`Range`].
    fn number(&self) -> f64;
}

impl Tunable for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = text.strip_suffix("us") {
            (n, 1e-6)
        } else if let Some(n) = text.strip_suffix('s') {
            (n, 1.0)
        } else {
            return Err(format!("{text:?} is not a duration: give a unit, as in 50ms, 2s or 500us"));
        };
        let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration"))?;
        Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is not a duration"))
    }

    fn show(&self) -> String {
        format!("{}ms", self.as_secs_f64() * 1e3)
    }

    fn positive(&self) -> bool {
        !self.is_zero()
    }

    fn number(&self) -> f64 {
        self.as_secs_f64()
    }
}

macro_rules! integer_tunable {
    ($($ty:ty),*) => {$(
        impl Tunable for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| format!("{text:?} is not a whole number"))
            }

            fn show(&self) -> String {
                self.to_string()
            }

            fn positive(&self) -> bool {
                *self > 0
            }

            fn number(&self) -> f64 {
                *self as f64
            }
        }
    )*};
}

integer_tunable!(u32, u64, usize);

impl Tunable for f64 {
    fn parse(text: &str) -> Result<Self, String> {
        let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
        if value.is_finite() { Ok(value) } else { Err(format!("{text:?} is not a finite number")) }
    }

    fn show(&self) -> String {
        self.to_string()
    }

    fn positive(&self) -> bool {
        self.is_finite() && *self > 0.0
    }

    fn number(&self) -> f64 {
        *self
    }
}

/// Why a tunable's value is refused when it is zero or below.
const NOT_POSITIVE: &str = "must be greater than zero";

/// The range a tunable's value must lie in besides being above zero: lowest, highest, and
/// why, as the refusal says it.
#[derive(Debug, Clone, Copy)]
struct Range(f64, f64, &'static str);

/// A share of the packets.
const PACKET_SHARE: Range = Range(0.0, 1.0, "a share of the packets: at most 1");
/// A share of the rate.
const RATE_SHARE: Range = Range(0.0, 1.0, "a share of the rate: at most 1");
/// A factor that lowers the rate in a drain.
const DRAIN: Range = Range(0.0, 1.0, "a drain lowers the rate: at most 1");
/// A factor that lowers the rate in a refresh.
const REFRESH: Range = Range(0.0, 1.0, "a refresh lowers the rate: at most 1");
/// A factor that grows the rate.
const GROWTH: Range = Range(1.0, f64::INFINITY, "a growth: at least 1");
/// How far the rate may lead what the link carries.
const LEAD: Range = Range(1.0, f64::INFINITY, "how far the rate may lead what the link carries: at least 1");

/// Why `value` is not usable for a tunable: not above zero, or outside its `range`.
fn problem<T: Tunable>(value: &T, range: Option<Range>) -> Option<&'static str> {
    if !value.positive() {
        return Some(NOT_POSITIVE);
    }
    let Range(lowest, highest, why) = range?;
    (!(lowest..=highest).contains(&value.number())).then_some(why)
}

/// A tunable that could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuningError {
    /// No `section.field=value` shape.
    #[error("{0:?} is not section.field=value")]
    Shape(String),
    /// No such tunable.
    #[error("{0:?} is not a tunable (`braid-edge tuning` lists them)")]
    Unknown(String),
    /// A value that does not parse, is not above zero, or is out of its range.
    #[error("{key}: {problem}")]
    Value {
        /// The tunable, `section.field`.
        key: String,
        /// What is wrong with the value.
        problem: String,
    },
}

/// Declares one section of [`Tuning`]: each field with its doc, its type, its default and,
/// after a `;`, the [`Range`] its value must lie in.
macro_rules! section {
    ($(#[$meta:meta])* $name:ident { $( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $default:expr $(; $range:expr)?, )* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Every field: its name and what it tunes.
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$( (stringify!($field), concat!($($doc),+)) ),*];

            /// The range a field's value must lie in, if it has one.
            fn range(field: &str) -> Option<Range> {
                match field {
                    $( stringify!($field) => None $(.or(Some($range)))?, )*
                    _ => None,
                }
            }

            fn set(&mut self, field: &str, value: &str) -> Option<Result<(), String>> {
                match field {
                    $( stringify!($field) => Some(<$ty as Tunable>::parse(value).and_then(|v| {
                        match problem(&v, Self::range(field)) {
                            None => { self.$field = v; Ok(()) }
                            Some(problem) => Err(problem.into()),
                        }
                    })), )*
                    _ => None,
                }
            }

            fn get(&self, field: &str) -> Option<String> {
                match field {
                    $( stringify!($field) => Some(Tunable::show(&self.$field)), )*
                    _ => None,
                }
            }

            /// The first field whose value is not usable, and why.
            fn unusable(&self) -> Option<(&'static str, &'static str)> {
                $( if let Some(why) = problem(&self.$field, Self::range(stringify!($field))) {
                    return Some((stringify!($field), why));
                } )*
                None
            }
        }
    };
}

section! {
    /// Link liveness and quality ([`crate::monitor`]).
    MonitorTuning {
        /// How often each link is probed.
        probe_interval: Duration = monitor::PROBE_INTERVAL,
        /// Probes missed in a row (after a probe timeout) before a link is down.
        missed_probes_down: u32 = monitor::MISSED_PROBES_DOWN,
        /// The probe timeout before any RTT is measured.
        initial_probe_timeout: Duration = monitor::INITIAL_PROBE_TIMEOUT,
        /// The least the probe timeout adds to the smoothed RTT.
        min_rtt_margin: Duration = monitor::MIN_RTT_MARGIN,
        /// Answered probes in a row that bring a link up (doubled per recent flap).
        up_after_probes: u32 = monitor::UP_AFTER_PROBES,
        /// Each down transition doubles the probes a link needs to come up, up to 2^this.
        max_flap_penalty: u32 = monitor::MAX_FLAP_PENALTY,
        /// One flap is forgiven after this long without another.
        flap_decay: Duration = monitor::FLAP_DECAY,
        /// Loss is measured over at least this window.
        quality_window: Duration = monitor::QUALITY_WINDOW,
        /// The loss window stretches until it spans this many expected packets.
        loss_target_samples: u64 = monitor::LOSS_TARGET_SAMPLES,
        /// ... up to this long.
        max_quality_window: Duration = monitor::MAX_QUALITY_WINDOW,
        /// A link is degraded when its loss is confidently at least this share (0..1).
        degraded_loss: f64 = monitor::DEGRADED_LOSS; PACKET_SHARE,
        /// The z-score of the loss confidence interval (1.96: 95%).
        loss_confidence_z: f64 = monitor::LOSS_CONFIDENCE_Z,
        /// A link is degraded when its smoothed RTT stands this far above its lowest, beyond
        /// three times its jitter.
        degraded_rtt_rise: Duration = monitor::DEGRADED_RTT_RISE,
        /// Fewer expected packets than this tell nothing of loss.
        min_loss_samples: u64 = monitor::MIN_LOSS_SAMPLES,
        /// A standby gateway's session is probed this many times less often, at both ends.
        standby_probe_factor: u32 = session::STANDBY_PROBE_FACTOR,
    }
}

section! {
    /// Per-link congestion control ([`crate::cc`]).
    CcTuning {
        /// How often the rate is updated.
        update_interval: Duration = cc::UPDATE_INTERVAL,
        /// The delivery rate is measured over this window.
        delivery_window: Duration = cc::DELIVERY_WINDOW,
        /// The spread of recent RTT samples is measured over this window.
        recent_window: Duration = cc::RECENT_WINDOW,
        /// The path's own RTT is the lowest over this window.
        min_rtt_window: Duration = cc::MIN_RTT_WINDOW,
        /// The standing queue every link may keep.
        base_queue_target: Duration = cc::BASE_QUEUE_TARGET,
        /// The queue target adds this many times the link's jitter.
        jitter_allowance: f64 = cc::JITTER_ALLOWANCE,
        /// The queue target is never above this.
        max_queue_target: Duration = cc::MAX_QUEUE_TARGET,
        /// Past the most the queue target allows, a queue this many jitters high is overload.
        fifo_jitter: f64 = cc::FIFO_JITTER,
        /// Growth per update once past startup.
        probe_gain: f64 = cc::PROBE_GAIN; GROWTH,
        /// Growth per update in startup (no queue, carrying what it is given).
        startup_gain: f64 = cc::STARTUP_GAIN; GROWTH,
        /// Startup lasts while the queue stays below this.
        startup_queue: Duration = cc::STARTUP_QUEUE,
        /// ... and the link delivers at least this share of its rate.
        startup_delivery: f64 = cc::STARTUP_DELIVERY; RATE_SHARE,
        /// Growing at the startup gain, the rate never leads what the link carries by more than
        /// this...
        max_lead: f64 = cc::MAX_LEAD; LEAD,
        /// ... and at the probe gain, by at most this.
        probe_lead: f64 = cc::PROBE_LEAD; LEAD,
        /// A drain multiplies the rate by at most this.
        drain_factor: f64 = cc::DRAIN_FACTOR; DRAIN,
        /// A drain aims to clear the excess queue within this.
        drain_time: Duration = cc::DRAIN_TIME,
        /// A drain multiplies the rate by at least this.
        min_drain_factor: f64 = cc::MIN_DRAIN_FACTOR; DRAIN,
        /// A drain needs a measured delivery of at least this many bits per second.
        min_drain_evidence_bps: f64 = cc::MIN_DRAIN_EVIDENCE_BPS,
        /// Arrivals above delivery by this factor, on a loaded link, call for a drain.
        overload_ratio: f64 = cc::OVERLOAD_RATIO; Range(1.0, f64::INFINITY, "what was put on the link over what it delivered: at least 1"),
        /// A queue rising over this many updates calls for a drain...
        rising_updates: usize = cc::RISING_UPDATES,
        /// ... if it rose by at least this.
        rising_min: Duration = cc::RISING_MIN,
        /// A link is loaded when it delivers at least this share of its rate.
        min_drain_use: f64 = cc::MIN_DRAIN_USE; RATE_SHARE,
        /// The rate never falls below this, bits per second.
        min_rate_bps: f64 = cc::MIN_RATE_BPS,
        /// A loaded link whose delays have not come near their floor for this long is
        /// refreshed.
        refresh_after: Duration = cc::REFRESH_AFTER,
        /// While refreshed, the rate is this share of what the link delivered...
        refresh_factor: f64 = cc::REFRESH_FACTOR; REFRESH,
        /// ... for at most this long and a round trip.
        refresh_time: Duration = cc::REFRESH_TIME,
    }
}

section! {
    /// How frames are spread over links ([`crate::scheduler`]).
    SchedulerTuning {
        /// Active-backup fails back to a better link once it has been usable this long.
        failback_hold: Duration = scheduler::FAILBACK_HOLD,
        /// Auto gives a spare copy to every link whose queue is shorter than this.
        spare_queue: Duration = scheduler::SPARE_QUEUE,
        /// Auto sends critical frames twice when the first link loses more than this share.
        trending_loss: f64 = scheduler::TRENDING_LOSS; PACKET_SHARE,
    }
}

section! {
    /// Sending: the entry of frames onto links ([`crate::session`]).
    SendTuning {
        /// A link whose model queue is at least this long is busy: its rate may grow.
        busy_queue: Duration = session::BUSY_QUEUE,
        /// A frame is dropped at the entry rather than queued behind more than this on every
        /// link chosen for it...
        max_queue_delay: Duration = session::MAX_QUEUE_DELAY,
        /// ... once the path's own round trips have shown a queue past its limit this long.
        entry_sustain: Duration = session::ENTRY_SUSTAIN,
        /// Frames queued for sending before the oldest is dropped.
        max_queued_frames: usize = session::MAX_QUEUED_FRAMES,
        /// A link losing this share of what it sends has its path MTU checked at once.
        mtu_suspect_loss: f64 = session::MTU_SUSPECT_LOSS; PACKET_SHARE,
    }
}

section! {
    /// Loss recovery: NAKs and re-sends ([`crate::session`], [`crate::retransmit`]).
    RecoveryTuning {
        /// A link that delivered data this recently counts as carrying data.
        data_recent: Duration = session::DATA_RECENT,
        /// The retransmission timeout before any RTT is measured.
        default_rto: Duration = session::DEFAULT_RTO,
        /// One frame is re-sent at most this often (or every half RTT, if longer).
        min_resend_gap: Duration = session::MIN_RESEND_GAP,
        /// A re-sent frame's second copy follows the first this much later.
        resend_spacing: Duration = session::RESEND_SPACING,
        /// NAK ranges in one control packet.
        max_naks_per_packet: usize = session::MAX_NAKS_PER_PACKET,
    }
}

section! {
    /// The release of in-order frames to the local side ([`crate::release`]).
    ReleaseTuning {
        /// Past the burst, frames leave at this multiple of the stream's recent arrival rate.
        rate_factor: f64 = release::RELEASE_RATE_FACTOR; Range(1.0, f64::INFINITY, "held frames must leave as fast as the stream comes: at least 1"),
        /// Bytes that may leave back to back.
        burst: usize = release::RELEASE_BURST,
        /// The arrival rate is averaged over about this long.
        rate_window: Duration = release::RATE_WINDOW,
        /// The paced rate is never below this, bits per second.
        min_rate_bps: f64 = release::MIN_RELEASE_BPS,
    }
}

section! {
    /// The path-MTU search ([`crate::pmtu`]).
    PmtuTuning {
        /// Tries per size before it counts as too large.
        max_tries: u32 = pmtu::MAX_TRIES,
        /// The search ends when the largest size confirmed and the smallest refused are this
        /// many bytes apart.
        precision: usize = pmtu::PRECISION,
        /// How often the size in use is confirmed once settled.
        confirm_interval: Duration = pmtu::CONFIRM_INTERVAL,
        /// How often a link settled below the ceiling looks for more.
        raise_interval: Duration = pmtu::RAISE_INTERVAL,
        /// The soonest a suspected black hole is confirmed after the last probe.
        suspect_spacing: Duration = pmtu::SUSPECT_SPACING,
    }
}

/// Declares [`Tuning`] from its sections, and the lookup of a section by name.
macro_rules! tuning {
    ($( $(#[doc = $doc:literal])+ $section:ident: $ty:ident, )*) => {
        /// Every tunable of the engine. See the [module docs](self).
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct Tuning {
            $( $(#[doc = $doc])+ pub $section: $ty, )*
        }

        impl Tuning {
            /// The sections and their fields.
            pub const SECTIONS: &'static [(&'static str, &'static [(&'static str, &'static str)])] =
                &[$( (stringify!($section), $ty::FIELDS) ),*];

            fn set_in(&mut self, section: &str, field: &str, value: &str) -> Option<Result<(), String>> {
                match section {
                    $( stringify!($section) => self.$section.set(field, value), )*
                    _ => None,
                }
            }

            fn get_in(&self, section: &str, field: &str) -> Option<String> {
                match section {
                    $( stringify!($section) => self.$section.get(field), )*
                    _ => None,
                }
            }

            /// The first tunable whose value is not usable, as `section.field`, and why.
            fn unusable(&self) -> Option<(String, &'static str)> {
                $( if let Some((field, why)) = self.$section.unusable() {
                    return Some((format!("{}.{field}", stringify!($section)), why));
                } )*
                None
            }
        }
    };
}

tuning! {
    /// Link liveness and quality.
    monitor: MonitorTuning,
    /// Per-link congestion control.
    cc: CcTuning,
    /// How frames are spread over links.
    scheduler: SchedulerTuning,
    /// The entry of frames onto links.
    send: SendTuning,
    /// NAKs and re-sends.
    recovery: RecoveryTuning,
    /// The path-MTU search.
    pmtu: PmtuTuning,
    /// The release of in-order frames to the local side.
    release: ReleaseTuning,
}

impl Tuning {
    /// The tunables a config file's `advanced:` section may set: the few an operator has reason
    /// to touch. The rest are for experiments (`--tune`, the lab, the simulator).
    pub const OPERATOR_KEYS: &'static [&'static str] = &[
        "monitor.probe_interval",
        "monitor.missed_probes_down",
        "monitor.up_after_probes",
        "monitor.degraded_loss",
        "monitor.degraded_rtt_rise",
        "scheduler.failback_hold",
        "send.max_queue_delay",
    ];

    /// Sets `key` (`section.field`) from `value`.
    ///
    /// # Errors
    /// [`TuningError`] for an unknown key, or a value that does not parse, is not above zero or
    /// is out of its range; nothing is set then.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), TuningError> {
        let unknown = || TuningError::Unknown(key.to_owned());
        let (section, field) = key.split_once('.').ok_or_else(unknown)?;
        self.set_in(section, field, value)
            .ok_or_else(unknown)?
            .map_err(|problem| TuningError::Value { key: key.to_owned(), problem })
    }

    /// Applies `section.field=value`.
    ///
    /// # Errors
    /// [`TuningError`], as [`Tuning::set`], or for text without `=`.
    pub fn apply(&mut self, assignment: &str) -> Result<(), TuningError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| TuningError::Shape(assignment.to_owned()))?;
        self.set(key.trim(), value)
    }

    /// The value of `key` (`section.field`), as text.
    pub fn get(&self, key: &str) -> Option<String> {
        let (section, field) = key.split_once('.')?;
        self.get_in(section, field)
    }

    /// Every tunable as `section.field`, with its value and what it tunes.
    pub fn entries(&self) -> impl Iterator<Item = (String, String, &'static str)> + '_ {
        Self::SECTIONS.iter().flat_map(move |(section, fields)| {
            fields.iter().map(move |(field, help)| {
                let key = format!("{section}.{field}");
                let value = self.get(&key).unwrap_or_default();
                (key, value, help.trim())
            })
        })
    }

    /// Checks that every tunable is above zero and in its range, as [`Tuning::set`] would, and
    /// that the tunables that bound one another do (which `set` cannot check one at a time).
    ///
    /// # Errors
    /// [`TuningError::Value`] for the first that is not.
    pub fn validate(&self) -> Result<(), TuningError> {
        if let Some((key, why)) = self.unusable() {
            return Err(TuningError::Value { key, problem: why.into() });
        }
        let unordered = [
            (self.cc.min_drain_factor > self.cc.drain_factor, "cc.min_drain_factor", "at most cc.drain_factor"),
            (
                self.cc.refresh_after >= self.cc.min_rtt_window,
                "cc.refresh_after",
                "less than cc.min_rtt_window: the floor is confirmed before the minimum leaves its window",
            ),
        ];
        match unordered.into_iter().find_map(|(bad, key, why)| bad.then_some((key, why))) {
            Some((key, problem)) => Err(TuningError::Value { key: key.to_owned(), problem: problem.to_owned() }),
            None => Ok(()),
        }
    }

    /// The tunables that differ from the defaults, as `section.field=value`.
    pub fn changed(&self) -> Vec<String> {
        let defaults = Self::default();
        self.entries()
            .filter(|(key, value, _)| defaults.get(key).as_ref() != Some(value))
            .map(|(key, value, _)| format!("{key}={value}"))
            .collect()
    }
}

impl fmt::Display for Tuning {
    /// One `section.field = value  # what it tunes` line per tunable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value, help) in self.entries() {
            writeln!(f, "{key} = {value}  # {help}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunable_is_set_by_its_key_and_read_back() {
        let mut tuning = Tuning::default();
        tuning.apply("monitor.probe_interval=20ms").unwrap();
        tuning.apply("cc.probe_gain = 1.1").unwrap();
        tuning.set("recovery.max_naks_per_packet", "8").unwrap();
        assert_eq!(tuning.monitor.probe_interval, Duration::from_millis(20));
        assert_eq!(tuning.cc.probe_gain, 1.1);
        assert_eq!(tuning.recovery.max_naks_per_packet, 8);
        assert_eq!(tuning.get("monitor.probe_interval").as_deref(), Some("20ms"));
        assert_eq!(
            tuning.changed(),
            ["monitor.probe_interval=20ms", "cc.probe_gain=1.1", "recovery.max_naks_per_packet=8"]
        );
    }

    #[test]
    fn bad_keys_and_values_are_refused_with_what_is_wrong() {
        let mut tuning = Tuning::default();
        assert_eq!(tuning.apply("probe_interval"), Err(TuningError::Shape("probe_interval".into())));
        assert_eq!(tuning.set("monitor.nothing", "1"), Err(TuningError::Unknown("monitor.nothing".into())));
        assert_eq!(tuning.set("nothing", "1"), Err(TuningError::Unknown("nothing".into())));
        let error = tuning.set("monitor.probe_interval", "50").unwrap_err().to_string();
        assert!(error.contains("give a unit"), "{error}");
        let error = tuning.set("monitor.probe_interval", "0ms").unwrap_err().to_string();
        assert_eq!(error, "monitor.probe_interval: must be greater than zero");
        assert!(tuning.set("cc.probe_gain", "NaN").is_err());
        assert!(tuning.set("cc.probe_gain", "-1").is_err());
        let error = tuning.set("cc.probe_gain", "0.9").unwrap_err().to_string();
        assert_eq!(error, "cc.probe_gain: a growth: at least 1");
        let error = tuning.set("cc.drain_factor", "1.2").unwrap_err().to_string();
        assert_eq!(error, "cc.drain_factor: a drain lowers the rate: at most 1");
        assert!(tuning.set("monitor.degraded_loss", "1.5").is_err());
        assert_eq!(tuning, Tuning::default(), "nothing refused was set");
        tuning.set("cc.drain_factor", "1").expect("the ends of a range are in it");
    }

    #[test]
    fn every_default_is_usable_and_a_value_out_of_its_range_is_not() {
        assert_eq!(Tuning::default().validate(), Ok(()));
        let mut tuning = Tuning::default();
        tuning.cc.probe_lead = 0.5;
        let error = tuning.validate().unwrap_err().to_string();
        assert_eq!(error, "cc.probe_lead: how far the rate may lead what the link carries: at least 1");
        tuning.cc.probe_lead = 1.0;
        tuning.release.rate_factor = f64::NAN;
        assert_eq!(tuning.validate().unwrap_err().to_string(), "release.rate_factor: must be greater than zero");
    }

    #[test]
    fn tunables_that_bound_one_another_are_checked_together() {
        // A drain's lowest factor above its highest made the controller's clamp panic at the
        // first drain; each is in its range alone.
        let mut tuning = Tuning::default();
        tuning.apply("cc.min_drain_factor=0.95").expect("in its range alone");
        let error = tuning.validate().unwrap_err().to_string();
        assert_eq!(error, "cc.min_drain_factor: at most cc.drain_factor");
        tuning.apply("cc.drain_factor=0.97").expect("in its range alone");
        assert_eq!(tuning.validate(), Ok(()), "set in either order, the pair holds at the end");
        tuning.apply("cc.refresh_after=10s").expect("above zero");
        assert!(
            tuning.validate().unwrap_err().to_string().starts_with("cc.refresh_after: less than cc.min_rtt_window")
        );
    }

    #[test]
    fn every_tunable_is_listed_with_its_default_and_help() {
        let tuning = Tuning::default();
        let entries: Vec<_> = tuning.entries().collect();
        assert!(entries.len() > 40, "{}", entries.len());
        for (key, value, help) in &entries {
            assert!(!help.is_empty(), "{key} has no help");
            let mut copy = Tuning::default();
            copy.set(key, value).unwrap_or_else(|e| panic!("{key}={value} does not read back: {e}"));
            assert_eq!(copy, tuning, "{key}={value} reads back as its default");
        }
        assert!(tuning.changed().is_empty());
        assert!(tuning.to_string().contains("send.max_queue_delay = 100ms  # A frame is dropped"));
    }

    #[test]
    fn durations_take_their_unit() {
        assert_eq!(Duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(Duration::parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(Duration::parse(" 7ms "), Ok(Duration::from_millis(7)));
        assert!(Duration::parse("-1s").is_err());
        assert!(Duration::parse("fast").is_err());
    }
}
