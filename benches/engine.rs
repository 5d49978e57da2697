//! The engine's per-frame cost, at a small (64 B) and a full (1400 B) frame.
//!
//! * `edge_seal`: a frame in through `handle_frame`, its datagram out through `poll_transmit`
//!   (redundant mode on one link, so one seal per frame).
//! * `edge_seal_fec`: `edge_seal` at 1400 B with forward error correction on (its default
//!   blocks), every datagram drained: the ratio to `edge_seal`'s is what it costs per frame.
//! * `gateway_open`: a pre-sealed datagram in through `handle_datagram`, its frame out through
//!   `poll_frame` (open, replay check, dedup, reorder).
//! * `aead_seal_open`: the bare AEAD, seal then open, for both ciphers: the floor under the two
//!   above.
//! * `gateway_idle_edges`: one edge's 64-byte frame sealed by its `Edge` endpoint and taken
//!   through a `Gateway` endpoint that also holds the sessions of N - 1 other edges, which
//!   handshook and then went quiet, for N of 1, 64 and 256; each iteration drains both ends and
//!   runs their timers when due, as a driver does. The edge's share is the same for every N:
//!   what grows with N is what the gateway spends on edges that send nothing.
//! * `fec_encode`, `fec_decode`: forward error correction per frame, for blocks of
//!   [`FEC_ORIGINALS`] frames of 1316 bytes (MPEG-TS over UDP) with [`FEC_PARITY`] recovery
//!   shards: encoding is each frame into the encoder plus its share of the block's recovery
//!   shards; decoding is each frame of a block that lost [`FEC_PARITY`] of them into the decoder,
//!   the recovery shards, and the rebuilding, divided by the frames of the block.
//!
//! Run with `cargo bench --bench engine`; quote medians, and compare against `aead_seal_open`
//! from the same run rather than against figures from another machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use braid::crypto::{Aead, Cipher, PathNonce, Protection};
use braid::endpoint::edge::{Edge, EdgeConfig};
use braid::fec::{FecDecoder, FecEncoder};
use braid::keys::PrivateKey;
use braid::wire::GRE_HEADER_LEN;
use braid::{FecConfig, LinkConfig, LinkId, PacketNumber, Role, Session, SessionConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 2] = [64, 1400];
/// Virtual time between two frames: 100k frames/s.
const STEP: Duration = Duration::from_micros(10);
/// Datagrams pre-sealed for `gateway_open`. When they run out, a fresh gateway session takes
/// them again (the replay window would refuse them a second time); its setup is amortised over
/// this many frames.
const PRESEALED: usize = 1 << 16;

const LINK: LinkId = LinkId::new(0);
/// The edge's link rate: 10 Gbit/s, two hundred times what 100k frames/s of 1400 bytes need.
const LINK_RATE_BPS: u64 = 10_000_000_000;
const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), braid::wire::DEFAULT_PORT);
const EDGE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40_000);

/// The one clock read: the base that virtual time is added to.
fn base_time() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn new_edge(now: Instant) -> Session {
    new_edge_with(now, None)
}

fn new_edge_with(now: Instant, fec: Option<FecConfig>) -> Session {
    let (keys, _) = braid::testing::key_pair(1, Cipher::ChaCha20Poly1305);
    // A link far faster than the frames handed in: the model's queue never fills, so no frame
    // is dropped at the entry and every iteration seals one.
    let link = LinkConfig { id: LINK, priority: 0, rate_bps: Some(LINK_RATE_BPS), remote: GATEWAY };
    // The path MTU as configured, not searched for: a 1400-byte frame goes in one datagram from
    // the first, as it does once a search is over.
    let config = SessionConfig { links: vec![link], probe_mtu: false, fec, ..SessionConfig::default() };
    Session::new(Role::Edge, config, keys, now, 1).expect("a one-link edge config is valid")
}

