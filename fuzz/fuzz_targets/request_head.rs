//! The lane's request head parser on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| omc_orchestra::fuzzing::request_head(bytes));
