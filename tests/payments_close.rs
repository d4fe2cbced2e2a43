//! Cooperative closes end to end, with real nodes on the shared `LocalChain`: a client's idle
//! channel is closed in one transaction that pays the worker what the vouchers promise and returns
//! the rest of the deposit at once; `cocoon channel close` asks the running node, which closes
//! cooperatively while the worker answers and starts the unilateral close when it does not.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cocoon::chain::local::LocalChain;
use cocoon::chain::wallet::Wallet;
use cocoon::config::{Config, Role};
use cocoon::node::Node;
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::op;
use cocoon_protocol::payments::close::{self, CloseAnswer, CloseProposal};
use cocoon_protocol::payments::settlement::SettlementPolicy;
use cocoon_protocol::payments::voucher::CloseRequest;
use common::inference::{boot, client, metric, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, paying, start_on};
use serde_json::json;
use tycho_types::models::StdAddr;

/// A worker that never claims on its own: whatever the vouchers hold is paid by the close.
fn never_claiming(c: &mut Config) {
    c.payments.settlement = SettlementPolicy {
        claim_threshold: u64::MAX / 2,
        min_claim: u64::MAX / 2,
        idle_after_secs: u64::MAX / 2,
        ..SettlementPolicy::default()
    };
}

/// `n` paid requests from `client`: what they were invoiced and the channel they were paid on.
async fn pay(client: &Node, model_id: &str, n: usize) -> (u64, StdAddr) {
    let (mut invoiced, mut channel) = (0, String::new());
    for i in 0..n {
        let body = json!({"model": model_id, "messages": [{"role": "user", "content": format!("hi {i}")}], "max_tokens": 6});
        let (status, answer) =
            post(client.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["payment"]["status"], "paid", "{answer}");
        invoiced += answer["cocoon"]["amount_nanotons"].as_u64().unwrap();
        channel = answer["cocoon"]["payment"]["channel"].as_str().unwrap().to_owned();
    }
    (invoiced, cocoon::chain::parse_address(&channel).unwrap())
}

/// The channel's transactions by incoming op code.
fn ops(chain: &LocalChain, channel: &StdAddr) -> Vec<Option<u32>> {
    chain.history(channel, 100).unwrap().iter().map(|t| t.in_op()).collect()
}

async fn gone(chain: &LocalChain, channel: &StdAddr) -> bool {
    eventually(Duration::from_secs(60), || async { contract::state(chain, channel).await.unwrap().is_none() })
        .await
}

/// A boot node, a paid worker that never claims on its own and a paying client (1 TON deposits,
/// `idle_close_secs`), on one chain; the client has learned the worker.
struct Net {
    dir: tempfile::TempDir,
    chain: std::sync::Arc<LocalChain>,
    boot: Node,
    worker: Node,
    client: Node,
    model_id: String,
    worker_wallet: Wallet,
    client_wallet: Wallet,
}

impl Net {
    async fn start(idle_close_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let chain = chain();
        let (boot, boot_addr) = boot(dir.path()).await;
        let wdir = dir.path().join("w");
        let mut wc = with_admin(worker(config(&wdir, Role::Worker, Some(&boot_addr)), &model, 1_000_000, 1));
        never_claiming(&mut wc);
        let worker_wallet = paying(&mut wc, &chain, 10 * TON);
        let worker = start_on(wc, &chain).await;
        let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
        cc.payments.deposit_nanotons = TON;
        cc.payments.idle_close_secs = idle_close_secs;
        let client_wallet = paying(&mut cc, &chain, 100 * TON);
        let client = start_on(cc, &chain).await;
        let model_id = wait_for_workers(&client, 1).await;
        Self { dir, chain, boot, worker, client, model_id, worker_wallet, client_wallet }
    }

