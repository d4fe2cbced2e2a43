//! Lookup hops, which libp2p does not report: the same lookups replayed over a snapshot of every
//! node's real routing table, in synchronous rounds of Kademlia's iterative procedure (ask the α
//! closest peers not yet asked; each answers with the `K` entries of its table closest to the
//! target; stop when the `K` closest known peers have all been asked).
//!
//! A lookup's **hops** is the round in which the querier first learns of the peer closest to the
//! key (0: it was in the querier's own table): the length of the message path to the key's home,
//! the figure DHT measurements such as IPFS's report. **Rounds** is the round in which the lookup
//! would stop.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p::PeerId;
use libp2p::kad::{KBucketDistance, KBucketKey};

use super::measure::closest;

/// Requests in flight per round (libp2p's default parallelism).
pub const ALPHA: usize = 3;

/// One replayed lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Round in which the closest peer to the key became known; `None` if it never did.
    pub hops: Option<u32>,
    /// Rounds until the lookup would stop.
    pub rounds: u32,
}

/// Replay a lookup for `key` from `querier` over `tables` (peer → its routing table), with the
/// truth being `pool`'s closest peer to the key other than the querier.
pub fn replay(
    tables: &HashMap<PeerId, Vec<PeerId>>,
    pool: &[PeerId],
    querier: PeerId,
    key: &[u8],
    k: usize,
) -> Replayed {
    let target = KBucketKey::new(key.to_vec());
    let Some(home) = closest(pool, &target, Some(&querier), 1).first().copied() else {
        return Replayed { hops: Some(0), rounds: 0 };
    };
    let distance = |p: &PeerId| target.distance(&KBucketKey::from(*p));
    let mut known: BTreeMap<KBucketDistance, PeerId> = BTreeMap::new();
    let learn = |known: &mut BTreeMap<KBucketDistance, PeerId>, peers: &[PeerId]| {
        for p in peers.iter().filter(|p| **p != querier) {
            known.insert(distance(p), *p);
        }
    };
    learn(&mut known, tables.get(&querier).map_or(&[][..], Vec::as_slice));
    let mut hops = known.values().any(|p| *p == home).then_some(0);
    let mut asked: HashSet<PeerId> = HashSet::new();
    let mut rounds = 0;
    loop {
        let next: Vec<PeerId> =
            known.values().take(k).filter(|p| !asked.contains(*p)).take(ALPHA).copied().collect();
        if next.is_empty() {
            break;
        }
        rounds += 1;
        for peer in next {
            asked.insert(peer);
            let table = tables.get(&peer).map_or(&[][..], Vec::as_slice);
            learn(&mut known, &closest(table, &target, None, k));
        }
        if hops.is_none() && known.values().any(|p| *p == home) {
            hops = Some(rounds);
        }
    }
    Replayed { hops, rounds }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn a_full_mesh_finds_the_home_at_once() {
        let pool = peers(30);
        let tables: HashMap<PeerId, Vec<PeerId>> = pool.iter().map(|p| (*p, pool.clone())).collect();
        let r = replay(&tables, &pool, pool[0], b"key", 20);
        assert_eq!(r.hops, Some(0));
        // It still asks its 20 closest, α at a time: ceil(20 / 3) rounds.
        assert_eq!(r.rounds, 7);
    }

    #[test]
    fn a_chain_takes_one_hop_per_link() {
        // Each node knows only the next one: the lookup walks the chain to the home.
        let pool = peers(12);
        let home = closest(&pool, &KBucketKey::new(b"key".to_vec()), Some(&pool[0]), 1)[0];
        let mut order: Vec<PeerId> = pool.iter().filter(|p| **p != home).copied().collect();
        order.push(home);
        let tables: HashMap<PeerId, Vec<PeerId>> = order.windows(2).map(|w| (w[0], vec![w[1]])).collect();
        let r = replay(&tables, &pool, order[0], b"key", 20);
        assert_eq!(r.hops, Some(order.len() as u32 - 2));
    }

    #[test]
    fn an_unreachable_home_is_never_found() {
        let pool = peers(5);
        let home = closest(&pool, &KBucketKey::new(b"key".to_vec()), Some(&pool[0]), 1)[0];
        let tables: HashMap<PeerId, Vec<PeerId>> =
            pool.iter().map(|p| (*p, pool.iter().filter(|q| **q != home).copied().collect())).collect();
        let r = replay(&tables, &pool, pool[0], b"key", 20);
        assert_eq!(r.hops, None);
        assert!(r.rounds >= 1);
    }
}
