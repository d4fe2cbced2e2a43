//! Payment costs: vouchers verified (and verified plus stored durably, as the worker does before
//! acknowledging: one at a time, and through the worker's own path with 1, 8 and 64 concurrent
//! streams sharing flushes; everything pinned to one core), gas and fees of every channel operation measured on `LocalChain` under TON
//! mainnet's configuration, and chain transactions per 1,000 requests under the default lazy
//! settlement policy.
//!
//! `cargo bench --bench payments` prints one block per measurement; `-- streams` (or `vouchers`, `fees`,
//! `transactions`) runs only that block, and `COCOON_BENCH_STREAMS=64` only that many streams.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on purpose

#[path = "../common/chain.rs"]
#[allow(dead_code)] // shared with the payment tests, which use all of it
mod chain;

use std::time::Instant;

use chain::{Bench, TON};
use cocoon::chain::TxSummary;
use cocoon::payments::contract;
use cocoon::payments::worker::{PaymentMetrics, Settled, WorkerPayments, WorkerTerms};
use cocoon::store::{Store, StoredChannel};
use cocoon_protocol::payments::amount::format_ton;
use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::channel::ChannelState;
use cocoon_protocol::payments::exposure::ExposureLimits;
use cocoon_protocol::payments::ledger::WorkerChannel;
use cocoon_protocol::payments::prepared::PreparedKey;
use cocoon_protocol::payments::settlement::{ClaimView, SettlementPolicy};
use cocoon_protocol::payments::voucher::{CloseRequest, VerifiedVoucher, Voucher};
use libp2p::identity::ed25519;

fn vouchers() {
    let b = Bench::new();
    let params = b.params(1);
    let state = ChannelState { deposited: u64::MAX / 2, dispute_window: 3600, ..Default::default() };
    let mut channel = WorkerChannel::new(params.clone(), state).unwrap();
    let n = 5_000u64;
    let signed: Vec<_> = (1..=n)
        .map(|i| {
            Voucher { channel: channel.address.clone(), cumulative: i * 100, seqno: i }
                .sign(&b.client.key)
                .unwrap()
        })
        .collect();

    let start = Instant::now();
    let mut check = channel.clone();
    for v in &signed {
        check.check(v, 100).unwrap();
        check.accept(v.clone());
    }
    let verify = start.elapsed();
    let client = libp2p::identity::ed25519::PublicKey::try_from_bytes(&params.client_key).unwrap();
    let start = Instant::now();
    for v in &signed {
        VerifiedVoucher::verify(v.clone(), &client).unwrap();
    }
    let decoded = start.elapsed();
    let prepared = PreparedKey::new(&params.client_key).unwrap();
    let start = Instant::now();
    for v in &signed {
        VerifiedVoucher::verify_prepared(v.clone(), &prepared).unwrap();
    }
    let tables = start.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let book = Store::open(dir.path()).unwrap().payments().unwrap();
    let start = Instant::now();
    for v in &signed {
        channel.check(v, 100).unwrap();
        let mut next = StoredChannel { channel: channel.clone(), last_voucher_at: 0 };
        next.channel.accept(v.clone());
        book.accept_voucher(&next, v).unwrap();
        channel = next.channel;
    }
    let stored = start.elapsed();
    println!("vouchers ({n}, one channel, sequential, one core):");
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("  verified (cell hash + ed25519 + rules)      {:>9.0} /s", rate(verify));
    println!("  signature only, key decoded once            {:>9.0} /s", rate(decoded));
    println!("  signature only, key prepared (the worker's) {:>9.0} /s", rate(tables));
    println!(
        "  verified + stored, unbatched (one sled transaction + flush each) {:>9.0} /s",
        n as f64 / stored.as_secs_f64()
    );
}