    fn client_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("c")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_closes_cooperatively_in_one_transaction_and_the_deposit_comes_back() {
    let Net { dir: _dir, chain, boot, worker, client, model_id, worker_wallet, client_wallet } =
        Net::start(2).await;

    let (invoiced, channel) = pay(&client, &model_id, 3).await;
    assert!(invoiced > 0);
    assert!(gone(&chain, &channel).await, "the idle channel was not closed: {:x?}", ops(&chain, &channel));

    // One transaction closed it: no unilateral close, no claim, no dispute window.
    let history = chain.history(&channel, 100).unwrap();
    let closes: Vec<_> = history.iter().filter(|t| t.in_op() == Some(op::COOP_CLOSE)).collect();
    assert_eq!(closes.len(), 1, "{:x?}", ops(&chain, &channel));
    assert!(closes[0].success);
    for other in [op::START_CLOSE, op::FINISH_CLOSE, op::CLAIM] {
        assert!(!ops(&chain, &channel).contains(&Some(other)), "{:x?}", ops(&chain, &channel));
    }
    // It paid the worker exactly what the vouchers promised and refunded the rest of the deposit.
    assert_eq!(closes[0].sent_to(worker_wallet.address()), invoiced);
    assert!(closes[0].sent_to(client_wallet.address()) >= TON - invoiced);
    let worker_balance = chain.balance(worker_wallet.address()).unwrap();
    assert!(worker_balance <= 10 * TON + invoiced && worker_balance > 10 * TON + invoiced - TON / 100);
    let client_balance = chain.balance(client_wallet.address()).unwrap();
    assert!(
        client_balance < 100 * TON - invoiced && client_balance > 100 * TON - invoiced - TON / 20,
        "the client's wallet holds {client_balance}: the deposit minus {invoiced} paid did not come back"
    );
    // Both sides are done with it: the client holds no channel, the worker admits nothing on it.
    let book = client.store().payments().unwrap();
    assert!(book.client_channels().unwrap().is_empty() && book.retired_channels().unwrap().is_empty());
    assert_eq!(metric(&worker, "cocoon_payments_close_proposals_total", "signed").await, 1);
    let stored = worker.store().payments().unwrap().channel(&channel).unwrap().unwrap();
    assert!(stored.channel.co_signed);

    // The next request opens a fresh channel.
    let (_, next) = pay(&client, &model_id, 1).await;
    assert_ne!(next, channel);
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}

/// `cocoon ARGS`: its stdout; it must succeed.
async fn cocoon_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cocoon")).args(args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "cocoon {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_close_asks_the_running_node_and_falls_back_to_the_unilateral_close() {
    let net = Net::start(0).await;
    let cdir = net.client_dir();
    let Net { dir: _dir, chain, boot, worker, client, model_id, .. } = net;
    let data_dir = cdir.to_str().unwrap();

    // Without the node's token the endpoint refuses.
    let admin = client.admin_addr().unwrap();
    let refused = reqwest::Client::new()
        .post(format!("http://{admin}/payments/close?channel=0:{}", "0".repeat(64)))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (invoiced, first) = pay(&client, &model_id, 2).await;
    let out = cocoon_cli(&["channel", "close", &first.to_string(), "--data-dir", data_dir]).await;
    assert!(out.contains("closed cooperatively in one transaction"), "{out}");
    assert!(
        out.contains(&cocoon_protocol::payments::amount::format_ton(invoiced)),
        "the worker's share is shown: {out}"
    );
    assert!(contract::state(chain.as_ref(), &first).await.unwrap().is_none());

    // With the worker gone, the node starts the unilateral close and keeps the channel to finish.
    let (_, second) = pay(&client, &model_id, 1).await;
    assert_ne!(second, first);
    worker.shutdown().await.unwrap();
    let out = cocoon_cli(&["channel", "close", &second.to_string(), "--data-dir", data_dir]).await;
    assert!(out.contains("did not co-sign") && out.contains("unilateral close has started"), "{out}");
    let state = contract::state(chain.as_ref(), &second).await.unwrap().unwrap();
    assert_ne!(state.close_started_at, 0);
    let book = client.store().payments().unwrap();
    assert!(book.client_channels().unwrap().is_empty());
    assert_eq!(book.retired_channels().unwrap().len(), 1);
    for node in [client, boot] {
        node.shutdown().await.unwrap();
    }
}

/// One raw exchange on the close protocol from `from` to `to`: the answer, or `None` if the
/// worker closed the stream without one.
async fn exchange(from: &Node, to: &Node, bytes: &[u8]) -> Option<CloseAnswer> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut stream = from
        .network()
        .streams()
        .open_stream(to.peer_id(), libp2p::StreamProtocol::new(close::PROTOCOL))
        .await
        .unwrap();
    stream.write_all(bytes).await.ok()?;
    stream.flush().await.ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await.ok()?;
    Some(CloseAnswer::decode(&answer).unwrap())
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_co_signs_no_close_that_loses_it_money_and_refusals_change_nothing() {
    let net = Net::start(0).await;
    let cdir = net.client_dir();
    let Net { dir: _dir, boot, worker, client, model_id, .. } = net;
    let (invoiced, channel) = pay(&client, &model_id, 2).await;
    let key = cocoon::store::load_or_create_identity(&cdir).unwrap().try_into_ed25519().unwrap();
    let proposal = |cumulative: u64, key: &libp2p::identity::ed25519::Keypair| {
        let close = CloseRequest { channel: channel.clone(), cumulative, seqno: 9 };
        let client_signature = close.sign(key).unwrap();
        framed(&CloseProposal { close, client_signature }.encode())
    };
    let refusal = |a: Option<CloseAnswer>| match a {
        Some(CloseAnswer::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // The client itself asks to close for less than its vouchers promise.
    let reason = refusal(exchange(&client, &worker, &proposal(invoiced - 1, &key)).await);
    assert!(reason.contains(&format!("holds vouchers for {invoiced}")), "{reason}");
    // A stranger (another peer, its own key) asks to close the client's channel, at the full
    // amount; then sends bytes that are no proposal, and a length beyond the limit (no answer).
    let stranger = libp2p::identity::ed25519::Keypair::generate();
    let reason = refusal(exchange(&boot, &worker, &proposal(invoiced, &stranger)).await);
    assert!(reason.contains("signature"), "{reason}");
    let reason = refusal(exchange(&boot, &worker, &framed(b"close it")).await);
    assert!(reason.contains("does not decode"), "{reason}");
    assert_eq!(exchange(&boot, &worker, &u16::MAX.to_be_bytes()).await, None);

    // None of it changed the channel: the client is still served and pays on it.
    assert_eq!(metric(&worker, "cocoon_payments_close_proposals_total", "refused").await, 3);
    assert_eq!(metric(&worker, "cocoon_payments_close_proposals_total", "signed").await, 0);
    let (more, again) = pay(&client, &model_id, 1).await;
    assert_eq!(again, channel);
    // The whole amount is signed, and after that the worker admits nothing more on the channel.
    match exchange(&client, &worker, &proposal(invoiced + more, &key)).await {
        Some(CloseAnswer::Signed(sig)) => {
            let close = CloseRequest { channel: channel.clone(), cumulative: invoiced + more, seqno: 9 };
            let worker_key = worker.peer_id();
            let public =
                libp2p::identity::PublicKey::try_decode_protobuf(worker_key.as_ref().digest()).unwrap();
            close.verify(&public.try_into_ed25519().unwrap().to_bytes(), &sig).unwrap();
        }
        other => panic!("the full close was not signed: {other:?}"),
    }
    let body = json!({"model": model_id, "messages": [{"role": "user", "content": "more"}], "max_tokens": 4});
    let (status, answer) = post(client.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_ne!(status, 200, "served on a channel whose close is signed: {answer}");
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}
