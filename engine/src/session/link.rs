//! One link of a session, split by what it does: what it sends ([`Sender`]: packet numbers, the
//! rate and the model of its queue), what it receives ([`Receiver`]: the replay window and the
//! data it carried) and what it owes the peer ([`Owed`]: probes, probe replies, reports and
//! path-MTU probes and answers). The monitor, the path-MTU search and the counters serve all
//! three.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::DEFAULT_MAX_DATAGRAM;
use crate::LinkId;
use crate::cc::{LinkSample, RateControl};
use crate::monitor::{ACK_INTERVAL, LinkMonitor, LinkState};
use crate::pmtu::PathMtu;
use crate::scheduler::{DEFAULT_LINK_RATE_BPS, LinkView};
use crate::stats::LinkStats;
use crate::tuning::Tuning;
use crate::window::SeqWindow;
use crate::wire::LinkReport;

/// Per-path replay windows cover reordering within one link only.
pub const PATH_REPLAY_WINDOW: usize = 4096;
/// A link's sent packets are sampled for delay at most this often.
pub const SENT_LOG_SPACING: Duration = Duration::from_millis(1);
/// Sampled sent packets kept per link.
const MAX_SENT_LOG: usize = 1024;
/// How long the path's own delays must have shown a queue past its limit
/// ([`RateControl::queue_limit`]) before a frame is dropped at the entry: a sustained overload
/// keeps it there, while the burst of re-sent frames after a cut (a real queue of 110-120 ms
/// for a moment) passes, and the latency budget waits it out.
pub const ENTRY_SUSTAIN: Duration = Duration::from_millis(200);
/// A link losing this share of what it sends has its path MTU confirmed at once: a path that
/// shrank below the size in use loses every large datagram.
pub const MTU_SUSPECT_LOSS: f64 = 0.2;

/// A data packet sent, kept for an RTT sample and to check the scheduler's model.
#[derive(Debug, Clone, Copy)]
struct SentSample {
    pn: u64,
    at: Instant,
    /// The link's datagram bytes sent once it was.
    tx_bytes: u64,
}

/// What a link sends: its packet numbers, its rate, and the model of the queue in front of it.
#[derive(Debug)]
pub(super) struct Sender {
    /// The packet number the next datagram on the link gets.
    pub(super) next_pn: u64,
    /// Bytes the model holds queued on the link, as of `backlog_at`.
    pub(super) backlog_bytes: f64,
    backlog_at: Instant,
    pub(super) cc: RateControl,
    /// Data packets sent, sampled at most every [`SENT_LOG_SPACING`]: packet number, when, and
    /// the link's bytes sent by then. A report that covers one gives an RTT sample and bounds
    /// the model's backlog by what is really in flight. Only data: the peer answers data within
    /// [`ACK_INTERVAL`], while the reports in its probes may come up to a probe interval late.
    sent_log: VecDeque<SentSample>,
    /// When the newest logged packet the peer's reports cover was sent: the peer had what the
    /// link carried until then.
    pub(super) confirmed_until: Option<Instant>,
    /// Since when the path's measured queue has stood past its limit, if it does now.
    queue_over_since: Option<Instant>,
    /// Whether the mode sends on this link by its rate (bond, auto). In the other modes a link
    /// carries what the mode gives it, and the model's queue drains at least as fast as the
    /// peer reports it delivers.
    pub(super) steered: bool,
}

/// What a link receives: its replay window and the data it carried.
#[derive(Debug)]
pub(super) struct Receiver {
    pub(super) replay: SeqWindow,
    /// The highest frame sequence that arrived on this link.
    pub(super) highest_frame: Option<u64>,
    /// When the last data came.
    pub(super) last_data: Option<Instant>,
    /// How long after the stream first passed it the newest frame sent once came on this link:
    /// its frames' lag behind the stream, whether they waited on the way or before it.
    pub(super) behind: Duration,
}

