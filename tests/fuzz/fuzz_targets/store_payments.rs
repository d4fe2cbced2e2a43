//! Fuzz target `store_payments`: the body is `targets::store_payments` (tests/fuzz/targets/), also replayed on
//! stable by tests/fuzz_corpora.rs. Written by tests/fuzz/new-target.sh.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cocoon_fuzz::store_payments(data));
