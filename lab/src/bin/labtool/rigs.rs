//! Many rigs in one process, and the sink that counts what they sent.
//!
//! `rigs` runs `--count` edges, each the engine's real [`Edge`] with its own key (derived from
//! `--seed` and its number, as `rig-keys` prints them for the gateway's allowlist), its own UDP
//! socket per link, and a real handshake with the gateway. After every rig has had `WARMUP` to
//! connect, each sends `--mbps` of 1242-byte Ethernet frames (IPv4/UDP to `--ingest`, at its MAC
//! `--ingest-mac`, port `--port`; 1200 bytes of payload that carry the rig's number and the
//! frame's sequence) for `--secs`, then lingers a second for what is still in flight. It prints
//! `connected=N offered=A,B,... sent=A,B,... send_errors=N cpu_ticks=T`: the frames each rig
//! offered its engine, those the engine took, the datagrams the sockets refused, and the
//! process's CPU time in clock ticks (all rigs share one thread).
//!
//! `sink` counts, for each rig, the distinct sequences that arrived on its port, until `--secs`
//! pass: `received=A,B,... dup=N`.

// A load generator reads the clock and sleeps: it is the driver, not the engine.
#![allow(clippy::disallowed_methods)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use braid_engine::crypto::Cipher;
use braid_engine::endpoint::edge::{Edge, EdgeConfig};
use braid_engine::handshake::CryptoRng;
use braid_engine::keys::{PrivateKey, PublicKey};
use braid_engine::session::{Event, LinkConfig, SessionConfig};
use braid_engine::{LinkId, Mode};

use super::{Flags, seed_bytes};

/// Every rig has this long to complete its handshake before the frames start.
const WARMUP: Duration = Duration::from_secs(3);
/// Payload bytes of each frame's UDP datagram.
const PAYLOAD: usize = 1200;
/// The frame: Ethernet, IPv4 and UDP headers, and the payload.
const FRAME: usize = 14 + 20 + 8 + PAYLOAD;
/// Rig `i`'s frames come from this UDP port plus `i`.
const SOURCE_PORT: u16 = 20_000;

/// Rig `i`'s private key (0-based), from the seed.
pub(crate) fn key(seed: u64, i: usize) -> PrivateKey {
    PrivateKey::generate(&mut CryptoRng::new(seed_bytes(seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1))))
}

/// `rig-keys --count N [--seed N]`: each rig's name and public key, one per line.
pub(crate) fn print_keys(flags: &Flags) -> Result<(), String> {
    let count = flags.number("count").ok_or("--count N")?;
    if !(1..=1000).contains(&count) {
        return Err("--count: between 1 and 1000".into());
    }
    let seed = flags.number("seed").unwrap_or(1);
    for i in 0..count as usize {
        println!("rig{} {}", i + 1, key(seed, i).public().to_base64());
    }
    Ok(())
}

struct Plan {
    count: usize,
    gateway: SocketAddr,
    gateway_key: PublicKey,
    links: usize,
    frame_interval: Duration,
    secs: Duration,
    seed: u64,
    ingest: Ipv4Addr,
    ingest_mac: [u8; 6],
    port: u16,
}

