//! Tests of the GPU report parser on built reports, and of the pinned root. The real NVIDIA
//! sample evidence is checked in `tests/gpu_evidence.rs`.

use sha2::{Digest, Sha256};

use super::*;

const NONCE: [u8; 32] = [7; 32];

/// A report of `blocks` (index, value) and opaque `entries`, with a zero signature.
fn build(blocks: &[(u8, &[u8])], entries: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0x11, 0xe0, 0x01, 0xff];
    out.extend_from_slice(&NONCE);
    out.push(0);
    let mut record = Vec::new();
    for (index, value) in blocks {
        record.extend_from_slice(&[*index, 1]);
        record.extend_from_slice(&u16::try_from(value.len() + 3).unwrap().to_le_bytes());
        record.push(1);
        record.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        record.extend_from_slice(value);
    }
    out.extend_from_slice(&[0x11, 0x60, 0, 0, u8::try_from(blocks.len()).unwrap()]);
    out.extend_from_slice(&u32::try_from(record.len()).unwrap().to_le_bytes()[..3]);
    out.extend_from_slice(&record);
    out.extend_from_slice(&[9; 32]);
    let mut opaque = Vec::new();
    for (kind, value) in entries {
        opaque.extend_from_slice(&kind.to_le_bytes());
        opaque.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        opaque.extend_from_slice(value);
    }
    out.extend_from_slice(&u16::try_from(opaque.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&opaque);
    out.extend_from_slice(&[0; SIGNATURE_LEN]);
    out
}

fn sample() -> Vec<u8> {
    build(
        &[(1, &[0; 48]), (2, &[0xab; 48])],
        &[
            (OPAQUE_VBIOS_VERSION, &[0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0]),
            (OPAQUE_DRIVER_VERSION, b"550.90.07\0"),
            (OPAQUE_FWID, &[0x5a; 48]),
            (999, b"unknown types are kept"),
        ],
    )
}

/// Offset of the response's first byte.
const RESPONSE: usize = REQUEST_LEN;

#[test]
fn a_built_report_parses_with_its_fields() {
    let bytes = sample();
    let report = parse_report(&bytes).unwrap();
    assert_eq!(report.nonce, NONCE);
    assert_eq!(report.responder_nonce, [9; 32]);
    assert_eq!(report.measurements.len(), 2);
    assert_eq!(report.measurement(2).unwrap().value, vec![0xab; 48]);
    assert_eq!(report.driver_version().as_deref(), Some("550.90.07"));
    assert_eq!(report.vbios_version().as_deref(), Some("96.00.9f.00.01"));
    assert_eq!(report.fwid(), Some([0x5a; 48]));
    assert_eq!(report.opaque(999), Some(&b"unknown types are kept"[..]));
    assert_eq!(report.signed_len, bytes.len() - SIGNATURE_LEN);
}

#[test]
fn every_inconsistency_is_refused() {
    let good = sample();
    let with = |offset: usize, byte: u8| {
        let mut bytes = good.clone();
        bytes[offset] = byte;
        parse_report(&bytes).unwrap_err()
    };
    assert_eq!(with(0, 0x12), ReportError::Version(0x12));
    assert_eq!(with(1, 0xe1), ReportError::Request { code: 0xe1, param1: 1 });
    assert_eq!(with(2, 0x00), ReportError::Request { code: 0xe0, param1: 0 });
    assert_eq!(with(RESPONSE, 0x10), ReportError::Version(0x10));
    assert_eq!(with(RESPONSE + 1, 0x61), ReportError::Response(0x61));
    // One block fewer than the record holds, one more.
    assert!(matches!(with(RESPONSE + 4, 1), ReportError::Block { block: 1, .. }));
    assert!(matches!(with(RESPONSE + 4, 3), ReportError::Block { block: 2, .. }));
    // The first block's specification, its size, its value size.
    assert!(matches!(
        with(RESPONSE + 9, 2),
        ReportError::Block { block: 0, reason: "not a DMTF measurement" }
    ));
    assert!(matches!(with(RESPONSE + 10, 52), ReportError::Block { block: 0, .. }));
    assert!(matches!(with(RESPONSE + 13, 47), ReportError::Block { block: 0, .. }));
    // A repeated index.
    assert!(matches!(with(RESPONSE + 8 + 55, 1), ReportError::Block { block: 1, .. }));
}

