//! The client keys a worker has prepared for verification ([`PreparedKey`]: tables built once per
//! key, each voucher then verified about an eighth faster), for the channels paying now.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cocoon_protocol::payments::prepared::PreparedKey;

/// Keys kept prepared: about 20 KiB each, so 10 MiB in all, for the channels paying at once on
/// one worker; beyond that the key prepared longest ago is dropped (and prepared again if its
/// channel pays again).
const CAPACITY: usize = 512;

/// The cache; cheap to share, locked only to look a key up or add one.
#[derive(Debug, Default)]
pub struct PreparedKeys {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<[u8; 32], Arc<PreparedKey>>,
    /// Insertion order, oldest first: what is dropped when the cache is full.
    order: VecDeque<[u8; 32]>,
}

impl PreparedKeys {
    /// `key` prepared (built now, outside the lock, if it is not cached); `None` if `key` is no
    /// curve point (no signature verifies against it).
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<PreparedKey>> {
        if let Some(k) = self.lock().keys.get(key) {
            return Some(k.clone());
        }
        let prepared = Arc::new(PreparedKey::new(key)?);
        let mut inner = self.lock();
        if !inner.keys.contains_key(key) {
            while inner.keys.len() >= CAPACITY {
                let Some(oldest) = inner.order.pop_front() else { break };
                inner.keys.remove(&oldest);
            }
            inner.keys.insert(*key, prepared.clone());
            inner.order.push_back(*key);
        }
        Some(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::ed25519;

    use super::*;

    /// The cache holds at most its capacity, dropping the oldest key first, and a key that is no
    /// point is never prepared.
    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest_key() {
        let cache = PreparedKeys::default();
        let keys: Vec<[u8; 32]> =
            (0..=CAPACITY).map(|_| ed25519::Keypair::generate().public().to_bytes()).collect();
        for k in &keys {
            assert_eq!(cache.get(k).unwrap().key(), k);
        }
        let inner = cache.lock();
        assert_eq!((inner.keys.len(), inner.order.len()), (CAPACITY, CAPACITY));
        assert!(!inner.keys.contains_key(&keys[0]) && inner.keys.contains_key(&keys[CAPACITY]));
        drop(inner);
        let not_a_point = (0u8..=255).map(|b| [b; 32]).find(|k| PreparedKey::new(k).is_none()).unwrap();
        assert!(cache.get(&not_a_point).is_none());
    }
}
