//! The lab's link impairment: what netem would do, in userspace, seeded.
//!
//! [`Link`] models one direction of a link: a rate with a bounded queue (LTE-like bufferbloat),
//! one-way delay, jitter with or without reordering, random and Gilbert–Elliott burst loss, a
//! blackhole and an MTU. It is sans-IO like the engine: frames go in with [`Link::offer`] at a
//! time, come out with [`Link::pop_due`], and [`Link::next_due`] says when to wake. The
//! `braid-impair` binary drives two of them between two TAP devices.

pub mod analyze;
pub mod results;
pub mod scenario;
#[cfg(feature = "sim")]
pub mod sim;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use braid_engine::rng::Rng;

/// Gilbert–Elliott burst loss: a good and a bad state with per-packet transitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Chance per packet of going from good to bad.
    pub enter_bad: f64,
    /// Chance per packet of going from bad to good.
    pub leave_bad: f64,
    /// Loss rate while bad.
    pub bad_loss: f64,
}

/// What one direction of a link does to frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// One-way delay.
    pub delay: Duration,
    /// Uniform jitter of ± this much around the delay.
    pub jitter: Duration,
    /// Whether jitter may reorder frames (otherwise a frame never overtakes the one before).
    pub reorder: bool,
    /// Random loss rate (0..=1).
    pub loss: f64,
    /// Bursty loss on top of the random loss.
    pub burst: Option<Burst>,
    /// Bits per second, or unlimited.
    pub rate_bps: Option<u64>,
    /// The most queueing delay before tail drop, when rate-limited.
    pub queue: Duration,
    /// Drop everything (carrier stays up).
    pub blackhole: bool,
    /// Frames longer than this (payload after the Ethernet header) are dropped.
    pub mtu: usize,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            burst: None,
            rate_bps: None,
            queue: Duration::from_millis(200),
            blackhole: false,
            mtu: 9000,
        }
    }
}

impl Profile {
    /// A clean link with a one-way delay.
    pub fn new(delay_ms: u64) -> Self {
        Self { delay: ms(delay_ms), ..Self::default() }
    }

    /// With uniform jitter of ± `ms`.
    #[must_use]
    pub fn jitter_ms(mut self, ms: u64) -> Self {
        self.jitter = Duration::from_millis(ms);
        self
    }

    /// With random loss.
    #[must_use]
    pub fn loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// With jitter allowed to reorder.
    #[must_use]
    pub fn reordering(mut self) -> Self {
        self.reorder = true;
        self
    }

    /// With a rate limit.
    #[must_use]
    pub fn rate_mbps(mut self, mbps: f64) -> Self {
        self.rate_bps = Some((mbps * 1e6) as u64);
        self
    }

    /// With bursty loss.
    #[must_use]
    pub fn burst(mut self, burst: Burst) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Without random or bursty loss.
    #[must_use]
    pub fn lossless(mut self) -> Self {
        self.loss = 0.0;
        self.burst = None;
        self
    }

    /// The `dsl` preset: 20 Mbit/s, 15 ms ± 2.
    pub fn dsl() -> Self {
        preset_or_default("dsl")
    }

    /// The `lte-good` preset: 10 Mbit/s, 40 ms ± 10.
    pub fn lte_good() -> Self {
        preset_or_default("lte-good")
    }

    /// The `lte-bad` preset: 8 Mbit/s, 70 ms ± 25, bursty loss.
    pub fn lte_bad() -> Self {
        preset_or_default("lte-bad")
    }
}

fn preset_or_default(name: &str) -> Profile {
    preset(name).unwrap_or_default()
}

