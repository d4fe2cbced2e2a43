//! Locating the real TDX sample quotes that ship in the `dcap-qvl` crate (through `cargo metadata`,
//! never copied into this repository). Shared by the attestation tests and benchmark.

use std::path::PathBuf;
use std::sync::OnceLock;

use cocoon::attestation::tdx::{Collateral, parse_collateral};

/// `sample/` of the dcap-qvl package this workspace depends on, found once per test binary.
pub fn sample_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| package_dir("dcap-qvl").join("sample")).clone()
}

/// The source directory of the package `name` this workspace depends on (through `cargo metadata`).
pub fn package_dir(name: &str) -> PathBuf {
    // Only the host's packages are needed (and downloaded); the host triple comes from rustc.
    let rustc = std::process::Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc reports its host");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--filter-platform", &host, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("{name} in cargo metadata"));
    PathBuf::from(manifest).parent().unwrap().to_owned()
}

pub fn load(name: &str) -> (Vec<u8>, Collateral) {
    let dir = sample_dir();
    let quote = std::fs::read(dir.join(name)).unwrap();
    let collateral =
        parse_collateral(&std::fs::read(dir.join(format!("{name}_collateral.json"))).unwrap()).unwrap();
    (quote, collateral)
}
