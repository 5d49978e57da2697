//! Arbitrary datagrams at the handshake surface of a gateway and an edge.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_fuzz::handshake::run_handshake(data, braid_fuzz::base_time()));
