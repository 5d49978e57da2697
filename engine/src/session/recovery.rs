//! Loss recovery, both ways. As a receiver: which missing frames are asked for (NAK), when, and
//! on which links. As a sender: answering a NAK with re-sent copies or with `Gone`, and
//! re-sending at once what a link that went down or black-holed probably swallowed. Both
//! senders' paths share one view rebuild ([`Session::refresh_views`]) and one re-send plan
//! ([`resend_plan`] and [`commit_resend`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Session;
use super::link::Link;
use super::send::{Pending, Views, charge_views};
use crate::fragment::Split;
use crate::monitor::{LinkState, StateReason};
use crate::retransmit::{Gaps, MAX_MISSING, NakTiming, Sent, SentFrames};
use crate::scheduler::{FrameMeta, LinkView, Scheduler};
use crate::wire::{ControlMessage, expand_u32};
use crate::{FrameSeq, LinkId, LinkSet};

/// A link that delivered a data frame this recently counts as carrying data: a frame it has
/// passed is not coming on it.
pub const DATA_RECENT: Duration = Duration::from_millis(50);
/// The retransmission timeout assumed before any RTT is measured.
pub const DEFAULT_RTO: Duration = Duration::from_millis(200);
/// One frame is re-sent at most this often (or every half RTT, if longer), however many NAKs
/// ask for it: the copies of one NAK sent on two links bring one retransmission.
pub const MIN_RESEND_GAP: Duration = Duration::from_millis(10);
/// A re-sent frame goes out twice on the link the NAK came in on (the freshest proof that it
/// works), this far apart, so that one loss burst does not take both copies.
pub const RESEND_SPACING: Duration = Duration::from_millis(10);
/// NAK ranges in one control packet.
pub const MAX_NAKS_PER_PACKET: usize = 32;

/// Why a link's recent frames are taken for lost ([`Session::resend_in_flight`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Swallowed {
    /// The link went down.
    Down(StateReason),
    /// The path stopped carrying the datagram size in use.
    BlackHole,
}

/// What a session keeps to recover losses.
#[derive(Debug)]
pub(super) struct Recovery {
    /// Frames sent, kept for the budget to answer NAKs.
    pub(super) sent: SentFrames,
    /// Second copies of re-sent frames, each with the time it joins the queue.
    pub(super) delayed: VecDeque<(Instant, Pending)>,
    /// Frames missing on the receive side, and the NAKs for them.
    pub(super) gaps: Gaps,
    /// NAKs (and answers to the peer's NAKs) to send, and the links they still go out on.
    feedback: Vec<ControlMessage>,
    feedback_links: LinkSet,
    /// Second copies of NAKs that had one link to go on, each with the time it goes out.
    second_naks: VecDeque<(Instant, Vec<ControlMessage>)>,
    /// NAK ranges in one control packet.
    max_per_packet: usize,
    /// When the missing frames were last checked for NAKs due ([`Session::collect_naks`]).
    pub(super) checked_at: Option<Instant>,
}

impl Recovery {
    pub(super) fn new(budget: Duration, max_per_packet: usize) -> Self {
        Self {
            sent: SentFrames::new(budget),
            delayed: VecDeque::new(),
            gaps: Gaps::default(),
            feedback: Vec::new(),
            feedback_links: LinkSet::default(),
            second_naks: VecDeque::new(),
            max_per_packet,
            checked_at: None,
        }
    }

