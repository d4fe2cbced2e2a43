//! Validate-then-forward: a gossip message is forwarded only after the receiving node's subscriber
//! accepts it. Topology A — B — C (A and C are Kademlia clients, so B never introduces them to each
//! other): what B rejects must never reach C.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon::config::Role;
use cocoon::network::{NetworkHandle, Validation};
use common::inproc::{client_only, config, dial_addr, eventually, start};

const TOPIC: &str = "/cocoon/test/validate/1";

/// Subscribe `h`; every message goes through `verdict` and accepted payloads are recorded.
async fn subscribe(h: &NetworkHandle, verdict: fn(&[u8]) -> Validation) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = h.subscribe(TOPIC, 16).await.unwrap();
    let (h, log) = (h.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            log.lock().unwrap().push(msg.data.clone());
            h.validate(&msg, verdict(&msg.data)).await.unwrap();
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_not_forwarded_and_an_accepted_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(config(&dir.path().join("b"), Role::Bootstrap, None)).await;
    let b_addr = dial_addr(&b);
    let mut leaves = Vec::new();
    for name in ["a", "c"] {
        let mut c = config(&dir.path().join(name), Role::Client, Some(&b_addr));
        client_only(&mut c);
        leaves.push(start(c).await);
    }
    let (a, c) = (leaves[0].network().clone(), leaves[1].network().clone());
    let bh = b.network().clone();

    let _at_a = subscribe(&a, |_| Validation::Accept).await;
    let at_b =
        subscribe(&bh, |data| if data.starts_with(b"bad") { Validation::Reject } else { Validation::Accept })
            .await;
    let at_c = subscribe(&c, |_| Validation::Accept).await;

    let meshed = eventually(Duration::from_secs(30), || async {
        bh.status().await.unwrap().mesh_peers == 2
            && a.status().await.unwrap().mesh_peers == 1
            && c.status().await.unwrap().mesh_peers == 1
    })
    .await;
    assert!(meshed, "mesh A-B-C did not form");
    assert!(!a.status().await.unwrap().connected.contains(&c.peer_id()), "A and C must only meet through B");

    a.publish(TOPIC, b"bad: forged record".to_vec()).await.unwrap();
    a.publish(TOPIC, b"good: valid record".to_vec()).await.unwrap();

    let delivered = eventually(Duration::from_secs(30), || async {
        at_c.lock().unwrap().iter().any(|m| m.starts_with(b"good"))
    })
    .await;
    assert!(delivered, "the accepted message never reached C");
    // B saw both (it had to judge them); C, which only hears from B, got only the accepted one.
    // Had B forwarded the rejected message, it would have arrived first on the same stream.
    assert_eq!(at_b.lock().unwrap().len(), 2);
    assert_eq!(*at_c.lock().unwrap(), vec![b"good: valid record".to_vec()]);
    assert!(!a.status().await.unwrap().connected.contains(&c.peer_id()));

    for node in leaves.into_iter().chain([b]) {
        node.shutdown().await.unwrap();
    }
}
