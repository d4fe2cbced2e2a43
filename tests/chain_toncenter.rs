//! The Toncenter client against `cocoon::chain::serve` over a `LocalChain`, end to end on
//! loopback: a wallet deploys and tops up a payment channel through HTTP, and every read through
//! the API (accounts, get-methods, transactions, time) matches reading the chain directly. Also
//! refusals, API keys, an unreachable server, and which failures are retried (against a stub).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cocoon::chain::local::Clock;
use cocoon::chain::toncenter::Toncenter;
use cocoon::chain::wallet::Transfer;
use cocoon::chain::{AccountStatus, Chain, ChainError, TxSummary};
use cocoon::payments::contract;
use common::chain::{Party, START, Served, TON, params_between, serve_chain};
use serde_json::{Value, json};
use tycho_types::cell::{Cell, CellBuilder, CellFamily};
use tycho_types::models::StdAddr;

async fn start(api_key: Option<&str>) -> Served {
    serve_chain(Clock::Manual(START), api_key).await
}

fn client(url: &str, key: Option<&str>) -> Toncenter {
    Toncenter::new(url, key.map(str::to_owned), Duration::from_secs(10))
        .unwrap()
        .with_retries(3, Duration::from_millis(10))
}

fn assert_same(remote: &[TxSummary], local: &[TxSummary]) {
    assert_eq!(remote.len(), local.len());
    for (r, l) in remote.iter().zip(local) {
        assert_eq!((r.hash, r.lt, r.now, r.account), (l.hash, l.lt, l.now, l.account));
        assert_eq!(
            (r.exit_code, r.success, r.gas_used, r.total_fees),
            (l.exit_code, l.success, l.gas_used, l.total_fees)
        );
        assert_eq!((&r.in_msg, &r.out_msgs), (&l.in_msg, &l.out_msgs));
    }
}

fn pay(to: &StdAddr, value: u64) -> Transfer {
    Transfer { to: to.clone(), value, bounce: false, state_init: None, body: Cell::empty_cell() }
}

#[tokio::test]
async fn channel_deployed_through_toncenter_reads_like_the_local_chain() {
    let s = start(None).await;
    let tc = client(&s.url, None);
    let (payer, worker) = (Party::new(1), Party::new(2));
    s.chain.fund(&payer.addr(), 1_000 * TON).unwrap();
    let params = params_between(&payer, &worker, 7);
    let ch = params.address().unwrap();

    let funded = tc.account(&payer.addr()).await.unwrap();
    assert_eq!(funded.status, AccountStatus::Uninit);
    assert_eq!(funded, s.chain.account(&payer.addr()).await.unwrap());
    assert_eq!(tc.account(&ch).await.unwrap().status, AccountStatus::Nonexistent);
    assert_eq!(contract::state(&tc, &ch).await.unwrap(), None);

    // Deploy wallet and channel, then top up (the wallet's seqno now comes from a get-method).
    let deploy = contract::deploy(&params, 10 * TON, 1).unwrap();
    assert_eq!(payer.wallet.send(&tc, &[deploy]).await.unwrap(), 0);
    let st = contract::state(&tc, &ch).await.unwrap().unwrap();
    assert_eq!(st.deposited, 10 * TON);
    assert_eq!(Some(st), contract::state(&*s.chain, &ch).await.unwrap());
    assert_eq!(payer.wallet.send(&tc, &[contract::top_up(&ch, 5 * TON, 2).unwrap()]).await.unwrap(), 1);
    assert_eq!(payer.wallet.seqno(&tc).await.unwrap(), (2, false));
    let st = contract::state(&tc, &ch).await.unwrap().unwrap();
    assert_eq!((st.deposited, st.dispute_window), (15 * TON, 3600));
    assert_eq!(Some(st), contract::state(&*s.chain, &ch).await.unwrap());

    for addr in [payer.addr(), ch.clone()] {
        let remote = tc.account(&addr).await.unwrap();
        assert_eq!(remote.status, AccountStatus::Active);
        assert_eq!(remote, s.chain.account(&addr).await.unwrap());
        let remote = tc.transactions(&addr, 10).await.unwrap();
        assert_eq!(remote.len(), 2, "deploy and top-up on {addr}");
        assert_same(&remote, &s.chain.history(&addr, 10).unwrap());
        assert_same(&tc.transactions(&addr, 1).await.unwrap(), &s.chain.history(&addr, 1).unwrap());
    }
    assert!(tc.transactions(&worker.addr(), 10).await.unwrap().is_empty());

    let raw = tc.run_get_method(&ch, "get_channel_state").await.unwrap();
    let direct = s.chain.get_method(&ch, "get_channel_state").unwrap();
    assert_eq!((raw.exit_code, &raw.stack), (direct.exit_code, &direct.stack));
    let unknown = tc.run_get_method(&payer.addr(), "no_such_method").await;
    assert!(matches!(unknown, Err(ChainError::GetMethod { .. })), "{unknown:?}");

    assert_eq!(tc.now().await.unwrap(), u64::from(START));
    s.chain.advance(90).unwrap();
    assert_eq!(tc.now().await.unwrap(), u64::from(START) + 90);
}

