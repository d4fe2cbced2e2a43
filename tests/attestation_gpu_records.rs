//! Records that carry CPU and GPU evidence, judged whole: real Intel-signed TDX quotes, the real
//! AMD-signed Milan SEV-SNP report and NVIDIA's real Hopper evidence (all located at test time,
//! never copied here), and SIMULATED CPU and GPU evidence. A GPU whose report answers another
//! record's nonce (another Noise key) makes the record the sender's fault, whatever the CPU
//! evidence; SEV-SNP evidence verifies inside a record with the VCEK it carries.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Mutex;

use cocoon::attestation::collateral::CollateralSource;
use cocoon::attestation::gpu::chain_from_pem;
use cocoon::attestation::judge::{Judgement, assess, judge_cached};
use cocoon::attestation::known::KnownWorkers;
use cocoon::attestation::snp::SnpPolicy;
use cocoon::attestation::tdx::collateral_window;
use cocoon::attestation::verifier::{Inputs, Verifier, VerifyError};
use cocoon_protocol::attestation::binding::{expected_gpu_nonce, expected_report_data};
use cocoon_protocol::attestation::policy::{AttestationPolicy, CpuKind, Rejection};
use cocoon_protocol::attestation::record::{
    AttestationRecord, GpuArchitecture, GpuEvidence, NvidiaGpuEvidence, PaymentTerms, SimulatedEvidence,
    SimulatedGpuEvidence, SnpEvidence, TeeEvidence,
};
use cocoon_protocol::attestation::signed::SignedRecord;
use common::dcap_samples::load;
use common::gpu_samples::sample;
use common::sev_samples::{JAN_2025, milan, turin_vcek};
use libp2p::identity::{Keypair, ed25519};

fn record(key: &Keypair, evidence: TeeEvidence, now: u64) -> AttestationRecord {
    AttestationRecord {
        peer_id: key.public().to_peer_id(),
        noise_static: [7; 32],
        payout_address: "UQ-worker".into(),
        terms: PaymentTerms::Free,
        offers: vec![],
        evidence,
        gpus: vec![],
        issued_at: now,
        expires_at: now + 3600,
    }
}

/// NVIDIA's real Hopper evidence: made for NVIDIA's sample nonce, so for no record of ours.
fn real_gpu() -> GpuEvidence {
    let s = sample();
    GpuEvidence::Nvidia(Box::new(NvidiaGpuEvidence {
        architecture: GpuArchitecture::Hopper,
        report: s.report.clone(),
        chain: chain_from_pem(&s.chain_pem).unwrap(),
    }))
}

/// A simulated GPU answering the nonce of `record` with its Noise key changed.
fn gpu_for_another_noise_key(simulator: &ed25519::Keypair, record: &AttestationRecord) -> GpuEvidence {
    let mut other = record.clone();
    other.noise_static[0] ^= 0xFF;
    let sim =
        SimulatedGpuEvidence::create(simulator, GpuArchitecture::Hopper, [1; 32], expected_gpu_nonce(&other));
    GpuEvidence::Simulated(Box::new(sim))
}

fn dev_verifier() -> Verifier {
    Verifier::new(AttestationPolicy { allow_simulated: true, ..AttestationPolicy::default() }, 16)
}

