//! Circuit relay v2: a node with the `relay` role lets a node that has no direct listen address
//! (it listens only through the relay) be dialled by others.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use cocoon::config::Role;
use common::inproc::{config, dial_addr, eventually, start};
use libp2p::multiaddr::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_only_through_a_relay_can_be_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(config(&dir.path().join("relay"), Role::Relay, None)).await;
    let circuit = dial_addr(&relay).with(Protocol::P2pCircuit);

    // The hidden node's only listen address is a reservation on the relay.
    let mut hidden_config = config(&dir.path().join("hidden"), Role::Client, None);
    hidden_config.network.listen = vec![circuit.clone()];
    let hidden = start(hidden_config).await;
    assert!(
        hidden.listen_addrs().iter().any(|a| a.iter().any(|p| p == Protocol::P2pCircuit)),
        "no circuit listen address: {:?}",
        hidden.listen_addrs()
    );

    let dialer = start(config(&dir.path().join("dialer"), Role::Client, Some(&dial_addr(&relay)))).await;
    // Dial through the relay once joined (connected to the relay), as a real client would be: a
    // circuit dial racing the join's own dial to the relay can lose its request with the
    // duplicate connection, and callers retry such failures (before the first byte of a request).
    let joined = eventually(Duration::from_secs(10), || async {
        dialer.network().status().await.unwrap().connected.contains(&relay.peer_id())
    })
    .await;
    assert!(joined, "dialer did not join through the relay node");
    let via_relay = circuit.with(Protocol::P2p(hidden.peer_id()));
    let reached = dialer.network().dial(via_relay).await.unwrap();
    assert_eq!(reached, hidden.peer_id());
    let connected = eventually(Duration::from_secs(10), || async {
        dialer.network().status().await.unwrap().connected.contains(&hidden.peer_id())
    })
    .await;
    assert!(connected);

    for node in [dialer, hidden, relay] {
        node.shutdown().await.unwrap();
    }
}
