//! Forward error correction in the session ([`crate::fec`]). The frames this end sends are
//! grouped into blocks as they come in; a block's recovery shards go out right behind its last
//! frame, spread over the links that deliver earliest, unless every frame of the block went out
//! on two links or more (`auto`'s duplicates on spare capacity protect it already). The peer
//! keeps the frames it received a moment, and rebuilds from them and the shards a frame lost on
//! its way, before a NAK could return, into the reorder buffer like any frame.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::send::{Views, charge_views, emit_data_header};
use super::{Session, Transmit};
use crate::LinkId;
use crate::fec::{FecDecoder, FecEncoder, PARITY_HEADER_LEN};
use crate::monitor::LinkState;
use crate::reorder::Arrival;
use crate::scheduler::{LinkView, Spend};
#[cfg(test)]
use crate::stats::DropReason;
use crate::stats::SessionStats;
use crate::wire::{DATA_OVERHEAD, DataHeader, FEC_RECOVERY, Protocol};

/// Recovery shards waiting to go out, at most; past it the oldest is dropped (its block's time
/// has passed anyway).
const MAX_READY_SHARDS: usize = 256;
/// A block's recovery shards are spread over the links expected to deliver within this of the
/// earliest one, so that a burst lost on one link does not take a block's frames and its
/// recovery together.
pub const FEC_SPREAD: Duration = Duration::from_millis(30);
/// Frames the receiving end keeps for rebuilding, at least.
const FEC_KEEP: usize = 256;

/// The receiving side, made when the peer's first recovery shard comes.
pub(super) fn decoder() -> FecDecoder {
    FecDecoder::new(FEC_KEEP)
}

/// The sending side: the open block and the recovery shards ready to go.
#[derive(Debug)]
pub(super) struct FecSend {
    encoder: FecEncoder,
    max_delay: Duration,
    /// When the open block's first frame came in.
    opened: Option<Instant>,
    /// Recovery shards ready to go (header and shard), each with the sequence its block ends
    /// before, and its index among its block's shards.
    ready: VecDeque<(u64, usize, Vec<u8>)>,
    /// Frames of the open block that went out as one copy: a block whose every frame went on
    /// two links or more (`auto`'s duplicates) is protected already, and its shards are not sent.
    single_copies: usize,
}

impl FecSend {
    /// The sending side for `config`, which [`super::SessionConfig::validate`] has checked.
    pub(super) fn new(config: super::FecConfig) -> Option<Self> {
        let encoder = FecEncoder::new(usize::from(config.block), usize::from(config.parity)).ok()?;
        Some(Self { encoder, max_delay: config.max_delay, opened: None, ready: VecDeque::new(), single_copies: 0 })
    }

    /// When the open block is due to close.
    pub(super) fn close_at(&self) -> Option<Instant> {
        self.opened.map(|at| at + self.max_delay)
    }

    /// Queues the recovery shards of a block that ends before `end`, unless every frame of it
    /// went out on two links or more; the shards left unsent, and older ones dropped for these,
    /// are counted in `stats`.
    fn take(&mut self, end: u64, shards: Vec<Vec<u8>>, stats: &mut SessionStats) {
        if shards.is_empty() {
            return;
        }
        self.opened = None;
        if std::mem::take(&mut self.single_copies) == 0 {
            stats.fec_shards_unneeded += shards.len() as u64;
            return;
        }
        self.ready.extend(shards.into_iter().enumerate().map(|(i, shard)| (end, i, shard)));
        while self.ready.len() > MAX_READY_SHARDS {
            self.ready.pop_front();
            stats.fec_shards_dropped += 1;
        }
    }
}