/// What a link owes the peer, and when.
#[derive(Debug)]
pub(super) struct Owed {
    /// When the link's next probe tick is.
    pub(super) next_probe: Instant,
    /// A probe is to go out.
    pub(super) probe: bool,
    /// The peer's probe (its sequence and timestamp) is owed a reply.
    pub(super) reply: Option<(u32, u32)>,
    /// When a control packet last went out on this link.
    pub(super) last_control: Option<Instant>,
    /// Data that arrived since is owed a report ([`ACK_INTERVAL`]).
    pub(super) ack: bool,
    /// The report `ack` asks for is due and a `handle_timeout` has seen it: the next
    /// `poll_transmit` sends it, and `poll_timeout` no longer wakes the driver for it.
    pub(super) ack_woken: bool,
    /// A path-MTU probe of this size is to go out (a `handle_timeout` asked for it).
    pub(super) mtu_probe: Option<usize>,
    /// The peer's path-MTU probe of this size is owed an answer.
    pub(super) mtu_ack: Option<u16>,
}

impl Owed {
    /// When the report owed for data on this link is due.
    pub(super) fn ack_at(&self) -> Instant {
        self.last_control.map_or(self.next_probe, |t| t + ACK_INTERVAL)
    }

    /// Data arrived: a report is owed, and the driver is to be woken for it.
    pub(super) const fn data_arrived(&mut self) {
        if !self.ack {
            self.ack = true;
            self.ack_woken = false;
        }
    }

    /// A control packet went out at `now`: it answers the data that came in.
    pub(super) const fn control_sent(&mut self, now: Instant) {
        self.last_control = Some(now);
        self.ack = false;
    }
}

/// One link's state inside the session.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) id: LinkId,
    pub(super) priority: u8,
    /// What it may be spent on.
    pub(super) spend: crate::scheduler::Spend,
    pub(super) remote: Option<SocketAddr>,
    pub(super) monitor: LinkMonitor,
    /// The largest datagram the link's path carries, as probed.
    pub(super) pmtu: PathMtu,
    pub(super) stats: LinkStats,
    pub(super) tx: Sender,
    pub(super) rx: Receiver,
    pub(super) owed: Owed,
}

impl Link {
    pub(super) fn new(
        id: LinkId,
        priority: u8,
        rate_bps: Option<u64>,
        remote: Option<SocketAddr>,
        first_probe: Instant,
        tuning: &Tuning,
    ) -> Self {
        Self {
            id,
            priority,
            spend: crate::scheduler::Spend::Free,
            remote,
            monitor: LinkMonitor::new(first_probe, tuning.monitor),
            pmtu: PathMtu::new(DEFAULT_MAX_DATAGRAM, tuning.pmtu),
            stats: LinkStats::default(),
            tx: Sender {
                next_pn: 0,
                backlog_bytes: 0.0,
                backlog_at: first_probe,
                cc: RateControl::new(first_probe, DEFAULT_LINK_RATE_BPS, rate_bps, tuning.cc),
                sent_log: VecDeque::new(),
                confirmed_until: None,
                queue_over_since: None,
                steered: false,
            },
            rx: Receiver {
                replay: SeqWindow::new(PATH_REPLAY_WINDOW),
                highest_frame: None,
                last_data: None,
                behind: Duration::ZERO,
            },
            owed: Owed {
                next_probe: first_probe,
                probe: false,
                reply: None,
                last_control: None,
                ack: false,
                ack_woken: false,
                mtu_probe: None,
                mtu_ack: None,
            },
        }
    }

    /// Sets the path-MTU search: up to `max` bytes, probed from `now` on, or `max` as given.
    pub(super) fn path_mtu(mut self, now: Instant, max: usize, probe: bool) -> Self {
        let tuning = self.pmtu.tuning();
        self.pmtu = if probe { PathMtu::new(max, tuning) } else { PathMtu::fixed(max, tuning) };
        self.pmtu.restart(now);
        self
    }

    /// A new link of a session with `config`, steered and probing its path as the config says,
    /// probed every `probe_interval` (the session's pace: slower for a standby); `remote` is
    /// `None` until the peer's first packet on it (at the gateway).
    pub(super) fn of(
        config: &super::SessionConfig,
        id: LinkId,
        priority: u8,
        rate_bps: Option<u64>,
        remote: Option<SocketAddr>,
        first_probe: Instant,
        probe_interval: Duration,
    ) -> Self {
        let mut link = Self::new(id, priority, rate_bps, remote, first_probe, &config.tuning)
            .steered(config.mode.spreads_by_capacity())
            .path_mtu(first_probe, config.max_datagram, config.probe_mtu);
        link.monitor.set_probe_interval(probe_interval);
        link
    }

