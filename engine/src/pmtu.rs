//! Path-MTU probing, one search per link (datagram PLPMTUD, after RFC 8899).
//!
//! LTE paths often carry less than 1500 bytes, and many drop what is too large without an ICMP
//! message (a black hole), so braid never relies on ICMP. It sends padded probes of a size, with
//! DF set (the sockets never fragment), and the peer acknowledges each on the same link. A link
//! starts at [`BASE_DATAGRAM`], which every IP path carries, so no data is lost while it
//! searches: until a larger size is confirmed, frames go in pieces ([`crate::fragment`]).
//!
//! The search tries the configured ceiling first (most paths carry it), then halves the interval
//! between the largest size confirmed and the smallest that failed, [`MAX_TRIES`] tries per
//! size, until the two are [`PRECISION`] bytes apart. Once settled it confirms the size in use
//! every [`CONFIRM_INTERVAL`]: a path that shrank (a black hole) sends the link back to the base
//! and a new search. Below the ceiling it searches again every [`RAISE_INTERVAL`].
//!
//! Sans-IO like the rest of the engine: the session asks [`PathMtu::poll_probe`] for a size to
//! send, and reports acknowledgements.

use std::time::{Duration, Instant};

use crate::tuning::PmtuTuning;

/// The datagram every path carries: the IPv6 minimum MTU (1280) less IPv6 and UDP headers.
pub const BASE_DATAGRAM: usize = 1280 - 48;
/// Tries per size before it counts as too large (one lost probe must not shrink a link).
pub const MAX_TRIES: u32 = 3;
/// The search ends when the largest size confirmed and the smallest refused are this close.
pub const PRECISION: usize = 8;
/// How often the size in use is confirmed once settled.
pub const CONFIRM_INTERVAL: Duration = Duration::from_secs(5);
/// How often a link settled below the ceiling looks for more.
pub const RAISE_INTERVAL: Duration = Duration::from_secs(60);
/// The soonest a suspected black hole is confirmed after the last probe.
pub const SUSPECT_SPACING: Duration = Duration::from_millis(500);

/// Where a link's search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking for the largest size the path carries.
    Searching,
    /// Found; confirmed now and then.
    Settled,
    /// Not probing: the link is down or not started.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    size: usize,
    /// When the last try went.
    sent: Instant,
    /// When the first try went: an answer may be to any try.
    first: Instant,
    tries: u32,
}

/// One link's path-MTU search, in datagram bytes (UDP payload).
#[derive(Debug, Clone)]
pub struct PathMtu {
    base: usize,
    max: usize,
    /// The largest size confirmed: what data may use.
    current: usize,
    /// The smallest size that failed (`max + 1` while none has).
    refused: usize,
    in_flight: Option<InFlight>,
    /// When the next probe goes, once no probe is in flight.
    next: Option<Instant>,
    raise_at: Option<Instant>,
    last_sent: Option<Instant>,
    phase: Phase,
    black_holes: u64,
    unanswered: u64,
    /// When the last probe answered at the size in use (or larger) was first tried.
    confirmed_sent: Option<Instant>,
    /// The last size a search settled on, kept across restarts.
    last_settled: Option<usize>,
    tuning: PmtuTuning,
}

impl PathMtu {
    /// A search up to `max` bytes, idle until [`PathMtu::restart`].
    pub fn new(max: usize, tuning: PmtuTuning) -> Self {
        let base = BASE_DATAGRAM.min(max);
        Self {
            base,
            max,
            current: base,
            refused: max + 1,
            in_flight: None,
            next: None,
            raise_at: None,
            last_sent: None,
            phase: Phase::Idle,
            black_holes: 0,
            unanswered: 0,
            confirmed_sent: None,
            last_settled: None,
            tuning,
        }
    }

    /// No search: the link uses `max` as given.
    pub fn fixed(max: usize, tuning: PmtuTuning) -> Self {
        Self { base: max, current: max, ..Self::new(max, tuning) }
    }

