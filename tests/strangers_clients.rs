//! Malicious clients against a real worker (mistral.rs on the tiny GGUF, real libp2p and Noise),
//! each beside an honest client whose service must not suffer: a client that stops reading
//! mid-answer (on `d0e002d` its generation blocked mistral.rs's engine loop for every request of
//! the model, and the worker's send waited for ever), silent streams that never finish a
//! handshake, a prompt whose bytes alone prove it cannot fit, and requests naming channels that
//! do not exist; and an honest client answered faster than the stream budget refills, which only
//! refused requests spend.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon::chain::wallet::Wallet;
use cocoon::chain::{AccountInfo, AccountStatus, Chain, ChainError, GetMethodResult, SharedChain, TxSummary};
use cocoon::network::TransportKind;
use cocoon::node::Extras;
use futures::future::BoxFuture;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use cocoon::config::Role;
use cocoon::inference::engine::{EVENTS, Engine, EngineEvent, Generation};
use cocoon::inference::mistral::MistralEngine;
use cocoon::inference::session;
use cocoon::node::Node;
use cocoon_protocol::inference::messages::{
    ChatMessage, ErrorCode, MAX_SERVER_FRAME, Prompt, Request, Role as ChatRole, Sampling, ServerFrame,
};
use cocoon_protocol::payments::channel::ChannelParams;
use common::adversary::{raw_stream, session_with, silent_streams, stop_reading};
use common::inference::{boot, client, metric, post, wait_for_workers, with_admin, worker};
use common::inproc::{config, eventually, start};
use common::payments::{TON, chain, paying, start_on};
use serde_json::json;

fn chat(model: &str, text: &str, max_tokens: u32) -> Request {
    Request {
        request_id: rand::random(),
        model_id: model.into(),
        prompt: Prompt::Chat(vec![ChatMessage::text(ChatRole::User, text)]),
        max_tokens,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: u64::MAX,
        channel: None,
    }
}

/// A channel between the attacker (its node in `dir`, paying from `wallet`) and `worker` that was
/// never deployed: a fresh seed each time, so each is a new address the worker must look up.
fn made_up_channel(dir: &std::path::Path, attacker: &Node, worker: &Node, wallet: &Wallet) -> ChannelParams {
    let identity = cocoon::store::load_or_create_identity(dir).unwrap();
    let record = attacker.attestation().record_of(&worker.peer_id()).unwrap();
    ChannelParams {
        client_key: identity.try_into_ed25519().unwrap().public().to_bytes(),
        worker_key: cocoon::payments::peer_key(&worker.peer_id()).unwrap(),
        client: wallet.address().clone(),
        worker: cocoon::chain::parse_address(&record.record().payout_address).unwrap(),
        dispute_window: 86_400,
        seed: rand::random(),
    }
}

/// An honest request through the client node's API; its status and how long it took.
async fn honest(node: &Node, model: &str) -> (u16, Duration) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8});
    let started = Instant::now();
    let (status, answer) = post(node.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    // The tiny model may end early (its end-of-sequence token is one of its 105).
    let counted = answer["usage"]["completion_tokens"].as_u64().is_some_and(|n| n <= 8);
    assert!(status != 200 || counted, "{answer}");
    (status, started.elapsed())
}

/// Wait until `metric` on `node` stops moving (read twice, 300 ms apart, equal and non-zero).
async fn settled(node: &Node, name: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = metric(node, name, "").await;
        if now > 0 && now == last {
            return now;
        }
        last = now;
    }
    panic!("{name} never settled");
}

