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

/// The time window in which `collateral` is valid: the latest `issueDate` and the earliest
/// `nextUpdate` of its TCB info and QE identity (Unix seconds). `None` if they cannot be read.
pub fn collateral_window(collateral: &Collateral) -> Option<(u64, u64)> {
    let mut from = 0;
    let mut until = u64::MAX;
    for json in [&collateral.tcb_info, &collateral.qe_identity] {
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        from = from.max(rfc3339_unix(value["issueDate"].as_str()?)?);
        until = until.min(rfc3339_unix(value["nextUpdate"].as_str()?)?);
    }
    Some((from, until))
}

/// Unix seconds of an RFC 3339 UTC timestamp (`2025-06-19T10:32:43Z`, fractions ignored).
fn rfc3339_unix(ts: &str) -> Option<u64> {
    let num = |range: std::ops::Range<usize>| ts.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !ts.ends_with('Z') {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
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
}
