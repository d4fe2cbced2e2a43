//! A lying worker against a real client node. The worker is a real node on the network, with a
//! SIMULATED attestation record it signs itself, answering `/cocoon/inference/2` over real Noise
//! sessions with correct text and receipts, but rewriting every payment reply: an inflated `Paid`,
//! an `Unpaid` claiming more than the client owes, an `Unpaid` with a `u64::MAX` seqno, and a new
//! payout address (a republished record) before every request. The client pays through its
//! OpenAI API as usual: what it signs stays equal to the receipts it verified, its channels and
//! deposits stay within `payments.max_channels` and `payments.max_total_deposit_nanotons`, and it
//! keeps answering.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocoon::attestation::provider::SimulatedTee;
use cocoon::attestation::service::{ATTESTATION_TOPIC, OwnRecord};
use cocoon::chain::friendly;
use cocoon::chain::wallet::Wallet;
use cocoon::config::Role;
use cocoon::inference::session;
use cocoon::node::Node;
use cocoon::store::{load_or_create_identity, load_or_create_noise_key};
use cocoon_protocol::attestation::record::{ModelOffer, PaidTerms, PaymentTerms};
use cocoon_protocol::inference::messages::{
    AnswerDigest, ClientFrame, Event, FinishReason, MAX_CLIENT_FRAME, MAX_REQUEST, PROTOCOL, Request,
    ServerFrame,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};
use cocoon_protocol::payments::voucher::SignedVoucher;
use common::inference::{boot, client, post};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, paying, start_on};
use futures::StreamExt;
use libp2p::StreamProtocol;
use serde_json::json;

const MODEL: &str = "liar@sha256:00";
const PRICE: u64 = 1_000_000;
const REQUESTS: u64 = 8;

/// A record for the liar paying out to `payout`, issued at `issued_at`.
fn record(dir: &std::path::Path, payout: &str, issued_at: u64) -> Vec<u8> {
    let own = OwnRecord {
        identity: load_or_create_identity(dir).unwrap(),
        noise_public: load_or_create_noise_key(dir).unwrap().public,
        payout_address: payout.to_owned(),
        terms: PaymentTerms::Paid(PaidTerms {
            network: "local".into(),
            min_deposit: 0,
            min_dispute_window: 60,
            contract_version: 2,
        }),
        offers: vec![ModelOffer {
            model_id: MODEL.into(),
            price_prompt_per_1k: PRICE,
            price_completion_per_1k: PRICE,
            context_length: 4096,
            max_concurrent: 4,
        }],
        tee: Arc::new(SimulatedTee::new(libp2p::identity::ed25519::Keypair::generate())),
        gpus: std::sync::Arc::new(cocoon::attestation::gpu_provider::NoGpus),
        validity: Duration::from_secs(3600),
    };
    own.build(issued_at).unwrap().encode()
}

/// Publish records for `liar` paying out to `payout` (each a second newer than the last, so each
/// is a new gossip message) until `client` holds one.
async fn announce(liar: &Node, client: &Node, dir: &std::path::Path, payout: &str, issued: &mut u64) {
    let seen = eventually(Duration::from_secs(30), || {
        *issued += 1;
        let bytes = record(dir, payout, *issued);
        async move {
            liar.network().serve_record(Some(bytes.clone())).await.unwrap();
            let _ = liar.network().publish(ATTESTATION_TOPIC, bytes).await;
            client
                .attestation()
                .record_of(&liar.peer_id())
                .is_some_and(|r| r.record().payout_address == payout)
        }
    })
    .await;
    assert!(seen, "the client never saw the liar's record paying {payout}");
}

