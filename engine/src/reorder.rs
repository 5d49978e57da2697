//! The reorder buffer: restores frame order, holding a gap for a time, never for a packet count.
//!
//! A frame that arrives ahead of a gap waits until the gap fills or until the frame has waited
//! the current *hold* time, whichever comes first. Then the buffer gives up on the gap, counts
//! the missing frames as lost and releases what it holds. The hold is set from the measured delay
//! spread between links plus jitter ([`ReorderBuffer::set_hold_from_delays`]), and is capped by
//! the latency budget. A frame
//! is never delivered twice, and frames come out in ascending order.
//!
//! A gap with a frame asked for again ([`ReorderBuffer::await_retransmit`]) is held for the
//! whole latency budget instead, since the retransmission takes a round trip.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::FrameSeq;
use crate::window::{SeqWindow, Verdict};

/// The most frame bytes the buffer holds; past it the oldest gap is given up at once. This is a
/// memory bound against a peer that jumps far ahead, not the sizing principle (that is time).
pub const MAX_HELD_BYTES: usize = 32 << 20;
/// The hold is the measured delay spread (jitter included) plus this margin.
pub const REORDER_MARGIN: Duration = Duration::from_millis(5);

/// What became of an arriving frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arrival {
    /// In order: ready at once.
    Ready,
    /// Ahead of a gap: held.
    Held,
    /// A copy of a frame already received.
    Duplicate,
    /// Behind the release point: its gap was given up, or it is older than the window.
    Late,
}

/// A frame released in order.
#[derive(Debug)]
pub struct Released {
    /// The frame's sequence.
    pub seq: FrameSeq,
    /// The frame.
    pub frame: Vec<u8>,
    /// How long it waited in the buffer.
    pub held: Duration,
    /// When it was released.
    pub at: Instant,
}

impl Released {
    /// When the frame has waited `budget` in all, in the buffer and since its release: it may
    /// wait no longer for anything.
    pub fn overdue_at(&self, budget: Duration) -> Instant {
        (self.at + budget).checked_sub(self.held).unwrap_or(self.at)
    }
}

/// Counters of the buffer's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Frames released.
    pub released: u64,
    /// Frames released after waiting for a gap.
    pub reordered: u64,
    /// Frames given up on.
    pub lost: u64,
    /// Frames that arrived after their gap was given up.
    pub late: u64,
    /// Duplicate copies discarded.
    pub duplicates: u64,
}

#[derive(Debug)]
struct Held {
    frame: Vec<u8>,
    arrived: Instant,
    /// A frame the sender said will not come: a placeholder, counted lost when passed.
    gone: bool,
}

/// Restores order within a time budget.
#[derive(Debug)]
pub struct ReorderBuffer {
    next: u64,
    held: BTreeMap<u64, Held>,
    /// Held frames in arrival order, so the oldest one is at the front; entries already released
    /// (below `next`) are dropped lazily.
    arrivals: VecDeque<(Instant, u64)>,
    held_bytes: usize,
    seen: SeqWindow,
    ready: VecDeque<Released>,
    hold: Duration,
    budget: Duration,
    /// Frames below this were asked for again: their gaps are held for the budget.
    awaiting: u64,
    pool: Vec<Vec<u8>>,
    stats: ReorderStats,
}

impl ReorderBuffer {
    /// A buffer that expects frame 0 first, holds gaps for at most `budget`, and remembers
    /// `window` as a [`SeqWindow`] sized for the same budget.
    pub fn new(budget: Duration, window: SeqWindow) -> Self {
        Self::starting_at(budget, window, 0)
    }

    /// A buffer that expects frame `next` first.
    pub fn starting_at(budget: Duration, window: SeqWindow, next: u64) -> Self {
        Self {
            next,
            held: BTreeMap::new(),
            arrivals: VecDeque::new(),
            held_bytes: 0,
            seen: window,
            ready: VecDeque::new(),
            hold: budget,
            budget,
            awaiting: 0,
            pool: Vec::new(),
            stats: ReorderStats::default(),
        }
    }

    /// The next sequence the buffer expects: the reference for expanding a 32-bit sequence.
    pub const fn expected(&self) -> u64 {
        self.next
    }

    /// The current hold time.
    pub const fn hold(&self) -> Duration {
        self.hold
    }

