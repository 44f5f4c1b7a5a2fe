#![no_main]
//! `sluice_core::fuzz::columns` under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_core::fuzz::columns(data));
