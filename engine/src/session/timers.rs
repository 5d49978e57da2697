//! Timers: what [`Session::poll_timeout`] wakes the driver for, and what
//! [`Session::handle_timeout`] runs when it is due.

use std::time::{Duration, Instant};

use super::Session;
use super::recovery::Swallowed;
use super::send::MAX_POOLED;
use crate::LinkId;

/// What a [`Session::poll_timeout`] deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// A link's probe tick.
    Probe(LinkId),
    /// A link's probe or feedback timeout.
    LinkTimeout(LinkId),
    /// The reorder buffer gives up a gap.
    Reorder,
    /// A frame released together with others may leave ([`crate::release`]).
    Release,
    /// A missing frame is due to be asked for again.
    Nak,
    /// A spaced second copy of a re-sent frame is due.
    Resend,
    /// Data that arrived on a link is owed a report ([`crate::monitor::ACK_INTERVAL`]).
    Ack(LinkId),
    /// A link's path-MTU probe is due, or its answer is overdue.
    PathMtu(LinkId),
    /// The previous keys stop opening packets.
    KeyRetire,
    /// A handshake is due: first, retry, rekey, or a gateway/session deadline.
    Handshake,
    /// The LAN's addresses are due to be announced through a new gateway (edge only).
    Announce,
    /// The open block of frames is due to close and send its recovery shards.
    Fec,
}

/// The earliest of the deadlines it is shown; of equal ones, the first shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Earliest(Option<(Instant, TimerKind)>);

impl Earliest {
    /// No deadline yet.
    pub const fn new() -> Self {
        Self(None)
    }

    /// Keeps `kind` at `at` if it is earlier than what is kept.
    pub fn consider(&mut self, at: Instant, kind: TimerKind) {
        if self.0.is_none_or(|(best, _)| at < best) {
            self.0 = Some((at, kind));
        }
    }

    /// Keeps a deadline if there is one and it is earlier than what is kept.
    pub fn consider_opt(&mut self, deadline: Option<(Instant, TimerKind)>) {
        if let Some((at, kind)) = deadline {
            self.consider(at, kind);
        }
    }

    /// The earliest deadline shown.
    pub const fn get(self) -> Option<(Instant, TimerKind)> {
        self.0
    }
}

