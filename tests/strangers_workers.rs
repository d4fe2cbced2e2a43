//! Malicious workers against a real client node (API, selection, session, payments), built with
//! the adversary kit: each is a real worker node whose published record is genuine but whose
//! streams are served by a misbehaviour. The client keeps its deadlines and caps, refuses
//! receipts a prompt cannot have produced, never hangs on a stalled voucher exchange, fails over
//! from a worker that refuses everything, opens a stream again when one is reset before the
//! worker's reply (at most twice, then that worker has failed), replaces a broken answer for a caller that keeps the
//! text until the end, and refuses an oversized request itself.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cocoon::config::{Config, Role};
use cocoon::inference::client::{Delivery, Delta, InferenceError, estimate_tokens};
use cocoon::inference::engine::{Engine, StandInEngine};
use cocoon::inference::worker::ServedModel;
use cocoon::network::TransportKind;
use cocoon::node::{Extras, Node};
use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::inference::messages::{Event, Prompt, Request, Sampling};
use cocoon_protocol::inference::pricing::worst_case;
use common::adversary::{Mischief, misbehave};
use common::inference::{boot, client, metric, post, wait_for_workers, with_admin, worker};
use common::inproc::config;
use common::payments::{TON, chain, paying};
use libp2p::Multiaddr;
use serde_json::json;
use tokio::sync::mpsc;

/// A worker node serving the stand-in `name` at `price`; with `mischief`, its streams are served
/// by that misbehaviour instead of the worker code.
async fn start_worker(
    dir: &Path,
    boot: &Multiaddr,
    price: u64,
    mischief: Option<Mischief>,
    chain: Option<&std::sync::Arc<cocoon::chain::local::LocalChain>>,
) -> Node {
    let engine = StandInEngine::new("same", 4096, Duration::from_millis(2), Duration::from_millis(1));
    let offer = ModelOffer {
        model_id: engine.model_id().to_owned(),
        price_prompt_per_1k: price,
        price_completion_per_1k: price,
        context_length: 4096,
        // A refuser advertises a huge capacity so that selection likes it.
        max_concurrent: if mischief == Some(Mischief::RefuseEverything) { 100_000 } else { 4 },
    };
    let mut wc: Config = worker(config(dir, Role::Worker, Some(boot)), Path::new("/nonexistent"), 0, 1);
    wc.worker.models.clear();
    if let Some(chain) = chain {
        paying(&mut wc, chain, 10 * TON);
    }
    let extras = Extras {
        chain: chain.map(|c| c.clone() as cocoon::chain::SharedChain),
        served: vec![ServedModel { engine: std::sync::Arc::new(engine), offer }],
        streams_served_by_process: mischief.is_some(),
    };
    let node = Node::start_with(wc, TransportKind::Memory, None, extras).await.unwrap();
    if let Some(m) = mischief {
        misbehave(&node, dir, m, price);
    }
    node
}

async fn client_node(
    dir: &Path,
    boot: &Multiaddr,
    chain: Option<&std::sync::Arc<cocoon::chain::local::LocalChain>>,
) -> Node {
    let mut cc = with_admin(client(config(dir, Role::Client, Some(boot))));
    cc.api.attempts = 3;
    match chain {
        Some(chain) => {
            paying(&mut cc, chain, 100 * TON);
            common::payments::start_on(cc, chain).await
        }
        None => common::inproc::start(cc).await,
    }
}

fn request(model: &str, max_tokens: u32) -> Request {
    Request {
        request_id: rand::random(),
        model_id: model.into(),
        prompt: Prompt::Text("short prompt".into()),
        max_tokens,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: u64::MAX,
        channel: None,
    }
}

/// Run `request` on `node`'s inference client, shown as it arrives, draining the text; the
/// result and its duration.
async fn complete(
    node: &Node,
    request: Request,
) -> (Result<cocoon::inference::client::Completion, InferenceError>, Duration) {
    let (result, _, took) = complete_as(node, request, Delivery::Shown).await;
    (result, took)
}