    /// The oldest second copy, if it is due by `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Pending> {
        pop_if_due(&mut self.delayed, now)
    }

    /// Queues ascending frame sequences as ranges of `message`; `route` gives the links they
    /// go out on when none are left from an earlier batch.
    fn queue_feedback(
        &mut self,
        seqs: &[u64],
        message: fn(u32, u16) -> ControlMessage,
        route: impl FnOnce() -> LinkSet,
    ) {
        self.queue_messages(ranges(seqs, message), route);
    }

    /// Queues feedback messages; `route` as for [`Self::queue_feedback`].
    fn queue_messages(&mut self, messages: Vec<ControlMessage>, route: impl FnOnce() -> LinkSet) {
        if messages.is_empty() {
            return;
        }
        self.feedback.extend(messages);
        if self.feedback_links.is_empty() {
            self.feedback_links = route();
        }
    }

    /// The oldest second copy of a NAK, if it is due by `now`.
    fn pop_second_nak(&mut self, now: Instant) -> Option<Vec<ControlMessage>> {
        pop_if_due(&mut self.second_naks, now)
    }

    /// When the next second copy of a NAK goes out.
    pub(super) fn next_second_nak(&self) -> Option<Instant> {
        self.second_naks.front().map(|(at, _)| *at)
    }

    /// The next packet's worth of feedback and the link it goes out on; `route` gives the
    /// links for what is left once every link of this batch had its copy. `None` when there
    /// is nothing to send, or no link to send it on (the feedback is then dropped).
    fn next_feedback(&mut self, route: impl Fn() -> LinkSet) -> Option<(LinkId, Vec<ControlMessage>)> {
        if self.feedback.is_empty() {
            return None;
        }
        let Some(id) = self.feedback_links.pop_first() else {
            self.feedback.clear();
            return None;
        };
        let take = self.feedback.len().min(self.max_per_packet);
        let messages = self.feedback[..take].to_vec();
        if self.feedback_links.is_empty() {
            self.feedback.drain(..take);
            if !self.feedback.is_empty() {
                self.feedback_links = route();
            }
        }
        Some((id, messages))
    }
}

/// The front of a queue kept in time order, if it is due by `now`.
fn pop_if_due<T>(queue: &mut VecDeque<(Instant, T)>, now: Instant) -> Option<T> {
    queue.front().is_some_and(|(at, _)| *at <= now).then(|| queue.pop_front().map(|(_, item)| item)).flatten()
}

/// Ascending frame sequences as ranges of `message`.
fn ranges(seqs: &[u64], message: fn(u32, u16) -> ControlMessage) -> Vec<ControlMessage> {
    let mut out = Vec::new();
    let mut run: Option<(u64, u16)> = None;
    for &seq in seqs {
        run = match run {
            Some((first, count)) if first + u64::from(count) == seq && count < u16::MAX => Some((first, count + 1)),
            Some((first, count)) => {
                out.push(message(first as u32, count));
                Some((seq, 1))
            }
            None => Some((seq, 1)),
        };
    }
    if let Some((first, count)) = run {
        out.push(message(first as u32, count));
    }
    out
}

/// Which copies a re-send of a kept frame makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Copies {
    /// The peer asked for the frame (a NAK that came in on `via`, if known), or may have lost
    /// everything it had: the copies the scheduler's retransmission policy picks.
    Asked(Option<LinkId>),
    /// Unasked, for a link that probably swallowed the frame: one copy where the mode would send
    /// the frame new. Most such frames did arrive, so more copies would mostly load the links
    /// left; a copy lost in turn is asked for like any frame.
    Unasked,
}

/// Where and when a copy of kept frame `sent` would go if re-sent at `now`: the links `copies`
/// picks, and when the first copy can arrive. `None` if no copy can arrive within `budget` of
/// the frame's first sending.
pub(super) fn resend_plan(
    scheduler: &mut dyn Scheduler,
    views: &[LinkView],
    now: Instant,
    sent: &Sent,
    copies: Copies,
    budget: Duration,
) -> Option<(LinkSet, Duration)> {
    let meta = FrameMeta { seq: FrameSeq(sent.seq), len: sent.frame.len(), critical: false };
    let links = match copies {
        Copies::Asked(via) => scheduler.retransmit(now, &meta, views, via),
        Copies::Unasked => scheduler.schedule(now, &meta, views),
    };
    let arrival = views.iter().filter(|v| links.contains(v.id)).map(|v| v.resend_arrival(meta.len)).min()?;
    (now.saturating_duration_since(sent.at) + arrival <= budget).then_some((links, arrival))
}

/// A kept frame to re-send: the links of its first copies, and the one link of a spaced
/// second copy, if it gets one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resend {
    seq: u64,
    links: LinkSet,
    second: Option<LinkId>,
}

impl Resend {
    /// Adds a second copy, [`RESEND_SPACING`] after the first, so that one loss burst does not
    /// take both: on `via` if it is one of the links picked (the freshest proof that a link
    /// works), else on the first; charged to its view like the first.
    fn spaced(mut self, views: &mut [LinkView], via: Option<LinkId>, len: usize) -> Self {
        self.second = via.filter(|&id| self.links.contains(id)).or_else(|| self.links.iter().next());
        if let Some(id) = self.second {
            charge_views(views, [id].into_iter().collect(), len);
        }
        self
    }
}

