//! Intel's DCAP public-key infrastructure checked by signature alone: DER certificates and CRLs,
//! PEM chains, and ECDSA P-256 signatures up to Intel's pinned SGX/TDX root CA.
//!
//! These checks need neither collateral nor a clock, so a failure is a fact about the bytes
//! checked: a PCK certificate that does not chain to Intel's root by signature, or collateral
//! whose signatures do not, can never verify, whatever the time, the collateral or the verifier.
//! What depends on time or revocation (validity periods, CRL entries, TCB levels) is left to
//! `dcap-qvl`. The DER reader reads only what these checks need: definite lengths and one-byte
//! tags, which is all X.509 DER uses.

use dcap_qvl::config::{CryptoProvider, EcdsaSigEncoder};
use dcap_qvl::crypto::RingCrypto;
use dcap_qvl::signature::DerSigEncoder;

/// Public key of Intel's SGX Root CA (`CN=Intel SGX Root CA`, valid 2018–2049), the anchor of
/// every DCAP chain: the certificate `dcap-qvl` pins (its `src/TrustedRootCA.der`).
pub const INTEL_ROOT_CA_KEY: [u8; 65] = [
    0x04, 0x0b, 0xa9, 0xc4, 0xc0, 0xc0, 0xc8, 0x61, 0x93, 0xa3, 0xfe, 0x23, 0xd6, 0xb0, 0x2c, 0xda, 0x10,
    0xa8, 0xbb, 0xd4, 0xe8, 0x8e, 0x48, 0xb4, 0x45, 0x85, 0x61, 0xa3, 0x6e, 0x70, 0x55, 0x25, 0xf5, 0x67,
    0x91, 0x8e, 0x2e, 0xdc, 0x88, 0xe4, 0x0d, 0x86, 0x0b, 0xd0, 0xcc, 0x4e, 0xe2, 0x6a, 0xac, 0xc9, 0x88,
    0xe5, 0x05, 0xa9, 0x53, 0x55, 0x8c, 0x45, 0x3f, 0x6b, 0x09, 0x04, 0xae, 0x73, 0x94,
];

/// Most certificates read from one chain. Intel's chains hold two or three (signer or PCK
/// certificate, PCK CA, root); `dcap-qvl` refuses more than four intermediates.
pub const MAX_CHAIN: usize = 5;

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const EXPLICIT_VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Why a signed object is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// It does not decode.
    #[error("{0} is not well-formed")]
    Malformed(&'static str),
    /// A signature on the way to Intel's root does not verify.
    #[error("{0} does not verify up to Intel's root CA")]
    Signature(&'static str),
}

/// One DER element (also read by the GPU certificate checks in `gpu_cert`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Tlv<'a> {
    pub(super) tag: u8,
    /// Contents.
    pub(super) body: &'a [u8],
    /// Tag, length and contents: what a signature over the element covers.
    pub(super) whole: &'a [u8],
}

/// The first element of `input` and what follows it.
pub(super) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur in certificates and CRLs
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None; // indefinite lengths are not DER; 4 bytes cover any object read here
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    let (body, after) = rest.split_at_checked(len)?;
    let whole = input.get(..input.len() - after.len())?;
    Some((Tlv { tag, body, whole }, after))
}

pub(super) fn expect(input: &[u8], tag: u8) -> Option<(Tlv<'_>, &[u8])> {
    read(input).filter(|(t, _)| t.tag == tag)
}

/// Contents of a BIT STRING without unused bits.
pub(super) fn bits(body: &[u8]) -> Option<&[u8]> {
    match body.split_first()? {
        (0, bits) => Some(bits),
        _ => None,
    }
}

/// A certificate or CRL: `SEQUENCE { tbs, signatureAlgorithm, signatureValue }`.
#[derive(Debug, Clone, Copy)]
struct Signed<'a> {
    tbs: Tlv<'a>,
    /// DER `Ecdsa-Sig-Value`.
    signature: &'a [u8],
}

impl<'a> Signed<'a> {
    fn parse(der: &'a [u8]) -> Option<Self> {
        let (outer, rest) = expect(der, SEQUENCE)?;
        let (tbs, inner) = expect(outer.body, SEQUENCE)?;
        let (_algorithm, inner) = expect(inner, SEQUENCE)?;
        let (signature, inner) = expect(inner, BIT_STRING)?;
        (rest.is_empty() && inner.is_empty()).then_some(())?;
        Some(Self { tbs, signature: bits(signature.body)? })
    }

