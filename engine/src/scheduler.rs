//! Which links carry each frame: policy behind one trait, mechanism in the session.
//!
//! The session owns the mechanism (queues, sealing, per-link accounting) and asks a [`Scheduler`]
//! only to choose. A scheduler sees each link through a [`LinkView`]: its state, priority, delay
//! estimate, rate and how much the session has already queued on it. That is enough for an
//! earliest-delivery scheduler, and [`Scheduler::retransmit`] chooses where a re-sent frame goes.

use core::fmt;
use std::time::{Duration, Instant};

use crate::monitor::LinkState;
use crate::tuning::Tuning;
use crate::{FrameSeq, LinkId, LinkSet};

/// After a more preferred link comes back, active-backup waits this long (the link staying up
/// throughout) before it moves the stream back to it.
pub const FAILBACK_HOLD: Duration = Duration::from_secs(2);
/// The rate assumed for a link with no configured rate and no measurement yet.
pub const DEFAULT_LINK_RATE_BPS: u64 = 10_000_000;

/// How a session spreads frames over its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Every frame on every usable link; the receiver keeps the first copy. Hitless failover.
    Redundant,
    /// One link by priority carries data; the others carry probes only.
    ActiveBackup,
    /// Each frame on the link where it is expected to arrive first.
    Bond,
    /// Bond, and spare capacity spent on duplicates: small control frames first, then every
    /// frame while capacity allows, and every frame on a link whose quality trends down.
    #[default]
    Auto,
}

impl Mode {
    /// The name used in config and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redundant => "redundant",
            Self::ActiveBackup => "active-backup",
            Self::Bond => "bond",
            Self::Auto => "auto",
        }
    }

    /// Whether the mode spreads frames by the links' capacity (and so sends a frame that the
    /// links chosen for it have no room for on a degraded link with room).
    pub const fn spreads_by_capacity(self) -> bool {
        matches!(self, Self::Bond | Self::Auto)
    }

    /// Parses a config name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "redundant" => Some(Self::Redundant),
            "active-backup" => Some(Self::ActiveBackup),
            "bond" => Some(Self::Bond),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// The scheduler that implements the mode, tuned by `tuning`.
    pub fn scheduler(self, tuning: &Tuning) -> Box<dyn Scheduler> {
        match self {
            Self::Redundant => Box::new(Redundant),
            Self::ActiveBackup => Box::new(ActiveBackup::new(tuning.scheduler.failback_hold)),
            Self::Bond => Box::new(Bond),
            Self::Auto => Box::new(Auto {
                spare_queue: tuning.scheduler.spare_queue,
                trending_loss: tuning.scheduler.trending_loss,
                second_copy_queue: tuning.send.max_queue_delay,
            }),
        }
    }
}

/// What a link may be spent on, as its owner pays for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spend {
    /// Unmetered: first copies, and `auto`'s duplicates first.
    #[default]
    Free,
    /// Paid by the byte (an LTE plan): first copies as any link, but `auto`'s spare duplicates
    /// only while no free link is up.
    Metered,
    /// Past its data cap: used only while no other link is usable.
    BackupOnly,
}

impl Spend {
    /// As status and metrics name it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Metered => "metered",
            Self::BackupOnly => "backup_only",
        }
    }
}

/// What a scheduler knows of one link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkView {
    /// The link.
    pub id: LinkId,
    /// Its state.
    pub state: LinkState,
    /// Its priority: lower is preferred.
    pub priority: u8,
    /// Since when it has been usable without interruption.
    pub usable_since: Option<Instant>,
    /// Whether it has carrier (a down link with carrier may only be blackholed).
    pub carrier: bool,
    /// Estimated one-way delay to the peer.
    pub one_way_delay: Duration,
    /// Estimated capacity in bits per second.
    pub rate_bps: u64,
    /// How long what is already queued on it takes to drain at `rate_bps`.
    pub queue_delay: Duration,
    /// Forward loss (0..=1).
    pub loss: f64,
    /// The queue the path's own round trips show (the congestion controller's), if measured.
    pub path_queue: Option<Duration>,
    /// What it may be spent on.
    pub spend: Spend,
}

