//! The verified worker records this node knows, newest per worker.
//!
//! A record replaces the one held for its worker only if it was issued later; an older or equal
//! one is a replay or a duplicate. Expired records are pruned. Bounded: beyond the capacity a new
//! worker is not admitted until others expire (existing workers' updates are still taken).

use std::collections::{BTreeSet, HashMap};

use cocoon_protocol::attestation::signed::SignedRecord;
use libp2p::PeerId;

/// What [`KnownWorkers::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insertion {
    /// First record of this worker.
    New,
    /// Replaced an older record of this worker.
    Updated,
    /// Not newer than the record held: replay or duplicate.
    NotNewer,
    /// No room for another worker.
    Full,
}

/// Verified records by worker.
#[derive(Debug)]
pub struct KnownWorkers {
    by_peer: HashMap<PeerId, SignedRecord>,
    capacity: usize,
}

impl KnownWorkers {
    /// Room for `capacity` workers.
    pub fn new(capacity: usize) -> Self {
        Self { by_peer: HashMap::new(), capacity }
    }

    /// Whether a record of `peer` issued at `issued_at` would be newer than the one held.
    pub fn is_newer(&self, peer: &PeerId, issued_at: u64) -> bool {
        self.by_peer.get(peer).is_none_or(|held| issued_at > held.record().issued_at)
    }

    /// Keep `signed` if it is the newest record of its worker.
    pub fn insert(&mut self, signed: SignedRecord) -> Insertion {
        let peer = signed.record().peer_id;
        match self.by_peer.get(&peer) {
            Some(held) if signed.record().issued_at <= held.record().issued_at => Insertion::NotNewer,
            Some(_) => {
                self.by_peer.insert(peer, signed);
                Insertion::Updated
            }
            None if self.by_peer.len() >= self.capacity => Insertion::Full,
            None => {
                self.by_peer.insert(peer, signed);
                Insertion::New
            }
        }
    }

    /// Drop records that expired at `now`; returns their workers.
    pub fn prune(&mut self, now: u64) -> Vec<PeerId> {
        let expired: Vec<PeerId> =
            self.by_peer.iter().filter(|(_, s)| now >= s.record().expires_at).map(|(p, _)| *p).collect();
        for peer in &expired {
            self.by_peer.remove(peer);
        }
        expired
    }

    /// The record held for `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&SignedRecord> {
        self.by_peer.get(peer)
    }

    /// Number of workers known.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether no worker is known.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Records of the workers offering `model_id`.
    pub fn offering(&self, model_id: &str) -> Vec<SignedRecord> {
        self.by_peer
            .values()
            .filter(|s| s.record().offers.iter().any(|o| o.model_id == model_id))
            .cloned()
            .collect()
    }

    /// Every record held.
    pub fn records(&self) -> Vec<SignedRecord> {
        self.by_peer.values().cloned().collect()
    }

    /// Distinct model ids offered by known workers.
    pub fn models(&self) -> BTreeSet<String> {
        self.by_peer.values().flat_map(|s| s.record().offers.iter().map(|o| o.model_id.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::attestation::service::OwnRecord;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn expired_records_leave_the_known_set() {
        let mut known = KnownWorkers::new(8);
        let key = Keypair::generate_ed25519();
        known.insert(OwnRecord::for_tests(&key).build(NOW).unwrap());
        assert!(known.prune(NOW + 599).is_empty());
        assert_eq!(known.len(), 1);
        assert_eq!(known.prune(NOW + 600), vec![key.public().to_peer_id()]);
        assert!(known.is_empty() && known.models().is_empty());
    }
}
