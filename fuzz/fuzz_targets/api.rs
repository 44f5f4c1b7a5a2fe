#![no_main]
//! `sluice_server::fuzz::request` under libFuzzer: a request to the API.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_server::fuzz::request(data));
