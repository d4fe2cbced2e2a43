//! Fuzz target `record_exchange`: the body is `targets::record_exchange` (tests/fuzz/targets/), also replayed on
//! stable by tests/fuzz_corpora.rs. Written by tests/fuzz/new-target.sh.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cocoon_fuzz::record_exchange(data));