#[test]
fn lengths_must_fill_the_report_exactly() {
    let good = sample();
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(parse_report(&longer), Err(ReportError::Trailing(1)));
    assert!(matches!(parse_report(&good[..good.len() - 1]), Err(ReportError::Truncated(_))));
    for cut in [0, 10, REQUEST_LEN, REQUEST_LEN + 5, 200] {
        assert!(parse_report(&good[..cut]).is_err(), "cut at {cut}");
    }
    let repeated = build(&[], &[(OPAQUE_FWID, &[1; 48]), (OPAQUE_FWID, &[2; 48])]);
    assert_eq!(parse_report(&repeated), Err(ReportError::Opaque("a type appears twice")));
    // An opaque length one byte short leaves half an entry.
    let mut short = build(&[], &[(OPAQUE_FWID, &[1; 48])]);
    let at = REQUEST_LEN + 8 + 32;
    short[at] -= 1;
    short.push(0);
    assert_eq!(parse_report(&short), Err(ReportError::Opaque("an entry is truncated")));
}

#[test]
fn missing_versions_read_as_absent() {
    let report =
        parse_report(&build(&[], &[(OPAQUE_DRIVER_VERSION, b"\0\0"), (OPAQUE_VBIOS_VERSION, &[1])])).unwrap();
    assert_eq!((report.driver_version(), report.vbios_version(), report.fwid()), (None, None, None));
}

#[test]
fn the_pinned_root_is_nvidias_device_identity_ca() {
    let der = nvidia_device_root().unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&der)),
        "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
    );
    let root = Cert::parse(&der).unwrap();
    assert!(root.is_ca);
    assert_eq!(root.issuer, root.subject);
    assert!(root.signed_by(root.key), "self-signed");
    assert_eq!(
        root.not_after,
        crate::attestation::intel_pki::unix_seconds(9999, 12, 31, 23, 59, 59).unwrap()
    );
    assert!(root.fwid_extension.is_none());
    assert_eq!(root.common_name(), Some("NVIDIA Device Identity CA"));
}

#[test]
fn a_chain_of_the_wrong_length_is_refused_before_parsing() {
    let root = nvidia_device_root().unwrap();
    let four = vec![root.clone(); 4];
    assert_eq!(verify_chain(&four, &root, 0), Err(GpuError::ChainLength { found: 4 }));
    let garbage = vec![vec![0u8; 3]; CHAIN_LEN];
    assert!(matches!(verify_chain(&garbage, &root, 0), Err(GpuError::Certificate { index: 0, .. })));
    // Five copies of the root: names link, but the root is no attestation leaf.
    let roots = vec![root.clone(); CHAIN_LEN];
    assert_eq!(verify_chain(&roots, &root, 1_700_000_000), Err(GpuError::UnknownArchitecture));
    assert_eq!(verify_chain(&roots, &root, 0), Err(GpuError::CertificateTime { index: 0, now: 0 }));
}

#[test]
fn architectures_are_read_from_identity_names() {
    let read = architecture_from_identity_name;
    assert_eq!(read("NVIDIA GH100 Identity"), Some(GpuArchitecture::Hopper));
    assert_eq!(read("NVIDIA GB100 Identity"), Some(GpuArchitecture::Blackwell));
    assert_eq!(read("NVIDIA GB202 Identity"), Some(GpuArchitecture::Blackwell));
    for other in ["NVIDIA Device Identity CA", "NVIDIA GH10 Identity", "NVIDIA XGH100 Identity", ""] {
        assert_eq!(read(other), None, "{other}");
    }
    assert_eq!(GpuArchitecture::Hopper.name(), "hopper");
    assert_eq!(GpuArchitecture::Blackwell.name(), "blackwell");
}