impl LinkView {
    /// When a frame of `len` bytes sent now is expected to arrive, relative to now.
    pub fn expected_arrival(&self, len: usize) -> Duration {
        self.one_way_delay + self.queue_delay + self.serialization(len)
    }

    /// When a re-sent frame of `len` bytes sent now can arrive, to decide whether it still
    /// makes its deadline: behind the path's measured queue where that is shorter than the
    /// model's. The model's queue runs ahead of the path's while the rate is below what the link
    /// carries, and by the model alone frames that would arrive in time were given up.
    /// Scheduling keeps the model's queue, which is what holds each link to its rate.
    pub fn resend_arrival(&self, len: usize) -> Duration {
        let queue = self.path_queue.map_or(self.queue_delay, |q| q.min(self.queue_delay));
        self.one_way_delay + queue + self.serialization(len)
    }

    /// Counts `bytes` more as queued on the link, as a frame chosen for it from this view adds:
    /// the next frame chosen from the same views sees it (a batch of re-sent frames is spread,
    /// and timed, behind its own earlier frames).
    pub fn charge(&mut self, bytes: usize) {
        let serialization = self.serialization(bytes);
        self.queue_delay += serialization;
        self.path_queue = self.path_queue.map(|q| q + serialization);
    }

    fn serialization(&self, len: usize) -> Duration {
        Duration::from_secs_f64(len as f64 * 8.0 / self.rate_bps.max(1) as f64)
    }
}

/// What a scheduler knows of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// The frame's sequence.
    pub seq: FrameSeq,
    /// Its length in bytes.
    pub len: usize,
    /// A small control frame (see [`is_critical`]).
    pub critical: bool,
}

/// Frames up to this long are control frames worth a duplicate: ARP, TCP's bare ACKs, SYNs and
/// FINs (66 to 86 bytes), SRT's control packets (ACK, NAK, ACKACK, keepalive), DNS queries,
/// ICMP echoes and IPv6 neighbour discovery. They cost little to send twice, and losing one
/// stalls far more than its own bytes (a TCP sender waits for the ACK; SRT's NAK is a
/// retransmission request).
pub const CRITICAL_FRAME_LEN: usize = 160;
/// Ethertype of ARP.
const ETHERTYPE_ARP: u16 = 0x0806;

/// Whether an Ethernet frame is a small control frame that `auto` duplicates first.
pub fn is_critical(frame: &[u8]) -> bool {
    let ethertype = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    frame.len() <= CRITICAL_FRAME_LEN || ethertype == Some(ETHERTYPE_ARP)
}

/// A scheduling policy.
pub trait Scheduler: Send + fmt::Debug {
    /// Chooses the links that carry `frame`. An empty set drops it (counted by the session).
    fn schedule(&mut self, now: Instant, frame: &FrameMeta, links: &[LinkView]) -> LinkSet;

    /// Chooses the links that carry a copy of `frame` re-sent in answer to a NAK that came in on
    /// `via`. The default is what [`Scheduler::schedule`] would choose now, plus `via`: the link
    /// that just proved it works. The session sends a second copy, a little later, on `via` if
    /// it is chosen (else on the first link chosen), since the NAK means a loss just happened.
    fn retransmit(&mut self, now: Instant, frame: &FrameMeta, links: &[LinkView], via: Option<LinkId>) -> LinkSet {
        let mut set = self.schedule(now, frame, links);
        set.extend(via);
        set
    }
}

/// When no link is usable, frames still go out on the links most likely to work (proving ones
/// first, then down links that keep carrier), rather than being dropped before they are tried.
fn fallback(links: &[LinkView]) -> LinkSet {
    let probing: LinkSet = links.iter().filter(|l| l.state == LinkState::Probing && l.carrier).map(|l| l.id).collect();
    if !probing.is_empty() {
        return probing;
    }
    links.iter().filter(|l| l.carrier).map(|l| l.id).collect()
}

