//! NVIDIA's real sample Hopper evidence (from the `nv-local-gpu-verifier` wheel, fetched with pip
//! into the cache, never copied) verified against the pinned device root, and each way of
//! breaking it refused with its own reason. Certificates from other chains are made with rcgen.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

// Only the sample helper: the rest of `tests/common` needs the inference engine's feature.
#[path = "common/gpu_samples.rs"]
mod gpu_samples;

use std::time::Instant;

use cocoon::attestation::gpu::rim::{Rim, RimError, compare, nvidia_rim_root, rim_ids};
use cocoon::attestation::gpu::{
    CHAIN_LEN, GpuArchitecture, GpuError, SIGNATURE_LEN, VerifiedGpu, chain_from_pem, nvidia_device_root,
    verify_chain, verify_evidence,
};
use cocoon::attestation::intel_pki::unix_seconds;
use gpu_samples::sample;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    IsCa, KeyPair, PKCS_ECDSA_P384_SHA384, PrintableString,
};
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};

/// 2025-01-01: inside every sample certificate's validity (2022-03-01 to 9999-12-31).
fn now() -> u64 {
    unix_seconds(2025, 1, 1, 0, 0, 0).unwrap()
}

fn chain() -> Vec<Vec<u8>> {
    chain_from_pem(&sample().chain_pem).unwrap()
}

fn verify(report: &[u8], chain: &[Vec<u8>], nonce: &[u8; 32]) -> Result<VerifiedGpu, GpuError> {
    verify_evidence(report, chain, nonce, now(), &nvidia_device_root().unwrap())
}

#[test]
fn the_sample_verifies_with_its_fields() {
    let s = sample();
    assert_eq!(s.report.len(), 4117);
    let v = verify(&s.report, &chain(), &s.nonce).unwrap();
    assert_eq!(v.driver_version, "550.90.07");
    assert_eq!(v.vbios_version, "96.00.9f.00.01");
    assert_eq!(
        hex::encode(v.fwid),
        "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
    );
    let m = &v.report.measurements;
    assert_eq!(m.len(), 64);
    assert!(m.iter().enumerate().all(|(i, b)| usize::from(b.index) == i + 1 && b.value.len() == 48));
    let nonzero: Vec<u8> = m.iter().filter(|b| b.value.iter().any(|x| *x != 0)).map(|b| b.index).collect();
    assert_eq!(
        nonzero,
        [2, 3, 4, 5, 6, 7, 8, 10, 12, 22, 23, 26, 27, 28, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41]
    );
    assert_eq!(
        hex::encode(&v.report.measurement(2).unwrap().value),
        "8048dfd18fe229bf16eb9d30cca0f11a24dafe6eb731de1462984645a0b189b77c4e4e17de727a5e19e3d07de51da338"
    );
    assert_eq!(v.report.opaque(17), Some(&b"1010\0"[..]), "project");
    assert_eq!(
        hex::encode(v.report.responder_nonce),
        "b4b8a06aaaa35542839388e159d447a5d6f6194998fd86513e2d591ccf640985"
    );
}

#[test]
fn a_kept_chain_verifies_later_reports() {
    let s = sample();
    let kept = verify_chain(&chain(), &nvidia_device_root().unwrap(), now()).unwrap();
    assert_eq!(kept.verify_report(&s.report, &s.nonce, now()).unwrap().fwid, *kept.fwid());
    assert_eq!(kept.verify_report(&s.report, &[0; 32], now()), Err(GpuError::NonceMismatch));
    assert_eq!(
        kept.verify_report(&s.report, &s.nonce, 0),
        Err(GpuError::CertificateTime { index: 0, now: 0 })
    );
}

#[test]
fn another_nonce_is_refused() {
    let s = sample();
    let mut other = s.nonce;
    other[0] ^= 1;
    assert_eq!(verify(&s.report, &chain(), &other), Err(GpuError::NonceMismatch));
    // The report rewritten to carry that nonce no longer verifies.
    let mut rewritten = s.report.clone();
    rewritten[4..36].copy_from_slice(&other);
    assert_eq!(verify(&rewritten, &chain(), &other), Err(GpuError::ReportSignature));
}

#[test]
fn altered_reports_are_refused() {
    let s = sample();
    // Byte 52 is the first byte of measurement 1; 3565 the responder nonce; the last, the signature.
    for offset in [52, 107, 3565, s.report.len() - 1] {
        let mut altered = s.report.clone();
        altered[offset] ^= 1;
        assert_eq!(verify(&altered, &chain(), &s.nonce), Err(GpuError::ReportSignature), "byte {offset}");
    }
    let mut longer = s.report.clone();
    longer.push(0);
    assert!(matches!(verify(&longer, &chain(), &s.nonce), Err(GpuError::Report(_))));
}

