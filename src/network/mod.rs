//! The libp2p overlay: one task owns the [`libp2p::Swarm`], everyone else holds a [`NetworkHandle`].
//!
//! [`start`] builds the swarm (TCP + QUIC + DNS, or an in-memory transport for tests and simnet),
//! binds every listen address before returning (so "port in use" is reported at once), and spawns
//! the event loop. The handle sends [`Command`]s over a bounded channel; each command that needs an
//! answer carries a `oneshot` sender. Gossip messages for a topic go to the subscriber's bounded
//! channel and are forwarded by gossipsub only after the subscriber reports a verdict
//! (validate-then-forward).
//!
//! Misbehaving peers are penalised with a [`Tolerance`] level ([`NetworkHandle::penalize`]); a
//! peer whose decaying score crosses the threshold is disconnected and refused for a bounded time.
//!
//! Submodules: `behaviour` (the composed `NetworkBehaviour`), its gatekeepers `blocklist`
//! (penalties and blocks) and `ip_limit` (inbound connections per IP), `scoring` (gossipsub peer
//! scores), `provider_store` (Kademlia's store: provider records under caps, no PUT_VALUE
//! records), `swarm` (transports), `event_loop` (the task), `bootstrap` (list files), `join`
//! (joining with backoff), `metrics`.

mod behaviour;
mod blocklist;
pub mod bootstrap;
mod event_loop;
mod ip_limit;
mod join;
mod metrics;
mod provider_store;
pub mod record_exchange;
mod scoring;
mod swarm;

use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, KadMode, Role};
use crate::store::PeerBook;

pub use cocoon_protocol::reputation::Tolerance;
pub use join::{JoinConfig, spawn_join_task};

/// Kademlia protocol name: private to cocoon, never the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/cocoon/kad/1.0.0";
/// Identify protocol version; peers announcing another one are disconnected.
pub const PROTOCOL_VERSION: &str = "/cocoon/1.0.0";
/// Capacity of the command channel from handles to the event loop.
const COMMAND_CAPACITY: usize = 256;
/// Most blocked peers listed in [`NetworkStatus::blocked_peers`] (the count is exact): enough to
/// see who was blocked last, never a copy of the whole blocklist per status call.
pub const BLOCKED_SAMPLE: usize = 32;

/// Which transport stack the swarm uses.
#[derive(Debug, Clone)]
pub enum TransportKind {
    /// TCP + QUIC + DNS, Noise and Yamux over TCP: what a real node uses.
    Tcp,
    /// libp2p's in-process memory transport (`/memory/<n>` addresses), with Noise and Yamux: for
    /// in-process tests.
    Memory,
    /// A transport built by the process for this node's key (simnet's simulated network). It
    /// must authenticate the remote peer id itself; the swarm adds nothing on top.
    Custom(CustomTransport),
}

/// What a [`TransportKind::Custom`] transport yields: the remote peer and a multiplexed
/// connection.
pub type BoxedTransport = libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>;

/// Builds a node's transport from its key (one call per node).
#[derive(Clone)]
pub struct CustomTransport(pub std::sync::Arc<dyn Fn(&Keypair) -> BoxedTransport + Send + Sync>);

impl std::fmt::Debug for CustomTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomTransport")
    }
}

/// Everything the network layer needs, derived from [`Config`].
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Transport stack.
    pub transport: TransportKind,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses announced as reachable without AutoNAT confirmation.
    pub external_addresses: Vec<Multiaddr>,
    /// Every listen address is loopback or in-memory (a local network): the bound listen addresses
    /// are then announced as external addresses too, since every peer that can exist can dial them
    /// (a relay server hands out only external addresses in reservations).
    pub local_only: bool,
    /// `Some(true)` server, `Some(false)` client, `None` automatic (server once an external address
    /// is confirmed).
    pub kad_server: Option<bool>,
    /// Run a circuit relay v2 server.
    pub relay_server: bool,
    /// Peers never trimmed by the connection manager (bootstrap peers).
    pub protected_peers: Vec<PeerId>,
    /// Connection-manager target.
    pub target_connections: usize,
    /// Hard cap on established connections.
    pub max_connections: u32,
    /// Hard cap per peer.
    pub max_connections_per_peer: u32,
    /// Fresh connections are not trimmed for this long.
    pub trim_grace: Duration,
    /// Period of the connection-manager pass.
    pub conn_manager_interval: Duration,
    /// Idle connection timeout.
    pub idle_connection_timeout: Duration,
    /// Kademlia periodic refresh.
    pub routing_refresh: Duration,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// Ping period per connection.
    pub ping_interval: Duration,
    /// Mesh size below which the node dials more peers.
    pub gossip_mesh_low: usize,
    /// Run AutoNAT, the circuit-relay client and DCUtR.
    pub nat_traversal: bool,
    /// Most inbound connections per remote IP (IPv6: per /64); 0 for no limit.
    pub max_inbound_per_ip: u32,
    /// Loopback addresses are exempt from the per-IP limits.
    pub ip_limits_exempt_loopback: bool,
}