/// A named preset, as the lab's scenarios use them.
pub fn preset(name: &str) -> Option<Profile> {
    let base = Profile::default();
    Some(match name {
        "clean" => base,
        "dsl" => Profile { delay: ms(15), jitter: ms(2), rate_bps: Some(20_000_000), ..base },
        "lte-good" => Profile { delay: ms(40), jitter: ms(10), rate_bps: Some(10_000_000), ..base },
        "lte-bad" => Profile {
            delay: ms(70),
            jitter: ms(25),
            rate_bps: Some(8_000_000),
            burst: Some(Burst { enter_bad: 0.005, leave_bad: 0.2, bad_loss: 0.5 }),
            ..base
        },
        "sat" => Profile { delay: ms(300), jitter: ms(20), rate_bps: Some(20_000_000), ..base },
        _ => return None,
    })
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Why a profile line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ProfileError {
    /// The key.
    pub key: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl Profile {
    /// Parses `preset=NAME key=value ...` (space or newline separated). Keys: `delay_ms`,
    /// `jitter_ms`, `reorder` (0/1), `loss` (0..1), `burst` (`enter,leave,bad_loss`),
    /// `rate_kbit`, `queue_ms`, `blackhole` (0/1), `mtu`. A preset, if any, comes first.
    ///
    /// # Errors
    /// [`ProfileError`] naming the key.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let mut profile = Self::default();
        for word in text.split_whitespace() {
            let (key, value) = word.split_once('=').ok_or_else(|| err(word, "expected key=value"))?;
            let number = |what: &str| value.parse::<f64>().map_err(|_| err(key, &format!("expected {what}")));
            match key {
                "preset" => {
                    profile = preset(value).ok_or_else(|| err(key, "expected clean, dsl, lte-good, lte-bad or sat"))?
                }
                "delay_ms" => profile.delay = Duration::from_secs_f64(number("milliseconds")? / 1000.0),
                "jitter_ms" => profile.jitter = Duration::from_secs_f64(number("milliseconds")? / 1000.0),
                "queue_ms" => profile.queue = Duration::from_secs_f64(number("milliseconds")? / 1000.0),
                "reorder" => profile.reorder = value == "1",
                "blackhole" => profile.blackhole = value == "1",
                "loss" => {
                    let loss = number("a rate from 0 to 1")?;
                    if !(0.0..=1.0).contains(&loss) {
                        return Err(err(key, "expected a rate from 0 to 1"));
                    }
                    profile.loss = loss;
                }
                "rate_kbit" => profile.rate_bps = Some((number("kbit/s")? * 1000.0) as u64).filter(|&r| r > 0),
                "mtu" => profile.mtu = number("bytes")? as usize,
                "burst" => {
                    let parts: Vec<f64> = value.split(',').filter_map(|p| p.parse().ok()).collect();
                    let [enter_bad, leave_bad, bad_loss] = parts[..] else {
                        return Err(err(key, "expected enter,leave,bad_loss"));
                    };
                    profile.burst = Some(Burst { enter_bad, leave_bad, bad_loss });
                }
                _ => return Err(err(key, "unknown key")),
            }
        }
        Ok(profile)
    }
}

fn err(key: &str, message: &str) -> ProfileError {
    ProfileError { key: key.to_string(), message: message.to_string() }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames offered.
    pub offered: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Frames dropped by loss, blackhole, MTU or a full queue.
    pub dropped: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: Instant,
    order: u64,
    frame: Vec<u8>,
}

/// One direction of an impaired link.
#[derive(Debug)]
pub struct Link {
    profile: Profile,
    rng: Rng,
    busy_until: Option<Instant>,
    last_due: Option<Instant>,
    bad: bool,
    order: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    stats: LinkStats,
}

impl Link {
    /// A link with a profile and a seed.
    pub fn new(profile: Profile, seed: u64) -> Self {
        Self {
            profile,
            rng: Rng::new(seed),
            busy_until: None,
            last_due: None,
            bad: false,
            order: 0,
            queue: BinaryHeap::new(),
            stats: LinkStats::default(),
        }
    }

    /// Changes the profile; frames already in flight keep their times.
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = profile;
    }

    /// The counters.
    pub const fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Takes in a frame at `now`; returns whether it will be delivered.
    pub fn offer(&mut self, now: Instant, frame: &[u8]) -> bool {
        self.offer_sized(now, frame, frame.len())
    }

    /// Takes in a frame that occupies `wire_len` bytes on the link (a UDP payload plus the
    /// headers the caller does not carry, say).
    pub fn offer_sized(&mut self, now: Instant, frame: &[u8], wire_len: usize) -> bool {
        self.stats.offered += 1;
        let p = self.profile;
        let mut lost = p.blackhole || frame.len().saturating_sub(14) > p.mtu;
        if let Some(burst) = p.burst {
            let flip = if self.bad { burst.leave_bad } else { burst.enter_bad };
            if self.rng.unit() < flip {
                self.bad = !self.bad;
            }
            lost |= self.bad && self.rng.unit() < burst.bad_loss;
        }
        lost |= p.loss > 0.0 && self.rng.unit() < p.loss;
        let mut depart = now;
        if let Some(rate) = p.rate_bps {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start.saturating_duration_since(now) > p.queue {
                lost = true;
            } else if !lost {
                let wire = Duration::from_secs_f64(wire_len as f64 * 8.0 / rate as f64);
                self.busy_until = Some(start + wire);
                depart = start + wire;
            }
        }
        if lost {
            self.stats.dropped += 1;
            return false;
        }
        let jitter = p.jitter.as_micros() as i64;
        let offset = if jitter == 0 { 0 } else { self.rng.below(2 * jitter as u64 + 1) as i64 - jitter };
        let delay = Duration::from_micros((p.delay.as_micros() as i64 + offset).max(0) as u64);
        let mut due = depart + delay;
        if !p.reorder {
            due = self.last_due.map_or(due, |last| due.max(last));
        }
        self.last_due = Some(self.last_due.map_or(due, |last| last.max(due)));
        self.order += 1;
        self.queue.push(Reverse(InFlight { due, order: self.order, frame: frame.to_vec() }));
        true
    }

    /// How long a frame offered at `now` waits behind the frames before it to leave: the
    /// link's queue, as its sender would see it if it could.
    pub fn backlog(&self, now: Instant) -> Duration {
        self.busy_until.map_or(Duration::ZERO, |b| b.saturating_duration_since(now))
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(f)| f.due)
    }

    /// The next frame due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        self.stats.delivered += 1;
        self.queue.pop().map(|Reverse(f)| f.frame)
    }
}
