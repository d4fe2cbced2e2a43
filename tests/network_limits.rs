//! Bounded and scored network state, on real network layers (`cocoon::network::start`): graded
//! penalties that block a peer only at its tolerance, a blocklist whose status is a count and a
//! bounded sample, gossipsub scores that fall for invalid attestation-topic messages (and stay at
//! zero for a quiet honest peer), the per-IP inbound connection limit, and a peer book that only
//! takes peers speaking cocoon.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use cocoon::attestation::service::ATTESTATION_TOPIC;
use cocoon::config::{Config, KadMode};
use cocoon::network::{self, NetworkConfig, NetworkHandle, Tolerance, TransportKind, Validation};
use futures::StreamExt;
use libp2p::core::transport::{MemoryTransport, Transport, upgrade::Version};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identify, noise, yamux};
use prometheus_client::registry::Registry;

/// Poll `check` every 50 ms until it holds or `limit` passes; returns the last result.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

fn memory_config(tweak: impl FnOnce(&mut Config)) -> NetworkConfig {
    let mut c = Config::default();
    c.network.listen = vec!["/memory/0".parse().unwrap()];
    c.network.gossip_heartbeat_ms = 200;
    c.network.nat_traversal = false;
    tweak(&mut c);
    NetworkConfig::from_config(&c, TransportKind::Memory, Vec::new())
}

struct Net {
    handle: NetworkHandle,
    addr: Multiaddr,
    registry: Registry,
}

