//! AMD's real SEV-SNP evidence shipped in the `sev` crate's package (`tests/certs_data/`: a Milan
//! report with its VCEK, and a Turin chip's VCEK), located through `cargo metadata` and never
//! copied into this repository.

use std::path::PathBuf;

/// 2025-01-01T00:00:00Z, inside the Milan VCEK's validity.
pub const JAN_2025: u64 = 1_735_689_600;

/// `tests/certs_data/` of the `sev` package cocoon depends on.
pub fn certs_dir() -> PathBuf {
    super::dcap_samples::package_dir("sev").join("tests/certs_data")
}

/// The real Milan evidence: the raw report and the VCEK (DER).
pub fn milan() -> (Vec<u8>, Vec<u8>) {
    let dir = certs_dir();
    let report = hex::decode(std::fs::read_to_string(dir.join("report_milan.hex")).unwrap().trim()).unwrap();
    (report, std::fs::read(dir.join("vcek_milan.der")).unwrap())
}

/// A Turin chip's VCEK (DER): another chip's than the Milan report's.
pub fn turin_vcek() -> Vec<u8> {
    std::fs::read(certs_dir().join("vcek_turin.der")).unwrap()
}
