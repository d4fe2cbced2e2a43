//! OCSP on a chain of our own (rcgen, P-384) with responses built here: NVIDIA's responder is
//! not reachable from the test machines, so every response is made and signed by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, PKCS_ECDSA_P384_SHA384,
};
use ring::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair};

use super::*;

const NOW: u64 = 1_800_000_000;
const NONCE: [u8; NONCE_LEN] = [0x42; NONCE_LEN];

struct Issued {
    cert: Certificate,
    key: KeyPair,
}

fn issue(name: &str, ca: bool, issuer: Option<&Issued>) -> Issued {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, &issuer.cert, &issuer.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued { cert, key }
}

/// Root, identity, ICA, device, leaf: DER chain (leaf first) and the issued certificates.
fn chain() -> (Vec<Vec<u8>>, Vec<Issued>) {
    let root = issue("root", true, None);
    let identity = issue("NVIDIA GH100 Identity", true, Some(&root));
    let ica = issue("ica", true, Some(&identity));
    let device = issue("device", true, Some(&ica));
    let leaf = issue("leaf", false, Some(&device));
    let issued = vec![leaf, device, ica, identity, root];
    (issued.iter().map(|i| i.cert.der().to_vec()).collect(), issued)
}

fn time(t: u64) -> Vec<u8> {
    // Unix seconds to YYYYMMDDHHMMSSZ (days from civil, inverted).
    let (days, secs) = (t / 86_400, t % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let text = format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60);
    der(GENERALIZED_TIME, &[text.as_bytes()])
}

/// What a built response says.
struct Spec<'a> {
    signer: &'a Issued,
    cert_id: Vec<u8>,
    status: Vec<u8>,
    this_update: u64,
    next_update: Option<u64>,
    nonce: Option<[u8; NONCE_LEN]>,
}

fn good(signer: &Issued, cert_id: Vec<u8>) -> Spec<'_> {
    Spec {
        signer,
        cert_id,
        status: vec![GOOD, 0],
        this_update: NOW - 60,
        next_update: Some(NOW + 3600),
        nonce: Some(NONCE),
    }
}

fn build(spec: &Spec<'_>) -> Vec<u8> {
    let mut single = vec![spec.cert_id.clone(), spec.status.clone(), time(spec.this_update)];
    if let Some(next) = spec.next_update {
        single.push(der(CONTEXT_0, &[&time(next)]));
    }
    let single: Vec<&[u8]> = single.iter().map(Vec::as_slice).collect();
    let responder = der(CONTEXT_2, &[&der(OCTET_STRING, &[&[7; 20]])]);
    let mut data = vec![responder, time(NOW - 30), der(SEQUENCE, &[&der(SEQUENCE, &single)])];
    if let Some(nonce) = spec.nonce {
        let value = der(OCTET_STRING, &[&der(OCTET_STRING, &[&nonce])]);
        data.push(der(CONTEXT_1, &[&der(SEQUENCE, &[&der(SEQUENCE, &[OCSP_NONCE, &value])])]));
    }
    let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let tbs = der(SEQUENCE, &data);
    let rng = ring::rand::SystemRandom::new();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &spec.signer.key.serialize_der(), &rng)
            .unwrap();
    let signature = key.sign(&rng, &tbs).unwrap();
    let bits = [&[0u8][..], signature.as_ref()].concat();
    let certs = der(CONTEXT_0, &[&der(SEQUENCE, &[spec.signer.cert.der()])]);
    let basic = der(SEQUENCE, &[&tbs, &der(SEQUENCE, &[ECDSA_SHA384]), &der(BIT_STRING, &[&bits]), &certs]);
    let bytes = der(SEQUENCE, &[OCSP_BASIC, &der(OCTET_STRING, &[&basic])]);
    der(SEQUENCE, &[&[ENUMERATED, 1, 0], &der(CONTEXT_0, &[&bytes])])
}

fn check(chain: &[Vec<u8>], response: &[u8], index: usize) -> Result<OcspGood, OcspError> {
    verify_response(response, chain, &chain[CHAIN_LEN - 1], index, Some(&NONCE), NOW)
}

