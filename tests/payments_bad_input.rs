//! Bad payment input and a failing chain, against a real worker over raw Noise sessions: a
//! request on an undeployed channel, a malformed voucher, a voucher for another channel, a
//! voucher for the wrong amount (the client is then refused), and the worker's chain backend
//! going down (claims fail, are counted, and land once it is back) — with nothing lost.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cocoon::chain::local::LocalChain;
use cocoon::config::{ChainKind, Role};
use cocoon::inference::session::Session;
use cocoon::payments::contract;
use cocoon::store::load_or_create_identity;
use cocoon_protocol::inference::messages::{
    ChatMessage, ClientFrame, ErrorCode, MAX_SERVER_FRAME, Prompt, Request, Role as ChatRole, Sampling,
    ServerFrame,
};
use cocoon_protocol::inference::receipt::Receipt;
use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use cocoon_protocol::payments::voucher::Voucher;
use common::inference::{boot, client, metric, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, open, paying, start_on};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn request(model: &str, channel: &ChannelParams) -> Request {
    Request {
        request_id: rand::random(),
        model_id: model.into(),
        prompt: Prompt::Chat(vec![ChatMessage::text(ChatRole::User, "pay me")]),
        max_tokens: 3,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: u64::MAX,
        channel: Some(channel.clone()),
    }
}

/// Serve the chain until the returned sender fires (a graceful stop closes idle keep-alive
/// connections too, so the worker's HTTP client really loses the backend).
async fn serve_chain(
    chain: &std::sync::Arc<LocalChain>,
    listener: TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let chain = chain.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let _ = cocoon::chain::serve::serve(chain, listener, None, shutdown).await;
    });
    (stop, task)
}

/// Read to the receipt; the invoiced amount.
async fn to_receipt(s: &mut Session<libp2p::Stream>, mut frame: ServerFrame) -> u64 {
    loop {
        match frame {
            ServerFrame::Event(_) => {}
            ServerFrame::Done { receipt, .. } => return Receipt::open(&receipt).unwrap().amount,
            other => panic!("unexpected {other:?}"),
        }
        frame = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
    }
}

