//! Revocation of NVIDIA GPU certificates by OCSP (RFC 6960), optional and off by default: the
//! offline checks of [`super::verify_chain`] cannot know that a device key leaked.
//!
//! As NVIDIA's verifier does, certificates 1 to 3 of a verified chain (device, provisioner ICA,
//! identity CA) are each asked about, with a SHA-384 `CertID` and a fresh 32-byte nonce; the leaf
//! is made at each boot and has no revocation entry, the root is pinned. A response is accepted
//! when it is successful, echoes the nonce, is signed (ECDSA P-384, SHA-384) by its first
//! certificate, that certificate is issued by a CA *above* the one asked about (never by it: a
//! leaked device key must not vouch for itself), names our `CertID` with status `good`, and
//! `now` lies in `[thisUpdate − skew, nextUpdate]`. Good answers are kept in memory until the
//! earlier of their `nextUpdate` and [`GpuServicesConfig::cache_secs`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ring::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
use sha2::{Digest, Sha256, Sha384};

use super::cert::Cert;
use super::{CHAIN_LEN, GpuError, NONCE_LEN};
use crate::attestation::intel_pki::{BIT_STRING, INTEGER, SEQUENCE, Tlv, bits, expect, read, unix_seconds};

/// NVIDIA's OCSP responder (what `nv-local-gpu-verifier` posts to).
pub const DEFAULT_OCSP_URL: &str = "https://ocsp.ndis.nvidia.com/";
/// NVIDIA's RIM service (a RIM id is appended).
pub const DEFAULT_RIM_URL: &str = "https://rim.attestation.nvidia.com/v1/rim/";
/// How far a responder's clock may run ahead of ours.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// Good answers kept at most: three per GPU chain, far more than GPUs a node meets.
pub const CACHE_ENTRIES: usize = 4096;
/// Largest response read: NVIDIA's are about 2 KB (a responder certificate and one answer).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The online GPU checks, both off by default: offline verification never needs them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuServicesConfig {
    /// Refuse GPU evidence whose device, ICA or identity certificate OCSP does not say is good
    /// (default false).
    pub require_ocsp: bool,
    /// Refuse GPU evidence whose measurements do not match NVIDIA's driver and VBIOS RIMs
    /// (default false).
    pub require_rim: bool,
    /// The OCSP responder (default NVIDIA's, `https://ocsp.ndis.nvidia.com/`).
    pub ocsp_url: String,
    /// The RIM service base URL, a RIM id is appended (default NVIDIA's,
    /// `https://rim.attestation.nvidia.com/v1/rim/`).
    pub rim_url: String,
    /// Seconds before a request to either service is given up (default 10).
    pub timeout_secs: u64,
    /// Seconds an answer is reused at most (default 3600); an OCSP answer also never beyond its
    /// `nextUpdate`.
    pub cache_secs: u64,
}

impl Default for GpuServicesConfig {
    fn default() -> Self {
        Self {
            require_ocsp: false,
            require_rim: false,
            ocsp_url: DEFAULT_OCSP_URL.to_owned(),
            rim_url: DEFAULT_RIM_URL.to_owned(),
            timeout_secs: 10,
            cache_secs: 3600,
        }
    }
}