    /// Sets the hold time, capped by the latency budget.
    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold.min(self.budget);
    }

    /// Sets the hold from the links' one-way delay ranges (lowest and highest, in µs relative
    /// to one base): the latest a frame can arrive minus the earliest another can, plus
    /// [`REORDER_MARGIN`]. With no range measured the hold stays as it is.
    pub fn set_hold_from_delays(&mut self, ranges: impl IntoIterator<Item = (i64, i64)>) {
        let span = ranges.into_iter().fold(None, |acc: Option<(i64, i64)>, (lo, hi)| match acc {
            None => Some((lo, hi)),
            Some((a, b)) => Some((a.min(lo), b.max(hi))),
        });
        if let Some((lo, hi)) = span {
            let spread = Duration::from_micros((hi - lo).max(0) as u64);
            self.set_hold(spread + REORDER_MARGIN);
        }
    }

    /// Whether frame `seq` was already delivered, is held, or was given up.
    pub fn has(&self, seq: u64) -> bool {
        seq < self.next || self.seen.check(seq) != Verdict::Accept
    }

    /// Frame `seq` was asked for again: hold its gap for the whole budget.
    pub fn await_retransmit(&mut self, seq: u64) {
        self.awaiting = self.awaiting.max(seq + 1);
    }

    /// The sender says frame `seq` will not come: stop waiting for it. It counts as lost.
    pub fn abandon(&mut self, now: Instant, seq: u64) {
        if seq < self.next || self.seen.check(seq) != Verdict::Accept {
            return;
        }
        self.seen.mark(seq);
        self.held.insert(seq, Held { frame: Vec::new(), arrived: now, gone: true });
        self.drain_in_order(now);
    }

    /// The counters so far.
    pub const fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Takes in one frame.
    pub fn insert(&mut self, now: Instant, seq: u64, frame: &[u8]) -> Arrival {
        match self.seen.check(seq) {
            Verdict::Duplicate => {
                self.stats.duplicates += 1;
                return Arrival::Duplicate;
            }
            Verdict::TooOld => {
                self.stats.late += 1;
                return Arrival::Late;
            }
            Verdict::Accept => {}
        }
        if seq < self.next {
            // Never seen, yet behind the release point: its gap was given up.
            self.seen.mark(seq);
            self.stats.late += 1;
            return Arrival::Late;
        }
        self.seen.mark(seq);
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        if seq == self.next {
            self.release(now, seq, buf, Duration::ZERO);
            self.drain_in_order(now);
            return Arrival::Ready;
        }
        self.held_bytes += buf.len();
        self.held.insert(seq, Held { frame: buf, arrived: now, gone: false });
        self.arrivals.push_back((now, seq));
        if self.held_bytes > MAX_HELD_BYTES {
            self.give_up_gap(now);
        }
        Arrival::Held
    }

    /// Gives up every gap whose hold has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.poll_timeout().is_some_and(|deadline| deadline <= now) {
            self.give_up_gap(now);
        }
    }

    /// When the oldest held frame's hold runs out, if any frame is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hold = if self.next < self.awaiting { self.budget } else { self.hold };
        self.arrivals.front().map(|&(arrived, _)| arrived + hold)
    }

    /// The next released frame, in order.
    pub fn pop(&mut self) -> Option<Released> {
        self.ready.pop_front()
    }

    /// The next released frame, left in place.
    pub fn peek(&self) -> Option<&Released> {
        self.ready.front()
    }

    /// Returns a frame buffer for reuse, so steady state allocates nothing.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 256 {
            self.pool.push(buf);
        }
    }

    fn give_up_gap(&mut self, now: Instant) {
        let Some((&first, _)) = self.held.first_key_value() else {
            return;
        };
        self.stats.lost += first - self.next;
        self.next = first;
        self.drain_in_order(now);
    }

    fn drain_in_order(&mut self, now: Instant) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let (seq, held) = entry.remove_entry();
            if held.gone {
                self.stats.lost += 1;
                self.next = seq + 1;
                continue;
            }
            self.held_bytes -= held.frame.len();
            self.stats.reordered += 1;
            self.release(now, seq, held.frame, now.saturating_duration_since(held.arrived));
        }
        while self.arrivals.front().is_some_and(|&(_, seq)| seq < self.next) {
            self.arrivals.pop_front();
        }
    }

    fn release(&mut self, now: Instant, seq: u64, frame: Vec<u8>, held: Duration) {
        self.next = seq + 1;
        self.stats.released += 1;
        self.ready.push_back(Released { seq: FrameSeq(seq), frame, held, at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::MIN_WINDOW;

    fn buffer(hold_ms: u64) -> (ReorderBuffer, Instant) {
        let mut b = ReorderBuffer::new(Duration::from_millis(300), SeqWindow::new(MIN_WINDOW));
        b.set_hold(Duration::from_millis(hold_ms));
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        (b, now)
    }

    fn drain(b: &mut ReorderBuffer) -> Vec<u64> {
        core::iter::from_fn(|| b.pop()).map(|r| r.seq.0).collect()
    }

    #[test]
    fn a_gap_filled_in_time_releases_everything_in_order() {
        let (mut b, t) = buffer(50);
        assert_eq!(b.insert(t, 0, b"a"), Arrival::Ready);
        assert_eq!(b.insert(t, 2, b"c"), Arrival::Held);
        assert_eq!(b.insert(t, 3, b"d"), Arrival::Held);
        assert_eq!(drain(&mut b), vec![0]);
        assert_eq!(b.insert(t + Duration::from_millis(30), 1, b"b"), Arrival::Ready);
        assert_eq!(drain(&mut b), vec![1, 2, 3]);
        assert_eq!(b.stats().lost, 0);
        assert_eq!(b.stats().reordered, 2);
    }

    #[test]
    fn a_gap_is_given_up_at_the_hold_deadline_and_its_frame_is_then_late() {
        let (mut b, t) = buffer(50);
        b.insert(t, 0, b"a");
        b.insert(t + Duration::from_millis(10), 3, b"d");
        assert_eq!(b.poll_timeout(), Some(t + Duration::from_millis(60)));
        b.handle_timeout(t + Duration::from_millis(59));
        assert_eq!(drain(&mut b), vec![0]);
        b.handle_timeout(t + Duration::from_millis(60));
        assert_eq!(drain(&mut b), vec![3]);
        assert_eq!(b.stats().lost, 2);
        assert_eq!(b.insert(t + Duration::from_millis(70), 1, b"b"), Arrival::Late);
        assert_eq!(b.insert(t + Duration::from_millis(70), 3, b"d"), Arrival::Duplicate);
        assert!(drain(&mut b).is_empty());
    }

    #[test]
    fn a_gap_awaiting_a_retransmission_is_held_for_the_budget() {
        let (mut b, t) = buffer(50);
        b.insert(t, 0, b"a");
        b.insert(t, 2, b"c");
        b.await_retransmit(1);
        assert_eq!(b.poll_timeout(), Some(t + Duration::from_millis(300)));
        assert_eq!(b.insert(t + Duration::from_millis(200), 1, b"b"), Arrival::Ready);
        assert_eq!(drain(&mut b), vec![0, 1, 2]);
        b.insert(t + Duration::from_millis(200), 4, b"e");
        assert_eq!(b.poll_timeout(), Some(t + Duration::from_millis(250)), "a later gap gets the usual hold");
    }

    #[test]
    fn a_frame_the_sender_gave_up_on_releases_what_waited_behind_it() {
        let (mut b, t) = buffer(50);
        b.insert(t, 0, b"a");
        b.insert(t, 3, b"d");
        b.await_retransmit(2);
        b.abandon(t, 1);
        assert_eq!(drain(&mut b), vec![0], "frame 2 is still awaited");
        b.abandon(t, 2);
        assert_eq!(drain(&mut b), vec![3]);
        assert_eq!(b.stats().lost, 2);
        assert_eq!(b.insert(t, 2, b"c"), Arrival::Duplicate, "a frame given up stays given up");
    }

    #[test]
    fn the_hold_never_exceeds_the_budget() {
        let (b, _) = buffer(10_000);
        assert_eq!(b.hold(), Duration::from_millis(300));
    }

    #[test]
    fn the_hold_is_the_delay_spread_across_links_plus_a_margin_within_the_budget() {
        let (mut b, _) = buffer(50);
        b.set_hold_from_delays([]);
        assert_eq!(b.hold(), Duration::from_millis(50), "nothing measured: the hold stays");
        b.set_hold_from_delays([(1_000, 4_000), (-2_000, 3_000)]);
        assert_eq!(b.hold(), Duration::from_millis(6) + REORDER_MARGIN);
        b.set_hold_from_delays([(0, 10_000_000)]);
        assert_eq!(b.hold(), Duration::from_millis(300), "capped by the budget");
        b.set_hold_from_delays([(5, 5)]);
        assert_eq!(b.hold(), REORDER_MARGIN);
    }
}