    /// The search's tunables.
    pub const fn tuning(&self) -> PmtuTuning {
        self.tuning
    }

    /// The largest datagram data may use on the link now.
    pub const fn current(&self) -> usize {
        self.current
    }

    /// The size found, once the search is over.
    pub fn settled(&self) -> Option<usize> {
        (self.phase == Phase::Settled).then_some(self.current)
    }

    /// Where the search is.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// Probe tries that went unanswered, in all (not the link's loss: see
    /// [`crate::monitor::LinkMonitor::set_excused`]).
    pub const fn unanswered(&self) -> u64 {
        self.unanswered
    }

    /// The size the last finished search found, even while a new one runs.
    pub const fn last_settled(&self) -> Option<usize> {
        self.last_settled
    }

    /// How often a confirmed size stopped getting through (the path shrank).
    pub const fn black_holes(&self) -> u64 {
        self.black_holes
    }

    /// When the last probe that showed the size in use getting through was sent: a datagram of
    /// that size sent since may have been lost once [`Self::black_holes`] grows.
    pub const fn confirmed_sent(&self) -> Option<Instant> {
        self.confirmed_sent
    }

    /// Starts a new search from the base (the link came up; its path may have changed).
    pub fn restart(&mut self, now: Instant) {
        self.current = self.base;
        self.refused = self.max + 1;
        self.in_flight = None;
        self.raise_at = None;
        self.next = Some(now);
        self.phase = Phase::Searching;
        if self.base >= self.max {
            self.settle(now);
        }
    }

    /// Stops probing (the link went down), keeping the size in use.
    pub fn stop(&mut self) {
        self.in_flight = None;
        self.next = None;
        self.phase = Phase::Idle;
    }

    /// The link is losing much of what it sends, which a path that shrank under the size in use
    /// would cause: the size is confirmed soon ([`SUSPECT_SPACING`] after the last probe)
    /// rather than at the next [`CONFIRM_INTERVAL`].
    pub fn suspect(&mut self, now: Instant) {
        if self.phase != Phase::Settled || self.in_flight.is_some() || self.current <= self.base {
            return;
        }
        let soon = self.last_sent.map_or(now, |at| (at + self.tuning.suspect_spacing).max(now));
        self.next = Some(self.next.map_or(soon, |at| at.min(soon)));
    }

    /// When [`PathMtu::poll_probe`] next has something to do, with `timeout` for a probe's answer.
    pub fn poll_timeout(&self, timeout: Duration) -> Option<Instant> {
        match self.in_flight {
            Some(probe) => Some(probe.sent + timeout),
            None => self.next,
        }
    }

    /// The size of a probe to send now, if one is due. A probe unanswered after `timeout` is
    /// sent again, and after [`MAX_TRIES`] its size counts as too large. A try counts only if
    /// the link was `heard` from after it went out: on a link that delivered nothing at all
    /// meanwhile (a loss burst, an outage) the silence says nothing of the size.
    pub fn poll_probe(&mut self, now: Instant, timeout: Duration, heard: Instant) -> Option<usize> {
        if let Some(probe) = self.in_flight.as_mut() {
            if now < probe.sent + timeout {
                return None;
            }
            self.unanswered += 1;
            let counts = heard > probe.sent;
            if !counts || probe.tries < self.tuning.max_tries {
                probe.tries += u32::from(counts);
                probe.sent = now;
                self.last_sent = Some(now);
                return Some(probe.size);
            }
            let size = probe.size;
            self.in_flight = None;
            self.refused_size(now, size);
        }
        if self.next.is_none_or(|at| at > now) {
            return None;
        }
        let size = self.next_size(now)?;
        self.next = None;
        self.in_flight = Some(InFlight { size, sent: now, first: now, tries: 1 });
        self.last_sent = Some(now);
        Some(size)
    }

