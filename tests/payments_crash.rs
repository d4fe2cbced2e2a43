//! Crash safety of the worker's voucher book and settlement journal: a worker *process* paid over
//! a chain reached through `cocoon chain serve`'s HTTP API is killed with SIGKILL at random points
//! while paid requests stream in, 20 times, and restarted on the same data directory each time.
//! Every voucher the worker acknowledged is still in its store after the kill; the client
//! resynchronises when the worker lost a voucher it never acknowledged; and in the end the chain
//! has paid the worker exactly the best voucher it holds, with no claim wasted or repeated.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocoon::chain::local::LocalChain;
use cocoon::config::{ChainKind, Config, KadMode, Role};
use cocoon::network::TransportKind;
use cocoon::node::Node;
use cocoon::payments::contract;
use cocoon::store::Store;
use cocoon_protocol::payments::channel::op;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use common::NodeProc;
use common::inference::{client, post, tiny_model, worker};
use common::inproc::eventually;
use common::payments::{TON, chain, paying};
use rand::{Rng, SeedableRng};
use serde_json::json;

const ROUNDS: usize = 20;
/// Paid requests sent per round.
const REQUESTS: usize = 6;

fn worker_config(
    dir: &std::path::Path,
    model: &std::path::Path,
    chain: &LocalChain,
    url: &str,
    boot: &str,
) -> std::path::PathBuf {
    let mut c = worker(Config::default(), model, 1_000_000, 2);
    c.node.data_dir = dir.join("worker");
    c.network.kad_mode = KadMode::Server;
    c.network.gossip_heartbeat_ms = 200;
    c.bootstrap.peers = vec![boot.parse().unwrap()];
    paying(&mut c, chain, 10 * TON);
    c.payments.chain = ChainKind::Toncenter;
    c.payments.toncenter_url = url.to_owned();
    // Claim often, so kills also land around claims.
    c.payments.settlement =
        SettlementPolicy { claim_threshold: 100_000, min_claim: 100_000, ..SettlementPolicy::default() };
    let path = dir.join("worker.toml");
    std::fs::write(&path, c.to_toml().unwrap()).unwrap();
    path
}