    pub(super) const fn steered(mut self, steered: bool) -> Self {
        self.tx.steered = steered;
        self
    }

    /// Whether the link can send now: it has a remote address and carrier.
    pub(super) fn can_send(&self) -> bool {
        self.remote.is_some() && self.monitor.carrier()
    }

    /// Whether the link can carry a path-MTU probe now.
    pub(super) fn can_probe_mtu(&self) -> bool {
        self.can_send() && self.monitor.state() != LinkState::Down
    }

    /// The peer restarted: the link's packet numbers, replay window and measurements start
    /// afresh, and it probes at once, and then every `probe_interval` (the session's pace).
    pub(super) fn restart(&mut self, now: Instant, tuning: &Tuning, probe_interval: Duration) {
        let carrier = self.monitor.carrier();
        self.rx.replay = SeqWindow::new(PATH_REPLAY_WINDOW);
        self.tx.next_pn = 0;
        self.tx.sent_log.clear();
        self.owed.reply = None;
        self.monitor = LinkMonitor::new(now, tuning.monitor);
        self.monitor.set_probe_interval(probe_interval);
        if !carrier {
            self.monitor.on_carrier(now, false);
        }
        self.owed.next_probe = now;
    }

    /// The link's path moved to another address: its MTU is searched for afresh.
    pub(super) fn path_moved(&mut self, now: Instant) {
        self.pmtu.restart(now);
        self.owed.mtu_probe = None;
    }

    /// The link's rate: the controller's, or, on a link the mode does not steer by rate, at
    /// least what the peer reports it delivers.
    pub(super) fn rate_bps(&self) -> u64 {
        let rate = self.tx.cc.rate_bps();
        if self.tx.steered { rate } else { rate.max(self.tx.cc.delivery_rate().map_or(0, |d| (d * 8.0) as u64)) }
    }

    /// How long the model's queue takes to drain at the link's rate.
    pub(super) fn backlog_delay(&self) -> Duration {
        Duration::from_secs_f64(self.tx.backlog_bytes * 8.0 / self.rate_bps().max(1) as f64)
    }

    /// Counts a datagram of `len` bytes of frame into the model's queue.
    pub(super) fn charge(&mut self, len: usize) {
        self.tx.backlog_bytes += (len + crate::wire::DATA_OVERHEAD) as f64;
    }

    /// Notes that the packet just sealed on the link carried data: the monitor awaits its
    /// answer (after the link's own modelled queue), and the controller its report.
    pub(super) fn data_sent(&mut self, now: Instant) {
        let pn = self.tx.next_pn - 1;
        self.monitor.on_data_sent(now, pn, self.backlog_delay());
        self.log_sent(now, pn);
    }

    /// Notes packet `pn` sent at `now`, for a delay sample when a report covers it.
    pub(super) fn log_sent(&mut self, now: Instant, pn: u64) {
        let log = &mut self.tx.sent_log;
        if log.back().is_some_and(|s| now.saturating_duration_since(s.at) < SENT_LOG_SPACING) {
            return;
        }
        if log.len() == MAX_SENT_LOG {
            log.pop_front();
        }
        log.push_back(SentSample { pn, at: now, tx_bytes: self.stats.tx_bytes });
    }

    /// Notes that the link went down. What it sent before is no delay sample: a report covering
    /// it comes after the outage, which would read as a queue.
    pub(super) fn went_down(&mut self) {
        self.pmtu.stop();
        self.owed.mtu_probe = None;
        self.tx.sent_log.clear();
    }

    /// Notes that the link is back from down at `now`: it may have a new path, whose MTU is
    /// searched for again.
    pub(super) fn came_back(&mut self, now: Instant) {
        self.pmtu.restart(now);
    }

