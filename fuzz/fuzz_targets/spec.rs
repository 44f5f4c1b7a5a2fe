#![no_main]
//! `sluice::fuzz::spec` under libFuzzer: a tenant's job spec.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::spec(data));
