//! AMD's real SEV-SNP evidence shipped in the `sev` crate's package (`tests/certs_data/`: a Milan
//! report with its VCEK and chain, a Turin VCEK and chain), located through `cargo metadata` at
//! test time and never copied into this repository. Test-only.

use std::path::PathBuf;
use std::sync::OnceLock;

/// `tests/certs_data/` of the `sev` 8.0.0 package this crate depends on.
pub(crate) fn certs_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let manifest = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sev" && p["version"] == "8.0.0")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("sev 8.0.0 in cargo metadata");
        PathBuf::from(manifest).parent().unwrap().join("tests/certs_data")
    })
    .clone()
}

/// The bytes of `tests/certs_data/<name>`.
pub(crate) fn read(name: &str) -> Vec<u8> {
    std::fs::read(certs_dir().join(name)).unwrap()
}

/// The real Milan report (raw 1,184 bytes).
pub(crate) fn milan_report() -> Vec<u8> {
    hex::decode(String::from_utf8(read("report_milan.hex")).unwrap().trim()).unwrap()
}
