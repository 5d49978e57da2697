//! Writes the seed corpus: real sealed datagrams from a real edge session, and near-valid
//! variants of them, for `datagram`; and step sequences that drive real traffic, for `session`.
//!
//! Run from `fuzz/`: `cargo run --example make_corpus`. The output is deterministic (fixed keys,
//! virtual time), so regenerating rewrites the same files.

use std::fs;
use std::path::Path;

use braid_engine::wire::GRE_HEADER_LEN;
use braid_fuzz::{EDGE_LINKS, Harness, Op, Step, base_time};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let datagrams = datagram_corpus();
    let sessions = session_corpus(&datagrams);
    let handshakes = handshake_corpus();
    for (target, files) in [("datagram", &datagrams), ("session", &sessions), ("handshake", &handshakes)] {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} files in {}", files.len(), dir.display());
    }
    // Show what each step sequence reaches, so a seed that stopped reaching the gateway's state
    // (say, after a wire change) is noticed.
    for (name, steps) in &sessions {
        let mut h = Harness::new(base_time());
        for step in Step::parse_all(steps) {
            h.step(&step);
        }
        let stats = h.gateway_stats();
        let states: Vec<_> = h.edge.links().filter_map(|l| h.edge.link_state(l)).collect();
        println!(
            "{name}: delivered {}, lost {}, late {}, edge links {states:?}, gateway drops {:?}",
            h.delivered(),
            stats.frames_lost,
            stats.frames_late,
            stats.drops
        );
    }
    Ok(())
}

/// A named way to damage a valid datagram.
type Mutation = (&'static str, fn(&mut Vec<u8>));

/// Real datagrams of both directions, then near-valid variants of a data and a control one.
fn datagram_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut h = Harness::new(base_time());
    // Frames of several sizes: each is sealed once per link (redundant mode).
    for len in [14usize, 60, 64, 200, 1400] {
        let frame = ethernet_frame(len, len as u8);
        h.step(&Step { wait: 0, alt_from: false, op: Op::EdgeFrame(&frame) });
    }
    // Let the first probe tick pass: the edge probes both links.
    h.step(&Step { wait: 10, alt_from: false, op: Op::EdgeFrame(&ethernet_frame(100, 7)) });
    let edge: Vec<(braid_engine::LinkId, Vec<u8>)> = h.captured().cloned().collect();
    for (i, (link, bytes)) in edge.iter().enumerate() {
        let kind = if bytes[3] == 0x58 { "data" } else { "control" };
        out.push((format!("edge-{kind}-{i:02}-link{}-{}b", link.get(), bytes.len()), bytes.clone()));
    }
    // The gateway's answers (probe replies with reports), captured by tapping its transmits.
    let (_, gateway_keys) = braid_engine::testing::key_pair(1, braid_engine::crypto::Cipher::ChaCha20Poly1305);
    let now = h.now();
    let mut gateway = braid_engine::Session::new(
        braid_engine::Role::Gateway,
        braid_engine::SessionConfig::default(),
        gateway_keys,
        now,
        2,
    )
    .unwrap();
    for (link, bytes) in &edge {
        let _ = gateway.handle_datagram(now, *link, braid_fuzz::EDGE_A, bytes);
    }
    let mut buf = Vec::new();
    let mut n = 0;
    while let Some(t) = gateway.poll_transmit(now, &mut buf) {
        out.push((format!("gateway-control-{n:02}-link{}-{}b", t.link.get(), buf.len()), buf.clone()));
        n += 1;
    }

    let data = edge.iter().find(|(_, b)| b[3] == 0x58).map(|(_, b)| b.clone()).unwrap();
    let control = edge.iter().find(|(_, b)| b[3] == 0xb5).map(|(_, b)| b.clone()).unwrap();
    let variants: [Mutation; 13] = [
        ("empty", |b| b.clear()),
        ("truncated-header", |b| b.truncate(GRE_HEADER_LEN - 1)),
        ("header-only", |b| b.truncate(GRE_HEADER_LEN)),
        ("short-tag", |b| b.truncate(b.len() - 1)),
        ("checksum-flag", |b| b[0] |= 0x80),
        ("version-1", |b| b[1] = 1),
        ("ipv4-protocol", |b| b[2..4].copy_from_slice(&[0x08, 0x00])),
        ("other-session", |b| b[4] ^= 0x55),
        ("other-link", |b| b[7] = 5),
        ("link-out-of-range", |b| b[7] = 200),
        ("sequence-far-ahead", |b| b[8] ^= 0x80),
        ("flipped-tag", |b| *b.last_mut().unwrap() ^= 1),
        ("flipped-payload", |b| b[GRE_HEADER_LEN + 1] ^= 1),
    ];
    for (base_name, base) in [("data", &data), ("control", &control)] {
        for (name, mutate) in variants {
            let mut bytes = base.clone();
            mutate(&mut bytes);
            out.push((format!("near-{base_name}-{name}"), bytes));
        }
    }
    for kind in [0u8, 1, 2, 3, 5, 255] {
        let mut bytes = control.clone();
        bytes[GRE_HEADER_LEN] = kind;
        out.push((format!("near-control-type-{kind}"), bytes));
    }
    out
}

