//! Confidential inference end to end with in-process nodes: workers run the real mistral.rs
//! engine on a tiny random-weight GGUF written at test time; a client node serves the
//! OpenAI-compatible API; requests travel over `/cocoon/inference/2` inside Noise sessions keyed
//! to the workers' attested keys.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use cocoon::config::Role;
use cocoon::node::Node;
use cocoon_protocol::inference::messages::{AnswerDigest, Event};
use cocoon_protocol::inference::receipt::Receipt;
use common::inference::{boot, client, metric, post, post_sse, start_worker, tiny_model, wait_for_workers};
use common::inproc::{config, eventually, start};
use serde_json::{Value, json};

struct Net {
    _dir: tempfile::TempDir,
    boot: Node,
    workers: Vec<Node>,
    client: Node,
    model: String,
}

impl Net {
    /// A bootstrap node, workers at the given prices (1 slot each unless `slots`), a client.
    async fn start(prices: &[u64], slots: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let (boot, boot_addr) = boot(dir.path()).await;
        let mut workers = Vec::new();
        for (i, price) in prices.iter().enumerate() {
            workers.push(start_worker(dir.path(), &format!("w{i}"), &boot_addr, &model, *price, slots).await);
        }
        let client = start(client(config(&dir.path().join("client"), Role::Client, Some(&boot_addr)))).await;
        let model = wait_for_workers(&client, prices.len()).await;
        Net { _dir: dir, boot, workers, client, model }
    }

    fn api(&self) -> std::net::SocketAddr {
        self.client.api_addr().unwrap()
    }

    async fn stop(self) {
        for node in self.workers.into_iter().chain([self.client, self.boot]) {
            node.shutdown().await.unwrap();
        }
    }
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "the secret prompt about herons"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chat_completion_with_usage_and_a_verifiable_receipt() {
    let net = Net::start(&[1000], 2).await;
    let sse = post_sse(net.api(), &chat(&net.model, 200, true)).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done, "no [DONE]");
    // OpenAI's shape: a role delta first, content deltas, a finish reason, then the usage chunk.
    assert_eq!(sse.events[0].1["choices"][0]["delta"]["role"], "assistant");
    let content = sse.content_events();
    assert!(content.len() >= 2, "expected several chunks: {:?}", sse.events);
    assert!(content.first().unwrap().0 < content.last().unwrap().0, "chunks did not arrive incrementally");
    let last = sse
        .events
        .iter()
        .rev()
        .find(|(_, e)| e["choices"].as_array().is_some_and(|c| !c.is_empty()))
        .unwrap();
    assert!(last.1["choices"][0]["finish_reason"].is_string());
    let usage = &sse.events.last().unwrap().1["usage"];
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    // The tiny model never picks a control or whitespace token (see tiny_gguf.rs), so it
    // generates exactly max_tokens, each one a chunk of visible text.
    assert_eq!(completion_tokens, 200, "{usage}");
    assert_eq!(last.1["choices"][0]["finish_reason"], "length");
    assert_eq!(content.len() as u64, completion_tokens, "one chunk per token: {:?}", sse.events);