#[test]
fn a_good_answer_signed_by_the_issuers_responder_is_accepted() {
    let (chain, issued) = chain();
    let responder = issue("responder", false, Some(&issued[2]));
    let id = cert_id(&chain[1], &chain[2]).unwrap();
    let ok = check(&chain, &build(&good(&responder, id.clone())), 1).unwrap();
    assert_eq!(ok, OcspGood { this_update: NOW - 60, next_update: Some(NOW + 3600) });
    // The issuer itself, or a CA higher up, may sign too.
    assert!(check(&chain, &build(&good(&issued[2], id.clone())), 1).is_ok());
    assert!(check(&chain, &build(&good(&issued[4], id)), 1).is_ok());
    // And so for the ICA and the identity CA.
    for index in [2, 3] {
        let id = cert_id(&chain[index], &chain[index + 1]).unwrap();
        assert!(check(&chain, &build(&good(&issued[index + 1], id)), index).is_ok(), "{index}");
    }
}

#[test]
fn the_request_names_the_certificate_with_sha384_and_the_nonce() {
    let (chain, _) = chain();
    let request = ocsp_request(&chain[1], &chain[2], &NONCE).unwrap();
    let id = cert_id(&chain[1], &chain[2]).unwrap();
    let find = |needle: &[u8]| request.windows(needle.len()).any(|w| w == needle);
    assert!(find(&id) && find(SHA384_OID) && find(OCSP_NONCE) && find(&NONCE));
    let (outer, rest) = expect(&request, SEQUENCE).unwrap();
    assert!(rest.is_empty() && outer.whole.len() == request.len());
    // A different serial is a different CertID.
    assert_ne!(id, cert_id(&chain[2], &chain[3]).unwrap());
}

#[test]
fn revoked_and_unknown_certificates_are_refused() {
    let (chain, issued) = chain();
    let id = cert_id(&chain[1], &chain[2]).unwrap();
    let mut spec = good(&issued[2], id);
    let revoked_info = der(0xa1, &[&time(NOW - 10), &der(CONTEXT_0, &[&[ENUMERATED, 1, 1]])]);
    spec.status = revoked_info;
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Revoked { index: 1, reason: Some(1) }));
    spec.status = vec![UNKNOWN, 0];
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Unknown(1)));
}

#[test]
fn a_self_vouching_or_foreign_responder_is_refused() {
    let (chain, issued) = chain();
    let id = cert_id(&chain[1], &chain[2]).unwrap();
    // The device key (the one a revocation is about) signs its own "good".
    let own = issue("responder", false, Some(&issued[1]));
    assert!(matches!(check(&chain, &build(&good(&own, id.clone())), 1), Err(OcspError::Signer(_))));
    let stranger = issue("stranger", true, None);
    assert!(matches!(check(&chain, &build(&good(&stranger, id.clone())), 1), Err(OcspError::Signer(_))));
    // A byte of the signed data changed: the producedAt time's last digit.
    let mut altered = build(&good(&issued[2], id));
    let at = altered.windows(15).position(|w| w == &time(NOW - 30)[2..]).unwrap() + 13;
    altered[at] ^= 1;
    assert_eq!(check(&chain, &altered, 1), Err(OcspError::Signer("the signature does not verify")));
}

#[test]
fn nonce_certificate_and_time_must_match() {
    let (chain, issued) = chain();
    let id = cert_id(&chain[1], &chain[2]).unwrap();
    let signer = &issued[2];
    let mut spec = good(signer, id.clone());
    spec.nonce = Some([1; NONCE_LEN]);
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Nonce));
    spec.nonce = None;
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Nonce));
    // Without a nonce sent, none is needed.
    assert!(verify_response(&build(&spec), &chain, &chain[4], 1, None, NOW).is_ok());
    // An answer about another certificate.
    let other = good(signer, cert_id(&chain[2], &chain[3]).unwrap());
    assert_eq!(check(&chain, &build(&other), 1), Err(OcspError::NoAnswer(1)));
    // Out of its window.
    let mut spec = good(signer, id.clone());
    spec.next_update = Some(NOW - 1);
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Stale { index: 1, now: NOW }));
    let mut spec = good(signer, id.clone());
    spec.this_update = NOW + CLOCK_SKEW_SECS + 1;
    assert_eq!(check(&chain, &build(&spec), 1), Err(OcspError::Stale { index: 1, now: NOW }));
    let mut spec = good(signer, id);
    spec.next_update = None;
    assert!(check(&chain, &build(&spec), 1).is_ok());
    // The leaf and the root are never asked about.
    assert_eq!(check(&chain, &build(&good(signer, vec![])), 0), Err(OcspError::NoAnswer(0)));
    assert_eq!(check(&chain, &build(&good(signer, vec![])), 4), Err(OcspError::NoAnswer(4)));
}

