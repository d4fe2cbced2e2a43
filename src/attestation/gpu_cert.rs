//! The X.509 certificates of NVIDIA's device identity PKI, read with the DER reader of
//! [`super::intel_pki`]: ECDSA P-384 keys, ecdsa-with-SHA384 signatures, validity (UTCTime or
//! GeneralizedTime: NVIDIA's certificates end in 9999), CA rights, the subject's common name
//! (which names the GPU architecture), and the Hopper leaf's FWID.
//!
//! Only what the GPU evidence checks need is read; an unknown critical extension makes a
//! certificate unusable, as in any X.509 path validation.

use ring::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};

use crate::attestation::intel_pki::{
    BIT_STRING, EXPLICIT_VERSION, INTEGER, SEQUENCE, Tlv, bits, der_time, expect, read,
};

/// `ecdsa-with-SHA384` (1.2.840.10045.4.3.3).
const ECDSA_SHA384: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
/// `id-ecPublicKey` (1.2.840.10045.2.1) with the curve `secp384r1` (1.3.132.0.34).
const EC_P384: &[u8] =
    &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `id-sha384` (2.16.840.1.101.3.4.2.2).
const SHA384: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
/// TCG DICE FWID extension (2.23.133.5.4.1).
const FWID_EXTENSION: &[u8] = &[0x06, 0x06, 0x67, 0x81, 0x05, 0x05, 0x04, 0x01];
/// `basicConstraints` (2.5.29.19).
const BASIC_CONSTRAINTS: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x13];
/// `keyUsage` (2.5.29.15).
const KEY_USAGE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x0f];
/// `commonName` (2.5.4.3).
const COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
const SET: u8 = 0x31;
/// The keyCertSign bit of the first key usage byte.
const KEY_CERT_SIGN: u8 = 0x04;
/// Length of an uncompressed P-384 point.
const P384_POINT: usize = 97;
const EXTENSIONS: u8 = 0xa3;
const OBJECT_ID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const FWID_LEN: usize = 48;

/// What a certificate says, borrowed from its DER.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cert<'a> {
    /// The signed part, tag and length included.
    tbs: &'a [u8],
    /// DER `Ecdsa-Sig-Value`.
    signature: &'a [u8],
    /// The serial number, the whole DER INTEGER.
    pub serial: &'a [u8],
    /// The issuer and subject names as DER.
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    /// Validity (Unix seconds, inclusive).
    pub not_before: u64,
    pub not_after: u64,
    /// The uncompressed P-384 public key.
    pub key: &'a [u8],
    /// Whether it may sign certificates (basicConstraints CA, keyUsage keyCertSign if present).
    pub is_ca: bool,
    /// The value of the TCG DICE FWID extension, if there is one (its shape differs between
    /// architectures: read it with [`Cert::hopper_fwid`]).
    pub fwid_extension: Option<&'a [u8]>,
}

/// Extensions read.
#[derive(Debug, Default)]
struct Extensions<'a> {
    ca: bool,
    /// `None` when there is no keyUsage extension.
    cert_sign: Option<bool>,
    fwid_extension: Option<&'a [u8]>,
}

impl<'a> Cert<'a> {
    /// Read `der`; the error says what is wrong.
    pub fn parse(der: &'a [u8]) -> Result<Self, &'static str> {
        let (outer, rest) = expect(der, SEQUENCE).ok_or("not a DER SEQUENCE")?;
        if !rest.is_empty() {
            return Err("bytes follow the certificate");
        }
        let (tbs, inner) = expect(outer.body, SEQUENCE).ok_or("no TBSCertificate")?;
        let (algorithm, inner) = expect(inner, SEQUENCE).ok_or("no signature algorithm")?;
        let (signature, inner) = expect(inner, BIT_STRING).ok_or("no signature")?;
        if !inner.is_empty() || algorithm.body != ECDSA_SHA384 {
            return Err("not signed with ecdsa-with-SHA384");
        }
        let signature = bits(signature.body).ok_or("a signature with unused bits")?;
        Self::parse_tbs(tbs, signature)
    }

    fn parse_tbs(tbs: Tlv<'a>, signature: &'a [u8]) -> Result<Self, &'static str> {
        let (_version, rest) = expect(tbs.body, EXPLICIT_VERSION).ok_or("not an X.509 v3 certificate")?;
        let (serial, rest) = expect(rest, INTEGER).ok_or("no serial number")?;
        let (algorithm, rest) = expect(rest, SEQUENCE).ok_or("no inner signature algorithm")?;
        if algorithm.body != ECDSA_SHA384 {
            return Err("its inner signature algorithm is not ecdsa-with-SHA384");
        }
        let (issuer, rest) = expect(rest, SEQUENCE).ok_or("no issuer")?;
        let (validity, rest) = expect(rest, SEQUENCE).ok_or("no validity")?;
        let (not_before, not_after) = parse_validity(validity.body).ok_or("an unreadable validity")?;
        let (subject, rest) = expect(rest, SEQUENCE).ok_or("no subject")?;
        let (spki, rest) = expect(rest, SEQUENCE).ok_or("no public key")?;
        let key = parse_p384_key(spki.body).ok_or("its key is not an uncompressed P-384 point")?;
        let extensions = parse_extensions(rest)?;
        let is_ca = extensions.ca && extensions.cert_sign != Some(false);
        let (issuer, subject) = (issuer.whole, subject.whole);
        Ok(Self {
            tbs: tbs.whole,
            signature,
            serial: serial.whole,
            issuer,
            subject,
            not_before,
            not_after,
            key,
            is_ca,
            fwid_extension: extensions.fwid_extension,
        })
    }

