//! What goes out: a frame's entry (scheduling it onto links, or dropping it at the entry when
//! the links it was given are overrun), the order in which [`Session::poll_transmit`] sends
//! (what is owed the peer first, then NAKs, path-MTU probes and data), and sealing.

use std::time::{Duration, Instant};

use super::keys::Keys;
use super::link::Link;
use super::{Session, Transmit};
use crate::crypto::PathNonce;
use crate::fragment::{Split, emit_piece_header};
use crate::monitor::LinkState;
use crate::scheduler::{FrameMeta, LinkView, Spend};
use crate::stats::DropReason;
use crate::wire::{
    ControlMessage, ControlType, DataHeader, FLAG_RETRANSMIT, FRAGMENT_PIECE, GRE_HEADER_LEN, GreRepr, MAX_FRAME_LEN,
    PathKey, Protocol,
};
use crate::{FrameSeq, LinkId, LinkSet, MAX_LINKS, PacketNumber};

/// A frame given to a link whose model queue is at least this long finds the link busy: the
/// demand reached its rate, which may then grow.
pub const BUSY_QUEUE: Duration = Duration::from_millis(2);
/// A frame is dropped at the tunnel's entry rather than queued behind more than this on every
/// link chosen for it (the modem's buffer is not to fill: inner TCP sees the drop and backs off
/// at once), if the path agrees ([`super::ENTRY_SUSTAIN`]).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(100);
/// Frames queued for sending before the oldest is dropped.
pub const MAX_QUEUED_FRAMES: usize = 4096;
/// Ethernet header length: the shortest frame the engine carries.
pub const MIN_FRAME_LEN: usize = 14;
/// Spare frame buffers kept for reuse.
pub(super) const MAX_POOLED: usize = 1024;

/// A frame waiting to be sealed onto the links chosen for it.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) frame: Vec<u8>,
    links: LinkSet,
    /// A copy answering a NAK: it is not kept for retransmission again.
    pub(super) retransmit: bool,
    /// The links a copy actually went out on.
    pub(super) sent_on: LinkSet,
    /// The link whose pieces are going out, how the frame is split for it (fixed when the
    /// link's turn starts, so a path-MTU change mid-frame cannot mix two splits), and the next
    /// piece.
    current: Option<(LinkId, Split)>,
    piece: u8,
}

impl Pending {
    /// A frame handed in, to go out on `links`.
    const fn new(seq: u64, frame: Vec<u8>, links: LinkSet) -> Self {
        Self { seq, frame, links, retransmit: false, sent_on: LinkSet::EMPTY, current: None, piece: 0 }
    }

    /// A copy of a frame sent before, to go out again on `links`.
    pub(super) fn resend(seq: u64, frame: Vec<u8>, links: LinkSet) -> Self {
        Self { retransmit: true, ..Self::new(seq, frame, links) }
    }

    /// The next piece to seal: its link, the frame's split for that link, and the piece's
    /// index. `max_datagram` gives a link's datagram size (`None` skips the link); `None` once
    /// every link had every piece.
    fn next_piece(&mut self, max_datagram: impl Fn(LinkId) -> Option<usize>) -> Option<(LinkId, Split, usize)> {
        let (id, split) = match self.current {
            Some(current) => current,
            None => loop {
                let id = self.links.pop_first()?;
                if let Some(max) = max_datagram(id) {
                    let split = Split::new(self.frame.len(), max);
                    self.current = Some((id, split));
                    self.piece = 0;
                    break (id, split);
                }
            },
        };
        let piece = usize::from(self.piece);
        self.piece += 1;
        if usize::from(self.piece) >= split.pieces() {
            self.current = None;
        }
        Some((id, split, piece))
    }
}

/// Which links [`Session::refresh_views`] shows the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Views {
    /// Every link (a new frame: the scheduler weighs down and carrier-less links itself).
    All,
    /// Only links that can send now (a re-sent copy).
    Sendable,
}

/// Counts a frame of `len` bytes chosen for `links` in their views, so that the next frame of
/// the same batch is chosen, and its deadline checked, behind it.
pub(super) fn charge_views(views: &mut [LinkView], links: LinkSet, len: usize) {
    for view in views.iter_mut().filter(|v| links.contains(v.id)) {
        view.charge(len + crate::wire::DATA_OVERHEAD);
    }
}