    // The receipt verifies against the worker's identity key (the one its attested record is
    // signed with), names the answer received (its events: here one text event per content
    // chunk), and matches the usage and the attested price.
    let cocoon = &last.1["cocoon"];
    let receipt = Receipt::open(&hex::decode(cocoon["receipt"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(receipt.worker.to_string(), cocoon["worker"].as_str().unwrap());
    assert_eq!(receipt.worker, net.workers[0].peer_id());
    assert_eq!(u64::from(receipt.usage.completion_tokens), completion_tokens);
    assert_eq!(u64::from(receipt.usage.prompt_tokens), usage["prompt_tokens"].as_u64().unwrap());
    let mut answer = AnswerDigest::default();
    for (_, e) in sse.content_events() {
        let text = e["choices"][0]["delta"]["content"].as_str().unwrap().to_owned();
        answer.update(&Event::Text { text, logprob: None });
    }
    assert_eq!(receipt.response_hash, answer.finish());
    assert_eq!(
        receipt.amount,
        (u64::from(receipt.usage.prompt_tokens + receipt.usage.completion_tokens) * 1000).div_ceil(1000)
    );
    assert_eq!(receipt.engine, "mistral.rs 0.8.1 (CPU)");
    assert_eq!(metric(&net.workers[0], "cocoon_inference_worker_requests_total", "completed").await, 1);
    // The client's closing frame reaches the worker after the answer reached the caller.
    let closed = eventually(Duration::from_secs(10), || async {
        metric(&net.workers[0], "cocoon_inference_worker_vouchers_total", "empty").await == 1
    })
    .await;
    assert!(closed, "the worker never counted the client's closing frame");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_non_streaming_chat_and_text_completions() {
    let net = Net::start(&[500], 2).await;
    let (status, models) = common::inference::get(net.api(), "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], net.model.as_str());
    assert_eq!(models["data"][0]["cocoon"]["workers"], 1);
    assert_eq!(models["data"][0]["cocoon"]["min_price_prompt_per_1k_nanotons"], 500);

    // The bare model name resolves to the full id.
    let (status, body) = post(net.api(), "/v1/chat/completions", chat("tiny", 8, false).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], net.model.as_str());
    assert!(
        body["choices"][0]["message"]["content"].as_str().is_some_and(|c| !c.trim().is_empty()),
        "{body}"
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 8);
    assert_eq!(body["cocoon"]["worker"], net.workers[0].peer_id().to_string());

    let request =
        json!({"model": net.model, "prompt": "once upon a time", "max_tokens": 6, "temperature": 0});
    let (status, body) = post(net.api(), "/v1/completions", request.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 6);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_the_right_status_and_an_openai_error() {
    let net = Net::start(&[0], 1).await;
    let api = net.api();
    let messages = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_request_error"),
        (json!({"model": "no-such-model", "messages": messages}).to_string(), 404, "invalid_request_error"),
        (json!({"model": net.model, "messages": []}).to_string(), 400, "invalid_request_error"),
        (
            json!({"model": net.model, "messages": messages, "max_tokens": 100_000}).to_string(),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": net.model, "messages": [{"role": "user", "content": "x".repeat(2 << 20)}]})
                .to_string(),
            413,
            "invalid_request_error",
        ),
    ];
    for (body, status, kind) in cases {
        let (got, error) = post(api, "/v1/chat/completions", body.clone()).await;
        assert_eq!(got, status, "{}: {error}", &body[..body.len().min(80)]);
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    // A prompt longer than the worker's context: refused by the worker, before generating.
    let long = json!({"model": net.model, "messages": [{"role": "user", "content": "ab ".repeat(3000)}], "max_tokens": 4000});
    let (status, error) = post(api, "/v1/chat/completions", long.to_string()).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    let (status, error) = common::inference::get(api, "/v1/nothing").await;
    assert_eq!((status, error["error"]["code"].as_str()), (404, Some("unknown_url")));
    // Nothing above crashed the worker: it still answers.
    let (status, _) = post(api, "/v1/chat/completions", chat(&net.model, 4, false).to_string()).await;
    assert_eq!(status, 200);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_generation_on_the_worker() {
    let net = Net::start(&[0], 1).await;
    let mut response = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", net.api()))
        .json(&chat(&net.model, 4000, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    let worker = &net.workers[0];
    let cancelled = eventually(Duration::from_secs(30), || async {
        metric(worker, "cocoon_inference_worker_requests_total", "canceled").await == 1
    })
    .await;
    assert!(cancelled, "the worker did not cancel the generation");
    let tokens = metric(worker, "cocoon_inference_worker_tokens_total", "").await;
    assert!(tokens < 4000, "generated all {tokens} tokens anyway");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_on_the_wire_are_refused_graded_and_the_worker_keeps_serving() {
    use cocoon_protocol::inference::messages::{MAX_REQUEST, MAX_SERVER_FRAME, PROTOCOL, ServerFrame};
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::StreamProtocol;

    let net = Net::start(&[0], 1).await;
    let worker = &net.workers[0];
    let record = net.client.attestation().record_of(&worker.peer_id()).unwrap();
    let noise_key = record.record().noise_static;
    let protocol = StreamProtocol::new(PROTOCOL);
    let dir = tempfile::tempdir().unwrap();
    let attacker = |name: &str| {
        config(&dir.path().join(name), Role::Client, Some(&common::inproc::dial_addr(&net.boot)))
    };
    let worker_addr = common::inproc::dial_addr(worker);

    // Garbage instead of a Noise handshake.
    let garbler = start(attacker("garbler")).await;
    garbler.network().dial(worker_addr.clone()).await.unwrap();
    let mut stream =
        garbler.network().streams().open_stream(worker.peer_id(), protocol.clone()).await.unwrap();
    stream.write_all(&[0, 48]).await.unwrap();
    stream.write_all(&[0xEE; 48]).await.unwrap();
    stream.flush().await.unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "the worker answered garbage");

    // A valid handshake announcing a request larger than the worker accepts (an honest client
    // refuses such a request itself, so only a broken or hostile one sends it).
    let bloater = start(attacker("bloater")).await;
    bloater.network().dial(worker_addr).await.unwrap();
    let stream = bloater.network().streams().open_stream(worker.peer_id(), protocol).await.unwrap();
    let huge = vec![b'x'; MAX_REQUEST + 1];
    // The worker stops reading at the announced length, so the rest of the request may never
    // leave: the bloater gives up after a while, as a real client's first-token deadline would.
    let initiated = cocoon::inference::session::initiate(stream, &noise_key, &huge);
    if let Ok(Ok(mut session)) = tokio::time::timeout(Duration::from_secs(10), initiated).await
        && let Ok(frame) = session.recv(MAX_SERVER_FRAME).await
    {
        let answer = ServerFrame::decode(&frame).unwrap();
        let too_large = cocoon_protocol::inference::messages::ErrorCode::TooLarge;
        assert!(matches!(answer, ServerFrame::Error { code, .. } if code == too_large), "{answer:?}");
    }

    // Both are counted against their senders at their grade: a failed handshake `high` (an honest
    // client may hold a stale key), an oversized request `mid`. One offence blocks neither.
    let counted = eventually(Duration::from_secs(10), || async {
        metric(worker, "cocoon_inference_worker_requests_total", "misbehaved").await == 2
    })
    .await;
    assert!(counted, "the worker did not count the bad frames");
    assert_eq!(metric(worker, "cocoon_penalties_total", "level=\"high\"").await, 1);
    assert_eq!(metric(worker, "cocoon_penalties_total", "level=\"mid\"").await, 1);
    let status = worker.network().status().await.unwrap();
    assert!(
        !status.blocked_peers.contains(&garbler.peer_id())
            && !status.blocked_peers.contains(&bloater.peer_id())
    );
    // The worker still serves everyone.
    let (status, body) =
        post(net.api(), "/v1/chat/completions", chat(&net.model, 4, false).to_string()).await;
    assert_eq!(status, 200, "{body}");
    garbler.shutdown().await.unwrap();
    bloater.shutdown().await.unwrap();
    net.stop().await;
}
