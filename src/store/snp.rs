//! SEV-SNP VCEK certificates fetched from AMD's KDS, persisted so a restarted node verifies
//! reports without fetching again (KDS throttles), and offline.
//!
//! Tree `snp-vcek/v1`: VCEK key (`Milan/<hwID hex>/<reported TCB hex>`, see
//! `attestation::kds::vcek_key`) → the VCEK's DER. A VCEK is signed by AMD and re-verified up to
//! the pinned root (and against the report) on every load, so this cache never has to be trusted.

use super::StoreError;

/// Name of the tree.
pub const VCEK_TREE: &str = "snp-vcek/v1";

/// Persisted VCEKs by chip and TCB.
#[derive(Debug, Clone)]
pub struct VcekCache {
    tree: sled::Tree,
}

impl VcekCache {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// Store the VCEK `der` under `key`.
    pub fn put(&self, key: &str, der: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key.as_bytes(), der)?;
        Ok(())
    }

    /// The VCEK stored under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Forget the VCEK under `key` (it no longer verifies).
    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.tree.remove(key.as_bytes())?;
        Ok(())
    }
}