impl Session {
    /// Rebuilds the scheduler's views of the links as of `now`, their model queues drained.
    pub(super) fn refresh_views(&mut self, now: Instant, which: Views) {
        self.views.clear();
        for link in self.links.iter_mut().flatten() {
            link.drain_backlog(now);
            if which == Views::All || link.can_send() {
                self.views.push(link.view());
            }
        }
        // A link past its data cap is a backup: out of every choice while another is usable.
        if self.views.iter().any(|v| v.spend != Spend::BackupOnly && v.state.is_usable()) {
            self.views.retain(|v| v.spend != Spend::BackupOnly);
        }
    }

    /// Schedules a frame from the local side onto links (see [`Session::handle_frame`]).
    pub(super) fn enter_frame(&mut self, now: Instant, frame: &[u8], adopted: bool) -> Result<(), DropReason> {
        self.stats.frames_in += 1;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            return Err(self.count(DropReason::BadFrameLength));
        }
        // A frame dropped here takes no sequence: the peer would wait for it as a gap, and ask.
        let seq = self.next_frame_seq;
        self.refresh_views(now, Views::All);
        let tuning = self.config.tuning.send;
        let sustained: LinkSet = self
            .links
            .iter_mut()
            .flatten()
            .filter_map(|l| l.overrun_sustained(now, tuning.entry_sustain).then_some(l.id))
            .collect();
        let meta = FrameMeta { seq: FrameSeq(seq), len: frame.len(), critical: crate::scheduler::is_critical(frame) };
        let mut chosen = self.scheduler.schedule(now, &meta, &self.views);
        let queue_of = |views: &[LinkView], id: LinkId| {
            views.iter().find(|v| v.id == id).map_or(Duration::ZERO, |v| v.queue_delay)
        };
        // Over capacity only where the path agrees, and has for a while: a model queue that the
        // measured round trips do not show (beyond what the link's jitter alone shows,
        // RateControl::queue_limit) is the model's error, a rate not yet grown to the link's,
        // and the frame goes out, which is what lets the rate grow; a moment's real queue
        // (ENTRY_SUSTAIN) is waited out.
        let full = |id: LinkId| queue_of(&self.views, id) > tuning.max_queue_delay;
        let overrun = |id: LinkId| full(id) && sustained.contains(id);
        // Frames adopted from another session are a one-time backlog, not offered load: neither
        // they nor the frames that come while they drain are refused for the queue they make.
        let backlog = adopted || self.backlog_until.is_some_and(|until| now < until);
        if !backlog && !chosen.is_empty() && chosen.iter().all(full) {
            // The links chosen are full by the model: in the modes that spread by capacity, a
            // degraded link with room (which the scheduler passes over while a link is up)
            // takes the frame, where it may be lost and re-sent. Waiting for the path to agree
            // first, as a refusal does, leaves the stream queued on links that cannot carry it,
            // and then refused.
            let spreads = self.config.mode.spreads_by_capacity();
            let overflow = self
                .views
                .iter()
                .filter(|v| spreads && v.state == LinkState::Degraded && v.queue_delay <= tuning.max_queue_delay)
                .min_by_key(|v| (v.expected_arrival(frame.len()), v.priority, v.id));
            match overflow {
                Some(view) => chosen = [view.id].into_iter().collect(),
                // A frame refused here is lost for certain.
                None if chosen.iter().all(overrun) => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        for id in chosen.iter() {
                            if let Some(l) = self.link(id) {
                                tracing::debug!(link = %id, rate = l.tx.cc.rate_bps(), model_queue = ?queue_of(&self.views, id),
                                    path_queue = ?l.tx.cc.queue_delay(), jitter = ?l.monitor.jitter(), "over capacity");
                            }
                        }
                    }
                    return Err(self.count(DropReason::OverCapacity));
                }
                None => {}
            }
        }
        for id in chosen.iter() {
            let queue = queue_of(&self.views, id);
            match self.link_mut(id) {
                Some(link) if link.remote.is_some() => {
                    link.charge(frame.len());
                    if queue >= tuning.busy_queue {
                        link.tx.cc.on_busy();
                    }
                }
                _ => chosen.remove(id),
            }
        }
        if chosen.is_empty() {
            return Err(self.count(DropReason::NoLink));
        }
        self.next_frame_seq += 1;
        if self.queue.len() >= tuning.max_queued_frames {
            if let Some(old) = self.queue.pop_front() {
                self.pool.push(old.frame);
            }
            self.count(DropReason::QueueFull);
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        if self.config.clamp_mss && crate::mss::clamp(&mut buf, self.mss_datagram()).is_some() {
            self.stats.mss_clamped += 1;
        }
        let copies = chosen.len();
        self.queue.push_back(Pending::new(seq, buf, chosen));
        self.fec_push(now, seq, self.queue.len() - 1, copies);
        Ok(())
    }

    /// The next datagram to send (see [`Session::poll_transmit`]). In order: probe replies and
    /// path-MTU answers, reports owed for data, probes, NAKs and `Gone`s, path-MTU probes, and
    /// then data, re-sent copies first.
    pub(super) fn next_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        for slot in 0..MAX_LINKS {
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if let Some((echo_seq, echo_ts)) = link.owed.reply.take() {
                let reply = [ControlMessage::ProbeReply { echo_seq, echo_ts }];
                if let Some(t) = self.seal_control(now, slot, &reply, buf) {
                    return Some(t);
                }
            }
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if let Some(size) = link.owed.mtu_ack.take() {
                // With the reports: the packet answers the data that came in on the link.
                let mut reply = vec![ControlMessage::MtuAck { size }];
                reply.extend(self.reports());
                if let Some(t) = self.seal_control(now, slot, &reply, buf) {
                    return Some(t);
                }
            }
        }
        for slot in 0..MAX_LINKS {
            // Data that arrived is answered on its link at least every ACK_INTERVAL, so the
            // sender sees at once when a busy link stops carrying.
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if !link.owed.ack
                || link
                    .owed
                    .last_control
                    .is_some_and(|at| now.saturating_duration_since(at) < crate::monitor::ACK_INTERVAL)
            {
                continue;
            }
            link.owed.ack = false;
            let messages: Vec<ControlMessage> = self.reports().collect();
            if let Some(t) = self.seal_control(now, slot, &messages, buf) {
                return Some(t);
            }
        }
        for slot in 0..MAX_LINKS {
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            if !std::mem::take(&mut link.owed.probe) {
                continue;
            }
            let priority = link.priority;
            let excused = link.monitor.excused();
            let mut messages = Vec::with_capacity(MAX_LINKS + 3);
            messages.push(ControlMessage::Probe { priority });
            messages.extend(excused.map(|total| ControlMessage::Excused { total }));
            if self.draining {
                messages.push(ControlMessage::Draining);
            }
            if self.standby {
                messages.push(ControlMessage::Standby);
            }
            messages.extend(self.placement.map(ControlMessage::Placement));
            if let Some(next) = self.recovery.sent.next_seq() {
                messages.push(ControlMessage::Sent { next: next as u32 });
            }
            messages.extend(self.reports());
            if let Some(t) = self.seal_control(now, slot, &messages, buf) {
                if let Some(link) = self.links[slot].as_mut() {
                    let pn = link.tx.next_pn - 1;
                    link.monitor.on_probe_sent(now, pn);
                    link.stats.probes_sent += 1;
                }
                return Some(t);
            }
        }
        if let Some(t) = self.send_naks(now, buf) {
            return Some(t);
        }
        for slot in 0..MAX_LINKS {
            let Some(size) = self.links[slot].as_mut().and_then(|link| link.owed.mtu_probe.take()) else {
                continue;
            };
            // With the reports, as every probe: the packet answers the data that came in.
            let excused = self.links[slot].as_ref().and_then(|l| l.monitor.excused());
            let mut probe = vec![ControlMessage::MtuProbe { size: size as u16 }];
            probe.extend(excused.map(|total| ControlMessage::Excused { total }));
            probe.extend(self.reports());
            if let Some(t) = self.seal_control_padded(now, slot, &probe, size, buf) {
                if let Some(link) = self.links[slot].as_mut() {
                    link.stats.mtu_probes_sent += 1;
                }
                return Some(t);
            }
        }
        loop {
            // A block's recovery shards go out as soon as its frames have.
            if let Some(t) = self.next_recovery(now, buf) {
                return Some(t);
            }
            let Some(pending) = self.queue.front_mut() else { break };
            // One link at a time, each piece of the frame in turn.
            let links = &self.links;
            let max_datagram = |id: LinkId| id.index().and_then(|i| links[i].as_ref()).map(|l| l.pmtu.current());
            let Some((id, split, piece)) = pending.next_piece(max_datagram) else {
                if let Some(done) = self.queue.pop_front() {
                    self.keep_sent(now, done);
                }
                continue;
            };
            let seq = pending.seq;
            let Some(slot) = id.index() else { continue };
            if let Some(t) = self.seal_data(now, slot, seq, split, piece, buf) {
                return Some(t);
            }
        }
        None
    }

    /// Seals `messages` onto the link in `slot`.
    pub(super) fn seal_control(
        &mut self,
        now: Instant,
        slot: usize,
        messages: &[ControlMessage],
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        self.seal_control_padded(now, slot, messages, 0, buf)
    }

    /// Seals `messages` onto the link in `slot`, padded to a datagram of `size` bytes if it
    /// would be shorter (a path-MTU probe).
    fn seal_control_padded(
        &mut self,
        now: Instant,
        slot: usize,
        messages: &[ControlMessage],
        size: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let ts = Self::timestamp(self.epoch, now);
        let build = |buf: &mut Vec<u8>| {
            buf.push(ControlType::Sealed.to_u8());
            let aad_len = buf.len();
            buf.extend_from_slice(&ts.to_be_bytes());
            for message in messages {
                message.emit(buf);
            }
            let sealed = buf.len() + crate::wire::TAG_LEN;
            if size > sealed + 1 {
                crate::wire::emit_padding(buf, size - sealed);
            }
            aad_len
        };
        let transmit = self.seal(now, slot, Protocol::Control, build, buf);
        if transmit.is_some()
            && let Some(link) = self.links[slot].as_mut()
        {
            // Any packet on the link answers the data that came in on it.
            link.owed.control_sent(now);
        }
        transmit
    }

    /// Seals piece `piece` of the frame at the front of the queue (the whole frame if `split`
    /// has one piece) onto the link in `slot`.
    fn seal_data(
        &mut self,
        now: Instant,
        slot: usize,
        seq: u64,
        split: Split,
        piece: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let ts = Self::timestamp(self.epoch, now);
        let pending = self.queue.front()?;
        let retransmit = pending.retransmit;
        let flags = if retransmit { FLAG_RETRANSMIT } else { 0 };
        let whole = split.pieces() == 1;
        let fragment = if whole { 0 } else { FRAGMENT_PIECE };
        let header = DataHeader { frame_seq: seq as u32, send_ts: ts, flags, fragment };
        let frame = &pending.frame;
        let range = split.range(piece);
        let build = |buf: &mut Vec<u8>| {
            let aad_len = emit_data_header(buf, &header);
            if !whole {
                emit_piece_header(range.start, frame.len(), buf);
            }
            buf.extend_from_slice(&frame[range]);
            aad_len
        };
        // The first copy is every piece on the first link a frame goes out on.
        let first_copy = !retransmit && pending.sent_on.iter().all(|l| l.index() == Some(slot));
        let transmit = seal_with(&mut self.links, &mut self.keys, now, slot, Protocol::Ethernet, build, buf);
        let first_piece = piece == 0;
        match transmit {
            Ok(t) => {
                if t.is_some() {
                    let bytes = buf.len() as u64;
                    if first_copy {
                        self.stats.data_bytes_first += bytes;
                    } else {
                        self.stats.data_bytes_extra += bytes;
                    }
                }
                self.stats.frame_copies_sent += u64::from(first_piece);
                self.stats.frames_retransmitted += u64::from(retransmit && t.is_some() && first_piece);
                self.stats.frames_fragmented += u64::from(!whole && first_piece && t.is_some());
                if let (Some(t), Some(pending)) = (t, self.queue.front_mut()) {
                    pending.sent_on.insert(t.link);
                }
                if let Some(link) = self.links[slot].as_mut() {
                    link.stats.tx_frames += u64::from(first_piece);
                    link.stats.retransmits += u64::from(retransmit && first_piece);
                    link.data_sent(now);
                }
                t
            }
            Err(reason) => {
                self.count(reason);
                None
            }
        }
    }

    pub(super) fn seal(
        &mut self,
        now: Instant,
        slot: usize,
        protocol: Protocol,
        build: impl FnOnce(&mut Vec<u8>) -> usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        match seal_with(&mut self.links, &mut self.keys, now, slot, protocol, build, buf) {
            Ok(t) => t,
            Err(reason) => {
                self.count(reason);
                None
            }
        }
    }

    /// Counts a frame about to be queued on `links` against their backlog.
    pub(super) fn charge(&mut self, links: LinkSet, len: usize) {
        for id in links.iter() {
            if let Some(link) = self.link_mut(id) {
                link.charge(len);
            }
        }
    }
}