/// The worker's `requests_total` lines, for failure messages.
async fn requests_by_outcome(node: &Node) -> String {
    let addr = node.admin_addr().unwrap();
    let (_, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    body.lines().filter(|l| l.starts_with("cocoon_inference_worker_")).collect::<Vec<_>>().join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_nobody_reads_never_holds_the_engine_loop() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-long.gguf");
    common::tiny_gguf::write_with_context(&model, 7, 65_536);
    let engine = MistralEngine::load(&model, "tiny@test".into(), None, 2).await.unwrap();
    let prompt = Prompt::Chat(vec![ChatMessage::text(ChatRole::User, "talk")]);
    let greedy = Sampling { temperature: Some(0.0), ..Sampling::default() };
    let generation = |max_tokens, sampling| Generation {
        prompt: prompt.clone(),
        max_tokens,
        sampling,
        shape: Default::default(),
        prompt_tokens: None,
    };
    // A reader that takes the first token and then nothing (the worker blocked on a client).
    let mut stuck = engine.generate(generation(60_000, greedy.clone()));
    assert!(matches!(stuck.recv().await, Some(EngineEvent::Answer(_))));
    let full = || {
        let len = stuck.len();
        async move { len >= EVENTS }
    };
    assert!(eventually(Duration::from_secs(60), full).await, "the generation's buffer never filled");
    // The model's one engine loop still counts prompts and runs other sequences to the end.
    let limit = Duration::from_secs(20);
    let counted = tokio::time::timeout(limit, engine.prompt_tokens(&prompt, &Default::default())).await;
    assert!(matches!(counted, Ok(Ok(n)) if n > 0), "tokenising waited on the stuck reader");
    let mut other = engine.generate(generation(16, greedy));
    let finished = tokio::time::timeout(limit, async {
        while let Some(event) = other.recv().await {
            if let EngineEvent::Done { usage, .. } = event {
                return usage.completion_tokens;
            }
        }
        0
    });
    assert_eq!(finished.await.expect("another sequence waited on the stuck reader"), 16);
    // The stuck generation was stopped where its buffer ran full, and says why.
    let mut last = None;
    while let Ok(Some(event)) = tokio::time::timeout(limit, stuck.recv()).await {
        last = Some(event);
    }
    assert_eq!(last, Some(EngineEvent::Stalled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_does_not_freeze_the_model_for_others() {
    let dir = tempfile::tempdir().unwrap();
    // A context long enough for an answer larger than the transport's flow-control window.
    let model = dir.path().join("tiny-long.gguf");
    common::tiny_gguf::write_with_context(&model, 7, 65_536);
    let (boot, boot_addr) = boot(dir.path()).await;
    let wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    let worker_node = start(with_admin(wc)).await;
    let attacker = start(client(config(&dir.path().join("a"), Role::Client, Some(&boot_addr)))).await;
    let bystander = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&attacker, 1).await;
    wait_for_workers(&bystander, 1).await;
    let (_, baseline) = honest(&bystander, &model_id).await;

    // The attacker asks for 60,000 tokens and reads only the first frame.
    // Greedy: the tiny model then never picks its end-of-sequence token.
    let mut long = chat(&model_id, "talk", 60_000);
    long.sampling.temperature = Some(0.0);
    let _stuck = stop_reading(&attacker, &worker_node, &long).await;
    // The worker sends until the attacker's window is full, then its send waits (up to 10 s).
    settled(&worker_node, "cocoon_inference_worker_tokens_total").await;

    // Meanwhile an honest client of the same model is served in its normal time.
    let (status, took) = honest(&bystander, &model_id).await;
    assert_eq!(status, 200);
    assert!(
        took < baseline + Duration::from_secs(10),
        "honest request took {took:?} beside a stuck reader (alone: {baseline:?})"
    );
    // The stuck reader's generation was stopped, not left running or holding the engine.
    let stalled =
        || async { metric(&worker_node, "cocoon_inference_worker_requests_total", "stalled").await == 1 };
    let dropped = eventually(Duration::from_secs(60), stalled).await;
    let outcomes = requests_by_outcome(&worker_node).await;
    assert!(dropped, "the stuck reader was never dropped: {outcomes}");
    for node in [attacker, bystander, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_cannot_take_the_worker_from_honest_clients() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::inference::tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    wc.worker.handshake_timeout_secs = 2;
    let worker_node = start(with_admin(wc)).await;
    let attacker = start(client(config(&dir.path().join("a"), Role::Client, Some(&boot_addr)))).await;
    let bystander = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&bystander, 1).await;
    wait_for_workers(&attacker, 1).await;

    // 40 streams that never start a handshake: more than the worker's whole pool (4·2+16 = 24).
    let held = silent_streams(&attacker, worker_node.peer_id(), 40).await;
    assert!(!held.is_empty());
    let refused = || async {
        metric(&worker_node, "cocoon_inference_worker_streams_refused_total", "peer_share").await > 0
    };
    assert!(
        eventually(Duration::from_secs(30), refused).await,
        "the attacker's excess streams were not refused"
    );
    let (status, _) = honest(&bystander, &model_id).await;
    assert_eq!(status, 200, "an honest client was starved by silent streams");
    // The hanging handshakes count against the attacker (Mid: about ten block it).
    let penalised = || async { metric(&worker_node, "cocoon_penalties_total", "level=\"mid\"").await >= 1 };
    assert!(eventually(Duration::from_secs(30), penalised).await, "handshake timeouts were not counted");
    drop(held);
    for node in [attacker, bystander, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_never_spend_the_stream_budget_refused_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::inference::tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    let worker_node = start(with_admin(wc)).await;
    let client_node = start(client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let budget_refusals =
        || metric(&worker_node, "cocoon_inference_worker_streams_refused_total", "peer_budget");

    // Answered requests one after another, until more were sent than the budget's burst (32) plus
    // what it refilled meanwhile (8 a second), with 8 to spare: none is refused at the door.
    let started = Instant::now();
    let mut sent = 0_u32;
    while f64::from(sent) < 40.0 + 8.0 * started.elapsed().as_secs_f64() {
        assert!(sent < 2_000, "this machine answered fewer than 8 requests a second");
        let (status, _) = honest(&client_node, &model_id).await;
        assert_eq!(
            status,
            200,
            "answered request {sent} failed: {}",
            requests_by_outcome(&worker_node).await
        );
        sent += 1;
    }
    assert_eq!(budget_refusals().await, 0, "{sent} answered requests met the stream budget");

    // Requests the worker refuses (a model it does not serve) bring no served work: they spend it.
    let record = client_node.attestation().record_of(&worker_node.peer_id()).unwrap();
    let request = chat("no-such-model", "hi", 4).encode();
    let mut attempts = 0_u32;
    while budget_refusals().await == 0 {
        assert!(attempts < 2_000, "{attempts} refused requests never met the stream budget");
        for _ in 0..16 {
            let stream = raw_stream(&client_node, worker_node.peer_id()).await;
            if let Ok(mut s) = session::initiate(stream, &record.record().noise_static, &request).await {
                let _ = s.recv(MAX_SERVER_FRAME).await;
            }
        }
        attempts += 16;
    }
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_cannot_fit_is_refused_before_it_is_tokenised() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::inference::tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let wc = worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    let worker_node = start(with_admin(wc)).await;
    let attacker = start(client(config(&dir.path().join("a"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&attacker, 1).await;
    // 900 KB of text: within the wire limit, far beyond 4,096 tokens of the tiny vocabulary.
    let request = chat(&model_id, &"abcdefgh ".repeat(100_000), 8);
    let mut s = session_with(&attacker, &worker_node, &request.encode()).await;
    let frame = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
    let ServerFrame::Error { code, message } = frame else { panic!("{frame:?}") };
    assert_eq!(code, ErrorCode::TooLarge);
    // The byte bound answered ("at least"), not an exact count from the tokenizer.
    assert!(message.contains("at least"), "{message}");
    for node in [attacker, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_made_up_channels_spend_only_their_own_budget() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let model = common::inference::tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 1_000, 2));
    paying(&mut wc, &chain, 10 * TON);
    let worker_node = start_on(wc, &chain).await;
    let mut ac = client(config(&dir.path().join("a"), Role::Client, Some(&boot_addr)));
    let wallet = paying(&mut ac, &chain, 10 * TON);
    let attacker = start_on(ac, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    paying(&mut cc, &chain, 100 * TON);
    let bystander = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&attacker, 1).await;
    wait_for_workers(&bystander, 1).await;

    let mut answers = Vec::new();
    for _ in 0..12 {
        // A channel that would be the attacker's own, never deployed: each costs a chain read.
        let mut request = chat(&model_id, "hi", 4);
        request.channel = Some(made_up_channel(&dir.path().join("a"), &attacker, &worker_node, &wallet));
        let mut s = session_with(&attacker, &worker_node, &request.encode()).await;
        answers.push(ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap());
    }
    let codes: Vec<_> = answers
        .iter()
        .map(|f| match f {
            ServerFrame::Error { code, message } => (*code, message.contains("channel lookups")),
            other => panic!("{other:?}"),
        })
        .collect();
    // Four lookups (the burst), then the attacker's budget is spent: Busy, no chain read.
    assert_eq!(codes.iter().filter(|(c, _)| *c == ErrorCode::PaymentRequired).count(), 4, "{codes:?}");
    assert!(codes[4..].iter().all(|(c, budget)| *c == ErrorCode::Busy && *budget), "{codes:?}");
    // An honest client opening its channel now is not affected by the attacker's spending.
    let (status, _) = honest(&bystander, &model_id).await;
    assert_eq!(status, 200);
    for node in [attacker, bystander, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}

/// The worker's chain, slow to answer for accounts that are not deployed (what a stranger's
/// made-up channel costs on a real chain API under load).
#[derive(Debug)]
struct SlowForStrangers(Arc<cocoon::chain::local::LocalChain>);

impl Chain for SlowForStrangers {
    fn name(&self) -> &'static str {
        "slow-for-strangers"
    }
    fn account(&self, address: &StdAddr) -> BoxFuture<'_, Result<AccountInfo, ChainError>> {
        let address = address.clone();
        Box::pin(async move {
            let info = self.0.account(&address).await?;
            if info.status != AccountStatus::Active {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(info)
        })
    }
    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
    ) -> BoxFuture<'a, Result<GetMethodResult, ChainError>> {
        self.0.run_get_method(address, method)
    }
    fn send_external(&self, message: Cell) -> BoxFuture<'_, Result<(), ChainError>> {
        self.0.send_external(message)
    }
    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TxSummary>, ChainError>> {
        self.0.transactions(address, limit)
    }
    fn now(&self) -> BoxFuture<'_, Result<u64, ChainError>> {
        self.0.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_lookups_for_made_up_channels_never_hold_honest_payments() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let model = common::inference::tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 1_000, 2));
    paying(&mut wc, &chain, 10 * TON);
    let slow: SharedChain = Arc::new(SlowForStrangers(chain.clone()));
    let extras = Extras { chain: Some(slow), ..Extras::default() };
    let worker_node = Node::start_with(wc, TransportKind::Memory, None, extras).await.unwrap();
    let mut ac = client(config(&dir.path().join("a"), Role::Client, Some(&boot_addr)));
    let wallet = paying(&mut ac, &chain, 10 * TON);
    let attacker = start_on(ac, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    paying(&mut cc, &chain, 100 * TON);
    let bystander = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&attacker, 1).await;
    wait_for_workers(&bystander, 1).await;
    // The honest client's channel exists before the attack.
    assert_eq!(honest(&bystander, &model_id).await.0, 200);

    // Four made-up channels (the attacker's whole burst), each a 5 s chain read at the worker.
    let mut lookups = Vec::new();
    for _ in 0..4 {
        let mut request = chat(&model_id, "hi", 4);
        request.channel = Some(made_up_channel(&dir.path().join("a"), &attacker, &worker_node, &wallet));
        let mut s = session_with(&attacker, &worker_node, &request.encode()).await;
        lookups.push(tokio::spawn(async move { s.recv(MAX_SERVER_FRAME).await.map(|_| ()) }));
    }
    // While they are pending, honest requests are admitted and paid at their normal pace (on
    // `d0e002d` each waited behind the lookups, holding the channel book's lock, 5 s apiece).
    for _ in 0..3 {
        let body =
            json!({"model": model_id, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4});
        let started = Instant::now();
        let (status, answer) =
            post(bystander.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["payment"]["status"], "paid", "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "an honest request waited {:?}",
            started.elapsed()
        );
    }
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    for node in [attacker, bystander, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}
