//! Arbitrary datagrams at the handshake surface of a [`Gateway`] and an [`Edge`].
//!
//! The input is a sequence of datagrams, each a big-endian u16 length and that many bytes. Each
//! goes to the gateway (from one of two addresses) and to the edge (as if from the gateway).
//! Whatever they answer is fed back to the other side, so a real initiation in the corpus drives
//! a real handshake. Checked on every input: no panic, no timer left due after `handle_timeout`,
//! and the gateway never sends to an address that did not send it an initiation or a packet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use braid_engine::crypto::Cipher;
use braid_engine::endpoint::edge::{Edge, EdgeConfig};
use braid_engine::endpoint::gateway::{EdgeEntry, Gateway, GatewayConfig};
use braid_engine::keys::PrivateKey;
use braid_engine::{LinkConfig, LinkId, SessionConfig};

/// The gateway's address.
pub const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 4754);
/// The two addresses the fuzzer's datagrams come from.
pub const SOURCES: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)), 40_000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2)), 40_000),
];
const MAX_DATAGRAMS: usize = 64;

/// The edge's static key.
pub fn edge_key() -> PrivateKey {
    PrivateKey::from_bytes([0x11; 32])
}

/// The gateway's static key.
pub fn gateway_key() -> PrivateKey {
    PrivateKey::from_bytes([0x22; 32])
}

/// A gateway that allows [`edge_key`], with a low handshake rate so cookies are exercised.
pub fn gateway(now: Instant) -> Gateway {
    let config = GatewayConfig {
        private_key: gateway_key(),
        edges: vec![EdgeEntry { name: "rig".into(), public_key: edge_key().public(), psk: None }],
        session: SessionConfig::default(),
        handshake_rate: 2,
    };
    Gateway::new(config, now, [7; 32]).expect("one edge is a valid gateway config")
}

/// An edge with two links to [`GATEWAY`].
pub fn edge(now: Instant) -> Edge {
    let links =
        (0..2u8).map(|i| LinkConfig { id: LinkId::new(i), priority: i, rate_bps: None, remote: GATEWAY }).collect();
    let config = EdgeConfig {
        private_key: edge_key(),
        gateway_key: gateway_key().public(),
        psk: None,
        cipher: Cipher::ChaCha20Poly1305,
        session: SessionConfig { links, ..SessionConfig::default() },
        standbys: Vec::new(),
        return_after: None,
    };
    Edge::new(config, now, 1_700_000_000_000_000_000, [9; 32]).expect("two links are a valid edge config")
}

/// Splits the input into length-prefixed datagrams.
pub fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (datagram, rest) = rest.split_at(len);
        data = rest;
        Some(datagram)
    })
    .take(MAX_DATAGRAMS)
}

/// Encodes datagrams as a fuzz input.
pub fn encode<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Runs one input.
pub fn run_handshake(data: &[u8], base: Instant) {
    let mut now = base;
    let mut gateway = gateway(now);
    let mut edge = edge(now);
    let mut buf = Vec::new();
    for (i, datagram) in datagrams(data).enumerate() {
        now += Duration::from_millis(7);
        let from = SOURCES[i % 2];
        let _ = gateway.handle_datagram(now, from, datagram);
        let _ = edge.handle_datagram(now, LinkId::new((i % 2) as u8), GATEWAY, datagram);
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = gateway.poll_transmit(now, &mut buf) {
                assert!(SOURCES.contains(&t.destination), "the gateway sent to {}", t.destination);
                let _ = edge.handle_datagram(now, t.link, GATEWAY, &buf);
                moved = true;
            }
            while let Some(t) = edge.poll_transmit(now, &mut buf) {
                let from = SOURCES[usize::from(t.link.get()) % 2];
                let _ = gateway.handle_datagram(now, from, &buf);
                moved = true;
            }
            while gateway.poll_frame(now, &mut buf).is_some() || gateway.poll_event().is_some() {}
            while edge.poll_frame(now, &mut buf).is_some() || edge.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
        for _ in 0..4 {
            if let Some((at, _)) = gateway.poll_timeout().filter(|(at, _)| *at <= now) {
                gateway.handle_timeout(at.max(now));
                assert!(gateway.poll_timeout().is_none_or(|(next, _)| next > now), "gateway timer left due");
            }
            if let Some((at, _)) = edge.poll_timeout().filter(|(at, _)| *at <= now) {
                edge.handle_timeout(at.max(now));
                assert!(edge.poll_timeout().is_none_or(|(next, _)| next > now), "edge timer left due");
            }
        }
    }
}
