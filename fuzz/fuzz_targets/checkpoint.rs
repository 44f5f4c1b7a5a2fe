#![no_main]
//! `sluice_core::fuzz::checkpoint` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_core::fuzz::checkpoint(data));
