//! Tests of the SEV-SNP verifier on AMD's real evidence shipped in the `sev` crate (a Milan
//! report with its VCEK and chain, and a Turin VCEK), located through `cargo metadata` at test
//! time and never copied into this repository.

use std::time::Instant;

use super::*;
use crate::attestation::intel_pki::unix_seconds;
use crate::attestation::sev_samples::read;
use sev::certs::snp::builtin;
use x509_cert::der::Encode;

/// 2025-01-01T00:00:00Z, inside the Milan VCEK's validity (2023-04-03 to 2030-04-03).
const JAN_2025: u64 = 1_735_689_600;

/// The real Milan evidence: report, VCEK (DER), ASK and ARK (DER, split from the PEM chain).
struct Evidence {
    report: Vec<u8>,
    vcek: Vec<u8>,
    ask: Vec<u8>,
    ark: Vec<u8>,
}

fn milan() -> Evidence {
    let report = hex::decode(String::from_utf8(read("report_milan.hex")).unwrap().trim()).unwrap();
    let chain = Certificate::load_pem_chain(&read("cert_chain_milan")).unwrap();
    assert_eq!(chain.len(), 2, "ASK then ARK");
    Evidence {
        report,
        vcek: read("vcek_milan.der"),
        ask: chain[0].to_der().unwrap(),
        ark: chain[1].to_der().unwrap(),
    }
}

/// The report's own report data.
fn report_data(report: &[u8]) -> [u8; 64] {
    report[REPORT_DATA..REPORT_DATA + 64].try_into().unwrap()
}

/// A policy the real report meets exactly: its TCB, VMPL 0, its measurement, Milan only.
fn policy(report: &[u8]) -> SnpPolicy {
    SnpPolicy {
        min_tcb: SnpTcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 },
        allowed_vmpls: vec![0],
        allow_debug: false,
        allowed_measurements: vec![report[MEASUREMENT..MEASUREMENT + 48].try_into().unwrap()],
        allowed_products: vec![SnpProduct::Milan],
    }
}

fn check(e: &Evidence, expected: &[u8; 64], policy: &SnpPolicy, now: u64) -> Result<SnpClaims, SnpError> {
    verify(&e.report, &e.vcek, &e.ask, &e.ark, expected, policy, now)
}

