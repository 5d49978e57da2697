//! Fast retransmission across links: the sender keeps what it sent for the latency budget, and
//! the receiver asks again (NAK) for frames that are missing by now.
//!
//! A frame is *missing* when a later frame has arrived and it has not. It is *due* for a NAK
//! when every link that is carrying data has delivered a later frame (no copy can still be on
//! its way), or when it has been missing for the reorder hold (a copy on a link that went quiet
//! would have arrived by then). A NAK goes on the best links that are not down, never on the
//! one that lost the frame, unless it is the only one. A NAK that brings nothing is repeated
//! after a retransmission timeout, while the frame can still make the latency budget.
//!
//! Both pieces are plain data structures: the session decides the links and the times.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::LinkSet;

/// The most frame bytes kept for retransmission; past it the oldest frames are forgotten early.
pub const MAX_SENT_BYTES: usize = 16 << 20;
/// The most missing frames tracked at once: a gap wider than this is past saving by NAKs.
pub const MAX_MISSING: usize = 512;
/// Rises of the stream's highest frame kept to tell when a frame was first passed (a few
/// seconds of a fast stream).
pub const REACHED_KEPT: usize = 8192;
/// How often one missing frame is asked for.
pub const MAX_NAKS_PER_FRAME: u8 = 3;

/// Frames already sent, kept for the latency budget so that a NAK can be answered.
#[derive(Debug)]
pub struct SentFrames {
    frames: VecDeque<Sent>,
    bytes: usize,
    keep: Duration,
}

/// One frame in [`SentFrames`].
#[derive(Debug)]
pub struct Sent {
    /// The frame's sequence.
    pub seq: u64,
    /// When it was first sent.
    pub at: Instant,
    /// When it was last sent again, if it was.
    pub resent_at: Option<Instant>,
    /// When that copy is expected at the peer, behind the queue it joined.
    pub resent_due: Option<Instant>,
    /// The links that copy went out on.
    pub resent_on: LinkSet,
    /// The links it went out on.
    pub links: LinkSet,
    /// The frame.
    pub frame: Vec<u8>,
}

impl SentFrames {
    /// A store that keeps frames for `keep`.
    pub const fn new(keep: Duration) -> Self {
        Self { frames: VecDeque::new(), bytes: 0, keep }
    }

    /// Keeps `frame`, sent at `now`. Frames come in ascending sequence order; one that does not
    /// (or that the store has no room for) is handed back for reuse.
    pub fn insert(&mut self, now: Instant, seq: u64, links: LinkSet, frame: Vec<u8>) -> Option<Vec<u8>> {
        if self.frames.back().is_some_and(|last| last.seq >= seq) || frame.len() > MAX_SENT_BYTES {
            return Some(frame);
        }
        self.bytes += frame.len();
        self.frames.push_back(Sent {
            seq,
            at: now,
            resent_at: None,
            resent_due: None,
            resent_on: LinkSet::EMPTY,
            links,
            frame,
        });
        None
    }

    /// Removes frames older than the keep time, and the oldest past the byte bound, handing
    /// their buffers to `recycle`.
    pub fn expire(&mut self, now: Instant, mut recycle: impl FnMut(Vec<u8>)) {
        while let Some(oldest) = self.frames.front() {
            let stale = now.saturating_duration_since(oldest.at) > self.keep;
            if !stale && self.bytes <= MAX_SENT_BYTES {
                break;
            }
            if let Some(sent) = self.frames.pop_front() {
                self.bytes -= sent.frame.len();
                recycle(sent.frame);
            }
        }
    }

    /// The kept frame with sequence `seq`.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Sent> {
        let i = self.frames.binary_search_by_key(&seq, |s| s.seq).ok()?;
        self.frames.get_mut(i)
    }

    /// The kept frames, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Sent> {
        self.frames.iter()
    }

    /// Takes every kept frame out, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Sent> + '_ {
        self.bytes = 0;
        self.frames.drain(..)
    }

    /// The kept frames, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Sent> {
        self.frames.iter_mut()
    }

    /// The sequence after the newest frame kept: every frame below it has been sent.
    pub fn next_seq(&self) -> Option<u64> {
        self.frames.back().map(|s| s.seq + 1)
    }

    /// How many frames are kept.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// One missing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// When a later frame first showed it missing.
    pub noticed: Instant,
    /// NAKs sent for it so far.
    pub naks: u8,
    /// When the last NAK went out.
    pub last_nak: Option<Instant>,
    /// A re-sent copy of a frame asked for no earlier has come since: when the copy this NAK
    /// brought is taken for lost too.
    pub overtaken: Option<Instant>,
}

