//! The verdict on one attestation record received from a peer (gossip, a direct fetch, or the
//! store on restart).
//!
//! - **Accept** — a valid record, newer than the one held for its worker: kept and forwarded.
//! - **Ignore** — not forwarded, no penalty: a replay or duplicate; a record this node's *policy*
//!   refuses (simulated evidence, unknown image, TCB status: other nodes may accept it); an
//!   expired record; and every verdict that depends on this node's collateral or software rather
//!   than on the record: no collateral yet, stale or invalid collateral, a platform or QE that the
//!   collateral rates out of date or revoked, a quote format this build does not support.
//! - **Reject** — provably the sender's fault, whatever the verifier's collateral, clock or
//!   version: malformed, bad record signature, published by someone other than its worker,
//!   report data or a GPU nonce that does not bind its keys, a GPU listed twice, a quote that does
//!   not decode or whose own signatures do not verify up to Intel's root, forged or inconsistent
//!   SEV-SNP or GPU evidence (`VerifyError::is_senders_fault`), a forged simulator signature.
//!   Not forwarded, and the peer that sent it is blocked (fatal).
//!
//! [`verdict`] is the one place verification errors become verdicts. Judging is split so the
//! cheap checks ([`admit`], then the quote's own signatures) run before any collateral is
//! fetched, and the evidence checks ([`assess`]) are synchronous and testable at any time.

use std::sync::Mutex;

use cocoon_protocol::attestation::policy::Rejection;
use cocoon_protocol::attestation::record::TeeEvidence;
use cocoon_protocol::attestation::signed::SignedRecord;
use libp2p::PeerId;

use super::collateral::CollateralSource;
use super::kds::KdsError;
use super::known::KnownWorkers;
use super::tdx::Collateral;
use super::verifier::{Inputs, Verifier, VerifyError};

/// Longest one record's KDS fetch, or its GPUs' online checks (up to 8 GPUs, several requests
/// each, every request bounded by its service's timeout), may hold the judge: records wait
/// behind it.
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A verdict on one record.
#[derive(Debug)]
pub enum Judgement {
    /// Valid and new.
    Accept(Box<SignedRecord>),
    /// Drop without penalty.
    Ignore(String),
    /// Drop without penalty: SIMULATED evidence, which this node's policy refuses (a development
    /// worker, e.g. one of `cocoon devnet`'s). Kept apart so the node can tell its operator why
    /// such workers are never listed.
    IgnoreSimulated,
    /// Invalid: drop and block the sender.
    Reject(String),
}

/// The cheap checks: decodes, signed by its worker, published by its worker, newer than the
/// record held.
pub fn admit(
    data: &[u8],
    author: Option<PeerId>,
    known: &Mutex<KnownWorkers>,
) -> Result<SignedRecord, Judgement> {
    let signed = SignedRecord::open(data).map_err(|e| Judgement::Reject(e.to_string()))?;
    let record = signed.record();
    if author != Some(record.peer_id) {
        return Err(Judgement::Reject(format!("record of {} published by {author:?}", record.peer_id)));
    }
    let newer = known.lock().map(|k| k.is_newer(&record.peer_id, record.issued_at)).unwrap_or(false);
    if !newer {
        return Err(Judgement::Ignore("not newer than the record held (replay or duplicate)".into()));
    }
    Ok(signed)
}

/// The evidence and policy checks at `now`, with `collateral` for a TDX quote whose result is
/// not cached.
pub fn assess(
    signed: SignedRecord,
    verifier: &Verifier,
    collateral: Option<&Collateral>,
    now: u64,
) -> Judgement {
    assess_with(signed, verifier, Inputs::collateral(collateral), now)
}

/// [`assess`] with everything verification may need ([`Inputs`]).
pub fn assess_with(signed: SignedRecord, verifier: &Verifier, inputs: Inputs<'_>, now: u64) -> Judgement {
    match verifier.verify_record_with(signed.record(), inputs, now) {
        Ok(_) => Judgement::Accept(Box::new(signed)),
        Err(e) => verdict(e),
    }
}

/// The verdict on evidence that did not pass: [`Judgement::Reject`] (a penalty for the sender)
/// only for what is the record's own fault under any collateral, policy and verifier version
/// ([`VerifyError::is_senders_fault`]).
pub fn verdict(error: VerifyError) -> Judgement {
    if matches!(error, VerifyError::Policy(Rejection::SimulatedNotAllowed)) {
        return Judgement::IgnoreSimulated;
    }
    if error.is_senders_fault() {
        Judgement::Reject(error.to_string())
    } else {
        Judgement::Ignore(error.to_string())
    }
}