/// Every frame on every usable link (SMPTE 2022-7 style).
#[derive(Debug, Default, Clone, Copy)]
pub struct Redundant;

impl Scheduler for Redundant {
    fn schedule(&mut self, _now: Instant, _frame: &FrameMeta, links: &[LinkView]) -> LinkSet {
        let usable: LinkSet = links.iter().filter(|l| l.state.is_usable()).map(|l| l.id).collect();
        if usable.is_empty() { fallback(links) } else { usable }
    }
}

/// One link carries data, chosen by health then priority, with fail-back hysteresis.
#[derive(Debug, Clone, Copy)]
pub struct ActiveBackup {
    active: Option<LinkId>,
    /// A better link takes over once it has been usable this long.
    failback_hold: Duration,
}

impl Default for ActiveBackup {
    fn default() -> Self {
        Self::new(FAILBACK_HOLD)
    }
}

impl ActiveBackup {
    /// A scheduler that fails back to a better link once it has been usable `failback_hold`.
    pub const fn new(failback_hold: Duration) -> Self {
        Self { active: None, failback_hold }
    }

    /// The link carrying data, if one was chosen.
    pub const fn active(&self) -> Option<LinkId> {
        self.active
    }

    fn rank(link: &LinkView) -> (bool, u8, LinkId) {
        (link.state != LinkState::Up, link.priority, link.id)
    }
}

impl Scheduler for ActiveBackup {
    fn schedule(&mut self, now: Instant, _frame: &FrameMeta, links: &[LinkView]) -> LinkSet {
        let best = links.iter().filter(|l| l.state.is_usable()).min_by_key(|l| Self::rank(l));
        let Some(best) = best else {
            self.active = None;
            return fallback(links);
        };
        let current = self.active.and_then(|id| links.iter().find(|l| l.id == id && l.state.is_usable()));
        let chosen = match current {
            Some(current) if current.id == best.id => current.id,
            Some(current) => {
                let settled =
                    best.usable_since.is_some_and(|since| now.saturating_duration_since(since) >= self.failback_hold);
                if settled { best.id } else { current.id }
            }
            None => best.id,
        };
        self.active = Some(chosen);
        [chosen].into_iter().collect()
    }

    /// Only the active link carries data, re-sent frames included (after a failover, it is the
    /// link that survived).
    fn retransmit(&mut self, now: Instant, frame: &FrameMeta, links: &[LinkView], _via: Option<LinkId>) -> LinkSet {
        self.schedule(now, frame, links)
    }
}

/// Earliest delivery: each frame on the usable link where it is expected to arrive first, from
/// the link's one-way delay, the rate its congestion controller allows and what is already
/// queued on it. Degraded links are used only when no link is up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bond;

impl Bond {
    /// The link where a frame of `len` bytes arrives first: an up link if any, else a degraded one.
    fn earliest(len: usize, links: &[LinkView]) -> Option<&LinkView> {
        let pick = |state: LinkState| {
            links.iter().filter(|l| l.state == state).min_by_key(|l| (l.expected_arrival(len), l.priority, l.id))
        };
        pick(LinkState::Up).or_else(|| pick(LinkState::Degraded))
    }
}

impl Scheduler for Bond {
    fn schedule(&mut self, _now: Instant, frame: &FrameMeta, links: &[LinkView]) -> LinkSet {
        match Self::earliest(frame.len, links) {
            Some(link) => [link.id].into_iter().collect(),
            None => fallback(links),
        }
    }

    /// The two usable links where the copy arrives first, and `via`: a second loss on one link
    /// does not lose the frame again.
    fn retransmit(&mut self, _now: Instant, frame: &FrameMeta, links: &[LinkView], via: Option<LinkId>) -> LinkSet {
        let mut usable: Vec<&LinkView> = links.iter().filter(|l| l.state.is_usable()).collect();
        if usable.is_empty() {
            return fallback(links);
        }
        usable.sort_by_key(|l| (l.expected_arrival(frame.len), l.priority, l.id));
        let mut set: LinkSet = usable.iter().take(2).map(|l| l.id).collect();
        set.extend(via);
        set
    }
}

