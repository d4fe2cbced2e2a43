//! Moving a request to another worker before its first token: a worker whose slots are full
//! answers `Busy` at once, and a worker that is gone cannot take the request; either way the
//! request completes on another worker. And a worker this node's policy does not accept is never
//! sent anything.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use cocoon::config::Role;
use cocoon::inference::session;
use cocoon_protocol::inference::messages::{
    ChatMessage, ErrorCode, MAX_SERVER_FRAME, PROTOCOL, Prompt, Request, Role as ChatRole, Sampling,
    ServerFrame,
};
use common::inference::{
    boot, client, metric, post, start_worker, tiny_model, wait_for_workers, with_admin, worker,
};
use common::inproc::{config, eventually, start};
use libp2p::StreamProtocol;
use serde_json::json;

fn request(model: &str, max_tokens: u32) -> Request {
    Request {
        request_id: [1; 16],
        model_id: model.into(),
        prompt: Prompt::Chat(vec![ChatMessage::text(ChatRole::User, "hold this slot")]),
        max_tokens,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: u64::MAX,
        channel: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_dead_workers_are_skipped_before_the_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    // The cheap worker is preferred by every client (selection weighs price), so requests go to
    // it first; it has one slot and no queue.
    let mut cc =
        with_admin(worker(config(&dir.path().join("cheap"), Role::Worker, Some(&boot_addr)), &model, 0, 1));
    cc.worker.queue_length = 0;
    let cheap = start(cc).await;
    let dear = start_worker(dir.path(), "dear", &boot_addr, &model, 50_000, 1).await;
    let client_node = start(client(config(&dir.path().join("client"), Role::Client, Some(&boot_addr)))).await;
    // A second client with no history yet: it, too, will try the cheap worker first.
    let fresh = start(client(config(&dir.path().join("fresh"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 2).await;
    wait_for_workers(&fresh, 2).await;
    let api = client_node.api_addr().unwrap();

    // Take the cheap worker's only slot with a raw session that never sends its closing frame
    // (the worker keeps the slot while it waits for it).
    let record = client_node.attestation().record_of(&cheap.peer_id()).unwrap();
    let mut control = client_node.network().streams();
    let stream = control.open_stream(cheap.peer_id(), StreamProtocol::new(PROTOCOL)).await.unwrap();
    let mut holder =
        session::initiate(stream, &record.record().noise_static, &request(&model_id, 4).encode())
            .await
            .unwrap();
    assert!(matches!(
        ServerFrame::decode(&holder.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap(),
        ServerFrame::Event(_)
    ));

    // A second raw request to the full worker is answered Busy at once.
    let stream = control.open_stream(cheap.peer_id(), StreamProtocol::new(PROTOCOL)).await.unwrap();
    let mut second =
        session::initiate(stream, &record.record().noise_static, &request(&model_id, 4).encode())
            .await
            .unwrap();
    let frame = ServerFrame::decode(&second.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
    assert!(matches!(frame, ServerFrame::Error { code: ErrorCode::Busy, .. }), "{frame:?}");

    // Through the API: the cheap worker says Busy, the request completes on the other one.
    let body = json!({"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "cocoon_max_price": 10_000_000});
    let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["worker"], dear.peer_id().to_string());
    assert_eq!(answer["cocoon"]["failovers"], 1);
    assert!(metric(&cheap, "cocoon_inference_worker_requests_total", "busy").await >= 2);
    drop(holder);

    // The cheap worker dies. The fresh client still holds its (unexpired) record and, having no
    // history, tries it first: the dial fails before any token and the request moves on.
    cheap.shutdown().await.unwrap();
    let (status, answer) = post(fresh.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["worker"], dear.peer_id().to_string());
    assert_eq!(answer["cocoon"]["failovers"], 1);

    // With every worker gone, the answer is a clear gateway error, not a hang.
    dear.shutdown().await.unwrap();
    let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
    assert!(status == 502 || status == 504, "{status} {answer}");
    assert_eq!(answer["error"]["type"], "server_error");
    for node in [client_node, fresh, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_the_policy_refuses_is_never_sent_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let w = start_worker(dir.path(), "w", &boot_addr, &model, 0, 1).await;
    // A strict client: SIMULATED evidence is not acceptable to it.
    let mut strict = client(config(&dir.path().join("strict"), Role::Client, Some(&boot_addr)));
    strict.attestation.allow_simulated = false;
    let strict = start(strict).await;
    // Wait until the worker's record has been gossiped (the strict client ignores it).
    let seen =
        eventually(Duration::from_secs(30), || async { strict.attestation().verdicts().ignored >= 1 }).await;
    assert!(seen, "the record never reached the strict client");
    let api = strict.api_addr().unwrap();
    let (status, models) = common::inference::get(api, "/v1/models").await;
    assert_eq!((status, models["data"].as_array().map(Vec::len)), (200, Some(0)));
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let (status, error) = post(api, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(metric(&w, "cocoon_inference_worker_requests_total", "").await, 0);
    for node in [strict, w, boot] {
        node.shutdown().await.unwrap();
    }
}

/// The worker's own checks, reached directly over the protocol (the API refuses most of these
/// before they leave the client): an unknown model, a prompt that does not fit the context, a
/// price cap below the worst case, zero tokens. Each is a refusal, not a misbehaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_what_it_cannot_serve_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let w = start_worker(dir.path(), "w", &boot_addr, &model, 1000, 1).await;
    let c = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&c, 1).await;
    let noise_key = c.attestation().record_of(&w.peer_id()).unwrap().record().noise_static;
    let long = Prompt::Chat(vec![ChatMessage::text(ChatRole::User, "ab ".repeat(3000))]);
    let cases = [
        (Request { model_id: "other@sha256:00".into(), ..request(&model_id, 4) }, ErrorCode::UnknownModel),
        (Request { prompt: long, ..request(&model_id, 4000) }, ErrorCode::TooLarge),
        (Request { max_price: 1, ..request(&model_id, 100) }, ErrorCode::PriceTooHigh),
        (request(&model_id, 0), ErrorCode::InvalidRequest),
    ];
    for (req, expected) in cases {
        let stream =
            c.network().streams().open_stream(w.peer_id(), StreamProtocol::new(PROTOCOL)).await.unwrap();
        let mut s = session::initiate(stream, &noise_key, &req.encode()).await.unwrap();
        let frame = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
        assert!(
            matches!(&frame, ServerFrame::Error { code, .. } if *code == expected),
            "{expected:?}: {frame:?}"
        );
    }
    // Refusals are not misbehaviour: the client is not blocked and is served normally.
    assert!(!w.network().status().await.unwrap().blocked_peers.contains(&c.peer_id()));
    let body = json!({"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let (status, answer) = post(c.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    for node in [c, w, boot] {
        node.shutdown().await.unwrap();
    }
}