/// Appends a data packet's inner header to `buf`, which holds its associated data: the
/// associated data's length.
pub(super) fn emit_data_header(buf: &mut Vec<u8>, header: &DataHeader) -> usize {
    let aad_len = buf.len();
    buf.resize(aad_len + crate::wire::DATA_HEADER_LEN, 0);
    // The buffer was just sized for the header, so emitting cannot fail.
    let _ = header.emit(&mut buf[aad_len..]);
    aad_len
}

/// Writes GRE header + body into `buf` and seals it on the link in `slot`. `Ok(None)` when the
/// link cannot send (no remote address or no carrier).
fn seal_with(
    links: &mut [Option<Link>],
    keys: &mut Keys,
    now: Instant,
    slot: usize,
    protocol: Protocol,
    build: impl FnOnce(&mut Vec<u8>) -> usize,
    buf: &mut Vec<u8>,
) -> Result<Option<Transmit>, DropReason> {
    let Some(link) = links.get_mut(slot).and_then(Option::as_mut) else {
        return Ok(None);
    };
    let Some(destination) = link.remote.filter(|_| link.monitor.carrier()) else {
        return Ok(None);
    };
    let keys = keys.sealing(now)?;
    let pn = link.tx.next_pn;
    buf.clear();
    buf.resize(GRE_HEADER_LEN, 0);
    let repr = GreRepr { protocol, key: PathKey { index: keys.remote_index, link: link.id }, sequence: pn as u32 };
    repr.emit(buf).map_err(|_| DropReason::SealFailed)?;
    let aad_len = build(buf);
    let nonce = PathNonce { link: link.id, packet_number: PacketNumber(pn) };
    keys.seal(nonce, buf, aad_len)?;
    link.tx.next_pn += 1;
    link.stats.tx_packets += 1;
    link.stats.tx_bytes += buf.len() as u64;
    tracing::trace!(link = %link.id, pn, len = buf.len(), "sealed");
    Ok(Some(Transmit { link: link.id, destination }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_frame_goes_out_link_by_link_each_piece_in_turn() {
        let links: LinkSet = [LinkId::new(1), LinkId::new(4)].into_iter().collect();
        let mut pending = Pending::new(7, vec![0; 3000], links);
        let size = |id: LinkId| Some(if id.get() == 1 { 1400 } else { 9000 });
        let mut order = Vec::new();
        while let Some((id, split, piece)) = pending.next_piece(size) {
            order.push((id.get(), split.pieces(), piece));
        }
        let pieces_on_1 = Split::new(3000, 1400).pieces();
        assert!(pieces_on_1 > 1);
        let expected: Vec<_> = (0..pieces_on_1).map(|p| (1, pieces_on_1, p)).chain([(4, 1, 0)]).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn a_link_gone_from_the_session_is_skipped() {
        let links: LinkSet = [LinkId::new(0), LinkId::new(2)].into_iter().collect();
        let mut pending = Pending::resend(1, vec![0; 100], links);
        let only_2 = |id: LinkId| (id.get() == 2).then_some(1400);
        assert_eq!(pending.next_piece(only_2).map(|(id, _, piece)| (id.get(), piece)), Some((2, 0)));
        assert_eq!(pending.next_piece(only_2), None);
    }

    #[test]
    fn views_of_a_batch_are_charged_for_each_frame_chosen() {
        let view = |id: u8| LinkView {
            rate_bps: 8_000_000,
            path_queue: Some(Duration::ZERO),
            ..crate::scheduler::view_for_test(id, crate::LinkState::Up, 0, 10)
        };
        let mut views = [view(0), view(1)];
        let links: LinkSet = [LinkId::new(0)].into_iter().collect();
        charge_views(&mut views, links, 1000 - crate::wire::DATA_OVERHEAD);
        assert_eq!(views[0].queue_delay, Duration::from_millis(1));
        assert_eq!(views[0].path_queue, Some(Duration::from_millis(1)));
        assert!(views[1].queue_delay.is_zero());
    }
}