/// In `auto`, a link is spare while its queue is shorter than this: a duplicate there delays
/// no first copy by more.
pub const SPARE_QUEUE: Duration = Duration::from_millis(5);
/// In `auto`, a link whose forward loss is above this trends down: its frames are duplicated.
pub const TRENDING_LOSS: f64 = 0.02;

/// Bond, plus duplicates on spare capacity. Each frame goes on its earliest link, as in
/// [`Bond`]; a copy also goes on
/// * the next-earliest link, for a small control frame ([`FrameMeta::critical`]) or a frame
///   whose earliest link trends down (degraded, or losing more than [`TRENDING_LOSS`]), if that
///   link has room at all;
/// * every other usable link that is spare (queue under [`SPARE_QUEUE`]) and free, or metered
///   while no free link is up ([`Spend`]): metered links carry duplicates only when the stream
///   has no free link to be protected by.
///
/// Under light load every frame thus travels twice or more and a cut costs nothing; as the
/// load grows the links' queues leave no spare room, and `auto` becomes [`Bond`].
#[derive(Debug, Clone, Copy)]
pub struct Auto {
    /// A link whose queue is shorter than this has room for a spare copy.
    spare_queue: Duration,
    /// A link losing more than this share trends down: critical frames get a second copy.
    trending_loss: f64,
    /// The second copy goes only to a link whose queue is at most this.
    second_copy_queue: Duration,
}

impl Default for Auto {
    fn default() -> Self {
        Self {
            spare_queue: SPARE_QUEUE,
            trending_loss: TRENDING_LOSS,
            second_copy_queue: crate::session::MAX_QUEUE_DELAY,
        }
    }
}

impl Auto {
    fn trends_down(&self, link: &LinkView) -> bool {
        link.state == LinkState::Degraded || link.loss > self.trending_loss
    }
}

impl Scheduler for Auto {
    fn schedule(&mut self, _now: Instant, frame: &FrameMeta, links: &[LinkView]) -> LinkSet {
        let Some(first) = Bond::earliest(frame.len, links) else {
            return fallback(links);
        };
        let mut set: LinkSet = [first.id].into_iter().collect();
        let mut others: Vec<&LinkView> = links.iter().filter(|l| l.state.is_usable() && l.id != first.id).collect();
        others.sort_by_key(|l| (l.expected_arrival(frame.len), l.priority, l.id));
        let free_up = links.iter().any(|l| l.state == LinkState::Up && l.spend == Spend::Free);
        let spendable = |l: &LinkView| l.spend == Spend::Free || !free_up;
        // The second copy on the next-earliest free link, if one is usable.
        let second = others.iter().find(|l| l.spend == Spend::Free).or_else(|| others.first());
        if (frame.critical || self.trends_down(first))
            && let Some(second) = second
            && second.queue_delay <= self.second_copy_queue
        {
            set.insert(second.id);
        }
        set.extend(others.iter().filter(|l| l.queue_delay < self.spare_queue && spendable(l)).map(|l| l.id));
        set
    }

    fn retransmit(&mut self, now: Instant, frame: &FrameMeta, links: &[LinkView], via: Option<LinkId>) -> LinkSet {
        Bond.retransmit(now, frame, links, via)
    }
}

