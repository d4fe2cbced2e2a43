//! Random sequences of channel operations on `LocalChain` (seeded, so a failure replays): deposits,
//! top-ups, vouchers signed for random amounts, claims with any voucher ever signed (stale ones
//! included) or a forged one, close requests, time passing and finishes. After every step: the
//! worker was never paid more than the highest valid voucher, the client never lost more than it
//! signed, and every nanoton the contract received is either still held, paid out or spent on fees.

#![allow(clippy::unwrap_used)]

mod common;

use cocoon::chain::TxSummary;
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::{op, payout_amount};
use cocoon_protocol::payments::voucher::{SignedVoucher, Voucher};
use common::chain::{Bench, TON};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tycho_types::models::StdAddr;

#[derive(Default)]
struct Ledger {
    /// Values that arrived at the contract (deposits with fee buffers, claim attachments).
    received: u64,
    /// Values it sent (payouts with returned gas, refunds, bounces) with their forwarding fees.
    sent: u64,
    /// Fees its own transactions paid.
    fees: u64,
    /// Payout amounts named in payout bodies.
    paid_to_worker: u64,
    /// Deposit amounts credited (top-up bodies that succeeded).
    deposited: u64,
}

fn account(b: &Bench, ch: &StdAddr, txs: &[TxSummary], l: &mut Ledger) {
    for t in txs.iter().filter(|t| t.account == ch.address) {
        let inbound = t.in_msg.as_ref().map_or(0, |m| m.value);
        l.received += inbound;
        l.fees += t.total_fees;
        for m in &t.out_msgs {
            l.sent += m.value + m.fwd_fee;
            if m.dst.as_ref() == Some(&b.worker.addr()) && m.op() == Some(op::PAYOUT) {
                l.paid_to_worker += payout_amount(&m.body).unwrap();
            }
        }
    }
}

/// Runs one sequence; returns how many steps paid the worker and whether the channel closed.
async fn run(seed: u64) -> (u32, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let b = Bench::new();
    let params = b.params(seed);
    let ch = params.address().unwrap();
    let mut l = Ledger::default();
    let first = rng.gen_range(1..20) * TON / 2;
    let txs = b.send(&b.client.wallet, contract::deploy(&params, first, 0).unwrap()).await;
    account(&b, &ch, &txs, &mut l);
    l.deposited += first;

    let mut signed: Vec<SignedVoucher> = Vec::new();
    let (mut cumulative, mut seqno) = (0u64, 0u64);
    let mut closed = false;
    let mut paying_steps = 0;
    for step in 1..=30u64 {
        let state = b.state(&ch).await;
        let transfer = match rng.gen_range(0..10) {
            0 | 1 => {
                let amount = rng.gen_range(1..10) * TON / 4;
                if state.is_some_and(|s| s.close_started_at == 0) {
                    l.deposited += amount;
                }
                (b.client.wallet.clone(), contract::top_up(&ch, amount, step).unwrap())
            }
            2 | 3 => {
                cumulative += rng.gen_range(0..4) * TON / 3;
                seqno += 1;
                let v = Voucher { channel: ch.clone(), cumulative, seqno };
                signed.push(v.sign(&b.client.key).unwrap());
                continue;
            }
            4..=6 if !signed.is_empty() => {
                let v = signed[rng.gen_range(0..signed.len())].clone();
                (b.worker.wallet.clone(), contract::claim(&v, step).unwrap())
            }
            7 => {
                let v = Voucher { channel: ch.clone(), cumulative: cumulative + 50 * TON, seqno: seqno + 1 };
                (b.worker.wallet.clone(), contract::claim(&v.sign(&b.other.key).unwrap(), step).unwrap())
            }
            8 => (b.client.wallet.clone(), contract::start_close(&ch, step).unwrap()),
            _ => {
                b.chain.advance(rng.gen_range(0..3) * 1800).unwrap();
                (b.other.wallet.clone(), contract::finish_close(&ch, step).unwrap())
            }
        };
        if closed {
            break;
        }
        let paid_before = l.paid_to_worker;
        let txs = b.send(&transfer.0, transfer.1).await;
        account(&b, &ch, &txs, &mut l);
        paying_steps += u32::from(l.paid_to_worker > paid_before);
        let after = b.state(&ch).await;
        let balance = b.balance(&ch);
        let max_signed = signed.iter().map(|v| v.voucher.cumulative).max().unwrap_or(0);
        assert!(
            l.paid_to_worker <= max_signed,
            "seed {seed} step {step}: paid {} > signed {max_signed}",
            l.paid_to_worker
        );
        assert_eq!(l.received, balance + l.sent + l.fees, "seed {seed} step {step}: value conservation");
        match after {
            Some(s) => {
                assert_eq!(s.claimed, l.paid_to_worker, "seed {seed} step {step}");
                assert_eq!(s.deposited, l.deposited, "seed {seed} step {step}");
                assert!(s.claimed <= s.deposited, "seed {seed} step {step}");
                assert!(
                    balance >= s.deposited - s.claimed,
                    "seed {seed} step {step}: the contract can pay what it owes"
                );
            }
            None => {
                closed = true;
                assert_eq!(balance, 0);
                // The client lost exactly what the worker was paid plus fees; never more than signed.
                assert!(l.paid_to_worker <= max_signed);
            }
        }
    }
    (paying_steps, closed)
}

#[tokio::test]
async fn random_operation_sequences_keep_the_channel_invariants() {
    let (mut paying, mut closes) = (0, 0);
    for seed in 0..24 {
        let (p, c) = run(seed).await;
        paying += p;
        closes += u32::from(c);
    }
    // The sequences must actually reach the interesting states.
    assert!(paying >= 24, "only {paying} paying claims");
    assert!(closes >= 3, "only {closes} finished closes");
}
