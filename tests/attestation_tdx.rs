//! Real Intel-signed TDX quotes (the samples shipped in the `dcap-qvl` crate, found through
//! `cargo metadata`, never copied) verified with DCAP and judged by the attestation policy. Every
//! failure mode has its own asserted reason.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use cocoon::attestation::tdx::{Collateral, QuoteError, collateral_window, verify_quote};
use cocoon_protocol::attestation::binding::expected_report_data;
use cocoon_protocol::attestation::policy::{
    AllowedImage, AttestationPolicy, EvidenceClaims, Rejection, check,
};
use cocoon_protocol::attestation::record::{AttestationRecord, PaymentTerms, TeeEvidence};
use common::dcap_samples::{load, sample_dir};
use libp2p::PeerId;

/// (from, until) validity window of the collateral.
fn window(c: &Collateral) -> (u64, u64) {
    collateral_window(c).expect("collateral has a validity window")
}

/// A record whose expected report data the sample quote happens to carry cannot be built (the
/// samples bind someone else's data), so binding is tested both ways: against the quote's own
/// report data (accepted) and against a real record (mismatch).
fn policy_for(claims: &EvidenceClaims) -> AttestationPolicy {
    AttestationPolicy {
        allowed_images: vec![AllowedImage {
            name: "sample".into(),
            mrtd: claims.mrtd,
            rtmr: Some(claims.rtmr),
        }],
        accepted_tcb_statuses: vec!["UpToDate".into(), "SWHardeningNeeded".into()],
        ..AttestationPolicy::default()
    }
}

#[test]
fn v4_and_v5_sample_quotes_verify_inside_their_collateral_window() {
    for (name, mrtd_prefix) in [("tdx_quote", "91eb2b44"), ("tdx_quote_td15ex", "")] {
        let (quote, collateral) = load(name);
        let (from, until) = window(&collateral);
        let claims = verify_quote(&quote, &collateral, from + 3600).unwrap();
        assert!(!claims.simulated());
        let mrtd = hex::encode(claims.mrtd);
        assert!(mrtd.starts_with(mrtd_prefix), "{name}: MRTD {mrtd}");
        println!("{name}: TCB {} MRTD {mrtd} valid {from}..{until}", claims.tcb_status);
    }
}

#[test]
fn a_flipped_byte_in_the_quote_body_breaks_the_signature() {
    let (mut quote, collateral) = load("tdx_quote");
    let (from, _) = window(&collateral);
    quote[48 + 200] ^= 0x01; // inside the TD report (the header is 48 bytes)
    assert!(matches!(verify_quote(&quote, &collateral, from + 3600), Err(QuoteError::Signature(_))));
}

#[test]
fn verification_after_the_collateral_expires_is_refused() {
    let (quote, collateral) = load("tdx_quote");
    let (_, until) = window(&collateral);
    let err = verify_quote(&quote, &collateral, until + 1).unwrap_err();
    assert!(matches!(err, QuoteError::CollateralTime(_)), "{err}");
}

#[test]
fn report_data_of_another_record_is_a_mismatch() {
    let (quote, collateral) = load("tdx_quote");
    let (from, _) = window(&collateral);
    let now = from + 3600;
    let claims = verify_quote(&quote, &collateral, now).unwrap();
    let record = AttestationRecord {
        peer_id: PeerId::random(),
        noise_static: [1; 32],
        payout_address: "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Tdx { quote: quote.clone() },
        gpus: vec![],
        issued_at: now,
        expires_at: now + 3600,
    };
    assert_ne!(expected_report_data(&record), claims.report_data);
    assert_eq!(check(&policy_for(&claims), &record, &claims, &[], now), Err(Rejection::ReportDataMismatch));
}

#[test]
fn disallowed_mrtd_and_outdated_tcb_are_refused_by_policy() {
    let (quote, collateral) = load("tdx_quote");
    let (from, _) = window(&collateral);
    let now = from + 3600;
    let claims = verify_quote(&quote, &collateral, now).unwrap();
    let (record, rebound) = rebind(&claims, now);
    assert_eq!(
        check(&policy_for(&claims), &record, &rebound, &[], now),
        Ok(()),
        "control: the rebound quote passes"
    );
    let mut other_image = policy_for(&claims);
    other_image.allowed_images[0].mrtd[0] ^= 0xff;
    assert!(matches!(check(&other_image, &record, &rebound, &[], now), Err(Rejection::MrtdNotAllowed(_))));

    // The outdated sample's platform TCB is below every level Intel lists: DCAP itself refuses
    // it (no TCB override is compiled in), whatever the policy.
    let (old_quote, old_collateral) = load("tdx_quote_outdated");
    let (old_from, _) = window(&old_collateral);
    let err = verify_quote(&old_quote, &old_collateral, old_from + 3600).unwrap_err();
    assert!(matches!(err, QuoteError::Tcb(_)), "{err}");
    assert!(!err.is_senders_fault(), "a TCB rating is the collateral's verdict, not the sender's fault");
    println!("outdated sample: {err}");

    // A TCB status the policy does not accept (the sample is UpToDate; require something else).
    let picky =
        AttestationPolicy { accepted_tcb_statuses: vec!["SWHardeningNeeded".into()], ..policy_for(&claims) };
    assert_eq!(check(&picky, &record, &rebound, &[], now), Err(Rejection::TcbStatus("UpToDate".into())));
}

