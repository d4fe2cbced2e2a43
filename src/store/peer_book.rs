//! The peer book: peers this node has talked to and addresses it can dial them at.
//!
//! A restarted node dials the most recently seen entries, so it rejoins the network even when all
//! of its bootstrap peers are gone. Entries are JSON values in the `peers/v1` tree keyed by the
//! peer id's bytes; each keeps at most [`MAX_ADDRS_PER_PEER`] addresses, newest first, and the
//! book keeps about [`MAX_PEERS`] peers (the least recently seen go first). The network layer
//! records only peers that identify with cocoon's protocol version and Kademlia protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Addresses remembered per peer (newest first); older ones are dropped.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// Peers the book is pruned back to while running (and on shutdown): a restarting node dials
/// only the 32 most recent, so a thousand is plenty of history, and the book stays a few hundred
/// KiB however many peers come and go.
pub const MAX_PEERS: usize = 1024;
/// New peers allowed beyond [`MAX_PEERS`] before a prune (a full scan) runs, so that the scan
/// happens once per 128 new peers rather than on every one.
pub const PRUNE_SLACK: usize = MAX_PEERS / 8;

/// Seconds within which seeing a peer again at its newest address is not written: `last_seen`
/// only orders peers for rejoining, and a write per connection and per identify is the node's
/// busiest store path when many clients connect at once.
pub const LAST_SEEN_RESOLUTION_SECS: u64 = 60;

/// One remembered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer.
    pub peer_id: PeerId,
    /// Dialable addresses, newest first.
    pub addrs: Vec<Multiaddr>,
    /// When it was last connected, in Unix seconds.
    pub last_seen: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    addrs: Vec<Multiaddr>,
    last_seen: u64,
}

/// A `peers/v1` entry, or `None` if its key or value cannot be read.
pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Option<KnownPeer> {
    let peer_id = PeerId::from_bytes(key).ok()?;
    let entry = serde_json::from_slice::<Entry>(value).ok()?;
    Some(KnownPeer { peer_id, addrs: entry.addrs, last_seen: entry.last_seen })
}

/// The value stored for `peer`.
pub(crate) fn encode_peer(peer: &KnownPeer) -> Result<Vec<u8>, StoreError> {
    encode_entry(&Entry { addrs: peer.addrs.clone(), last_seen: peer.last_seen })
}

fn encode_entry(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(entry)
        .map_err(|e| StoreError::Corrupt { path: "peers/v1".into(), message: e.to_string() })
}

/// Known peers, persisted in sled. Writes become durable at the next [`super::Store::flush`].
#[derive(Debug, Clone)]
pub struct PeerBook {
    tree: sled::Tree,
    /// Entries, counted once at opening and kept up by this handle's inserts and removals
    /// (sled's own `len` is a full scan).
    count: Arc<AtomicUsize>,
}

impl PeerBook {
    pub(super) fn new(tree: sled::Tree) -> Self {
        let count = Arc::new(AtomicUsize::new(tree.len()));
        Self { tree, count }
    }

