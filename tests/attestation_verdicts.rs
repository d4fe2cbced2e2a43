//! Whose fault is a refused TDX quote? Real Intel-signed quotes and collateral (the samples
//! shipped in the `dcap-qvl` crate), altered one way at a time: what the quote's bytes alone
//! decide is the sender's fault and rejects (the forwarder is blocked); what depends on this
//! node's collateral, clock or dcap-qvl version is ignored (no penalty), and is never cached as
//! a verdict against the quote.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Mutex;

use cocoon::attestation::collateral::CollateralSource;
use cocoon::attestation::judge::{Judgement, assess, judge, verdict};
use cocoon::attestation::known::KnownWorkers;
use cocoon::attestation::tdx::{Collateral, QuoteError, check_quote, collateral_window, verify_quote};
use cocoon::attestation::verifier::{INVALID_RESULT_TTL, VALID_RESULT_TTL, Verifier, VerifyError};
use cocoon_protocol::attestation::policy::AttestationPolicy;
use cocoon_protocol::attestation::record::{AttestationRecord, PaymentTerms, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;
use common::dcap_samples::{load, sample_dir};
use libp2p::identity::Keypair;

/// A time inside the collateral's window.
fn inside(c: &Collateral) -> u64 {
    collateral_window(c).unwrap().0 + 3600
}

/// A record signed by a fresh key whose evidence is `quote` (which binds someone else's keys).
fn record(quote: &[u8], now: u64) -> (SignedRecord, Keypair) {
    let key = Keypair::generate_ed25519();
    let record = AttestationRecord {
        peer_id: key.public().to_peer_id(),
        noise_static: [7; 32],
        payout_address: "UQ-worker".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Tdx { quote: quote.to_vec() },
        gpus: vec![],
        issued_at: now,
        expires_at: now + 3600,
    };
    (SignedRecord::sign(record, &key).unwrap(), key)
}

fn verifier() -> Verifier {
    Verifier::new(AttestationPolicy::default(), 16)
}

/// Flip one bit of the first occurrence of `part` in `quote`.
fn flip_inside(quote: &[u8], part: &[u8], at: usize) -> Vec<u8> {
    let start = quote.windows(part.len()).position(|w| w == part).expect("part of the quote");
    let mut altered = quote.to_vec();
    altered[start + at] ^= 0x01;
    altered
}

fn is_reject(j: &Judgement) -> bool {
    matches!(j, Judgement::Reject(_))
}

fn is_ignore(j: &Judgement) -> bool {
    matches!(j, Judgement::Ignore(_))
}

#[test]
fn genuine_quotes_pass_the_checks_that_need_no_collateral() {
    for name in ["tdx_quote", "tdx_quote_outdated", "tdx_quote_td15ex"] {
        check_quote(&load(name).0).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["tdx-quote.hex", "quote-from-tappd.hex"] {
        let text = std::fs::read_to_string(sample_dir().join(name)).unwrap();
        let quote = hex::decode(text.trim().trim_start_matches("0x")).unwrap();
        check_quote(&quote).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Each alteration only the sender could have made: the verdict is Reject whatever the
/// collateral, and judging needs none (the checks run before any fetch).
#[test]
fn what_the_quote_alone_decides_is_the_senders_fault() {
    let (quote, collateral) = load("tdx_quote");
    let now = inside(&collateral);
    let parsed = check_quote(&quote).unwrap();
    let auth = parsed.auth_data.clone().into_v3();
    let chain = dcap_qvl::intel::extract_cert_chain(&parsed).unwrap();
    let leaf_pem_line = {
        let pem = String::from_utf8_lossy(parsed.raw_cert_chain().unwrap()).into_owned();
        pem.lines().nth(5).unwrap().to_owned() // a line inside the PCK certificate
    };
    assert!(!chain.is_empty());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TD report altered", flip_inside(&quote, &quote[48..48 + 584], 200)),
        ("QE report altered", flip_inside(&quote, &auth.qe_report, 100)),
        ("attestation key replaced", flip_inside(&quote, &auth.ecdsa_attestation_key, 3)),
        ("PCK certificate altered", {
            let mut q = quote.clone();
            let at = q.windows(leaf_pem_line.len()).position(|w| w == leaf_pem_line.as_bytes()).unwrap();
            q[at + 10] = if q[at + 10] == b'A' { b'B' } else { b'A' };
            q
        }),
        ("truncated", quote[..quote.len() / 2].to_vec()),
        ("not a quote", b"garbage that is longer than a quote header, to get past the length".to_vec()),
    ];
    for (what, bad) in cases {
        let err = check_quote(&bad).unwrap_err();
        assert!(err.is_senders_fault(), "{what}: {err:?}");
        let (signed, _) = record(&bad, now);
        // Under the very collateral that verifies the original quote.
        let judged = assess(signed, &verifier(), Some(&collateral), now);
        assert!(is_reject(&judged), "{what}: {judged:?}");
        println!("{what}: {err}");
    }
    // An SGX quote where TDX evidence is due.
    let (sgx, sgx_collateral) = load("sgx_quote");
    assert_eq!(check_quote(&sgx).unwrap_err(), QuoteError::NotTdx);
    let (signed, _) = record(&sgx, now);
    assert!(is_reject(&assess(signed, &verifier(), Some(&sgx_collateral), inside(&sgx_collateral))));
}

/// Verdicts of this node's collateral, clock or dcap-qvl version: Ignore, never Reject.
/// (Revoked TCB levels and QE SVNs below Intel's minimum cannot be made with real collateral
/// without Intel's key; dcap-qvl's text for them is classified in `tdx.rs`'s unit tests.)
#[test]
fn what_depends_on_the_verifiers_collateral_or_version_is_ignored() {
    let (quote, collateral) = load("tdx_quote");
    let now = inside(&collateral);

    // A platform whose TCB Intel's collateral rates below every level.
    let (old, old_collateral) = load("tdx_quote_outdated");
    let old_now = inside(&old_collateral);
    let err = verify_quote(&old, &old_collateral, old_now).unwrap_err();
    assert!(matches!(err, QuoteError::Tcb(_)), "{err:?}");
    let (signed, _) = record(&old, old_now);
    assert!(is_ignore(&assess(signed, &verifier(), Some(&old_collateral), old_now)));

    // Collateral past its nextUpdate (this node's clock, or its PCCS's freshness).
    let (_, until) = collateral_window(&collateral).unwrap();
    let (signed, _) = record(&quote, until + 1);
    let judged = assess(signed, &verifier(), Some(&collateral), until + 1);
    assert!(matches!(&judged, Judgement::Ignore(r) if r.contains("collateral is not valid")), "{judged:?}");

    // Collateral of another platform (the outdated sample's FMSPC), at a time it is valid.
    let (signed, _) = record(&quote, old_now);
    let judged = assess(signed, &verifier(), Some(&old_collateral), old_now);
    assert!(is_ignore(&judged), "{judged:?}");

    // A quote version this build does not know (the header names version 6).
    let mut v6 = quote.clone();
    v6[0] = 6;
    assert!(matches!(check_quote(&v6), Err(QuoteError::Unsupported(_))));
    let (signed, _) = record(&v6, now);
    assert!(is_ignore(&assess(signed, &verifier(), Some(&collateral), now)));
}

/// A bad signature on the *collateral* is the collateral's problem: Ignore, not cached against
/// the quote, and the same quote verifies as soon as good collateral is at hand. (It used to be
/// taken for a forged quote, rejected, and cached as forged for good.)
#[test]
fn a_bad_collateral_signature_is_not_held_against_the_quote() {
    let (quote, collateral) = load("tdx_quote");
    let now = inside(&collateral);
    let mut bad = collateral.clone();
    bad.tcb_info_signature[10] ^= 0x01;
    let mut bad_qe = collateral.clone();
    bad_qe.qe_identity = bad_qe.qe_identity.replacen("TD_QE", "TD_QF", 1);

    let verifier = verifier();
    let evidence = TeeEvidence::Tdx { quote: quote.clone() };
    for broken in [&bad, &bad_qe] {
        let err = verifier.claims(&evidence, Some(broken), now).unwrap_err();
        assert!(matches!(&err, VerifyError::Quote(QuoteError::Collateral(_))), "{err:?}");
        assert!(is_ignore(&verdict(err)));
        assert!(!verifier.has_result(&quote, now), "a collateral failure was cached against the quote");
    }
    assert!(verifier.claims(&evidence, Some(&collateral), now + 1).is_ok());

    // Judged as a record: Ignore with the bad collateral, then (good collateral) the binding
    // check is reached, which this sample fails: the sender's fault.
    let (signed, _) = record(&quote, now);
    assert!(is_ignore(&assess(
        signed.clone(),
        &Verifier::new(AttestationPolicy::default(), 4),
        Some(&bad),
        now
    )));
    let judged = assess(signed, &Verifier::new(AttestationPolicy::default(), 4), Some(&collateral), now);
    assert!(matches!(&judged, Judgement::Reject(r) if r.contains("report data")), "{judged:?}");
}

/// Cached results expire: a verified quote after [`VALID_RESULT_TTL`], a verdict against a
/// quote after [`INVALID_RESULT_TTL`].
#[test]
fn cached_verdicts_expire() {
    let (quote, collateral) = load("tdx_quote");
    let now = inside(&collateral);
    let verifier = verifier();
    let evidence = TeeEvidence::Tdx { quote: quote.clone() };
    verifier.claims(&evidence, Some(&collateral), now).unwrap();
    assert!(verifier.has_result(&quote, now + VALID_RESULT_TTL - 1));
    assert!(!verifier.has_result(&quote, now + VALID_RESULT_TTL));

    let forged = flip_inside(&quote, &quote[48..100], 7);
    assert!(verifier.precheck(&forged, now).is_err());
    assert!(verifier.has_result(&forged, now + INVALID_RESULT_TTL - 1), "a forged quote is checked once");
    assert!(!verifier.has_result(&forged, now + INVALID_RESULT_TTL), "and the verdict expires");
    // Checked again after expiry, with the same outcome.
    assert!(matches!(
        verifier.precheck(&forged, now + INVALID_RESULT_TTL),
        Err(VerifyError::Quote(QuoteError::Signature(_)))
    ));
}

/// Through [`judge`], with no collateral at hand: a forged quote is rejected without a fetch, a
/// quote of an unknown version is ignored (it used to be rejected as malformed, blocking the
/// peer that forwarded it).
#[tokio::test]
async fn judging_without_collateral_rejects_forgeries_and_ignores_unknown_versions() {
    let (quote, collateral) = load("tdx_quote");
    let now = inside(&collateral);
    let offline = CollateralSource::offline();
    let verifier = verifier();
    let known = Mutex::new(KnownWorkers::new(8));

    let mut v6 = quote.clone();
    v6[0] = 6;
    let (signed, key) = record(&v6, now);
    let j = judge(&signed.encode(), Some(key.public().to_peer_id()), &known, &verifier, &offline, now).await;
    assert!(matches!(&j, Judgement::Ignore(r) if r.contains("unsupported")), "{j:?}");

    let forged = flip_inside(&quote, &quote[48..100], 7);
    let (signed, key) = record(&forged, now);
    let j = judge(&signed.encode(), Some(key.public().to_peer_id()), &known, &verifier, &offline, now).await;
    assert!(matches!(&j, Judgement::Reject(r) if r.contains("signature")), "{j:?}");

    // The genuine quote: nothing to verify it with yet, which is no one's fault.
    let (signed, key) = record(&quote, now);
    let j = judge(&signed.encode(), Some(key.public().to_peer_id()), &known, &verifier, &offline, now).await;
    assert!(matches!(&j, Judgement::Ignore(r) if r.contains("cannot verify")), "{j:?}");
}