#[test]
fn real_milan_report_verifies() {
    let e = milan();
    let claims = check(&e, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap();
    assert_eq!(claims.product, SnpProduct::Milan);
    assert_eq!(claims.reported_tcb, SnpTcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 });
    assert_eq!(claims.report.version, 2);
    assert_eq!(claims.report.policy, 0x30000);
    assert_eq!(claims.report.vmpl, 0);
    assert_eq!(claims.report.cpuid_family, None);
    assert_eq!(hex::encode(&claims.report.chip_id[..8]), "d49554ec717f4e5b");
    assert_eq!(
        hex::encode(claims.report.measurement),
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d\
         3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    // The ARK and ASK in PEM are read too.
    let (ask, ark) = (builtin::milan::ASK, builtin::milan::ARK);
    verify(&e.report, &e.vcek, ask, ark, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap();
    // An empty measurement list allows none, like the default policy (TCB 0, VMPL 0, any product).
    let none = SnpPolicy { allowed_measurements: Vec::new(), ..policy(&e.report) };
    let refused = verify(&e.report, &e.vcek, ask, ark, &report_data(&e.report), &none, JAN_2025);
    assert!(matches!(refused, Err(SnpError::MeasurementNotAllowed(_))), "{refused:?}");
    let refused = check(&e, &report_data(&e.report), &SnpPolicy::default(), JAN_2025);
    assert!(matches!(refused, Err(SnpError::MeasurementNotAllowed(_))), "{refused:?}");
}

#[test]
fn flipped_report_data_breaks_the_signature() {
    let mut e = milan();
    let expected = report_data(&e.report);
    e.report[REPORT_DATA] ^= 1;
    let err = check(&e, &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Signature(_)), "{err:?}");
    assert!(err.is_senders_fault());
}

#[test]
fn other_expected_report_data_is_a_mismatch() {
    let e = milan();
    let mut expected = report_data(&e.report);
    expected[63] ^= 1;
    let err = check(&e, &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert_eq!(err, SnpError::ReportDataMismatch);
}

/// The `sev` crate re-encodes the report before checking it and writes zeros over reserved
/// bytes, so it misses this; the raw bytes are what was signed.
#[test]
fn flipped_reserved_bytes_break_the_signature() {
    for offset in [0x04C, 0x182, 0x188, 0x1EB, 0x1F8, 0x29F] {
        let mut e = milan();
        e.report[offset] ^= 0x40;
        let err = check(&e, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap_err();
        assert!(matches!(err, SnpError::Signature(_)), "offset {offset:#x}: {err:?}");
    }
}

#[test]
fn signature_padding_and_length_are_checked() {
    let mut e = milan();
    e.report[SIG_R + 60] = 1;
    let err = check(&e, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Signature(_)), "{err:?}");
    let mut e = milan();
    e.report.pop();
    let err = check(&e, &[0; 64], &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Malformed(_)), "{err:?}");
}

#[test]
fn certificates_are_checked_at_the_given_time() {
    let e = milan();
    let expected = report_data(&e.report);
    let after = unix_seconds(2030, 4, 4, 0, 0, 0).unwrap();
    let err = check(&e, &expected, &policy(&e.report), after).unwrap_err();
    assert!(matches!(err, SnpError::CertificateTime { certificate: "VCEK", .. }), "{err:?}");
    assert!(!err.is_senders_fault());
    let before = unix_seconds(2023, 4, 3, 0, 0, 0).unwrap();
    let err = check(&e, &expected, &policy(&e.report), before).unwrap_err();
    assert!(matches!(err, SnpError::CertificateTime { certificate: "VCEK", .. }), "{err:?}");
    // A cached chain is checked again at each report's time.
    let vcek = VerifiedVcek::verify(&e.vcek, &e.ask, &e.ark, JAN_2025).unwrap();
    let err = verify_report(&e.report, &vcek, &expected, &policy(&e.report), after).unwrap_err();
    assert!(matches!(err, SnpError::CertificateTime { .. }), "{err:?}");
}

#[test]
fn another_chips_vcek_is_refused() {
    let e = milan();
    let expected = report_data(&e.report);
    let turin_vcek = read("vcek_turin.der");
    // The Milan ASK did not sign it.
    let err =
        verify(&e.report, &turin_vcek, &e.ask, &e.ark, &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Chain(_)), "{err:?}");
    // With its own (genuine, pinned) Turin chain, its key did not sign the Milan report.
    let turin = Certificate::load_pem_chain(&read("cert_chain_turin")).unwrap();
    let (ask, ark) = (turin[0].to_der().unwrap(), turin[1].to_der().unwrap());
    let vcek = VerifiedVcek::verify(&turin_vcek, &ask, &ark, JAN_2025).unwrap();
    assert_eq!(vcek.product(), SnpProduct::Turin);
    assert_eq!(vcek.tcb(), SnpTcb { fmc: 0, bootloader: 0, tee: 0, snp: 0, microcode: 9 });
    assert_eq!(vcek.hw_id, hex::decode("1e550a8ee5cf9f4d").unwrap());
    let err = verify_report(&e.report, &vcek, &expected, &SnpPolicy::default(), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Signature(_)), "{err:?}");
}

#[test]
fn a_vcek_for_another_chip_or_tcb_is_refused_even_if_it_signed() {
    let e = milan();
    let vcek = VerifiedVcek::verify(&e.vcek, &e.ask, &e.ark, JAN_2025).unwrap();
    let report = SnpReport::parse(&e.report).unwrap();
    assert!(vcek.bind(report.clone()).is_ok());
    let mut other_chip = report.clone();
    other_chip.chip_id[0] ^= 1;
    assert_eq!(vcek.bind(other_chip).unwrap_err(), SnpError::ChipIdMismatch);
    let mut other_tcb = report.clone();
    other_tcb.reported_tcb[6] = 9;
    assert!(matches!(vcek.bind(other_tcb), Err(SnpError::VcekTcbMismatch { .. })));
    let mut turin_cpu = report;
    turin_cpu.cpuid_family = Some(0x1A);
    assert!(matches!(vcek.bind(turin_cpu), Err(SnpError::ProductMismatch { family: 0x1A, .. })));
}