/// The restarted worker `peer` is connected to the client and its record is there. The record
/// alone is not enough: the worker keeps its key across restarts, so the client may still hold
/// the record of the process just killed, whose address is gone.
async fn reachable(client: &Node, peer: &str) -> bool {
    let has_record = client.attestation().records().iter().any(|r| r.record().peer_id.to_string() == peer);
    has_record
        && client.network().status().await.is_ok_and(|s| s.connected.iter().any(|p| p.to_string() == peer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_keeps_every_acknowledged_voucher_and_claims_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(cocoon::chain::serve::serve(chain.clone(), listener, None, std::future::pending()));

    // The client (in this process) bootstraps the network and pays on the same chain directly.
    let mut cc = client(Config::default());
    cc.node.data_dir = dir.path().join("client");
    cc.node.roles = vec![Role::Client, Role::Bootstrap];
    cc.network.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cc.network.kad_mode = KadMode::Server;
    cc.network.gossip_heartbeat_ms = 200;
    cc.api.first_token_timeout_secs = 5;
    let client_wallet = paying(&mut cc, &chain, 100 * TON);
    let shared: cocoon::chain::SharedChain = chain.clone();
    let extras = cocoon::node::Extras { chain: Some(shared), ..Default::default() };
    let client_node = Node::start_with(cc, TransportKind::Tcp, None, extras).await.unwrap();
    let boot = format!("{}/p2p/{}", client_node.listen_addrs()[0], client_node.peer_id());
    let api = client_node.api_addr().unwrap();
    let config = worker_config(dir.path(), &model, &chain, &url, &boot);
    let data_dir = dir.path().join("worker");

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut acknowledged = 0u64; // highest cumulative the worker acknowledged
    let mut resyncs_possible = 0;
    for round in 0..ROUNDS {
        let mut proc = NodeProc::start(&data_dir, &["--config", config.to_str().unwrap()]);
        let peer = proc.peer_id();
        let seen = eventually(Duration::from_secs(30), || reachable(&client_node, &peer)).await;
        assert!(seen, "round {round}: the restarted worker never connected with its record");
        let model_id = client_node.attestation().models()[0].clone();

        // Paid requests in the background, each answer reported as it comes; the worker is
        // killed after a random number of them (0–5) plus a random few milliseconds, so the kill
        // lands among the requests however fast the machine serves them (a fixed delay once
        // outlasted all six requests in every round).
        let (answered, mut answers) = tokio::sync::mpsc::channel::<()>(REQUESTS);
        let requests = tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..REQUESTS {
                let body = json!({"model": model_id, "messages": [{"role": "user", "content": format!("r{round} q{i}")}], "max_tokens": 6});
                let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
                if status == 200 && answer["cocoon"]["payment"]["status"] == "paid" {
                    acks.push(answer["cocoon"]["payment"]["cumulative_nanotons"].as_u64().unwrap());
                }
                let _ = answered.send(()).await;
            }
            acks
        });
        for _ in 0..rng.gen_range(0..REQUESTS) {
            if answers.recv().await.is_none() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        let acks = requests.await.unwrap();
        resyncs_possible += usize::from(acks.len() < REQUESTS);
        acknowledged = acks.into_iter().fold(acknowledged, u64::max);

        // The dead worker's store holds every voucher it acknowledged.
        let store = Store::open(&data_dir).unwrap();
        let book = store.payments().unwrap();
        let best = book.channels().unwrap().iter().map(|c| c.channel.cumulative()).max().unwrap_or(0);
        assert!(best >= acknowledged, "round {round}: store has {best}, {acknowledged} was acknowledged");
        drop(book);
        drop(store);
    }
    assert!(acknowledged > 0, "no request was ever paid");
    assert!(resyncs_possible > 0, "no kill ever interrupted a request");

    // A last run without a kill: requests are paid again (the client resynchronised), and the
    // worker settles what it holds once the client starts closing.
    let proc = NodeProc::start(&data_dir, &["--config", config.to_str().unwrap()]);
    let peer = proc.peer_id();
    assert!(eventually(Duration::from_secs(30), || reachable(&client_node, &peer)).await);
    let model_id = client_node.attestation().models()[0].clone();
    for i in 0..3 {
        let body = json!({"model": model_id, "messages": [{"role": "user", "content": format!("final {i}")}], "max_tokens": 6});
        let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["payment"]["status"], "paid", "{answer}");
    }
    let book = client_node.store().payments().unwrap();
    let channel = book.client_channels().unwrap().pop().unwrap();
    let address = channel.address.clone();
    // What is left unclaimed is below the policy's minimum; the client starting to close makes
    // the worker claim it during the dispute window.
    client_wallet.send(chain.as_ref(), &[contract::start_close(&address, 1).unwrap()]).await.unwrap();
    let admin = proc.ready.admin.unwrap();
    let held = || {
        let (_, body) = common::http_get(admin, "/metrics");
        body.lines().any(|l| l.starts_with("cocoon_payments_unclaimed_nanotons") && l.ends_with(" 0"))
    };
    let settled = eventually(Duration::from_secs(60), || async {
        let s = contract::state(chain.as_ref(), &address).await.unwrap().unwrap();
        let vouchers = s.claimed;
        vouchers > 0 && held()
    })
    .await;
    drop(proc);
    let store = Store::open(&data_dir).unwrap();
    let best = store.payments().unwrap().channel(&address).unwrap().unwrap().channel.cumulative();
    let state = contract::state(chain.as_ref(), &address).await.unwrap().unwrap();
    assert!(settled, "the worker did not settle: claimed {} of {best}", state.claimed);
    assert_eq!(state.claimed, best, "the chain paid exactly the best voucher held");
    let claims: Vec<_> = chain
        .history(&address, 1_000)
        .unwrap()
        .into_iter()
        .filter(|t| t.in_op() == Some(op::CLAIM))
        .collect();
    assert!(
        claims.iter().all(|t| t.success),
        "a claim was repeated or wasted: {:?}",
        claims.iter().map(|t| t.exit_code).collect::<Vec<_>>()
    );
    client_node.shutdown().await.unwrap();
    let _ = Arc::strong_count(&chain);
}
