//! Cost of checking attestation evidence: a cold DCAP verification of real TDX quotes, the same
//! quote answered from the verifier's cache (by quote hash), and opening a signed record.
//!
//! `cargo bench --bench attestation` prints one line per case: time per operation and rate.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on purpose

#[path = "../common/dcap_samples.rs"]
mod dcap_samples;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cocoon::attestation::tdx::{collateral_window, verify_quote};
use cocoon::attestation::verifier::Verifier;
use cocoon_protocol::attestation::policy::AttestationPolicy;
use cocoon_protocol::attestation::record::{AttestationRecord, PaymentTerms, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;
use libp2p::identity::Keypair;

/// Run `f` repeatedly for about `budget` (after a short warm-up) and print the mean.
fn bench(name: &str, budget: Duration, mut f: impl FnMut()) {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < budget {
        f();
        iterations += 1;
    }
    let per = start.elapsed() / u32::try_from(iterations).unwrap_or(u32::MAX);
    let rate = 1.0 / per.as_secs_f64();
    println!(
        "{name:<44} {:>12.3} µs/op {:>12.0} op/s  ({iterations} iterations)",
        per.as_secs_f64() * 1e6,
        rate
    );
}

fn main() {
    let budget = Duration::from_secs(2);
    for sample in ["tdx_quote", "tdx_quote_td15ex"] {
        let (quote, collateral) = dcap_samples::load(sample);
        let (from, _) = collateral_window(&collateral).unwrap();
        let now = from + 3600;
        bench(&format!("verify_quote cold ({sample})"), budget, || {
            black_box(verify_quote(black_box(&quote), &collateral, now).unwrap());
        });
        let verifier = Verifier::new(AttestationPolicy::default(), 1024);
        let evidence = TeeEvidence::Tdx { quote: quote.clone() };
        verifier.claims(&evidence, Some(&collateral), now).unwrap();
        bench(&format!("verifier cached by quote hash ({sample})"), budget, || {
            black_box(verifier.claims(black_box(&evidence), None, now).unwrap());
        });
    }

    let key = Keypair::generate_ed25519();
    let (quote, _) = dcap_samples::load("tdx_quote");
    let record = AttestationRecord {
        peer_id: key.public().to_peer_id(),
        noise_static: [1; 32],
        payout_address: "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Tdx { quote },
        gpus: vec![],
        issued_at: 1,
        expires_at: 2,
    };
    let bytes = SignedRecord::sign(record, &key).unwrap().encode();
    bench(&format!("open signed record ({} bytes)", bytes.len()), budget, || {
        black_box(SignedRecord::open(black_box(&bytes)).unwrap());
    });
}
