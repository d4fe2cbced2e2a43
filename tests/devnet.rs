//! `cocoon devnet` starts a connected local network in one process, and `bootstrap/local.txt`
//! names its bootstrap node.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use common::{http_get, wait_until};

#[test]
fn local_bootstrap_list_names_the_devnet_bootstrap_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bootstrap/local.txt");
    let peers = cocoon::network::bootstrap::read_list(&path).unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id, cocoon::devnet::bootstrap_keypair().public().to_peer_id());
    assert_eq!(peers[0].addr.to_string().split("/p2p/").next(), Some("/ip4/127.0.0.1/tcp/4001"));
}

#[test]
fn devnet_starts_a_connected_network_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::cocoon()
        .args(["devnet", "--nodes", "2", "--workers", "1", "--port", "0", "--admin-port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = sync_channel(16);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut admins: Vec<SocketAddr> = Vec::new();
    let mut workers = 0;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if let Some(url) = line.split("http://").nth(1) {
            admins.push(url.trim_end_matches("/health").parse().unwrap());
        }
        workers += usize::from(line.starts_with("devnet worker"));
        if line.starts_with("press Ctrl-C") {
            break;
        }
    }
    assert_eq!(admins.len(), 4, "expected four admin endpoints");
    assert_eq!(workers, 1);
    // Everyone connected to everyone; every node but the worker itself has verified the worker.
    let health = |a: &SocketAddr| -> serde_json::Value {
        let (_, body) = http_get(*a, "/health");
        serde_json::from_str(&body).unwrap_or_default()
    };
    let ready = wait_until(Duration::from_secs(30), || {
        admins.iter().all(|a| health(a)["connected_peers"].as_u64() == Some(3))
            && admins[..3].iter().all(|a| health(a)["verified_workers"].as_u64() == Some(1))
    });
    let report: Vec<serde_json::Value> = admins.iter().map(health).collect();
    assert!(ready, "devnet did not converge: {report:#?}");

    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let exited = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
    assert!(exited, "devnet did not stop on SIGINT");
    assert!(child.wait().unwrap().success());
}