#[test]
fn roots_other_than_amds_pinned_ones_are_refused() {
    let e = milan();
    let expected = report_data(&e.report);
    // The ASK is validly signed, but it is not a root.
    let err =
        verify(&e.report, &e.vcek, &e.ask, &e.ask, &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert_eq!(err, SnpError::UnpinnedRoot);
    // The pinned Genoa root did not sign the Milan ASK.
    let genoa = builtin::genoa::ARK;
    let err = verify(&e.report, &e.vcek, &e.ask, genoa, &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Chain(_)), "{err:?}");
    let err =
        verify(&e.report, &e.vcek, &e.ask, b"junk", &expected, &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Malformed(_)), "{err:?}");
}

#[test]
fn tcb_below_the_minimum_is_refused() {
    let e = milan();
    let expected = report_data(&e.report);
    let base = policy(&e.report);
    for min in [
        SnpTcb { snp: 9, ..base.min_tcb },
        SnpTcb { microcode: 116, ..base.min_tcb },
        SnpTcb { bootloader: 4, ..base.min_tcb },
        SnpTcb { tee: 1, ..base.min_tcb },
    ] {
        let err = check(&e, &expected, &SnpPolicy { min_tcb: min, ..base.clone() }, JAN_2025).unwrap_err();
        assert!(matches!(err, SnpError::TcbTooLow { .. }), "{min:?}: {err:?}");
        assert!(!err.is_senders_fault());
    }
}

#[test]
fn debug_guests_are_refused() {
    let e = milan();
    // Setting the bit in the bytes breaks the signature first.
    let mut debug = milan();
    debug.report[POLICY + 2] |= 0x08;
    let err = check(&debug, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::Signature(_)), "{err:?}");
    // The policy rule on its own, on the verified claims with bit 19 set.
    let mut claims = check(&e, &report_data(&e.report), &policy(&e.report), JAN_2025).unwrap();
    claims.report.policy |= POLICY_DEBUG;
    assert_eq!(check_policy(&claims, &policy(&e.report)), Err(SnpError::Debug));
    let lax = SnpPolicy { allow_debug: true, ..policy(&e.report) };
    assert_eq!(check_policy(&claims, &lax), Ok(()));
}

#[test]
fn vmpl_measurement_and_product_rules() {
    let e = milan();
    let expected = report_data(&e.report);
    let base = policy(&e.report);
    let vmpl1 = SnpPolicy { allowed_vmpls: vec![1], ..base.clone() };
    assert_eq!(check(&e, &expected, &vmpl1, JAN_2025).unwrap_err(), SnpError::VmplNotAllowed(0));
    let other = SnpPolicy { allowed_measurements: vec![[7; 48]], ..base.clone() };
    let err = check(&e, &expected, &other, JAN_2025).unwrap_err();
    assert!(matches!(err, SnpError::MeasurementNotAllowed(_)), "{err:?}");
    let genoa = SnpPolicy { allowed_products: vec![SnpProduct::Genoa], ..base };
    let err = check(&e, &expected, &genoa, JAN_2025).unwrap_err();
    assert_eq!(err, SnpError::ProductNotAllowed(SnpProduct::Milan));
    assert_eq!(SnpProduct::from_name("genoa"), Some(SnpProduct::Genoa));
    assert_eq!(SnpProduct::from_name("Venice"), None);
}

#[test]
fn turin_tcb_layout_has_fmc_first() {
    let raw = [1, 2, 3, 4, 0, 0, 0, 5];
    let tcb = SnpTcb::from_bytes(raw, SnpProduct::Turin);
    assert_eq!(tcb, SnpTcb { fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 5 });
    let tcb = SnpTcb::from_bytes([3, 0, 0, 0, 0, 0, 8, 115], SnpProduct::Milan);
    assert_eq!(tcb, SnpTcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 });
}

/// Cost per report, cold (chain and report) and cached (report only). Figures only, no bound:
/// `cargo test --release --lib snp_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand"]
fn snp_cost() {
    let e = milan();
    let (expected, policy) = (report_data(&e.report), policy(&e.report));
    let rounds = 50u32;
    let start = Instant::now();
    for _ in 0..rounds {
        check(&e, &expected, &policy, JAN_2025).unwrap();
    }
    let cold = start.elapsed() / rounds;
    let vcek = VerifiedVcek::verify(&e.vcek, &e.ask, &e.ark, JAN_2025).unwrap();
    let start = Instant::now();
    for _ in 0..rounds * 10 {
        verify_report(&e.report, &vcek, &expected, &policy, JAN_2025).unwrap();
    }
    let cached = start.elapsed() / (rounds * 10);
    println!("SEV-SNP verification per report: cold {cold:?}, cached {cached:?}");
}