    fn signed_by(&self, key: &[u8]) -> bool {
        verify_der(key, self.tbs.whole, self.signature)
    }

    /// The subject public key of a certificate (an uncompressed EC point for Intel's).
    fn public_key(&self) -> Option<&'a [u8]> {
        let mut rest = self.tbs.body;
        if let Some((_, after)) = expect(rest, EXPLICIT_VERSION) {
            rest = after;
        }
        for _ in 0..5 {
            rest = read(rest)?.1; // serial, signature algorithm, issuer, validity, subject
        }
        let (spki, _) = expect(rest, SEQUENCE)?;
        let (_algorithm, rest) = expect(spki.body, SEQUENCE)?;
        bits(expect(rest, BIT_STRING)?.0.body)
    }

    /// A CRL's `thisUpdate` and `nextUpdate` (Unix seconds).
    fn crl_dates(&self) -> Option<(u64, Option<u64>)> {
        let mut rest = self.tbs.body;
        if let Some((_, after)) = expect(rest, INTEGER) {
            rest = after; // version
        }
        for _ in 0..2 {
            rest = read(rest)?.1; // signature algorithm, issuer
        }
        let (this_update, rest) = read(rest)?;
        let next_update = read(rest).and_then(|(t, _)| der_time(&t));
        Some((der_time(&this_update)?, next_update))
    }
}

/// Unix seconds of a UTCTime or GeneralizedTime in the `Z` form DER requires.
pub(super) fn der_time(t: &Tlv<'_>) -> Option<u64> {
    let text = std::str::from_utf8(t.body).ok()?;
    let (year, rest) = match t.tag {
        UTC_TIME => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| rest.get(range)?.parse::<i64>().ok();
    unix_seconds(year, num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?)
}

/// Unix seconds of a UTC civil date and time (proleptic Gregorian, after Howard Hinnant's
/// `days_from_civil`); `None` before 1970 or for an impossible month or day.
pub fn unix_seconds(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

fn verify_der(key: &[u8], message: &[u8], der_signature: &[u8]) -> bool {
    RingCrypto::sig_algo().verify_signature(key, message, der_signature).is_ok()
}

/// Whether `raw` (`r ‖ s`, 32 bytes each, as DCAP quotes and collateral carry signatures) is
/// `key`'s ECDSA P-256 signature over `message`.
pub fn verify_raw(key: &[u8], message: &[u8], raw: &[u8]) -> bool {
    let Some((r, s)) = raw.split_at_checked(32).filter(|(_, s)| s.len() == 32) else { return false };
    DerSigEncoder::encode_ecdsa_sig(r, s).is_ok_and(|der| verify_der(key, message, &der))
}

/// The public key of `chain[0]` once it is shown to be issued by Intel's root, directly or
/// through another certificate of `chain` that the root issued (how Intel's PKI is built).
/// `what` names the chain in errors.
pub fn chain_to_root<'a>(chain: &[&'a [u8]], what: &'static str) -> Result<&'a [u8], PkiError> {
    let (leaf, others) = chain.split_first().ok_or(PkiError::Malformed(what))?;
    let leaf = Signed::parse(leaf).ok_or(PkiError::Malformed(what))?;
    let key = leaf.public_key().ok_or(PkiError::Malformed(what))?;
    if leaf.signed_by(&INTEL_ROOT_CA_KEY) {
        return Ok(key);
    }
    // Certificates that do not decode are skipped, as a path builder would.
    let issued = others.iter().take(MAX_CHAIN).filter_map(|der| Signed::parse(der)).any(|ca| {
        ca.signed_by(&INTEL_ROOT_CA_KEY) && ca.public_key().is_some_and(|ca_key| leaf.signed_by(ca_key))
    });
    if issued { Ok(key) } else { Err(PkiError::Signature(what)) }
}

/// The DER certificates of a PEM chain, at most [`MAX_CHAIN`].
pub fn pem_certificates(pem: &str, what: &'static str) -> Result<Vec<Vec<u8>>, PkiError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = rest.get(start + BEGIN.len()..).ok_or(PkiError::Malformed(what))?;
        let end = after.find(END).ok_or(PkiError::Malformed(what))?;
        let body = after.get(..end).ok_or(PkiError::Malformed(what))?;
        certs.push(base64(body).ok_or(PkiError::Malformed(what))?);
        if certs.len() > MAX_CHAIN {
            return Err(PkiError::Malformed(what));
        }
        rest = after.get(end + END.len()..).unwrap_or_default();
    }
    if certs.is_empty() {
        return Err(PkiError::Malformed(what));
    }
    Ok(certs)
}