impl NetworkConfig {
    /// Derive from the node configuration.
    pub fn from_config(config: &Config, transport: TransportKind, protected_peers: Vec<PeerId>) -> Self {
        let n = &config.network;
        let local_only = !n.listen.is_empty() && n.listen.iter().all(is_local_addr);
        let kad_server = match n.kad_mode {
            KadMode::Server => Some(true),
            KadMode::Client => Some(false),
            KadMode::Auto
                if config.has_role(Role::Bootstrap) || config.has_role(Role::Relay) || local_only =>
            {
                Some(true)
            }
            KadMode::Auto => None,
        };
        Self {
            transport,
            listen: n.listen.clone(),
            external_addresses: n.external_addresses.clone(),
            local_only,
            kad_server,
            relay_server: config.has_role(Role::Relay),
            protected_peers,
            target_connections: n.target_connections,
            max_connections: n.max_connections,
            max_connections_per_peer: n.max_connections_per_peer,
            trim_grace: Duration::from_secs(n.trim_grace_secs),
            conn_manager_interval: Duration::from_secs(n.conn_manager_interval_secs),
            idle_connection_timeout: Duration::from_secs(n.idle_connection_timeout_secs),
            routing_refresh: Duration::from_secs(n.routing_refresh_secs),
            gossip_heartbeat: Duration::from_millis(n.gossip_heartbeat_ms),
            ping_interval: Duration::from_secs(n.ping_interval_secs),
            gossip_mesh_low: n.gossip_mesh_low,
            nat_traversal: n.nat_traversal,
            max_inbound_per_ip: n.max_inbound_per_ip,
            ip_limits_exempt_loopback: n.ip_limits_exempt_loopback,
        }
    }
}

/// Whether `addr` is only reachable from this machine (loopback IP or in-memory).
pub fn is_local_addr(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        Some(Protocol::Memory(_)) => true,
        _ => false,
    }
}

/// The outcome of an iterative Kademlia lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The closest peers found (up to 20), closest first.
    pub peers: Vec<PeerId>,
    /// Requests the lookup sent (libp2p counts every `FIND_NODE` sent, answered or not).
    pub requests: u32,
    /// How many of them were answered.
    pub successes: u32,
    /// From start to the last answer.
    pub duration: Duration,
}

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The transport stack could not be built.
    #[error("cannot build transport: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why (e.g. address already in use).
        reason: String,
    },
    /// A dial failed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// A Kademlia query failed.
    #[error("kademlia query failed: {0}")]
    Query(String),
    /// Publishing or subscribing failed.
    #[error("gossip: {0}")]
    Gossip(String),
    /// The event loop has stopped.
    #[error("network event loop has stopped")]
    Stopped,
}

/// A snapshot of the network layer, for `/health`, `/peers` and tests.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    /// This node.
    pub peer_id: PeerId,
    /// Addresses the node listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Addresses confirmed reachable from outside.
    pub external_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub connected: Vec<PeerId>,
    /// Peers in the Kademlia routing table.
    pub routing_table: Vec<PeerId>,
    /// Distinct gossipsub mesh peers over all topics.
    pub mesh_peers: usize,
    /// `server` or `client`.
    pub kad_mode: String,
    /// Connections the connection manager has closed since start.
    pub trimmed_connections: u64,
    /// Peers blocked now (blocks end after `cocoon_protocol::reputation::BLOCK_MS`).
    pub blocked_count: usize,
    /// At most [`BLOCKED_SAMPLE`] of the blocked peers, most recently blocked first.
    pub blocked_peers: Vec<PeerId>,
    /// Peers a subsystem is using (an inference stream in flight), kept from trimming.
    pub in_use_peers: Vec<PeerId>,
}

/// Keeps one peer's connection from being trimmed while it lives (see [`NetworkHandle::in_use`]).
#[derive(Debug)]
pub struct InUse {
    commands: mpsc::Sender<Command>,
    peer: PeerId,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let lift = Command::Protect { peer: self.peer, protect: false };
        // Usually there is room; when the queue is full the lift waits its turn on a task.
        if let Err(mpsc::error::TrySendError::Full(lift)) = self.commands.try_send(lift)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let commands = self.commands.clone();
            runtime.spawn(async move {
                let _ = commands.send(lift).await;
            });
        }
    }
}

