//! The dedup/replay window: which sequence numbers were already seen, over a sliding range.
//!
//! One type serves two jobs. Per path, over packet numbers, it rejects replays before any AEAD
//! work. Per session, over frame sequences, it tells a duplicate copy of a frame (redundancy,
//! retransmission) from a frame that arrives after the reorder buffer gave up on it.

use core::time::Duration;

/// The smallest window, in sequence numbers.
pub const MIN_WINDOW: usize = 1024;
/// The largest window, in sequence numbers (8 KiB of bitmap).
pub const MAX_WINDOW: usize = 1 << 16;

/// What the window says about a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not seen before, and inside (or ahead of) the window.
    Accept,
    /// Seen before.
    Duplicate,
    /// Too far behind the highest seen to tell.
    TooOld,
}

/// A sliding bitmap over the last `size` sequence numbers below the highest seen.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: Vec<u64>,
    size: u64,
    highest: Option<u64>,
}

impl SeqWindow {
    /// A window of at least `size` sequence numbers (rounded up to a power of two and clamped to
    /// [`MIN_WINDOW`]..=[`MAX_WINDOW`]).
    pub fn new(size: usize) -> Self {
        let size = size.clamp(MIN_WINDOW, MAX_WINDOW).next_power_of_two();
        Self { bits: vec![0; size / 64], size: size as u64, highest: None }
    }

    /// A window that covers `budget` of traffic at up to `max_rate` sequence numbers per second,
    /// twice over (a late copy may trail the newest by the whole budget, and rates burst).
    pub fn for_budget(budget: Duration, max_rate: u32) -> Self {
        let span = budget.as_secs_f64() * f64::from(max_rate) * 2.0;
        Self::new(span.ceil().min(MAX_WINDOW as f64) as usize)
    }

    /// The window's size in sequence numbers.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// The highest sequence number marked so far.
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Says what `seq` would be, without marking it.
    pub fn check(&self, seq: u64) -> Verdict {
        let Some(highest) = self.highest else {
            return Verdict::Accept;
        };
        if seq > highest {
            return Verdict::Accept;
        }
        if highest - seq >= self.size {
            return Verdict::TooOld;
        }
        if self.bit(seq) { Verdict::Duplicate } else { Verdict::Accept }
    }

    /// Marks `seq` as seen and returns what it was before.
    pub fn mark(&mut self, seq: u64) -> Verdict {
        let verdict = self.check(seq);
        if verdict != Verdict::Accept {
            return verdict;
        }
        match self.highest {
            Some(highest) if seq > highest => {
                let gap = seq - highest;
                if gap >= self.size {
                    self.bits.fill(0);
                } else {
                    for s in highest + 1..seq {
                        self.clear(s);
                    }
                }
                self.highest = Some(seq);
            }
            None => self.highest = Some(seq),
            Some(_) => {}
        }
        self.set(seq);
        Verdict::Accept
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let i = seq & (self.size - 1);
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn bit(&self, seq: u64) -> bool {
        let (word, mask) = self.slot(seq);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = self.slot(seq);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = self.slot(seq);
        self.bits[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_accepted_once() {
        let mut w = SeqWindow::new(MIN_WINDOW);
        assert_eq!(w.mark(5), Verdict::Accept);
        assert_eq!(w.mark(5), Verdict::Duplicate);
        assert_eq!(w.mark(3), Verdict::Accept);
        assert_eq!(w.mark(3), Verdict::Duplicate);
        assert_eq!(w.mark(4), Verdict::Accept);
    }

    #[test]
    fn numbers_behind_the_window_are_too_old() {
        let mut w = SeqWindow::new(MIN_WINDOW);
        w.mark(10_000);
        assert_eq!(w.check(10_000 - 1024), Verdict::TooOld);
        assert_eq!(w.check(10_000 - 1023), Verdict::Accept);
    }

    #[test]
    fn a_jump_clears_the_slots_it_passes() {
        let mut w = SeqWindow::new(MIN_WINDOW);
        w.mark(1);
        w.mark(1 + 1024 + 5);
        assert_eq!(w.mark(1 + 1024), Verdict::Accept);
        assert_eq!(w.check(1), Verdict::TooOld);
    }

    #[test]
    fn the_size_follows_budget_and_rate() {
        assert_eq!(SeqWindow::for_budget(Duration::from_millis(300), 10_000).size(), 8192);
        assert_eq!(SeqWindow::for_budget(Duration::from_millis(10), 100).size(), MIN_WINDOW as u64);
        assert_eq!(SeqWindow::for_budget(Duration::from_secs(10), 1_000_000).size(), MAX_WINDOW as u64);
    }
}