/// Step sequences: in order, reordered, duplicated, lost, late, rebound, probed up and left to
/// time out, plus raw real and near-valid datagrams.
fn session_corpus(datagrams: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let frame = |i: u8| ethernet_frame(64 + usize::from(i), i);
    let frames = |n: u8| (0..n).map(frame).collect::<Vec<_>>();
    let send = |frames: &[Vec<u8>], steps: &mut Vec<u8>| {
        for f in frames {
            Step { wait: 0, alt_from: false, op: Op::EdgeFrame(f) }.encode(steps);
        }
    };
    let deliver = |index: u16, wait: u8, steps: &mut Vec<u8>| {
        Step { wait, alt_from: false, op: Op::Deliver { index, flip: 0 } }.encode(steps);
    };
    let flush = |wait: u8, alt_from: bool, steps: &mut Vec<u8>| {
        Step { wait, alt_from, op: Op::Flush }.encode(steps);
    };
    // With two links, frame i's copies are captured at 2i (link 0) and 2i + 1 (link 1), as long as
    // no probe is due (the first is due within a quarter interval, so send at time 0).
    let links = EDGE_LINKS.len() as u16;
    let mut out = Vec::new();
    let mut add = |name: &str, steps: Vec<u8>| out.push((format!("steps-{name}"), steps));

    let mut s = Vec::new();
    send(&frames(1), &mut s);
    flush(0, false, &mut s);
    add("one-frame", s);

    let mut s = Vec::new();
    send(&frames(10), &mut s);
    flush(1, false, &mut s);
    add("ten-frames-in-order", s);

    let mut s = Vec::new();
    send(&frames(5), &mut s);
    for i in [0u16, 2, 1, 4, 3] {
        deliver(i * links, 0, &mut s);
    }
    add("reordered", s);

    let mut s = Vec::new();
    send(&frames(4), &mut s);
    for i in [1u16, 3, 2, 0, 5, 4, 7, 6] {
        deliver(i, 1, &mut s);
    }
    add("both-links-interleaved", s);

    let mut s = Vec::new();
    send(&frames(3), &mut s);
    for i in [0u16, 0, 1, 2, 2, 4, 4] {
        deliver(i, 0, &mut s);
    }
    add("duplicates-and-replays", s);

    let mut s = Vec::new();
    send(&frames(4), &mut s);
    deliver(0, 0, &mut s);
    deliver(2 * links, 0, &mut s);
    deliver(3 * links, 0, &mut s);
    // The gap is given up after the hold; then the missing frame turns up late.
    deliver(links, 60, &mut s);
    add("gap-given-up-then-late", s);

    let mut s = Vec::new();
    send(&frames(3), &mut s);
    flush(0, false, &mut s);
    send(&frames(3), &mut s);
    flush(2, true, &mut s);
    add("nat-rebinding", s);

    let mut s = Vec::new();
    for _ in 0..12 {
        send(&frames(1), &mut s);
        flush(7, false, &mut s);
    }
    add("probes-bring-links-up", s);

    let mut s = Vec::new();
    for _ in 0..6 {
        flush(7, false, &mut s);
    }
    send(&frames(2), &mut s);
    flush(127, false, &mut s);
    flush(127, false, &mut s);
    send(&frames(2), &mut s);
    flush(0, false, &mut s);
    add("links-time-out-and-recover", s);

    let mut s = Vec::new();
    send(&frames(3), &mut s);
    for flip in [1u8, 5, 13, 20, 63] {
        Step { wait: 0, alt_from: false, op: Op::Deliver { index: 0, flip } }.encode(&mut s);
    }
    deliver(0, 0, &mut s);
    add("corrupted-copies", s);

    let mut s = Vec::new();
    for len in [0usize, 13, 14, 1514, 1518] {
        let f = ethernet_frame(len, 1);
        Step { wait: 0, alt_from: false, op: Op::EdgeFrame(&f) }.encode(&mut s);
    }
    flush(0, false, &mut s);
    add("frame-lengths", s);

    // Raw datagrams from the generator's edge are authentic to the harness's gateway too (same
    // keys), so these reach past the AEAD without the capture list.
    let mut s = Vec::new();
    for (name, bytes) in datagrams.iter().filter(|(n, _)| n.starts_with("edge-")) {
        let link = name.split("-link").nth(1).and_then(|r| r[..1].parse::<u8>().ok()).unwrap_or(0);
        Step { wait: 0, alt_from: false, op: Op::Datagram { link, bytes } }.encode(&mut s);
    }
    add("raw-edge-datagrams", s);

    let mut s = Vec::new();
    for (_, bytes) in datagrams.iter().filter(|(n, _)| n.starts_with("near-")) {
        Step { wait: 1, alt_from: false, op: Op::Datagram { link: 0, bytes } }.encode(&mut s);
    }
    add("raw-near-valid-datagrams", s);

    let mut s = Vec::new();
    let first = &datagrams[0].1;
    for link in [1u8, 17, 63] {
        Step { wait: 0, alt_from: false, op: Op::Datagram { link, bytes: first } }.encode(&mut s);
    }
    add("raw-on-the-wrong-link", s);

    out
}