/// A gossip message waiting for its subscriber's verdict.
#[derive(Debug, Clone)]
pub struct GossipMessage {
    /// Topic it arrived on.
    pub topic: String,
    /// Message id (content hash).
    pub id: MessageId,
    /// The peer that sent it to us (penalised if the message is rejected).
    pub propagation_source: PeerId,
    /// The author that signed it.
    pub author: Option<PeerId>,
    /// Payload.
    pub data: Vec<u8>,
}

/// A subscriber's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Valid: forward it.
    Accept,
    /// Invalid: drop it and penalise the sender.
    Reject,
    /// Not useful (e.g. a duplicate or stale): drop it without penalty.
    Ignore,
}

impl From<Validation> for MessageAcceptance {
    fn from(v: Validation) -> Self {
        match v {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Reject => MessageAcceptance::Reject,
            Validation::Ignore => MessageAcceptance::Ignore,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// Requests from handles to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Status { reply: oneshot::Sender<NetworkStatus> },
    Dial { addr: Multiaddr, reply: Reply<PeerId> },
    AddAddress { peer: PeerId, addr: Multiaddr },
    ClosestPeers { key: Vec<u8>, reply: Reply<Lookup> },
    JoinLookup { reply: Reply<()> },
    Locate { peer: PeerId, reply: Reply<PeerId> },
    Subscribe { topic: String, sink: mpsc::Sender<GossipMessage>, reply: Reply<()> },
    Publish { topic: String, data: Vec<u8>, reply: Reply<MessageId> },
    Validate { id: MessageId, source: PeerId, verdict: Validation },
    Protect { peer: PeerId, protect: bool },
    Penalize { peer: PeerId, level: Tolerance, reason: String },
    GossipScore { peer: PeerId, reply: oneshot::Sender<Option<f64>> },
    StartProviding { key: Vec<u8>, reply: Reply<()> },
    GetProviders { key: Vec<u8>, reply: Reply<Vec<PeerId>> },
    ServeRecord { record: Option<Vec<u8>> },
    FetchRecord { peer: PeerId, reply: Reply<Option<Vec<u8>>> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// Cloneable handle to the network event loop.
#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    streams: libp2p_stream::Control,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl NetworkHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Opens and accepts raw protocol streams (dialling the peer if needed). Each clone has its
    /// own slot in the behaviour's bounded queue; open one stream at a time per clone.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands.send(command).await.map_err(|_| NetworkError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| NetworkError::Stopped)?
    }

    /// Current state of the overlay.
    pub async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status { reply: tx }).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Dial `addr`; resolves with the peer's id once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetworkError> {
        self.ask(|reply| Command::Dial { addr, reply }).await
    }

