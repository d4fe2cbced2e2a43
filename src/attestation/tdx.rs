//! Verifying Intel TDX quotes with DCAP (`dcap-qvl`), and verifying their collateral.
//!
//! [`verify_quote`] runs in two stages, and every [`QuoteError`] says whose fault it is
//! ([`QuoteError::is_senders_fault`]):
//!
//! 1. [`check_quote`]: what the quote's bytes alone decide. The header names a TDX quote of a
//!    supported version, the quote decodes, its PCK certificate chains to Intel's pinned root by
//!    signature, the PCK key signed the QE report, the QE report commits to the attestation key,
//!    and that key signed the TD report. No collateral, clock or policy enters, so a failure here
//!    ([`QuoteError::Malformed`], [`QuoteError::NotTdx`], [`QuoteError::Signature`]) holds under
//!    any collateral: it is the sender's fault. A TDX quote in a format this build does not know
//!    (version, key type, QE vendor, certification data) is [`QuoteError::Unsupported`], which
//!    is not: a newer verifier may check it.
//! 2. `dcap-qvl` with collateral at `now`: validity windows, CRLs, TCB levels, QE identity, TD
//!    attributes. By then the quote is known to be genuinely signed, so whatever dcap-qvl refuses
//!    depends on this node's collateral, clock or dcap-qvl version, never on the sender.
//!
//! [`verify_collateral`] checks collateral on its own (signatures up to Intel's root, that it is
//! TDX collateral for the expected platform, and its signed validity window) before a node
//! caches it. It does not decide whether a verified quote is acceptable: that is the policy's job.

use std::borrow::Cow;

use cocoon_protocol::attestation::policy::{CpuKind, EvidenceClaims};
use dcap_qvl::quote::{Quote, Report, TDReport10};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::{QeIdentity, QuoteCollateralV3, TcbInfo};
use sha2::{Digest, Sha256};

use super::intel_pki::{self, MAX_CHAIN, PkiError, unix_seconds, verify_raw};

/// Collateral for one quote (Intel's TCB info, QE identity, CRLs and their issuer chains).
pub type Collateral = QuoteCollateralV3;

/// Why a quote did not verify. The first three are the sender's fault, the rest are not (see
/// [`QuoteError::is_senders_fault`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The bytes do not decode as the quote their header announces.
    #[error("malformed quote: {0}")]
    Malformed(String),
    /// The header names another TEE than TDX (an SGX enclave quote, or none at all), where TDX
    /// evidence is due.
    #[error("not a TDX quote")]
    NotTdx,
    /// A signature inside the quote, or on its PCK certificate's way to Intel's root, does not
    /// verify: the quote was altered or forged.
    #[error("quote signature is invalid: {0}")]
    Signature(String),
    /// A quote format this build cannot check (version, TEE type, key type, QE vendor,
    /// certification data): a newer verifier may.
    #[error("unsupported quote format: {0}")]
    Unsupported(String),
    /// The collateral is not valid at the verification time (expired or not yet issued).
    #[error("collateral is not valid at this time: {0}")]
    CollateralTime(String),
    /// The collateral does not verify, is not TDX collateral, or is for another platform.
    #[error("collateral is invalid: {0}")]
    Collateral(String),
    /// Intel's collateral rates the platform, its TDX module or its QE below every listed level,
    /// or as revoked (TCB status or PCK certificate): a verdict of the collateral this node holds.
    #[error("platform TCB is not acceptable under this collateral: {0}")]
    Tcb(String),
    /// dcap-qvl refused the quote for another reason (TD attributes such as debug, …).
    #[error("quote does not verify: {0}")]
    Refused(String),
}

impl QuoteError {
    /// Whether the quote itself is at fault, so that no collateral, clock or verifier version
    /// could make it verify: what may count against the peer that sent it.
    pub fn is_senders_fault(&self) -> bool {
        match self {
            QuoteError::Malformed(_) | QuoteError::NotTdx | QuoteError::Signature(_) => true,
            QuoteError::Unsupported(_)
            | QuoteError::CollateralTime(_)
            | QuoteError::Collateral(_)
            | QuoteError::Tcb(_)
            | QuoteError::Refused(_) => false,
        }
    }
}

const HEADER_LEN: usize = 48;
const TEE_TYPE_TDX: u32 = 0x81;
const ECDSA_P256_KEY: u16 = 2;
/// Certification data: a PEM PCK certificate chain embedded in the quote (what TDX guests emit).
const PCK_CERT_CHAIN: u16 = 5;
/// Quote v5 body types of TD reports (TDX 1.0, 1.5, 1.5 extended); 1 is an SGX enclave report.
const TD_BODY_TYPES: [u16; 3] = [2, 3, 4];
const SGX_BODY_TYPE: u16 = 1;
/// Offset of the report data in a QE (SGX enclave) report.
const QE_REPORT_DATA: usize = 320;