fn new_gateway(now: Instant) -> Session {
    let (_, keys) = braid::testing::key_pair(1, Cipher::ChaCha20Poly1305);
    Session::new(Role::Gateway, SessionConfig::default(), keys, now, 2).expect("the default gateway config is valid")
}

/// An Ethernet frame of `len` bytes.
fn frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    frame.resize(len, 0xa5);
    frame
}

fn edge_seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("edge_seal");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &frame(size), |b, frame| {
            let mut now = base_time();
            let mut edge = new_edge(now);
            let mut buf = Vec::with_capacity(2048);
            b.iter(|| {
                now += STEP;
                edge.handle_frame(now, black_box(frame)).expect("the link takes the frame");
                // Drain as a driver does: the datagram, then the call that finds nothing more.
                let transmit = edge.poll_transmit(now, &mut buf).expect("one datagram per frame");
                black_box((transmit, buf.len()));
                while edge.poll_transmit(now, &mut buf).is_some() {}
            });
        });
    }
    group.finish();
}

/// The edge's cost per frame with forward error correction on (the default blocks: 16 frames,
/// two frames' worth of recovery), beside the same frame without it (`edge_seal`): the encoding
/// and the recovery shards' sealing, shared out over the frames.
fn edge_seal_fec(c: &mut Criterion) {
    let mut group = c.benchmark_group("edge_seal_fec");
    let size = 1400;
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_with_input(BenchmarkId::from_parameter(size), &frame(size), |b, frame| {
        let mut now = base_time();
        let mut edge = new_edge_with(now, Some(FecConfig::default()));
        let mut buf = Vec::with_capacity(2048);
        b.iter(|| {
            now += STEP;
            edge.handle_frame(now, black_box(frame)).expect("the link takes the frame");
            while let Some(transmit) = edge.poll_transmit(now, &mut buf) {
                black_box((transmit, buf.len()));
            }
        });
    });
    group.finish();
}

fn gateway_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway_open");
    for size in SIZES {
        let base = base_time();
        let mut edge = new_edge(base);
        let frame = frame(size);
        let mut now = base;
        let datagrams: Vec<Vec<u8>> = (0..PRESEALED)
            .map(|_| {
                now += STEP;
                let mut buf = Vec::new();
                edge.handle_frame(now, &frame).expect("the link takes the frame");
                edge.poll_transmit(now, &mut buf).expect("one datagram per frame");
                buf
            })
            .collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &datagrams, |b, datagrams| {
            let mut gateway = new_gateway(base);
            let mut now = base;
            let mut next = 0;
            let mut buf = Vec::with_capacity(2048);
            let mut tx = Vec::with_capacity(2048);
            b.iter(|| {
                if next == datagrams.len() {
                    gateway = new_gateway(base);
                    now = base;
                    next = 0;
                }
                now += STEP;
                gateway.handle_datagram(now, LINK, EDGE, black_box(&datagrams[next])).expect("a fresh datagram opens");
                next += 1;
                let delivered = gateway.poll_frame(now, &mut buf).expect("an in-order frame is delivered at once");
                black_box((delivered, buf.len()));
                // Drain as a driver does. The first packet moves the path (an event); the rest
                // find nothing.
                while gateway.poll_frame(now, &mut buf).is_some() {}
                while gateway.poll_transmit(now, &mut tx).is_some() {}
                while gateway.poll_event().is_some() {}
            });
        });
    }
    group.finish();
}

fn aead_seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead_seal_open");
    for (name, cipher) in [("chacha20poly1305", Cipher::ChaCha20Poly1305), ("aes256gcm", Cipher::Aes256Gcm)] {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let sealer = Aead::new(cipher, &a, &b).expect("32-byte keys are valid");
        let opener = Aead::new(cipher, &b, &a).expect("32-byte keys are valid");
        for size in SIZES {
            let plain = frame(GRE_HEADER_LEN + size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &plain, |bench, plain| {
                let mut buf = Vec::with_capacity(2048);
                let mut pn = 0;
                bench.iter(|| {
                    pn += 1;
                    let nonce = PathNonce { link: LINK, packet_number: PacketNumber(pn) };
                    buf.clear();
                    buf.extend_from_slice(plain);
                    sealer.seal(nonce, &mut buf, GRE_HEADER_LEN).expect("seal");
                    let len = opener.open(nonce, black_box(&mut buf), GRE_HEADER_LEN).expect("open");
                    black_box(len);
                });
            });
        }
    }
    group.finish();
}