/// An Ethernet frame of `len` bytes: broadcast destination, a fixed source, IPv4 ethertype, and
/// a payload pattern seeded by `seed`.
fn ethernet_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    frame.extend((0..len.saturating_sub(14)).map(|i| seed.wrapping_add(i as u8)));
    frame.truncate(len);
    frame
}

/// A real initiation from an edge (on each link), the gateway's real response and a cookie
/// reply under load, alone and in sequences, plus damaged copies.
fn handshake_corpus() -> Vec<(String, Vec<u8>)> {
    use braid_fuzz::handshake::{SOURCES, edge, encode, gateway};
    let now = base_time();
    let mut edge = edge(now);
    let mut buf = Vec::new();
    let mut initiations = Vec::new();
    while let Some(t) = edge.poll_transmit(now, &mut buf) {
        initiations.push((t.link, buf.clone()));
    }
    let mut gw = gateway(now);
    let mut answers = Vec::new();
    // The third copy exceeds the gateway's rate (2/s) and is answered with a cookie.
    for (i, (_, init)) in initiations.iter().chain(initiations.iter()).enumerate() {
        let _ = gw.handle_datagram(now, SOURCES[i % 2], init);
        while gw.poll_transmit(now, &mut buf).is_some() {
            answers.push(buf.clone());
        }
    }
    let mut out = Vec::new();
    for (i, (_, init)) in initiations.iter().enumerate() {
        out.push((format!("initiation-{i}"), encode([init.as_slice()])));
        let mut flipped = init.clone();
        flipped[40] ^= 1;
        out.push((format!("initiation-{i}-flipped"), encode([flipped.as_slice()])));
    }
    for (i, answer) in answers.iter().enumerate() {
        out.push((format!("answer-{i}-{}b", answer.len()), encode([answer.as_slice()])));
    }
    let all: Vec<&[u8]> =
        initiations.iter().map(|(_, b)| b.as_slice()).chain(answers.iter().map(Vec::as_slice)).collect();
    out.push(("everything".into(), encode(all)));
    out
}
