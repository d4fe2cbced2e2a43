//! Helpers for inference tests: workers serving the tiny GGUF model with the real mistral.rs
//! engine, a client node with the OpenAI-compatible API, and an HTTP client for it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cocoon::config::{Config, ModelEntry, Role, TeeKind};
use cocoon::node::Node;
use serde_json::Value;

use super::inproc::eventually;

/// Name of the tiny model in its id.
pub const TINY: &str = "tiny";

/// Write the tiny model into `dir` (once) and return its path.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    if !path.exists() {
        super::tiny_gguf::write(&path, 7);
    }
    path
}

/// Make `c` a worker (SIMULATED evidence) serving `model` at `price` per 1k tokens.
pub fn worker(mut c: Config, model: &Path, price: u64, max_concurrent: u32) -> Config {
    c.node.roles = vec![Role::Worker];
    c.worker.payout_address = "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into();
    c.worker.tee = TeeKind::Simulated;
    c.attestation.allow_simulated = true;
    c.worker.models = vec![ModelEntry {
        name: TINY.into(),
        path: model.to_owned(),
        price_prompt_per_1k: price,
        price_completion_per_1k: price,
        max_concurrent,
        context_length: None,
    }];
    c
}

/// A bootstrap node that forwards SIMULATED records, and its dial address.
pub async fn boot(dir: &Path) -> (Node, libp2p::Multiaddr) {
    let mut c = super::inproc::config(&dir.join("boot"), Role::Bootstrap, None);
    c.attestation.allow_simulated = true;
    let node = super::inproc::start(c).await;
    let addr = super::inproc::dial_addr(&node);
    (node, addr)
}

/// `c` with its admin endpoint on an OS-chosen loopback port (for `/metrics`).
pub fn with_admin(mut c: Config) -> Config {
    c.admin.enabled = true;
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c
}

/// Start a worker named `name` under `dir`, joining through `boot`, serving `model` at `price`
/// with `slots` slots, its admin endpoint on.
pub async fn start_worker(
    dir: &Path,
    name: &str,
    boot: &libp2p::Multiaddr,
    model: &Path,
    price: u64,
    slots: u32,
) -> Node {
    let c = super::inproc::config(&dir.join(name), Role::Worker, Some(boot));
    super::inproc::start(with_admin(worker(c, model, price, slots))).await
}

/// Make `c` a client node with its API on an OS-chosen loopback port and its admin endpoint on.
pub fn client(mut c: Config) -> Config {
    c.node.roles = vec![Role::Client];
    c.attestation.allow_simulated = true;
    c.api.enabled = true;
    c.api.listen = "127.0.0.1:0".parse().expect("addr");
    with_admin(c)
}

/// Wait until `node` knows `workers` verified workers offering a model; returns the model id.
pub async fn wait_for_workers(node: &Node, workers: usize) -> String {
    let ok = eventually(Duration::from_secs(60), || async {
        node.attestation().models().first().is_some_and(|m| node.attestation().offering(m).len() >= workers)
    })
    .await;
    assert!(ok, "client never learned {workers} workers");
    node.attestation().models()[0].clone()
}

/// POST a JSON body; returns the status and the parsed body (Null if not JSON).
pub async fn post(api: std::net::SocketAddr, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{api}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// GET a path; returns the status and the parsed body.
pub async fn get(api: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{api}{path}")).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A streamed answer: each `data:` event with the time it arrived, and whether `[DONE]` came.
#[derive(Debug, Default)]
pub struct Sse {
    pub status: u16,
    pub events: Vec<(Instant, Value)>,
    pub done: bool,
}

impl Sse {
    /// The text of all content deltas.
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|(_, e)| e["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned))
            .collect()
    }

    /// Events carrying non-empty content.
    pub fn content_events(&self) -> Vec<&(Instant, Value)> {
        self.events
            .iter()
            .filter(|(_, e)| {
                e["choices"]
                    .get(0)
                    .and_then(|c| c["delta"]["content"].as_str())
                    .is_some_and(|t| !t.is_empty())
            })
            .collect()
    }
}

/// POST a streaming request and read the whole event stream.
pub async fn post_sse(api: std::net::SocketAddr, body: &Value) -> Sse {
    let mut response = reqwest::Client::new()
        .post(format!("http://{api}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request");
    let mut sse = Sse { status: response.status().as_u16(), ..Sse::default() };
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        let at = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").unwrap_or_default().to_owned();
            if data == "[DONE]" {
                sse.done = true;
            } else if let Ok(v) = serde_json::from_str(&data) {
                sse.events.push((at, v));
            }
        }
    }
    sse
}

/// Sum of the samples of `metric` whose labels contain `label` on a node's `/metrics`.
pub async fn metric(node: &Node, metric: &str, label: &str) -> u64 {
    let addr = node.admin_addr().expect("admin endpoint on");
    let (_, body) =
        tokio::task::spawn_blocking(move || super::http_get(addr, "/metrics")).await.expect("join");
    body.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A small network on the memory transport: a bootstrap node, one free worker with `slots` slots
/// serving the tiny model with mistral.rs, and a client node with its API.
pub struct TinyNet {
    _dir: tempfile::TempDir,
    pub boot: Node,
    pub worker: Node,
    pub client: Node,
    /// The worker's model id.
    pub model: String,
}

impl TinyNet {
    pub async fn start(slots: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let model = tiny_model(dir.path());
        let (boot, boot_addr) = boot(dir.path()).await;
        let worker = start_worker(dir.path(), "w", &boot_addr, &model, 0, slots).await;
        let c = super::inproc::config(&dir.path().join("client"), Role::Client, Some(&boot_addr));
        let client = super::inproc::start(client(c)).await;
        let model = wait_for_workers(&client, 1).await;
        TinyNet { _dir: dir, boot, worker, client, model }
    }

    /// The client node's API.
    pub fn api(&self) -> std::net::SocketAddr {
        self.client.api_addr().expect("the client serves its API")
    }

    pub async fn stop(self) {
        for node in [self.client, self.worker, self.boot] {
            node.shutdown().await.expect("shutdown");
        }
    }
}