/// Check a signed collateral document (TCB info, QE identity): the first certificate of its
/// PEM `issuer_chain` must be issued by Intel's root directly (as `dcap-qvl` requires) and its
/// key must have signed `body` with `raw_signature`.
pub fn verify_document(
    issuer_chain: &str,
    body: &str,
    raw_signature: &[u8],
    what: &'static str,
) -> Result<(), PkiError> {
    let certs = pem_certificates(issuer_chain, what)?;
    let signer = certs.first().and_then(|der| Signed::parse(der)).ok_or(PkiError::Malformed(what))?;
    let key = signer.public_key().ok_or(PkiError::Malformed(what))?;
    if signer.signed_by(&INTEL_ROOT_CA_KEY) && verify_raw(key, body.as_bytes(), raw_signature) {
        Ok(())
    } else {
        Err(PkiError::Signature(what))
    }
}

/// A CRL's `thisUpdate` and `nextUpdate` (Unix seconds), read without verifying it.
pub fn crl_dates(der: &[u8]) -> Option<(u64, Option<u64>)> {
    Signed::parse(der)?.crl_dates()
}

/// Check a CRL signed by Intel's root (`issuer_chain` `None`) or by the CA first in the PEM
/// `issuer_chain`, itself issued by the root.
pub fn verify_crl(der: &[u8], issuer_chain: Option<&str>, what: &'static str) -> Result<(), PkiError> {
    let crl = Signed::parse(der).filter(|c| c.crl_dates().is_some()).ok_or(PkiError::Malformed(what))?;
    let signed = match issuer_chain {
        None => crl.signed_by(&INTEL_ROOT_CA_KEY),
        Some(chain) => {
            let certs = pem_certificates(chain, what)?;
            let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
            crl.signed_by(chain_to_root(&refs, what)?)
        }
    };
    if signed { Ok(()) } else { Err(PkiError::Signature(what)) }
}

/// Standard base64 with padding, whitespace ignored.
fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut held, mut padded) = (0u32, 0u32, false);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padded = true;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        if padded {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(value);
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((acc >> held) as u8);
            acc &= (1 << held) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64("").unwrap(), b"");
        assert_eq!(base64("Zg==").unwrap(), b"f");
        assert_eq!(base64("Zm8=").unwrap(), b"fo");
        assert_eq!(base64("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(base64("Zg==Zg").is_none());
        assert!(base64("Z*").is_none());
    }

    #[test]
    fn der_lengths_and_times_are_read() {
        let (tlv, rest) = read(&[0x30, 0x81, 0x02, 0x05, 0x00, 0xff]).unwrap();
        assert_eq!((tlv.tag, tlv.body, tlv.whole.len(), rest), (0x30, &[0x05, 0x00][..], 5, &[0xff][..]));
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_none(), "indefinite length");
        assert!(read(&[0x30, 0x05, 0x00]).is_none(), "truncated");
        let utc = Tlv { tag: UTC_TIME, body: b"250619100035Z", whole: &[] };
        assert_eq!(der_time(&utc), unix_seconds(2025, 6, 19, 10, 0, 35));
        let generalized = Tlv { tag: GENERALIZED_TIME, body: b"20491231235959Z", whole: &[] };
        assert_eq!(der_time(&generalized), unix_seconds(2049, 12, 31, 23, 59, 59));
        assert_eq!(unix_seconds(2000, 3, 1, 0, 0, 0), Some(951_868_800));
    }

    #[test]
    fn raw_signatures_of_the_wrong_size_do_not_verify() {
        assert!(!verify_raw(&INTEL_ROOT_CA_KEY, b"m", &[1; 63]));
        assert!(!verify_raw(&INTEL_ROOT_CA_KEY, b"m", &[1; 64]));
    }
}
