//! TDX collateral fetched from a PCCS, persisted so a restarted node verifies quotes without
//! fetching again, and offline for as long as the collateral stays valid.
//!
//! Tree `collateral/v1`: platform key (`tdx/processor/<FMSPC>`) → 8-byte big-endian Unix time
//! until which the collateral is valid, followed by the collateral as JSON. Entries that cannot be
//! decoded are dropped; collateral is signed by Intel and re-verified on every use, so this cache
//! never has to be trusted.

use super::StoreError;
use crate::attestation::tdx::{Collateral, parse_collateral};

/// Name of the tree.
pub const COLLATERAL_TREE: &str = "collateral/v1";

/// Persisted collateral by platform.
#[derive(Debug, Clone)]
pub struct CollateralCache {
    tree: sled::Tree,
}

impl CollateralCache {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// Store `collateral` for `platform`, valid until `until`.
    pub fn put(&self, platform: &str, collateral: &Collateral, until: u64) -> Result<(), StoreError> {
        self.tree.insert(platform.as_bytes(), encode_value(collateral, until)?)?;
        Ok(())
    }

    /// The collateral stored for `platform` and its validity end, if any.
    pub fn get(&self, platform: &str) -> Result<Option<(Collateral, u64)>, StoreError> {
        let Some(value) = self.tree.get(platform.as_bytes())? else { return Ok(None) };
        let decoded = decode_value(&value);
        if decoded.is_none() {
            tracing::warn!(platform, "dropping undecodable cached collateral");
            self.tree.remove(platform.as_bytes())?;
        }
        Ok(decoded)
    }
}

/// The stored value: validity end (u64) ‖ collateral JSON.
pub(crate) fn encode_value(collateral: &Collateral, until: u64) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(collateral).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut value = until.to_be_bytes().to_vec();
    value.extend_from_slice(&json);
    Ok(value)
}

/// The collateral and validity end in a stored value, or `None` if it cannot be decoded.
pub(crate) fn decode_value(value: &[u8]) -> Option<(Collateral, u64)> {
    let (until, json) = value.split_first_chunk::<8>()?;
    parse_collateral(json).ok().map(|c| (c, u64::from_be_bytes(*until)))
}