/// Parse collateral from the JSON form `dcap-qvl` and PCCS clients use.
pub fn parse_collateral(json: &[u8]) -> Result<Collateral, QuoteError> {
    serde_json::from_slice(json).map_err(|e| QuoteError::Collateral(format!("collateral JSON: {e}")))
}

/// Check what `bytes` alone decide (stage 1 above); cheap next to a collateral fetch, and run
/// before one. Returns the parsed quote.
pub fn check_quote(bytes: &[u8]) -> Result<Quote, QuoteError> {
    let malformed = |what: &str| QuoteError::Malformed(what.to_owned());
    let header = bytes.get(..HEADER_LEN).ok_or_else(|| malformed("shorter than a quote header"))?;
    let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    let (version, key_type) = (u16_at(0), u16_at(2));
    let tee_type = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // TDX keeps its TEE type across quote versions: any other is not TDX evidence.
    if tee_type != TEE_TYPE_TDX {
        return Err(QuoteError::NotTdx);
    }
    if !matches!(version, 4 | 5) {
        return Err(QuoteError::Unsupported(format!("TDX quote version {version}")));
    }
    if key_type != ECDSA_P256_KEY {
        return Err(QuoteError::Unsupported(format!("attestation key type {key_type}")));
    }
    if header[12..28] != dcap_qvl::INTEL_QE_VENDOR_ID {
        return Err(QuoteError::Unsupported("QE vendor is not Intel".into()));
    }
    if version == 5 {
        let body = bytes.get(HEADER_LEN..HEADER_LEN + 2).ok_or_else(|| malformed("no body header"))?;
        match u16::from_le_bytes([body[0], body[1]]) {
            SGX_BODY_TYPE => return Err(QuoteError::NotTdx),
            t if !TD_BODY_TYPES.contains(&t) => {
                return Err(QuoteError::Unsupported(format!("quote body type {t}")));
            }
            _ => {}
        }
    }
    let quote = Quote::parse(bytes).map_err(|e| QuoteError::Malformed(format!("{e:#}")))?;
    if quote.report.is_sgx() {
        return Err(QuoteError::NotTdx);
    }
    if quote.inner_cert_type() != PCK_CERT_CHAIN {
        return Err(QuoteError::Unsupported(format!(
            "certification data type {} (only embedded PCK chains, type 5)",
            quote.inner_cert_type()
        )));
    }
    let chain = dcap_qvl::intel::extract_cert_chain(&quote)
        .map_err(|e| QuoteError::Malformed(format!("PCK certificate chain: {e:#}")))?;
    if chain.len() > MAX_CHAIN {
        return Err(QuoteError::Unsupported(format!("{} certificates in the PCK chain", chain.len())));
    }
    let chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let pck_key = intel_pki::chain_to_root(&chain, "PCK certificate").map_err(|e| match e {
        PkiError::Malformed(_) => QuoteError::Malformed(e.to_string()),
        PkiError::Signature(_) => QuoteError::Signature(e.to_string()),
    })?;
    let auth = quote.auth_data.clone().into_v3();
    if !verify_raw(pck_key, &auth.qe_report, &auth.qe_report_signature) {
        return Err(QuoteError::Signature("the QE report is not signed by the quote's PCK key".into()));
    }
    let commitment = Sha256::new()
        .chain_update(auth.ecdsa_attestation_key)
        .chain_update(&auth.qe_auth_data.data)
        .finalize();
    if auth.qe_report.get(QE_REPORT_DATA..QE_REPORT_DATA + 32) != Some(&commitment[..]) {
        return Err(QuoteError::Signature("the QE report does not commit to the attestation key".into()));
    }
    let mut attestation_key = [0x04; 65]; // uncompressed point: 0x04 ‖ x ‖ y
    attestation_key[1..].copy_from_slice(&auth.ecdsa_attestation_key);
    let signed = bytes.get(..quote.signed_length()).ok_or_else(|| malformed("shorter than its body"))?;
    if !verify_raw(&attestation_key, signed, &auth.ecdsa_signature) {
        return Err(QuoteError::Signature("the TD report is not signed by the attestation key".into()));
    }
    Ok(quote)
}

