//! Kademlia query results: each finished query is matched to the `pending_*` entry its command
//! left in [`EventLoop`] and answered through its `oneshot`; a located peer is dialled, and the
//! addresses a provider lookup found are kept for later dials.

use libp2p::PeerId;
use libp2p::core::Endpoint;
use libp2p::kad::{self, QueryResult};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour};

use super::{EventLoop, Reply};
use crate::network::NetworkError;

/// Most addresses kept per provider found (a provider record carries the provider's listen and
/// external addresses).
const MAX_PROVIDER_ADDRS: usize = 8;
/// Most providers one lookup collects: storers answer from lists capped at 32 per key, so an
/// honest lookup finds far fewer; the cap stops a lying storer from handing the reader, who
/// fetches and verifies each provider's record, an endless list.
pub(crate) const MAX_PROVIDERS_FOUND: usize = 256;

impl EventLoop {
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed { id, result, step, stats } => match result {
                QueryResult::GetClosestPeers(_) if let Some(reply) = self.pending_join.remove(&id) => {
                    // A join lookup nobody answered (every request refused or cut off, say by a
                    // bootstrap node at its connection limit) filled nothing: the caller retries.
                    let answer = if stats.num_successes() == 0 {
                        self.metrics.kad_join_lookups_unanswered.inc();
                        Err(NetworkError::Query("no peer answered the Kademlia join lookup".into()))
                    } else {
                        self.metrics.kad_join_lookups.inc();
                        Ok(())
                    };
                    let _ = reply.send(answer);
                }
                QueryResult::GetClosestPeers(result)
                    if let Some((peer, reply)) = self.pending_locate.remove(&id) =>
                {
                    let found = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    self.connect_located(peer, found, reply);
                }
                QueryResult::GetClosestPeers(result) => {
                    if let Some(reply) = self.pending_closest.remove(&id) {
                        let peers = match result {
                            Ok(ok) => Ok(ok.peers),
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => {
                                Ok(peers)
                            }
                            Err(e) => Err(NetworkError::Query(e.to_string())),
                        };
                        let answer = peers.map(|peers| crate::network::Lookup {
                            peers: peers.into_iter().map(|p| p.peer_id).collect(),
                            requests: stats.num_requests(),
                            successes: stats.num_successes(),
                            duration: stats.duration().unwrap_or_default(),
                        });
                        let _ = reply.send(answer);
                    }
                }
                QueryResult::StartProviding(result) => {
                    if let Some(reply) = self.pending_providing.remove(&id) {
                        let _ =
                            reply.send(result.map(|_| ()).map_err(|e| NetworkError::Query(e.to_string())));
                    }
                }
                QueryResult::GetProviders(result) => {
                    if let Some((_, found)) = self.pending_providers.get_mut(&id)
                        && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = &result
                    {
                        let room = MAX_PROVIDERS_FOUND.saturating_sub(found.len());
                        let fresh: Vec<PeerId> =
                            providers.iter().filter(|p| !found.contains(p)).take(room).copied().collect();
                        found.extend(fresh.iter().copied());
                        for provider in fresh {
                            self.keep_provider_addresses(provider);
                        }
                    }
                    if step.last
                        && let Some((reply, found)) = self.pending_providers.remove(&id)
                    {
                        let answer = match result {
                            Err(e) if found.is_empty() => Err(NetworkError::Query(e.to_string())),
                            _ => Ok(found.into_iter().collect()),
                        };
                        let _ = reply.send(answer);
                    }
                }
                _ => {}
            },
            kad::Event::RoutingUpdated { .. } => {
                let size: usize = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
                self.metrics.routing_table_peers.set(size as i64);
            }
            kad::Event::ModeChanged { new_mode } => tracing::info!(mode = %new_mode, "kademlia mode changed"),
            kad::Event::InboundRequest { request } => self.on_kad_inbound(request),
            _ => {}
        }
    }

    /// Hand the addresses a provider lookup found for `provider` to the swarm, so that a request
    /// to it (a record fetch, an inference stream) can dial it. Kademlia keeps them only while
    /// the query runs, and reaches them only through its dials; a provider outside the routing
    /// table was otherwise undialable once the lookup ended ("no addresses for peer"). The
    /// addresses are only hints (the transport authenticates the peer id on connecting), and the
    /// swarm's behaviours keep them in bounded caches.
    fn keep_provider_addresses(&mut self, provider: PeerId) {
        if provider == *self.swarm.local_peer_id() || self.swarm.is_connected(&provider) {
            return;
        }
        // Kademlia's answer for a dial to `provider`: its routing-table entry and the addresses
        // the running queries learnt. Asking has no side effect.
        let addrs = NetworkBehaviour::handle_pending_outbound_connection(
            &mut self.swarm.behaviour_mut().kad,
            ConnectionId::new_unchecked(0),
            Some(provider),
            &[],
            Endpoint::Dialer,
        )
        .unwrap_or_default();
        for addr in addrs.into_iter().take(MAX_PROVIDER_ADDRS) {
            self.swarm.add_peer_address(provider, addr);
        }
    }

    /// The end of a [`Command::Locate`] lookup: connected already (the lookup itself asked the
    /// peer), or dial it at the addresses the lookup found.
    fn connect_located(&mut self, peer: PeerId, found: Vec<kad::PeerInfo>, reply: Reply<PeerId>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let addrs = found.into_iter().find(|p| p.peer_id == peer).map(|p| p.addrs).unwrap_or_default();
        if addrs.is_empty() {
            let _ = reply.send(Err(NetworkError::Query(format!("{peer} not found on the DHT"))));
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::Disconnected).build();
        self.dial(opts, Some(peer), &peer, reply);
    }
}
