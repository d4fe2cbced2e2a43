//! A worker node handed an engine by its process instead of a model file (what simnet does): the
//! labelled stand-in engine is attested, served and paid through the same worker, client and
//! payment code as mistral.rs, and says what it is in every receipt. While an answer streams, both
//! ends keep the connection out of the connection manager's trimming.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cocoon::config::{Config, Role};
use cocoon::inference::client::Delivery;
use cocoon::inference::engine::{Engine, STAND_IN_ENGINE, StandInEngine};
use cocoon::inference::worker::ServedModel;
use cocoon::network::TransportKind;
use cocoon::node::{Extras, Node};
use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::inference::messages::{Prompt, Request, Sampling};
use common::inference::{boot, client, post, wait_for_workers, worker};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, paying, start_on};
use libp2p::Multiaddr;
use serde_json::json;
use tokio::sync::mpsc;

/// A worker configuration without any model file, and `engine` offered at `price` per 1,000
/// tokens.
fn stand_in_worker(dir: &Path, boot: &Multiaddr, engine: StandInEngine, price: u64) -> (Config, ServedModel) {
    let offer = ModelOffer {
        model_id: engine.model_id().to_owned(),
        price_prompt_per_1k: price,
        price_completion_per_1k: price,
        context_length: 2048,
        max_concurrent: 4,
    };
    let mut wc = worker(config(&dir.join("w"), Role::Worker, Some(boot)), Path::new("/nonexistent"), 0, 1);
    wc.worker.models.clear();
    (wc, ServedModel { engine: Arc::new(engine), offer })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_stand_in_engine_is_served_and_paid() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let engine = StandInEngine::new("sim", 2048, Duration::from_millis(5), Duration::from_millis(1));
    let (mut wc, served) = stand_in_worker(dir.path(), &boot_addr, engine, 1_000_000);
    paying(&mut wc, &chain, 10 * TON);
    let extras = Extras { chain: Some(chain.clone()), served: vec![served], ..Extras::default() };
    let worker_node = Node::start_with(wc, TransportKind::Memory, None, extras).await.unwrap();
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    paying(&mut cc, &chain, 100 * TON);
    let client_node = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    assert!(model_id.starts_with("stand-in-sim@"), "{model_id}");

    let body = json!({"model": model_id, "messages": [{"role": "user", "content": "simulate this"}], "max_tokens": 5});
    let (status, answer) =
        post(client_node.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["engine"], STAND_IN_ENGINE);
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    assert_eq!(answer["cocoon"]["payment"]["status"], "paid", "{answer}");
    assert!(answer["cocoon"]["amount_nanotons"].as_u64().unwrap() > 0);
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_answer_keeps_its_connection_from_being_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    // 30 tokens at 100 ms: the answer streams for about three seconds.
    let engine = StandInEngine::new("slow", 2048, Duration::from_millis(5), Duration::from_millis(100));
    let (wc, served) = stand_in_worker(dir.path(), &boot_addr, engine, 0);
    let extras = Extras { chain: None, served: vec![served], ..Extras::default() };
    let worker_node = Node::start_with(wc, TransportKind::Memory, None, extras).await.unwrap();
    let client_node =
        common::inproc::start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let (worker_id, client_id) = (worker_node.peer_id(), client_node.peer_id());
    let in_use = |node: &Node| {
        let network = node.network().clone();
        async move { network.status().await.unwrap().in_use_peers }
    };
    assert!(in_use(&worker_node).await.is_empty());

    let request = Request {
        request_id: [7; 16],
        model_id,
        prompt: Prompt::Text("stream for a while".into()),
        max_tokens: 30,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: 0,
        channel: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let inference = client_node.inference_client().unwrap().clone();
    let answer = tokio::spawn(async move { inference.complete(request, tx, Delivery::Shown).await });
    rx.recv().await.expect("a first token");
    // Mid-stream: each end holds the other out of trimming.
    assert_eq!(in_use(&worker_node).await, vec![client_id]);
    assert_eq!(in_use(&client_node).await, vec![worker_id]);
    while rx.recv().await.is_some() {}
    let done = answer.await.unwrap().unwrap();
    assert_eq!(done.receipt.usage.completion_tokens, 30);
    // Once the answer is over, both lift the protection.
    let lifted = || async { in_use(&worker_node).await.is_empty() && in_use(&client_node).await.is_empty() };
    assert!(eventually(Duration::from_secs(10), lifted).await, "protection not lifted");
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}
