//! The differential property test: seeded random interleavings (so a failure replays) of
//! vouchers, claims from any sender, top-ups, closes and clock jumps, run on the real contract in
//! `LocalChain` and on the pure model side by side (`common::differential`). The same harness is
//! the `channel_differential` fuzz target (`tests/fuzz`).

#![allow(clippy::unwrap_used)]

mod common;

use common::differential::{Stats, run};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sequences per run: each has up to 64 steps on both sides.
const SEQUENCES: u64 = 256;

#[tokio::test]
async fn random_interleavings_agree_with_the_model_and_never_lose_the_workers_money() {
    let mut total = Stats::default();
    for seed in 0..SEQUENCES {
        let mut rng = StdRng::seed_from_u64(seed);
        let bytes: Vec<u8> = (0..200).map(|_| rng.r#gen()).collect();
        let s = run(&bytes).await;
        total.steps += s.steps;
        total.paying += s.paying;
        total.front_runs += s.front_runs;
        total.collected += s.collected;
        total.closed |= s.closed;
    }
    eprintln!("total: {total:?}");
    // The sequences must reach the interesting states, not only refusals.
    assert!(total.steps >= 5_000, "only {} steps", total.steps);
    assert!(total.paying >= 500, "only {} paying steps", total.paying);
    assert!(total.front_runs >= 300, "only {} front-running claims", total.front_runs);
    assert!(total.collected >= 300, "the worker collected its best voucher only {} times", total.collected);
    assert!(total.closed);
}

#[tokio::test]
async fn empty_and_short_inputs_are_harmless() {
    for bytes in [&[][..], &[7], &[0, 0, 4], &[255; 9]] {
        run(bytes).await;
    }
}
