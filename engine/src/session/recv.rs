//! What comes in: a datagram is matched to its keys and link, checked against the link's replay
//! window, opened, and only then allowed to change state: a new link (gateway), a moved path,
//! the monitor's measurements, and then its data (into reassembly and the reorder buffer) or
//! its control messages.

use std::net::SocketAddr;
use std::time::Instant;

use super::link::Link;
use super::{Event, Role, Session};
use crate::crypto::PathNonce;
use crate::fragment::{Joined, Piece};
use crate::reorder::Arrival;
use crate::retransmit::MAX_MISSING;
use crate::stats::DropReason;
use crate::window::Verdict;
use crate::wire::{
    self, ControlHeader, ControlMessage, ControlMessages, DataHeader, FLAG_RETRANSMIT, FRAGMENT_PIECE, Kind, Protocol,
    WireError, expand_u32,
};
use crate::{LinkId, PacketNumber};

impl Session {
    /// Opens one datagram that arrived on `via` from `from`, and acts on it.
    pub(super) fn open_datagram(
        &mut self,
        now: Instant,
        via: LinkId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (repr, kind) = wire::classify(datagram)?;
        let aad_len = match kind {
            Kind::Data | Kind::SealedControl => kind.aad_len(),
            Kind::Handshake(..) => return Err(DropReason::UnexpectedHandshake),
        };
        let generation = self.keys.generation(repr.key.index).ok_or(DropReason::UnknownSession)?;
        if repr.key.link != via {
            return Err(DropReason::BadLink);
        }
        let slot = via.index().ok_or(DropReason::BadLink)?;
        let expected = match &self.links[slot] {
            Some(link) => link.rx.replay.highest().map_or(0, |h| h + 1),
            None if self.role == Role::Gateway => 0,
            None => return Err(DropReason::BadLink),
        };
        let pn = expand_u32(expected, repr.sequence);
        if let Some(link) = &self.links[slot] {
            match link.rx.replay.check(pn) {
                Verdict::Accept => {}
                Verdict::Duplicate => return Err(DropReason::Replay),
                Verdict::TooOld => return Err(DropReason::TooOld),
            }
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(datagram);
        let nonce = PathNonce { link: via, packet_number: PacketNumber(pn) };
        let plain_len = self.keys.open(generation, nonce, &mut self.scratch, aad_len)?;
        if self.keys.opened(now, generation) {
            tracing::info!(index = ?self.keys.current.local_index, "new keys confirmed");
        }

        // Authenticated: from here on the packet may change state.
        if self.links[slot].is_none() {
            self.links[slot] = Some(
                Link::new(via, 0, None, None, now, &self.config.tuning)
                    .steered(self.config.mode.spreads_by_capacity())
                    .path_mtu(now, self.config.max_datagram, self.config.probe_mtu),
            );
        }
        let link = self.links[slot].as_mut().ok_or(DropReason::BadLink)?;
        let newest = link.rx.replay.highest().is_none_or(|h| pn > h);
        link.rx.replay.mark(pn);
        if self.role == Role::Gateway && newest && link.remote != Some(from) {
            // Only the newest authenticated packet moves a path: a replayed or delayed one never
            // drags the path back to an address the peer has left.
            let old = link.remote.replace(from);
            if old.is_some() {
                // Another path (a modem's new address) may carry less: search it afresh.
                link.path_moved(now);
            }
            tracing::info!(link = %via, ?old, new = %from, "path moved");
            self.events.push_back(Event::PathChanged { link: via, from: old, to: from });
        }
        let plain = &self.scratch[aad_len..aad_len + plain_len];
        let local_ts = Self::timestamp(self.epoch, now);
        let (send_ts, body) = match repr.protocol {
            Protocol::Ethernet => {
                let (header, _) = DataHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                (header.send_ts, None)
            }
            Protocol::Control => {
                let (header, messages) = ControlHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                (header.send_ts, Some(messages))
            }
        };
        let base = *self.owd_base.get_or_insert(local_ts.wrapping_sub(send_ts));
        let owd_us = i64::from(local_ts.wrapping_sub(send_ts).wrapping_sub(base) as i32);
        link.monitor.on_packet_received(now, pn, datagram.len(), owd_us);
        link.stats.rx_packets += 1;
        link.stats.rx_bytes += datagram.len() as u64;

        match body {
            None => {
                let (header, frame) = DataHeader::parse(plain).map_err(|_| DropReason::BadPayload)?;
                link.stats.rx_frames += 1;
                let expected = self.reorder.expected();
                let seq = expand_u32(expected, header.frame_seq);
                link.rx.highest_frame = link.rx.highest_frame.max(Some(seq));
                link.rx.last_data = Some(now);
                link.owed.data_arrived();
                let joined;
                let frame = if header.fragment == FRAGMENT_PIECE {
                    let piece = Piece::parse(frame).map_err(|_| DropReason::BadPayload)?;
                    if self.reorder.has(seq) {
                        // A piece of a frame already delivered or held: a redundant copy.
                        self.stats.duplicate_pieces += 1;
                        return Ok(());
                    }
                    match self.reassembly.add(now, seq, piece) {
                        Joined::Frame(frame) => {
                            self.stats.frames_reassembled += 1;
                            joined = frame;
                            &joined[..]
                        }
                        Joined::Waiting => return Ok(()),
                        Joined::Inconsistent => return Err(DropReason::BadPayload),
                    }
                } else {
                    frame
                };
                let Some(link) = self.links[slot].as_mut() else { return Err(DropReason::BadLink) };
                match self.reorder.insert(now, seq, frame) {
                    Arrival::Ready | Arrival::Held => {
                        link.stats.rx_frames_first += 1;
                        if header.flags & FLAG_RETRANSMIT != 0 {
                            self.stats.frames_recovered += 1;
                        }
                        self.recovery.gaps.on_frame(now, seq, expected);
                    }
                    Arrival::Duplicate | Arrival::Late => {}
                }
                tracing::trace!(link = %via, seq, "frame");
                self.recovery.gaps.forget_below(self.reorder.expected());
                self.collect_naks(now);
                Ok(())
            }
            Some(messages) => {
                let messages: Vec<ControlMessage> = ControlMessages::new(messages)
                    .collect::<Result<_, WireError>>()
                    .map_err(|_| DropReason::BadPayload)?;
                self.handle_control(now, slot, repr.sequence, send_ts, &messages);
                Ok(())
            }
        }
    }

    /// Acts on the control messages of one packet that arrived on the link in `slot`, with
    /// sequence `seq` and sent at `send_ts` on the peer's clock.
    fn handle_control(&mut self, now: Instant, slot: usize, seq: u32, send_ts: u32, messages: &[ControlMessage]) {
        for message in messages {
            match *message {
                ControlMessage::Probe { priority } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        if self.role == Role::Gateway {
                            link.priority = priority;
                        }
                        link.owed.reply = Some((seq, send_ts));
                    }
                }
                ControlMessage::ProbeReply { echo_seq, .. } => {
                    let Some(link) = self.links[slot].as_mut() else {
                        continue;
                    };
                    let transition = link.monitor.on_probe_reply(now, echo_seq);
                    let id = link.id;
                    self.emit_transition(now, id, transition);
                }
                ControlMessage::Report(report) => {
                    if let Some(link) = report.link.index().and_then(|i| self.links[i].as_mut()) {
                        let before = link.monitor.reported();
                        let transition = link.monitor.on_report(now, &report);
                        if link.monitor.reported() != before {
                            link.on_report(now, send_ts);
                        }
                        let id = link.id;
                        self.emit_transition(now, id, transition);
                    }
                }
                ControlMessage::Nak { first, count } => self.answer_nak(now, slot, first, count),
                ControlMessage::MtuProbe { size } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.owed.mtu_ack = Some(size);
                    }
                }
                ControlMessage::MtuAck { size } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.pmtu.on_ack(now, usize::from(size));
                    }
                }
                ControlMessage::Excused { total } => {
                    if let Some(link) = self.links[slot].as_mut() {
                        link.monitor.set_rx_excused(total);
                    }
                }
                ControlMessage::Sent { next } => {
                    let expected = self.reorder.expected();
                    self.recovery.gaps.on_sent(now, expand_u32(expected, next), expected);
                    self.collect_naks(now);
                }
                ControlMessage::Gone { first, count } => {
                    let first = expand_u32(self.reorder.expected(), first);
                    for seq in first..first + u64::from(count).min(MAX_MISSING as u64) {
                        self.reorder.abandon(now, seq);
                    }
                    self.recovery.gaps.forget_below(self.reorder.expected());
                }
            }
        }
    }
}
