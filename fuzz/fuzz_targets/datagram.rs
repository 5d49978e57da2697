//! Arbitrary bytes through every parser a datagram meets before and after opening.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_fuzz::parse_datagram(data));