impl Session {
    /// Adds frame `seq`, queued at `frame_at` to go out as `copies` copies, to the open block.
    pub(super) fn fec_push(&mut self, now: Instant, seq: u64, frame_at: usize, copies: usize) {
        let max_shard = self.fec_max_shard();
        let Some(fec) = self.fec_tx.as_mut() else { return };
        let Some(frame) = self.queue.get(frame_at).map(|p| &p.frame) else { return };
        fec.encoder.set_max_shard(max_shard);
        fec.opened.get_or_insert(now);
        fec.single_copies += usize::from(copies < 2);
        match fec.encoder.push(seq, frame) {
            Ok(shards) => fec.take(seq + 1, shards, &mut self.stats),
            Err(error) => tracing::debug!(%error, seq, "frame left out of forward error correction"),
        }
    }

    /// Closes the open block if it has been open for its longest.
    pub(super) fn fec_tick(&mut self, now: Instant) {
        let end = self.next_frame_seq;
        let Some(fec) = self.fec_tx.as_mut() else { return };
        if fec.close_at().is_none_or(|at| now < at) {
            return;
        }
        match fec.encoder.close() {
            Ok(shards) => fec.take(end, shards, &mut self.stats),
            Err(error) => tracing::debug!(%error, "block left without recovery"),
        }
        fec.opened = None;
    }

    /// The largest shard that, with its headers, fits one datagram on every link.
    fn fec_max_shard(&self) -> usize {
        let datagram = self.links.iter().flatten().map(|l| l.pmtu.current()).min().unwrap_or(self.config.max_datagram);
        datagram.saturating_sub(DATA_OVERHEAD + PARITY_HEADER_LEN)
    }

    /// The next recovery shard, once its block's frames have gone out: sealed onto the link
    /// that delivers earliest, or the next of those that deliver within [`FEC_SPREAD`] of it.
    pub(super) fn next_recovery(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        loop {
            let fec = self.fec_tx.as_ref()?;
            let &(end, index, ref shard) = fec.ready.front()?;
            if self.queue.front().is_some_and(|p| p.seq < end) {
                return None;
            }
            let len = shard.len();
            let Some(slot) = self.recovery_link(now, len, index) else {
                self.fec_tx.as_mut().and_then(|f| f.ready.pop_front());
                self.stats.fec_shards_dropped += 1;
                continue;
            };
            let (_, _, shard) = self.fec_tx.as_mut().and_then(|f| f.ready.pop_front())?;
            if let Some(link) = self.links[slot].as_mut() {
                link.charge(len);
            }
            let transmit = self.seal_recovery(now, slot, end, &shard, buf);
            if transmit.is_some() {
                return transmit;
            }
        }
    }

    /// The link for shard `index` of a block ([`recovery_choice`]), charged with it.
    fn recovery_link(&mut self, now: Instant, len: usize, index: usize) -> Option<usize> {
        self.refresh_views(now, Views::Sendable);
        let id = recovery_choice(&self.views, len, index, self.config.tuning.send.max_queue_delay)?;
        charge_views(&mut self.views, [id].into_iter().collect(), len);
        id.index()
    }

    fn seal_recovery(
        &mut self,
        now: Instant,
        slot: usize,
        end: u64,
        shard: &[u8],
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let ts = Self::timestamp(self.epoch, now);
        let header = DataHeader { frame_seq: end as u32, send_ts: ts, flags: 0, fragment: FEC_RECOVERY };
        let build = |buf: &mut Vec<u8>| {
            let aad_len = emit_data_header(buf, &header);
            buf.extend_from_slice(shard);
            aad_len
        };
        let transmit = self.seal(now, slot, Protocol::Ethernet, build, buf)?;
        let bytes = buf.len() as u64;
        self.stats.data_bytes_extra += bytes;
        self.stats.fec_bytes += bytes;
        self.stats.fec_shards_sent += 1;
        if let Some(link) = self.links[slot].as_mut() {
            link.data_sent(now);
        }
        Some(transmit)
    }

    /// Takes in the frames rebuilt from the peer's recovery shards, into the reorder buffer.
    pub(super) fn accept_rebuilt(&mut self, now: Instant, rebuilt: Vec<(u64, Vec<u8>)>) {
        for (seq, frame) in rebuilt {
            let expected = self.reorder.expected();
            if let Arrival::Ready | Arrival::Held = self.reorder.insert(now, seq, &frame) {
                self.pacer.on_arrival(now, frame.len());
                self.stats.frames_rebuilt += 1;
                self.recovery.gaps.on_frame(now, seq, expected, None);
                tracing::trace!(seq, "frame rebuilt");
            }
        }
    }
}

