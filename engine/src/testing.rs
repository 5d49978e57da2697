//! Helpers for tests and benchmarks: matching session keys without a handshake.
//!
//! Only built with the `test-util` feature, which the binaries never enable: outside tests, keys
//! come from the handshake.

use crate::SessionIndex;
use crate::crypto::{Aead, Cipher, SessionKeys};
use crate::rng::Rng;

/// Keys for an edge and a gateway session that talk to each other, derived from `seed`.
pub fn key_pair(seed: u64, cipher: Cipher) -> (SessionKeys, SessionKeys) {
    let mut rng = Rng::new(seed);
    let mut key = || {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        k
    };
    let (edge_to_gateway, gateway_to_edge) = (key(), key());
    let edge_index = SessionIndex::from_wire(0x00_0e_d6);
    let gateway_index = SessionIndex::from_wire(0x00_6a_7e);
    let aead = |seal: &[u8; 32], open: &[u8; 32]| -> Box<Aead> {
        Box::new(Aead::new(cipher, seal, open).expect("32-byte keys are valid for both ciphers"))
    };
    let edge = SessionKeys {
        local_index: edge_index,
        remote_index: gateway_index,
        protection: aead(&edge_to_gateway, &gateway_to_edge),
    };
    let gateway = SessionKeys {
        local_index: gateway_index,
        remote_index: edge_index,
        protection: aead(&gateway_to_edge, &edge_to_gateway),
    };
    (edge, gateway)
}
