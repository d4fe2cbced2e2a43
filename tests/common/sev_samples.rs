//! AMD's real SEV-SNP evidence shipped in the `sev` crate's package (`tests/certs_data/`: a Milan
//! report with its VCEK and ASK/ARK chain), located through `cargo metadata` and never copied
//! into this repository.

use std::path::PathBuf;

/// `tests/certs_data/` of the `sev` 8.0.0 package cocoon depends on.
pub fn certs_dir() -> PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--format-version", "1", "--manifest-path"])
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
}

/// The real Milan evidence: the raw report and the VCEK (DER).
pub fn milan() -> (Vec<u8>, Vec<u8>) {
    let dir = certs_dir();
    let report = hex::decode(std::fs::read_to_string(dir.join("report_milan.hex")).unwrap().trim()).unwrap();
    (report, std::fs::read(dir.join("vcek_milan.der")).unwrap())
}
