//! Fuzzer bytes drive the payment channel's differential harness (`tests/common/differential.rs`):
//! the real contract on `LocalChain` against the pure model, checked after every step.

#![no_main]

#[allow(dead_code)]
#[path = "../../common/chain.rs"]
mod chain;
#[path = "../../common/differential.rs"]
mod differential;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(differential::run(data));
});
