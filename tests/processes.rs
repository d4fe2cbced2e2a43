//! Real `cocoon` processes on loopback: network formation through a bootstrap list, surviving the
//! loss of the bootstrap node, restart with the same data directory, and graceful shutdown.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{NodeProc, wait_until, write_list};

const FORMATION: Duration = Duration::from_secs(60);

#[test]
fn five_processes_form_a_network_and_a_sixth_joins_after_the_bootstrap_dies() {
    let dir = tempfile::tempdir().unwrap();
    let boot = NodeProc::start(&dir.path().join("boot"), &["--role", "bootstrap"]);
    let list = dir.path().join("bootstrap.txt");
    write_list(&list, &[boot.dial_addr()]);
    let list_arg = list.to_str().unwrap();
    let nodes: Vec<NodeProc> = (0..4)
        .map(|i| NodeProc::start(&dir.path().join(format!("n{i}")), &["--bootstrap", list_arg]))
        .collect();

    let mut all: Vec<&NodeProc> = vec![&boot];
    all.extend(nodes.iter());
    let ids: Vec<String> = all.iter().map(|n| n.peer_id()).collect();
    let formed = wait_until(FORMATION, || {
        all.iter().all(|n| {
            let known = n.known_peers();
            ids.iter().filter(|id| **id != n.peer_id()).all(|id| known.contains(id))
        })
    });
    let report: Vec<String> =
        all.iter().map(|n| format!("{} knows {:?}", n.peer_id(), n.known_peers())).collect();
    assert!(formed, "not every node knows the other four:\n{}", report.join("\n"));

    // Kill the bootstrap node outright; a sixth node joins through a surviving node instead.
    let mut boot = boot;
    boot.signal("KILL");
    assert!(boot.wait_exit(Duration::from_secs(5)).is_some());
    let list2 = dir.path().join("bootstrap2.txt");
    write_list(&list2, &[nodes[1].dial_addr()]);
    let sixth = NodeProc::start(&dir.path().join("n6"), &["--bootstrap", list2.to_str().unwrap()]);
    let survivors: HashSet<String> = nodes.iter().map(|n| n.peer_id()).collect();
    let joined = wait_until(FORMATION, || survivors.is_subset(&sixth.known_peers()));
    assert!(
        joined,
        "sixth node knows {:?}, expected all of {survivors:?}\n{}",
        sixth.known_peers(),
        sixth.log()
    );
    assert!(!sixth.connected().is_empty());
}

#[test]
fn restarted_node_keeps_its_id_and_rejoins_known_peers_without_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let boot = NodeProc::start(&dir.path().join("boot"), &["--role", "bootstrap"]);
    let list = dir.path().join("bootstrap.txt");
    write_list(&list, &[boot.dial_addr()]);
    let other = NodeProc::start(&dir.path().join("other"), &["--bootstrap", list.to_str().unwrap()]);
    let data = dir.path().join("restarting");
    let mut node = NodeProc::start(&data, &["--bootstrap", list.to_str().unwrap()]);
    let expected: HashSet<String> = [boot.peer_id(), other.peer_id()].into();
    assert!(wait_until(FORMATION, || expected.is_subset(&node.known_peers())), "{:?}", node.known_peers());
    let first_id = node.peer_id();

    node.signal("TERM");
    let (status, _) = node.wait_exit(Duration::from_secs(5)).expect("node exits after SIGTERM");
    assert!(status.success());

    // No --bootstrap at all: the node must find its way back from its peer book.
    let again = NodeProc::start(&data, &[]);
    assert_eq!(again.peer_id(), first_id, "peer id changed across restart");
    let rejoined = wait_until(FORMATION, || expected.is_subset(&again.connected()));
    assert!(
        rejoined,
        "restarted node connected to {:?}, expected {expected:?}\n{}",
        again.connected(),
        again.log()
    );
}

#[test]
fn sigterm_exits_zero_within_five_seconds_with_the_store_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let boot = NodeProc::start(&dir.path().join("boot"), &["--role", "bootstrap"]);
    let data = dir.path().join("node");
    let mut node = NodeProc::start(&data, &["--bootstrap", &boot.dial_addr()]);
    assert!(wait_until(FORMATION, || node.connected().contains(&boot.peer_id())));

    node.signal("TERM");
    let (status, took) = node.wait_exit(Duration::from_secs(10)).expect("node exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", node.log());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(node.log().contains("store flushed"), "{}", node.log());

    // The store runs without sled's flush timer, so the peer book is on disk only if shutdown
    // flushed it. The bootstrap peer must be there.
    let store = cocoon::store::Store::open(&data).expect("store reopens after shutdown");
    let known: Vec<String> =
        store.peer_book().unwrap().recent(16).unwrap().iter().map(|k| k.peer_id.to_string()).collect();
    assert!(known.contains(&boot.peer_id()), "peer book after shutdown: {known:?}");
}

#[test]
fn nodes_join_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let quic = ["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"];
    let boot = NodeProc::start(&dir.path().join("boot"), &[&["--role", "bootstrap"][..], &quic].concat());
    assert!(boot.ready.listen.iter().any(|a| a.to_string().contains("/quic-v1")), "{:?}", boot.ready.listen);
    let quic_addr = format!(
        "{}/p2p/{}",
        boot.ready.listen.iter().find(|a| a.to_string().contains("quic")).unwrap(),
        boot.peer_id()
    );
    let node = NodeProc::start(&dir.path().join("n"), &[&quic[..], &["--bootstrap", &quic_addr]].concat());
    assert!(
        wait_until(FORMATION, || node.connected().contains(&boot.peer_id())),
        "node did not connect over QUIC\n{}",
        node.log()
    );
}
