//! Prometheus metrics of the network layer, registered into the node's registry (no globals).
//!
//! libp2p's own recorders (`libp2p::metrics::Metrics`) cover swarm, identify, ping, Kademlia,
//! gossipsub events, relay and DCUtR under the `libp2p_` prefix; gossipsub's internal metrics sit
//! under `gossipsub_`. The gauges and counters here describe cocoon's own decisions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub(crate) struct NetMetrics {
    pub connected_peers: Gauge,
    pub routing_table_peers: Gauge,
    pub mesh_peers: Gauge,
    pub trimmed_connections: Counter,
    pub mesh_top_up_dials: Counter,
    pub gossip_received: Counter,
    pub gossip_dropped_full: Counter,
    pub wrong_network_peers: Counter,
    pub blocked_peers: Counter,
    pub kad_join_lookups: Counter,
    pub kad_join_lookups_unanswered: Counter,
    pub penalties: Family<Vec<(String, String)>, Counter>,
    pub blocklist_size: Gauge,
    pub inbound_denied_per_ip: Counter,
    pub kad_records_refused: Counter,
    pub provider_records: Gauge,
    pub provider_records_refused: Counter,
}

impl NetMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("cocoon");
        r.register("connected_peers", "Peers with at least one open connection", m.connected_peers.clone());
        r.register(
            "routing_table_peers",
            "Peers in the Kademlia routing table",
            m.routing_table_peers.clone(),
        );
        r.register(
            "gossip_mesh_peers",
            "Distinct gossipsub mesh peers over all topics",
            m.mesh_peers.clone(),
        );
        r.register(
            "trimmed_connections",
            "Peers disconnected by the connection manager to stay at the target",
            m.trimmed_connections.clone(),
        );
        r.register(
            "mesh_top_up_dials",
            "Dials made to refill a thin gossipsub mesh",
            m.mesh_top_up_dials.clone(),
        );
        r.register("gossip_received", "Gossip messages handed to a subscriber", m.gossip_received.clone());
        r.register(
            "gossip_dropped_full",
            "Gossip messages ignored because the subscriber's queue was full",
            m.gossip_dropped_full.clone(),
        );
        r.register(
            "wrong_network_peers",
            "Peers disconnected for announcing another identify protocol version",
            m.wrong_network_peers.clone(),
        );
        r.register(
            "blocked_peers",
            "Blocks imposed: penalties that took a peer's score over the threshold",
            m.blocked_peers.clone(),
        );
        r.register("penalties", "Penalties counted against peers, by tolerance level", m.penalties.clone());
        r.register("blocklist_size", "Peers blocked now (blocks expire)", m.blocklist_size.clone());
        r.register(
            "inbound_denied_per_ip",
            "Inbound connections denied for exceeding network.max_inbound_per_ip",
            m.inbound_denied_per_ip.clone(),
        );
        r.register(
            "kad_records_refused",
            "Inbound Kademlia PUT_VALUE records dropped (cocoon keeps no DHT values)",
            m.kad_records_refused.clone(),
        );
        r.register(
            "kad_provider_records",
            "Provider records held for other peers",
            m.provider_records.clone(),
        );
        r.register(
            "kad_provider_records_refused",
            "Inbound provider records refused (key full of established providers, address group share, store full)",
            m.provider_records_refused.clone(),
        );
        r.register(
            "kad_join_lookups",
            "Join lookups (of the node's own id) that some peer answered",
            m.kad_join_lookups.clone(),
        );
        r.register(
            "kad_join_lookups_unanswered",
            "Join lookups no peer answered (the node retries with backoff)",
            m.kad_join_lookups_unanswered.clone(),
        );
        m
    }
}