/// `rigs`: runs the rigs and prints what each sent.
pub(crate) fn run(flags: &Flags) -> Result<(), String> {
    let count = flags.number("count").ok_or("--count N")? as usize;
    let gateway: SocketAddr =
        flags.text("gateway").ok_or("--gateway IP:PORT")?.parse().map_err(|_| "--gateway: expected IP:PORT")?;
    let gateway_key = PublicKey::from_base64(flags.text("gateway-key").ok_or("--gateway-key BASE64")?)
        .map_err(|e| format!("--gateway-key: {e}"))?;
    let mbps = flags.text("mbps").ok_or("--mbps RATE")?.parse::<f64>().map_err(|_| "--mbps: a number")?;
    if !(mbps > 0.0 && mbps <= 1000.0) {
        return Err("--mbps: between 0 and 1000".into());
    }
    let links = flags.number("links").unwrap_or(2).clamp(1, 8) as usize;
    // Each link is a socket: stay well inside the default limit of 1024 open files.
    if count == 0 || count * links > 900 {
        return Err("--count: at least 1, and at most 900 sockets in all (--count times --links)".into());
    }
    let secs = flags.number("secs").ok_or("--secs S")?;
    if !(1..=3600).contains(&secs) {
        return Err("--secs: between 1 and 3600".into());
    }
    let plan = Plan {
        count,
        gateway,
        gateway_key,
        links,
        frame_interval: Duration::from_secs_f64((FRAME * 8) as f64 / (mbps * 1e6)),
        secs: Duration::from_secs(secs),
        seed: flags.number("seed").unwrap_or(1),
        ingest: flags.text("ingest").ok_or("--ingest IP")?.parse().map_err(|_| "--ingest: an IPv4 address")?,
        ingest_mac: mac(flags.text("ingest-mac").ok_or("--ingest-mac MAC")?)?,
        port: flags.number("port").ok_or("--port N")?.try_into().map_err(|_| "--port: at most 65535")?,
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("a runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let connected = Rc::new(Cell::new(0usize));
    let send_errors = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let plan = Rc::new(plan);
    let sent = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let counters = (Rc::clone(&connected), Rc::clone(&send_errors));
                tokio::task::spawn_local(rig(i, Rc::clone(&plan), start, counters))
            })
            .collect();
        let mut sent = Vec::with_capacity(count);
        for task in tasks {
            sent.push(task.await.map_err(|e| format!("a rig stopped: {e}"))??);
        }
        Ok::<_, String>(sent)
    })?;
    let list = |values: Vec<u64>| values.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let (offered, sent): (Vec<u64>, Vec<u64>) = sent.into_iter().unzip();
    // Its own CPU, to tell a run the generator held back from one the gateway did.
    let cpu_ticks = crate::many_rigs::cpu_ticks(std::process::id()).map_or("-".to_owned(), |t| t.to_string());
    println!(
        "connected={} offered={} sent={} send_errors={} cpu_ticks={cpu_ticks}",
        connected.get(),
        list(offered),
        list(sent),
        send_errors.get()
    );
    Ok(())
}

