//! Cost of checking attestation evidence: a cold DCAP verification of real TDX quotes, the same
//! quote answered from the verifier's cache (by quote hash), opening a signed record, and an
//! AMD SEV-SNP report (the real Milan one) cold (VCEK chain + report) and with its verified VCEK
//! reused.
//!
//! `cargo bench --bench attestation` prints one line per case: time per operation and rate.
//! Sections (`tdx`, `record`, `snp`, `gpu`) can be named to run only those:
//! `cargo bench --bench attestation -- snp gpu`.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on purpose

#[path = "../common/dcap_samples.rs"]
mod dcap_samples;
#[path = "../common/gpu_samples.rs"]
mod gpu_samples;
#[path = "../common/sev_samples.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod sev_samples;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cocoon::attestation::snp::{SnpPolicy, SnpProduct, VerifiedVcek, verify_report};
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

/// Whether the section `name` runs: all of them, or those named on the command line
/// (`cargo bench --bench attestation -- snp`).
fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    named.is_empty() || named.iter().any(|n| name.contains(n.as_str()))
}

fn main() {
    let budget = Duration::from_secs(2);
    if wanted("tdx") {
        tdx(budget);
    }
    if wanted("record") {
        record(budget);
    }
    if wanted("snp") {
        snp(budget);
    }
    if wanted("gpu") {
        gpu(budget);
    }
}

/// The real Milan report: the VCEK chain (three RSA-4096 signatures) and the report (ECDSA P-384)
/// verified at each call, then the report alone with the verified VCEK reused.
fn snp(budget: Duration) {
    const NOW: u64 = sev_samples::JAN_2025;
    let (report, vcek) = sev_samples::milan();
    let expected: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let allowed = report[0x90..0xC0].try_into().unwrap();
    let policy = SnpPolicy { allowed_measurements: vec![allowed], ..SnpPolicy::default() };
    bench("snp report cold (VCEK chain + report)", budget, || {
        let verified = VerifiedVcek::verify_pinned(black_box(&vcek), SnpProduct::Milan, NOW).unwrap();
        black_box(verify_report(black_box(&report), &verified, &expected, &policy, NOW).unwrap());
    });
    let verified = VerifiedVcek::verify_pinned(&vcek, SnpProduct::Milan, NOW).unwrap();
    bench("snp report cached (VerifiedVcek reused)", budget, || {
        black_box(verify_report(black_box(&report), &verified, &expected, &policy, NOW).unwrap());
    });
}

/// NVIDIA's real Hopper sample (`nv-local-gpu-verifier` 2.7.3, fetched into the cache): cold
/// (parse, nonce, four certificate signatures, report signature, FWID) and with the chain kept.
fn gpu(budget: Duration) {
    use cocoon::attestation::gpu::{chain_from_pem, nvidia_device_root, verify_chain, verify_evidence};
    let sample = gpu_samples::sample();
    let chain = chain_from_pem(&sample.chain_pem).unwrap();
    let root = nvidia_device_root().unwrap();
    let now = cocoon::attestation::intel_pki::unix_seconds(2025, 1, 1, 0, 0, 0).unwrap();
    bench("gpu verify_evidence cold (Hopper sample)", budget, || {
        black_box(verify_evidence(black_box(&sample.report), &chain, &sample.nonce, now, &root).unwrap());
    });
    let kept = verify_chain(&chain, &root, now).unwrap();
    bench("gpu verify_report, chain kept (Hopper sample)", budget, || {
        black_box(kept.verify_report(black_box(&sample.report), &sample.nonce, now).unwrap());
    });
    bench("gpu verify_chain alone (Hopper sample)", budget, || {
        black_box(verify_chain(black_box(&chain), &root, now).unwrap());
    });
}

fn tdx(budget: Duration) {
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
}

fn record(budget: Duration) {
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