    /// Remember that `peer` was reachable at `addr` at `now` (Unix seconds).
    pub fn record(&self, peer: &PeerId, addr: &Multiaddr, now: u64) -> Result<(), StoreError> {
        let key = peer.to_bytes();
        let mut entry = match self.tree.get(&key)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).unwrap_or(Entry { addrs: Vec::new(), last_seen: 0 })
            }
            None => Entry { addrs: Vec::new(), last_seen: 0 },
        };
        if entry.addrs.first() == Some(addr)
            && now.saturating_sub(entry.last_seen) < LAST_SEEN_RESOLUTION_SECS
        {
            return Ok(());
        }
        entry.addrs.retain(|a| a != addr);
        entry.addrs.insert(0, addr.clone());
        entry.addrs.truncate(MAX_ADDRS_PER_PEER);
        entry.last_seen = now;
        if self.tree.insert(key, encode_entry(&entry)?)?.is_none() {
            self.grew()?;
        }
        Ok(())
    }

    /// Forget `peer` (e.g. it turned out to be malicious).
    pub fn remove(&self, peer: &PeerId) -> Result<(), StoreError> {
        if self.tree.remove(peer.to_bytes())?.is_some() {
            let _ = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        Ok(())
    }

    /// Up to `limit` peers, most recently seen first. Unreadable entries are skipped.
    pub fn recent(&self, limit: usize) -> Result<Vec<KnownPeer>, StoreError> {
        let mut peers = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let Some(peer) = decode_entry(&key, &value) else {
                tracing::warn!("skipping unreadable peer-book entry");
                continue;
            };
            peers.push(peer);
        }
        peers.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.peer_id.cmp(&b.peer_id)));
        peers.truncate(limit);
        Ok(peers)
    }

    /// Keep only the `keep` most recently seen peers.
    pub fn prune(&self, keep: usize) -> Result<usize, StoreError> {
        if self.tree.len() <= keep {
            return Ok(0);
        }
        let all = self.recent(usize::MAX)?;
        let mut removed = 0;
        for peer in all.iter().skip(keep) {
            self.remove(&peer.peer_id)?;
            removed += 1;
        }
        self.count.store(self.tree.len(), Ordering::Relaxed);
        Ok(removed)
    }

    /// A new peer was added: prune back to [`MAX_PEERS`] once the slack is used up.
    fn grew(&self) -> Result<(), StoreError> {
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > MAX_PEERS + PRUNE_SLACK {
            self.prune(MAX_PEERS)?;
        }
        Ok(())
    }

    /// Number of known peers.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn survives_reopen_after_flush_and_orders_by_recency() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (PeerId::random(), PeerId::random());
        {
            let store = Store::open(dir.path()).unwrap();
            let book = store.peer_book().unwrap();
            book.record(&a, &addr(1), 100).unwrap();
            book.record(&b, &addr(2), 200).unwrap();
            book.record(&a, &addr(3), 150).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let recent = store.peer_book().unwrap().recent(10).unwrap();
        assert_eq!(recent.iter().map(|p| p.peer_id).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(recent[1].addrs, vec![addr(3), addr(1)]);
    }

    #[test]
    fn seeing_a_peer_again_soon_at_the_same_address_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = store.peer_book().unwrap();
        let p = PeerId::random();
        let seen = |book: &PeerBook| book.recent(1).unwrap()[0].last_seen;
        book.record(&p, &addr(1), 1_000).unwrap();
        book.record(&p, &addr(1), 1_000 + LAST_SEEN_RESOLUTION_SECS - 1).unwrap();
        assert_eq!(seen(&book), 1_000);
        book.record(&p, &addr(2), 1_001).unwrap(); // a new address is always written
        assert_eq!((seen(&book), book.recent(1).unwrap()[0].addrs[0].clone()), (1_001, addr(2)));
        book.record(&p, &addr(2), 1_001 + LAST_SEEN_RESOLUTION_SECS).unwrap();
        assert_eq!(seen(&book), 1_001 + LAST_SEEN_RESOLUTION_SECS);
    }

    #[test]
    fn caps_addresses_and_prunes_oldest_peers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = store.peer_book().unwrap();
        let p = PeerId::random();
        for port in 0..20 {
            book.record(&p, &addr(port), u64::from(port)).unwrap();
        }
        assert_eq!(book.recent(1).unwrap()[0].addrs.len(), MAX_ADDRS_PER_PEER);
        for t in 0..5 {
            book.record(&PeerId::random(), &addr(1), 1000 + t).unwrap();
        }
        assert_eq!(book.prune(3).unwrap(), 3);
        assert_eq!(book.len(), 3);
        assert!(book.recent(10).unwrap().iter().all(|k| k.last_seen >= 1002));
    }

    #[test]
    fn the_book_prunes_itself_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let book = store.peer_book().unwrap();
        let first = PeerId::random();
        book.record(&first, &addr(1), 0).unwrap();
        for t in 1..=(MAX_PEERS + PRUNE_SLACK) as u64 {
            book.record(&PeerId::random(), &addr(1), t).unwrap();
            assert!(book.len() <= MAX_PEERS + PRUNE_SLACK);
        }
        assert!(book.len() <= MAX_PEERS, "{}", book.len());
        let kept = book.recent(usize::MAX).unwrap();
        assert!(!kept.iter().any(|k| k.peer_id == first), "the oldest went first");
        assert_eq!(book.len(), book.recent(usize::MAX).unwrap().len());
    }
}
