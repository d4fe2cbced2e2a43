//! The task that owns the swarm.
//!
//! It multiplexes three sources: swarm events, commands from [`super::NetworkHandle`]s, and the
//! connection-manager tick. Requests that complete later (dials, Kademlia queries) are kept in
//! `pending_*` maps keyed by libp2p's own ids and answered through their `oneshot`. Nothing here
//! panics on an unexpected event: it is logged and ignored. Kademlia query results are matched
//! to their requests in `queries.rs`; penalties, identify, the peer book and inbound provider
//! records are handled in `peers.rs`.

mod peers;
mod queries;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cocoon_protocol::connmgr::{self, Candidate};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, TopicHash};
use libp2p::kad::{QueryId, RecordKey};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::metrics::NetMetrics;
use super::{BLOCKED_SAMPLE, Command, GossipMessage, NetworkConfig, NetworkError, NetworkStatus, Validation};
use crate::store::PeerBook;

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// Longest a shutdown waits for connections to close cleanly.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    config: NetworkConfig,
    peer_book: Option<PeerBook>,
    metrics: NetMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    pending_dials: HashMap<ConnectionId, Reply<PeerId>>,
    pending_closest: HashMap<QueryId, Reply<super::Lookup>>,
    /// Join lookups (of the node's own id) in flight.
    pending_join: HashMap<QueryId, Reply<()>>,
    /// Lookups of a peer's own id by [`super::NetworkHandle::locate`].
    pending_locate: HashMap<QueryId, (PeerId, Reply<PeerId>)>,
    pending_providing: HashMap<QueryId, Reply<()>>,
    pending_providers: HashMap<QueryId, (Reply<Vec<PeerId>>, HashSet<PeerId>)>,
    pending_fetches: HashMap<OutboundRequestId, Reply<Option<Vec<u8>>>>,
    /// The attestation record answered on `/cocoon/attestation/1` (workers).
    served_record: Option<Vec<u8>>,
    topics: HashMap<TopicHash, (String, mpsc::Sender<GossipMessage>)>,
    connected_since: HashMap<PeerId, Instant>,
    /// Remote address of each connected peer's first connection, and whether we dialed it (the
    /// peer book takes a dialed address once identify shows the peer speaks cocoon).
    first_addr: HashMap<PeerId, (Multiaddr, bool)>,
    protected: HashMap<PeerId, u32>,
    bootstrap_peers: HashSet<PeerId>,
    rng: StdRng,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        config: NetworkConfig,
        peer_book: Option<PeerBook>,
        metrics: NetMetrics,
        registry: &mut Registry,
    ) -> Self {
        let bootstrap_peers = config.protected_peers.iter().copied().collect();
        Self {
            swarm,
            commands,
            config,
            peer_book,
            metrics,
            libp2p_metrics: libp2p::metrics::Metrics::new(registry),
            pending_dials: HashMap::new(),
            pending_closest: HashMap::new(),
            pending_locate: HashMap::new(),
            pending_join: HashMap::new(),
            pending_providing: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_fetches: HashMap::new(),
            served_record: None,
            topics: HashMap::new(),
            connected_since: HashMap::new(),
            first_addr: HashMap::new(),
            protected: HashMap::new(),
            bootstrap_peers,
            rng: StdRng::from_entropy(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.conn_manager_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.close_all().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.close_all().await;
                        break;
                    }
                },
                _ = tick.tick() => self.manage_connections(),
            }
        }
        tracing::debug!("network event loop stopped");
    }

    /// Close every connection and keep driving the swarm until they are closed (so peers see an
    /// orderly close rather than a reset), for at most [`CLOSE_TIMEOUT`].
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let count = peers.len();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let drained = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while self.swarm.connected_peers().next().is_some() {
                let event = self.swarm.select_next_some().await;
                self.on_swarm_event(event);
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!(connections = count, "closed all connections"),
            Err(_) => tracing::warn!(connections = count, "some connections did not close in time"),
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Dial { addr, reply }
                if !self.config.nat_traversal
                    && addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit)) =>
            {
                let reason = "circuit relay addresses need NAT traversal (network.nat_traversal = true)";
                let _ = reply.send(Err(NetworkError::Dial(format!("{addr}: {reason}"))));
            }
            Command::Dial { addr, reply } => {
                // With `/p2p/<id>` the swarm checks that the peer answering is the one named.
                let named = super::bootstrap::peer_id_of(&addr);
                let opts = match named {
                    Some(peer) => DialOpts::peer_id(peer)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::Disconnected)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                self.dial(opts, named, &addr, reply);
            }
            Command::AddAddress { peer, addr } => {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Command::ClosestPeers { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(key);
                self.pending_closest.insert(id, reply);
            }
            Command::Locate { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                } else {
                    let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.pending_locate.insert(id, (peer, reply));
                }
            }
            Command::JoinLookup { reply } => {
                let me = *self.swarm.local_peer_id();
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(me);
                self.pending_join.insert(id, reply);
            }
            Command::Subscribe { topic, sink, reply } => {
                let ident = IdentTopic::new(topic.clone());
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&ident)
                    .map(|_| ())
                    .map_err(|e| NetworkError::Gossip(format!("subscribe {topic}: {e}")));
                if result.is_ok() {
                    self.topics.insert(ident.hash(), (topic, sink));
                }
                let _ = reply.send(result);
            }
            Command::Publish { topic, data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(topic.clone()), data)
                    .map_err(|e| NetworkError::Gossip(format!("publish {topic}: {e}")));
                let _ = reply.send(result);
            }
            Command::Validate { id, source, verdict } => {
                if verdict == Validation::Reject {
                    self.penalize(source, super::Tolerance::Mid, "gossip message rejected by its validator");
                }
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &id,
                    &source,
                    verdict.into(),
                );
            }
            Command::Protect { peer, protect } => {
                let count = self.protected.entry(peer).or_insert(0);
                if protect {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.protected.remove(&peer);
                    }
                }
            }
            Command::Penalize { peer, level, reason } => self.penalize(peer, level, &reason),
            Command::GossipScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::StartProviding { key, reply } => {
                match self.swarm.behaviour_mut().kad.start_providing(RecordKey::new(&key)) {
                    Ok(id) => {
                        self.pending_providing.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Query(format!("start providing: {e}"))));
                    }
                }
            }
            Command::GetProviders { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(RecordKey::new(&key));
                self.pending_providers.insert(id, (reply, HashSet::new()));
            }
            Command::ServeRecord { record } => self.served_record = record,
            Command::FetchRecord { peer, reply } => {
                let id = self.swarm.behaviour_mut().record_exchange.send_request(&peer, ());
                self.pending_fetches.insert(id, reply);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn status(&mut self) -> NetworkStatus {
        let routing_table = self.routing_table_peers();
        let mesh: HashSet<PeerId> = self.swarm.behaviour().gossipsub.all_mesh_peers().copied().collect();
        NetworkStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.swarm.listeners().cloned().collect(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            connected: self.swarm.connected_peers().copied().collect(),
            routing_table,
            mesh_peers: mesh.len(),
            kad_mode: self.swarm.behaviour().kad.mode().to_string(),
            trimmed_connections: self.metrics.trimmed_connections.get(),
            blocked_count: self.swarm.behaviour().blocked.blocked_count(),
            blocked_peers: self.swarm.behaviour().blocked.blocked_sample(BLOCKED_SAMPLE),
            in_use_peers: self.protected.keys().copied().collect(),
        }
    }

    fn routing_table_peers(&mut self) -> Vec<PeerId> {
        let mut peers = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                peers.push(*entry.node.key.preimage());
            }
        }
        peers
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                if num_established.get() == 1 {
                    self.connected_since.insert(peer_id, Instant::now());
                    let dialed = matches!(endpoint, ConnectedPoint::Dialer { .. });
                    self.first_addr.insert(peer_id, (endpoint.get_remote_address().clone(), dialed));
                }
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.metrics.connected_peers.set(self.connected_since.len() as i64);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                if num_established == 0 {
                    self.connected_since.remove(&peer_id);
                    self.first_addr.remove(&peer_id);
                }
                tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.metrics.connected_peers.set(self.connected_since.len() as i64);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetworkError::Dial(error.to_string())));
                }
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(event) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    self.on_identify(peer_id, info);
                }
            }
            BehaviourEvent::Kad(event) => {
                self.libp2p_metrics.record(&event);
                self.on_kad(event);
            }
            BehaviourEvent::Gossipsub(event) => {
                self.libp2p_metrics.record(&event);
                if let gossipsub::Event::Message { propagation_source, message_id, message } = event {
                    self.on_gossip(propagation_source, message_id, message);
                }
            }
            BehaviourEvent::Ping(event) => self.libp2p_metrics.record(&event),
            BehaviourEvent::RelayServer(event) => self.libp2p_metrics.record(&event),
            BehaviourEvent::Dcutr(event) => self.libp2p_metrics.record(&event),
            BehaviourEvent::RecordExchange(event) => self.on_record_exchange(event),
            BehaviourEvent::Streams(()) => {}
            BehaviourEvent::Autonat(event) => tracing::debug!(?event, "autonat"),
            BehaviourEvent::RelayClient(event) => tracing::debug!(?event, "relay client"),
            BehaviourEvent::Limits(never) | BehaviourEvent::Blocked(never) => match never {},
        }
    }

    fn on_record_exchange(&mut self, event: request_response::Event<(), Option<Vec<u8>>>) {
        match event {
            request_response::Event::Message { message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    let record = self.served_record.clone();
                    let _ = self.swarm.behaviour_mut().record_exchange.send_response(channel, record);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending_fetches.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(reply) = self.pending_fetches.remove(&request_id) {
                    let _ = reply.send(Err(NetworkError::Dial(format!("record request to {peer}: {error}"))));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "record request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let Some((topic, sink)) = self.topics.get(&message.topic) else {
            // Subscribed topics always have a sink; anything else is not ours to forward.
            self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                &id,
                &source,
                gossipsub::MessageAcceptance::Ignore,
            );
            return;
        };
        let delivery = GossipMessage {
            topic: topic.clone(),
            id: id.clone(),
            propagation_source: source,
            author: message.source,
            data: message.data,
        };
        match sink.try_send(delivery) {
            Ok(()) => {
                self.metrics.gossip_received.inc();
            }
            Err(e) => {
                self.metrics.gossip_dropped_full.inc();
                tracing::warn!(topic = %message.topic, reason = %e, "gossip subscriber cannot take the message; ignoring it");
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &id,
                    &source,
                    gossipsub::MessageAcceptance::Ignore,
                );
            }
        }
    }

    /// Start a dial; `reply` gets the peer once connected. When the dial names `peer` and the
    /// swarm declines it because that peer is connected already, that is the answer at once.
    fn dial(
        &mut self,
        opts: DialOpts,
        peer: Option<PeerId>,
        what: &dyn std::fmt::Display,
        reply: Reply<PeerId>,
    ) {
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(connection, reply);
            }
            Err(DialError::DialPeerConditionFalse(_)) if let Some(peer) = peer => {
                let _ = reply.send(Ok(peer));
            }
            Err(e) => {
                let _ = reply.send(Err(NetworkError::Dial(format!("{what}: {e}"))));
            }
        }
    }

    /// Close surplus connections and refill thin gossipsub meshes (see `cocoon_protocol::connmgr`).
    fn manage_connections(&mut self) {
        self.prune_state();
        let now = Instant::now();
        let mesh: HashSet<PeerId> = self.swarm.behaviour().gossipsub.all_mesh_peers().copied().collect();
        self.metrics.mesh_peers.set(mesh.len() as i64);
        let candidates: Vec<Candidate<PeerId>> = self
            .connected_since
            .iter()
            .map(|(peer, since)| Candidate {
                key: *peer,
                protected: self.bootstrap_peers.contains(peer)
                    || mesh.contains(peer)
                    || self.protected.contains_key(peer),
                connected_for_ms: now.duration_since(*since).as_millis().try_into().unwrap_or(u64::MAX),
            })
            .collect();
        let grace_ms = duration_ms(self.config.trim_grace);
        for peer in connmgr::plan_trim(&candidates, self.config.target_connections, grace_ms) {
            tracing::debug!(%peer, "trimming connection");
            self.metrics.trimmed_connections.inc();
            let _ = self.swarm.disconnect_peer_id(peer);
        }

        let connected = self.connected_since.len();
        let topics: Vec<TopicHash> = self.topics.keys().cloned().collect();
        for topic in topics {
            let in_mesh = self.swarm.behaviour().gossipsub.mesh_peers(&topic).count();
            let wanted = connmgr::mesh_top_up(
                in_mesh,
                self.config.gossip_mesh_low,
                connected,
                self.config.target_connections,
            );
            if wanted == 0 {
                continue;
            }
            let mut unconnected: Vec<PeerId> = self
                .routing_table_peers()
                .into_iter()
                .filter(|p| !self.connected_since.contains_key(p))
                .collect();
            unconnected.shuffle(&mut self.rng);
            for peer in unconnected.into_iter().take(wanted) {
                self.metrics.mesh_top_up_dials.inc();
                if let Err(e) = self.swarm.dial(peer) {
                    tracing::debug!(%peer, error = %e, "mesh top-up dial failed");
                }
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
