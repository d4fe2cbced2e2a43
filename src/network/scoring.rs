//! Gossipsub peer scoring: the parameters and thresholds, each with its reason.
//!
//! Only the attestation topic is scored per topic. It is quiet (each worker publishes a record
//! every half validity, 30 minutes by default), so the usual "mesh peers must deliver N messages"
//! penalty (P3) would punish every honest peer and is off. What counts:
//!
//! - P1, time in the mesh, and P2, first deliveries of valid records: a little credit, capped.
//! - P4, invalid messages (our validator's `Reject`, or a bad signature): weight
//!   [`INVALID_MESSAGE_WEIGHT`], squared, so one invalid record takes a peer below the gossip
//!   threshold (no more IHAVE/IWANT with it) and two below the graylist threshold (everything it
//!   sends is ignored), whatever credit it had. The counter decays over about an hour.
//! - P6, many peers from one IP: gossipsub's default, with loopback exempt (local devnets).
//! - P7, protocol misbehaviour (broken IWANT promises, GRAFT during backoff): above a threshold of
//!   [`BEHAVIOUR_PENALTY_THRESHOLD`] events, so a few of an honest peer's races are free.
//!
//! A peer with no traffic scores zero on every term, far above every threshold: scoring never
//! graylists an honest quiet peer (simnet and the in-process tests run many such nodes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{
    PeerScoreParams, PeerScoreThresholds, TopicHash, TopicScoreParams, score_parameter_decay,
};

/// P4 weight on the attestation topic (multiplied by the squared count of invalid messages).
pub(crate) const INVALID_MESSAGE_WEIGHT: f64 = -25.0;
/// Invalid-message counts and P7 penalties decay to 1 % over this long.
const PENALTY_DECAY: Duration = Duration::from_secs(3600);
/// P7 events forgiven before the penalty starts (honest peers race GRAFT against backoff now
/// and then).
pub(crate) const BEHAVIOUR_PENALTY_THRESHOLD: f64 = 6.0;
/// The most positive credit a peer can hold from topic terms (P1 and P2 give at most 5 each), so
/// that good behaviour cannot be banked against invalid messages: with full credit, one invalid
/// message still leaves the peer below the gossip threshold.
const TOPIC_SCORE_CAP: f64 = 10.0;

/// Thresholds: gossipsub's defaults, which the weights above are sized against.
pub(crate) fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        // One invalid message (-25, -15 with full credit) is below it: no gossip (IHAVE/IWANT)
        // to or from the peer.
        gossip_threshold: -10.0,
        // Our own messages are not published to peers below this.
        publish_threshold: -50.0,
        // Two invalid messages (-100, -90 with full credit): every RPC from the peer is ignored.
        graylist_threshold: -80.0,
        // Peer exchange is accepted only from peers with some credit (P1/P2).
        accept_px_threshold: 5.0,
        // Opportunistic grafting picks peers with credit above this.
        opportunistic_graft_threshold: 3.0,
    }
}

/// Score parameters with the attestation topic's per-topic terms.
pub(crate) fn params(attestation_topic: TopicHash) -> PeerScoreParams {
    let mut params = PeerScoreParams {
        topic_score_cap: TOPIC_SCORE_CAP,
        // Cocoon's own penalties live in its reputation table (`blocklist.rs`), not in P5.
        app_specific_weight: 0.0,
        behaviour_penalty_weight: -10.0,
        behaviour_penalty_threshold: BEHAVIOUR_PENALTY_THRESHOLD,
        behaviour_penalty_decay: score_parameter_decay(PENALTY_DECAY),
        ..PeerScoreParams::default()
    };
    params.ip_colocation_factor_whitelist =
        [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)].into_iter().collect();
    params.topics.insert(attestation_topic, attestation_topic_params());
    params
}

fn attestation_topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // P1: +0.01 per second in the mesh, at most +5 (after about 8 minutes).
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 500.0,
        // P2: +1 per valid record delivered first, at most +5, forgotten over an hour.
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: score_parameter_decay(PENALTY_DECAY),
        first_message_deliveries_cap: 5.0,
        // P3 and P3b off: a quiet topic (see the module documentation).
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4.
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: score_parameter_decay(PENALTY_DECAY),
        ..TopicScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::gossipsub::IdentTopic;

    use super::*;

    #[test]
    fn parameters_are_valid_and_the_invalid_message_penalty_is_sized_against_the_thresholds() {
        let params = params(IdentTopic::new("/t").hash());
        params.validate().unwrap();
        let t = thresholds();
        t.validate().unwrap();
        let after = |n: f64| INVALID_MESSAGE_WEIGHT * n * n;
        assert!(after(1.0) + TOPIC_SCORE_CAP < t.gossip_threshold, "credit must not outweigh one");
        assert!(after(1.0) > t.graylist_threshold, "one invalid message alone does not graylist");
        assert!(after(2.0) + TOPIC_SCORE_CAP < t.graylist_threshold);
    }
}