#[test]
fn malformed_and_unsuccessful_responses_are_refused() {
    let (chain, _) = chain();
    // tryLater (3).
    let try_later = der(SEQUENCE, &[&[ENUMERATED, 1, 3]]);
    assert_eq!(check(&chain, &try_later, 1), Err(OcspError::Unsuccessful(3)));
    for bytes in [&[][..], &[0x30, 0x00], &[0x30, 0x03, 0x0a, 0x01, 0x00], &[0xff; 10]] {
        assert!(matches!(check(&chain, bytes, 1), Err(OcspError::Malformed(_))), "{bytes:?}");
    }
}

#[test]
fn generalized_times_with_fractions_read() {
    assert_eq!(generalized_time(b"20270115083000Z"), unix_seconds(2027, 1, 15, 8, 30, 0));
    assert_eq!(generalized_time(b"20270115083000.123Z"), unix_seconds(2027, 1, 15, 8, 30, 0));
    assert_eq!(generalized_time(b"20270115083000"), None);
    assert_eq!(generalized_time(b"2027011508300Z"), None);
    assert_eq!(time(NOW), der(GENERALIZED_TIME, &[b"20270115080000Z"]));
}

#[test]
fn the_default_config_is_offline_with_nvidias_urls() {
    let config = GpuServicesConfig::default();
    assert!(!config.require_ocsp && !config.require_rim);
    assert_eq!(config.ocsp_url, "https://ocsp.ndis.nvidia.com/");
    assert_eq!(config.rim_url, "https://rim.attestation.nvidia.com/v1/rim/");
    let parsed: GpuServicesConfig = toml::from_str("require_ocsp = true\ntimeout_secs = 3").unwrap();
    assert_eq!(parsed, GpuServicesConfig { require_ocsp: true, timeout_secs: 3, ..config.clone() });
    assert!(toml::from_str::<GpuServicesConfig>("ocsp = true").is_err(), "unknown keys are refused");
    let dumped = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<GpuServicesConfig>(&dumped).unwrap(), config);
}

/// A loopback responder answering every request about certificate `index` with a good answer
/// signed by `signer`, echoing the request's nonce; counts requests.
async fn responder(chain: Vec<Vec<u8>>, signer: Arc<Issued>) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (chain, signer, hits) = (chain.clone(), signer.clone(), counted.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                // The nonce is the request's last 32 bytes; the CertID is recomputed for each
                // certificate until one appears in the request.
                let nonce: [u8; NONCE_LEN] = body[body.len() - NONCE_LEN..].try_into().unwrap();
                let id = (1..CHAIN_LEN - 1)
                    .map(|i| cert_id(&chain[i], &chain[i + 1]).unwrap())
                    .find(|id| body.windows(id.len()).any(|w| w == id.as_slice()))
                    .unwrap();
                let mut spec = good(&signer, id);
                spec.nonce = Some(nonce);
                build(&spec)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn the_client_asks_about_three_certificates_once_then_remembers() {
    let (chain, mut issued) = chain();
    let root = Arc::new(issued.pop().unwrap());
    let (url, hits) = responder(chain.clone(), root).await;
    let config = GpuServicesConfig { ocsp_url: url, require_ocsp: true, ..Default::default() };
    let ocsp = GpuOcsp::new(&config).unwrap();
    ocsp.check_chain(&chain, &chain[4], NOW).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    ocsp.check_chain(&chain, &chain[4], NOW + 60).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3, "answered from memory");
    // Past the answers' nextUpdate (NOW + 3600) they are asked again.
    let later = NOW + 3601;
    let err = ocsp.check_chain(&chain, &chain[4], later).await.unwrap_err();
    assert_eq!(err, OcspError::Stale { index: 1, now: later }, "the fake answers with NOW's window");
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unreachable_responder_is_a_request_error() {
    let (chain, _) = chain();
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    let config = GpuServicesConfig { ocsp_url: url, timeout_secs: 2, ..Default::default() };
    let err = GpuOcsp::new(&config).unwrap().check_chain(&chain, &chain[4], NOW).await.unwrap_err();
    assert!(matches!(err, OcspError::Request { .. }), "{err:?}");
    assert!(GpuOcsp::new(&GpuServicesConfig { ocsp_url: "ftp://x".into(), ..Default::default() }).is_err());
}
