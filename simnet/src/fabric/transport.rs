//! The libp2p [`Transport`] of a simulated node: `/memory/<port>` listeners registered in the
//! [`Fabric`], dials that become [`SimConnection`]s after a handshake round trip.
//!
//! Peer ids are vouched for by the fabric (it knows which key built which transport), which stands
//! in for the Noise handshake a real transport performs: simulated connections are neither
//! encrypted nor framed, which is what makes thousands of nodes affordable.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::Fabric;
use super::conn::SimConnection;

/// A connection arriving at a listener.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub dialer: PeerId,
    pub dialer_port: u64,
    pub conn: SimConnection,
    /// When the dialer's first handshake message arrives.
    pub at: tokio::time::Instant,
}

/// A node's transport on the fabric.
#[derive(Debug)]
pub struct SimTransport {
    fabric: Fabric,
    local: PeerId,
    listeners: Vec<(ListenerId, u64, mpsc::Receiver<Incoming>)>,
    events: VecDeque<TransportEvent<<Self as Transport>::ListenerUpgrade, io::Error>>,
}

impl SimTransport {
    pub(crate) fn new(fabric: Fabric, local: PeerId) -> Self {
        Self { fabric, local, listeners: Vec::new(), events: VecDeque::new() }
    }
}

impl Drop for SimTransport {
    fn drop(&mut self) {
        for (_, port, _) in &self.listeners {
            self.fabric.unlisten(*port);
        }
    }
}

fn memory_port(addr: &Multiaddr) -> Option<u64> {
    let mut it = addr.iter();
    let port = match it.next()? {
        Protocol::Memory(port) => port,
        _ => return None,
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) => Some(port),
        Some(_) => None,
    }
}

fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

impl Transport for SimTransport {
    type Output = (PeerId, SimConnection);
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, Result<Self::Output, io::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, io::Error>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<io::Error>> {
        let Some(port) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (port, rx) = self.fabric.listen(self.local, port).map_err(TransportError::Other)?;
        self.listeners.push((id, port, rx));
        self.events.push_back(TransportEvent::NewAddress { listener_id: id, listen_addr: memory_addr(port) });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(i) = self.listeners.iter().position(|(l, _, _)| *l == id) else { return false };
        let (_, port, _) = self.listeners.remove(i);
        self.fabric.unlisten(port);
        self.events.push_back(TransportEvent::ListenerClosed { listener_id: id, reason: Ok(()) });
        true
    }

    fn dial(&mut self, addr: Multiaddr, _opts: DialOpts) -> Result<Self::Dial, TransportError<io::Error>> {
        let Some(port) = memory_port(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let own_port = self.listeners.first().map(|(_, p, _)| *p).unwrap_or(0);
        let (remote, conn, handshake) =
            self.fabric.connect(self.local, own_port, port).map_err(TransportError::Other)?;
        Ok(Box::pin(async move {
            tokio::time::sleep(handshake).await;
            Ok((remote, conn))
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        for (id, port, rx) in &mut self.listeners {
            if let Poll::Ready(Some(incoming)) = rx.poll_recv(cx) {
                let Incoming { dialer, dialer_port, conn, at } = incoming;
                let upgrade: Self::ListenerUpgrade = Box::pin(async move {
                    tokio::time::sleep_until(at).await;
                    Ok((dialer, conn))
                });
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: *id,
                    upgrade,
                    local_addr: memory_addr(*port),
                    send_back_addr: memory_addr(dialer_port),
                });
            }
        }
        Poll::Pending
    }
}
