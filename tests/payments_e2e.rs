//! Payments end to end with inference: a client node pays a worker for every request with a
//! voucher on a channel it opened on the shared `LocalChain`; the worker stores each voucher
//! durably before acknowledging it and settles lazily, far less often than once per request.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cocoon::config::Role;
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::op;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use common::inference::{boot, client, metric, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, paying, start_on};
use serde_json::json;

/// `cocoon ARGS` (the binary), its stdout; it must succeed.
async fn cocoon_cli(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cocoon")).args(&args).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "cocoon {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `1.500000000 TON`, as the CLI prints amounts.
fn ton(nanotons: u64) -> String {
    format!("{} TON", cocoon_protocol::payments::amount::format_ton(nanotons))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_paid_requests_give_fifty_durable_vouchers_and_few_chain_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;

    // Claim once roughly every ten requests' worth (each costs tens of thousands of nanotons here).
    let policy = SettlementPolicy {
        claim_threshold: 200_000,
        min_claim: 200_000,
        idle_after_secs: u64::MAX / 2,
        ..SettlementPolicy::default()
    };
    let mut wc = with_admin(worker(
        config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)),
        &model,
        1_000_000,
        1,
    ));
    wc.payments.settlement = policy;
    let worker_wallet = paying(&mut wc, &chain, 10 * TON);
    let worker = start_on(wc, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    cc.payments.deposit_nanotons = TON;
    let client_wallet = paying(&mut cc, &chain, 100 * TON);
    let client = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client, 1).await;
    let api = client.api_addr().unwrap();

    let mut invoiced = 0u64;
    let mut channel = String::new();
    for i in 0..50 {
        let body = json!({"model": model_id, "messages": [{"role": "user", "content": format!("request {i}")}], "max_tokens": 8});
        let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let c = &answer["cocoon"];
        assert_eq!(c["payment"]["status"], "paid", "{answer}");
        invoiced += c["amount_nanotons"].as_u64().unwrap();
        assert_eq!(c["payment"]["cumulative_nanotons"].as_u64().unwrap(), invoiced, "request {i}");
        assert_eq!(c["payment"]["seqno"].as_u64().unwrap(), i + 1);
        channel = c["payment"]["channel"].as_str().unwrap().to_owned();
    }
    assert!(invoiced > 50 * 10_000, "{invoiced}");
    assert_eq!(metric(&worker, "cocoon_payments_vouchers_total", "accepted").await, 50);

    // Every voucher is in the worker's store; they raise the total by exactly the invoices.
    let book = worker.store().payments().unwrap();
    let address = cocoon::chain::parse_address(&channel).unwrap();
    let vouchers = book.vouchers(&address).unwrap();
    assert_eq!(vouchers.len(), 50);
    assert_eq!(vouchers.last().unwrap().voucher.cumulative, invoiced);
    assert!(vouchers.windows(2).all(|w| w[1].voucher.seqno == w[0].voucher.seqno + 1));

    // The running worker reports the channel on its admin endpoint.
    let admin = worker.admin_addr().unwrap();
    let (status, body) =
        tokio::task::spawn_blocking(move || common::http_get(admin, "/payments")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reported = &report["worker_channels"][0];
    assert_eq!(reported["address"], address.to_string());
    assert_eq!(reported["voucher_cumulative_nanotons"].as_u64().unwrap(), invoiced);
    assert_eq!(reported["voucher_seqno"], 50);
    // The operator reads it in TON, the node found from its data directory alone.
    let wdir = dir.path().join("w");
    let status = cocoon_cli(&["status", "--data-dir", wdir.to_str().unwrap()]).await;
    let earned = format!("earned      {}", ton(invoiced));
    assert!(status.contains(&earned) && status.contains("1 open, 0 closing"), "{status}");
    let listed = cocoon_cli(&["channel", "list", "--data-dir", wdir.to_str().unwrap()]).await;
    assert!(listed.contains("worker channel") && listed.contains(&ton(invoiced)), "{listed}");
    let json = cocoon_cli(&["status", "--json", "--data-dir", wdir.to_str().unwrap()]).await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["payments"]["worker_channels"][0]["voucher_cumulative_nanotons"], invoiced);

    // Lazy settlement: the worker claims until less than `min_claim` is left unclaimed.
    let settled = eventually(Duration::from_secs(30), || async {
        let s = contract::state(chain.as_ref(), &address).await.unwrap().unwrap();
        invoiced - s.claimed < policy.min_claim
    })
    .await;
    assert!(settled, "the worker did not settle");
    let state = contract::state(chain.as_ref(), &address).await.unwrap().unwrap();
    let txs = chain.history(&address, 1_000).unwrap();
    let claims = txs.iter().filter(|t| t.in_op() == Some(op::CLAIM)).count() as u64;
    let successful = txs.iter().filter(|t| t.in_op() == Some(op::CLAIM) && t.success).count() as u64;
    assert_eq!(successful, claims, "no claim was wasted");
    assert!(
        claims >= 1 && claims <= policy.claim_bound(state.claimed),
        "{claims} claims for {}",
        state.claimed
    );
    let ops: Vec<_> =
        txs.iter().map(|t| (t.in_op(), t.exit_code, t.in_msg.as_ref().map(|m| m.external))).collect();
    assert!((txs.len() as u64) < 50 / 4, "{} chain transactions for 50 requests: {ops:x?}", txs.len());
    // The payouts arrived at the worker's wallet; the client's wallet paid the deposit.
    assert!(chain.balance(worker_wallet.address()).unwrap() > 10 * TON - TON / 10);
    assert!(chain.balance(client_wallet.address()).unwrap() < 99 * TON);

    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
    // A stopped node leaves no address behind.
    assert!(!wdir.join(cocoon::dirs::ADMIN_ADDR_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_model_needs_no_channel() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, 0, 1));
    paying(&mut wc, &chain, 10 * TON);
    let worker = start_on(wc, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    let client_wallet = paying(&mut cc, &chain, 100 * TON);
    let client = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client, 1).await;
    let body =
        json!({"model": model_id, "messages": [{"role": "user", "content": "free?"}], "max_tokens": 4});
    let (status, answer) = post(client.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["payment"]["status"], "off", "{answer}");
    assert_eq!(answer["cocoon"]["amount_nanotons"], 0);
    assert_eq!(chain.balance(client_wallet.address()).unwrap(), 100 * TON, "no channel was deployed");
    assert_eq!(metric(&worker, "cocoon_inference_worker_requests_total", "completed").await, 1);
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}
