//! Adversaries and faults: forgers flooding invalid attestation records, and what honest nodes
//! did about them.

use std::collections::HashSet;
use std::time::Duration;

use cocoon::attestation::service::ATTESTATION_TOPIC;
use cocoon::node::Node;
use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::AttackStats;

/// Forged record number `i`: alternately a genuine record with one byte flipped (its signature
/// no longer verifies) and bytes that do not decode at all. Each is distinct, so gossipsub's
/// content-addressed ids do not deduplicate them.
fn forged(genuine: Option<&[u8]>, i: usize, rng: &mut StdRng) -> Vec<u8> {
    match genuine {
        Some(g) if i.is_multiple_of(2) && !g.is_empty() => {
            let mut bytes = g.to_vec();
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
            bytes
        }
        _ => {
            let mut bytes = format!("forged attestation record #{i} ").into_bytes();
            bytes.extend((0..64).map(|_| rng.r#gen::<u8>()));
            bytes
        }
    }
}

/// Have `forger` publish `count` forged records, one per `gap`; returns how many were sent.
pub async fn flood(forger: &Node, count: usize, gap: Duration, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let genuine = forger.attestation().records().first().map(|r| r.encode());
    let mut sent = 0;
    for i in 0..count {
        let bytes = forged(genuine.as_deref(), i, &mut rng);
        if forger.network().publish(ATTESTATION_TOPIC, bytes).await.is_ok() {
            sent += 1;
        }
        tokio::time::sleep(gap).await;
    }
    sent
}

/// What the forgers achieved against the honest nodes.
pub async fn assess(honest: &[&Node], forgers: &HashSet<PeerId>, published: u64) -> AttackStats {
    let mut stats =
        AttackStats { forgers: forgers.len(), forged_published: published, ..AttackStats::default() };
    for (node, status) in honest.iter().zip(super::measure::statuses(honest).await) {
        let v = node.attestation().verdicts();
        stats.forged_rejected += v.rejected;
        stats.rejected_relayed += v.rejected_relayed;
        if let Some(status) = status {
            if status.blocked_peers.iter().any(|p| forgers.contains(p)) {
                stats.nodes_blocking_forgers += 1;
            }
            if status.connected.iter().any(|p| forgers.contains(p)) {
                stats.nodes_connected_to_forgers += 1;
            }
        }
    }
    stats
}
