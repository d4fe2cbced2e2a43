//! Gatekeeper behaviour: at most N inbound connections (pending or established) per remote IP.
//!
//! libp2p's `connection_limits` caps connections in total and per peer id, but a peer id is free:
//! one host can open `max_connections` connections under as many ids and take every slot. This
//! behaviour counts inbound connections per remote address group (an IPv4 address, or an IPv6
//! /64, which one host usually holds whole) and denies the connection beyond the limit before
//! the handshake is run. Loopback can be exempt (local devnets run many nodes on 127.0.0.1), and
//! connections without an IP (in-memory transports, relayed circuits, whose address is the
//! relay's) are not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use prometheus_client::metrics::counter::Counter;

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("{group} already has {limit} inbound connections")]
pub(crate) struct TooManyFromIp {
    group: IpAddr,
    limit: u32,
}

/// The address group a remote address counts against: the IPv4 address itself, or the /64 of
/// an IPv6 address. `None` for addresses that are not counted (no IP, a relayed circuit, or
/// loopback when exempt).
pub(crate) fn ip_group(addr: &Multiaddr, exempt_loopback: bool) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let ip = match addr.iter().next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => {
            let segments = ip.segments();
            let prefix = Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0);
            if ip.is_loopback() { IpAddr::V6(ip) } else { IpAddr::V6(prefix) }
        }
        _ => return None,
    };
    (!(exempt_loopback && ip.is_loopback())).then_some(ip)
}

pub(crate) struct Behaviour {
    /// Most inbound connections per group; 0 turns the limit off.
    limit: u32,
    exempt_loopback: bool,
    /// Counted connections (bounded by the swarm's pending and established connection caps).
    by_connection: HashMap<ConnectionId, IpAddr>,
    per_group: HashMap<IpAddr, u32>,
    denied: Counter,
}

impl Behaviour {
    pub(crate) fn new(limit: u32, exempt_loopback: bool, denied: Counter) -> Self {
        Self { limit, exempt_loopback, by_connection: HashMap::new(), per_group: HashMap::new(), denied }
    }

    fn release(&mut self, connection: ConnectionId) {
        let Some(group) = self.by_connection.remove(&connection) else { return };
        if let Some(count) = self.per_group.get_mut(&group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_group.remove(&group);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if self.limit == 0 {
            return Ok(());
        }
        let Some(group) = ip_group(remote, self.exempt_loopback) else { return Ok(()) };
        let count = self.per_group.entry(group).or_insert(0);
        if *count >= self.limit {
            self.denied.inc();
            tracing::debug!(%group, limit = self.limit, "inbound connection over the per-IP limit denied");
            return Err(ConnectionDenied::new(TooManyFromIp { group, limit: self.limit }));
        }
        *count += 1;
        self.by_connection.insert(connection, group);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.release(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups_ipv4_by_address_and_ipv6_by_64_and_skips_circuits_and_memory() {
        let v4 = ip_group(&addr("/ip4/203.0.113.7/tcp/4001"), true);
        assert_eq!(v4, Some("203.0.113.7".parse().unwrap()));
        let a = ip_group(&addr("/ip6/2001:db8:1:2:aaaa::1/tcp/1"), true);
        let b = ip_group(&addr("/ip6/2001:db8:1:2:bbbb::9/udp/1/quic-v1"), true);
        assert_eq!(a, b);
        assert_ne!(a, ip_group(&addr("/ip6/2001:db8:1:3::1/tcp/1"), true));
        assert_eq!(ip_group(&addr("/memory/5"), false), None);
        let relayed =
            "/ip4/203.0.113.7/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        assert_eq!(ip_group(&addr(relayed), false), None);
        assert_eq!(ip_group(&addr("/ip4/127.0.0.1/tcp/1"), true), None);
        assert!(ip_group(&addr("/ip4/127.0.0.1/tcp/1"), false).is_some());
    }

    #[test]
    fn denies_beyond_the_limit_and_frees_the_slot_when_a_connection_ends() {
        let mut b = Behaviour::new(2, true, Counter::default());
        let local = addr("/ip4/10.0.0.1/tcp/4001");
        let (x, y) = (addr("/ip4/198.51.100.1/tcp/5000"), addr("/ip4/198.51.100.2/tcp/5000"));
        let ids: Vec<ConnectionId> = (0..5).map(ConnectionId::new_unchecked).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &x).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &x).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &x).is_err());
        assert!(
            b.handle_pending_inbound_connection(ids[3], &local, &y).is_ok(),
            "another IP is not affected"
        );
        b.release(ids[0]);
        assert!(b.handle_pending_inbound_connection(ids[4], &local, &x).is_ok());
        assert_eq!(b.denied.get(), 1);
        let unlimited = &mut Behaviour::new(0, true, Counter::default());
        for id in ids {
            assert!(unlimited.handle_pending_inbound_connection(id, &local, &x).is_ok());
        }
    }
}
