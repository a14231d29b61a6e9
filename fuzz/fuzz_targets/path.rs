//! Path normalisation on any text.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| omc_orchestra::fuzzing::path(text));