/// Serve one request: correct text and receipt, then the `n`th kind of lie about the payment.
/// Returns the receipt's amount.
async fn serve_one(stream: libp2p::Stream, dir: &std::path::Path, n: u64) -> u64 {
    let identity = load_or_create_identity(dir).unwrap();
    let noise = load_or_create_noise_key(dir).unwrap();
    let mut s = session::respond(stream, &noise.private).await.unwrap();
    let request_bytes = s.recv(MAX_REQUEST).await.unwrap();
    let request = Request::decode(&request_bytes).unwrap();
    let event = Event::Text { text: format!("answer {n}"), logprob: None };
    s.send(&ServerFrame::Event(event.clone()).encode()).await.unwrap();
    let mut digest = AnswerDigest::default();
    digest.update(&event);
    let usage = Usage { prompt_tokens: 10, completion_tokens: 1 };
    let amount = amount_due(PRICE, PRICE, usage);
    let receipt = Receipt {
        worker: identity.public().to_peer_id(),
        model_id: MODEL.into(),
        engine: "liar".into(),
        request_id: request.request_id,
        request_hash: sha256(&request_bytes),
        response_hash: digest.finish(),
        usage,
        price_prompt_per_1k: PRICE,
        price_completion_per_1k: PRICE,
        amount,
        issued_at: cocoon::clock::unix_now(),
    };
    let done =
        ServerFrame::Done { finish_reason: FinishReason::Stop, receipt: receipt.sign(&identity).unwrap() };
    s.send(&done.encode()).await.unwrap();
    let Ok(ClientFrame::Voucher(bytes)) = ClientFrame::decode(&s.recv(MAX_CLIENT_FRAME).await.unwrap())
    else {
        panic!("no voucher")
    };
    let v = SignedVoucher::from_bytes(&bytes).unwrap();
    let lie = match n % 4 {
        0 => ServerFrame::Paid { cumulative: 1_000_000_000_000_000, seqno: v.voucher.seqno },
        1 => ServerFrame::Unpaid { cumulative: 1_000_000_000_000_000, seqno: 3, message: "pay more".into() },
        2 => ServerFrame::Unpaid { cumulative: 0, seqno: u64::MAX, message: "lost it".into() },
        _ => ServerFrame::Paid { cumulative: v.voucher.cumulative, seqno: v.voucher.seqno },
    };
    s.send(&lie.encode()).await.unwrap();
    if n % 4 == 2 {
        // The client corrects its voucher once: acknowledge that one honestly.
        if let Ok(Ok(ClientFrame::Voucher(bytes))) =
            s.recv(MAX_CLIENT_FRAME).await.map(|b| ClientFrame::decode(&b))
        {
            let v = SignedVoucher::from_bytes(&bytes).unwrap();
            assert_eq!(v.voucher.seqno, u64::MAX, "the seqno saturates");
            let paid = ServerFrame::Paid { cumulative: v.voucher.cumulative, seqno: v.voucher.seqno };
            s.send(&paid.encode()).await.unwrap();
        }
    }
    let _ = s.close().await;
    amount
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_worker_cannot_raise_what_the_client_signs_or_lock_more_than_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let ldir = dir.path().join("liar");
    let liar = start_on(config(&ldir, Role::Client, Some(&boot_addr)), &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    paying(&mut cc, &chain, 100 * TON);
    cc.payments.deposit_nanotons = TON;
    cc.payments.max_channels = 3;
    cc.payments.max_total_deposit_nanotons = 3 * TON;
    let client_node = start_on(cc, &chain).await;
    let api = client_node.api_addr().unwrap();

    let mut incoming = liar.network().streams().accept(StreamProtocol::new(PROTOCOL)).unwrap();
    // Records must not be issued in the future.
    let mut issued = cocoon::clock::unix_now() - 600;
    let (mut receipts, mut refused) = (0u64, 0);
    for n in 0..REQUESTS {
        // A new payout address before every request.
        let payout = friendly(Wallet::from_seed(&[n as u8 + 1; 32]).unwrap().address(), false);
        announce(&liar, &client_node, &ldir, &payout, &mut issued).await;
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": format!("q{n}")}], "max_tokens": 4});
        let mut asked =
            tokio::spawn(async move { post(api, "/v1/chat/completions", body.to_string()).await });
        let (status, answer) = tokio::select! {
            s = incoming.next() => {
                let (_, stream) = s.unwrap();
                receipts += serve_one(stream, &ldir, n).await;
                asked.await.unwrap()
            }
            r = &mut asked => r.unwrap(),
        };
        eprintln!("request {n}: {status} {}", answer["cocoon"]["payment"]);
        match status {
            200 => {
                let paid = answer["cocoon"]["payment"]["status"].as_str().unwrap().to_owned();
                assert_eq!(paid == "paid", n % 4 >= 2, "request {n}: {answer}");
            }
            402 => {
                assert!(answer.to_string().contains("max_channels"), "request {n}: {answer}");
                refused += 1;
            }
            _ => panic!("request {n}: {status} {answer}"),
        }
        let book = client_node.store().payments().unwrap();
        let mut all = book.client_channels().unwrap();
        all.extend(book.retired_channels().unwrap());
        assert!(all.len() <= 3, "request {n}: {} channels", all.len());
        let owed: u64 = all.iter().map(|c| c.owed).sum();
        assert_eq!(owed, receipts, "request {n}: the client owes exactly its verified receipts");
        assert!(all.iter().all(|c| c.cumulative <= c.owed), "request {n}");
        let mut deposited = 0;
        for c in &all {
            deposited += cocoon::payments::contract::state(chain.as_ref(), &c.address)
                .await
                .unwrap()
                .map_or(0, |s| s.deposited);
        }
        assert!(deposited <= 3 * TON, "request {n}: {deposited} deposited");
    }
    assert!(refused > 0, "the channel limit was never reached");
    let (status, _) = common::inference::get(api, "/v1/models").await;
    assert_eq!(status, 200, "the client still answers");
    for node in [client_node, liar, boot] {
        node.shutdown().await.unwrap();
    }
}
