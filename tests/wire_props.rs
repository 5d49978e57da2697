//! Property tests of the wire format and the two windows, each against a simple model.
//!
//! * Every header and control message survives emit → parse unchanged.
//! * No byte string makes a parser panic.
//! * 32-bit sequence expansion recovers the true counter within ±(2³¹ − 1).
//! * [`SeqWindow`] agrees with a set of marked numbers plus the highest.
//! * [`ReorderBuffer`] releases each frame at most once, in ascending order, and loses nothing
//!   when the hold outlasts the whole arrival span.
//! * [`FecDecoder`] takes any bytes as a recovery shard without panicking, and rebuilds exactly
//!   the frames lost from a block when no more than its recovery shards are.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use braid::fec::{FecDecoder, FecEncoder};
use braid::reorder::ReorderBuffer;
use braid::window::{MIN_WINDOW, SeqWindow, Verdict};
use braid::wire::{
    CONTROL_HEADER_LEN, ControlHeader, ControlMessage, ControlMessages, DATA_HEADER_LEN, DataHeader, GRE_HEADER_LEN,
    GrePacket, GreRepr, LinkReport, PathKey, Protocol, WireError, expand_u32,
};
use braid::{LinkId, SessionIndex};
use proptest::prelude::*;

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Ethernet), Just(Protocol::Control)]
}

fn gre_repr() -> impl Strategy<Value = GreRepr> {
    (protocol(), 0..=SessionIndex::MAX, any::<u8>(), any::<u32>()).prop_map(|(protocol, index, link, sequence)| {
        GreRepr { protocol, key: PathKey { index: SessionIndex::from_wire(index), link: LinkId::new(link) }, sequence }
    })
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        any::<u8>().prop_map(|priority| ControlMessage::Probe { priority }),
        (any::<u32>(), any::<u32>()).prop_map(|(echo_seq, echo_ts)| ControlMessage::ProbeReply { echo_seq, echo_ts }),
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(link, highest, received, bytes)| {
            ControlMessage::Report(LinkReport { link: LinkId::new(link), highest, received, received_bytes: bytes })
        }),
        (any::<u32>(), 1..=u16::MAX).prop_map(|(first, count)| ControlMessage::Nak { first, count }),
        (any::<u32>(), 1..=u16::MAX).prop_map(|(first, count)| ControlMessage::Gone { first, count }),
        any::<u32>().prop_map(|next| ControlMessage::Sent { next }),
        any::<u16>().prop_map(|size| ControlMessage::MtuProbe { size }),
        any::<u16>().prop_map(|size| ControlMessage::MtuAck { size }),
        any::<u32>().prop_map(|total| ControlMessage::Excused { total }),
        (any::<[u8; 32]>(), any::<Option<[u8; 32]>>())
            .prop_map(|(gateway, standby)| ControlMessage::Placement(braid::wire::Placement { gateway, standby })),
    ]
}

/// Arbitrary bytes, half of them behind a GRE header braid would accept, so the fuzzing reaches
/// past the first check.
fn datagram_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (
            prop::sample::select(vec![0x6558u16, 0x88B5, 0x0800]),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..48)
        )
            .prop_map(|(protocol, key, sequence, rest)| {
                let mut bytes = vec![0x30, 0x00];
                bytes.extend_from_slice(&protocol.to_be_bytes());
                bytes.extend_from_slice(&key.to_be_bytes());
                bytes.extend_from_slice(&sequence.to_be_bytes());
                bytes.extend_from_slice(&rest);
                bytes
            }),
    ]
}

/// Control payload bytes built from plausible type-length-value pieces, so lengths often line up.
fn control_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = (0u8..6, 0u8..16, prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(kind, len, body)| {
        let mut out = vec![kind, len];
        out.extend_from_slice(&body);
        out
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())]
}

/// The one clock read of these tests: a base that virtual time is added to.
fn base_time() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

