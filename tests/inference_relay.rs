//! Confidentiality through a relay: the worker is reachable only through a circuit relay, and
//! every byte to and from the relay passes a recording TCP proxy. The request completes, and the
//! recording contains neither the prompt nor any of the generated text.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon::config::{Config, KadMode, Role};
use cocoon::network::TransportKind;
use cocoon::node::Node;
use common::inference::{client, tiny_model, wait_for_workers, worker};
use common::inproc::eventually;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROMPT: &str = "the secret prompt about herons and lighthouses";

/// A TCP proxy to `target` that appends every byte it forwards, both ways, to the recording.
async fn recording_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recording = Arc::new(Mutex::new(Vec::new()));
    let rec = recording.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else { continue };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, rec.clone()));
            tokio::spawn(pipe(ro, wi, rec.clone()));
        }
    });
    (addr, recording)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rec: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rec.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn tcp(mut c: Config) -> Config {
    c.network.kad_mode = KadMode::Server;
    c.network.gossip_heartbeat_ms = 200;
    c
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_forwards_only_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());

    let mut relay_config = tcp(Config::default());
    relay_config.node.roles = vec![Role::Relay];
    relay_config.node.data_dir = dir.path().join("relay");
    relay_config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    relay_config.admin.enabled = false;
    relay_config.api.enabled = false;
    relay_config.attestation.allow_simulated = true;
    let relay = Node::start(relay_config, TransportKind::Tcp, None).await.unwrap();
    let relay_port = relay
        .listen_addrs()
        .iter()
        .find_map(|a| a.iter().find_map(|p| if let Protocol::Tcp(port) = p { Some(port) } else { None }));
    let (proxy, recording) = recording_proxy(([127, 0, 0, 1], relay_port.unwrap()).into()).await;
    let via_proxy: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", proxy.port(), relay.peer_id()).parse().unwrap();
    let circuit = via_proxy.clone().with(Protocol::P2pCircuit);

    // The worker listens only through the relay (reached through the proxy).
    let mut wc = tcp(worker(Config::default(), &model, 0, 1));
    wc.node.data_dir = dir.path().join("worker");
    wc.network.listen = vec![circuit.clone()];
    wc.bootstrap.peers = vec![via_proxy.clone()];
    wc.admin.enabled = false;
    let w = Node::start(wc, TransportKind::Tcp, None).await.unwrap();

    // The client has no listen address at all, so no direct connection can be made either way.
    let mut cc = tcp(client(Config::default()));
    cc.node.data_dir = dir.path().join("client");
    cc.network.listen = vec![];
    cc.network.kad_mode = KadMode::Client;
    cc.bootstrap.peers = vec![via_proxy.clone()];
    let c = Node::start(cc, TransportKind::Tcp, None).await.unwrap();
    let model_id = wait_for_workers(&c, 1).await;
    c.network().add_address(w.peer_id(), circuit.with(Protocol::P2p(w.peer_id()))).await.unwrap();

    // Random weights may end an answer at once; ask until the answers hold enough text to look
    // for (each request is another conversation through the relay).
    let mut answers = Vec::new();
    for variant in 0..8 {
        let content = format!("{PROMPT} #{variant}");
        let body =
            json!({"model": model_id, "messages": [{"role": "user", "content": content}], "max_tokens": 48});
        let (status, answer) =
            common::inference::post(c.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["worker"], w.peer_id().to_string());
        answers.push(answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned());
        if answers.iter().map(|a| a.trim().len()).sum::<usize>() >= 24 {
            break;
        }
    }
    let texts: Vec<&str> = answers.iter().map(|t| t.trim()).filter(|t| t.len() >= 6).collect();
    assert!(!texts.is_empty(), "no answer with enough text to look for: {answers:?}");

    // The conversation went through the relay (the only path), as ciphertext.
    let connected = eventually(Duration::from_secs(5), || async {
        c.network().status().await.unwrap().connected.contains(&w.peer_id())
    })
    .await;
    assert!(connected);
    let recorded = recording.lock().unwrap().clone();
    assert!(recorded.len() > 10_000, "only {} bytes passed the relay", recorded.len());
    assert!(!contains(&recorded, PROMPT.as_bytes()), "the prompt crossed the relay in clear");
    assert!(!contains(&recorded, b"herons"), "part of the prompt crossed the relay in clear");
    for text in texts {
        assert!(!contains(&recorded, text.as_bytes()), "the answer {text:?} crossed the relay in clear");
    }
    for node in [c, w, relay] {
        node.shutdown().await.unwrap();
    }
}
