//! The lane's chunked body decoder on any bytes, whole and cut in two.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| omc_orchestra::fuzzing::chunked_body(bytes));
