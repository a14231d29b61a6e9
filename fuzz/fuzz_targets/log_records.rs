//! The logging server's `POST /logs` body parser on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| omc_orchestra_server::logs_api::fuzz_records(body));
