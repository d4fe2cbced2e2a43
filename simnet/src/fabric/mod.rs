//! The simulated network every node of a run shares: listeners by `/memory/<port>`, each node's
//! region, the link model (per-region one-way latency with jitter, retransmissions, stream resets,
//! bandwidth), partitions, and counters of what it carried.
//!
//! Submodules: `pipe` (one delayed direction of a stream), `conn` (connections and substreams),
//! `transport` (the libp2p transport a node gets).

mod conn;
mod pipe;
mod transport;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cocoon::network::{CustomTransport, TransportKind};
use libp2p::PeerId;
use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

pub use conn::{SimConnection, SimStream};
pub use transport::SimTransport;

use crate::report::FabricStats;
use conn::{Link, LinkParams};
use transport::Incoming;

/// Connections a listener may have waiting to be accepted before dials are refused.
const BACKLOG: usize = 128;
/// Ports handed out for `/memory/0`.
const EPHEMERAL_PORTS: u64 = 1 << 40;

/// How links behave.
#[derive(Debug, Clone)]
pub struct LinkModel {
    /// One-way latency between regions, ms: `latency_ms[a][b]`.
    pub latency_ms: Vec<Vec<f64>>,
    /// Each write's delay varies by up to ± this share.
    pub jitter: f64,
    /// Probability a write is retransmitted (one extra round trip).
    pub loss: f64,
    /// Probability a new substream is reset at once.
    pub stream_loss: f64,
    /// Bandwidth of each connection direction, bytes/s (0: unlimited).
    pub bandwidth_bytes_per_sec: f64,
}

impl LinkModel {
    fn one_way(&self, a: usize, b: usize) -> Duration {
        let ms = self.latency_ms.get(a).and_then(|row| row.get(b)).copied().unwrap_or(0.0);
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub(crate) struct Count(AtomicU64);

impl Count {
    pub(crate) fn inc(&self) {
        self.inc_by(1);
    }
    pub(crate) fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: Count,
    pub dials_refused: Count,
    pub streams: Count,
    pub streams_lost: Count,
    pub bytes: Count,
    pub retransmissions: Count,
}

#[derive(Debug)]
struct Listener {
    peer: PeerId,
    tx: mpsc::Sender<Incoming>,
}

#[derive(Debug)]
struct State {
    listeners: HashMap<u64, Listener>,
    next_ephemeral: u64,
    regions: HashMap<PeerId, usize>,
    /// Side of each node while the network is split.
    sides: Option<HashMap<PeerId, u8>>,
    links: Vec<(PeerId, PeerId, Weak<Link>)>,
    rng: StdRng,
}

/// The shared simulated network. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fabric {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    model: Arc<LinkModel>,
}

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, what)
}