#[test]
fn a_chain_missing_an_intermediate_is_refused() {
    let s = sample();
    for missing in 1..CHAIN_LEN - 1 {
        let mut short = chain();
        short.remove(missing);
        assert_eq!(verify(&s.report, &short, &s.nonce), Err(GpuError::ChainLength { found: 4 }));
        // Padded back to five with the root, the hole shows as an issuer mismatch.
        short.push(short[3].clone());
        assert_eq!(
            verify(&s.report, &short, &s.nonce),
            Err(GpuError::IssuerMismatch { index: missing - 1 }),
            "without certificate {missing}"
        );
    }
}

#[test]
fn the_gpus_copy_of_the_root_is_replaced_by_the_pinned_one() {
    let s = sample();
    let mut own_root = chain();
    own_root[CHAIN_LEN - 1] = vec![0; 8]; // ignored, as NVIDIA's verifier ignores it
    assert!(verify(&s.report, &own_root, &s.nonce).is_ok());
    // Another trusted root than NVIDIA's: the GH100 identity CA is not issued by it.
    let (_, other_root, _) = synthetic_chain(None);
    let result = verify_evidence(&s.report, &chain(), &s.nonce, now(), &other_root);
    assert_eq!(result, Err(GpuError::IssuerMismatch { index: 3 }));
}

#[test]
fn validity_is_checked_at_the_given_time() {
    let s = sample();
    let before = unix_seconds(2021, 1, 1, 0, 0, 0).unwrap();
    let result = verify_evidence(&s.report, &chain(), &s.nonce, before, &nvidia_device_root().unwrap());
    // The provisioner CA (certificate 2) was issued on 2022-03-01.
    assert_eq!(result, Err(GpuError::CertificateTime { index: 2, now: before }));
    let late = unix_seconds(9999, 12, 31, 23, 59, 59).unwrap();
    assert!(verify_evidence(&s.report, &chain(), &s.nonce, late, &nvidia_device_root().unwrap()).is_ok());
    let after = late + 1;
    let result = verify_evidence(&s.report, &chain(), &s.nonce, after, &nvidia_device_root().unwrap());
    assert_eq!(result, Err(GpuError::CertificateTime { index: 0, now: after }));
}

fn p384_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap()
}

fn params(names: &[(DnType, DnValue)], ca: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (ty, value) in names {
        dn.push(ty.clone(), value.clone());
    }
    params.distinguished_name = dn;
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
}

fn printable(s: &str) -> DnValue {
    DnValue::PrintableString(PrintableString::try_from(s).unwrap())
}

/// A leaf whose issuer name is byte for byte the sample's device (BROM) certificate subject,
/// signed by another key with that name.
#[test]
fn a_leaf_from_another_chain_is_refused() {
    let s = sample();
    let brom = [
        (DnType::CustomDnType(vec![2, 5, 4, 5]), printable("41431D480FE5E87274")),
        (DnType::CountryName, printable("US")),
        (DnType::OrganizationName, DnValue::Utf8String("NVIDIA Corporation".into())),
        (DnType::CommonName, DnValue::Utf8String("GH100 A01 GSP BROM".into())),
    ];
    let impostor_key = p384_key();
    let impostor = params(&brom, true).self_signed(&impostor_key).unwrap();
    let leaf = params(&[(DnType::CommonName, "GH100 A01 GSP FMC LF".into())], false);
    let leaf = leaf.signed_by(&p384_key(), &impostor, &impostor_key).unwrap();
    let mut forged = chain();
    forged[0] = leaf.der().to_vec();
    assert_eq!(verify(&s.report, &forged, &s.nonce), Err(GpuError::CertificateSignature { index: 0 }));
    // A leaf that names another issuer altogether.
    let (other, _, _) = synthetic_chain(None);
    forged[0] = other[0].clone();
    assert_eq!(verify(&s.report, &forged, &s.nonce), Err(GpuError::IssuerMismatch { index: 0 }));
}

/// The DER of a Hopper FWID extension: version, and the SHA-384 FWID (the device key omitted).
fn fwid_extension(fwid: &[u8; 48]) -> Vec<u8> {
    let sha384 = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    let mut digest = vec![0x30, 11 + 2 + 48];
    digest.extend_from_slice(&sha384);
    digest.extend_from_slice(&[0x04, 48]);
    digest.extend_from_slice(fwid);
    let mut out = vec![0x30, u8::try_from(3 + digest.len()).unwrap(), 0x02, 0x01, 0x01];
    out.extend_from_slice(&digest);
    out
}

