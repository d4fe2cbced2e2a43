//! Verified attestation records, persisted so a restarted node knows its workers at once.
//!
//! Tree `attestations/v1`: peer id bytes → signed record bytes (the envelope exactly as received).
//! Entries are re-judged on load (signature, policy, expiry), so this cache never has to be
//! trusted; it only saves waiting for gossip.

use libp2p::PeerId;

use super::StoreError;

/// Name of the tree.
pub const ATTESTATIONS_TREE: &str = "attestations/v1";

/// Persisted signed records by worker.
#[derive(Debug, Clone)]
pub struct RecordCache {
    tree: sled::Tree,
}

impl RecordCache {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// Store `record` as the current record of `peer`.
    pub fn put(&self, peer: &PeerId, record: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(peer.to_bytes(), record)?;
        Ok(())
    }

    /// Forget `peer`'s record.
    pub fn remove(&self, peer: &PeerId) -> Result<(), StoreError> {
        self.tree.remove(peer.to_bytes())?;
        Ok(())
    }

    /// Every stored record (entries with an unreadable key are dropped).
    pub fn all(&self) -> Result<Vec<(PeerId, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            match PeerId::from_bytes(&key) {
                Ok(peer) => out.push((peer, value.to_vec())),
                Err(_) => {
                    self.tree.remove(key)?;
                }
            }
        }
        Ok(out)
    }
}
