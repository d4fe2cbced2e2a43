//! Connection trimming policy.
//!
//! Gossipsub keeps every connection to a subscribed peer alive and Kademlia lookups dial widely, so
//! a node that never closes connections ends up connected to most of the network. The node keeps a
//! target count instead: when it holds more, this policy picks which connections to close.
//!
//! Rules, in order:
//! 1. Never close a protected peer (bootstrap peers, gossipsub mesh members, peers a subsystem
//!    marked as in use) nor one connected for less than the grace period, which lets a fresh
//!    connection finish the lookup or handshake it was opened for.
//! 2. Close no more than needed to get back to the target.
//! 3. Close the youngest connections first: long-lived peers are the most useful routing entries
//!    (Kademlia's own preference) and closing them causes the most churn.

/// What the policy needs to know about one connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    /// The peer (a `PeerId` in the node; any ordered key here).
    pub key: K,
    /// Must not be closed (bootstrap peer, mesh member, in use).
    pub protected: bool,
    /// How long the peer has been connected, in milliseconds.
    pub connected_for_ms: u64,
}

/// Peers to disconnect so that at most `target` remain, honouring protection and grace.
///
/// The result is deterministic for a given input: ties on age are broken by key order.
pub fn plan_trim<K: Ord + Clone>(candidates: &[Candidate<K>], target: usize, grace_ms: u64) -> Vec<K> {
    let excess = candidates.len().saturating_sub(target);
    if excess == 0 {
        return Vec::new();
    }
    let mut closable: Vec<&Candidate<K>> =
        candidates.iter().filter(|c| !c.protected && c.connected_for_ms >= grace_ms).collect();
    closable.sort_by(|a, b| a.connected_for_ms.cmp(&b.connected_for_ms).then_with(|| a.key.cmp(&b.key)));
    closable.into_iter().take(excess).map(|c| c.key.clone()).collect()
}

/// How many extra peers to dial so that a gossipsub mesh of `mesh_peers` reaches `mesh_low`,
/// without letting the connection count rise above `target` (gossipsub itself never dials).
pub fn mesh_top_up(mesh_peers: usize, mesh_low: usize, connected: usize, target: usize) -> usize {
    let missing = mesh_low.saturating_sub(mesh_peers);
    let room = target.saturating_sub(connected);
    missing.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: u32, protected: bool, age: u64) -> Candidate<u32> {
        Candidate { key, protected, connected_for_ms: age }
    }

    #[test]
    fn nothing_to_do_at_or_below_target() {
        let peers = vec![c(1, false, 10_000), c(2, false, 10_000)];
        assert!(plan_trim(&peers, 2, 0).is_empty());
        assert!(plan_trim(&peers, 5, 0).is_empty());
        assert!(plan_trim::<u32>(&[], 0, 0).is_empty());
    }

    #[test]
    fn closes_youngest_unprotected_first() {
        let peers =
            vec![c(1, false, 50_000), c(2, false, 20_000), c(3, false, 30_000), c(4, true, 1_000_000)];
        assert_eq!(plan_trim(&peers, 2, 0), vec![2, 3]);
    }

    #[test]
    fn protection_and_grace_can_leave_the_node_above_target() {
        let peers = vec![c(1, true, 50_000), c(2, false, 500), c(3, true, 30_000), c(4, false, 60_000)];
        // Only peer 4 is closable: 1 and 3 are protected, 2 is inside the 1 s grace period.
        assert_eq!(plan_trim(&peers, 0, 1_000), vec![4]);
    }

    #[test]
    fn ties_break_by_key_for_determinism() {
        let peers = vec![c(9, false, 5_000), c(3, false, 5_000), c(5, false, 5_000)];
        assert_eq!(plan_trim(&peers, 1, 0), vec![3, 5]);
    }

    #[test]
    fn mesh_top_up_respects_target() {
        assert_eq!(mesh_top_up(1, 4, 10, 50), 3);
        assert_eq!(mesh_top_up(1, 4, 49, 50), 1);
        assert_eq!(mesh_top_up(5, 4, 10, 50), 0);
        assert_eq!(mesh_top_up(0, 4, 60, 50), 0);
    }
}