/// Notes that `sent` is re-sent at `now` on `links`, arriving `arrival` later, and charges the
/// copy to their views so the next frame of the batch is timed behind it.
pub(super) fn commit_resend(
    views: &mut [LinkView],
    sent: &mut Sent,
    now: Instant,
    links: LinkSet,
    arrival: Duration,
) -> Resend {
    sent.resent_at = Some(now);
    sent.resent_due = Some(now + arrival);
    sent.resent_on = links;
    charge_views(views, links, sent.frame.len());
    Resend { seq: sent.seq, links, second: None }
}

/// The links a NAK goes out on, best first (lowest retransmission timeout): at most two,
/// and never one that is down.
fn nak_route(links: &[Option<Link>]) -> Vec<(LinkId, Duration)> {
    let mut route: Vec<(LinkId, Duration)> = links
        .iter()
        .flatten()
        .filter(|l| l.monitor.state() != LinkState::Down && l.can_send())
        .map(|l| (l.id, l.monitor.probe_timeout()))
        .collect();
    route.sort_by_key(|&(id, rto)| (rto, id));
    route.truncate(2);
    route
}

fn nak_links(links: &[Option<Link>]) -> LinkSet {
    nak_route(links).into_iter().map(|(id, _)| id).collect()
}

impl Session {
    /// A frame has gone out on every link chosen for it: keep it to answer NAKs.
    pub(super) fn keep_sent(&mut self, now: Instant, done: Pending) {
        if done.retransmit || !self.config.retransmit {
            self.pool.push(done.frame);
        } else if let Some(buf) = self.recovery.sent.insert(now, done.seq, done.sent_on, done.frame) {
            self.pool.push(buf);
        }
    }

    /// When missing frames are next due for a NAK: timed as [`Session::collect_naks`] timed them
    /// when it last ran, so a wake-up is never one it would not act on, or when a link that
    /// counted then stops counting as carrying data, which changes that timing.
    pub(super) fn next_nak_check(&self) -> Option<Instant> {
        let checked = self.recovery.checked_at.filter(|_| self.config.retransmit && !self.recovery.gaps.is_empty())?;
        let recent = self.config.tuning.recovery.data_recent;
        let carrying_ends = self
            .carrying_data(checked)
            .filter_map(|l| l.rx.last_data)
            .map(|at| at + recent + Duration::from_nanos(1))
            .min();
        [self.recovery.gaps.next_due(&self.nak_timing(checked)), carrying_ends].into_iter().flatten().min()
    }

    /// The links that carried data within [`DATA_RECENT`] of `now`, whatever their state: it
    /// judges the way out, and they are judged by what comes in.
    fn carrying_data(&self, now: Instant) -> impl Iterator<Item = &Link> + Clone {
        let recent = self.config.tuning.recovery.data_recent;
        self.links.iter().flatten().filter(move |l| l.brings_data(now, recent))
    }

    /// How missing frames are timed, from the links as they measure at `now`. Only links that
    /// carried data within [`DATA_RECENT`] count as having passed a frame, and of those only
    /// links that are up while one is, or whose frames come on time: no further behind the
    /// stream than a round trip may rise and still be in time. A degraded or down link whose
    /// frames come that late (a delay spike, or frames that waited at the peer) brings its
    /// copies later than a NAK's answer would; one down only because its way out fails still
    /// brings the peer's frames on time. When no link qualifies, every link carrying data
    /// counts: there is nothing faster to wait for.
    pub(super) fn nak_timing(&self, now: Instant) -> NakTiming {
        let tuning = self.config.tuning.recovery;
        let carrying = self.carrying_data(now);
        let on_time = |l: &Link| l.monitor.state() == LinkState::Up || l.rx.behind <= l.monitor.rise_allowed();
        let passed = |on_time_only: bool| {
            carrying
                .clone()
                .filter(|l| !on_time_only || on_time(l))
                .map(|l| l.rx.highest_frame.map_or(0, |h| h + 1))
                .min()
        };
        let passed_everywhere = passed(true).or_else(|| passed(false)).unwrap_or(0);
        let rto = nak_route(&self.links).first().map_or(tuning.default_rto, |(_, rto)| *rto);
        let rtt = self.best_rtt().unwrap_or(tuning.default_rto);
        NakTiming {
            passed_everywhere,
            hold: self.reorder.hold(),
            rto,
            last_useful: self.config.latency_budget.saturating_sub(rtt),
        }
    }