/// Run `request` delivered as `delivery`; the result, every delta received, and the duration.
async fn complete_as(
    node: &Node,
    request: Request,
    delivery: Delivery,
) -> (Result<cocoon::inference::client::Completion, InferenceError>, Vec<Delta>, Duration) {
    let (tx, mut rx) = mpsc::channel(16);
    let inference = node.inference_client().unwrap().clone();
    let started = Instant::now();
    let task = tokio::spawn(async move { inference.complete(request, tx, delivery).await });
    let mut deltas = Vec::new();
    while let Some(d) = rx.recv().await {
        deltas.push(d);
    }
    (task.await.unwrap(), deltas, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_streams_for_ever_is_cut_off_at_max_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    let bad = start_worker(&dir.path().join("w"), &boot_addr, 0, Some(Mischief::StreamForever), None).await;
    let node = client_node(&dir.path().join("c"), &boot_addr, None).await;
    let model = wait_for_workers(&node, 1).await;
    let (result, _) = complete(&node, request(&model, 20)).await;
    match result {
        Err(InferenceError::WorkerFailed { reason, .. }) => {
            assert!(reason.contains("max_tokens"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    for n in [node, bad, boot] {
        n.shutdown().await.unwrap();
    }
}

/// An endless worker that is free and an honest one that charges `PRICE`, a paying client that
/// knows both, and the price cap under which selection always tries the endless one first (with
/// nothing else known of either, the honest worker's price, its whole cap, halves its score).
struct EndlessFirst {
    boot: Node,
    bad: Node,
    good: Node,
    client: Node,
    model: String,
    max_price: u64,
}

const PRICE: u64 = 1_000;

impl EndlessFirst {
    async fn start(dir: &Path, prompt: &Prompt, max_tokens: u32) -> Self {
        let chain = chain();
        let (boot, boot_addr) = boot(dir).await;
        let bad = start_worker(&dir.join("bad"), &boot_addr, 0, Some(Mischief::StreamForever), None).await;
        let good = start_worker(&dir.join("good"), &boot_addr, PRICE, None, Some(&chain)).await;
        let client = client_node(&dir.join("c"), &boot_addr, Some(&chain)).await;
        let model = wait_for_workers(&client, 2).await;
        let max_price = worst_case(PRICE, PRICE, estimate_tokens(prompt), max_tokens);
        Self { boot, bad, good, client, model, max_price }
    }

    async fn stop(self) {
        for n in [self.client, self.bad, self.good, self.boot] {
            n.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_answer_is_replaced_when_the_caller_keeps_text_until_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = Prompt::Text("short prompt".into());
    let net = EndlessFirst::start(dir.path(), &prompt, 4).await;
    let req = Request { max_price: net.max_price, ..request(&net.model, 4) };
    let (result, deltas, _) = complete_as(&net.client, req, Delivery::Replaceable).await;
    let done = result.expect("the request is served by the honest worker");
    assert_eq!(done.worker, net.good.peer_id());
    assert_eq!(done.failovers, 1);
    assert!(matches!(done.payment, cocoon::inference::client::Payment::Paid { .. }), "{:?}", done.payment);
    // The endless answer reached the caller, then was discarded before the honest one.
    let discard = deltas.iter().position(|d| *d == Delta::Discard).expect("a discard");
    assert_eq!(deltas.iter().filter(|d| **d == Delta::Discard).count(), 1);
    assert!(discard > 0, "the broken answer's text came first");
    let kept: String = deltas[discard + 1..]
        .iter()
        .map(|d| match d {
            Delta::Answer(Event::Text { text, .. }) => text.as_str(),
            Delta::Answer(other) => panic!("{other:?}"),
            Delta::Discard => "",
        })
        .collect();
    assert_eq!(kept, "tok0 tok1 tok2 tok3 ");
    assert_eq!(done.receipt.usage.completion_tokens, 4);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streamed_api_answer_survives_a_worker_that_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let net = EndlessFirst::start(dir.path(), &Prompt::Text("short prompt".into()), 4).await;
    let body = json!({"model": net.model, "prompt": "short prompt", "max_tokens": 4, "cocoon_max_price": net.max_price});
    let (status, answer) = post(net.client.api_addr().unwrap(), "/v1/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    // Only the honest worker's text, none of the endless one's.
    assert_eq!(answer["choices"][0]["text"], "tok0 tok1 tok2 tok3 ", "{answer}");
    assert_eq!(answer["cocoon"]["worker"], net.good.peer_id().to_string(), "{answer}");
    assert_eq!(answer["cocoon"]["failovers"], 1, "{answer}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_more_prompt_than_was_sent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    let bad = start_worker(&dir.path().join("w"), &boot_addr, 1, Some(Mischief::InflateReceipt), None).await;
    let node = client_node(&dir.path().join("c"), &boot_addr, None).await;
    let model = wait_for_workers(&node, 1).await;
    let (result, _) = complete(&node, request(&model, 3)).await;
    match result {
        Err(InferenceError::BadReceipt { reason, .. }) => {
            assert!(reason.contains("prompt tokens"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    for n in [node, bad, boot] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_refuses_everything_loses_its_requests_to_an_honest_one() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    let bad =
        start_worker(&dir.path().join("bad"), &boot_addr, 0, Some(Mischief::RefuseEverything), None).await;
    let good = start_worker(&dir.path().join("good"), &boot_addr, 0, None, None).await;
    let node = client_node(&dir.path().join("c"), &boot_addr, None).await;
    let model = wait_for_workers(&node, 2).await;
    let mut failovers = 0;
    for _ in 0..20 {
        let (result, _) = complete(&node, request(&model, 2)).await;
        let done = result.expect("every request is served (by the honest worker)");
        assert_eq!(done.worker, good.peer_id());
        failovers += done.failovers;
    }
    // Refusals count as failures: the refuser is tried rarely once it has failed a few times.
    assert!(failovers <= 6, "the refuser kept winning selections: {failovers} failovers in 20 requests");
    for n in [node, bad, good, boot] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_voucher_exchange_does_not_hold_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let bad =
        start_worker(&dir.path().join("w"), &boot_addr, 1_000, Some(Mischief::StallVoucher), Some(&chain))
            .await;
    let node = client_node(&dir.path().join("c"), &boot_addr, Some(&chain)).await;
    let model = wait_for_workers(&node, 1).await;
    // Twice: the second request to the same worker must not wait behind the first's channel lock.
    for _ in 0..2 {
        let (result, took) = complete(&node, request(&model, 3)).await;
        let done = result.expect("the answer is delivered");
        assert!(matches!(done.payment, cocoon::inference::client::Payment::Failed(_)), "{:?}", done.payment);
        assert!(took < Duration::from_secs(40), "a stalled acknowledgement held the client {took:?}");
    }
    for n in [node, bad, boot] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_by_the_client_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    let model_file = common::inference::tiny_model(dir.path());
    let wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model_file, 0, 1);
    let good = common::inproc::start(wc).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    cc.api.max_body_bytes = 4 << 20;
    let node = common::inproc::start(cc).await;
    let model = wait_for_workers(&node, 1).await;
    // Within the API's body limit, but beyond what a worker accepts once encoded.
    let prompt = "x".repeat((1 << 20) + 10);
    let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4});
    let (status, answer) = post(node.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    // The worker never saw it, so it has nothing against this client: the next request is served.
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let (status, answer) = post(node.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    for n in [node, good, boot] {
        n.shutdown().await.unwrap();
    }
}

/// A stream reset before the worker's handshake reply (what libp2p-stream does to streams that
/// arrive faster than the worker takes them) is opened again, twice at most: the request is
/// served by the same worker without a failover; a third reset fails that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_before_the_reply_is_opened_again_at_most_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, boot_addr) = boot(dir.path()).await;
    let bad = start_worker(&dir.path().join("w"), &boot_addr, 0, Some(Mischief::ResetFirst(5)), None).await;
    let node = client_node(&dir.path().join("c"), &boot_addr, None).await;
    let model = wait_for_workers(&node, 1).await;
    const REOPENED: &str = "cocoon_inference_client_streams_reopened";
    // Three resets: the first stream and both reopens; nothing else to fail over to.
    let (result, _) = complete(&node, request(&model, 3)).await;
    match result {
        Err(InferenceError::WorkerFailed { worker, .. }) => assert_eq!(worker, bad.peer_id().to_string()),
        other => panic!("{other:?}"),
    }
    assert_eq!(metric(&node, REOPENED, "").await, 2);
    // Two more resets, then an answer: the same worker serves it on the third stream.
    let (result, _) = complete(&node, request(&model, 3)).await;
    let done = result.expect("served after two reopens");
    assert_eq!((done.worker, done.failovers), (bad.peer_id(), 0));
    assert_eq!(metric(&node, REOPENED, "").await, 4);
    for n in [node, bad, boot] {
        n.shutdown().await.unwrap();
    }
}
