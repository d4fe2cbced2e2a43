//! TON amounts for people: nanotons printed as TON with exactly nine decimals, and parsed back
//! without floating point.

use super::settlement::NANOTONS_PER_TON;

/// `1500000000` → `"1.500000000"`.
pub fn format_ton(nanotons: u64) -> String {
    format!("{}.{:09}", nanotons / NANOTONS_PER_TON, nanotons % NANOTONS_PER_TON)
}

/// Why an amount does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a TON amount (up to nine decimals): {0:?}")]
pub struct AmountError(pub String);

/// `"1.5"` → `1500000000`; at most nine decimals, no sign, no exponent.
pub fn parse_ton(text: &str) -> Result<u64, AmountError> {
    let err = || AmountError(text.to_owned());
    let t = text.trim().trim_end_matches("TON").trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(err());
    }
    let whole: u64 = whole.parse().map_err(|_| err())?;
    let frac: u64 = format!("{frac:0<9}").parse().map_err(|_| err())?;
    whole.checked_mul(NANOTONS_PER_TON).and_then(|w| w.checked_add(frac)).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_with_nanoton_precision() {
        assert_eq!(format_ton(1_500_000_000), "1.500000000");
        assert_eq!(format_ton(1), "0.000000001");
        assert_eq!(parse_ton("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_ton("0.000000001 TON").unwrap(), 1);
        assert_eq!(parse_ton("12").unwrap(), 12 * NANOTONS_PER_TON);
        for bad in ["", "-1", "1.0000000001", "1e9", "abc", "1.", "99999999999999999999"] {
            assert!(parse_ton(bad).is_err(), "{bad}");
        }
        for n in [0, 1, 999_999_999, 1_000_000_000, u64::MAX / 2] {
            assert_eq!(parse_ton(&format_ton(n)).unwrap(), n);
        }
    }
}