/// A five-certificate P-384 chain of our own (leaf first, root last), its root, and the leaf's
/// PKCS#8 key; the leaf carries `fwid` in a Hopper FWID extension, if given.
fn synthetic_chain(fwid: Option<[u8; 48]>) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    synthetic_chain_of("NVIDIA GH100 Identity", fwid)
}

/// [`synthetic_chain`] with `identity` as the identity CA's common name.
fn synthetic_chain_of(identity: &str, fwid: Option<[u8; 48]>) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let root_key = p384_key();
    let root = params(&[(DnType::CommonName, "test root".into())], true).self_signed(&root_key).unwrap();
    let mut issuer: (Certificate, KeyPair) = (root, root_key);
    let mut certs = vec![issuer.0.der().to_vec()];
    for name in [identity, "provisioner", "device"] {
        let key = p384_key();
        let cert =
            params(&[(DnType::CommonName, name.into())], true).signed_by(&key, &issuer.0, &issuer.1).unwrap();
        certs.push(cert.der().to_vec());
        issuer = (cert, key);
    }
    let leaf_key = p384_key();
    let mut leaf = params(&[(DnType::CommonName, "leaf".into())], false);
    if let Some(fwid) = fwid {
        leaf.custom_extensions =
            vec![CustomExtension::from_oid_content(&[2, 23, 133, 5, 4, 1], fwid_extension(&fwid))];
    }
    certs.push(leaf.signed_by(&leaf_key, &issuer.0, &issuer.1).unwrap().der().to_vec());
    certs.reverse();
    let root = certs[CHAIN_LEN - 1].clone();
    (certs, root, leaf_key.serialize_der())
}

/// The sample report re-signed with `pkcs8`.
fn resigned(pkcs8: &[u8]) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8, &rng).unwrap();
    let mut report = sample().report.clone();
    let signed = report.len() - SIGNATURE_LEN;
    let signature = key.sign(&rng, &report[..signed]).unwrap();
    report[signed..].copy_from_slice(signature.as_ref());
    report
}

#[test]
fn the_leaf_fwid_must_match_the_reports() {
    let s = sample();
    let real = verify(&s.report, &chain(), &s.nonce).unwrap().fwid;
    let check = |fwid| {
        let (chain, root, key) = synthetic_chain(fwid);
        verify_evidence(&resigned(&key), &chain, &s.nonce, now(), &root)
    };
    assert_eq!(check(Some(real)).unwrap().fwid, real, "our own chain and signature");
    let mut other = real;
    other[47] ^= 1;
    assert_eq!(check(Some(other)), Err(GpuError::FwidMismatch));
    assert_eq!(check(None), Err(GpuError::FwidMissing("attestation certificate")));
}

#[test]
fn the_architecture_comes_from_the_identity_ca() {
    let s = sample();
    let v = verify(&s.report, &chain(), &s.nonce).unwrap();
    assert_eq!(v.architecture, GpuArchitecture::Hopper);
    assert_eq!(v.architecture.name(), "hopper");
    let fwid = Some(v.fwid);
    let check = |identity: &str| {
        let (chain, root, key) = synthetic_chain_of(identity, fwid);
        verify_evidence(&resigned(&key), &chain, &s.nonce, now(), &root)
    };
    assert_eq!(check("NVIDIA GB100 Identity"), Err(GpuError::Unsupported(GpuArchitecture::Blackwell)));
    assert_eq!(check("identity"), Err(GpuError::UnknownArchitecture));
    assert_eq!(check("NVIDIA GH100 Identity").unwrap().architecture, GpuArchitecture::Hopper);
}

#[test]
fn the_device_id_is_the_device_certificates_hash() {
    let s = sample();
    let v = verify(&s.report, &chain(), &s.nonce).unwrap();
    assert_eq!(hex::encode(v.device_id), DEVICE_ID_HEX);
    let kept = verify_chain(&chain(), &nvidia_device_root().unwrap(), now()).unwrap();
    assert_eq!(kept.device_id(), &v.device_id);
    assert_eq!(kept.architecture(), GpuArchitecture::Hopper);
    // Another boot (another leaf) of the same GPU keeps it; another GPU has another.
    let (other, root, key) = synthetic_chain(Some(v.fwid));
    let theirs = verify_evidence(&resigned(&key), &other, &s.nonce, now(), &root).unwrap();
    assert_ne!(theirs.device_id, v.device_id);
}

/// SHA-256 of the sample's device (BROM) certificate.
const DEVICE_ID_HEX: &str = "7ee4320b217b182b6551836a4ca0b72d5e6e60952a70d4b2f73b8726b4a9759a";

/// NVIDIA's sample RIMs in the wheel, each with its signing chain (expired since mid-2025).
const SAMPLE_RIMS: [&str; 4] = [
    "1010_0200_882_96005E0001_PROD",
    "1010_0205_862_9600740020_PROD",
    "g520_0202_885_96006D0008_PROD",
    "Driver_RIM_test_no_gpu",
];

