//! What metered uplinks used: bytes both ways in the current cap period (a UTC day or month),
//! against the cap. Kept across restarts in the state directory (systemd's `STATE_DIRECTORY`),
//! so that a restart does not hand a modem a fresh allowance.

use std::path::PathBuf;

use crate::config::{CapPeriod, DataCap};

/// A cap this far used is warned of.
pub const WARN_SHARE: f64 = 0.8;

/// One uplink's use in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The period it counts (see [`period_key`]).
    pub period: u64,
    /// Bytes both ways in it.
    pub bytes: u64,
    /// The link's counters (bytes both ways) when last read.
    seen: u64,
    /// The last threshold reported: 0 none, 1 [`WARN_SHARE`], 2 the cap.
    reported: u8,
}

/// A threshold a reading crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// A new period began: the allowance is whole again.
    NewPeriod,
    /// [`WARN_SHARE`] of the cap is used.
    Nearing,
    /// The cap is used up.
    Reached,
}

impl Usage {
    /// Nothing used yet in `period`.
    pub const fn new(period: u64) -> Self {
        Self { period, bytes: 0, seen: 0, reported: 0 }
    }

    /// `bytes` already used in `period` (as saved before a restart).
    pub const fn resumed(period: u64, bytes: u64) -> Self {
        Self { period, bytes, seen: 0, reported: 0 }
    }

    /// Takes a reading of the link's counters (`total` bytes both ways; a new session starts
    /// them at zero again) in `period`, and says which threshold of `cap` it crossed, if any.
    pub fn observe(&mut self, total: u64, period: u64, cap: Option<DataCap>) -> Option<Crossing> {
        let delta = if total >= self.seen { total - self.seen } else { total };
        self.seen = total;
        if period != self.period {
            let had = self.reported;
            *self = Self { period, bytes: delta, seen: total, reported: 0 };
            return (had > 0).then_some(Crossing::NewPeriod);
        }
        self.bytes += delta;
        let cap = cap?;
        let level = if self.bytes >= cap.bytes {
            2
        } else if self.bytes as f64 >= cap.bytes as f64 * WARN_SHARE {
            1
        } else {
            0
        };
        if level <= self.reported {
            return None;
        }
        self.reported = level;
        Some(if level == 2 { Crossing::Reached } else { Crossing::Nearing })
    }

    /// Whether the cap is used up.
    pub const fn past(&self, cap: Option<DataCap>) -> bool {
        match cap {
            Some(cap) => self.bytes >= cap.bytes,
            None => false,
        }
    }
}

/// The period a moment falls in: days since 1970 for a day, months since year 0 for a month
/// (both UTC).
pub fn period_key(unix_secs: u64, period: CapPeriod) -> u64 {
    let days = unix_secs / 86_400;
    match period {
        CapPeriod::Day => days,
        CapPeriod::Month => {
            let (year, month, _) = crate::calendar::civil_from_days(days as i64);
            year as u64 * 12 + u64::from(month) - 1
        }
    }
}

/// The period a cap (a month without one) counts in now.
pub fn current_period(cap: Option<DataCap>) -> u64 {
    period_key(super::unix_millis() / 1_000, cap.map_or(CapPeriod::Month, |c| c.period))
}

/// Where the use is kept: `$STATE_DIRECTORY/usage`, if systemd gave the daemon one.
pub fn state_file() -> Option<PathBuf> {
    let dirs = std::env::var("STATE_DIRECTORY").ok()?;
    dirs.split(':').next().filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join("usage"))
}

/// Reads what [`save`] wrote: `(uplink name, period, bytes)`; lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, period, bytes) = (fields.next()?, fields.next()?, fields.next()?);
            Some((name.to_owned(), period.parse().ok()?, bytes.parse().ok()?))
        })
        .collect()
}

/// Writes `(uplink name, period, bytes)` lines to `path`, through a temporary file renamed over
/// it, so that a crash leaves the old or the new file whole.
///
/// # Errors
/// What the OS says.
pub fn save(path: &std::path::Path, entries: &[(String, u64, u64)]) -> std::io::Result<()> {
    let text: String = entries.iter().map(|(name, period, bytes)| format!("{name}\t{period}\t{bytes}\n")).collect();
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        // An evening in December, and the first second of the next year.
        let (dec, jan) = (1_796_414_400, 1_798_761_600);
        assert_eq!(period_key(dec, CapPeriod::Day), 20_791);
        assert_eq!(period_key(dec, CapPeriod::Month), 2026 * 12 + 11);
        assert_eq!(period_key(jan, CapPeriod::Month), 2027 * 12);
        assert_eq!(period_key(jan - 1, CapPeriod::Month), 2026 * 12 + 11);
    }

    #[test]
    fn use_is_counted_across_sessions_warned_at_80_percent_and_at_the_cap_and_starts_again_each_period() {
        let cap = Some(DataCap { bytes: 1_000, period: CapPeriod::Day });
        let mut usage = Usage::new(7);
        assert_eq!(usage.observe(500, 7, cap), None);
        assert_eq!(usage.observe(850, 7, cap), Some(Crossing::Nearing));
        assert_eq!(usage.observe(900, 7, cap), None, "reported once");
        // A new session: its counters start again; what they show now is all new.
        assert_eq!(usage.observe(100, 7, cap), Some(Crossing::Reached));
        assert_eq!(usage.bytes, 1_000);
        assert!(usage.past(cap));
        assert_eq!(usage.observe(150, 8, cap), Some(Crossing::NewPeriod));
        assert_eq!((usage.bytes, usage.past(cap)), (50, false));
    }

    #[test]
    fn saved_use_reads_back() {
        let dir = std::env::temp_dir().join(format!("braid-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("usage");
        let entries = vec![("lte-1".to_owned(), 20_791, 123_456), ("lte-2".to_owned(), 24_323, 7)];
        save(&path, &entries).expect("saved");
        assert_eq!(parse(&std::fs::read_to_string(&path).expect("read")), entries);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