    /// Takes in the peer's report on this link, sent at `peer_ts` on its clock: the delivery
    /// rate and a delay sample for the controller (`epoch` is the start of our own clock).
    pub(super) fn on_report(&mut self, now: Instant, peer_ts: u32, epoch: Instant) {
        let Some((highest, bytes)) = self.monitor.reported() else { return };
        self.tx.cc.on_delivered(peer_ts, bytes);
        let mut newest = None;
        while self.tx.sent_log.front().is_some_and(|s| s.pn <= highest) {
            newest = self.tx.sent_log.pop_front();
        }
        let Some(sample) = newest else { return };
        self.tx.confirmed_until = Some(sample.at);
        // The raw delays, queue included: the controller's minimum filter finds the path's own
        // delay, and what lies above it is the real queue (the model's guess of the queue must
        // not be subtracted: a rate estimated too low would make every sample look short and
        // poison the minimum).
        let forward = peer_ts.wrapping_sub(super::Session::timestamp(epoch, sample.at));
        self.tx.cc.on_rtt(now, now.saturating_duration_since(sample.at), Some(forward));
        // What was sent after the newest packet the peer has is all that can be queued: the
        // model never holds more (a rate estimated too low would otherwise build a queue that
        // exists only in the model).
        self.drain_backlog(now);
        let in_flight = self.stats.tx_bytes.saturating_sub(sample.tx_bytes) as f64;
        self.tx.backlog_bytes = self.tx.backlog_bytes.min(in_flight);
        self.cc_tick(now);
    }

    /// Lets the controller act on the link's measurements at `now`.
    pub(super) fn cc_tick(&mut self, now: Instant) {
        if self.tx.cc.on_timeout(now, self.cc_sample()) {
            self.trace_cc();
        }
    }

    /// What the controller needs of the link's measurements.
    fn cc_sample(&self) -> LinkSample {
        let quality = self.monitor.quality();
        LinkSample {
            jitter: quality.jitter,
            srtt: self.tx.cc.smoothed_rtt(),
            tx_bytes: self.stats.tx_bytes,
            loss: quality.tx_loss,
        }
    }

    fn trace_cc(&self) {
        let e = self.tx.cc.estimate();
        tracing::debug!(link = %self.id, rate = e.rate_bps, phase = e.phase.as_str(), queue = ?e.queue_delay,
            min_rtt = ?e.min_rtt, delivery = ?e.delivery_bps, model = self.tx.backlog_bytes, "rate");
    }

    /// Whether the path's own delays have shown a queue past its limit for `sustain`, noting
    /// since when. A path with no recent delay sample (a link that has only begun to carry)
    /// shows nothing: its model queue comes from a rate not yet measured.
    pub(super) fn overrun_sustained(&mut self, now: Instant, sustain: Duration) -> bool {
        let Some(queue) = self.tx.cc.queue_delay() else {
            return false;
        };
        if queue < self.tx.cc.queue_limit(self.monitor.jitter()) {
            self.tx.queue_over_since = None;
            return false;
        }
        let since = *self.tx.queue_over_since.get_or_insert(now);
        now.saturating_duration_since(since) >= sustain
    }