impl Missing {
    const fn new(noticed: Instant) -> Self {
        Self { noticed, naks: 0, last_nak: None, overtaken: None }
    }
}

/// When missing frames are due for a NAK, as the session measures its links.
#[derive(Debug, Clone, Copy)]
pub struct NakTiming {
    /// Frames below this have been passed by every link carrying data: no copy is on its way.
    pub passed_everywhere: u64,
    /// A frame missing this long is asked for even if some link has not passed it.
    pub hold: Duration,
    /// After a NAK, how long to wait for the retransmission before asking again.
    pub rto: Duration,
    /// A NAK sent later than this after the frame went missing cannot bring it back in time.
    pub last_useful: Duration,
}

/// The receiver's record of frames that are missing and the NAKs sent for them.
#[derive(Debug, Default)]
pub struct Gaps {
    missing: BTreeMap<u64, Missing>,
    highest: Option<u64>,
    /// When the stream's highest frame rose, and to what: the newest [`REACHED_KEPT`] rises.
    reached: VecDeque<(u64, Instant)>,
}

impl Gaps {
    /// Notes that frame `seq` arrived at `now`, with the reorder buffer expecting `expected`
    /// next: the frames between the highest seen so far and `seq` are now missing.
    ///
    /// A re-sent copy that comes in answer to a NAK (`resent`: how much later a copy sent
    /// before it on another link could still come) shows the answers to the NAKs sent with or
    /// before it lost, for the frames before it: the sender re-sends in order. They are asked
    /// for again then, not a retransmission timeout later.
    pub fn on_frame(&mut self, now: Instant, seq: u64, expected: u64, resent: Option<Duration>) {
        let asked = self.missing.remove(&seq).and_then(|m| m.last_nak);
        if let (Some(asked), Some(spread)) = (asked, resent) {
            for m in self.missing.range_mut(..seq).map(|(_, m)| m) {
                if m.last_nak.is_some_and(|at| at <= asked) {
                    m.overtaken = Some(m.overtaken.map_or(now + spread, |at| at.min(now + spread)));
                }
            }
        }
        let from = self.highest.map_or(expected, |h| h + 1).max(expected);
        if seq > from {
            let from = from.max(seq.saturating_sub(MAX_MISSING as u64));
            for m in from..seq {
                self.missing.insert(m, Missing::new(now));
            }
            while self.missing.len() > MAX_MISSING {
                self.missing.pop_first();
            }
        }
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
            if self.reached.len() == REACHED_KEPT {
                self.reached.pop_front();
            }
            self.reached.push_back((seq, now));
        }
    }

    /// How long ago the stream first passed frame `seq` (a frame at or above it arrived), at
    /// `now`: zero if it has not yet, and at least as long ago as the oldest rise kept if it
    /// passed it before that.
    pub fn passed_ago(&self, now: Instant, seq: u64) -> Duration {
        if self.highest.is_none_or(|h| seq > h) {
            return Duration::ZERO;
        }
        // The newest rise kept is `highest`, at or above `seq`, so one is found: the first at or
        // above `seq`, or the oldest kept if `seq` is older than all of them.
        let first = self.reached.partition_point(|&(reached, _)| reached < seq);
        self.reached.get(first).map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }

    /// Notes that the sender has sent every frame below `next`: those above the highest seen are
    /// missing (lost at the tail of a burst, where no later frame shows the gap).
    pub fn on_sent(&mut self, now: Instant, next: u64, expected: u64) {
        if let Some(last) = next.checked_sub(1)
            && self.highest.is_none_or(|h| last > h)
            && last >= expected
        {
            self.on_frame(now, last, expected, None);
            self.missing.insert(last, Missing::new(now));
        }
    }

    /// Forgets frames below `expected`: they were delivered or given up.
    pub fn forget_below(&mut self, expected: u64) {
        if self.missing.first_key_value().is_some_and(|(&first, _)| first < expected) {
            self.missing = self.missing.split_off(&expected);
        }
    }

    /// Starts afresh (the peer restarted its numbering).
    pub fn clear(&mut self) {
        self.missing.clear();
        self.highest = None;
        self.reached.clear();
    }

    /// Marks every frame due at `now` as NAKed and appends it, in ascending order, to `again`
    /// if the answer to its last NAK was overtaken (lost: to be re-sent at once), else to `out`.
    pub fn take_due(&mut self, now: Instant, timing: &NakTiming, out: &mut Vec<u64>, again: &mut Vec<u64>) {
        for (&seq, missing) in &mut self.missing {
            match Self::due_at(seq, missing, timing) {
                Some(at) if at <= now => {
                    missing.naks += 1;
                    missing.last_nak = Some(now);
                    if missing.overtaken.take().is_some() { again.push(seq) } else { out.push(seq) }
                }
                _ => {}
            }
        }
    }

    /// When the next frame becomes due, if any can.
    pub fn next_due(&self, timing: &NakTiming) -> Option<Instant> {
        self.missing.iter().filter_map(|(&seq, m)| Self::due_at(seq, m, timing)).min()
    }

    /// How many frames are missing.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Whether no frame is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    fn due_at(seq: u64, missing: &Missing, timing: &NakTiming) -> Option<Instant> {
        if missing.naks >= MAX_NAKS_PER_FRAME {
            return None;
        }
        let at = match missing.last_nak {
            None if seq < timing.passed_everywhere => missing.noticed,
            None => missing.noticed + timing.hold,
            Some(last) => missing.overtaken.map_or(last + timing.rto, |at| at.min(last + timing.rto)),
        };
        (at <= missing.noticed + timing.last_useful).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    const MS: Duration = Duration::from_millis(1);

    fn timing(passed: u64) -> NakTiming {
        NakTiming { passed_everywhere: passed, hold: 50 * MS, rto: 100 * MS, last_useful: 250 * MS }
    }

    #[test]
    fn a_frame_was_passed_when_the_first_frame_at_or_above_it_arrived() {
        let now = t0();
        let mut gaps = Gaps::default();
        assert_eq!(gaps.passed_ago(now, 0), Duration::ZERO, "nothing passed yet");
        gaps.on_frame(now, 0, 0, None);
        gaps.on_frame(now + 10 * MS, 5, 1, None);
        gaps.on_frame(now + 20 * MS, 3, 1, None);
        gaps.on_frame(now + 30 * MS, 9, 1, None);
        let at = now + 100 * MS;
        assert_eq!(gaps.passed_ago(at, 0), 100 * MS);
        assert_eq!(gaps.passed_ago(at, 2), 90 * MS, "2 was passed by 5, not by 3 which came later");
        assert_eq!(gaps.passed_ago(at, 5), 90 * MS);
        assert_eq!(gaps.passed_ago(at, 6), 70 * MS);
        assert_eq!(gaps.passed_ago(at, 9), 70 * MS);
        assert_eq!(gaps.passed_ago(at, 10), Duration::ZERO, "not passed: a copy bringing it is first");
        // Rises older than those kept count from the oldest kept.
        for seq in 10..10 + REACHED_KEPT as u64 {
            gaps.on_frame(at, seq, seq, None);
        }
        assert_eq!(gaps.passed_ago(at + 5 * MS, 1), 5 * MS, "at least as old as the oldest rise kept");
        gaps.clear();
        assert_eq!(gaps.passed_ago(at, 1), Duration::ZERO, "forgotten on a restart");
    }

    #[test]
    fn a_frame_passed_by_every_link_is_asked_for_at_once() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 0, 0, None);
        gaps.on_frame(now, 3, 1, None);
        let mut due = Vec::new();
        gaps.take_due(now, &timing(3), &mut due, &mut Vec::new());
        assert_eq!(due, vec![1, 2]);
    }

    #[test]
    fn an_answer_overtaking_an_earlier_one_asks_again_for_it_at_once() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 0, 0, None);
        gaps.on_frame(now, 4, 1, None);
        let mut due = Vec::new();
        gaps.take_due(now, &timing(4), &mut due, &mut Vec::new());
        assert_eq!(due, vec![1, 2, 3]);
        // The answers come in order: 2's arrives, 1's does not; 3's may still be on its way.
        let later = now + 10 * MS;
        gaps.on_frame(later, 2, 1, Some(Duration::ZERO));
        due.clear();
        let mut again = Vec::new();
        gaps.take_due(later, &timing(5), &mut due, &mut again);
        assert!(due.is_empty(), "{due:?}");
        assert_eq!(again, vec![1], "1 asked for again before its RTO, marked lost; 3 not");
        assert_eq!(gaps.next_due(&timing(5)), Some(now + 100 * MS), "3 waits for its RTO");
        // First copies overtake nothing, even late: the answer to 1 may still be on its way.
        let mut fresh = Gaps::default();
        fresh.on_frame(now, 0, 0, None);
        fresh.on_frame(now, 4, 1, None);
        fresh.take_due(now, &timing(4), &mut due, &mut again);
        fresh.on_frame(later, 2, 1, None);
        assert_eq!(fresh.next_due(&timing(5)), Some(now + 100 * MS));
    }

    #[test]
    fn an_overtaken_answer_waits_for_what_a_slower_link_could_still_bring() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 0, 0, None);
        gaps.on_frame(now, 3, 1, None);
        let (mut due, mut again) = (Vec::new(), Vec::new());
        gaps.take_due(now, &timing(3), &mut due, &mut again);
        gaps.on_frame(now + 10 * MS, 2, 1, Some(30 * MS));
        assert_eq!(gaps.next_due(&timing(3)), Some(now + 40 * MS), "1 is asked for again once 30 ms have passed");
        gaps.take_due(now + 39 * MS, &timing(3), &mut due, &mut again);
        assert!(again.is_empty());
        gaps.take_due(now + 40 * MS, &timing(3), &mut due, &mut again);
        assert_eq!(again, vec![1]);
    }

    #[test]
    fn a_frame_a_slow_link_may_still_bring_waits_for_the_hold() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 2, 0, None);
        let mut due = Vec::new();
        gaps.take_due(now, &timing(0), &mut due, &mut Vec::new());
        assert!(due.is_empty());
        assert_eq!(gaps.next_due(&timing(0)), Some(now + 50 * MS));
        gaps.take_due(now + 50 * MS, &timing(0), &mut due, &mut Vec::new());
        assert_eq!(due, vec![0, 1]);
    }

    #[test]
    fn a_nak_is_repeated_after_the_rto_until_it_could_no_longer_help() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 1, 0, None);
        let mut due = Vec::new();
        gaps.take_due(now, &timing(1), &mut due, &mut Vec::new());
        gaps.take_due(now + 99 * MS, &timing(1), &mut due, &mut Vec::new());
        assert_eq!(due, vec![0]);
        gaps.take_due(now + 100 * MS, &timing(1), &mut due, &mut Vec::new());
        assert_eq!(due, vec![0, 0]);
        gaps.take_due(now + 200 * MS, &timing(1), &mut due, &mut Vec::new());
        assert_eq!(due, vec![0, 0, 0], "the third NAK at 200 ms is still useful");
        assert_eq!(gaps.next_due(&timing(1)), None, "at most {MAX_NAKS_PER_FRAME} NAKs");
    }

    #[test]
    fn a_frame_that_arrives_or_is_given_up_is_no_longer_missing() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 4, 0, None);
        gaps.on_frame(now, 2, 0, None);
        assert_eq!(gaps.len(), 3);
        gaps.forget_below(2);
        assert_eq!(gaps.len(), 1);
        gaps.on_frame(now, 3, 2, None);
        assert!(gaps.is_empty());
    }

    #[test]
    fn frames_lost_at_the_tail_are_noticed_from_the_senders_announcement() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 0, 0, None);
        gaps.on_sent(now, 3, 1);
        assert_eq!(gaps.len(), 2, "frames 1 and 2");
        gaps.on_sent(now, 3, 1);
        assert_eq!(gaps.len(), 2, "announcing again changes nothing");
        gaps.on_frame(now, 2, 1, None);
        assert_eq!(gaps.len(), 1);
    }

    #[test]
    fn a_huge_jump_tracks_only_the_newest_missing_frames() {
        let now = t0();
        let mut gaps = Gaps::default();
        gaps.on_frame(now, 1_000_000, 0, None);
        assert_eq!(gaps.len(), MAX_MISSING);
    }

    #[test]
    fn sent_frames_are_found_by_sequence_and_expire_with_time() {
        let now = t0();
        let mut sent = SentFrames::new(300 * MS);
        assert!(sent.insert(now, 5, LinkSet::EMPTY, vec![5]).is_none());
        assert!(sent.insert(now + 10 * MS, 7, LinkSet::EMPTY, vec![7]).is_none());
        assert_eq!(sent.insert(now, 6, LinkSet::EMPTY, vec![6]), Some(vec![6]), "out of order is refused");
        assert_eq!(sent.get_mut(7).map(|s| s.frame.clone()), Some(vec![7]));
        assert!(sent.get_mut(6).is_none());
        let mut recycled = Vec::new();
        sent.expire(now + 305 * MS, |b| recycled.push(b));
        assert_eq!(recycled, vec![vec![5]]);
        assert_eq!(sent.len(), 1);
    }
}