#[tokio::test]
async fn transactions_page_through_more_than_one_request() {
    let s = start(None).await;
    let tc = client(&s.url, None);
    let (payer, other) = (Party::new(4), Party::new(5));
    s.chain.fund(&payer.addr(), 100 * TON).unwrap();
    for seqno in 0..105 {
        let msg =
            payer.wallet.transfer_message(seqno, seqno == 0, START + 60, &[pay(&other.addr(), TON / 100)]);
        s.chain.execute(msg.unwrap()).unwrap();
    }
    for limit in [100, 101, 150] {
        let remote = tc.transactions(&payer.addr(), limit).await.unwrap();
        assert_eq!(remote.len(), limit.min(105));
        assert_same(&remote, &s.chain.history(&payer.addr(), limit).unwrap());
    }
}

#[tokio::test]
async fn get_methods_on_accounts_without_code_fail() {
    let s = start(None).await;
    let tc = client(&s.url, None);
    let party = Party::new(6);
    let missing = tc.run_get_method(&party.addr(), "seqno").await;
    assert!(matches!(missing, Err(ChainError::GetMethod { .. })), "{missing:?}");
    s.chain.fund(&party.addr(), TON).unwrap();
    let uninit = tc.run_get_method(&party.addr(), "seqno").await;
    assert!(matches!(uninit, Err(ChainError::GetMethod { .. })), "{uninit:?}");
}

#[tokio::test]
async fn bad_messages_are_rejected() {
    let s = start(None).await;
    let tc = client(&s.url, None);
    // Not a message at all.
    let mut b = CellBuilder::new();
    b.store_u32(0xdead_beef).unwrap();
    let sent = tc.send_external(b.build().unwrap()).await;
    assert!(matches!(sent, Err(ChainError::Rejected(_))), "{sent:?}");
    // A well-formed transfer the (undeployed) wallet cannot accept.
    let party = Party::new(7);
    s.chain.fund(&party.addr(), TON).unwrap();
    let msg = party.wallet.transfer_message(3, false, START + 60, &[pay(&party.addr(), 1)]).unwrap();
    let sent = tc.send_external(msg).await;
    assert!(matches!(sent, Err(ChainError::Rejected(_))), "{sent:?}");
    assert_eq!(s.chain.transaction_count(), 0);
    // Garbage BOC and garbage JSON, straight over HTTP.
    let http = reqwest::Client::new();
    for body in [r#"{"boc":"bm90IGEgYm9j"}"#, "{"] {
        let r = http.post(format!("{}/sendBoc", s.url)).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!((&v["ok"], &v["code"]), (&json!(false), &json!(400)), "{v}");
    }
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let s = start(Some("sesame")).await;
    for key in [None, Some("open up")] {
        let refused = client(&s.url, key).now().await;
        assert!(matches!(&refused, Err(ChainError::Rejected(m)) if m.contains("401")), "{refused:?}");
    }
    assert_eq!(client(&s.url, Some("sesame")).now().await.unwrap(), u64::from(START));
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/getMasterchainInfo?api_key=sesame", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(format!("{}/getMasterchainInfo?api_key=wrong", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unreachable_server_is_unavailable_after_retries() {
    assert!(Toncenter::new("ftp://example.invalid", None, Duration::from_secs(1)).is_err());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tc = Toncenter::new(&format!("http://127.0.0.1:{port}/api/v2"), None, Duration::from_secs(2))
        .unwrap()
        .with_retries(3, Duration::from_millis(20));
    let started = Instant::now();
    let r = tc.account(&Party::new(8).addr()).await;
    assert!(matches!(&r, Err(ChainError::Unavailable(m)) if m.contains("3 attempts")), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(60), "waited 20 + 40 ms between attempts");
}

