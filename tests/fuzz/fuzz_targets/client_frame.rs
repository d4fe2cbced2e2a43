//! Fuzz target `client_frame`: the body is `targets::client_frame` (tests/fuzz/targets/), also replayed on
//! stable by tests/fuzz_corpora.rs. Written by tests/fuzz/new-target.sh.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cocoon_fuzz::client_frame(data));