/// A link as tests see it: carrier, 10 Mbit/s, no queue, no loss.
#[cfg(test)]
pub(crate) fn view_for_test(id: u8, state: LinkState, priority: u8, owd_ms: u64) -> LinkView {
    LinkView {
        id: LinkId::new(id),
        state,
        priority,
        usable_since: None,
        carrier: true,
        one_way_delay: Duration::from_millis(owd_ms),
        rate_bps: 10_000_000,
        queue_delay: Duration::ZERO,
        loss: 0.0,
        path_queue: None,
        spend: Spend::Free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::view_for_test as view;

    fn now() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    const FRAME: FrameMeta = FrameMeta { seq: FrameSeq(0), len: 1000, critical: false };

    #[test]
    fn bond_resends_on_the_two_links_where_a_copy_arrives_first() {
        let links = [view(0, LinkState::Up, 0, 80), view(1, LinkState::Up, 0, 10), view(2, LinkState::Degraded, 0, 20)];
        let set = Bond.retransmit(now(), &FRAME, &links, None);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![LinkId::new(1), LinkId::new(2)]);
        let set = Bond.retransmit(now(), &FRAME, &links, Some(LinkId::new(0)));
        assert_eq!(set.len(), 3, "the link the NAK came in on proved it works");
    }

    #[test]
    fn redundant_uses_every_usable_link() {
        let links =
            [view(0, LinkState::Up, 0, 10), view(1, LinkState::Degraded, 0, 10), view(2, LinkState::Down, 0, 10)];
        let set = Redundant.schedule(now(), &FRAME, &links);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![LinkId::new(0), LinkId::new(1)]);
    }

    #[test]
    fn with_no_usable_link_frames_go_to_probing_links() {
        let links = [view(0, LinkState::Down, 0, 10), view(1, LinkState::Probing, 0, 10)];
        assert_eq!(Redundant.schedule(now(), &FRAME, &links).iter().collect::<Vec<_>>(), vec![LinkId::new(1)]);
    }

    #[test]
    fn active_backup_prefers_up_over_degraded_and_fails_back_after_the_hold() {
        let t = now();
        let mut s = ActiveBackup::default();
        let mut links =
            [view(0, LinkState::Down, 0, 10), view(1, LinkState::Degraded, 1, 10), view(2, LinkState::Up, 2, 10)];
        assert!(s.schedule(t, &FRAME, &links).contains(LinkId::new(2)));
        links[0].state = LinkState::Up;
        links[0].usable_since = Some(t);
        assert!(s.schedule(t + FAILBACK_HOLD / 2, &FRAME, &links).contains(LinkId::new(2)));
        assert!(s.schedule(t + FAILBACK_HOLD, &FRAME, &links).contains(LinkId::new(0)));
    }

    #[test]
    fn auto_spends_spare_duplicates_on_metered_links_only_while_no_free_link_is_up() {
        let metered = |id: u8, owd: u64| LinkView { spend: Spend::Metered, ..view(id, LinkState::Up, id, owd) };
        let frame = FrameMeta { seq: FrameSeq(1), len: 1200, critical: false };
        let mut auto = Auto::default();
        let links = [view(0, LinkState::Up, 0, 10), metered(1, 20), metered(2, 30)];
        let ids = |set: LinkSet| set.iter().map(|l| l.get()).collect::<Vec<_>>();
        assert_eq!(ids(auto.schedule(now(), &frame, &links)), [0], "the free link is up: no metered duplicate");
        let critical = FrameMeta { critical: true, ..frame };
        assert_eq!(ids(auto.schedule(now(), &critical, &links)), [0, 1], "a critical frame is still protected");
        let free_down = [view(0, LinkState::Down, 0, 10), metered(1, 20), metered(2, 30)];
        assert_eq!(ids(auto.schedule(now(), &frame, &free_down)), [1, 2], "no free link: metered ones protect");
        let two_free = [view(0, LinkState::Up, 0, 10), metered(1, 20), view(2, LinkState::Up, 2, 30)];
        assert_eq!(ids(auto.schedule(now(), &frame, &two_free)), [0, 2], "duplicates on the other free link");
    }

    #[test]
    fn bond_picks_the_earliest_expected_arrival() {
        let mut links = [view(0, LinkState::Up, 0, 20), view(1, LinkState::Up, 0, 80)];
        assert!(Bond.schedule(now(), &FRAME, &links).contains(LinkId::new(0)));
        links[0].queue_delay = Duration::from_millis(61);
        assert!(Bond.schedule(now(), &FRAME, &links).contains(LinkId::new(1)));
    }
}