/// The link for shard `index` of a block: of the links not down and with room (a queue of at
/// most `max_queue`), and of those the free ones if any (a metered link carries extras only
/// when no free link can, as with `auto`'s duplicates), the `index`-th in turn, earliest first,
/// of those that deliver within [`FEC_SPREAD`] of the earliest.
fn recovery_choice(views: &[LinkView], len: usize, index: usize, max_queue: Duration) -> Option<LinkId> {
    let room = |v: &&LinkView| v.state != LinkState::Down && v.queue_delay <= max_queue;
    let free = views.iter().filter(room).any(|v| v.spend == Spend::Free);
    let mut candidates: Vec<(Duration, LinkId)> = views
        .iter()
        .filter(room)
        .filter(|v| v.spend == Spend::Free || !free)
        .map(|v| (v.expected_arrival(len), v.id))
        .collect();
    candidates.sort();
    let earliest = candidates.first()?.0;
    candidates.retain(|(arrival, _)| *arrival <= earliest + FEC_SPREAD);
    Some(candidates[index % candidates.len()].1)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::crypto::Cipher;
    use crate::session::{FecConfig, LinkConfig, Role, SessionConfig};
    use crate::testing::key_pair;
    use crate::wire::GRE_HEADER_LEN;
    use crate::{LinkId, Mode};

    use crate::session::tests_support::{GATEWAY, RIG, start};

    /// An edge on `links` protecting its frames (`block` frames, one frame's worth of
    /// recovery), without retransmission so that only recovery can fill a gap.
    fn edge(now: Instant, block: u8, links: &[u8], max_datagram: usize) -> Session {
        edge_in(Mode::Bond, now, block, links, max_datagram)
    }

    fn edge_in(mode: Mode, now: Instant, block: u8, links: &[u8], max_datagram: usize) -> Session {
        let link = |&id: &u8| LinkConfig {
            id: LinkId::new(id),
            priority: id,
            rate_bps: None,
            remote: GATEWAY.parse().unwrap(),
        };
        let fec = FecConfig { block, parity: 1, max_delay: Duration::from_millis(10) };
        let config = SessionConfig {
            mode,
            links: links.iter().map(link).collect(),
            fec: Some(fec),
            retransmit: false,
            max_datagram,
            probe_mtu: false,
            ..SessionConfig::default()
        };
        Session::new(Role::Edge, config, key_pair(3, Cipher::ChaCha20Poly1305).0, now, 1).unwrap()
    }

    /// An edge on one link and the gateway's session for it.
    fn pair(now: Instant, block: u8, max_datagram: usize) -> (Session, Session) {
        let gateway_config = SessionConfig { retransmit: false, ..SessionConfig::default() };
        let gateway_keys = key_pair(3, Cipher::ChaCha20Poly1305).1;
        let gateway = Session::new(Role::Gateway, gateway_config, gateway_keys, now, 2).unwrap();
        (edge(now, block, &[0], max_datagram), gateway)
    }

    fn frame(i: usize, len: usize) -> Vec<u8> {
        let mut frame: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        frame
    }

    /// Every datagram the edge sends at `now`, with its link.
    fn drain(edge: &mut Session, now: Instant) -> Vec<(LinkId, Vec<u8>)> {
        let mut buf = Vec::new();
        core::iter::from_fn(|| edge.poll_transmit(now, &mut buf).map(|t| (t.link, buf.clone()))).collect()
    }

    fn is_data(datagram: &[u8]) -> bool {
        datagram.len() > GRE_HEADER_LEN
            && crate::wire::classify(datagram).is_ok_and(|(r, _)| r.protocol == Protocol::Ethernet)
    }

    fn delivered(gateway: &mut Session, now: Instant) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        core::iter::from_fn(|| gateway.poll_frame(now, &mut buf).map(|_| buf.clone())).collect()
    }

    /// Sends `frames` through `edge`, one at a time, and hands the gateway every data datagram
    /// but those of the frames at `lost` (by position, counting each piece): what the gateway
    /// delivered, as frame lengths.
    fn through(edge: &mut Session, gateway: &mut Session, now: Instant, frames: &[Vec<u8>], lost: &[usize]) -> usize {
        let from: SocketAddr = RIG.parse().unwrap();
        let mut data = Vec::new();
        for f in frames {
            edge.handle_frame(now, f).unwrap();
            data.extend(drain(edge, now).into_iter().filter(|(_, d)| is_data(d)));
        }
        for (i, (link, datagram)) in data.iter().enumerate() {
            if !lost.contains(&i) {
                gateway.handle_datagram(now, *link, from, datagram).unwrap();
            }
        }
        data.len()
    }

    /// Whether the gateway delivers exactly `frames`, in order.
    fn delivers(gateway: &mut Session, now: Instant, frames: &[Vec<u8>]) -> Result<(), String> {
        let got = delivered(gateway, now);
        if got == frames {
            return Ok(());
        }
        let lens = |f: &[Vec<u8>]| f.iter().map(Vec::len).collect::<Vec<_>>();
        Err(format!("delivered frames of {:?} bytes, sent {:?}", lens(&got), lens(frames)))
    }

    #[test]
    fn a_frame_lost_on_its_way_is_rebuilt_from_the_blocks_recovery_shard() {
        let now = start();
        let (mut edge, mut gateway) = pair(now, 4, 1452);
        let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(i, 300 + i * 100)).collect();
        // The first block comes whole: the gateway keeps frames once it has seen recovery.
        assert_eq!(through(&mut edge, &mut gateway, now, &frames[..4], &[]), 5, "four frames and a shard");
        assert_eq!(edge.stats().fec_shards_sent, 1, "a full block sends its shard at once");
        delivers(&mut gateway, now, &frames[..4]).unwrap();
        // Of the second block, the second frame is lost.
        through(&mut edge, &mut gateway, now, &frames[4..], &[1]);
        delivers(&mut gateway, now, &frames[4..]).unwrap();
        assert_eq!((gateway.stats().frames_rebuilt, gateway.stats().fec_shards_received), (1, 2));
        assert!(edge.stats().fec_bytes > 0 && edge.stats().data_bytes_extra >= edge.stats().fec_bytes);
    }

    #[test]
    fn a_block_whose_every_frame_went_on_two_links_sends_no_recovery() {
        let now = start();
        let mut edge = edge_in(Mode::Redundant, now, 4, &[0, 1], 1452);
        for i in 0..4 {
            edge.handle_frame(now, &frame(i, 300)).unwrap();
            drain(&mut edge, now);
        }
        let stats = edge.stats();
        assert_eq!((stats.fec_shards_sent, stats.fec_shards_unneeded, stats.fec_bytes), (0, 1, 0));
    }

    #[test]
    fn recovery_shards_keep_off_a_metered_link_while_a_free_link_has_room() {
        let max_queue = Duration::from_millis(100);
        let view = |id: u8, owd_ms: u64, spend: Spend| LinkView {
            spend,
            ..crate::scheduler::view_for_test(id, LinkState::Up, id, owd_ms)
        };
        let choose = |views: &[LinkView]| {
            (0..4)
                .map(|index| recovery_choice(views, 500, index, max_queue).and_then(LinkId::index))
                .collect::<Vec<_>>()
        };
        let free = [view(0, 15, Spend::Free), view(1, 20, Spend::Free)];
        assert_eq!(choose(&free), [Some(0), Some(1), Some(0), Some(1)], "two free links take turns");
        let metered = [view(0, 15, Spend::Metered), view(1, 20, Spend::Free)];
        assert_eq!(choose(&metered), [Some(1); 4], "the free link takes every shard");
        let full = [view(0, 15, Spend::Metered), LinkView { queue_delay: max_queue * 2, ..view(1, 20, Spend::Free) }];
        assert_eq!(choose(&full), [Some(0); 4], "the free link is full: the metered link takes them");
        let down = [view(0, 15, Spend::Metered), view(1, 20, Spend::Free), view(2, 5, Spend::Free)]
            .map(|v| if v.id == LinkId::new(2) { LinkView { state: LinkState::Down, ..v } } else { v });
        assert_eq!(choose(&down), [Some(1); 4], "a link down takes none");
    }

    #[test]
    fn a_block_that_does_not_fill_closes_at_its_deadline() {
        let now = start();
        let (mut edge, _) = pair(now, 16, 1452);
        edge.handle_frame(now, &frame(0, 200)).unwrap();
        drain(&mut edge, now);
        assert_eq!(edge.stats().fec_shards_sent, 0);
        let due = edge.poll_timeout().map(|(at, _)| at).unwrap();
        assert!(due <= now + Duration::from_millis(10));
        let later = now + Duration::from_millis(10);
        edge.handle_timeout(later);
        drain(&mut edge, later);
        assert_eq!(edge.stats().fec_shards_sent, 1, "the block of one frame closed at its deadline");
    }

    #[test]
    fn recovery_shards_of_full_size_frames_fit_the_links_datagram() {
        let now = start();
        let max_datagram = 1200;
        let (mut edge, mut gateway) = pair(now, 2, max_datagram);
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(i, 1500)).collect();
        // Each frame goes in two pieces, and is cut in two shards: one frame's worth of
        // recovery is two shards.
        assert_eq!(through(&mut edge, &mut gateway, now, &frames[..2], &[]), 6);
        assert_eq!(edge.stats().fec_shards_sent, 2);
        assert_eq!(edge.stats().drops.total(), 0);
        delivers(&mut gateway, now, &frames[..2]).unwrap();
        // Both pieces of the third frame are lost: the fourth and the shards rebuild it.
        through(&mut edge, &mut gateway, now, &frames[2..], &[0, 1]);
        delivers(&mut gateway, now, &frames[2..]).unwrap();
        assert_eq!(gateway.stats().frames_rebuilt, 1);
    }

    #[test]
    fn every_datagram_fits_the_links_datagram() {
        let now = start();
        let max_datagram = 1200;
        let mut edge = edge(now, 2, &[0], max_datagram);
        let mut sizes = Vec::new();
        for i in 0..4 {
            edge.handle_frame(now, &frame(i, 1500)).unwrap();
            sizes.extend(drain(&mut edge, now).into_iter().map(|(_, d)| d.len()));
        }
        assert!(sizes.iter().all(|&len| len <= max_datagram), "{sizes:?}");
    }

    #[test]
    fn a_shard_that_its_block_refuses_is_counted_and_changes_nothing() {
        let now = start();
        let (mut edge_a, mut gateway) = pair(now, 2, 1452);
        let from: SocketAddr = RIG.parse().unwrap();
        let shards = |edge: &mut Session, count: usize| {
            for i in 0..count {
                edge.handle_frame(now, &frame(i, 400)).unwrap();
            }
            drain(edge, now).into_iter().rfind(|(_, d)| is_data(d)).unwrap()
        };
        // The gateway has the recovery of a block of two frames, and none of its frames.
        let (link, shard) = shards(&mut edge_a, 2);
        gateway.handle_datagram(now, link, from, &shard).unwrap();
        // The same keys on another link, grouping three frames from the same first one: a block
        // at odds with the one the gateway holds.
        let mut edge_b = edge(now, 3, &[1], 1452);
        let (link, shard) = shards(&mut edge_b, 3);
        assert_eq!(gateway.handle_datagram(now, link, from, &shard), Err(DropReason::BadRecovery));
        assert_eq!(gateway.stats().drops.get(DropReason::BadRecovery), 1);
        assert_eq!((gateway.stats().fec_shards_received, gateway.stats().frames_rebuilt), (2, 0));
        assert!(delivered(&mut gateway, now).is_empty());
    }
}
