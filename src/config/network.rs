//! The `[network]` and `[http]` sections: transports, Kademlia, gossipsub, connection
//! management and per-IP limits; connection limits and timeouts of the node's HTTP servers.

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::KadMode;

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Addresses to listen on. Default TCP and QUIC on port 4001, all interfaces.
    pub listen: Vec<Multiaddr>,
    /// Addresses other nodes can reach this node at (a public IP or DNS name). Default none:
    /// AutoNAT discovers them.
    pub external_addresses: Vec<Multiaddr>,
    /// Kademlia mode. Default `auto`.
    pub kad_mode: KadMode,
    /// Connections the connection manager trims down to. Default 50.
    pub target_connections: usize,
    /// Hard limit on established connections; beyond it new ones are refused. Default 100.
    pub max_connections: u32,
    /// Most connections kept to one peer. Default 2.
    pub max_connections_per_peer: u32,
    /// Seconds a fresh connection is safe from trimming. Default 10.
    pub trim_grace_secs: u64,
    /// Seconds between connection-manager passes. Default 5.
    pub conn_manager_interval_secs: u64,
    /// Seconds a connection with no open streams stays open. Default 60.
    pub idle_connection_timeout_secs: u64,
    /// Seconds between Kademlia routing-table refreshes once joined. Default 300.
    pub routing_refresh_secs: u64,
    /// Gossipsub heartbeat in milliseconds. Default 1000.
    pub gossip_heartbeat_ms: u64,
    /// Seconds between pings on each connection (round-trip-time metric only: a failed ping does
    /// not close the connection). Default 15.
    pub ping_interval_secs: u64,
    /// Gossipsub mesh size below which the node dials more peers. Default 4.
    pub gossip_mesh_low: usize,
    /// NAT traversal: AutoNAT, the circuit-relay client and DCUtR hole punching. Default true; a
    /// node with a public address may turn it off (simnet does: its network has no NATs).
    pub nat_traversal: bool,
    /// Most inbound connections (pending or established) from one remote IP address (an IPv6
    /// /64 counts as one address); 0 turns the limit off. Default 16: a few nodes behind one NAT,
    /// each with up to `max_connections_per_peer` connections, fit; one host cannot take more
    /// than a sixth of the default `max_connections` under fresh peer ids.
    pub max_inbound_per_ip: u32,
    /// Exempt loopback addresses from the per-IP limits (this one and the per-IP share of
    /// provider records). Default true, so a local devnet of many nodes on 127.0.0.1 works; set
    /// false on a node that loopback strangers can reach (a proxy in front of it).
    pub ip_limits_exempt_loopback: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        let parse = |s: &str| s.parse().unwrap_or_else(|_| Multiaddr::empty());
        Self {
            listen: vec![parse("/ip4/0.0.0.0/tcp/4001"), parse("/ip4/0.0.0.0/udp/4001/quic-v1")],
            external_addresses: Vec::new(),
            kad_mode: KadMode::Auto,
            target_connections: 50,
            max_connections: 100,
            max_connections_per_peer: 2,
            trim_grace_secs: 10,
            conn_manager_interval_secs: 5,
            idle_connection_timeout_secs: 60,
            routing_refresh_secs: 300,
            gossip_heartbeat_ms: 1000,
            ping_interval_secs: 15,
            gossip_mesh_low: 4,
            nat_traversal: true,
            max_inbound_per_ip: 16,
            ip_limits_exempt_loopback: true,
        }
    }
}

/// `[http]`: limits of the node's HTTP servers run by `crate::http::serve` (the OpenAI API and the
/// admin endpoint; each server has its own connection cap). None of them bounds how long a
/// response may take, so a long streamed (SSE) answer is never cut off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Most connections a server holds open at once; one beyond it is answered `503` and closed.
    /// With HTTP/1.1 a connection carries one request at a time, so this is also the most
    /// requests in flight. Default 64: far more than a local application or a scraper needs, few
    /// enough that held connections cannot exhaust the process's file descriptors.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from the first byte (or, on a
    /// kept-alive connection, from the end of the previous response; an idle kept-alive
    /// connection is closed after it). Default 10: a client sends its headers in milliseconds,
    /// and a client that trickles them (slowloris) holds a connection slot for at most this long.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request body once its headers are in; a body still
    /// arriving then is cut off with `408`. Default 30: the largest body the API accepts (1 MiB)
    /// takes well under a second on any link that can use the node.
    pub body_read_timeout_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { max_connections: 64, header_read_timeout_secs: 10, body_read_timeout_secs: 30 }
    }
}