async fn start(config: NetworkConfig, book: Option<cocoon::store::PeerBook>) -> Net {
    let mut registry = Registry::default();
    let (handle, _task) =
        network::start(config, Keypair::generate_ed25519(), book, &mut registry).await.unwrap();
    let status = handle.status().await.unwrap();
    let addr = status.listen_addrs[0].clone().with(Protocol::P2p(handle.peer_id()));
    Net { handle, addr, registry }
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_blocked_at_its_tolerance_and_refused_after() {
    let a = start(memory_config(|_| {}), None).await;
    let b = start(memory_config(|_| {}), None).await;
    assert_eq!(b.handle.dial(a.addr.clone()).await.unwrap(), a.handle.peer_id());
    let bid = b.handle.peer_id();
    for n in 1..10 {
        a.handle.penalize(bid, Tolerance::Mid, format!("offence {n}")).await.unwrap();
    }
    // B's dial returns once B's side is up; A may record the connection a moment later.
    let kept = eventually(Duration::from_secs(10), || async {
        let s = a.handle.status().await.unwrap();
        s.blocked_count == 0 && s.connected.contains(&bid)
    })
    .await;
    assert!(kept, "nine mid offences are tolerated: {:?}", a.handle.status().await.unwrap());
    a.handle.penalize(bid, Tolerance::Mid, "offence 10").await.unwrap();
    let cut = eventually(Duration::from_secs(10), || async {
        let s = a.handle.status().await.unwrap();
        s.blocked_count == 1 && s.blocked_peers == vec![bid] && !s.connected.contains(&bid)
    })
    .await;
    assert!(cut, "the tenth offence must block and disconnect: {:?}", a.handle.status().await.unwrap());
    // B's side of the handshake may complete before A denies the connection: look from A.
    let _ = b.handle.dial(a.addr.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!a.handle.status().await.unwrap().connected.contains(&bid), "a blocked peer is refused");
    assert_eq!(metric(&a.registry, "cocoon_penalties_total{level=\"mid\"}"), 10.0);
    assert_eq!(metric(&a.registry, "cocoon_blocked_peers_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_count_and_a_bounded_sample_of_blocked_peers() {
    let a = start(memory_config(|_| {}), None).await;
    let blocked: Vec<PeerId> = (0..200).map(|_| PeerId::random()).collect();
    for p in &blocked {
        a.handle.block(*p, "test").await.unwrap();
    }
    let status = a.handle.status().await.unwrap();
    assert_eq!(status.blocked_count, 200);
    assert_eq!(status.blocked_peers.len(), network::BLOCKED_SAMPLE);
    assert!(status.blocked_peers.iter().all(|p| blocked.contains(p)));
}

/// Subscribe to the attestation topic and answer every message with `verdict`.
async fn judge_all(h: &NetworkHandle, verdict: Validation) {
    let mut rx = h.subscribe(ATTESTATION_TOPIC, 16).await.unwrap();
    let h = h.clone();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let _ = h.validate(&msg, verdict).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_attestation_gossip_lowers_the_sender_s_gossipsub_score_to_the_graylist() {
    let a = start(memory_config(|_| {}), None).await;
    let b = start(memory_config(|_| {}), None).await;
    b.handle.dial(a.addr.clone()).await.unwrap();
    judge_all(&a.handle, Validation::Accept).await;
    judge_all(&b.handle, Validation::Reject).await;
    let (aid, bid) = (a.handle.peer_id(), b.handle.peer_id());
    let meshed = eventually(Duration::from_secs(20), || async {
        a.handle.status().await.unwrap().mesh_peers == 1 && b.handle.status().await.unwrap().mesh_peers == 1
    })
    .await;
    assert!(meshed, "no mesh between A and B");
    // A quiet honest peer scores zero or more: nothing graylists it.
    assert!(b.handle.gossip_score(aid).await.unwrap().unwrap() >= 0.0);
    assert!(a.handle.gossip_score(bid).await.unwrap().unwrap() >= 0.0);
    a.handle.publish(ATTESTATION_TOPIC, b"not a record 1".to_vec()).await.unwrap();
    a.handle.publish(ATTESTATION_TOPIC, b"not a record 2".to_vec()).await.unwrap();
    let graylisted = eventually(Duration::from_secs(10), || async {
        b.handle.gossip_score(aid).await.unwrap().is_some_and(|s| s <= -80.0)
    })
    .await;
    assert!(graylisted, "score after two invalid messages: {:?}", b.handle.gossip_score(aid).await);
    // Rejected messages also count in cocoon's own table (mid tolerance: two are not a block).
    assert_eq!(b.handle.status().await.unwrap().blocked_count, 0);
}

fn tcp_config(per_ip: u32, exempt_loopback: bool) -> NetworkConfig {
    let mut c = Config::default();
    c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.network.nat_traversal = false;
    c.network.kad_mode = KadMode::Client; // the dialers never learn of each other
    c.network.max_inbound_per_ip = per_ip;
    c.network.ip_limits_exempt_loopback = exempt_loopback;
    NetworkConfig::from_config(&c, TransportKind::Tcp, Vec::new())
}

/// How many of four peers dialing from 127.0.0.1 get a connection to a node with these limits.
async fn admitted_from_one_ip(per_ip: u32, exempt_loopback: bool) -> (usize, f64) {
    let a = start(tcp_config(per_ip, exempt_loopback), None).await;
    let mut dialers = Vec::new();
    for _ in 0..4 {
        let d = start(tcp_config(0, true), None).await;
        let _ = d.handle.dial(a.addr.clone()).await;
        dialers.push(d);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admitted = a.handle.status().await.unwrap().connected.len();
    (admitted, metric(&a.registry, "cocoon_inbound_denied_per_ip_total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_beyond_the_per_ip_limit_are_denied_unless_loopback_is_exempt() {
    assert_eq!(admitted_from_one_ip(2, false).await, (2, 2.0));
    assert_eq!(admitted_from_one_ip(2, true).await, (4, 0.0), "loopback exempt by default");
    assert_eq!(admitted_from_one_ip(0, false).await, (4, 0.0), "0 turns the limit off");
}

/// A libp2p peer of another network: identify with another protocol version, nothing else.
async fn stranger() -> Multiaddr {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key).unwrap())
                .multiplex(yamux::Config::default())
        })
        .unwrap()
        .with_behaviour(|key| {
            identify::Behaviour::new(identify::Config::new("/other/1.0.0".into(), key.public()))
        })
        .unwrap()
        .build();
    swarm.listen_on("/memory/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with(Protocol::P2p(*swarm.local_peer_id()));
        }
    };
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_book_takes_only_peers_that_speak_cocoon() {
    let dir = tempfile::tempdir().unwrap();
    let store = cocoon::store::Store::open(dir.path()).unwrap();
    let book = store.peer_book().unwrap();
    let a = start(memory_config(|c| c.network.kad_mode = KadMode::Server), Some(book.clone())).await;
    let cocoon_peer = start(memory_config(|c| c.network.kad_mode = KadMode::Server), None).await;
    let other = stranger().await;
    a.handle.dial(other.clone()).await.unwrap();
    a.handle.dial(cocoon_peer.addr.clone()).await.unwrap();
    let known = |book: &cocoon::store::PeerBook| -> Vec<PeerId> {
        book.recent(usize::MAX).unwrap().into_iter().map(|k| k.peer_id).collect()
    };
    let recorded = eventually(Duration::from_secs(10), || async {
        known(&book).contains(&cocoon_peer.handle.peer_id())
    })
    .await;
    assert!(recorded, "a cocoon Kademlia server is remembered");
    let gone = eventually(Duration::from_secs(10), || async {
        metric(&a.registry, "cocoon_wrong_network_peers_total") >= 1.0
    })
    .await;
    assert!(gone, "the stranger was not identified");
    let Some(Protocol::P2p(stranger_id)) = other.iter().last() else { unreachable!() };
    assert!(!known(&book).contains(&stranger_id), "a peer of another network entered the peer book");
}