impl Fabric {
    /// An empty network with `model`; `seed` drives jitter, loss and stream resets.
    pub fn new(model: LinkModel, seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                listeners: HashMap::new(),
                next_ephemeral: EPHEMERAL_PORTS,
                regions: HashMap::new(),
                sides: None,
                links: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
            counters: Arc::default(),
            model: Arc::new(model),
        }
    }

    /// Put `peer` in `region` (before it starts).
    pub fn place(&self, peer: PeerId, region: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.regions.insert(peer, region);
        }
    }

    /// The transport for a node: hand it to `Node::start_with`.
    pub fn transport(&self) -> TransportKind {
        let fabric = self.clone();
        TransportKind::Custom(CustomTransport(Arc::new(move |key: &libp2p::identity::Keypair| {
            SimTransport::new(fabric.clone(), key.public().to_peer_id())
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
                .boxed()
        })))
    }

    /// Round trip between two nodes without jitter.
    pub fn rtt(&self, a: &PeerId, b: &PeerId) -> Duration {
        let (ra, rb) = match self.state.lock() {
            Ok(s) => (s.regions.get(a).copied().unwrap_or(0), s.regions.get(b).copied().unwrap_or(0)),
            Err(_) => (0, 0),
        };
        self.model.one_way(ra, rb) + self.model.one_way(rb, ra)
    }

    /// Split the network: `sides` gives each node's side; connections across are cut and dials
    /// across refused until [`Fabric::heal`]. Returns how many connections were cut.
    pub fn split(&self, sides: HashMap<PeerId, u8>) -> u64 {
        let mut cut = Vec::new();
        if let Ok(mut s) = self.state.lock() {
            s.links.retain(|(_, _, l)| l.strong_count() > 0);
            for (a, b, link) in &s.links {
                if sides.get(a) != sides.get(b)
                    && let Some(link) = link.upgrade()
                {
                    cut.push(link);
                }
            }
            s.sides = Some(sides);
        }
        for link in &cut {
            link.close();
        }
        cut.len() as u64
    }

    /// End the split.
    pub fn heal(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.sides = None;
        }
    }

    /// What the network carried so far.
    pub fn stats(&self) -> FabricStats {
        let c = &self.counters;
        FabricStats {
            connections: c.connections.get(),
            dials_refused: c.dials_refused.get(),
            streams: c.streams.get(),
            streams_lost: c.streams_lost.get(),
            bytes: c.bytes.get(),
            retransmissions: c.retransmissions.get(),
        }
    }

    fn listen(&self, peer: PeerId, port: u64) -> Result<(u64, mpsc::Receiver<Incoming>), io::Error> {
        let mut s = self.state.lock().map_err(|_| io::Error::other("fabric poisoned"))?;
        let port = if port == 0 {
            s.next_ephemeral += 1;
            s.next_ephemeral
        } else {
            port
        };
        if s.listeners.contains_key(&port) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("/memory/{port} is taken")));
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        s.listeners.insert(port, Listener { peer, tx });
        Ok((port, rx))
    }

    fn unlisten(&self, port: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.listeners.remove(&port);
        }
    }

    /// Connect `dialer` to the listener on `port`: the dialer's end, the listener's peer id and
    /// how long the dialer waits for the handshake (one round trip).
    fn connect(
        &self,
        dialer: PeerId,
        dialer_port: u64,
        port: u64,
    ) -> Result<(PeerId, SimConnection, Duration), io::Error> {
        let refuse = |why: String| {
            self.counters.dials_refused.inc();
            Err(refused(why))
        };
        let mut s = self.state.lock().map_err(|_| io::Error::other("fabric poisoned"))?;
        let Some(listener) = s.listeners.get(&port) else {
            drop(s);
            return refuse(format!("nobody listens on /memory/{port}"));
        };
        let (listener_peer, tx) = (listener.peer, listener.tx.clone());
        if let Some(sides) = &s.sides
            && sides.get(&dialer) != sides.get(&listener_peer)
        {
            drop(s);
            return refuse(format!("/memory/{port} is on the other side of a partition"));
        }
        let (ra, rb) = (
            s.regions.get(&dialer).copied().unwrap_or(0),
            s.regions.get(&listener_peer).copied().unwrap_or(0),
        );
        let one_way = self.model.one_way(ra, rb);
        let params = LinkParams {
            one_way,
            jitter: self.model.jitter,
            loss: self.model.loss,
            stream_loss: self.model.stream_loss,
            secs_per_byte: if self.model.bandwidth_bytes_per_sec > 0.0 {
                1.0 / self.model.bandwidth_bytes_per_sec
            } else {
                0.0
            },
        };
        let seed = s.rng.r#gen();
        let link = Link::new(params, seed, self.counters.clone());
        if s.links.len() > 1024 && s.links.len().is_power_of_two() {
            s.links.retain(|(_, _, l)| l.strong_count() > 0);
        }
        s.links.push((dialer, listener_peer, Arc::downgrade(&link)));
        drop(s);
        let (mine, theirs) = SimConnection::pair(&link);
        let at = tokio::time::Instant::now() + one_way;
        if tx.try_send(Incoming { dialer, dialer_port, conn: theirs, at }).is_err() {
            return refuse(format!("/memory/{port} has too many pending connections"));
        }
        self.counters.connections.inc();
        Ok((listener_peer, mine, one_way * 2))
    }
}
