//! A worker queues requests beyond its running slots instead of refusing them: 16 concurrent
//! streamed requests to one worker with 2 slots are all answered (they waited, as the worker's
//! queue metrics show), and only when the queue itself is full does the caller get 429 with
//! `Retry-After`. Real nodes in process, mistral.rs on the tiny random-weight GGUF (the full queue
//! uses simnet's labelled stand-in engine, whose fixed pace keeps the slot taken).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocoon::config::Role;
use cocoon::inference::engine::{Engine, StandInEngine};
use cocoon::inference::worker::ServedModel;
use cocoon::network::TransportKind;
use cocoon::node::{Extras, Node};
use cocoon_protocol::attestation::record::ModelOffer;
use common::inference::{boot, client, metric, post_sse, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, start};
use serde_json::json;

/// The two scenarios run one after the other: each loads the machine on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_queues_and_only_a_full_queue_is_429() {
    sixteen_concurrent_streams_on_two_slots_all_answered_after_queueing().await;
    a_full_queue_is_429_with_retry_after().await;
}

async fn sixteen_concurrent_streams_on_two_slots_all_answered_after_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    let worker_node = start(with_admin(wc)).await;
    let client_node = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let api = client_node.api_addr().unwrap();

    let asks = (0..16).map(|i| {
        let body = json!({"model": model_id, "stream": true, "max_tokens": 48, "temperature": 0,
                          "messages": [{"role": "user", "content": format!("request {i}")}]});
        tokio::spawn(async move { post_sse(api, &body).await })
    });
    let answers = futures::future::join_all(asks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let sse = answer.unwrap();
        assert_eq!(sse.status, 200, "request {i}: {:?}", sse.events);
        assert!(sse.done && !sse.text().is_empty(), "request {i}: {:?}", sse.events);
    }
    let waited = metric(&worker_node, "cocoon_inference_worker_queue_wait_seconds_count", "").await;
    eprintln!("{waited} of 16 requests waited in the queue");
    assert!(waited > 0, "no request waited: the queue was never used");
    assert_eq!(metric(&worker_node, "cocoon_inference_worker_queue_depth", "").await, 0);
    assert_eq!(metric(&worker_node, "cocoon_inference_worker_requests_total", "completed").await, 16);
    // The worker told the client of its queue; /v1/models reports the last figures.
    let (_, models) = common::inference::get(api, "/v1/models").await;
    let cocoon = &models["data"][0]["cocoon"];
    assert!(cocoon["queued"].is_u64() && cocoon["slots"] == 2, "{models}");
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

async fn a_full_queue_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    // The labelled stand-in engine at a fixed pace (20 ms a token): a 100-token answer holds the
    // slot for 2 s, far longer than the six requests take to arrive.
    let engine = StandInEngine::new("q", 4096, Duration::ZERO, Duration::from_millis(20));
    let offer = ModelOffer {
        model_id: engine.model_id().to_owned(),
        price_prompt_per_1k: 0,
        price_completion_per_1k: 0,
        context_length: 4096,
        max_concurrent: 1,
    };
    let mut wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 1);
    wc.worker.models.clear();
    wc.worker.queue_length = 1;
    let extras =
        Extras { served: vec![ServedModel { engine: Arc::new(engine), offer }], ..Extras::default() };
    let worker_node = Node::start_with(with_admin(wc), TransportKind::Memory, None, extras).await.unwrap();
    let client_node = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let api = client_node.api_addr().unwrap();

    let asks = (0..6).map(|i| {
        let body = json!({"model": model_id, "max_tokens": 100,
                          "messages": [{"role": "user", "content": format!("long {i}")}]});
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("http://{api}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            if ![200, 429].contains(&status) {
                eprintln!("request {i}: {status}: {}", response.text().await.unwrap());
            }
            (status, retry)
        })
    });
    let results: Vec<(u16, Option<String>)> =
        futures::future::join_all(asks).await.into_iter().map(|r| r.unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(refused.iter().all(|(_, retry)| retry.is_some()), "{results:?}");
    assert!(
        results.iter().filter(|(s, _)| *s == 200).count() >= 2,
        "the running and the queued one: {results:?}"
    );
    assert!(results.iter().all(|(s, _)| [200, 429].contains(s)), "{results:?}");
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}