async fn reply(s: &mut Session<libp2p::Stream>, voucher: Vec<u8>) -> ServerFrame {
    s.send(&ClientFrame::Voucher(voucher).encode()).await.unwrap();
    ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vouchers_and_a_failing_chain_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chain_addr = listener.local_addr().unwrap();
    let (stop_chain, chain_server) = serve_chain(&chain, listener).await;
    let (boot, boot_addr) = boot(dir.path()).await;

    // The worker reaches the chain over HTTP (so the backend can fail). It claims only when the
    // client closes the channel, so the claim happens exactly when the test wants it.
    let mut wc = with_admin(worker(
        config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)),
        &model,
        1_000_000,
        2,
    ));
    paying(&mut wc, &chain, 10 * TON);
    wc.payments.chain = ChainKind::Toncenter;
    wc.payments.toncenter_url = format!("http://{chain_addr}/api/v2");
    wc.payments.settlement = SettlementPolicy {
        claim_threshold: u64::MAX / 2,
        min_claim: 1,
        idle_after_secs: u64::MAX / 2,
        ..SettlementPolicy::default()
    };
    let worker = start_on(wc, &chain).await;
    let cdir = dir.path().join("c");
    let mut cc = client(config(&cdir, Role::Client, Some(&boot_addr)));
    let client_wallet = paying(&mut cc, &chain, 100 * TON);
    let client = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client, 1).await;

    // The raw client's channel, deployed from the client node's wallet, keyed to its identity.
    let identity = load_or_create_identity(&cdir).unwrap().try_into_ed25519().unwrap();
    let worker_key = cocoon::payments::peer_key(&worker.peer_id()).unwrap();
    let record = client.attestation().record_of(&worker.peer_id()).unwrap();
    let params = ChannelParams {
        client_key: identity.public().to_bytes(),
        worker_key,
        client: client_wallet.address().clone(),
        worker: cocoon::chain::parse_address(&record.record().payout_address).unwrap(),
        dispute_window: 86_400,
        seed: 42,
    };
    let address = params.address().unwrap();

    // 1. A channel that is not deployed: refused before any work.
    let (_, first) = open(&client, &worker, &request(&model_id, &params)).await;
    assert!(
        matches!(&first, ServerFrame::Error { code: ErrorCode::PaymentRequired, message } if message.contains("not deployed")),
        "{first:?}"
    );
    client_wallet.send(chain.as_ref(), &[contract::deploy(&params, TON, 0).unwrap()]).await.unwrap();

    // 2. A malformed voucher is refused with what the worker holds; a correct one then pays.
    let (mut s, first) = open(&client, &worker, &request(&model_id, &params)).await;
    let amount = to_receipt(&mut s, first).await;
    let frame = reply(&mut s, b"not a voucher".to_vec()).await;
    assert!(
        matches!(&frame, ServerFrame::Unpaid { cumulative: 0, seqno: 0, message } if message.contains("malformed")),
        "{frame:?}"
    );
    let v1 = Voucher { channel: address.clone(), cumulative: amount, seqno: 1 }.sign(&identity).unwrap();
    assert_eq!(reply(&mut s, v1.to_bytes()).await, ServerFrame::Paid { cumulative: amount, seqno: 1 });
    drop(s);

    // 3. A voucher for another channel, then one for the wrong amount: the request stays unpaid
    //    and the client is refused from then on.
    let (mut s, first) = open(&client, &worker, &request(&model_id, &params)).await;
    let second = to_receipt(&mut s, first).await;
    let mut elsewhere = params.clone();
    elsewhere.seed = 43;
    let wrong_channel =
        Voucher { channel: elsewhere.address().unwrap(), cumulative: amount + second, seqno: 2 };
    let frame = reply(&mut s, wrong_channel.sign(&identity).unwrap().to_bytes()).await;
    assert!(matches!(&frame, ServerFrame::Unpaid { cumulative, .. } if *cumulative == amount), "{frame:?}");
    let short = Voucher { channel: address.clone(), cumulative: amount + second - 1, seqno: 2 };
    let frame = reply(&mut s, short.sign(&identity).unwrap().to_bytes()).await;
    assert!(
        matches!(&frame, ServerFrame::Unpaid { message, .. } if message.contains("expected")),
        "{frame:?}"
    );
    drop(s);
    let refused = eventually(Duration::from_secs(10), || async {
        let (_, first) = open(&client, &worker, &request(&model_id, &params)).await;
        matches!(&first, ServerFrame::Error { code: ErrorCode::PaymentRequired, message } if message.contains("unpaid"))
    })
    .await;
    assert!(refused, "a client that did not pay is served again");
    // The operator sees who owes what on the admin endpoint (and can forgive it).
    let admin = worker.admin_addr().unwrap();
    let (status, body) =
        tokio::task::spawn_blocking(move || common::http_get(admin, "/payments")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["debts"][0]["client_key"], hex::encode(identity.public().to_bytes()), "{body}");
    assert_eq!(report["debts"][0]["owed_nanotons"].as_u64(), Some(second), "{body}");
    assert_eq!(report["totals"]["owed_nanotons"].as_u64(), Some(second), "{body}");
    assert_eq!(metric(&worker, "cocoon_payments_vouchers_total", "accepted").await, 1);
    assert_eq!(metric(&worker, "cocoon_payments_vouchers_total", "malformed").await, 1);
    assert!(metric(&worker, "cocoon_payments_vouchers_total", "rejected").await >= 2);

    // 4. The worker's chain backend goes down, and meanwhile the client starts closing (on the
    //    chain itself): the worker's settlement fails and is counted, the voucher stays; once the
    //    backend is back the worker sees the close and its claim lands.
    assert_eq!(contract::state(chain.as_ref(), &address).await.unwrap().unwrap().claimed, 0);
    stop_chain.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), chain_server).await.unwrap().unwrap();
    client_wallet.send(chain.as_ref(), &[contract::start_close(&address, 1).unwrap()]).await.unwrap();
    let failing = eventually(Duration::from_secs(15), || async {
        metric(&worker, "cocoon_payments_chain_errors_total", "").await > 0
    })
    .await;
    assert!(failing, "the worker never noticed the chain was down");
    assert_eq!(contract::state(chain.as_ref(), &address).await.unwrap().unwrap().claimed, 0);
    let listener = TcpListener::bind(chain_addr).await.unwrap();
    let _chain_server = serve_chain(&chain, listener).await;
    let landed = eventually(Duration::from_secs(30), || async {
        contract::state(chain.as_ref(), &address).await.unwrap().unwrap().claimed == amount
    })
    .await;
    assert!(landed, "the claim never landed after the chain came back");
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}