    /// How much later than on the link in `slot` a copy sent at the same time can arrive on
    /// another usable link: the slowest one's least one-way delay and jitter, less this one's
    /// least one-way delay.
    pub(super) fn slower_by(&self, slot: usize) -> Duration {
        let owd = |l: &Link| l.min_one_way().unwrap_or_default();
        let this = self.links.get(slot).and_then(Option::as_ref).map_or(Duration::ZERO, owd);
        let slowest = self
            .links
            .iter()
            .flatten()
            .filter(|l| l.monitor.state().is_usable())
            .map(|l| owd(l) + l.monitor.jitter())
            .max()
            .unwrap_or_default();
        slowest.saturating_sub(this)
    }

    /// The lowest smoothed RTT of the links that are not down.
    fn best_rtt(&self) -> Option<Duration> {
        self.links
            .iter()
            .flatten()
            .filter(|l| l.monitor.state() != LinkState::Down)
            .filter_map(|l| l.monitor.quality().srtt)
            .min()
    }

    /// Moves the missing frames that are due into the NAK to send.
    pub(super) fn collect_naks(&mut self, now: Instant) {
        self.recovery.checked_at = Some(now);
        if !self.config.retransmit || self.recovery.gaps.is_empty() {
            return;
        }
        let timing = self.nak_timing(now);
        let (mut due, mut again) = (Vec::new(), Vec::new());
        self.recovery.gaps.take_due(now, &timing, &mut due, &mut again);
        let Some(last) = due.last().max(again.last()).copied() else { return };
        self.reorder.await_retransmit(last);
        self.stats.frames_nacked += due.len() as u64;
        tracing::trace!(frames = due.len(), again = again.len(), "nak");
        let mut messages = ranges(&due, |first, count| ControlMessage::Nak { first, count });
        messages.extend(ranges(&again, |first, count| ControlMessage::NakAgain { first, count }));
        // On a lone link, a second copy a little later: one loss burst must not take the NAK and
        // leave the frame waiting a whole retransmission timeout.
        if nak_route(&self.links).len() == 1 {
            let at = now + self.config.tuning.recovery.resend_spacing;
            self.recovery.second_naks.push_back((at, messages.clone()));
        }
        let links = &self.links;
        self.recovery.queue_messages(messages, || nak_links(links));
    }

    /// Queues the second copies of NAKs that are due by `now`.
    pub(super) fn queue_second_naks(&mut self, now: Instant) {
        while let Some(messages) = self.recovery.pop_second_nak(now) {
            let links = &self.links;
            self.recovery.queue_messages(messages, || nak_links(links));
        }
    }

    fn queue_feedback(&mut self, seqs: &[u64], message: fn(u32, u16) -> ControlMessage) {
        let links = &self.links;
        self.recovery.queue_feedback(seqs, message, || nak_links(links));
    }

