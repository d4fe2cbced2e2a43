//! Gatekeeper behaviour: graded penalties per peer and the bounded, expiring blocklist they lead
//! to.
//!
//! It owns a [`Reputation`] table (`cocoon_protocol::reputation`: tolerance levels, decaying
//! scores, timed blocks, a capped table with its eviction rule). A peer whose score crosses the
//! threshold is disconnected at once and every connection to or from it is denied until its
//! block ends. First in the behaviour tree, so a blocked peer costs no other behaviour any state.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use cocoon_protocol::reputation::{Reputation, Tolerance, Verdict};
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Peers scored or blocked at once: `cocoon_protocol::reputation::DEFAULT_CAPACITY` (4096
/// entries, under half a MiB; the eviction rule is on `Reputation::penalize`).
pub(crate) const CAPACITY: usize = cocoon_protocol::reputation::DEFAULT_CAPACITY;

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is blocked")]
pub(crate) struct Blocked(PeerId);

pub(crate) struct Behaviour {
    table: Reputation<PeerId>,
    /// Start of the millisecond clock handed to the table.
    epoch: Instant,
    /// Peers just blocked whose connections the swarm must close (drained by `poll`; holds at
    /// most one entry per peer in the table).
    to_close: VecDeque<PeerId>,
    waker: Option<Waker>,
}

impl Behaviour {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: Reputation::new(capacity),
            epoch: Instant::now(),
            to_close: VecDeque::new(),
            waker: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
    }

    /// Count an offence of `level` by `peer`; a peer that crosses the threshold is disconnected.
    pub(crate) fn penalize(&mut self, peer: PeerId, level: Tolerance) -> Verdict {
        let verdict = self.table.penalize(peer, level, self.now_ms());
        if let Verdict::Blocked { .. } = verdict {
            if self.to_close.len() < self.table.capacity() {
                self.to_close.push_back(peer);
            }
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
        verdict
    }

    /// Whether `peer` is blocked now.
    pub(crate) fn is_blocked(&self, peer: &PeerId) -> bool {
        self.table.is_blocked(peer, self.now_ms())
    }

    /// Peers blocked now.
    pub(crate) fn blocked_count(&self) -> usize {
        self.table.blocked_count(self.now_ms())
    }

    /// At most `max` blocked peers, most recently blocked first.
    pub(crate) fn blocked_sample(&self, max: usize) -> Vec<PeerId> {
        self.table.blocked_sample(self.now_ms(), max)
    }

    /// Forget decayed scores and ended blocks; returns the peers still tracked.
    pub(crate) fn prune(&mut self) -> usize {
        let now = self.now_ms();
        self.table.prune(now);
        self.table.len()
    }

    fn deny(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.is_blocked(peer) { Err(ConnectionDenied::new(Blocked(*peer))) } else { Ok(()) }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.deny(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer {
            self.deny(&peer)?;
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.deny(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(peer_id) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection { peer_id, connection: CloseConnection::All });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
