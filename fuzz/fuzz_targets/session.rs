//! Arbitrary datagrams, frames and time steps through a gateway session and its edge peer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_fuzz::run_session(data));