    /// Drains the model's queue at the link's rate up to `now`.
    pub(super) fn drain_backlog(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.tx.backlog_at).as_secs_f64();
        self.tx.backlog_bytes = (self.tx.backlog_bytes - elapsed * self.rate_bps() as f64 / 8.0).max(0.0);
        self.tx.backlog_at = now;
    }

    /// A probe tick at `now`, if one is due: the monitor's tick, a probe owed if the link can
    /// send one, and the next tick an interval on, plus a `jitter` (drawn only when a tick is
    /// due) that keeps the links' probes, and the two ends', from locking step.
    pub(super) fn probe_tick(&mut self, now: Instant, interval: Duration, jitter: impl FnOnce() -> Duration) {
        if self.owed.next_probe > now {
            return;
        }
        let jitter = jitter();
        self.monitor.on_tick(now);
        if self.monitor.can_probe() && self.remote.is_some() {
            self.owed.probe = true;
        }
        let late = self.owed.next_probe + interval <= now;
        let base = if late { now } else { self.owed.next_probe };
        self.owed.next_probe = base + interval + jitter;
    }

    /// Asks the path-MTU search for a probe at `now`, if one is due; a link losing at least
    /// `suspect_loss` of what it sends has its size checked at once. Whether the search just
    /// found a black hole (the size in use stopped getting through).
    pub(super) fn mtu_tick(&mut self, now: Instant, suspect_loss: f64) -> bool {
        if self.owed.mtu_probe.is_some() || !self.can_probe_mtu() {
            return false;
        }
        if self.monitor.quality().tx_loss >= suspect_loss {
            self.pmtu.suspect(now);
        }
        let black_holes = self.pmtu.black_holes();
        self.owed.mtu_probe = self.pmtu.poll_probe(now, self.monitor.probe_timeout(), self.monitor.last_heard());
        self.monitor.set_excused(self.pmtu.unanswered());
        self.pmtu.black_holes() > black_holes
    }

    /// What the scheduler sees of the link.
    pub(super) fn view(&self) -> LinkView {
        let quality = self.monitor.quality();
        let rate_bps = self.rate_bps();
        LinkView {
            id: self.id,
            state: self.monitor.state(),
            priority: self.priority,
            usable_since: self.monitor.usable_since(),
            carrier: self.monitor.carrier(),
            // The path's own delay and its usual jitter; the queue we add is the model's
            // (`queue_delay`), so it is not counted twice. The controller's minimum of data
            // round trips, but never above the probes' smoothed RTT: a first round trip held
            // up (an LTE modem waking, an ARP request lost) would otherwise keep the link out
            // of every choice, and with no data on it no data round trip would correct it.
            one_way_delay: match (self.tx.cc.min_rtt(), quality.srtt) {
                (Some(min), Some(srtt)) => Some(min.min(srtt)),
                (min, srtt) => min.or(srtt),
            }
            .map_or(Duration::from_millis(50), |rtt| rtt / 2 + quality.jitter),
            rate_bps,
            queue_delay: self.backlog_delay(),
            loss: quality.tx_loss,
            path_queue: self.tx.cc.queue_delay(),
            spend: self.spend,
        }
    }

    /// The receive report for this link, once it has received something.
    pub(super) fn report(&self) -> Option<LinkReport> {
        let (highest, received, bytes) = self.monitor.rx_counters();
        Some(LinkReport {
            link: self.id,
            highest: highest? as u32,
            received: received as u32,
            received_bytes: bytes as u32,
        })
    }

    /// Whether the peer's data arrived on this link within `recent` of `now`, its carrier held:
    /// the way in carries frames, whatever the link's state says of the way out (a link taken
    /// down because the peer's reports stall still brings the peer's frames).
    pub(super) fn brings_data(&self, now: Instant, recent: Duration) -> bool {
        self.monitor.carrier() && self.rx.last_data.is_some_and(|at| now.saturating_duration_since(at) <= recent)
    }

    /// Half the link's lowest round trip: no copy sent on it arrives sooner.
    pub(super) fn min_one_way(&self) -> Option<Duration> {
        self.tx.cc.min_rtt().or(self.monitor.quality().min_rtt).map(|r| r / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::PROBE_INTERVAL;

    fn link(now: Instant) -> Link {
        Link::new(LinkId::new(3), 1, Some(8_000_000), Some("192.0.2.1:4789".parse().unwrap()), now, &Tuning::default())
    }

    #[test]
    fn sent_packets_are_sampled_at_most_once_per_spacing() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = link(now);
        l.log_sent(now, 0);
        l.log_sent(now + SENT_LOG_SPACING / 2, 1);
        l.log_sent(now + SENT_LOG_SPACING, 2);
        assert_eq!(l.tx.sent_log.iter().map(|s| s.pn).collect::<Vec<_>>(), [0, 2]);
        for i in 0..2 * MAX_SENT_LOG as u32 {
            l.log_sent(now + SENT_LOG_SPACING * (i + 2), u64::from(i) + 3);
        }
        assert_eq!(l.tx.sent_log.len(), MAX_SENT_LOG);
    }

    #[test]
    fn the_model_queue_drains_at_the_links_rate() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = link(now);
        l.charge(10_000 - crate::wire::DATA_OVERHEAD);
        assert_eq!(l.tx.backlog_bytes, 10_000.0);
        let rate = l.rate_bps() as f64;
        l.drain_backlog(now + Duration::from_millis(5));
        let expected = (10_000.0 - 0.005 * rate / 8.0).max(0.0);
        assert!((l.tx.backlog_bytes - expected).abs() < 1.0, "{} != {expected}", l.tx.backlog_bytes);
        l.drain_backlog(now + Duration::from_secs(10));
        assert_eq!(l.tx.backlog_bytes, 0.0);
        assert!(l.view().queue_delay.is_zero());
    }

    #[test]
    fn a_report_is_owed_for_data_and_settled_by_any_control_packet() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = link(now);
        assert_eq!(l.owed.ack_at(), now, "before any control packet, the next probe answers");
        l.owed.data_arrived();
        assert!(l.owed.ack && !l.owed.ack_woken);
        l.owed.ack_woken = true;
        l.owed.data_arrived();
        assert!(l.owed.ack_woken, "more data does not wake the driver twice");
        l.owed.control_sent(now);
        assert!(!l.owed.ack);
        assert_eq!(l.owed.ack_at(), now + ACK_INTERVAL);
    }

    #[test]
    fn probe_ticks_keep_their_interval_and_skip_ahead_when_late() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = link(now);
        l.probe_tick(now - Duration::from_millis(1), PROBE_INTERVAL, || {
            unreachable!("no jitter is drawn before a tick is due")
        });
        assert!(!l.owed.probe, "not due yet");
        l.probe_tick(now, PROBE_INTERVAL, || Duration::ZERO);
        assert!(l.owed.probe);
        assert_eq!(l.owed.next_probe, now + PROBE_INTERVAL);
        let late = now + PROBE_INTERVAL * 5;
        l.probe_tick(late, PROBE_INTERVAL, || Duration::from_micros(7));
        assert_eq!(l.owed.next_probe, late + PROBE_INTERVAL + Duration::from_micros(7));
    }

    #[test]
    fn a_link_without_an_address_neither_probes_nor_searches_its_mtu() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = Link::new(LinkId::new(0), 0, None, None, now, &Tuning::default()).path_mtu(now, 1400, true);
        l.probe_tick(now, PROBE_INTERVAL, || Duration::ZERO);
        assert!(!l.owed.probe);
        assert!(!l.mtu_tick(now + Duration::from_secs(1), MTU_SUSPECT_LOSS));
        assert_eq!(l.owed.mtu_probe, None);
    }

    #[test]
    fn a_restart_forgets_packet_numbers_and_the_replay_window_but_keeps_carrier() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut l = link(now);
        l.log_sent(now, 98);
        l.tx.next_pn = 99;
        l.rx.replay.mark(42);
        l.owed.reply = Some((1, 2));
        l.monitor.on_carrier(now, false);
        l.restart(now + Duration::from_secs(1), &Tuning::default(), PROBE_INTERVAL);
        assert_eq!(l.tx.next_pn, 0);
        assert!(l.tx.sent_log.is_empty(), "packet 98 of the old numbering would stand before the new ones");
        assert_eq!(l.rx.replay.highest(), None);
        assert_eq!(l.owed.reply, None);
        assert!(!l.monitor.carrier(), "a link without carrier stays without it");
        assert_eq!(l.owed.next_probe, now + Duration::from_secs(1));
    }

    #[test]
    fn a_first_round_trip_held_up_does_not_keep_the_link_out_of_the_schedulers_choice() {
        // The first data on an LTE modem waking from idle (or behind a lost ARP request) comes
        // back after a second; every probe since has taken 150 ms. With no data on the link, no
        // data round trip corrects the controller's minimum.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut l = link(t0);
        l.tx.cc.on_rtt(t0 + Duration::from_secs(1), Duration::from_secs(1), None);
        let mut t = t0 + Duration::from_secs(1);
        for seq in 0..20 {
            l.monitor.on_probe_sent(t, seq);
            t += Duration::from_millis(150);
            l.monitor.on_packet_received(t, seq, 100, 0);
            l.monitor.on_probe_reply(t, seq as u32);
        }
        assert_eq!(l.tx.cc.min_rtt(), Some(Duration::from_secs(1)), "no data round trip since");
        let owd = l.view().one_way_delay;
        assert!(owd <= Duration::from_millis(80), "one-way delay {owd:?}: the probes' 150 ms round trips");
    }

    #[test]
    fn no_report_before_anything_was_received() {
        #[allow(clippy::disallowed_methods)]
        let l = link(Instant::now());
        assert_eq!(l.report(), None);
    }
}