async fn group_commit() {
    println!(
        "vouchers through the worker's settle path (verify, check, group commit, acknowledge), one core:"
    );
    let counts: Vec<usize> = match std::env::var("COCOON_BENCH_STREAMS") {
        Ok(only) => vec![only.parse().expect("COCOON_BENCH_STREAMS: a number of streams")],
        Err(_) => vec![1, 8, 64],
    };
    for streams in counts {
        let (per_second, per_flush) = concurrent_vouchers(streams, 20_000 / streams as u64).await;
        println!(
            "  {streams:>2} concurrent streams, one channel each   {per_second:>9.0} /s  ({per_flush:.1} per flush)"
        );
    }
}

/// Pin this thread (and the threads it starts from now on) to one CPU: the figures below are
/// "on one core", wherever the machine has more.
fn one_core() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// The worker's own voucher path with `streams` concurrent paying streams, each on its own channel
/// and client: decode, verify, check and store the voucher (group commit), acknowledge,
/// `per_stream` times. Vouchers signed beforehand (the client's work).
async fn concurrent_vouchers(streams: usize, per_stream: u64) -> (f64, f64) {
    let b = Bench::new();
    let dir = tempfile::tempdir().unwrap();
    let book = Store::open(dir.path()).unwrap().payments().unwrap();
    let mut work = Vec::new();
    for i in 0..streams {
        let key = ed25519::Keypair::generate();
        let params = ChannelParams { client_key: key.public().to_bytes(), ..b.params(i as u64) };
        let state = ChannelState { deposited: u64::MAX / 2, dispute_window: 3600, ..Default::default() };
        let channel = WorkerChannel::new(params.clone(), state).unwrap();
        let address = channel.address.clone();
        book.put_channel(&StoredChannel { channel, last_voucher_at: 0 }).unwrap();
        let vouchers: Vec<Vec<u8>> = (1..=per_stream)
            .map(|n| {
                let v = Voucher { channel: address.clone(), cumulative: n * 100, seqno: n };
                v.sign(&key).unwrap().to_bytes()
            })
            .collect();
        let peer = libp2p::identity::PublicKey::from(key.public()).to_peer_id();
        work.push((peer, params, vouchers));
    }
    let terms = WorkerTerms {
        worker_key: b.worker.key.public().to_bytes(),
        payout: b.worker.addr(),
        min_dispute_window: 60,
        min_deposit: 0,
        exposure: ExposureLimits { per_client: u64::MAX / 4, total: u64::MAX / 4 },
    };
    let chain: cocoon::chain::SharedChain = std::sync::Arc::new(b.chain);
    let metrics = PaymentMetrics::default();
    let payments = std::sync::Arc::new(WorkerPayments::new(book, chain, terms, metrics.clone()).unwrap());
    // Each stream's request is admitted once, before the clock starts: what is timed is the
    // vouchers alone (admission is per request and costs a chain-address derivation of its own).
    let mut admitted = Vec::new();
    for (peer, params, vouchers) in work {
        admitted.push((payments.admit(&peer, &params, 1_000).await.unwrap(), vouchers));
    }
    let start = Instant::now();
    let tasks: Vec<_> = admitted
        .into_iter()
        .map(|(admission, vouchers)| {
            let payments = payments.clone();
            tokio::spawn(async move {
                for bytes in vouchers {
                    let settled = payments.settle(&admission, &bytes, 100).await;
                    assert!(matches!(settled, Settled::Paid { .. }), "{settled:?}");
                }
                payments.release(&admission).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let vouchers = streams as u64 * per_stream;
    (vouchers as f64 / start.elapsed().as_secs_f64(), vouchers as f64 / metrics.flushes.get().max(1) as f64)
}

fn report(name: &str, channel: &tycho_types::models::StdAddr, txs: &[TxSummary]) {
    let own = txs
        .iter()
        .find(|t| t.account == channel.address && t.in_msg.as_ref().is_some_and(|m| !m.external))
        .unwrap();
    let all: u64 = txs.iter().map(|t| t.total_fees).sum::<u64>()
        + txs.iter().flat_map(|t| &t.out_msgs).map(|m| m.fwd_fee).sum::<u64>();
    assert!(own.success, "{name}: {own:?}");
    println!(
        "  {name:<22} gas {:>6}  contract fees {:>12} TON  whole cascade {:>12} TON ({} txs)",
        own.gas_used,
        format_ton(own.total_fees),
        format_ton(all),
        txs.len()
    );
}

async fn fees() {
    let b = Bench::new();
    let params = b.params(1);
    let ch = params.address().unwrap();
    println!("channel operations on LocalChain (TON mainnet config, wallet v5r1 senders):");
    let txs = b.send(&b.client.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    report("deploy + deposit", &ch, &txs);
    let txs = b.send(&b.client.wallet, contract::top_up(&ch, TON, 2).unwrap()).await;
    report("top up", &ch, &txs);
    let v = Voucher { channel: ch.clone(), cumulative: 2 * TON, seqno: 1 }.sign(&b.client.key).unwrap();
    let txs = b.send(&b.worker.wallet, contract::claim(&v, 3).unwrap()).await;
    report("claim", &ch, &txs);
    let txs = b.send(&b.client.wallet, contract::start_close(&ch, 4).unwrap()).await;
    report("start close", &ch, &txs);
    b.chain.advance(3600).unwrap();
    let txs = b.send(&b.other.wallet, contract::finish_close(&ch, 5).unwrap()).await;
    report("finish close", &ch, &txs);
    let params = b.params(2);
    let ch = params.address().unwrap();
    b.send(&b.client.wallet, contract::deploy(&params, 10 * TON, 6).unwrap()).await;
    let close = CloseRequest { channel: ch.clone(), cumulative: 3 * TON, seqno: 1 };
    let (c, w) = (close.sign(&b.client.key).unwrap(), close.sign(&b.worker.key).unwrap());
    let txs = b.send(&b.other.wallet, contract::coop_close(&close, &c, &w, 7).unwrap()).await;
    report("cooperative close", &ch, &txs);
}

/// Chain transactions (deploy, top-ups, claims) one client–worker channel causes per 1,000
/// requests of `amount` nanotons each under `policy`, a request every `gap` seconds.
fn per_thousand(policy: &SettlementPolicy, amount: u64, deposit: u64, gap: u64) -> (u64, u64, u64) {
    let (mut deposited, mut cumulative, mut claimed) = (deposit, 0u64, 0u64);
    let (mut topups, mut claims) = (0u64, 0u64);
    let n = 100_000u64;
    for i in 0..n {
        let now = i * gap;
        if let Some(top) = policy.topup_due(deposit, deposited - cumulative) {
            deposited += top;
            topups += 1;
        }
        cumulative += amount;
        let view = ClaimView { deposited, cumulative, claimed, last_voucher_at: now, closing: false };
        if policy.claim_due(&view, now + gap).is_some() {
            claimed = cumulative;
            claims += 1;
        }
    }
    let scale = |x: u64| (x * 1000).div_ceil(n);
    (scale(1 + topups + claims), scale(topups), scale(claims))
}

fn transactions() {
    let policy = SettlementPolicy::default();
    println!(
        "chain transactions per 1,000 requests (one channel, default policy, 100,000 requests simulated):"
    );
    for (what, amount, deposit, gap) in [
        ("devnet prices (82 nanotons/request)", 82, 2 * TON, 1),
        ("0.001 TON/request", TON / 1000, 2 * TON, 1),
        ("0.01 TON/request", TON / 100, 2 * TON, 1),
        ("0.01 TON/request, 10 TON deposit", TON / 100, 10 * TON, 1),
        ("0.001 TON/request, one per 10 min", TON / 1000, 2 * TON, 600),
    ] {
        let (total, topups, claims) = per_thousand(&policy, amount, deposit, gap);
        println!("  {what:<38} {total:>4} (top-ups {topups}, claims {claims})");
    }
}

/// Whether the section `name` runs: all of them, or those named on the command line
/// (`cargo bench --bench payments -- streams`).
fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    named.is_empty() || named.iter().any(|n| name.contains(n.as_str()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    one_core();
    if wanted("vouchers") {
        vouchers();
    }
    if wanted("streams") {
        group_commit().await;
    }
    if wanted("fees") {
        fees().await;
    }
    if wanted("transactions") {
        transactions();
    }
}
