//! What the event loop learns about and holds against peers: penalties and blocks (scored by the
//! `blocked` gatekeeper behaviour), identify results, the peer book, and inbound Kademlia
//! records (provider records admitted with the sender's address group, values dropped).

use std::time::Instant;

use cocoon_protocol::reputation::Verdict;
use libp2p::kad::{InboundRequest, ProviderRecord};
use libp2p::{Multiaddr, PeerId, StreamProtocol, identify};

use super::EventLoop;
use crate::network::provider_store::Admission;
use crate::network::{KAD_PROTOCOL, PROTOCOL_VERSION, Tolerance, ip_limit};

impl EventLoop {
    /// Count an offence of `level` by `peer`; a peer that crosses the threshold is disconnected
    /// (by the gatekeeper), dropped from the routing table and forgotten by the peer book.
    pub(super) fn penalize(&mut self, peer: PeerId, level: Tolerance, reason: &str) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        self.metrics.penalties.get_or_create(&vec![("level".to_owned(), level.as_str().to_owned())]).inc();
        match self.swarm.behaviour_mut().blocked.penalize(peer, level) {
            Verdict::Blocked { .. } => {
                tracing::warn!(%peer, %level, %reason, "blocking peer");
                self.metrics.blocked_peers.inc();
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                if let Some(book) = &self.peer_book
                    && let Err(e) = book.remove(&peer)
                {
                    tracing::warn!(%peer, error = %e, "cannot remove blocked peer from the peer book");
                }
            }
            Verdict::Counted { score } => tracing::info!(%peer, %level, %reason, score, "peer penalised"),
            Verdict::AlreadyBlocked { .. } => {
                tracing::debug!(%peer, %level, %reason, "blocked peer penalised")
            }
            Verdict::Dropped => tracing::debug!(%peer, %level, %reason, "penalty dropped: blocklist full"),
        }
        self.metrics.blocklist_size.set(self.swarm.behaviour().blocked.blocked_count() as i64);
    }

    /// Periodic upkeep of bounded state: forget decayed scores and ended blocks.
    pub(super) fn prune_state(&mut self) {
        self.swarm.behaviour_mut().blocked.prune();
        self.metrics.blocklist_size.set(self.swarm.behaviour().blocked.blocked_count() as i64);
        self.metrics.provider_records.set(self.swarm.behaviour_mut().kad.store_mut().len() as i64);
    }

    /// A peer of another network (identify protocol version) is disconnected; a Kademlia server
    /// of ours has its listen addresses added to the routing table, and only such a peer (our
    /// version, our Kademlia protocol) enters the peer book.
    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != PROTOCOL_VERSION {
            // Another version is no fault of the peer's: disconnected, not penalised.
            tracing::info!(%peer, version = %info.protocol_version, "disconnecting peer of another network");
            self.metrics.wrong_network_peers.inc();
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        if !info.protocols.contains(&StreamProtocol::new(KAD_PROTOCOL)) {
            return;
        }
        if let Some((addr, true)) = self.first_addr.get(&peer).cloned() {
            self.remember(&peer, &addr);
        }
        // Loopback addresses are only useful when we ourselves are on a loopback-only network.
        for addr in info.listen_addrs {
            if crate::network::is_local_addr(&addr) && !self.config.local_only {
                continue;
            }
            self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            self.remember(&peer, &addr);
        }
    }

    pub(super) fn remember(&self, peer: &PeerId, addr: &Multiaddr) {
        let Some(book) = &self.peer_book else { return };
        let mut addr = addr.clone();
        if matches!(addr.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
            addr.pop();
        }
        if let Err(e) = book.record(peer, &addr, crate::clock::unix_now()) {
            tracing::warn!(%peer, error = %e, "cannot record peer in the peer book");
        }
    }

    /// Kademlia runs with `StoreInserts::FilterBoth`: inbound values are dropped (cocoon keeps
    /// none), inbound provider records are admitted by the store's rule with the address group
    /// of the connection they came on.
    pub(super) fn on_kad_inbound(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord { record: Some(_), .. } => {
                self.metrics.kad_records_refused.inc();
            }
            InboundRequest::AddProvider { record: Some(record) } => self.admit_provider(record),
            _ => {}
        }
    }

    fn admit_provider(&mut self, record: ProviderRecord) {
        let exempt = self.config.ip_limits_exempt_loopback;
        let group = self.first_addr.get(&record.provider).and_then(|(a, _)| ip_limit::ip_group(a, exempt));
        let provider = record.provider;
        match self.swarm.behaviour_mut().kad.store_mut().admit(record, group, Instant::now()) {
            Admission::Refused(why) => {
                self.metrics.provider_records_refused.inc();
                tracing::debug!(%provider, why, "provider record refused");
            }
            Admission::Replaced(evicted) => tracing::debug!(%provider, %evicted, "provider record replaced"),
            Admission::Added | Admission::Refreshed => {}
        }
    }
}