fn reject_reason(judged: Judgement) -> String {
    match judged {
        Judgement::Reject(reason) => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn a_tdx_record_whose_gpu_answers_another_nonce_is_rejected() {
    let (quote, collateral) = load("tdx_quote");
    let now = collateral_window(&collateral).unwrap().0 + 3600;
    let key = Keypair::generate_ed25519();
    let simulator = ed25519::Keypair::generate();
    let mut r = record(&key, TeeEvidence::Tdx { quote }, now);
    for gpu in [real_gpu(), gpu_for_another_noise_key(&simulator, &r)] {
        r.gpus = vec![gpu];
        let signed = SignedRecord::sign(r.clone(), &key).unwrap();
        let reason = reject_reason(assess(signed, &dev_verifier(), Some(&collateral), now));
        assert!(reason.contains("GPU 0") && reason.contains("nonce"), "{reason}");
    }
    // The quote itself verified: its claims are there, the GPU alone refused the record.
    let claims = dev_verifier().claims(&r.evidence, Some(&collateral), now).unwrap();
    assert_eq!(claims.kind, CpuKind::Tdx);
}

#[test]
fn an_sev_snp_record_verifies_its_report_with_the_vcek_it_carries() {
    let key = Keypair::generate_ed25519();
    let (report, vcek) = milan();
    let snp = SnpEvidence { report, vcek };
    let mut r = record(&key, TeeEvidence::SevSnp(Box::new(snp.clone())), JAN_2025);
    let verifier = dev_verifier();
    // The default SEV-SNP policy allows no launch measurement.
    let refused = verifier.cpu_claims(&r.evidence, Inputs::default(), JAN_2025).unwrap_err();
    assert!(matches!(refused, VerifyError::Snp(_)) && !refused.is_senders_fault(), "{refused:?}");
    let measurement = { <[u8; 48]>::try_from(&snp.report[0x90..0xC0]).unwrap() };
    let allowing = || {
        let snp = SnpPolicy { allowed_measurements: vec![measurement], ..SnpPolicy::default() };
        dev_verifier().with_snp_policy(snp)
    };
    let claims = allowing().cpu_claims(&r.evidence, Inputs::default(), JAN_2025).unwrap();
    assert_eq!((claims.kind, claims.mrtd), (CpuKind::SevSnp, measurement));
    // The report binds AMD's sample data, not this record's keys: the sender's fault.
    assert_ne!(claims.report_data, expected_report_data(&r));
    let signed = SignedRecord::sign(r.clone(), &key).unwrap();
    let reason = reject_reason(assess(signed, &allowing(), None, JAN_2025));
    assert!(reason.contains("report data"), "{reason}");
    // With a GPU that answers another record's nonce, the GPU is named.
    r.gpus = vec![gpu_for_another_noise_key(&ed25519::Keypair::generate(), &r)];
    let signed = SignedRecord::sign(r.clone(), &key).unwrap();
    let reason = reject_reason(assess(signed, &allowing(), None, JAN_2025));
    assert!(reason.contains("GPU 0") && reason.contains("nonce"), "{reason}");
    // Another chip's VCEK is the sender's fault; no VCEK at all waits for one (ignored).
    let turin = TeeEvidence::SevSnp(Box::new(SnpEvidence { vcek: turin_vcek(), ..snp.clone() }));
    let err = allowing().cpu_claims(&turin, Inputs::default(), JAN_2025).unwrap_err();
    assert!(err.is_senders_fault(), "{err:?}");
    let bare = TeeEvidence::SevSnp(Box::new(SnpEvidence { vcek: vec![], ..snp }));
    assert_eq!(allowing().cpu_claims(&bare, Inputs::default(), JAN_2025), Err(VerifyError::NoVcek));
}

#[test]
fn simulated_cpu_and_gpu_evidence_bind_the_record_and_nothing_else() {
    let key = Keypair::generate_ed25519();
    let simulator = ed25519::Keypair::generate();
    let now = 1_800_000_000;
    let mut r = record(&key, TeeEvidence::Tdx { quote: vec![] }, now);
    r.evidence =
        TeeEvidence::Simulated(Box::new(SimulatedEvidence::create(&simulator, expected_report_data(&r))));
    let own =
        SimulatedGpuEvidence::create(&simulator, GpuArchitecture::Hopper, [2; 32], expected_gpu_nonce(&r));
    r.gpus = vec![GpuEvidence::Simulated(Box::new(own.clone()))];
    let judge = |r: &AttestationRecord, verifier: &Verifier| {
        let bytes = SignedRecord::sign(r.clone(), &key).unwrap().encode();
        let known = Mutex::new(KnownWorkers::new(4));
        judge_cached(
            &bytes,
            Some(key.public().to_peer_id()),
            &known,
            verifier,
            &CollateralSource::offline(),
            now,
        )
    };
    assert!(matches!(judge(&r, &dev_verifier()), Judgement::Accept(_)));
    // Simulated GPUs are refused with simulated CPUs by a strict node, without penalty.
    assert!(matches!(judge(&r, &Verifier::new(AttestationPolicy::default(), 4)), Judgement::IgnoreSimulated));

    let mut other = r.clone();
    other.gpus.push(gpu_for_another_noise_key(&simulator, &r));
    assert!(reject_reason(judge(&other, &dev_verifier())).contains("GPU 1"));
    // The same GPU twice.
    let mut twice = r.clone();
    twice.gpus.push(GpuEvidence::Simulated(Box::new(own.clone())));
    assert!(reject_reason(judge(&twice, &dev_verifier())).contains("listed twice"));
    // NVIDIA's real evidence made for NVIDIA's nonce.
    let mut real = r.clone();
    real.gpus = vec![real_gpu()];
    let verifier = dev_verifier();
    let err = verifier.verify_record(&real, None, now + 1).unwrap_err();
    assert_eq!(err, VerifyError::Policy(Rejection::GpuNonceMismatch { index: 0 }));
    // A forged simulator signature on a GPU.
    let mut forged = own;
    forged.device[0] ^= 1;
    let mut bad = r.clone();
    bad.gpus = vec![GpuEvidence::Simulated(Box::new(forged))];
    assert!(reject_reason(judge(&bad, &dev_verifier())).contains("signature"));
}