impl Session {
    /// When [`Session::handle_timeout`] is next due, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerKind)> {
        let mut best = Earliest::new();
        for link in self.links.iter().flatten() {
            best.consider(link.owed.next_probe, TimerKind::Probe(link.id));
            if let Some(at) = link.monitor.poll_timeout() {
                best.consider(at, TimerKind::LinkTimeout(link.id));
            }
            if link.owed.mtu_probe.is_none()
                && link.can_probe_mtu()
                && let Some(at) = link.pmtu.poll_timeout(link.monitor.probe_timeout())
            {
                best.consider(at, TimerKind::PathMtu(link.id));
            }
            if link.owed.ack && !link.owed.ack_woken {
                // The first poll_transmit at or after this sends the report.
                best.consider(link.owed.ack_at(), TimerKind::Ack(link.id));
            }
        }
        if let Some(at) = self.reorder.poll_timeout() {
            best.consider(at, TimerKind::Reorder);
        }
        if let Some(next) = self.reorder.peek()
            && let Some(ready) = self.pacer.ready_at(next.frame.len())
        {
            best.consider(ready.min(next.overdue_at(self.config.latency_budget)), TimerKind::Release);
        }
        if let Some(at) = self.next_nak_check() {
            best.consider(at, TimerKind::Nak);
        }
        if let Some((at, _)) = self.recovery.delayed.front() {
            best.consider(*at, TimerKind::Resend);
        }
        if let Some(at) = self.recovery.next_second_nak() {
            best.consider(at, TimerKind::Nak);
        }
        if let Some(at) = self.keys.retire_at() {
            best.consider(at, TimerKind::KeyRetire);
        }
        if let Some(at) = self.fec_tx.as_ref().and_then(|f| f.close_at()) {
            best.consider(at, TimerKind::Fec);
        }
        best.get()
    }

    /// Runs timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let interval = self.probe_interval();
        let suspect_loss = self.config.tuning.send.mtu_suspect_loss;
        let mut transitions = Vec::new();
        let mut shrunk = Vec::new();
        for link in self.links.iter_mut().flatten() {
            let rng = &mut self.rng;
            link.probe_tick(now, interval, || Duration::from_micros(rng.below(interval.as_micros() as u64 / 10)));
            if let Some(t) = link.monitor.handle_timeout(now) {
                transitions.push((link.id, t));
            }
            link.owed.ack_woken |= link.owed.ack && link.owed.ack_at() <= now;
            if link.mtu_tick(now, suspect_loss) {
                shrunk.push(link.id);
            }
            link.cc_tick(now);
        }
        for (id, t) in transitions {
            self.emit_transition(now, id, Some(t));
        }
        for id in shrunk {
            self.resend_in_flight(now, id, Swallowed::BlackHole);
        }
        self.keys.retire(now);
        self.fec_tick(now);
        // A link down for its way out still counts while the peer's data comes in on it.
        let recent = self.config.tuning.recovery.data_recent;
        self.reorder.set_hold_from_delays(
            self.links
                .iter()
                .flatten()
                .filter(|l| l.monitor.state() != crate::LinkState::Down || l.brings_data(now, recent))
                .filter_map(|l| l.monitor.delay_range(now)),
        );
        while let Some(pending) = self.recovery.pop_due(now) {
            self.queue.push_front(pending);
        }
        self.queue_second_naks(now);
        self.collect_naks(now);
        self.reorder.handle_timeout(now);
        self.recovery.gaps.forget_below(self.reorder.expected());
        self.reassembly.expire(now, self.config.latency_budget, self.reorder.expected());
        if let Some(decoder) = self.fec_rx.as_mut() {
            decoder.forget_before(self.reorder.expected());
        }
        let pool = &mut self.pool;
        self.recovery.sent.expire(now, |buf| pool.push(buf));
        self.pool.truncate(MAX_POOLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_earliest_deadline_wins_and_the_first_of_equals() {
        let now = start();
        let mut best = Earliest::new();
        assert_eq!(best.get(), None);
        best.consider(now + Duration::from_millis(5), TimerKind::Reorder);
        best.consider(now + Duration::from_millis(9), TimerKind::Nak);
        best.consider_opt(None);
        assert_eq!(best.get(), Some((now + Duration::from_millis(5), TimerKind::Reorder)));
        best.consider(now + Duration::from_millis(5), TimerKind::Resend);
        assert_eq!(best.get(), Some((now + Duration::from_millis(5), TimerKind::Reorder)));
        best.consider_opt(Some((now, TimerKind::Handshake)));
        assert_eq!(best.get(), Some((now, TimerKind::Handshake)));
    }

    #[test]
    fn the_first_wake_up_is_a_probe_and_handling_it_sends_the_probe_on_its_link() {
        use crate::crypto::Cipher;
        use crate::session::{LinkConfig, Role, Session, SessionConfig};

        let now = start();
        let (keys, _) = crate::testing::key_pair(1, Cipher::ChaCha20Poly1305);
        let link = |id: u8| LinkConfig {
            id: LinkId::new(id),
            priority: id,
            rate_bps: None,
            remote: "192.0.2.1:4754".parse().unwrap(),
        };
        let config = SessionConfig { links: vec![link(0), link(3)], ..SessionConfig::default() };
        let interval = config.tuning.monitor.probe_interval;
        let mut session = Session::new(Role::Edge, config, keys, now, 7).unwrap();
        let (at, kind) = session.poll_timeout().unwrap();
        let TimerKind::Probe(probed) = kind else { panic!("the first wake-up is {kind:?}") };
        assert!(at >= now && at <= now + interval / 4, "first probes are spread over a quarter interval");
        let mut buf = Vec::new();
        assert!(session.poll_transmit(at, &mut buf).is_none(), "nothing is due before the wake-up is handled");
        session.handle_timeout(at);
        let transmit = session.poll_transmit(at, &mut buf).expect("the probe goes out");
        assert_eq!(transmit.link, probed);
        assert_eq!(session.link_stats(probed).unwrap().probes_sent, 1);
        let (next, _) = session.poll_timeout().unwrap();
        assert!(next > at, "the handled timer moved on");
    }
}