/// Judge `data` published by `author` at `now`, fetching collateral if a TDX quote needs it.
pub async fn judge(
    data: &[u8],
    author: Option<PeerId>,
    known: &Mutex<KnownWorkers>,
    verifier: &Verifier,
    collateral: &CollateralSource,
    now: u64,
) -> Judgement {
    let signed = match admit(data, author, known) {
        Ok(signed) => signed,
        Err(judgement) => return judgement,
    };
    let fetched = match &signed.record().evidence {
        TeeEvidence::Tdx { quote } => {
            // The quote's own signatures first: a forged quote must not cost a collateral fetch.
            if let Err(e) = verifier.precheck(quote, now) {
                return verdict(e);
            }
            if verifier.has_result(quote, now) {
                None
            } else {
                match collateral.for_quote(quote, now).await {
                    Ok(c) => Some(c),
                    Err(e) => return Judgement::Ignore(format!("cannot verify the quote yet: {e}")),
                }
            }
        }
        TeeEvidence::SevSnp(snp) if snp.vcek.is_empty() => {
            // The chip's VCEK from AMD's KDS (or the cache) before the report can be checked.
            match verifier
                .vceks()
                .map(|v| tokio::time::timeout(FETCH_DEADLINE, v.for_report(&snp.report, now)))
            {
                Some(fetch) => match fetch.await {
                    Ok(Ok(_)) => None,
                    Ok(Err(KdsError::Report(e))) if e.is_senders_fault() => return verdict(e.into()),
                    Ok(Err(e)) => {
                        return Judgement::Ignore(format!("cannot verify the SEV-SNP report yet: {e}"));
                    }
                    Err(_) => return Judgement::Ignore("no VCEK from AMD's KDS in time".into()),
                },
                None => None,
            }
        }
        TeeEvidence::Simulated(_) | TeeEvidence::SevSnp(_) => None,
    };
    match (assess(signed, verifier, fetched.as_deref(), now), verifier.gpu_online()) {
        (Judgement::Accept(signed), Some(online)) => {
            match tokio::time::timeout(FETCH_DEADLINE, online.check(signed.record(), now)).await {
                Ok(Ok(())) => Judgement::Accept(signed),
                Ok(Err(why)) => {
                    Judgement::Ignore(format!("GPU evidence refused by NVIDIA's services: {why}"))
                }
                Err(_) => Judgement::Ignore("NVIDIA's services did not answer in time".into()),
            }
        }
        (judged, _) => judged,
    }
}

/// [`judge`] without fetching: collateral only from what `collateral` holds already.
pub fn judge_cached(
    data: &[u8],
    author: Option<PeerId>,
    known: &Mutex<KnownWorkers>,
    verifier: &Verifier,
    collateral: &CollateralSource,
    now: u64,
) -> Judgement {
    let signed = match admit(data, author, known) {
        Ok(signed) => signed,
        Err(judgement) => return judgement,
    };
    let held = match &signed.record().evidence {
        TeeEvidence::Tdx { quote } => collateral.cached(quote, now),
        TeeEvidence::Simulated(_) | TeeEvidence::SevSnp(_) => None,
    };
    assess(signed, verifier, held.as_deref(), now)
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::attestation::policy::AttestationPolicy;
    use libp2p::identity::Keypair;

    use super::*;
    use crate::attestation::known::Insertion;
    use crate::attestation::service::OwnRecord;

    const NOW: u64 = 1_800_000_000;

    fn verifier(allow_simulated: bool) -> Verifier {
        Verifier::new(AttestationPolicy { allow_simulated, ..AttestationPolicy::default() }, 8)
    }

    fn j(
        data: &[u8],
        author: Option<PeerId>,
        known: &Mutex<KnownWorkers>,
        verifier: &Verifier,
        now: u64,
    ) -> Judgement {
        judge_cached(data, author, known, verifier, &CollateralSource::offline(), now)
    }

    fn known() -> Mutex<KnownWorkers> {
        Mutex::new(KnownWorkers::new(8))
    }

    #[test]
    fn valid_record_is_accepted_then_its_replay_ignored() {
        let key = Keypair::generate_ed25519();
        let bytes = OwnRecord::for_tests(&key).build(NOW).unwrap().encode();
        let author = Some(key.public().to_peer_id());
        let (known, verifier) = (known(), verifier(true));
        let Judgement::Accept(signed) = j(&bytes, author, &known, &verifier, NOW + 1) else {
            panic!("not accepted")
        };
        assert_eq!(known.lock().unwrap().insert(*signed), Insertion::New);
        assert!(matches!(j(&bytes, author, &known, &verifier, NOW + 2), Judgement::Ignore(_)));
        // A newer record of the same worker replaces it.
        let newer = OwnRecord::for_tests(&key).build(NOW + 100).unwrap();
        assert!(matches!(j(&newer.encode(), author, &known, &verifier, NOW + 101), Judgement::Accept(_)));
        assert_eq!(known.lock().unwrap().insert(newer), Insertion::Updated);
        assert_eq!(
            known.lock().unwrap().models().into_iter().collect::<Vec<_>>(),
            vec!["m@sha256:00".to_owned()]
        );
    }

    #[test]
    fn policy_refusals_and_expiry_are_ignored_not_rejected() {
        let key = Keypair::generate_ed25519();
        let bytes = OwnRecord::for_tests(&key).build(NOW).unwrap().encode();
        let author = Some(key.public().to_peer_id());
        assert!(matches!(j(&bytes, author, &known(), &verifier(false), NOW), Judgement::IgnoreSimulated));
        assert!(matches!(j(&bytes, author, &known(), &verifier(true), NOW + 600), Judgement::Ignore(_)));
    }

    #[test]
    fn invalid_records_are_rejected() {
        let key = Keypair::generate_ed25519();
        let author = Some(key.public().to_peer_id());
        let (known, verifier) = (known(), verifier(true));
        assert!(matches!(j(b"garbage", author, &known, &verifier, NOW), Judgement::Reject(_)));
        let bytes = OwnRecord::for_tests(&key).build(NOW).unwrap().encode();
        // Someone else publishing the worker's record.
        let other = Some(Keypair::generate_ed25519().public().to_peer_id());
        assert!(matches!(j(&bytes, other, &known, &verifier, NOW), Judgement::Reject(_)));
        // Evidence that binds other keys.
        let mut record = OwnRecord::for_tests(&key).build(NOW).unwrap().record().clone();
        record.payout_address = "UQ-thief".into();
        let rebound = SignedRecord::sign(record, &key).unwrap().encode();
        assert!(
            matches!(j(&rebound, author, &known, &verifier, NOW), Judgement::Reject(r) if r.contains("report data"))
        );
    }
}
