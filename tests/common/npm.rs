//! The npm packages some tests run under Node.js (tests/ton, tests/admin): pinned in each folder's
//! package-lock.json, installed with `npm ci` when missing (CI installs them first).

use std::path::Path;
use std::process::Command;

/// `node` and `npm` present, and the pinned packages of `dir` installed (with `npm ci` if
/// `marker`, a file of the main package, is missing). `what` names the package in the failure.
pub fn ensure_packages(dir: &Path, marker: &str, what: &str) {
    for tool in ["node", "npm"] {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "`{tool}` is not on PATH: this test runs {what} under Node.js");
    }
    if dir.join(marker).is_file() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .expect("npm runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "npm ci in {} failed: {said}", dir.display());
}