    /// The peer received a probe of `size` bytes.
    pub fn on_ack(&mut self, now: Instant, size: usize) {
        if self.phase == Phase::Idle || size > self.max || self.in_flight.is_none_or(|p| p.size != size) {
            return;
        }
        if let Some(probe) = self.in_flight.take()
            && size >= self.current
        {
            self.confirmed_sent = Some(probe.first);
        }
        self.current = self.current.max(size);
        match self.phase {
            Phase::Searching if self.done() => self.settle(now),
            Phase::Searching => self.next = Some(now),
            Phase::Settled | Phase::Idle => self.next = Some(now + self.tuning.confirm_interval),
        }
    }

    fn next_size(&mut self, now: Instant) -> Option<usize> {
        match self.phase {
            Phase::Idle => None,
            Phase::Searching if self.refused > self.max => Some(self.max),
            Phase::Searching => Some(self.current + (self.refused - self.current) / 2),
            Phase::Settled => {
                if self.raise_at.is_some_and(|at| at <= now) {
                    self.raise_at = None;
                    self.phase = Phase::Searching;
                    self.refused = self.max + 1;
                    return Some(self.max);
                }
                if self.current > self.base {
                    return Some(self.current);
                }
                // At the base there is nothing to confirm; wait for the raise.
                self.next = self.raise_at;
                None
            }
        }
    }

    fn refused_size(&mut self, now: Instant, size: usize) {
        if size <= self.current {
            // The size in use stopped getting through: the path shrank.
            self.black_holes += 1;
            self.current = self.base;
            self.refused = size;
            self.phase = Phase::Searching;
            self.next = Some(now);
            return;
        }
        self.refused = self.refused.min(size);
        if self.done() {
            self.settle(now);
        } else {
            self.next = Some(now);
        }
    }

    fn done(&self) -> bool {
        self.current >= self.max || self.refused.saturating_sub(self.current) <= self.tuning.precision
    }

