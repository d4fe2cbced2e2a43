//! SHA-256 of model files, so a worker hashes each GGUF once rather than at every start.
//!
//! Tree `models/v1`: absolute file path → file size (u64) ‖ modification time in nanoseconds
//! since the epoch (u64) ‖ SHA-256 (32 bytes). An entry is used only while size and modification
//! time still match the file.

use std::path::Path;

use super::StoreError;

/// Name of the tree.
pub const MODELS_TREE: &str = "models/v1";

/// Cached model file hashes.
#[derive(Debug, Clone)]
pub struct ModelHashes {
    tree: sled::Tree,
}

impl ModelHashes {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// The hash recorded for `path` if the file still has `size` and `mtime_ns`.
    pub fn get(&self, path: &Path, size: u64, mtime_ns: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let Some(value) = self.tree.get(path.as_os_str().as_encoded_bytes())? else { return Ok(None) };
        Ok(decode_value(&value, size, mtime_ns))
    }

    /// Record `hash` for `path` with `size` and `mtime_ns`.
    pub fn put(&self, path: &Path, size: u64, mtime_ns: u64, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.tree.insert(path.as_os_str().as_encoded_bytes(), encode_value(size, mtime_ns, hash))?;
        Ok(())
    }
}

/// The stored value: size ‖ modification time ‖ hash.
pub(crate) fn encode_value(size: u64, mtime_ns: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut value = Vec::with_capacity(48);
    value.extend_from_slice(&size.to_be_bytes());
    value.extend_from_slice(&mtime_ns.to_be_bytes());
    value.extend_from_slice(hash);
    value
}

/// The hash in a stored value if it was recorded for a file of `size` and `mtime_ns`.
pub(crate) fn decode_value(value: &[u8], size: u64, mtime_ns: u64) -> Option<[u8; 32]> {
    if value.len() != 48 || value[..8] != size.to_be_bytes() || value[8..16] != mtime_ns.to_be_bytes() {
        return None;
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&value[16..]);
    Some(hash)
}
