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
    self, ControlHeader, ControlMessage, ControlMessages, DataHeader, FEC_RECOVERY, FLAG_RETRANSMIT, FRAGMENT_PIECE,
    Kind, Protocol, WireError, expand_u32,
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
            // A link learned while the session is a standby is probed, and judged, at its pace.
            self.links[slot] = Some(Link::of(&self.config, via, 0, None, None, now, self.probe_interval()));
        }
        if self.peer_standby && repr.protocol == Protocol::Ethernet {
            // Data goes to the gateway that carries the stream: the edge took this one up.
            self.set_peer_standby(now, false);
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
                let expected = self.reorder.expected();
                let seq = expand_u32(expected, header.frame_seq);
                // A recovery shard names the frame its block ends before: it went out behind
                // every frame of its block, so they have passed this link.
                let passed = if header.fragment == FEC_RECOVERY { seq.checked_sub(1) } else { Some(seq) };
                link.rx.highest_frame = link.rx.highest_frame.max(passed);
                link.rx.last_data = Some(now);
                if header.flags & FLAG_RETRANSMIT == 0
                    && let Some(passed) = passed
                {
                    link.rx.behind = self.recovery.gaps.passed_ago(now, passed);
                }
                link.owed.data_arrived();
                if header.fragment == FEC_RECOVERY {
                    // A recovery shard: the frames it lets this end rebuild join the stream.
                    self.stats.fec_shards_received += 1;
                    let decoder = self.fec_rx.get_or_insert_with(super::fec::decoder);
                    decoder.forget_before(self.reorder.expected());
                    let rebuilt = decoder.on_parity(frame).map_err(|_| DropReason::BadRecovery)?;
                    self.accept_rebuilt(now, rebuilt);
                    return Ok(());
                }
                link.stats.rx_frames += 1;
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
                        self.pacer.on_arrival(now, frame.len());
                        link.stats.rx_frames_first += 1;
                        let resent = header.flags & FLAG_RETRANSMIT != 0;
                        self.stats.frames_recovered += u64::from(resent);
                        let spread = resent.then(|| self.slower_by(slot));
                        self.recovery.gaps.on_frame(now, seq, expected, spread);
                    }
                    Arrival::Duplicate | Arrival::Late => {}
                }
                // Kept for rebuilding its block's lost frames, once the peer sends recovery.
                if let Some(rebuilt) = self.fec_rx.as_mut().map(|d| d.on_frame(seq, frame)) {
                    self.accept_rebuilt(now, rebuilt);
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
        if self.role == Role::Gateway && messages.iter().any(|m| matches!(m, ControlMessage::Probe { .. })) {
            self.set_peer_standby(now, messages.contains(&ControlMessage::Standby));
        }
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
                    let epoch = self.epoch;
                    if let Some(link) = report.link.index().and_then(|i| self.links[i].as_mut()) {
                        let before = link.monitor.reported();
                        let transition = link.monitor.on_report(now, &report);
                        if link.monitor.reported() != before {
                            link.on_report(now, send_ts, epoch);
                        }
                        let id = link.id;
                        self.emit_transition(now, id, transition);
                    }
                }
                ControlMessage::Nak { first, count } => self.answer_nak(now, slot, first, count, false),
                ControlMessage::NakAgain { first, count } => self.answer_nak(now, slot, first, count, true),
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
                ControlMessage::Draining => self.peer_draining_at = Some(now),
                // Only a gateway places an edge.
                ControlMessage::Placement(placement) if self.role == Role::Edge => {
                    self.peer_placement = Some((placement, now));
                }
                ControlMessage::Placement(_) => {}
                // Read with the probe it comes with, above.
                ControlMessage::Standby => {}
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Mode;
    use crate::crypto::Cipher;
    use crate::session::{LinkConfig, SessionConfig};
    use crate::testing::key_pair;

    use crate::session::tests_support::{GATEWAY, RIG, start};

    /// An edge with two links and the gateway's session for it, keyed alike.
    fn pair(now: Instant) -> (Session, Session) {
        let (edge_keys, gateway_keys) = key_pair(1, Cipher::ChaCha20Poly1305);
        let link =
            |id: u8| LinkConfig { id: LinkId::new(id), priority: id, rate_bps: None, remote: GATEWAY.parse().unwrap() };
        let config = SessionConfig { mode: Mode::Redundant, links: vec![link(0), link(1)], ..SessionConfig::default() };
        let edge = Session::new(Role::Edge, config, edge_keys, now, 1).unwrap();
        let gateway = Session::new(Role::Gateway, SessionConfig::default(), gateway_keys, now, 2).unwrap();
        (edge, gateway)
    }

    /// The first datagram the edge sends on `link` after a new frame is handed in (a probe, or
    /// the frame).
    fn datagram_on(edge: &mut Session, now: Instant, link: u8) -> Vec<u8> {
        let mut frame = vec![0u8; 200];
        frame[12] = 0x08;
        edge.handle_frame(now, &frame).unwrap();
        let mut buf = Vec::new();
        let mut found = None;
        // Everything the frame brings out, so that the next call sees only the next frame.
        while let Some(transmit) = edge.poll_transmit(now, &mut buf) {
            if transmit.link == LinkId::new(link) && found.is_none() {
                found = Some(buf.clone());
            }
        }
        found.unwrap_or_else(|| panic!("nothing went out on link {link}"))
    }

    #[test]
    fn an_authenticated_packet_brings_its_link_at_the_address_it_came_from() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        let datagram = datagram_on(&mut edge, now, 0);
        let from: SocketAddr = RIG.parse().unwrap();
        gateway.handle_datagram(now, LinkId::new(0), from, &datagram).unwrap();
        assert_eq!(gateway.link_remote(LinkId::new(0)), Some(from));
        assert_eq!(gateway.poll_event(), Some(Event::PathChanged { link: LinkId::new(0), from: None, to: from }));
    }

    #[test]
    fn a_link_learned_after_the_peer_became_a_standby_is_judged_at_the_standby_pace() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        gateway.config.tuning.monitor.standby_probe_factor = 5;
        let from: SocketAddr = RIG.parse().unwrap();
        let first = datagram_on(&mut edge, now, 0);
        gateway.handle_datagram(now, LinkId::new(0), from, &first).unwrap();
        // The edge keeps this gateway as a standby: what it sends on link 1 is a probe.
        edge.set_standby(now, true);
        gateway.set_peer_standby(now, true);
        let mut buf = Vec::new();
        let mut probe = None;
        for step in 0..20 {
            let at = now + Duration::from_millis(50 * step);
            edge.handle_timeout(at);
            while let Some(transmit) = edge.poll_transmit(at, &mut buf) {
                if transmit.link == LinkId::new(1) && probe.is_none() {
                    probe = Some((at, buf.clone()));
                }
            }
        }
        let (at, second) = probe.expect("the edge probes link 1");
        gateway.handle_datagram(at, LinkId::new(1), from, &second).unwrap();
        assert!(gateway.is_standby(), "the probe kept the gateway a standby");
        let silence = |link: usize| gateway.links[link].as_ref().unwrap().monitor.silence_timeout();
        assert_eq!(silence(1), silence(0), "the late link waits for probes at the carrying pace");
        assert!(silence(1) >= gateway.config.tuning.monitor.probe_interval * 5, "{:?}", silence(1));
    }

    #[test]
    fn a_replayed_packet_is_dropped_and_never_moves_the_path_back() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        let first = datagram_on(&mut edge, now, 0);
        let second = datagram_on(&mut edge, now, 0);
        let (old, new): (SocketAddr, SocketAddr) = (RIG.parse().unwrap(), "198.51.100.8:40000".parse().unwrap());
        gateway.handle_datagram(now, LinkId::new(0), old, &first).unwrap();
        gateway.handle_datagram(now, LinkId::new(0), new, &second).unwrap();
        assert_eq!(gateway.handle_datagram(now, LinkId::new(0), old, &first), Err(DropReason::Replay));
        assert_eq!(gateway.link_remote(LinkId::new(0)), Some(new), "the replay left the path where it was");
        assert_eq!(gateway.stats().drops.get(DropReason::Replay), 1);
    }

    #[test]
    fn a_packet_on_another_links_socket_or_for_another_session_is_dropped() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        let datagram = datagram_on(&mut edge, now, 1);
        let from: SocketAddr = RIG.parse().unwrap();
        assert_eq!(gateway.handle_datagram(now, LinkId::new(0), from, &datagram), Err(DropReason::BadLink));
        let (_, stranger) = key_pair(9, Cipher::ChaCha20Poly1305);
        let mut other = Session::new(Role::Gateway, SessionConfig::default(), stranger, now, 3).unwrap();
        let mut forged = datagram.clone();
        // Address it to the other session's index: it opens under no key of that session.
        forged[4..7].copy_from_slice(&other.local_index().get().to_be_bytes()[1..]);
        let dropped = other.handle_datagram(now, LinkId::new(1), from, &forged);
        assert!(matches!(dropped, Err(DropReason::OpenFailed | DropReason::UnknownSession)), "{dropped:?}");
        assert_eq!(gateway.link_remote(LinkId::new(0)), None, "nothing authenticated arrived on link 0");
    }

    #[test]
    fn a_tampered_packet_fails_to_open_and_changes_nothing() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        let mut datagram = datagram_on(&mut edge, now, 0);
        let last = datagram.len() - 1;
        datagram[last] ^= 1;
        let from: SocketAddr = RIG.parse().unwrap();
        assert_eq!(gateway.handle_datagram(now, LinkId::new(0), from, &datagram), Err(DropReason::OpenFailed));
        assert_eq!(gateway.links().count(), 0, "no link is made for an unauthenticated packet");
    }

    #[test]
    fn frames_are_delivered_in_order_whichever_link_brings_them_first() {
        let now = start();
        let (mut edge, mut gateway) = pair(now);
        let from: SocketAddr = RIG.parse().unwrap();
        let first = datagram_on(&mut edge, now, 0);
        let second = datagram_on(&mut edge, now + Duration::from_millis(1), 1);
        gateway.handle_datagram(now, LinkId::new(1), from, &second).unwrap();
        let mut buf = Vec::new();
        assert!(gateway.poll_frame(now, &mut buf).is_none(), "the second frame waits for the first");
        gateway.handle_datagram(now, LinkId::new(0), from, &first).unwrap();
        let seqs: Vec<u64> = core::iter::from_fn(|| gateway.poll_frame(now, &mut buf)).map(|d| d.seq.0).collect();
        assert_eq!(seqs, [0, 1]);
    }
}