/// A fresh record and a copy of `claims` rebound to it (report data replaced by the record's
/// binding), so the policy's later rules are exercised on the real measurements and TCB status.
fn rebind(claims: &EvidenceClaims, now: u64) -> (AttestationRecord, EvidenceClaims) {
    let record = AttestationRecord {
        peer_id: PeerId::random(),
        noise_static: [2; 32],
        payout_address: "UQ-test".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Tdx { quote: vec![] },
        gpus: vec![],
        issued_at: now,
        expires_at: now + 3600,
    };
    let mut rebound = claims.clone();
    rebound.report_data = expected_report_data(&record);
    (record, rebound)
}

#[test]
fn verifier_caches_by_quote_hash_until_the_collateral_expires() {
    use cocoon::attestation::verifier::{Verifier, VerifyError};
    let (quote, collateral) = load("tdx_quote");
    let (from, until) = window(&collateral);
    let verifier = Verifier::new(AttestationPolicy::default(), 16);
    let evidence = TeeEvidence::Tdx { quote: quote.clone() };

    let first = verifier.claims(&evidence, Some(&collateral), from + 10).unwrap();
    assert_eq!(verifier.cached(), 1);
    // Cached: no collateral needed any more while it is valid.
    assert_eq!(verifier.claims(&evidence, None, from + 20).unwrap(), first);
    // At the collateral's end the cached result is no longer used.
    assert_eq!(verifier.claims(&evidence, None, until), Err(VerifyError::NoCollateral));

    // A forged quote is remembered as forged, for an hour.
    let mut forged = quote;
    forged[300] ^= 1;
    let forged = TeeEvidence::Tdx { quote: forged };
    assert!(matches!(
        verifier.claims(&forged, Some(&collateral), from + 10),
        Err(VerifyError::Quote(QuoteError::Signature(_)))
    ));
    assert!(matches!(
        verifier.claims(&forged, None, from + 10),
        Err(VerifyError::Quote(QuoteError::Signature(_)))
    ));
    assert_eq!(verifier.cached(), 2);
}

#[test]
fn attest_verify_cli_prints_measurements_and_exits_by_verdict() {
    let dir = sample_dir();
    let (quote, collateral) = (dir.join("tdx_quote"), dir.join("tdx_quote_collateral.json"));
    let (from, until) = window(&load("tdx_quote").1);
    let q = quote.to_str().unwrap();
    let c = collateral.to_str().unwrap();
    let at = (from + 3600).to_string();

    let (ok, out, err) =
        common::run(&["attest", "verify", "--quote", q, "--collateral", c, "--at", &at], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("tcb status:   UpToDate") && out.contains("mrtd:         91eb2b44"), "{out}");
    assert!(out.contains("rtmr3:") && out.contains("report data:"), "{out}");
    let image_hash = out.lines().find_map(|l| l.strip_prefix("image hash:")).unwrap().trim().to_owned();

    let late = (until + 1).to_string();
    let (ok, _, err) =
        common::run(&["attest", "verify", "--quote", q, "--collateral", c, "--at", &late], &[]);
    assert!(!ok && err.contains("REJECTED") && err.contains("collateral is not valid"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, format!("[[images]]\nname = \"other\"\nmrtd = \"{}\"\n", "ab".repeat(48)))
        .unwrap();
    let p = policy.to_str().unwrap();
    let (ok, _, err) =
        common::run(&["attest", "verify", "--quote", q, "--collateral", c, "--at", &at, "--policy", p], &[]);
    assert!(!ok && err.contains("REJECTED by policy") && err.contains("is not an allowed image"), "{err}");

    // The same image allowed by its image hash alone.
    std::fs::write(&policy, format!("accepted_tcb_statuses = [\"UpToDate\"]\n[[images]]\nname = \"sample\"\nimage_hash = \"{image_hash}\"\n")).unwrap();
    let (ok, out, err) =
        common::run(&["attest", "verify", "--quote", q, "--collateral", c, "--at", &at, "--policy", p], &[]);
    assert!(ok && out.contains("ACCEPTED by policy"), "{out}{err}");

    // No collateral file: it is fetched from the PCCS, here one that is not there.
    let (ok, _, err) = common::run(&["attest", "verify", "--quote", q, "--pccs", "http://127.0.0.1:9"], &[]);
    assert!(!ok && err.contains("cannot fetch collateral for tdx/"), "{err}");
}

#[test]
fn attest_quote_outside_a_td_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.bin");
    let missing = tmp.path().join("no-configfs");
    let (ok, _, err) = common::run(
        &["attest", "quote", "--out", out.to_str().unwrap(), "--configfs", missing.to_str().unwrap()],
        &[],
    );
    assert!(!ok && err.contains("configfs-tsm is not available"), "{err}");
    assert!(!out.exists());
}