    /// Tell Kademlia that `peer` is reachable at `addr`.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetworkError> {
        self.send(Command::AddAddress { peer, addr }).await
    }

    /// The (up to 20) peers closest to `key` by XOR distance that an iterative lookup finds.
    pub async fn get_closest_peers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NetworkError> {
        Ok(self.lookup(key).await?.peers)
    }

    /// [`Self::get_closest_peers`], with what the lookup cost.
    pub async fn lookup(&self, key: Vec<u8>) -> Result<Lookup, NetworkError> {
        self.ask(|reply| Command::ClosestPeers { key, reply }).await
    }

    /// Make sure `peer` can be reached: if it is not connected, look its id up (a Kademlia
    /// server answers for itself, so the lookup reaches it when it is online) and dial it at an
    /// address found. Resolves once connected; an error if the lookup did not find it or the
    /// dial failed. For a peer known from a stored record but not from this run, such as a
    /// worker after the client restarted: without an address, opening a stream to it fails.
    pub async fn locate(&self, peer: PeerId) -> Result<(), NetworkError> {
        self.ask(|reply| Command::Locate { peer, reply }).await.map(|_| ())
    }

    /// Kademlia's join step: a lookup of the node's own id, which fills the routing table with
    /// its neighbourhood; resolves when it finishes, with an error if no peer answered. libp2p
    /// refreshes the farther buckets by itself: every peer added while the table holds fewer
    /// than K (re)arms its automatic bootstrap, which then runs once the additions pause. An
    /// explicit bootstrap here would only be followed by that automatic one, refreshing every
    /// bucket twice per join.
    pub async fn join_lookup(&self) -> Result<(), NetworkError> {
        self.ask(|reply| Command::JoinLookup { reply }).await
    }

    /// Subscribe to `topic`. Messages arrive on the returned channel (capacity `capacity`) and
    /// are forwarded to other peers only after [`NetworkHandle::validate`] accepts them; when the
    /// channel is full, new messages are ignored (not forwarded, not penalised).
    pub async fn subscribe(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<GossipMessage>, NetworkError> {
        let (sink, rx) = mpsc::channel(capacity.max(1));
        self.ask(|reply| Command::Subscribe { topic: topic.to_owned(), sink, reply }).await?;
        Ok(rx)
    }

    /// Publish `data` on `topic`.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<MessageId, NetworkError> {
        self.ask(|reply| Command::Publish { topic: topic.to_owned(), data, reply }).await
    }

    /// Report the verdict on a received gossip message (exactly once per message).
    pub async fn validate(&self, message: &GossipMessage, verdict: Validation) -> Result<(), NetworkError> {
        self.send(Command::Validate { id: message.id.clone(), source: message.propagation_source, verdict })
            .await
    }

    /// Protect `peer` from connection trimming while a subsystem uses it (or lift that).
    pub async fn protect(&self, peer: PeerId, protect: bool) -> Result<(), NetworkError> {
        self.send(Command::Protect { peer, protect }).await
    }

    /// Protect `peer` from connection trimming until the returned guard is dropped (an inference
    /// stream in flight: trimming its connection would cut the stream mid-answer).
    pub async fn in_use(&self, peer: PeerId) -> Result<InUse, NetworkError> {
        self.protect(peer, true).await?;
        Ok(InUse { commands: self.commands.clone(), peer })
    }

    /// Count an offence by `peer` at tolerance `level` (see [`Tolerance`] for what each level is
    /// for). Only for what is provably the peer's own fault: a verdict that depends on our
    /// collateral, policy or version is no penalty. When the peer's decaying score crosses the
    /// threshold it is disconnected and refused for a bounded time.
    pub async fn penalize(
        &self,
        peer: PeerId,
        level: Tolerance,
        reason: impl Into<String>,
    ) -> Result<(), NetworkError> {
        self.send(Command::Penalize { peer, level, reason: reason.into() }).await
    }

    /// Disconnect `peer` and refuse it for a bounded time: [`Self::penalize`] at
    /// [`Tolerance::Fatal`] (a record it signed is invalid, a stream it sent cannot be from an
    /// honest peer).
    pub async fn block(&self, peer: PeerId, reason: impl Into<String>) -> Result<(), NetworkError> {
        self.penalize(peer, Tolerance::Fatal, reason).await
    }

    /// `peer`'s gossipsub score as this node sees it (`None` if gossipsub does not know it).
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::GossipScore { peer, reply: tx }).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Announce in the DHT that this node provides `key` (re-announced by Kademlia periodically).
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), NetworkError> {
        self.ask(|reply| Command::StartProviding { key, reply }).await
    }

    /// Peers that announced they provide `key`.
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, NetworkError> {
        self.ask(|reply| Command::GetProviders { key, reply }).await
    }

    /// The signed attestation record this node hands out on `/cocoon/attestation/1`.
    pub async fn serve_record(&self, record: Option<Vec<u8>>) -> Result<(), NetworkError> {
        self.send(Command::ServeRecord { record }).await
    }

    /// Ask `peer` for its current attestation record over `/cocoon/attestation/1`.
    pub async fn fetch_record(&self, peer: PeerId) -> Result<Option<Vec<u8>>, NetworkError> {
        self.ask(|reply| Command::FetchRecord { peer, reply }).await
    }

    /// Close all connections and stop the event loop; resolves when it has stopped.
    pub async fn shutdown(&self) -> Result<(), NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Shutdown { reply: tx }).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }
}

/// Build the swarm, bind all listeners, and spawn the event loop.
///
/// Returns once every listen address is bound, with the handle and the loop's task.
pub async fn start(
    config: NetworkConfig,
    keypair: Keypair,
    peer_book: Option<PeerBook>,
    registry: &mut Registry,
) -> Result<(NetworkHandle, tokio::task::JoinHandle<()>), NetworkError> {
    let peer_id = keypair.public().to_peer_id();
    let metrics = metrics::NetMetrics::register(registry);
    let mut swarm = swarm::build(&config, keypair, registry, &metrics)?;
    swarm::listen_all(&mut swarm, &config.listen, config.local_only).await?;
    if config.relay_server && swarm.external_addresses().next().is_none() {
        tracing::warn!(
            "relay role without an external address: reservations are refused until AutoNAT confirms \
             one; set network.external_addresses to the relay's public address"
        );
    }
    let streams = swarm.behaviour().streams.new_control();
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let event_loop = event_loop::EventLoop::new(swarm, rx, config, peer_book, metrics, registry);
    let task = tokio::spawn(event_loop.run());
    Ok((NetworkHandle { commands: tx, peer_id, streams }, task))
}
