//! The composed `NetworkBehaviour` of a cocoon node.
//!
//! Field order is the order in which libp2p consults behaviours, and it matters: the gatekeepers
//! (`blocked`, `ip_limit`, then `limits`) come first so a blocked peer, a connection over its
//! IP's share or over the caps is denied before any other behaviour allocates state for it; then
//! identify and ping (liveness and addresses), Kademlia, gossipsub, and NAT traversal (off with
//! `network.nat_traversal = false`); cocoon's own protocols come last.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, kad, ping, relay};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use super::metrics::NetMetrics;
use super::provider_store::ProviderStore;
use super::{KAD_PROTOCOL, NetworkConfig, PROTOCOL_VERSION, blocklist, ip_limit, scoring};

/// Largest gossip message accepted (128 KiB: a signed attestation record is at most 96 KiB, a TDX
/// quote and eight GPUs' evidence; with a TDX quote alone it is ~6 KiB, each Hopper GPU adds ~7.5).
pub(crate) const MAX_GOSSIP_MESSAGE: usize = 128 * 1024;
/// Kademlia queries give up after this long.
const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Provider records we hold expire this long after their last announcement: three republish
/// intervals, so a provider that misses two (a restart, a partition) keeps its place, and a
/// worker that is gone leaves within hours rather than Kademlia's default two days.
const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(3 * 3600);
/// Our own provider records are re-announced this often (workers also re-announce with every
/// new attestation record).
const PROVIDER_REPUBLISH: Duration = Duration::from_secs(3600);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Gatekeeper: penalties per peer; a peer whose score crosses the threshold (e.g. one that
    /// sent an invalid attestation record) is disconnected and refused for a bounded time.
    pub blocked: blocklist::Behaviour,
    /// Gatekeeper: inbound connections per remote IP, before the handshake is paid for.
    pub ip_limit: ip_limit::Behaviour,
    /// Gatekeeper: caps on established and pending connections.
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<ProviderStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub autonat: Toggle<autonat::Behaviour>,
    pub relay_client: Toggle<relay::client::Behaviour>,
    /// Only on nodes with the `relay` role.
    pub relay_server: Toggle<relay::Behaviour>,
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// `/cocoon/attestation/1`: direct fetch of a peer's attestation record.
    pub record_exchange: libp2p::request_response::Behaviour<super::record_exchange::RecordCodec>,
    /// Raw streams for protocols served outside the swarm task (`/cocoon/inference/2`), through
    /// [`libp2p_stream::Control`].
    pub streams: libp2p_stream::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetworkConfig,
        registry: &mut Registry,
        metrics: &NetMetrics,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_connections / 2 + 1))
            .with_max_pending_outgoing(Some(config.max_connections / 2 + 1));

        let identify = identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.to_owned(), key.public())
                .with_agent_version(format!("cocoon/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config
            .set_query_timeout(KAD_QUERY_TIMEOUT)
            .set_periodic_bootstrap_interval(Some(config.routing_refresh))
            // Inbound PUT_VALUE and ADD_PROVIDER come to the event loop, which drops the first and
            // admits the second with the sender's address group (`provider_store.rs`).
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_provider_record_ttl(Some(PROVIDER_RECORD_TTL))
            .set_provider_publication_interval(Some(PROVIDER_REPUBLISH))
            .set_replication_interval(None)
            .set_publication_interval(None);
        let store = ProviderStore::new(peer_id, rand::random());
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        kad.set_mode(
            config.kad_server.map(|server| if server { kad::Mode::Server } else { kad::Mode::Client }),
        );

        // Mesh peers are protected from trimming, so the mesh must fit under the connection
        // target: D_high = min(12, target), D = min(6, D_high), D_lo = D - 1 (at least 1), and
        // at most D/2 outbound-only slots. The default target (50) leaves gossipsub's defaults.
        let d_high = config.target_connections.clamp(1, 12);
        let d = d_high.min(6);
        let d_low = d.saturating_sub(1).max(1);
        let gossip_config = gossipsub::ConfigBuilder::default()
            .mesh_n_high(d_high)
            .mesh_n(d)
            .mesh_n_low(d_low)
            .mesh_outbound_min((d / 2).min(d_low))
            .heartbeat_interval(config.gossip_heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_MESSAGE)
            .message_id_fn(content_message_id)
            .build()
            .map_err(|e| format!("gossipsub config: {e}"))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_config)?
                .with_metrics(registry.sub_registry_with_prefix("gossipsub"), Default::default());
        let attestation_topic = gossipsub::IdentTopic::new(crate::attestation::service::ATTESTATION_TOPIC);
        gossipsub.with_peer_score(scoring::params(attestation_topic.hash()), scoring::thresholds())?;

        let relay_server =
            config.relay_server.then(|| relay::Behaviour::new(peer_id, relay::Config::default()));
        // Without NAT traversal the relay transport stays in the stack but its behaviour is off,
        // so `/p2p-circuit` dials fail at once.
        let nat = config.nat_traversal;

        Ok(Self {
            blocked: blocklist::Behaviour::new(blocklist::CAPACITY),
            ip_limit: ip_limit::Behaviour::new(
                config.max_inbound_per_ip,
                config.ip_limits_exempt_loopback,
                metrics.inbound_denied_per_ip.clone(),
            ),
            limits: connection_limits::Behaviour::new(limits),
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval)),
            kad,
            gossipsub,
            autonat: nat.then(|| autonat::Behaviour::new(peer_id, autonat::Config::default())).into(),
            relay_client: nat.then_some(relay_client).into(),
            relay_server: relay_server.into(),
            dcutr: nat.then(|| dcutr::Behaviour::new(peer_id)).into(),
            record_exchange: super::record_exchange::behaviour(),
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}

/// Gossip message id = SHA-256 over topic and payload (first 20 bytes), so the same content
/// republished through other paths is recognised as a duplicate. Every node must compute the same
/// id (IHAVE/IWANT carry ids), hence a fixed cryptographic hash rather than `DefaultHasher`.
fn content_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = Sha256::new();
    h.update(message.topic.as_str().as_bytes());
    h.update([0u8]);
    h.update(&message.data);
    gossipsub::MessageId::from(h.finalize()[..20].to_vec())
}
