//! Verifying Intel TDX quotes with DCAP (`dcap-qvl`).
//!
//! [`verify_quote`] checks the quote's signature chain up to Intel's root CA, the QE report, and
//! the collateral's signatures and validity window at `now`, and yields the TD's measurements,
//! report data and TCB status. It does not decide whether those are acceptable: that is the
//! policy's job. Failures are sorted into a few stable reasons so callers (and peers' reputation)
//! can tell a forged quote from stale collateral.

use cocoon_protocol::attestation::policy::EvidenceClaims;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{Report, TDReport10};
use dcap_qvl::verify::QuoteVerifier;

/// Collateral for one quote (Intel's TCB info, QE identity, CRLs and their issuer chains).
pub type Collateral = QuoteCollateralV3;

/// Why a quote did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// A signature in the quote or its chain does not verify: the quote was altered or forged.
    #[error("quote signature is invalid: {0}")]
    Signature(String),
    /// The collateral is not valid at the verification time (expired or not yet issued).
    #[error("collateral is not valid at this time: {0}")]
    CollateralTime(String),
    /// The platform's TCB is below every level in Intel's TCB info for its FMSPC: it is out of
    /// date (Intel lists no status for it), so no policy could accept it.
    #[error("platform TCB is out of date (no matching TCB level): {0}")]
    NoTcbLevel(String),
    /// The quote is well-formed but not a TDX quote.
    #[error("not a TDX quote (SGX enclave quote)")]
    NotTdx,
    /// Anything else (malformed quote or collateral, FMSPC mismatch, …).
    #[error("quote does not verify: {0}")]
    Invalid(String),
}

/// Parse collateral from the JSON form `dcap-qvl` and PCCS clients use.
pub fn parse_collateral(json: &[u8]) -> Result<Collateral, QuoteError> {
    serde_json::from_slice(json).map_err(|e| QuoteError::Invalid(format!("collateral JSON: {e}")))
}

/// Verify `quote` against `collateral` at `now` (Unix seconds).
pub fn verify_quote(quote: &[u8], collateral: &Collateral, now: u64) -> Result<EvidenceClaims, QuoteError> {
    let report = QuoteVerifier::new_prod().verify(quote, collateral, now).map_err(classify)?;
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
        simulated: false,
        mrtd: td.mr_td,
        rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        report_data: td.report_data,
        tcb_status,
    }
}

/// dcap-qvl reports failures as text; sort them into stable reasons.
fn classify(err: anyhow::Error) -> QuoteError {
    let message = format!("{err:#}");
    let lower = message.to_lowercase();
    if lower.contains("signature is invalid") || lower.contains("hash mismatch") {
        QuoteError::Signature(message)
    } else if lower.contains("no matching tcb level") {
        QuoteError::NoTcbLevel(message)
    } else if lower.contains("expired") || lower.contains("in the future") {
        QuoteError::CollateralTime(message)
    } else {
        QuoteError::Invalid(message)
    }
}