proptest! {
    #[test]
    fn a_gre_header_survives_emit_and_parse(repr in gre_repr(), payload in prop::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = vec![0u8; GRE_HEADER_LEN];
        repr.emit(&mut bytes).unwrap();
        bytes.extend_from_slice(&payload);
        let packet = GrePacket::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(GreRepr::parse(&packet).unwrap(), repr);
        prop_assert_eq!(packet.payload(), &payload[..]);
        prop_assert_eq!(repr.emit(&mut [0u8; GRE_HEADER_LEN - 1]), Err(WireError::Truncated));
    }

    #[test]
    fn a_data_header_survives_emit_and_parse(
        frame_seq: u32,
        send_ts: u32,
        flags: u8,
        fragment in 0u8..=2,
        frame in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let header = DataHeader { frame_seq, send_ts, flags, fragment };
        let mut bytes = vec![0u8; DATA_HEADER_LEN];
        header.emit(&mut bytes).unwrap();
        bytes.extend_from_slice(&frame);
        let (parsed, rest) = DataHeader::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(rest, &frame[..]);
    }

    #[test]
    fn a_data_header_with_an_unknown_fragment_kind_is_malformed(header: [u8; DATA_HEADER_LEN - 1], fragment in 3u8..) {
        let mut bytes = header.to_vec();
        bytes.push(fragment);
        prop_assert_eq!(DataHeader::parse(&bytes).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn a_control_header_survives_emit_and_parse(send_ts: u32, rest in prop::collection::vec(any::<u8>(), 0..32)) {
        let header = ControlHeader { send_ts };
        let mut bytes = vec![0u8; CONTROL_HEADER_LEN];
        header.emit(&mut bytes).unwrap();
        bytes.extend_from_slice(&rest);
        let (parsed, messages) = ControlHeader::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(messages, &rest[..]);
    }

    #[test]
    fn control_messages_survive_emit_and_parse(messages in prop::collection::vec(control_message(), 0..20)) {
        let mut bytes = Vec::new();
        for message in &messages {
            message.emit(&mut bytes);
        }
        prop_assert_eq!(bytes.len(), messages.iter().map(ControlMessage::encoded_len).sum::<usize>());
        let parsed: Vec<ControlMessage> = ControlMessages::new(&bytes).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(parsed, messages);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in datagram_bytes()) {
        if let Ok(packet) = GrePacket::new_checked(&bytes[..]) {
            let _ = GreRepr::parse(&packet);
            let _ = (packet.key(), packet.sequence(), packet.protocol_raw());
            let payload = packet.payload();
            let _ = DataHeader::parse(payload);
            if let Ok((_, messages)) = ControlHeader::parse(payload) {
                prop_assert!(ControlMessages::new(messages).count() <= messages.len());
            }
        }
        let _ = DataHeader::parse(&bytes);
        let _ = ControlHeader::parse(&bytes);
    }

    #[test]
    fn control_message_decoding_stops_after_the_first_error(bytes in control_bytes()) {
        let mut messages = ControlMessages::new(&bytes);
        let mut count = 0;
        while let Some(item) = messages.next() {
            count += 1;
            prop_assert!(count <= bytes.len(), "more items than bytes");
            if item.is_err() {
                prop_assert!(messages.next().is_none(), "an error must end the iteration");
                break;
            }
        }
    }

    #[test]
    fn expansion_recovers_the_counter_within_half_the_range(
        expected in prop_oneof![
            any::<u64>(),
            0u64..1 << 33,
            (any::<u32>(), -(1i64 << 20)..(1 << 20))
                .prop_map(|(block, offset)| (u64::from(block) << 32).wrapping_add_signed(offset)),
            (u64::MAX - (1 << 33))..=u64::MAX,
        ],
        delta in prop_oneof![-((1i64 << 31) - 1)..=((1 << 31) - 1), -1000i64..=1000, Just((1 << 31) - 1), Just(-((1 << 31) - 1))],
    ) {
        // Only true counters that exist: the sender's counter never goes negative or wraps u64.
        if let Some(actual) = expected.checked_add_signed(delta) {
            prop_assert_eq!(expand_u32(expected, actual as u32), actual, "expected {:#x}, delta {}", expected, delta);
        }
    }

    #[test]
    fn the_replay_window_agrees_with_a_set_of_marked_numbers(
        size in prop::sample::select(vec![MIN_WINDOW, 2 * MIN_WINDOW, 4 * MIN_WINDOW]),
        start in prop_oneof![Just(0u64), any::<u64>().prop_map(|s| s >> 2)],
        steps in prop::collection::vec(
            prop_oneof![
                8 => -1100i64..1100,
                1 => -5000i64..5000,
                1 => 0i64..100_000,
            ],
            1..400,
        ),
    ) {
        let mut window = SeqWindow::new(size);
        let size = window.size();
        let mut marked = BTreeSet::new();
        let mut highest: Option<u64> = None;
        let mut cursor = start;
        for step in steps {
            // Walk around the highest so marks land ahead, inside, on the edge of and behind the window.
            cursor = cursor.saturating_add_signed(step);
            let seq = cursor;
            let model = match highest {
                Some(h) if seq <= h && h - seq >= size => Verdict::TooOld,
                Some(h) if seq <= h && marked.contains(&seq) => Verdict::Duplicate,
                _ => Verdict::Accept,
            };
            prop_assert_eq!(window.check(seq), model, "check({}) with highest {:?}", seq, highest);
            prop_assert_eq!(window.mark(seq), model, "mark({}) with highest {:?}", seq, highest);
            if model == Verdict::Accept {
                marked.insert(seq);
                highest = Some(highest.map_or(seq, |h| h.max(seq)));
            }
            prop_assert_eq!(window.highest(), highest);
        }
    }

    #[test]
    fn the_reorder_buffer_releases_each_frame_at_most_once_and_in_order(
        (order, lost, extra, gaps) in (1u64..200).prop_flat_map(|n| (
            Just((0..n).collect::<Vec<u64>>()).prop_shuffle(),
            prop::collection::btree_set(0..n, 0..=(n as usize / 4)),
            prop::collection::vec((0..n, any::<prop::sample::Index>()), 0..=(n as usize / 2)),
            prop::collection::vec(0u64..20, 0..300),
        )),
        hold_ms in 0u64..400,
        drop_some: bool,
    ) {
        // Duplicates of frames are slipped in at random places; with `drop_some`, some frames
        // never arrive at all so gaps are given up.
        let mut arrivals: Vec<u64> = order.into_iter().filter(|seq| !(drop_some && lost.contains(seq))).collect();
        for (seq, at) in extra {
            if !(drop_some && lost.contains(&seq)) {
                let at = at.index(arrivals.len() + 1);
                arrivals.insert(at, seq);
            }
        }
        let t0 = base_time();
        let mut now = t0;
        let times: Vec<Instant> = arrivals
            .iter()
            .enumerate()
            .map(|(i, _)| {
                now += Duration::from_millis(gaps.get(i).copied().unwrap_or(1));
                now
            })
            .collect();
        let hold = Duration::from_millis(hold_ms);
        let mut buffer = ReorderBuffer::new(Duration::from_secs(1), SeqWindow::new(MIN_WINDOW));
        buffer.set_hold(hold);

        let mut released = Vec::new();
        let drain = |buffer: &mut ReorderBuffer, released: &mut Vec<u64>| {
            while let Some(r) = buffer.pop() {
                prop_assert_eq!(&r.frame[..], &r.seq.0.to_be_bytes()[..], "frame bytes belong to another frame");
                released.push(r.seq.0);
            }
            Ok(())
        };
        for (&seq, &at) in arrivals.iter().zip(&times) {
            // A driver wakes at each deadline, so run every timer due before this arrival first.
            while let Some(deadline) = buffer.poll_timeout().filter(|&d| d <= at) {
                buffer.handle_timeout(deadline);
                drain(&mut buffer, &mut released)?;
            }
            buffer.insert(at, seq, &seq.to_be_bytes());
            drain(&mut buffer, &mut released)?;
        }
        while let Some(deadline) = buffer.poll_timeout() {
            prop_assert!(deadline >= now, "a deadline in the past was not run");
            buffer.handle_timeout(deadline);
            drain(&mut buffer, &mut released)?;
            now = deadline;
        }

        let inserted: BTreeSet<u64> = arrivals.iter().copied().collect();
        prop_assert!(released.windows(2).all(|w| w[0] < w[1]), "not strictly ascending: {:?}", released);
        prop_assert!(released.iter().all(|seq| inserted.contains(seq)), "released a frame never inserted");
        let stats = buffer.stats();
        prop_assert_eq!(stats.released, released.len() as u64);
        if let Some(&max) = inserted.last() {
            prop_assert_eq!(stats.released + stats.lost, max + 1, "every number up to the highest is released or lost");
        }
        let span = times.last().zip(times.first()).map_or(Duration::ZERO, |(last, first)| *last - *first);
        if !drop_some && hold > span {
            prop_assert_eq!(stats.lost, 0);
            prop_assert_eq!(released, inserted.into_iter().collect::<Vec<_>>());
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_as_a_recovery_shard_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut decoder = FecDecoder::new(64);
        decoder.on_frame(3, b"a frame");
        let _ = decoder.on_parity(&bytes);
    }

    #[test]
    fn any_loss_within_the_recovery_count_is_rebuilt(
        lens in proptest::collection::vec(1usize..1500, 1..20),
        parity in 1usize..6,
        lost_bits in any::<u64>(),
        max_shard in 0usize..2000,
    ) {
        let frames: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let mut encoder = FecEncoder::new(frames.len(), parity).expect("counts in range");
        // Frames cut into up to 8 shards, where a whole one would be larger than `max_shard`.
        encoder.set_max_shard(max_shard);
        let mut shards = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            shards.extend(encoder.push(1000 + i as u64, frame).expect("frames in range"));
        }
        let lost: Vec<usize> = (0..frames.len()).filter(|i| (lost_bits >> i) & 1 == 1).take(parity).collect();
        let mut decoder = FecDecoder::new(64);
        let mut rebuilt = Vec::new();
        for (i, frame) in frames.iter().enumerate().filter(|(i, _)| !lost.contains(i)) {
            rebuilt.extend(decoder.on_frame(1000 + i as u64, frame));
        }
        for shard in &shards {
            rebuilt.extend(decoder.on_parity(shard).expect("the encoder's own shards"));
        }
        rebuilt.sort();
        let expected: Vec<(u64, Vec<u8>)> = lost.iter().map(|&i| (1000 + i as u64, frames[i].clone())).collect();
        prop_assert_eq!(rebuilt, expected);
    }
}