/// Verify `quote` against `collateral` at `now` (Unix seconds). The PCK chain checked is always
/// the quote's own: a chain the collateral may carry is not used.
pub fn verify_quote(quote: &[u8], collateral: &Collateral, now: u64) -> Result<EvidenceClaims, QuoteError> {
    check_quote(quote)?;
    let collateral = match collateral.pck_certificate_chain {
        Some(_) => Cow::Owned(Collateral { pck_certificate_chain: None, ..collateral.clone() }),
        None => Cow::Borrowed(collateral),
    };
    let report = QuoteVerifier::new_prod().verify(quote, &collateral, now).map_err(classify)?;
    let td = match &report.report {
        Report::TD10(td) => td,
        Report::TD15(td) => &td.base,
        Report::TD15Ex(td) => &td.base.base,
        Report::SgxEnclave(_) => return Err(QuoteError::NotTdx),
    };
    Ok(claims(td, report.status))
}

fn claims(td: &TDReport10, tcb_status: String) -> EvidenceClaims {
    EvidenceClaims {
        kind: CpuKind::Tdx,
        mrtd: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        tcb_status,
    }
}

/// The one place dcap-qvl's failures are read, and they are text (dcap-qvl 0.7.1 returns
/// `anyhow` errors). It only runs after [`check_quote`] passed, so every failure lands in a class
/// that is not the sender's fault; the text merely picks which, for logs and `cocoon attest
/// verify`. Unrecognised text is [`QuoteError::Refused`]: never a penalty.
fn classify(err: anyhow::Error) -> QuoteError {
    const TIME: &[&str] = &["expired", "in the future", "notvalidyet"];
    const TCB: &[&str] = &[
        "no matching tcb level",
        "revoked",
        "isvsvn",
        "qe mrsigner",
        "qe isvprodid",
        "qe miscselect",
        "qe attributes",
        "qe report validation",
        "tdx module",
        "tcb status",
    ];
    const FORMAT: &[&str] = &["unsupported", "unknown qe vendor", "must have version"];
    const COLLATERAL: &[&str] =
        &["collateral", "crl", "certificate", "tcb info", "tcbinfo", "qe identity", "fmspc", "root ca"];
    let message = format!("{err:#}");
    let lower = message.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(TIME) {
        QuoteError::CollateralTime(message)
    } else if has(TCB) {
        QuoteError::Tcb(message)
    } else if has(FORMAT) {
        QuoteError::Unsupported(message)
    } else if has(COLLATERAL) {
        QuoteError::Collateral(message)
    } else {
        QuoteError::Refused(message)
    }
}

/// Check `collateral` on its own at `now`: TCB info, QE identity and both CRLs signed up to
/// Intel's root, TDX collateral (for `fmspc`, when given), inside its validity window. Returns the
/// end of that window (Unix seconds), now read from signed data ([`collateral_window`]).
pub fn verify_collateral(
    collateral: &Collateral,
    fmspc: Option<[u8; 6]>,
    now: u64,
) -> Result<u64, QuoteError> {
    let invalid = |e: PkiError| QuoteError::Collateral(e.to_string());
    let c = collateral;
    intel_pki::verify_document(&c.tcb_info_issuer_chain, &c.tcb_info, &c.tcb_info_signature, "TCB info")
        .map_err(invalid)?;
    intel_pki::verify_document(
        &c.qe_identity_issuer_chain,
        &c.qe_identity,
        &c.qe_identity_signature,
        "QE identity",
    )
    .map_err(invalid)?;
    intel_pki::verify_crl(&c.root_ca_crl, None, "root CA CRL").map_err(invalid)?;
    intel_pki::verify_crl(&c.pck_crl, Some(&c.pck_crl_issuer_chain), "PCK CRL").map_err(invalid)?;
    let tcb: TcbInfo = serde_json::from_str(&c.tcb_info)
        .map_err(|e| QuoteError::Collateral(format!("TCB info does not decode: {e}")))?;
    let qe: QeIdentity = serde_json::from_str(&c.qe_identity)
        .map_err(|e| QuoteError::Collateral(format!("QE identity does not decode: {e}")))?;
    if tcb.id != "TDX" || qe.id != "TD_QE" {
        return Err(QuoteError::Collateral(format!("{} / {} collateral, not TDX", tcb.id, qe.id)));
    }
    if let Some(fmspc) = fmspc
        && !tcb.fmspc.eq_ignore_ascii_case(&hex::encode(fmspc))
    {
        return Err(QuoteError::Collateral(format!(
            "TCB info for FMSPC {}, not {}",
            tcb.fmspc,
            hex::encode_upper(fmspc)
        )));
    }
    let (from, until) =
        collateral_window(c).ok_or_else(|| QuoteError::Collateral("its dates do not decode".into()))?;
    if now < from || now > until {
        return Err(QuoteError::CollateralTime(format!("valid from {from} until {until}, now {now}")));
    }
    Ok(until)
}