/// Why a certificate's revocation status is not known to be good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    /// The chain itself does not verify.
    #[error(transparent)]
    Chain(#[from] GpuError),
    /// The responder could not be reached or answered with an HTTP error.
    #[error("OCSP request to {url}: {reason}")]
    Request {
        /// The responder.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The response does not decode.
    #[error("malformed OCSP response: {0}")]
    Malformed(&'static str),
    /// The responder answered with an error status (RFC 6960 `OCSPResponseStatus`).
    #[error("the OCSP responder answered status {0}")]
    Unsuccessful(u8),
    /// The response's signature or its signer's certificate does not verify.
    #[error("the OCSP response is not signed by a certificate of NVIDIA's chain: {0}")]
    Signer(&'static str),
    /// The response does not echo our nonce.
    #[error("the OCSP response does not echo the request's nonce")]
    Nonce,
    /// The response says nothing about the certificate asked about.
    #[error("the OCSP response has no answer for GPU certificate {0}")]
    NoAnswer(usize),
    /// The response is not valid now.
    #[error("the OCSP answer for GPU certificate {index} is not current at {now}")]
    Stale {
        /// The certificate.
        index: usize,
        /// The time checked (Unix seconds).
        now: u64,
    },
    /// The certificate is revoked.
    #[error("GPU certificate {index} is revoked (reason {reason:?})")]
    Revoked {
        /// The certificate.
        index: usize,
        /// The CRL reason code, if given.
        reason: Option<u8>,
    },
    /// The responder does not know the certificate.
    #[error("the OCSP responder does not know GPU certificate {0}")]
    Unknown(usize),
}

/// A good answer's validity (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcspGood {
    /// `thisUpdate`.
    pub this_update: u64,
    /// `nextUpdate`, if the responder gave one.
    pub next_update: Option<u64>,
}

/// `id-pkix-ocsp-basic` (1.3.6.1.5.5.7.48.1.1).
const OCSP_BASIC: &[u8] = &[0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// `id-pkix-ocsp-nonce` (1.3.6.1.5.5.7.48.1.2).
const OCSP_NONCE: &[u8] = &[0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
/// `id-sha384` (2.16.840.1.101.3.4.2.2).
const SHA384_OID: &[u8] = &[0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
/// `ecdsa-with-SHA384`.
const ECDSA_SHA384: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ENUMERATED: u8 = 0x0a;
const OCTET_STRING: u8 = 0x04;
const GENERALIZED_TIME: u8 = 0x18;
const NULL: &[u8] = &[0x05, 0x00];
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_1: u8 = 0xa1;
const CONTEXT_2: u8 = 0xa2;
const GOOD: u8 = 0x80;
const UNKNOWN: u8 = 0x82;

/// A DER element with `tag` around the concatenation of `parts`.
pub(crate) fn der(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The SHA-384 `CertID` of `cert` issued by `issuer` (both DER).
pub fn cert_id(cert: &[u8], issuer: &[u8]) -> Result<Vec<u8>, GpuError> {
    let cert = Cert::parse(cert).map_err(|reason| GpuError::Certificate { index: 0, reason })?;
    let issuer = Cert::parse(issuer).map_err(|reason| GpuError::Certificate { index: 1, reason })?;
    let name_hash = Sha384::digest(issuer.subject);
    let key_hash = Sha384::digest(issuer.key);
    Ok(der(
        SEQUENCE,
        &[
            &der(SEQUENCE, &[SHA384_OID, NULL]),
            &der(OCTET_STRING, &[&name_hash]),
            &der(OCTET_STRING, &[&key_hash]),
            cert.serial,
        ],
    ))
}

/// A DER `OCSPRequest` for `cert` issued by `issuer`, with `nonce` in a critical nonce extension
/// (as NVIDIA's verifier sends it).
pub fn ocsp_request(cert: &[u8], issuer: &[u8], nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, GpuError> {
    let request = der(SEQUENCE, &[&cert_id(cert, issuer)?]);
    let nonce_value = der(OCTET_STRING, &[&der(OCTET_STRING, &[nonce])]);
    let extension = der(SEQUENCE, &[OCSP_NONCE, &[0x01, 0x01, 0xff], &nonce_value]);
    let extensions = der(CONTEXT_2, &[&der(SEQUENCE, &[&extension])]);
    let tbs = der(SEQUENCE, &[&der(SEQUENCE, &[&request]), &extensions]);
    Ok(der(SEQUENCE, &[&tbs]))
}

/// The chain with the GPU's copy of the root replaced by `root`, as [`super::verify_chain`]
/// checks it.
fn pinned<'a, C: AsRef<[u8]>>(chain: &'a [C], root: &'a [u8]) -> Result<Vec<&'a [u8]>, GpuError> {
    if chain.len() != CHAIN_LEN {
        return Err(GpuError::ChainLength { found: chain.len() });
    }
    Ok(chain.iter().take(CHAIN_LEN - 1).map(AsRef::as_ref).chain(std::iter::once(root)).collect())
}

/// Check `response` (DER `OCSPResponse`) about certificate `index` of `chain` (DER, leaf first,
/// shown by [`super::verify_chain`] to lead to `root`), answering a request with `nonce` (if one
/// was sent), at `now`.
pub fn verify_response<C: AsRef<[u8]>>(
    response: &[u8],
    chain: &[C],
    root: &[u8],
    index: usize,
    nonce: Option<&[u8; NONCE_LEN]>,
    now: u64,
) -> Result<OcspGood, OcspError> {
    let chain = pinned(chain, root)?;
    let (cert, issuer) = match (chain.get(index), chain.get(index + 1)) {
        (Some(cert), Some(issuer)) if index > 0 => (*cert, *issuer),
        _ => return Err(OcspError::NoAnswer(index)),
    };
    let wanted = cert_id(cert, issuer)?;
    let basic = BasicResponse::parse(response)?;
    basic.check_signer(&chain[index + 1..], now)?;
    if let Some(nonce) = nonce
        && !basic.nonce.is_some_and(|got| nonce_matches(got, nonce))
    {
        return Err(OcspError::Nonce);
    }
    let answer = basic.answer_for(&wanted)?.ok_or(OcspError::NoAnswer(index))?;
    match answer.status {
        Status::Good => {}
        Status::Revoked(reason) => return Err(OcspError::Revoked { index, reason }),
        Status::Unknown => return Err(OcspError::Unknown(index)),
    }
    let current = answer.this_update <= now.saturating_add(CLOCK_SKEW_SECS)
        && answer.next_update.is_none_or(|next| now <= next);
    if !current {
        return Err(OcspError::Stale { index, now });
    }
    Ok(OcspGood { this_update: answer.this_update, next_update: answer.next_update })
}

/// The nonce extension's value is an OCTET STRING holding the nonce (RFC 8954); some responders
/// put the nonce bare.
fn nonce_matches(value: &[u8], nonce: &[u8]) -> bool {
    value == nonce
        || expect(value, OCTET_STRING).is_some_and(|(inner, rest)| rest.is_empty() && inner.body == nonce)
}

enum Status {
    Good,
    Revoked(Option<u8>),
    Unknown,
}

struct Answer {
    status: Status,
    this_update: u64,
    next_update: Option<u64>,
}

/// A `BasicOCSPResponse`, borrowed.
struct BasicResponse<'a> {
    /// `tbsResponseData`, tag and length included: what is signed.
    tbs: Tlv<'a>,
    signature: &'a [u8],
    /// The first certificate (the signer's).
    signer: Option<&'a [u8]>,
    /// The nonce extension's value.
    nonce: Option<&'a [u8]>,
    /// `responses`.
    responses: &'a [u8],
}

impl<'a> BasicResponse<'a> {
    fn parse(der: &'a [u8]) -> Result<Self, OcspError> {
        let malformed = OcspError::Malformed;
        let (outer, rest) = expect(der, SEQUENCE).ok_or(malformed("not a SEQUENCE"))?;
        if !rest.is_empty() {
            return Err(malformed("bytes follow the response"));
        }
        let (status, rest) = expect(outer.body, ENUMERATED).ok_or(malformed("no response status"))?;
        match status.body {
            [0] => {}
            [code] => return Err(OcspError::Unsuccessful(*code)),
            _ => return Err(malformed("an unreadable response status")),
        }
        let (bytes, _) = expect(rest, CONTEXT_0).ok_or(malformed("no response bytes"))?;
        let (bytes, _) = expect(bytes.body, SEQUENCE).ok_or(malformed("unreadable response bytes"))?;
        let (kind, rest) = read(bytes.body).ok_or(malformed("no response type"))?;
        if kind.whole != OCSP_BASIC {
            return Err(malformed("not a basic OCSP response"));
        }
        let (basic, _) = expect(rest, OCTET_STRING).ok_or(malformed("no response"))?;
        let (basic, _) = expect(basic.body, SEQUENCE).ok_or(malformed("unreadable basic response"))?;
        let (tbs, rest) = expect(basic.body, SEQUENCE).ok_or(malformed("no response data"))?;
        let (algorithm, rest) = expect(rest, SEQUENCE).ok_or(malformed("no signature algorithm"))?;
        if algorithm.body != ECDSA_SHA384 {
            return Err(OcspError::Signer("not signed with ecdsa-with-SHA384"));
        }
        let (signature, rest) = expect(rest, BIT_STRING).ok_or(malformed("no signature"))?;
        let signature = bits(signature.body).ok_or(malformed("a signature with unused bits"))?;
        let signer = match expect(rest, CONTEXT_0) {
            Some((certs, _)) => {
                let (list, _) = expect(certs.body, SEQUENCE).ok_or(malformed("unreadable certificates"))?;
                read(list.body).map(|(first, _)| first.whole)
            }
            None => None,
        };
        let (responses, nonce) = parse_data(tbs.body)?;
        Ok(Self { tbs, signature, signer, nonce, responses })
    }

    /// The signer's certificate is issued by one of `issuers` (the CAs above the certificate
    /// asked about, up to the pinned root), valid now, and signed the response.
    fn check_signer(&self, issuers: &[&[u8]], now: u64) -> Result<(), OcspError> {
        let der = self.signer.ok_or(OcspError::Signer("the response carries no certificate"))?;
        let signer = Cert::parse(der).map_err(OcspError::Signer)?;
        let issued = issuers
            .iter()
            .filter_map(|der| Cert::parse(der).ok())
            .any(|issuer| issuer.subject == signer.issuer && issuer.is_ca && signer.signed_by(issuer.key));
        if !issued {
            return Err(OcspError::Signer("its certificate is not issued by a CA above the one asked about"));
        }
        if now < signer.not_before || now > signer.not_after {
            return Err(OcspError::Signer("its certificate is not valid now"));
        }
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, signer.key)
            .verify(self.tbs.whole, self.signature)
            .map_err(|_| OcspError::Signer("the signature does not verify"))
    }

    /// The answer about `wanted` (a DER `CertID`), if any.
    fn answer_for(&self, wanted: &[u8]) -> Result<Option<Answer>, OcspError> {
        let mut rest = self.responses;
        while !rest.is_empty() {
            let (single, next) =
                expect(rest, SEQUENCE).ok_or(OcspError::Malformed("an unreadable answer"))?;
            if let Some(answer) = parse_single(single.body, wanted)? {
                return Ok(Some(answer));
            }
            rest = next;
        }
        Ok(None)
    }
}

/// `ResponseData`: the `responses` list and the nonce extension's value.
fn parse_data(body: &[u8]) -> Result<(&[u8], Option<&[u8]>), OcspError> {
    let malformed = OcspError::Malformed;
    let mut rest = body;
    if let Some((_version, after)) = expect(rest, CONTEXT_0) {
        rest = after;
    }
    let (responder, rest) = read(rest).ok_or(malformed("no responder id"))?;
    if responder.tag != CONTEXT_1 && responder.tag != CONTEXT_2 {
        return Err(malformed("an unreadable responder id"));
    }
    let (_produced, rest) = expect(rest, GENERALIZED_TIME).ok_or(malformed("no producedAt"))?;
    let (responses, rest) = expect(rest, SEQUENCE).ok_or(malformed("no responses"))?;
    let mut nonce = None;
    if let Some((extensions, _)) = expect(rest, CONTEXT_1) {
        let (list, _) = expect(extensions.body, SEQUENCE).ok_or(malformed("unreadable extensions"))?;
        let mut items = list.body;
        while !items.is_empty() {
            let (extension, next) = expect(items, SEQUENCE).ok_or(malformed("an unreadable extension"))?;
            let (oid, mut value) = read(extension.body).ok_or(malformed("an extension without id"))?;
            if let Some((_critical, after)) = expect(value, 0x01) {
                value = after;
            }
            let (value, _) = expect(value, OCTET_STRING).ok_or(malformed("an extension without value"))?;
            if oid.whole == OCSP_NONCE {
                nonce = Some(value.body);
            }
            items = next;
        }
    }
    Ok((responses.body, nonce))
}

/// A `SingleResponse` if its `CertID` is `wanted`.
fn parse_single(body: &[u8], wanted: &[u8]) -> Result<Option<Answer>, OcspError> {
    let malformed = OcspError::Malformed;
    let (id, rest) = expect(body, SEQUENCE).ok_or(malformed("an answer without CertID"))?;
    if !same_cert_id(id.whole, wanted) {
        return Ok(None);
    }
    let (status, rest) = read(rest).ok_or(malformed("an answer without status"))?;
    let status = match status.tag {
        GOOD => Status::Good,
        UNKNOWN => Status::Unknown,
        0xa1 => Status::Revoked(revocation_reason(status.body)),
        _ => return Err(malformed("an unreadable certificate status")),
    };
    let (this_update, rest) = expect(rest, GENERALIZED_TIME).ok_or(malformed("no thisUpdate"))?;
    let this_update = generalized_time(this_update.body).ok_or(malformed("an unreadable thisUpdate"))?;
    let next_update = match expect(rest, CONTEXT_0) {
        Some((next, _)) => {
            let (time, _) =
                expect(next.body, GENERALIZED_TIME).ok_or(malformed("an unreadable nextUpdate"))?;
            Some(generalized_time(time.body).ok_or(malformed("an unreadable nextUpdate"))?)
        }
        None => None,
    };
    Ok(Some(Answer { status, this_update, next_update }))
}

/// `RevokedInfo ::= SEQUENCE { revocationTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }`.
fn revocation_reason(body: &[u8]) -> Option<u8> {
    let (_time, rest) = expect(body, GENERALIZED_TIME)?;
    let (reason, _) = expect(rest, CONTEXT_0)?;
    let (code, _) = expect(reason.body, ENUMERATED)?;
    code.body.first().copied()
}

/// Two `CertID`s name the same certificate: SHA-384 (with or without NULL parameters), equal
/// hashes and serial.
fn same_cert_id(got: &[u8], wanted: &[u8]) -> bool {
    /// Hash algorithm, issuer name hash, issuer key hash, serial.
    type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);
    fn parts(der: &[u8]) -> Option<Parts<'_>> {
        let (id, _) = expect(der, SEQUENCE)?;
        let (algorithm, rest) = expect(id.body, SEQUENCE)?;
        let (oid, params) = read(algorithm.body)?;
        (params.is_empty() || params == NULL).then_some(())?;
        let (name, rest) = expect(rest, OCTET_STRING)?;
        let (key, rest) = expect(rest, OCTET_STRING)?;
        let (serial, _) = expect(rest, INTEGER)?;
        Some((oid.whole, name.body, key.body, serial.whole))
    }
    matches!((parts(got), parts(wanted)), (Some(a), Some(b)) if a == b && a.0 == SHA384_OID)
}

/// A GeneralizedTime `YYYYMMDDHHMMSS[.fff]Z` in Unix seconds (fractions dropped).
fn generalized_time(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let whole = text.split_once('.').map_or(text, |(whole, fraction)| {
        if fraction.bytes().all(|b| b.is_ascii_digit()) { whole } else { "" }
    });
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| whole.get(range)?.parse::<i64>().ok();
    unix_seconds(num(0..4)?, num(4..6)?, num(6..8)?, num(8..10)?, num(10..12)?, num(12..14)?)
}

/// An OCSP client with a memory of good answers.
#[derive(Debug)]
pub struct GpuOcsp {
    http: reqwest::Client,
    url: String,
    cache_secs: u64,
    /// SHA-256 of a certificate's DER → until when its good answer is reused (Unix seconds).
    good: Mutex<HashMap<[u8; 32], u64>>,
}

impl GpuOcsp {
    /// A client of `config`'s responder.
    pub fn new(config: &GpuServicesConfig) -> Result<Self, OcspError> {
        let url = config.ocsp_url.clone();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(OcspError::Request { url, reason: "not an http(s) URL".into() });
        }
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = crate::attestation::pccs::http_client(timeout)
            .map_err(|e| OcspError::Request { url: url.clone(), reason: e.to_string() })?;
        Ok(Self { http, url, cache_secs: config.cache_secs, good: Mutex::new(HashMap::new()) })
    }

    /// Check certificates 1 to 3 of `chain` (DER, leaf first, already verified by
    /// [`super::verify_chain`] against `root`) at `now`, asking the responder only about those
    /// without a current good answer in memory.
    pub async fn check_chain<C: AsRef<[u8]>>(
        &self,
        chain: &[C],
        root: &[u8],
        now: u64,
    ) -> Result<(), OcspError> {
        let pinned = pinned(chain, root)?;
        for index in 1..CHAIN_LEN - 1 {
            let key: [u8; 32] = Sha256::digest(pinned[index]).into();
            if self.cached(&key, now) {
                continue;
            }
            let nonce: [u8; NONCE_LEN] = rand::random();
            let request = ocsp_request(pinned[index], pinned[index + 1], &nonce)?;
            let response = self.post(request).await?;
            let good = verify_response(&response, chain, root, index, Some(&nonce), now)?;
            let mut until = now.saturating_add(self.cache_secs);
            if let Some(next) = good.next_update {
                until = until.min(next);
            }
            self.remember(key, until, now);
        }
        Ok(())
    }

    fn cached(&self, key: &[u8; 32], now: u64) -> bool {
        let good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        good.get(key).is_some_and(|until| now <= *until)
    }

    fn remember(&self, key: [u8; 32], until: u64, now: u64) {
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if good.len() >= CACHE_ENTRIES {
            good.retain(|_, until| *until >= now);
        }
        if good.len() >= CACHE_ENTRIES {
            good.clear(); // all current: forgetting them costs only requests
        }
        good.insert(key, until);
    }

    async fn post(&self, request: Vec<u8>) -> Result<Vec<u8>, OcspError> {
        let failed = |reason: String| OcspError::Request { url: self.url.clone(), reason };
        let mut response = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/ocsp-request")
            .header("Accept", "application/ocsp-response")
            .body(request)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(failed(format!("a response over {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
#[path = "gpu_ocsp_tests.rs"]
mod tests;