/// One rig: its edge, its sockets, its frames. Returns the frames it offered its engine and
/// those the engine took.
async fn rig(
    i: usize,
    plan: Rc<Plan>,
    start: Instant,
    (connected, send_errors): (Rc<Cell<usize>>, Rc<Cell<u64>>),
) -> Result<(u64, u64), String> {
    let mut sockets = Vec::with_capacity(plan.links);
    for _ in 0..plan.links {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.map_err(|e| format!("binding: {e}"))?;
        sockets.push(Rc::new(socket));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, SocketAddr, Vec<u8>)>(1024);
    for (l, socket) in sockets.iter().enumerate() {
        let (socket, tx) = (Rc::clone(socket), tx.clone());
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if tx.send((l, from, buf[..len].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    let links = (0..plan.links)
        .map(|l| LinkConfig { id: LinkId::new(l as u8), priority: 0, rate_bps: None, remote: plan.gateway })
        .collect();
    let config = EdgeConfig {
        private_key: key(plan.seed, i),
        gateway_key: plan.gateway_key,
        psk: None,
        cipher: Cipher::ChaCha20Poly1305,
        session: SessionConfig { mode: Mode::Bond, links, ..SessionConfig::default() },
        standbys: Vec::new(),
        return_after: None,
    };
    let unix_nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut rng_seed = seed_bytes(plan.seed ^ 0x5eed);
    rng_seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    let mut edge = Edge::new(config, Instant::now(), unix_nanos, rng_seed).map_err(|e| format!("rig {i}: {e}"))?;
    let mut frame = template(i, &plan);
    // The rigs start their streams spread over one frame interval, not all at once.
    let stagger = plan.frame_interval.mul_f64(i as f64 / plan.count as f64);
    let (first, end) = (start + WARMUP + stagger, start + WARMUP + plan.secs);
    let linger = end + Duration::from_secs(1);
    let (mut next, mut seq, mut sent, mut up) = (first, 0u64, 0u64, false);
    let mut buf = Vec::with_capacity(2048);
    loop {
        let now = Instant::now();
        while next <= now && next < end {
            frame[46..54].copy_from_slice(&seq.to_be_bytes());
            if edge.handle_frame(now, &frame).is_ok() {
                sent += 1;
            }
            seq += 1;
            next += plan.frame_interval;
        }
        if edge.poll_timeout().is_some_and(|(at, _)| at <= now) {
            edge.handle_timeout(now);
        }
        while let Some(t) = edge.poll_transmit(now, &mut buf) {
            if let Some(socket) = sockets.get(usize::from(t.link.get()))
                && socket.send_to(&buf, t.destination).await.is_err()
            {
                send_errors.set(send_errors.get() + 1);
            }
        }
        while let Some(event) = edge.poll_event() {
            if !up && matches!(event, Event::Handshake { .. }) {
                up = true;
                connected.set(connected.get() + 1);
            }
        }
        while edge.poll_frame(now, &mut buf).is_some() {}
        if now >= linger {
            return Ok((seq, sent));
        }
        let mut wake = linger;
        if next < end {
            wake = wake.min(next);
        }
        if let Some((at, _)) = edge.poll_timeout() {
            wake = wake.min(at);
        }
        tokio::select! {
            Some((link, from, datagram)) = rx.recv() => {
                let _ = edge.handle_datagram(Instant::now(), LinkId::new(link as u8), from, &datagram);
                while let Ok((link, from, datagram)) = rx.try_recv() {
                    let _ = edge.handle_datagram(Instant::now(), LinkId::new(link as u8), from, &datagram);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Rig `i`'s frame, its sequence (bytes 46..54) still zero.
fn template(i: usize, plan: &Plan) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME);
    f.extend_from_slice(&plan.ingest_mac);
    f.extend_from_slice(&[0x02, 0x62, 0x72, 0x00, (i >> 8) as u8, i as u8]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let source = Ipv4Addr::new(10, 79, 1 + (i / 200) as u8, 1 + (i % 200) as u8);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&source.octets());
    ip[16..20].copy_from_slice(&plan.ingest.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(SOURCE_PORT + i as u16).to_be_bytes());
    f.extend_from_slice(&plan.port.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&(i as u32).to_be_bytes());
    f.resize(FRAME, 0);
    f
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Option<Vec<u8>> =
        text.split(':').map(|b| if b.len() == 2 { u8::from_str_radix(b, 16).ok() } else { None }).collect();
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| format!("{text}: not a MAC address"))
}

/// `sink --listen IP:PORT --count N --secs S`: what each rig's frames delivered.
pub(crate) fn sink(flags: &Flags) -> Result<(), String> {
    let listen = flags.text("listen").ok_or("--listen IP:PORT")?;
    let count = flags.number("count").ok_or("--count N")? as usize;
    let secs = flags.number("secs").ok_or("--secs S")?;
    if !(1..=1000).contains(&count) || !(1..=3600).contains(&secs) {
        return Err("--count: between 1 and 1000; --secs: between 1 and 3600".into());
    }
    let socket = UdpSocket::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    // Room for a second of every rig's stream: the sink counts the tunnel, not its own lag.
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, 32 << 20)
        .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 32 << 20))
        .map_err(|e| format!("a receive buffer: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut seen: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); count];
    let (mut dup, mut strays) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let Ok(len) = socket.recv(&mut buf) else { continue };
        let rig = buf.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let seq = buf.get(4..12).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
        match (rig.and_then(|r| seen.get_mut(r)), seq, len) {
            (Some(set), Some(seq), PAYLOAD) => {
                if !set.insert(seq) {
                    dup += 1;
                }
            }
            _ => strays += 1,
        }
    }
    let list: Vec<String> = seen.iter().map(|s| s.len().to_string()).collect();
    println!("received={} dup={dup} strays={strays}", list.join(","));
    Ok(())
}