/// The time window in which `collateral` claims to be valid (Unix seconds): the latest
/// `issueDate` of its TCB info and QE identity, and the earliest `nextUpdate` of those and of
/// its two CRLs. Read *without* verifying anything: it means something once the collateral
/// verified ([`verify_collateral`], or a successful [`verify_quote`]); otherwise it is only good
/// for display and tests.
pub fn collateral_window(collateral: &Collateral) -> Option<(u64, u64)> {
    let mut from = 0;
    let mut until = u64::MAX;
    for json in [&collateral.tcb_info, &collateral.qe_identity] {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        from = from.max(rfc3339_unix(value["issueDate"].as_str()?)?);
        until = until.min(rfc3339_unix(value["nextUpdate"].as_str()?)?);
    }
    for crl in [&collateral.root_ca_crl, &collateral.pck_crl] {
        if let (_, Some(next_update)) = intel_pki::crl_dates(crl)? {
            until = until.min(next_update);
        }
    }
    Some((from, until))
}

/// Unix seconds of an RFC 3339 UTC timestamp (`2025-06-19T10:32:43Z`, fractions ignored).
fn rfc3339_unix(ts: &str) -> Option<u64> {
    let num = |range: std::ops::Range<usize>| ts.get(range)?.parse::<i64>().ok();
    if !ts.ends_with('Z') {
        return None;
    }
    unix_seconds(num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_unix("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(rfc3339_unix("2025-06-19T10:16:03Z"), Some(1_750_328_163));
        assert_eq!(rfc3339_unix("2025-06-19T10:16:03.512Z"), Some(1_750_328_163));
        assert_eq!(rfc3339_unix("2025-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_unix("yesterday"), None);
    }

    /// Every class of dcap-qvl 0.7.1 text (verbatim from its source) lands where it belongs,
    /// and none of them is the sender's fault.
    /// A dcap-qvl message and the class it must land in.
    type Case = (&'static str, fn(&QuoteError) -> bool);

    #[test]
    fn dcap_qvl_failures_are_classified_and_never_the_senders() {
        let cases: &[Case] = &[
            ("TCBInfo expired", |e| matches!(e, QuoteError::CollateralTime(_))),
            ("QE Identity issue date is in the future", |e| matches!(e, QuoteError::CollateralTime(_))),
            ("Failed to verify certificate chain: CertExpired { .. }", |e| {
                matches!(e, QuoteError::CollateralTime(_))
            }),
            ("No matching TCB level found", |e| matches!(e, QuoteError::Tcb(_))),
            ("TCB status is invalid: Revoked", |e| matches!(e, QuoteError::Tcb(_))),
            ("Failed to verify certificate chain: CertRevoked", |e| matches!(e, QuoteError::Tcb(_))),
            ("QE ISVSVN 4 is below minimum required 5 from QE Identity", |e| matches!(e, QuoteError::Tcb(_))),
            ("QE MRSIGNER mismatch: expected 00, got 01", |e| matches!(e, QuoteError::Tcb(_))),
            ("TDX module identity check: TDX module MRSIGNER mismatch", |e| matches!(e, QuoteError::Tcb(_))),
            ("Unsupported DCAP quote version", |e| matches!(e, QuoteError::Unsupported(_))),
            ("Unknown QE vendor ID", |e| matches!(e, QuoteError::Unsupported(_))),
            ("Signature is invalid for tcb_info in quote_collateral", |e| {
                matches!(e, QuoteError::Collateral(_))
            }),
            ("Failed to parse PCK CRL: InvalidCrlSignatureForPublicKey", |e| {
                matches!(e, QuoteError::Collateral(_))
            }),
            ("Fmspc mismatch", |e| matches!(e, QuoteError::Collateral(_))),
            ("Debug mode is enabled", |e| matches!(e, QuoteError::Refused(_))),
            ("SEPT_VE_DISABLE is not enabled", |e| matches!(e, QuoteError::Refused(_))),
        ];
        for (text, expected) in cases {
            let e = classify(anyhow::anyhow!("{text}"));
            assert!(expected(&e), "{text:?} classified as {e:?}");
            assert!(!e.is_senders_fault(), "{text:?}");
        }
    }

    #[test]
    fn headers_this_build_cannot_check_are_unsupported_not_malformed() {
        let mut header = [0u8; HEADER_LEN];
        header[4] = 0x81; // TDX
        header[2] = 2; // ECDSA P-256
        header[0] = 6; // version 6
        assert!(matches!(check_quote(&header), Err(QuoteError::Unsupported(_))));
        header[0] = 4;
        header[2] = 3; // ECDSA P-384
        assert!(matches!(check_quote(&header), Err(QuoteError::Unsupported(_))));
        header[4] = 0; // SGX
        assert_eq!(check_quote(&header).unwrap_err(), QuoteError::NotTdx);
        assert!(matches!(check_quote(&header[..20]), Err(QuoteError::Malformed(_))));
    }
}
