//! In-process overlays of real nodes (the full `Node`: store, join task, swarm event loop) on
//! libp2p's memory transport: Kademlia lookup recall against the true XOR-closest set, gossip
//! reaching every node, the connection manager holding nodes near their target, and a node whose
//! first Kademlia join lookup goes unanswered asking again until it is answered, a node
//! without NAT traversal joining while refusing circuit dials, and a peer with no known address
//! located through the DHT.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use cocoon::config::Role;
use cocoon::network::{NetworkHandle, Validation};
use cocoon::node::Node;
use common::inproc::{client_only, config, dial_addr, eventually, start, start_network};
use libp2p::kad::KBucketKey;
use libp2p::{PeerId, StreamProtocol};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const K: usize = 20;
const TOPIC: &str = "/cocoon/test/1";

async fn routing_sizes(handles: &[NetworkHandle]) -> Vec<usize> {
    let mut sizes = Vec::new();
    for h in handles {
        sizes.push(h.status().await.map(|s| s.routing_table.len()).unwrap_or(0));
    }
    sizes
}

/// Mean recall of `queries` lookups from random nodes against the true K closest peers.
async fn lookup_recall(handles: &[NetworkHandle], queries: usize, seed: u64) -> f64 {
    let ids: Vec<PeerId> = handles.iter().map(|h| h.peer_id()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hits = 0usize;
    let mut wanted = 0usize;
    for _ in 0..queries {
        let querier = &handles[rng.gen_range(0..handles.len())];
        let key: Vec<u8> = (0..32).map(|_| rng.r#gen()).collect();
        let target = KBucketKey::new(key.clone());
        let mut truth: Vec<PeerId> = ids.iter().copied().filter(|p| *p != querier.peer_id()).collect();
        truth.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        truth.truncate(K);
        let found = querier.get_closest_peers(key).await.unwrap_or_default();
        hits += truth.iter().filter(|p| found.contains(p)).count();
        wanted += truth.len();
    }
    hits as f64 / wanted as f64
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_find_true_closest_peers_and_gossip_reaches_all() {
    const N: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let rss_before = rss_kib();
    let nodes = start_network(dir.path(), N, |_| {}).await;
    let handles: Vec<NetworkHandle> = nodes.iter().map(|n| n.network().clone()).collect();

    let full = eventually(Duration::from_secs(60), || async {
        routing_sizes(&handles).await.iter().all(|s| *s >= K.min(N - 1))
    })
    .await;
    assert!(full, "routing tables did not fill: {:?}", routing_sizes(&handles).await);

    let recall = lookup_recall(&handles, 20, 7).await;
    println!("lookup recall over 20 random keys with {N} nodes: {recall:.3}");
    assert!(recall >= 0.95, "recall {recall}");

    // Gossip: every node subscribes and accepts; one publishes; all others must receive it.
    let received: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    for (i, h) in handles.iter().enumerate() {
        let mut rx = h.subscribe(TOPIC, 16).await.unwrap();
        let (h, received) = (h.clone(), received.clone());
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let _ = h.validate(&msg, Validation::Accept).await;
                if msg.data == b"hello from 17" {
                    received[i].store(true, Ordering::SeqCst);
                }
            }
        });
    }
    let meshed = eventually(Duration::from_secs(30), || async {
        let mut all = true;
        for h in &handles {
            all &= h.status().await.map(|s| s.mesh_peers > 0).unwrap_or(false);
        }
        all
    })
    .await;
    assert!(meshed, "gossipsub meshes did not form");
    let published = Instant::now();
    handles[17].publish(TOPIC, b"hello from 17".to_vec()).await.unwrap();
    let everyone = eventually(Duration::from_secs(30), || async {
        (0..N).filter(|i| *i != 17).all(|i| received[i].load(Ordering::SeqCst))
    })
    .await;
    let got = received.iter().filter(|r| r.load(Ordering::SeqCst)).count();
    assert!(everyone, "gossip reached {got} of {} nodes", N - 1);
    println!("gossip reached all {} other nodes in {:?}", N - 1, published.elapsed());

    let rss_after = rss_kib();
    println!(
        "memory: RSS {} MiB for {N} nodes, {:.2} MiB per node (RSS growth {:.2} MiB per node)",
        rss_after / 1024,
        rss_after as f64 / 1024.0 / N as f64,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 / N as f64
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_manager_holds_nodes_near_target_and_lookups_still_work() {
    const N: usize = 16;
    const TARGET: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_network(dir.path(), N, |c| {
        c.network.target_connections = TARGET;
        c.network.trim_grace_secs = 2;
    })
    .await;
    let handles: Vec<NetworkHandle> = nodes.iter().map(|n| n.network().clone()).collect();
    let full = eventually(Duration::from_secs(60), || async {
        routing_sizes(&handles).await.iter().all(|s| *s >= 8)
    })
    .await;
    assert!(full, "routing tables did not fill: {:?}", routing_sizes(&handles).await);

    // Lookups dial widely; afterwards every node must come back down to the target (a node may
    // keep its bootstrap peer on top, which is protected).
    let _ = lookup_recall(&handles, 8, 1).await;
    let counts = || async {
        let mut counts = Vec::new();
        for h in &handles {
            counts.push(h.status().await.map(|s| s.connected.len()).unwrap_or(usize::MAX));
        }
        counts
    };
    let trimmed =
        eventually(Duration::from_secs(30), || async { counts().await.iter().all(|c| *c <= TARGET + 1) })
            .await;
    assert!(trimmed, "connections per node: {:?}", counts().await);
    let mut closed = 0;
    for h in &handles {
        closed += h.status().await.map(|s| s.trimmed_connections).unwrap_or(0);
    }
    println!("connections trimmed across {N} nodes: {closed}");
    assert!(closed > 0, "the connection manager never had to close anything: the test proves nothing");
    let recall = lookup_recall(&handles, 10, 2).await;
    println!("recall with target {TARGET} connections: {recall:.3}");
    assert!(recall >= 0.9, "recall with trimmed connections {recall}");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

fn metric(node: &Node, name: &str) -> u64 {
    let text = node.metrics_text();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_kademlia_join_lookup_is_retried_until_a_peer_answers() {
    let dir = tempfile::tempdir().unwrap();
    // A bootstrap node that does not serve Kademlia: it accepts connections and answers no query,
    // as a bootstrap node at its connection limit does.
    let mut bc = config(&dir.path().join("boot"), Role::Bootstrap, None);
    client_only(&mut bc);
    let boot = start(bc).await;
    let joiner = start(config(&dir.path().join("a"), Role::Client, Some(&dial_addr(&boot)))).await;
    let unanswered = "cocoon_kad_join_lookups_unanswered_total ";
    let retried = eventually(Duration::from_secs(20), || async { metric(&joiner, unanswered) >= 2 }).await;
    assert!(retried, "the joiner asked {} times", metric(&joiner, unanswered));
    assert!(joiner.network().status().await.unwrap().routing_table.len() <= 1);
    assert_eq!(metric(&joiner, "cocoon_kad_join_lookups_total "), 0);

    // A Kademlia server connects to the joiner: the next retry is answered and the joiner stops.
    let server = start(config(&dir.path().join("s"), Role::Client, Some(&dial_addr(&joiner)))).await;
    let answered = eventually(Duration::from_secs(30), || async {
        metric(&joiner, "cocoon_kad_join_lookups_total ") >= 1
    })
    .await;
    assert!(answered, "no join lookup answered after a server connected");
    let status = joiner.network().status().await.unwrap();
    assert!(status.routing_table.contains(&server.peer_id()), "{:?}", status.routing_table);
    for node in [server, joiner, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nat_traversal_a_node_joins_and_a_circuit_dial_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(config(&dir.path().join("r"), Role::Relay, None)).await;
    let mut c = config(&dir.path().join("a"), Role::Client, Some(&dial_addr(&relay)));
    c.network.nat_traversal = false;
    let node = start(c).await;
    let joined = eventually(Duration::from_secs(20), || async {
        node.network().status().await.is_ok_and(|s| s.connected.contains(&relay.peer_id()))
    })
    .await;
    assert!(joined, "the node did not connect to its bootstrap peer");

    // No relay client: a circuit address is refused at once, saying why.
    let target = PeerId::random();
    let circuit = dial_addr(&relay)
        .with(libp2p::multiaddr::Protocol::P2pCircuit)
        .with(libp2p::multiaddr::Protocol::P2p(target));
    let result = tokio::time::timeout(Duration::from_secs(10), node.network().dial(circuit)).await;
    let Ok(Err(e)) = result else { panic!("{result:?}") };
    assert!(e.to_string().contains("need NAT traversal"), "{e}");
    for n in [node, relay] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_no_known_address_is_located_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(config(&dir.path().join("boot"), Role::Bootstrap, None)).await;
    let target = start(config(&dir.path().join("t"), Role::Client, Some(&dial_addr(&boot)))).await;
    let indexed = eventually(Duration::from_secs(20), || async {
        boot.network().status().await.is_ok_and(|s| s.routing_table.contains(&target.peer_id()))
    })
    .await;
    assert!(indexed, "the bootstrap node never added the target to its routing table");

    // A node that has dialled nobody (as after a restart: the worker's record is stored, its
    // address is not): a stream to the target cannot even be attempted.
    let seeker = start(config(&dir.path().join("s"), Role::Client, None)).await;
    let protocol = StreamProtocol::new("/cocoon/test/1");
    let mut control = seeker.network().streams();
    assert!(control.open_stream(target.peer_id(), protocol.clone()).await.is_err());

    // Told only where the bootstrap node is, it finds the target through it and connects.
    seeker.network().add_address(boot.peer_id(), boot.listen_addrs()[0].clone()).await.unwrap();
    seeker.network().locate(target.peer_id()).await.expect("the target is found");
    let status = seeker.network().status().await.unwrap();
    assert!(status.connected.contains(&target.peer_id()), "{:?}", status.connected);

    // A peer nobody knows: a plain error, quickly (the lookup has nothing more to ask).
    let nobody = PeerId::random();
    let err = tokio::time::timeout(Duration::from_secs(20), seeker.network().locate(nobody))
        .await
        .expect("the lookup ends")
        .expect_err("nobody knows that peer");
    assert!(err.to_string().contains("not found"), "{err}");
    for n in [seeker, target, boot] {
        n.shutdown().await.unwrap();
    }
}