/// Frames per FEC block in the benches.
const FEC_ORIGINALS: usize = 10;
/// Recovery shards per FEC block in the benches.
const FEC_PARITY: usize = 2;
/// An MPEG-TS datagram's payload: seven 188-byte packets.
const TS_FRAME: usize = 1316;

fn fec_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fec_encode");
    group.throughput(Throughput::Bytes(TS_FRAME as u64));
    group.bench_function(BenchmarkId::from_parameter(TS_FRAME), |b| {
        let mut encoder = FecEncoder::new(FEC_ORIGINALS, FEC_PARITY).expect("counts in range");
        let frame = frame(TS_FRAME);
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            black_box(encoder.push(seq, black_box(&frame)).expect("a frame in range"));
        });
    });
    group.finish();
}

fn fec_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fec_decode");
    group.throughput(Throughput::Bytes((TS_FRAME * FEC_ORIGINALS) as u64));
    let frames: Vec<Vec<u8>> = (0..FEC_ORIGINALS)
        .map(|i| {
            let mut f = frame(TS_FRAME);
            f[20] = i as u8;
            f
        })
        .collect();
    // Each iteration decodes one block, FEC_ORIGINALS frames: criterion's time per iteration,
    // divided by FEC_ORIGINALS, is the cost per frame.
    group.bench_function(BenchmarkId::new("block", TS_FRAME), |b| {
        let mut block = 0u64;
        let mut decoder = FecDecoder::new(4 * FEC_ORIGINALS);
        let mut encoder = FecEncoder::new(FEC_ORIGINALS, FEC_PARITY).expect("counts in range");
        b.iter_batched(
            || {
                block += 1;
                let first = block * FEC_ORIGINALS as u64;
                let mut parity = Vec::new();
                for (i, f) in frames.iter().enumerate() {
                    parity.extend(encoder.push(first + i as u64, f).expect("a frame in range"));
                }
                (first, parity)
            },
            |(first, parity)| {
                for (i, f) in frames.iter().enumerate().skip(FEC_PARITY) {
                    black_box(decoder.on_frame(first + i as u64, f));
                }
                let mut rebuilt = 0;
                for shard in &parity {
                    rebuilt += decoder.on_parity(shard).expect("the encoder's own shards").len();
                }
                assert_eq!(rebuilt, FEC_PARITY, "the lost frames are rebuilt");
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Edges behind the gateway in `gateway_idle_edges`.
const EDGE_COUNTS: [usize; 3] = [1, 64, 256];

/// Where edge `i` of `gateway_idle_edges` sends from.
fn rig_address(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i as u32)), 40_000)
}

/// A gateway endpoint and `count` edge endpoints of one link each, every one through a real
/// handshake (datagrams handed across at once, in virtual time from `now`), and the instant
/// they all had a live session; `None` if they did not within two virtual seconds.
fn gateway_with_edges(now: Instant, count: usize) -> Option<(braid::endpoint::gateway::Gateway, Vec<Edge>, Instant)> {
    use braid::endpoint::gateway::{EdgeEntry, Gateway, GatewayConfig, PeerId};
    let gateway_key = PrivateKey::from_bytes([0xee; 32]);
    let key = |i: usize| {
        // Away from the bits X25519 clamps (the low three and the top two).
        let mut bytes = [7; 32];
        bytes[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        PrivateKey::from_bytes(bytes)
    };
    let edges = (0..count).map(|i| EdgeEntry { name: format!("rig{i}"), public_key: key(i).public(), psk: None });
    let config = GatewayConfig {
        private_key: gateway_key.clone(),
        edges: edges.collect(),
        session: SessionConfig::default(),
        handshake_rate: u32::MAX,
    };
    let mut gateway = Gateway::new(config, now, [3; 32]).expect("distinct keys");
    let link = LinkConfig { id: LINK, priority: 0, rate_bps: Some(LINK_RATE_BPS), remote: GATEWAY };
    let mut rigs: Vec<Edge> = (0..count)
        .map(|i| {
            let config = EdgeConfig {
                private_key: key(i),
                gateway_key: gateway_key.public(),
                psk: None,
                cipher: Cipher::ChaCha20Poly1305,
                session: SessionConfig { links: vec![link], probe_mtu: false, ..SessionConfig::default() },
                standbys: Vec::new(),
                return_after: None,
            };
            Edge::new(config, now, 1_700_000_000_000_000_000, [i as u8; 32]).expect("a one-link edge config")
        })
        .collect();
    let mut now = now;
    let (mut buf, mut replies) = (Vec::with_capacity(2048), Vec::new());
    for _ in 0..2000 {
        if (0..count).all(|i| gateway.session(PeerId(i)).is_some()) {
            return Some((gateway, rigs, now));
        }
        now += Duration::from_millis(1);
        for (i, rig) in rigs.iter_mut().enumerate() {
            if rig.poll_timeout().is_some_and(|(at, _)| at <= now) {
                rig.handle_timeout(now);
            }
            while rig.poll_transmit(now, &mut buf).is_some() {
                let _ = gateway.handle_datagram(now, rig_address(i), &buf);
            }
        }
        if gateway.poll_timeout().is_some_and(|(at, _)| at <= now) {
            gateway.handle_timeout(now);
        }
        while let Some(t) = gateway.poll_transmit(now, &mut buf) {
            replies.push((t.destination, buf.clone()));
        }
        for (to, datagram) in replies.drain(..) {
            if let Some(rig) = (0..count).find(|&j| rig_address(j) == to).and_then(|j| rigs.get_mut(j)) {
                let _ = rig.handle_datagram(now, LINK, GATEWAY, &datagram);
            }
        }
    }
    None
}

fn gateway_idle_edges(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway_idle_edges");
    for count in EDGE_COUNTS {
        let (mut gateway, rigs, start) =
            gateway_with_edges(base_time(), count).expect("every edge handshakes within two virtual seconds");
        let mut edge = rigs.into_iter().next().expect("one edge");
        let from = rig_address(0);
        let frame = frame(64);
        let (mut now, mut buf) = (start, Vec::with_capacity(2048));
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter(|| {
                now += STEP;
                let _ = edge.handle_frame(now, black_box(&frame));
                if edge.poll_timeout().is_some_and(|(at, _)| at <= now) {
                    edge.handle_timeout(now);
                }
                while edge.poll_transmit(now, &mut buf).is_some() {
                    let _ = gateway.handle_datagram(now, from, &buf);
                }
                while edge.poll_frame(now, &mut buf).is_some() {}
                while edge.poll_event().is_some() {}
                if gateway.poll_timeout().is_some_and(|(at, _)| at <= now) {
                    gateway.handle_timeout(now);
                }
                while let Some(t) = gateway.poll_transmit(now, &mut buf) {
                    if t.destination == from {
                        let _ = edge.handle_datagram(now, LINK, GATEWAY, &buf);
                    }
                }
                while gateway.poll_frame(now, &mut buf).is_some() {}
                while gateway.poll_event().is_some() {}
                black_box(gateway.poll_timeout());
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    edge_seal,
    edge_seal_fec,
    gateway_open,
    gateway_idle_edges,
    aead_seal_open,
    fec_encode,
    fec_decode
);
criterion_main!(benches);