    /// The 48-byte FWID of a Hopper leaf: `None` without the extension, an error when it has
    /// another shape.
    pub fn hopper_fwid(&self) -> Result<Option<&'a [u8]>, &'static str> {
        self.fwid_extension
            .map(|value| hopper_fwid(value).ok_or("an FWID extension of unknown shape"))
            .transpose()
    }

    /// The subject's first common name, if it is text.
    pub fn common_name(&self) -> Option<&'a str> {
        let (name, _) = expect(self.subject, SEQUENCE)?;
        let mut sets = name.body;
        while !sets.is_empty() {
            let (set, next) = expect(sets, SET)?;
            let (attribute, _) = expect(set.body, SEQUENCE)?;
            let (oid, rest) = expect(attribute.body, OBJECT_ID)?;
            if oid.whole == COMMON_NAME {
                let (value, _) = read(rest)?;
                return std::str::from_utf8(value.body).ok();
            }
            sets = next;
        }
        None
    }

    /// Whether `issuer_key` (an uncompressed P-384 point) signed this certificate.
    pub fn signed_by(&self, issuer_key: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, issuer_key).verify(self.tbs, self.signature).is_ok()
    }
}

fn parse_validity(body: &[u8]) -> Option<(u64, u64)> {
    let (not_before, rest) = read(body)?;
    let (not_after, rest) = read(rest)?;
    rest.is_empty().then_some(())?;
    Some((der_time(&not_before)?, der_time(&not_after)?))
}

fn parse_p384_key(spki: &[u8]) -> Option<&[u8]> {
    let (algorithm, rest) = expect(spki, SEQUENCE)?;
    let (key, rest) = expect(rest, BIT_STRING)?;
    let key = bits(key.body)?;
    let ok = rest.is_empty() && algorithm.body == EC_P384 && key.len() == P384_POINT && key[0] == 0x04;
    ok.then_some(key)
}

/// The extensions after the subject public key (optional unique identifiers are refused: no
/// NVIDIA certificate has them).
fn parse_extensions(rest: &[u8]) -> Result<Extensions<'_>, &'static str> {
    let mut out = Extensions::default();
    if rest.is_empty() {
        return Ok(out);
    }
    let (wrapper, after) = expect(rest, EXTENSIONS).ok_or("unexpected fields after the public key")?;
    let (list, tail) = expect(wrapper.body, SEQUENCE).ok_or("unreadable extensions")?;
    if !after.is_empty() || !tail.is_empty() {
        return Err("bytes follow the extensions");
    }
    let mut items = list.body;
    while !items.is_empty() {
        let (extension, next) = expect(items, SEQUENCE).ok_or("an unreadable extension")?;
        read_extension(extension.body, &mut out)?;
        items = next;
    }
    Ok(out)
}

fn read_extension<'a>(body: &'a [u8], out: &mut Extensions<'a>) -> Result<(), &'static str> {
    let (oid, rest) = expect(body, OBJECT_ID).ok_or("an extension without identifier")?;
    let (critical, rest) = match expect(rest, BOOLEAN) {
        Some((flag, rest)) => (flag.body == [0xff], rest),
        None => (false, rest),
    };
    let (value, rest) = expect(rest, OCTET_STRING).ok_or("an extension without value")?;
    if !rest.is_empty() {
        return Err("an extension with extra fields");
    }
    let value = value.body;
    match oid.whole {
        BASIC_CONSTRAINTS => out.ca = basic_constraints_ca(value).ok_or("unreadable basic constraints")?,
        KEY_USAGE => out.cert_sign = Some(key_usage_cert_sign(value).ok_or("unreadable key usage")?),
        FWID_EXTENSION => out.fwid_extension = Some(value),
        _ if critical => return Err("an unknown critical extension"),
        _ => {}
    }
    Ok(())
}

/// `SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }`.
fn basic_constraints_ca(value: &[u8]) -> Option<bool> {
    let (constraints, rest) = expect(value, SEQUENCE)?;
    rest.is_empty().then_some(())?;
    Some(expect(constraints.body, BOOLEAN).is_some_and(|(flag, _)| flag.body == [0xff]))
}

fn key_usage_cert_sign(value: &[u8]) -> Option<bool> {
    let (usage, rest) = expect(value, BIT_STRING)?;
    rest.is_empty().then_some(())?;
    let (_unused, bytes) = usage.body.split_first()?;
    Some(bytes.first().is_some_and(|b| b & KEY_CERT_SIGN != 0))
}

/// The Hopper leaf's FWID extension is a DICE composite device ID:
/// `SEQUENCE { version INTEGER, deviceId SubjectPublicKeyInfo, SEQUENCE { sha384, OCTET STRING } }`;
/// the FWID is the 48-byte digest at its end (what NVIDIA's verifier takes).
fn hopper_fwid(value: &[u8]) -> Option<&[u8]> {
    let (outer, rest) = expect(value, SEQUENCE)?;
    rest.is_empty().then_some(())?;
    let mut items = outer.body;
    let mut last = None;
    while !items.is_empty() {
        let (item, next) = read(items)?;
        last = Some(item);
        items = next;
    }
    let last = last.filter(|item| item.tag == SEQUENCE)?;
    let (hash, rest) = expect(last.body, OBJECT_ID)?;
    let (digest, rest) = expect(rest, OCTET_STRING)?;
    let ok = hash.whole == SHA384 && rest.is_empty() && digest.body.len() == FWID_LEN;
    ok.then_some(digest.body)
}
