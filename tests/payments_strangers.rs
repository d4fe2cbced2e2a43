//! Money among strangers, from each side. A malicious client against a real worker node over raw
//! Noise sessions: many concurrent requests it never pays for, then a fresh identity; the
//! worker's unpaid exposure stays within `payments.exposure` (asserted in nanotons). A malicious
//! worker against the client's real payment state (sled store, `LocalChain`, wallet): inflated
//! acknowledgements, refusals claiming more than owed, a `u64::MAX` seqno and a payout address
//! changed on every request; the client signs exactly what its verified receipts add up to and
//! stays within its channel and deposit limits. And a cancelled answer is invoiced and paid, an
//! abandoned one owed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocoon::chain::wallet::Wallet;
use cocoon::chain::{SharedChain, friendly};
use cocoon::config::Role;
use cocoon::inference::session::Session;
use cocoon::node::Node;
use cocoon::payments::client::{ClientPayments, ClientTerms};
use cocoon::payments::contract;
use cocoon::store::{Store, load_or_create_identity};
use cocoon_protocol::inference::messages::{
    ChatMessage, ClientFrame, ErrorCode, FinishReason, MAX_SERVER_FRAME, Prompt, Request, Role as ChatRole,
    Sampling, ServerFrame,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage};
use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::exposure::ExposureLimits;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use cocoon_protocol::payments::voucher::Voucher;
use common::chain::keypair;
use common::inference::{boot, client, metric, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::config;
use common::payments::{TON, chain, open, paying, start_on};
use libp2p::PeerId;

/// Completion price per 1k tokens; prompts are free, so a 3-token request's worst case is 3,000.
const PRICE: u64 = 1_000_000;
const WORST: u64 = 3_000;
const PER_CLIENT: u64 = 10_000;
const TOTAL: u64 = 15_000;

fn request(model: &str, channel: &ChannelParams) -> Request {
    Request {
        request_id: rand::random(),
        model_id: model.into(),
        prompt: Prompt::Chat(vec![ChatMessage::text(ChatRole::User, "free lunch")]),
        max_tokens: 3,
        sampling: Sampling::default(),
        shape: Default::default(),
        max_price: u64::MAX,
        channel: Some(channel.clone()),
    }
}

/// A client node with a deployed channel to `worker`; the channel's parameters.
async fn stranger(
    dir: &std::path::Path,
    boot: &libp2p::Multiaddr,
    chain: &Arc<cocoon::chain::local::LocalChain>,
    worker: &Node,
) -> (Node, ChannelParams) {
    let mut cc = client(config(dir, Role::Client, Some(boot)));
    let wallet = paying(&mut cc, chain, 100 * TON);
    let node = start_on(cc, chain).await;
    wait_for_workers(&node, 1).await;
    let identity = load_or_create_identity(dir).unwrap().try_into_ed25519().unwrap();
    let record = node.attestation().record_of(&worker.peer_id()).unwrap();
    let params = ChannelParams {
        client_key: identity.public().to_bytes(),
        worker_key: cocoon::payments::peer_key(&worker.peer_id()).unwrap(),
        client: wallet.address().clone(),
        worker: cocoon::chain::parse_address(&record.record().payout_address).unwrap(),
        dispute_window: 86_400,
        seed: rand::random(),
    };
    wallet.send(chain.as_ref(), &[contract::deploy(&params, TON, 0).unwrap()]).await.unwrap();
    (node, params)
}

/// Open requests from `client` and hold them unpaid until one is refused; the sessions held and
/// the refusal.
async fn hold_until_refused(
    client: &Node,
    worker: &Node,
    model: &str,
    params: &ChannelParams,
) -> (Vec<Session<libp2p::Stream>>, ErrorCode, String) {
    let mut held = Vec::new();
    loop {
        let (s, first) = open(client, worker, &request(model, params)).await;
        let in_flight = metric(worker, "cocoon_payments_unpaid_in_flight_nanotons", "").await;
        assert!(in_flight <= TOTAL, "exposure {in_flight} passed the total cap");
        match first {
            ServerFrame::Event(_) => held.push(s),
            ServerFrame::Error { code, message } => return (held, code, message),
            other => panic!("unexpected first frame {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_pays_takes_at_most_the_configured_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, PRICE, 32));
    wc.worker.models[0].price_prompt_per_1k = 0;
    wc.payments.exposure = ExposureLimits { per_client: PER_CLIENT, total: TOTAL };
    paying(&mut wc, &chain, 10 * TON);
    let worker = start_on(wc, &chain).await;
    let (a, pa) = stranger(&dir.path().join("a"), &boot_addr, &chain, &worker).await;
    let model_id = wait_for_workers(&a, 1).await;

    // Client A opens request after request and pays none: three fit its cap, the fourth is refused.
    let (held_a, code, message) = hold_until_refused(&a, &worker, &model_id, &pa).await;
    assert_eq!(held_a.len() as u64, PER_CLIENT / WORST, "{message}");
    assert_eq!(code, ErrorCode::PaymentRequired, "{message}");
    assert!(message.contains("per client"), "{message}");
    assert_eq!(metric(&worker, "cocoon_payments_unpaid_in_flight_nanotons", "").await, 3 * WORST);

    // A fresh identity gets its own cap, but not past the worker's total: Busy, not served.
    let (b, pb) = stranger(&dir.path().join("b"), &boot_addr, &chain, &worker).await;
    let (held_b, code, message) = hold_until_refused(&b, &worker, &model_id, &pb).await;
    assert_eq!(held_b.len() as u64, (TOTAL - 3 * WORST) / WORST, "{message}");
    assert_eq!(code, ErrorCode::Busy, "{message}");
    assert_eq!(metric(&worker, "cocoon_payments_unpaid_in_flight_nanotons", "").await, TOTAL);

    // Both walk away: what they took is recorded as debt (within each cap), nothing stays
    // reserved, and neither is served again.
    drop((held_a, held_b));
    let settled = common::inproc::eventually(Duration::from_secs(30), || async {
        metric(&worker, "cocoon_payments_unpaid_in_flight_nanotons", "").await == 0
    })
    .await;
    assert!(settled, "reservations were never released");
    let admin = worker.admin_addr().unwrap();
    let (_, body) = tokio::task::spawn_blocking(move || common::http_get(admin, "/payments")).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    for debt in report["debts"].as_array().unwrap() {
        assert!(debt["owed_nanotons"].as_u64().unwrap() <= PER_CLIENT, "{body}");
    }
    assert!(report["totals"]["owed_nanotons"].as_u64().unwrap() <= TOTAL, "{body}");
    let (_, first) = open(&a, &worker, &request(&model_id, &pa)).await;
    assert!(matches!(&first, ServerFrame::Error { message, .. } if message.contains("unpaid")), "{first:?}");
    for node in [a, b, worker, boot] {
        node.shutdown().await.unwrap();
    }
}

/// A paying client that stops reading sends `Cancel` and pays the receipt for what it was sent; one
/// that just goes away owes that as a debt and is refused: walking away is never free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_answer_is_invoiced_and_an_abandoned_one_is_owed() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, PRICE, 4));
    wc.worker.models[0].price_prompt_per_1k = 0;
    paying(&mut wc, &chain, 10 * TON);
    let worker = start_on(wc, &chain).await;
    let cdir = dir.path().join("a");
    let (a, pa) = stranger(&cdir, &boot_addr, &chain, &worker).await;
    let model_id = wait_for_workers(&a, 1).await;
    let identity = load_or_create_identity(&cdir).unwrap().try_into_ed25519().unwrap();
    let long = |params: &ChannelParams| Request { max_tokens: 400, ..request(&model_id, params) };

    // Cancel after the first chunk: the rest of the answer stops, and the receipt covers the
    // chunks sent (at least the first), at the attested price.
    let (mut s, first) = open(&a, &worker, &long(&pa)).await;
    assert!(matches!(first, ServerFrame::Event(_)), "{first:?}");
    s.send(&ClientFrame::Cancel.encode()).await.unwrap();
    let mut chunks = 1u32;
    let (finish_reason, receipt) = loop {
        match ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap() {
            ServerFrame::Event(_) => chunks += 1,
            ServerFrame::Done { finish_reason, receipt } => {
                break (finish_reason, Receipt::open(&receipt).unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(finish_reason, FinishReason::Cancelled);
    assert!(chunks < 400, "generation went on to the end");
    assert_eq!(receipt.usage.completion_tokens, chunks, "one token per chunk sent");
    assert_eq!(receipt.amount, amount_due(0, PRICE, receipt.usage));
    let v = Voucher { channel: pa.address().unwrap(), cumulative: receipt.amount, seqno: 1 }
        .sign(&identity)
        .unwrap();
    s.send(&ClientFrame::Voucher(v.to_bytes()).encode()).await.unwrap();
    let paid = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
    assert_eq!(paid, ServerFrame::Paid { cumulative: receipt.amount, seqno: 1 });
    drop(s);

    // A cancel that crosses the end of the answer (one token: `Done` is on its way) is no protocol
    // violation: whichever receipt comes is paid, and the client is not blocked.
    let mut owed = receipt.amount;
    for seqno in 2..5 {
        let (mut s, first) = open(&a, &worker, &Request { max_tokens: 1, ..request(&model_id, &pa) }).await;
        // A token whose text is still an incomplete character sends no event: `Done` may come first,
        // and the cancel then arrives after the end for certain.
        let mut frame = first;
        s.send(&ClientFrame::Cancel.encode()).await.unwrap();
        let receipt = loop {
            match frame {
                ServerFrame::Event(_) => {}
                ServerFrame::Done { receipt, .. } => break Receipt::open(&receipt).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
            frame = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
        };
        assert!(receipt.usage.completion_tokens <= 1, "{receipt:?}");
        owed += receipt.amount;
        let v = Voucher { channel: pa.address().unwrap(), cumulative: owed, seqno }.sign(&identity).unwrap();
        s.send(&ClientFrame::Voucher(v.to_bytes()).encode()).await.unwrap();
        let paid = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
        assert_eq!(paid, ServerFrame::Paid { cumulative: owed, seqno });
    }

    // Walk away after the first chunk instead: the worker records what was sent as a debt.
    let (s, first) = open(&a, &worker, &long(&pa)).await;
    assert!(matches!(first, ServerFrame::Event(_)), "{first:?}");
    drop(s);
    let admin = worker.admin_addr().unwrap();
    let owed = common::inproc::eventually(Duration::from_secs(30), || async move {
        let (_, body) =
            tokio::task::spawn_blocking(move || common::http_get(admin, "/payments")).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        report["totals"]["owed_nanotons"]
            .as_u64()
            .is_some_and(|o| o >= amount_due(0, PRICE, Usage { prompt_tokens: 0, completion_tokens: 1 }))
    })
    .await;
    assert!(owed, "walking away left no debt");
    let (_, first) = open(&a, &worker, &request(&model_id, &pa)).await;
    assert!(matches!(&first, ServerFrame::Error { message, .. } if message.contains("unpaid")), "{first:?}");
    for node in [a, worker, boot] {
        node.shutdown().await.unwrap();
    }
}

/// The client terms these tests pay with: 1 TON channels, at most 3 and 3 TON in all.
fn terms() -> ClientTerms {
    ClientTerms {
        deposit: TON,
        dispute_window: 3_600,
        confirm_timeout: Duration::from_secs(5),
        max_channels: 3,
        max_total_deposit: 3 * TON,
        idle_close: None,
        network: "local".into(),
    }
}

fn payments(dir: &std::path::Path, chain: &Arc<cocoon::chain::local::LocalChain>) -> ClientPayments {
    let wallet = Wallet::from_seed(&[9; 32]).unwrap();
    chain.fund(wallet.address(), 100 * TON).unwrap();
    let book = Store::open(dir).unwrap().payments().unwrap();
    let shared: SharedChain = chain.clone();
    ClientPayments::new(book, shared, wallet, keypair(9), terms(), SettlementPolicy::default())
}

#[tokio::test]
async fn a_malicious_worker_cannot_make_the_client_sign_more_or_lock_more() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let p = payments(dir.path(), &chain);
    let worker = PeerId::from_public_key(&libp2p::identity::PublicKey::from(keypair(8).public()));
    let payouts = [
        friendly(Wallet::from_seed(&[1; 32]).unwrap().address(), false),
        friendly(Wallet::from_seed(&[2; 32]).unwrap().address(), false),
    ];
    let (mut receipts, mut limited) = (0u64, 0);
    for i in 0..12u64 {
        // The worker changes its payout address on every request.
        let mut guard = match p.channel(&worker, &payouts[(i % 2) as usize], 1_000).await {
            Ok(g) => g,
            Err(e) => {
                assert!(e.to_string().contains("max_channels"), "{e}");
                limited += 1;
                continue;
            }
        };
        let amount = 700 + i;
        let owed_before = guard.channel.owed;
        let v = p.sign(&mut guard, amount).await.unwrap();
        receipts += amount;
        assert_eq!(v.voucher.cumulative, owed_before + amount);
        match i % 4 {
            0 => {
                assert!(p.acknowledged(&guard, 1_000_000_000_000_000).is_err(), "an inflated Paid is refused")
            }
            1 => {
                let e = p.resync(&mut guard, amount, 1_000_000_000_000_000, 5).await.unwrap_err();
                assert!(e.to_string().contains("verified receipts"), "{e}");
            }
            2 => {
                let fixed = p.resync(&mut guard, amount, 0, u64::MAX).await.unwrap();
                assert_eq!((fixed.voucher.cumulative, fixed.voucher.seqno), (amount, u64::MAX));
            }
            _ => p.acknowledged(&guard, v.voucher.cumulative).unwrap(),
        }
        assert!(guard.channel.cumulative <= guard.channel.owed);
        drop(guard);
    }
    assert!(limited > 0, "the channel limit was never reached");
    let mut all = p.book().client_channels().unwrap();
    all.extend(p.book().retired_channels().unwrap());
    assert!(all.len() <= 3, "{} channels", all.len());
    let owed: u64 = all.iter().map(|c| c.owed).sum();
    assert_eq!(owed, receipts, "the client owes exactly its verified receipts");
    assert!(all.iter().all(|c| c.cumulative <= c.owed));
    let mut deposited = 0;
    for c in &all {
        deposited += contract::state(chain.as_ref(), &c.address).await.unwrap().map_or(0, |s| s.deposited);
    }
    assert!(deposited <= 3 * TON, "deposited {deposited}");

    // After the dispute window the retired channels are finished and their deposits come back;
    // new channels can be opened again.
    chain.advance(3_601).unwrap();
    p.channel(&worker, &payouts[0], 1_000).await.unwrap();
    assert!(p.book().retired_channels().unwrap().len() < 2);
}

#[tokio::test]
async fn a_top_up_covers_every_request_in_flight_on_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let p = payments(dir.path(), &chain);
    let worker = PeerId::from_public_key(&libp2p::identity::PublicKey::from(keypair(8).public()));
    let payout = friendly(Wallet::from_seed(&[1; 32]).unwrap().address(), false);
    let worst = 6 * TON / 10;
    let deposited = |address| {
        let chain = chain.clone();
        async move { contract::state(chain.as_ref(), &address).await.unwrap().unwrap().deposited }
    };
    // The first request fits the first deposit (1 TON) alone.
    let first = p.channel(&worker, &payout, worst).await.unwrap();
    let address = first.channel.address.clone();
    assert_eq!(deposited(address.clone()).await, TON);
    let first = first.into_in_flight().unwrap();
    // A second while the first is in flight: the worker holds both worst cases (1.2 TON), so the
    // deposit is topped up to twice that before the second is sent.
    let second = p.channel(&worker, &payout, worst).await.unwrap();
    assert_eq!(second.channel.address, address);
    assert_eq!(deposited(address.clone()).await, 4 * worst);
    assert!(second.channel.remaining() >= 2 * worst);
    drop((first, second));
    // Once they are done, one more needs no top-up.
    p.channel(&worker, &payout, worst).await.unwrap();
    assert_eq!(deposited(address).await, 4 * worst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_the_published_minimum_deposit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, PRICE, 4));
    wc.payments.min_deposit_nanotons = 2 * TON;
    paying(&mut wc, &chain, 10 * TON);
    let worker = start_on(wc, &chain).await;
    // The stranger deploys a 1 TON channel anyway and asks over a raw session.
    let (a, params) = stranger(&dir.path().join("a"), &boot_addr, &chain, &worker).await;
    let model_id = wait_for_workers(&a, 1).await;
    let (_, first) = open(&a, &worker, &request(&model_id, &params)).await;
    let ServerFrame::Error { code, message } = first else { panic!("served: {first:?}") };
    assert_eq!(code, ErrorCode::PaymentRequired, "{message}");
    assert!(message.contains("deposit of at least 2000000000"), "{message}");
    assert_eq!(metric(&worker, "cocoon_payments_unpaid_in_flight_nanotons", "").await, 0);
    for node in [a, worker, boot] {
        node.shutdown().await.unwrap();
    }
}

/// A chain that counts the channel-state reads made through it.
#[derive(Debug)]
struct Counting {
    inner: Arc<cocoon::chain::local::LocalChain>,
    reads: std::sync::atomic::AtomicUsize,
}

impl cocoon::chain::Chain for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn account(
        &self,
        a: &tycho_types::models::StdAddr,
    ) -> futures::future::BoxFuture<'_, Result<cocoon::chain::AccountInfo, cocoon::chain::ChainError>> {
        self.inner.account(a)
    }
    fn run_get_method<'a>(
        &'a self,
        a: &'a tycho_types::models::StdAddr,
        m: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<cocoon::chain::GetMethodResult, cocoon::chain::ChainError>>
    {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.run_get_method(a, m)
    }
    fn send_external(
        &self,
        m: tycho_types::cell::Cell,
    ) -> futures::future::BoxFuture<'_, Result<(), cocoon::chain::ChainError>> {
        self.inner.send_external(m)
    }
    fn transactions<'a>(
        &'a self,
        a: &'a tycho_types::models::StdAddr,
        limit: usize,
    ) -> futures::future::BoxFuture<'a, Result<Vec<cocoon::chain::TxSummary>, cocoon::chain::ChainError>>
    {
        self.inner.transactions(a, limit)
    }
    fn now(&self) -> futures::future::BoxFuture<'_, Result<u64, cocoon::chain::ChainError>> {
        self.inner.now()
    }
}

#[tokio::test]
async fn requests_on_a_channel_do_not_read_its_state_from_the_chain_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let local = chain();
    let wallet = Wallet::from_seed(&[9; 32]).unwrap();
    local.fund(wallet.address(), 100 * TON).unwrap();
    let counting = Arc::new(Counting { inner: local.clone(), reads: Default::default() });
    let shared: SharedChain = counting.clone();
    let book = Store::open(dir.path()).unwrap().payments().unwrap();
    let p = ClientPayments::new(book, shared, wallet, keypair(9), terms(), SettlementPolicy::default());
    let worker = PeerId::from_public_key(&libp2p::identity::PublicKey::from(keypair(8).public()));
    let payout = friendly(Wallet::from_seed(&[1; 32]).unwrap().address(), false);
    p.channel(&worker, &payout, 1_000).await.unwrap();
    let after_open = counting.reads.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..20 {
        let mut guard = p.channel(&worker, &payout, 1_000).await.unwrap();
        p.sign(&mut guard, 10).await.unwrap();
    }
    let reads = counting.reads.load(std::sync::atomic::Ordering::SeqCst) - after_open;
    assert_eq!(reads, 0, "20 requests on a channel just read read its state {reads} more times");
}
