#![no_main]
//! `sluice_core::fuzz::lines` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_core::fuzz::lines(data));