type Hits = Arc<[AtomicUsize; 4]>;

fn refusal(code: u16, error: &str) -> Response {
    let body = json!({ "ok": false, "error": error, "code": code });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn busy(State(hits): State<Hits>) -> Response {
    hits[0].fetch_add(1, Ordering::SeqCst);
    refusal(503, "busy")
}

async fn rate_limited_once(State(hits): State<Hits>) -> Response {
    if hits[1].fetch_add(1, Ordering::SeqCst) == 0 {
        return ([("Retry-After", "0")], refusal(429, "Ratelimit exceeded")).into_response();
    }
    let result = json!({ "balance": "5", "state": "uninitialized", "last_transaction_id": { "lt": "0" } });
    axum::Json(json!({ "ok": true, "result": result })).into_response()
}

async fn not_accepted(State(hits): State<Hits>) -> Response {
    hits[2].fetch_add(1, Ordering::SeqCst);
    refusal(
        500,
        "LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted",
    )
}

async fn exit_code(State(hits): State<Hits>) -> Response {
    hits[3].fetch_add(1, Ordering::SeqCst);
    refusal(500, "Exit code 11 != 0")
}

/// A stub Toncenter: 503 forever, a 429 then an answer, refusals Toncenter reports as 500, and an
/// answer too large to read.
#[tokio::test]
async fn retries_cover_only_transport_5xx_and_429() {
    let hits = Hits::default();
    let app = axum::Router::new()
        .route("/api/v2/getMasterchainInfo", get(busy))
        .route("/api/v2/getAddressInformation", get(rate_limited_once))
        .route("/api/v2/sendBoc", post(not_accepted))
        .route("/api/v2/runGetMethod", post(exit_code))
        .route("/api/v2/getTransactions", get(|| async { vec![b' '; 9 << 20] }))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tc = client(&format!("http://{}/api/v2", listener.local_addr().unwrap()), None);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let addr = Party::new(9).addr();

    let r = tc.now().await;
    assert!(matches!(&r, Err(ChainError::Unavailable(m)) if m.contains("503")), "{r:?}");
    let account = tc.account(&addr).await.unwrap();
    assert_eq!((account.status, account.balance), (AccountStatus::Uninit, 5));
    let r = tc.send_external(Cell::empty_cell()).await;
    assert!(matches!(&r, Err(ChainError::Rejected(m)) if m.contains("not accepted")), "{r:?}");
    let r = tc.run_get_method(&addr, "seqno").await;
    assert!(matches!(&r, Err(ChainError::GetMethod { .. })), "{r:?}");
    let r = tc.transactions(&addr, 5).await;
    assert!(matches!(&r, Err(ChainError::Malformed(_))), "{r:?}");
    let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [3, 2, 1, 1], "503 retried to the limit, 429 once, final refusals never");
}