    fn settle(&mut self, now: Instant) {
        self.phase = Phase::Settled;
        self.last_settled = Some(self.current);
        self.next = Some(now + self.tuning.confirm_interval);
        self.raise_at = (self.current < self.max).then_some(now + self.tuning.raise_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(100);

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    /// Runs a search against a path that carries `path` bytes, answering every probe that fits
    /// after 20 ms; returns the search, when it settled and how long it took.
    fn search(max: usize, path: usize) -> (PathMtu, Instant, Duration) {
        let start = start();
        let mut mtu = PathMtu::new(max, PmtuTuning::default());
        mtu.restart(start);
        let mut now = start;
        for _ in 0..1000 {
            if let Some(size) = mtu.poll_probe(now, TIMEOUT, now)
                && size <= path
            {
                now += Duration::from_millis(20);
                mtu.on_ack(now, size);
            }
            if mtu.settled().is_some() {
                break;
            }
            now = mtu.poll_timeout(TIMEOUT).expect("a searching link always has a next step").max(now);
        }
        (mtu, now, now - start)
    }

    #[test]
    fn a_clean_path_settles_at_the_ceiling_with_one_probe() {
        let (mtu, _, took) = search(1452, 9000);
        assert_eq!(mtu.settled(), Some(1452));
        assert!(took < Duration::from_millis(50), "one probe and its answer: {took:?}");
    }

    #[test]
    fn a_smaller_path_is_found_within_precision_and_never_overestimated() {
        for path in [1232, 1233, 1300, 1372, 1392, 1451] {
            let (mtu, _, took) = search(1452, path);
            let found = mtu.settled().expect("settled");
            assert!(found <= path && path - found <= PRECISION, "path {path}: found {found}");
            assert!(took < Duration::from_secs(3), "path {path}: took {took:?}");
        }
    }

    #[test]
    fn data_starts_at_the_base_and_a_small_ceiling_needs_no_search() {
        let mut mtu = PathMtu::new(1452, PmtuTuning::default());
        assert_eq!(mtu.current(), BASE_DATAGRAM);
        let now = start();
        mtu.restart(now);
        assert_eq!(mtu.current(), BASE_DATAGRAM, "nothing confirmed yet");
        let mut small = PathMtu::new(600, PmtuTuning::default());
        small.restart(now);
        assert_eq!(small.settled(), Some(600));
        assert_eq!(
            small.poll_probe(now + Duration::from_secs(10), TIMEOUT, now),
            None,
            "nothing to confirm at the base"
        );
    }

    #[test]
    fn one_lost_probe_does_not_shrink_the_link() {
        let now = start();
        let mut mtu = PathMtu::new(1452, PmtuTuning::default());
        mtu.restart(now);
        assert_eq!(mtu.poll_probe(now, TIMEOUT, now), Some(1452));
        let retry = now + TIMEOUT;
        assert_eq!(mtu.poll_probe(retry, TIMEOUT, retry), Some(1452), "the same size again");
        mtu.on_ack(retry + Duration::from_millis(20), 1452);
        assert_eq!(mtu.settled(), Some(1452));
    }

    #[test]
    fn a_path_that_shrinks_is_noticed_at_the_next_confirmation_and_searched_again() {
        let (mut mtu, _, _) = search(1452, 9000);
        // The path now carries 1400: confirmations of 1452 go unanswered.
        let mut probes = 0;
        while mtu.black_holes() == 0 && probes < 10 {
            let now = mtu.poll_timeout(TIMEOUT).expect("settled links confirm");
            let before = mtu.black_holes();
            if let Some(size) = mtu.poll_probe(now, TIMEOUT, now)
                && mtu.black_holes() == before
            {
                assert_eq!(size, 1452, "only the size in use is confirmed");
                probes += 1;
            }
        }
        assert_eq!((mtu.black_holes(), probes), (1, MAX_TRIES as usize));
        assert_eq!(mtu.current(), BASE_DATAGRAM, "back to what every path carries");
        assert_eq!(mtu.phase(), Phase::Searching);
    }

    #[test]
    fn a_link_below_the_ceiling_looks_for_more_later() {
        let (mut mtu, settled, _) = search(1452, 1300);
        let found = mtu.current();
        let mut now = settled;
        let mut sizes = Vec::new();
        while now < settled + RAISE_INTERVAL + Duration::from_secs(1) {
            if let Some(size) = mtu.poll_probe(now, TIMEOUT, now) {
                sizes.push(size);
                if size <= 1300 {
                    mtu.on_ack(now, size);
                }
            }
            now = mtu.poll_timeout(TIMEOUT).expect("a next step").max(now + Duration::from_millis(1));
        }
        assert!(sizes.iter().take_while(|&&s| s == found).count() >= 10, "confirmations first: {sizes:?}");
        assert!(sizes.contains(&1452), "then the ceiling again: {sizes:?}");
    }

    #[test]
    fn a_link_that_went_silent_does_not_refuse_the_size_it_was_probing() {
        let now = start();
        let mut mtu = PathMtu::new(1452, PmtuTuning::default());
        mtu.restart(now);
        assert_eq!(mtu.poll_probe(now, TIMEOUT, now), Some(1452));
        // Nothing heard on the link since: every retry is sent, none counts.
        let mut at = now;
        for _ in 0..10 {
            at += TIMEOUT;
            assert_eq!(mtu.poll_probe(at, TIMEOUT, now), Some(1452), "the same size again");
        }
        mtu.on_ack(at, 1452);
        assert_eq!(mtu.settled(), Some(1452));
        assert_eq!(mtu.unanswered(), 10, "each unanswered try counted, for the loss estimate to leave out");
    }

    #[test]
    fn answers_for_sizes_not_in_flight_are_ignored() {
        let now = start();
        let mut mtu = PathMtu::new(1452, PmtuTuning::default());
        mtu.restart(now);
        mtu.on_ack(now, 1452);
        assert_eq!(mtu.current(), BASE_DATAGRAM, "no probe was sent yet");
        assert_eq!(mtu.poll_probe(now, TIMEOUT, now), Some(1452));
        mtu.on_ack(now, 9000);
        mtu.stop();
        mtu.on_ack(now, 1452);
        assert_eq!(mtu.current(), BASE_DATAGRAM, "a stopped search takes no answers");
    }
}