fn sample_rim(name: &str) -> String {
    String::from_utf8(gpu_samples::wheel_file(&format!("verifier/samples/{name}.swidtag"))).unwrap()
}

/// 2024-06-01: inside every sample RIM chain's validity.
fn rim_time() -> u64 {
    unix_seconds(2024, 6, 1, 0, 0, 0).unwrap()
}

#[test]
fn nvidias_sample_rims_verify_with_their_xml_signatures() {
    let root = nvidia_rim_root().unwrap();
    for name in SAMPLE_RIMS {
        let xml = sample_rim(name);
        let rim = Rim::parse(&xml, &root, rim_time()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(rim.measurements.len() >= 32, "{name}");
    }
    let rim = Rim::parse(&sample_rim(SAMPLE_RIMS[0]), &root, rim_time()).unwrap();
    assert_eq!(rim.version, "96.00.5E.00.01");
    assert!(rim.measurements[&1].active);
    assert_eq!(
        hex::encode(&rim.measurements[&1].alternatives[0]),
        "c3f65ef79a19c029868cd7ce54b10e44f192444edb3506dde29cef2aac4e916c90a4f438e55aa7581a9e384c74d82db6"
    );
}

#[test]
fn an_altered_or_expired_rim_is_refused() {
    let root = nvidia_rim_root().unwrap();
    let xml = sample_rim(SAMPLE_RIMS[0]);
    let golden =
        "c3f65ef79a19c029868cd7ce54b10e44f192444edb3506dde29cef2aac4e916c90a4f438e55aa7581a9e384c74d82db6";
    let altered = xml.replacen(golden, &golden.replacen('c', "d", 1), 1);
    assert_ne!(altered, xml);
    assert_eq!(
        Rim::parse(&altered, &root, rim_time()),
        Err(RimError::Signature("the document's digest differs"))
    );
    let inactive = xml.replacen("active=\"True\"", "active=\"False\"", 1);
    assert_eq!(
        Rim::parse(&inactive, &root, rim_time()),
        Err(RimError::Signature("the document's digest differs"))
    );
    let late = unix_seconds(2025, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(Rim::parse(&xml, &root, late), Err(RimError::Signature("a certificate is not valid now")));
    // The GPU device root is not the RIM root.
    let device_root = nvidia_device_root().unwrap();
    assert_eq!(
        Rim::parse(&xml, &device_root, rim_time()),
        Err(RimError::Signature("the certificate chain to NVIDIA's RIM root"))
    );
}

#[test]
fn the_sample_report_is_compared_with_rims() {
    let s = sample();
    let v = verify(&s.report, &chain(), &s.nonce).unwrap();
    let ids = rim_ids(&v.report, v.architecture).unwrap();
    assert_eq!(ids.driver, "NV_GPU_DRIVER_GH100_550.90.07");
    assert_eq!(ids.vbios, "NV_GPU_VBIOS_1010_0200_882_96009F0001");
    // The wheel has no RIM of the sample's VBIOS (96.00.9f.00.01) or driver: NVIDIA's older
    // VBIOS RIM of the same board does not match it.
    let root = nvidia_rim_root().unwrap();
    let driver = Rim::parse(&sample_rim("Driver_RIM_test_no_gpu"), &root, rim_time()).unwrap();
    let vbios = Rim::parse(&sample_rim(SAMPLE_RIMS[0]), &root, rim_time()).unwrap();
    assert!(matches!(compare(&v.report, &driver, &vbios), Err(RimError::Mismatch { .. })));
}

/// Cost of verification on the sample: cold (chain and report) and with a kept chain (report
/// signature and checks). `cargo test --release --test gpu_evidence -- --ignored --nocapture`.
#[test]
#[ignore = "timing, prints figures"]
fn verification_cost() {
    let s = sample();
    let (chain, root) = (chain(), nvidia_device_root().unwrap());
    let kept = verify_chain(&chain, &root, now()).unwrap();
    let time = |name: &str, f: &dyn Fn()| {
        let runs = 300u32;
        for _ in 0..10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..runs {
            f();
        }
        println!("{name}: {:.1} µs per report", start.elapsed().as_secs_f64() * 1e6 / f64::from(runs));
    };
    time("cold (parse, nonce, 4 certificate signatures, report signature, FWID)", &|| {
        verify_evidence(&s.report, &chain, &s.nonce, now(), &root).unwrap();
    });
    time("kept chain (parse, nonce, report signature, FWID)", &|| {
        kept.verify_report(&s.report, &s.nonce, now()).unwrap();
    });
    time("chain alone", &|| {
        verify_chain(&chain, &root, now()).unwrap();
    });
}
