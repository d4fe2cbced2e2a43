//! Model identity: a model id is `name@sha256:<hex of the GGUF file>`, so a client knows exactly
//! which weights ran. Hashing a file costs about a second per GiB, so the hash is cached in the
//! store (keyed by path, size and modification time) and computed once per file version.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::store::ModelHashes;

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("model file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model name is not usable in an id.
    #[error("model name {0:?} must be 1-64 characters of a-z, A-Z, 0-9, '.', '_', '-'")]
    BadName(String),
    /// A model id that does not have the `name@sha256:<64 hex>` shape.
    #[error("model id {0:?} is not of the form name@sha256:<64 hex digits>")]
    BadId(String),
}

/// Check a model name (the part before `@`).
pub fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(ModelError::BadName(name.to_owned())) }
}

/// Split `name@sha256:<hex>` into name and hash.
pub fn parse_id(id: &str) -> Result<(&str, [u8; 32]), ModelError> {
    let bad = || ModelError::BadId(id.to_owned());
    let (name, hash) = id.split_once("@sha256:").ok_or_else(bad)?;
    check_name(name).map_err(|_| bad())?;
    let bytes = hex::decode(hash).map_err(|_| bad())?;
    Ok((name, bytes.try_into().map_err(|_| bad())?))
}

/// SHA-256 of the file at `path`, from `cache` when the file is unchanged.
pub fn file_sha256(path: &Path, cache: Option<&ModelHashes>) -> Result<[u8; 32], ModelError> {
    let io = |source| ModelError::Io { path: path.display().to_string(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let size = meta.len();
    if let Some(hash) = cache.and_then(|c| c.get(path, size, mtime_ns).ok().flatten()) {
        return Ok(hash);
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash: [u8; 32] = hasher.finalize().into();
    if let Some(cache) = cache
        && let Err(e) = cache.put(path, size, mtime_ns, &hash)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the model hash");
    }
    Ok(hash)
}

/// The model id of the GGUF file at `path` served under `name`.
pub fn model_id(name: &str, path: &Path, cache: Option<&ModelHashes>) -> Result<String, ModelError> {
    check_name(name)?;
    Ok(format!("{name}@sha256:{}", hex::encode(file_sha256(path, cache)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_file_contents_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"weights").unwrap();
        let store = crate::store::Store::open(&dir.path().join("data")).unwrap();
        let cache = store.model_hashes().unwrap();
        let id = model_id("tiny", &path, Some(&cache)).unwrap();
        assert_eq!(id, format!("tiny@sha256:{}", hex::encode(Sha256::digest(b"weights"))));
        assert_eq!(parse_id(&id).unwrap().0, "tiny");
        // A cached entry is used only for the same size and modification time.
        let meta = std::fs::metadata(&path).unwrap();
        let mtime = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(cache.get(&path, meta.len(), mtime).unwrap().is_some());
        assert!(cache.get(&path, meta.len() + 1, mtime).unwrap().is_none());
        std::fs::write(&path, b"other weights").unwrap();
        assert_ne!(model_id("tiny", &path, Some(&cache)).unwrap(), id);
        assert!(matches!(model_id("bad name", &path, None), Err(ModelError::BadName(_))));
        assert!(parse_id("tiny@sha256:zz").is_err() && parse_id("tiny").is_err());
    }
}
