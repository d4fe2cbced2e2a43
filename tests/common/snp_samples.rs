//! Locating the real AMD-signed SEV-SNP evidence that ships in the `sev` crate's tests (a Milan
//! report with its VCEK, and a Turin VCEK), through `cargo metadata`, never copied into this
//! repository.

use std::path::PathBuf;
use std::sync::OnceLock;

/// 2025-01-01, inside the Milan VCEK's validity.
pub const JAN_2025: u64 = 1_735_689_600;

fn certs_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| super::dcap_samples::package_dir("sev").join("tests/certs_data")).clone()
}

/// A file of the `sev` crate's `tests/certs_data`.
pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(certs_dir().join(name)).unwrap()
}

/// The Milan report (1,184 bytes).
pub fn milan_report() -> Vec<u8> {
    hex::decode(String::from_utf8(read("report_milan.hex")).unwrap().trim()).unwrap()
}

/// The Milan report's VCEK (DER).
pub fn milan_vcek() -> Vec<u8> {
    read("vcek_milan.der")
}

/// A Turin chip's VCEK (DER): another chip's.
pub fn turin_vcek() -> Vec<u8> {
    read("vcek_turin.der")
}