    /// Seals the next NAK packet onto the next link of its route.
    pub(super) fn send_naks(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<super::Transmit> {
        loop {
            let links = &self.links;
            let (id, messages) = self.recovery.next_feedback(|| nak_links(links))?;
            if let Some(t) = id.index().and_then(|slot| self.seal_control(now, slot, &messages, buf)) {
                return Some(t);
            }
        }
    }

    /// Answers a NAK that came in on the link in `via`: re-sends the frames it names that are
    /// still kept and can still arrive within the budget, ahead of new frames, on the links the
    /// scheduler's retransmission policy picks; and a second copy [`RESEND_SPACING`] later, on
    /// `via` if the policy picked it, else on the first link picked. Frames that cannot be
    /// re-sent are answered with `Gone`, so the peer stops waiting for them. A NAK that asks
    /// `again` (the peer saw a later re-sent copy come) is never taken for early.
    pub(super) fn answer_nak(&mut self, now: Instant, via: usize, first: u32, count: u16, again: bool) {
        if !self.config.retransmit {
            return;
        }
        let first = expand_u32(self.next_frame_seq, first);
        let count = u64::from(count).min(MAX_MISSING as u64);
        self.refresh_views(now, Views::Sendable);
        let via = self.views.iter().find(|v| v.id.index() == Some(via)).map(|v| v.id);
        let tuning = self.config.tuning.recovery;
        let guard = self.best_rtt().map_or(tuning.min_resend_gap, |rtt| (rtt / 2).max(tuning.min_resend_gap));
        let budget = self.config.latency_budget;
        let queued = self.first_queued();
        let mut resent = Vec::new();
        let mut gone = Vec::new();
        for seq in first..first + count {
            let Some(sent) = self.recovery.sent.get_mut(seq) else {
                if seq < queued {
                    gone.push(seq);
                }
                continue;
            };
            // A NAK for a first copy that cannot have arrived yet is the peer's guess (it did
            // not know the link carried data), not a loss: the copy is still on its way, and
            // the peer asks again after its RTO if it never comes.
            let links = &self.links;
            let owd = |id: LinkId| {
                id.index().and_then(|i| links.get(i)).and_then(Option::as_ref).and_then(|l| l.min_one_way())
            };
            let in_flight = sent.links.iter().filter_map(owd).max();
            let back = via.and_then(owd).unwrap_or_default();
            // So is a NAK for a re-sent copy that cannot have arrived yet, behind the queue it
            // joined: answering it would send the frame again onto that queue, which grows the
            // queue and delays the copy the NAK asks for (on the last link left, the queue grew
            // past its limit and new frames were dropped at the entry).
            let early = !again
                && match sent.resent_due {
                    None => in_flight.is_some_and(|d| now.saturating_duration_since(sent.at) < d + back),
                    Some(due) => now < due + back,
                };
            if early {
                self.stats.naks_early += 1;
                continue;
            }
            let Some((links, arrival)) =
                resend_plan(&mut *self.scheduler, &self.views, now, sent, Copies::Asked(via), budget)
            else {
                gone.push(seq);
                continue;
            };
            if sent.resent_at.is_some_and(|at| now.saturating_duration_since(at) < guard) {
                continue;
            }
            let len = sent.frame.len();
            resent.push(commit_resend(&mut self.views, sent, now, links, arrival).spaced(&mut self.views, via, len));
        }
        if !gone.is_empty() {
            self.queue_feedback(&gone, |first, count| ControlMessage::Gone { first, count });
        }
        self.queue_resends(now, &resent);
    }

    /// A link went down, or its path stopped carrying the size in use: the frames it carried in
    /// the time it takes to notice are probably lost, so they are re-sent now, without waiting
    /// for the peer's NAK a round trip later (a NAK's answer on a black-holed link, before the
    /// black hole is found, is swallowed too). Copies that did arrive are dropped by the peer's
    /// dedup. A black hole took every frame too big for it: those are re-sent as if asked for.
    /// A link that went down may have delivered most of what it carried: one copy each.
    pub(super) fn resend_in_flight(&mut self, now: Instant, lost_on: LinkId, why: Swallowed) {
        let Some(link) = self.link(lost_on) else { return };
        if !self.config.retransmit || self.recovery.sent.is_empty() {
            return;
        }
        // What a dead link swallowed: for a carrier loss, what was on the wire (one probe
        // timeout); else everything sent since one RTT before the last packet heard on it (the
        // peer had answered what came before). What a black hole swallowed: every frame too big
        // for the base size, since the probe that last showed the size in use getting through.
        let rtt = link.monitor.quality().srtt.unwrap_or(self.config.tuning.recovery.default_rto);
        let since = match why {
            Swallowed::Down(StateReason::CarrierLost) => now.checked_sub(link.monitor.probe_timeout()),
            Swallowed::Down(_) => link.monitor.last_heard().checked_sub(rtt),
            Swallowed::BlackHole => link.pmtu.confirmed_sent(),
        }
        .unwrap_or(now);
        // After a black hole the link is back at its base size.
        let base = link.pmtu.current();
        self.refresh_views(now, Views::Sendable);
        let usable: LinkSet = self.views.iter().filter(|v| v.state.is_usable()).map(|v| v.id).collect();
        if usable.is_empty() {
            // The last link went: no link would carry the copies (the scheduler's fallback would
            // put them back on the links that just failed). The frames stay kept, for the peer's
            // NAKs once a link is back, or for another gateway's session taking the stream.
            tracing::debug!(link = %lost_on, ?why, "nothing re-sent: no link is usable");
            return;
        }
        // A copy on a link still usable may yet arrive: a first copy, or a copy re-sent for a NAK
        // (what a loss burst took before the link went down).
        let on_its_way = |sent: &Sent| sent.links.iter().chain(sent.resent_on.iter()).any(|id| usable.contains(id));
        // Another link's path may have shrunk too, not yet found: each is re-sent, even what a
        // NAK already had re-sent (at the old size, maybe on this link). Copies the peer already
        // has cost bandwidth once, within the latency budget.
        let fits = |sent: &Sent| Split::new(sent.frame.len(), base).pieces() == 1;
        let (copies, safe): (Copies, &dyn Fn(&Sent) -> bool) = match why {
            Swallowed::Down(_) => (Copies::Unasked, &on_its_way),
            Swallowed::BlackHole => (Copies::Asked(None), &fits),
        };
        let frames =
            self.resend_kept(now, copies, |sent| sent.at >= since && sent.links.contains(lost_on) && !safe(sent));
        tracing::debug!(link = %lost_on, frames = frames.len(), ?why, "re-sending what a link swallowed");
    }

    /// The first frame the peer may not have delivered: the oldest kept frame that no link it
    /// went on has had confirmed by the peer's reports. `None` when every kept frame was.
    pub fn first_unconfirmed_frame(&self) -> Option<u64> {
        let confirmed = |sent: &Sent| {
            sent.links.iter().any(|id| self.link(id).and_then(|l| l.tx.confirmed_until).is_some_and(|at| sent.at <= at))
        };
        self.recovery.sent.iter().find(|s| !confirmed(s)).map(|s| s.seq)
    }

    /// What another session takes over when its peer replaces this one's (the gateway stopped
    /// answering): the frames this peer may not have delivered that can still arrive within the
    /// budget, then those still queued for their first sending, in order. Nothing is left to
    /// send this peer again: the queue, the kept frames and the spaced re-sends empty.
    pub fn take_undelivered(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let budget = self.config.latency_budget;
        let first = self.first_unconfirmed_frame().unwrap_or(u64::MAX);
        self.hand_over(first.min(self.first_queued()));
        let mut frames: Vec<Vec<u8>> = self
            .recovery
            .sent
            .drain()
            .filter(|s| s.seq >= first && now.saturating_duration_since(s.at) < budget)
            .map(|s| s.frame)
            .collect();
        frames.extend(self.take_queued());
        // The re-sent copies still queued are of frames that either moved above or were
        // confirmed: sent to this peer now, they would only crowd the uplinks the stream moves to.
        for pending in self.queue.drain(..) {
            self.pool.push(pending.frame);
        }
        self.recovery.delayed.clear();
        frames
    }

    /// The frames still queued for their first sending, in order, taken out of the queue: what a
    /// session that takes over from this one make-before-break sends (this one keeps what it
    /// sent, to answer its peer's NAKs).
    pub fn take_queued(&mut self) -> Vec<Vec<u8>> {
        self.hand_over(self.first_queued());
        let (first, rest): (VecDeque<Pending>, VecDeque<Pending>) = self.queue.drain(..).partition(|p| !p.retransmit);
        self.queue = rest;
        first.into_iter().map(|p| p.frame).collect()
    }

    /// Notes that the frames from `from` on, up to the next to be taken in, went to another
    /// session: this session's peer never gets them. It is told so (`Gone`) now, and again when
    /// the session carries the stream once more ([`Session::set_standby`]), so that it does not
    /// hold the first new frames behind them: a peer cut off now does not hear it the first time.
    fn hand_over(&mut self, from: u64) {
        let to = self.next_frame_seq;
        if from >= to {
            return;
        }
        let (from, to) = self.handed_over.map_or((from, to), |(f, t)| (f.min(from), t.max(to)));
        self.handed_over = Some((from, to));
        self.announce_handed_over();
    }

    /// Queues `Gone` for the frames handed over to another session.
    pub(super) fn announce_handed_over(&mut self) {
        let Some((from, to)) = self.handed_over else { return };
        let gone: Vec<u64> = (from..to).collect();
        self.queue_feedback(&gone, |first, count| ControlMessage::Gone { first, count });
    }

    /// The first frame still queued for its first sending: from it on, nothing is gone.
    fn first_queued(&self) -> u64 {
        self.queue.iter().find(|p| !p.retransmit).map_or(self.next_frame_seq, |p| p.seq)
    }

    /// The peer lost the session and a new one took its place (it restarted, and the new keys
    /// said so); it expects frame `first` next. Every kept frame from `first` on that can still
    /// arrive within the budget is re-sent, since the old peer may not have delivered it; the
    /// others are `Gone` at once, so the new peer does not hold what follows behind them.
    pub fn resend_to_new_peer(&mut self, now: Instant, first: u64) {
        let resent = if self.config.retransmit {
            self.refresh_views(now, Views::Sendable);
            self.resend_kept(now, Copies::Asked(None), |sent| sent.seq >= first)
        } else {
            Vec::new()
        };
        let mut kept = resent.iter().copied().peekable();
        let gone: Vec<u64> = (first..self.first_queued()).filter(|&seq| kept.next_if_eq(&seq).is_none()).collect();
        tracing::debug!(
            first,
            resent = resent.len(),
            gone = gone.len(),
            "re-sending what the lost session may not have delivered"
        );
        if !gone.is_empty() {
            self.queue_feedback(&gone, |first, count| ControlMessage::Gone { first, count });
        }
        self.stats.frames_resent_to_new_peer += resent.len() as u64;
        self.stats.frames_gone_to_new_peer += gone.len() as u64;
    }

    /// Re-sends, without waiting for a NAK, every kept frame `wanted` picks that can still arrive
    /// within the budget, with the `copies` picked from the views (fresh from the caller), each
    /// timed behind the ones before; returns their sequences, ascending.
    fn resend_kept(&mut self, now: Instant, copies: Copies, wanted: impl Fn(&Sent) -> bool) -> Vec<u64> {
        let budget = self.config.latency_budget;
        let mut resend = Vec::new();
        for sent in self.recovery.sent.iter_mut().filter(|s| wanted(s)) {
            let Some((links, arrival)) = resend_plan(&mut *self.scheduler, &self.views, now, sent, copies, budget)
            else {
                continue;
            };
            resend.push(commit_resend(&mut self.views, sent, now, links, arrival));
        }
        self.queue_resends(now, &resend);
        resend.iter().map(|r| r.seq).collect()
    }

    /// Queues the copies of kept frames that [`commit_resend`] planned: the first on each link
    /// picked, ahead of new frames (in sequence order), and any second [`RESEND_SPACING`] later.
    fn queue_resends(&mut self, now: Instant, resends: &[Resend]) {
        for resend in resends.iter().rev() {
            let frame = self.copy_sent(resend.seq);
            self.charge(resend.links, frame.len());
            self.queue.push_front(Pending::resend(resend.seq, frame, resend.links));
        }
        let spacing = self.config.tuning.recovery.resend_spacing;
        for resend in resends {
            let Some(id) = resend.second else { continue };
            let frame = self.copy_sent(resend.seq);
            let links: LinkSet = [id].into_iter().collect();
            self.charge(links, frame.len());
            self.recovery.delayed.push_back((now + spacing, Pending::resend(resend.seq, frame, links)));
        }
    }

    /// A copy of kept frame `seq`, in a pooled buffer.
    fn copy_sent(&mut self, seq: u64) -> Vec<u8> {
        let mut frame = self.pool.pop().unwrap_or_default();
        frame.clear();
        if let Some(sent) = self.recovery.sent.get_mut(seq) {
            frame.extend_from_slice(&sent.frame);
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Mode;

    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    fn view(id: u8, owd_ms: u64) -> LinkView {
        crate::scheduler::view_for_test(id, LinkState::Up, id, owd_ms)
    }

    fn sent(seq: u64, at: Instant, len: usize) -> Sent {
        Sent {
            seq,
            at,
            resent_at: None,
            resent_due: None,
            resent_on: LinkSet::EMPTY,
            links: LinkSet::EMPTY,
            frame: vec![0; len],
        }
    }

    #[test]
    fn a_copy_is_planned_only_if_it_can_arrive_within_the_budget() {
        let now = start();
        let views = [view(0, 20), view(1, 80)];
        let mut scheduler = Mode::Bond.scheduler(&crate::Tuning::default());
        let budget = Duration::from_millis(100);
        let young = sent(1, now - Duration::from_millis(10), 1000);
        let (links, arrival) = resend_plan(&mut *scheduler, &views, now, &young, Copies::Asked(None), budget).unwrap();
        assert!(!links.is_empty());
        assert!(arrival >= Duration::from_millis(20), "no copy beats the fastest path: {arrival:?}");
        let old = sent(2, now - Duration::from_millis(95), 1000);
        assert_eq!(resend_plan(&mut *scheduler, &views, now, &old, Copies::Asked(None), budget), None);
        assert_eq!(
            resend_plan(&mut *scheduler, &[], now, &young, Copies::Asked(None), budget),
            None,
            "no link, no plan"
        );
    }

    #[test]
    fn a_committed_copy_and_its_second_are_timed_and_charged_to_the_links_they_go_on() {
        let now = start();
        let mut views = [view(0, 20), view(1, 20), view(2, 20)];
        let mut frame = sent(1, now, 1250);
        let links: LinkSet = [LinkId::new(1), LinkId::new(2)].into_iter().collect();
        let resend = commit_resend(&mut views, &mut frame, now, links, Duration::from_millis(21));
        assert_eq!(frame.resent_at, Some(now));
        assert_eq!(frame.resent_due, Some(now + Duration::from_millis(21)));
        assert_eq!(resend.second, None);
        // 1250 bytes of frame plus the data overhead, at 10 Mbit/s.
        let one = Duration::from_secs_f64((1250 + crate::wire::DATA_OVERHEAD) as f64 * 8.0 / 10e6);
        assert!(views[0].queue_delay.is_zero());
        assert_eq!((views[1].queue_delay, views[2].queue_delay), (one, one));
        let spaced = resend.spaced(&mut views, Some(LinkId::new(2)), 1250);
        assert_eq!(spaced.second, Some(LinkId::new(2)), "the second copy goes on the link the NAK came in on");
        assert_eq!((views[1].queue_delay, views[2].queue_delay), (one, one * 2));
        let unasked = resend.spaced(&mut views, None, 1250);
        assert_eq!(unasked.second, Some(LinkId::new(1)), "without a NAK's link, on the first link picked");
    }

    #[test]
    fn feedback_goes_out_in_ranges_once_on_each_link_of_its_route() {
        let mut recovery = Recovery::new(Duration::from_millis(500), MAX_NAKS_PER_PACKET);
        let route: LinkSet = [LinkId::new(2), LinkId::new(5)].into_iter().collect();
        recovery.queue_feedback(&[3, 4, 5, 9], |first, count| ControlMessage::Nak { first, count }, || route);
        let expected = vec![ControlMessage::Nak { first: 3, count: 3 }, ControlMessage::Nak { first: 9, count: 1 }];
        assert_eq!(recovery.next_feedback(|| route), Some((LinkId::new(2), expected.clone())));
        assert_eq!(recovery.next_feedback(|| route), Some((LinkId::new(5), expected)));
        assert_eq!(recovery.next_feedback(|| route), None);
    }

    #[test]
    fn feedback_with_no_link_to_carry_it_is_dropped() {
        let mut recovery = Recovery::new(Duration::from_millis(500), MAX_NAKS_PER_PACKET);
        recovery.queue_feedback(&[1], |first, count| ControlMessage::Gone { first, count }, || LinkSet::EMPTY);
        assert_eq!(recovery.next_feedback(|| LinkSet::EMPTY), None);
        assert!(recovery.feedback.is_empty());
    }

    #[test]
    fn a_long_nak_is_split_into_packets_of_at_most_max_naks_per_packet() {
        let mut recovery = Recovery::new(Duration::from_millis(500), MAX_NAKS_PER_PACKET);
        let route: LinkSet = [LinkId::new(0)].into_iter().collect();
        let seqs: Vec<u64> = (0..MAX_NAKS_PER_PACKET as u64 + 5).map(|i| i * 2).collect();
        recovery.queue_feedback(&seqs, |first, count| ControlMessage::Nak { first, count }, || route);
        let (_, first) = recovery.next_feedback(|| route).unwrap();
        let (_, second) = recovery.next_feedback(|| route).unwrap();
        assert_eq!((first.len(), second.len()), (MAX_NAKS_PER_PACKET, 5));
        assert_eq!(recovery.next_feedback(|| route), None);
    }
}
