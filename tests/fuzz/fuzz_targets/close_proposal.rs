//! Fuzz target `close_proposal`: the body is `targets::close_proposal` (tests/fuzz/targets/), also replayed on
//! stable by tests/fuzz_corpora.rs. Written by tests/fuzz/new-target.sh.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cocoon_fuzz::close_proposal(data));
