//! Crash safety of the client's payment state: a client *process* paying a worker (in this
//! process) over a chain reached through `cocoon chain serve`'s HTTP API is killed with SIGKILL
//! at random points while paid requests stream through its API, 12 times, and restarted on the
//! same data directory each time. After every kill the client's store has signed no more than the
//! receipts it verified, and those no more than the worker invoiced; the worker holds no voucher
//! above what the client owes; and after the last restart requests are paid again.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cocoon::config::{ChainKind, Config, KadMode, Role};
use cocoon::network::TransportKind;
use cocoon::node::Node;
use cocoon::store::Store;
use common::NodeProc;
use common::inference::{client, get, tiny_model, with_admin, worker};
use common::inproc::eventually;
use common::payments::{TON, chain, paying};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ROUNDS: usize = 12;
/// Paid requests sent per round.
const REQUESTS: usize = 5;

/// POST a chat completion; `None` when the client process died under it.
async fn ask(api: std::net::SocketAddr, model: &str, text: String) -> Option<Value> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 6});
    let response = reqwest::Client::new()
        .post(format!("http://{api}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

fn metric(node: &Node, name: &str) -> u64 {
    let text = node.metrics_text();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// What the client's store says it owes (verified receipts) and has signed, over every channel.
fn client_books(dir: &std::path::Path) -> Vec<(String, u64, u64)> {
    let store = Store::open(dir).unwrap();
    let book = store.payments().unwrap();
    let mut all = book.client_channels().unwrap();
    all.extend(book.retired_channels().unwrap());
    all.into_iter().map(|c| (c.address.to_string(), c.owed, c.cumulative)).collect()
}

fn client_config(
    dir: &std::path::Path,
    chain: &cocoon::chain::local::LocalChain,
    url: &str,
    boot: &str,
) -> std::path::PathBuf {
    let mut c = client(Config::default());
    c.node.data_dir = dir.join("client");
    c.network.gossip_heartbeat_ms = 200;
    c.bootstrap.peers = vec![boot.parse().unwrap()];
    c.api.first_token_timeout_secs = 5;
    paying(&mut c, chain, 100 * TON);
    c.payments.chain = ChainKind::Toncenter;
    c.payments.toncenter_url = url.to_owned();
    let path = dir.join("client.toml");
    std::fs::write(&path, c.to_toml().unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_client_never_signs_more_than_it_was_invoiced() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(cocoon::chain::serve::serve(chain.clone(), listener, None, std::future::pending()));

    // The worker (in this process) bootstraps the network and is paid on the same chain.
    let mut wc = with_admin(worker(Config::default(), &model, 1_000_000, 4));
    wc.node.data_dir = dir.path().join("worker");
    wc.node.roles = vec![Role::Worker, Role::Bootstrap];
    wc.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    wc.network.kad_mode = KadMode::Server;
    wc.network.gossip_heartbeat_ms = 200;
    paying(&mut wc, &chain, 10 * TON);
    let shared: cocoon::chain::SharedChain = chain.clone();
    let extras = cocoon::node::Extras { chain: Some(shared), ..Default::default() };
    let worker_node = Node::start_with(wc, TransportKind::Tcp, None, extras).await.unwrap();
    let boot = format!("{}/p2p/{}", worker_node.listen_addrs()[0], worker_node.peer_id());
    let config = client_config(dir.path(), &chain, &url, &boot);
    let data_dir = dir.path().join("client");
    let worker_book = worker_node.store().payments().unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut interrupted, mut paid) = (0, 0);
    for round in 0..=ROUNDS {
        let mut proc = NodeProc::start(&data_dir, &["--config", config.to_str().unwrap()]);
        let api = proc.ready.api.unwrap();
        let found = eventually(Duration::from_secs(30), || async {
            get(api, "/v1/models").await.1["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
        assert!(found, "round {round}: the client never learned the worker");
        let model_id = get(api, "/v1/models").await.1["data"][0]["id"].as_str().unwrap().to_owned();
        let (answered, mut answers) = tokio::sync::mpsc::channel::<()>(REQUESTS);
        let requests = tokio::spawn(async move {
            let mut paid = 0;
            for i in 0..REQUESTS {
                let answer = ask(api, &model_id, format!("r{round} q{i}")).await;
                paid += usize::from(answer.is_some_and(|a| a["cocoon"]["payment"]["status"] == "paid"));
                let _ = answered.send(()).await;
            }
            paid
        });
        if round == ROUNDS {
            // The last run is not killed: the client pays again after every crash.
            assert_eq!(requests.await.unwrap(), REQUESTS, "requests after the last restart were not paid");
            break;
        }
        for _ in 0..rng.gen_range(0..REQUESTS) {
            if answers.recv().await.is_none() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        let got = requests.await.unwrap();
        paid += got;
        interrupted += usize::from(got < REQUESTS);
        eprintln!("round {round}: {got} of {REQUESTS} requests paid before the kill");

        // The dead client signed nothing beyond the receipts it verified, and verified nothing
        // the worker did not invoice.
        let books = client_books(&data_dir);
        let owed: u64 = books.iter().map(|b| b.1).sum();
        eprintln!("round {round}: the client owes {owed} over {} channels", books.len());
        for (address, owed, signed) in &books {
            assert!(signed <= owed, "round {round}: {address} signed {signed} > owed {owed}");
            let held = worker_book
                .channels()
                .unwrap()
                .into_iter()
                .find(|c| c.channel.address.to_string() == *address);
            let held = held.map_or(0, |c| c.channel.cumulative());
            assert!(
                held <= *owed,
                "round {round}: the worker holds {held} of {address}, the client owes {owed}"
            );
        }
        let invoiced = eventually(Duration::from_secs(5), || async {
            metric(&worker_node, "cocoon_inference_worker_invoiced_nanotons_total") >= owed
        })
        .await;
        assert!(invoiced, "round {round}: the client owes {owed}, more than the worker invoiced");
        // Operator action: a request cut off by the kill left a debt; forgive it so the next
        // round is served.
        for (key, _) in worker_book.debts().unwrap() {
            worker_book.clear_debt(&key).unwrap();
        }
    }
    assert!(interrupted > 0, "no kill ever interrupted a request");
    assert!(paid > 0, "no request was ever paid before a kill");
    worker_node.shutdown().await.unwrap();
}
