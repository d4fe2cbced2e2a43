//! The payment-channel contract executed by tycho-executor on `LocalChain`, driven through real
//! wallet v5r1 transfers: every operation and every refusal, with exit codes and balances, and
//! each entry point attacked by the party it could hurt the other (any sender, any order).

#![allow(clippy::unwrap_used)]

mod common;

use cocoon::chain::AccountStatus;
use cocoon::chain::Chain;
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::{exit, op, payout_amount};
use cocoon_protocol::payments::voucher::{CloseRequest, Voucher};
use common::chain::{Bench, TON};
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

fn payout_to(txs: &[cocoon::chain::TxSummary], worker: &StdAddr) -> u64 {
    txs.iter()
        .flat_map(|t| &t.out_msgs)
        .filter(|m| m.dst.as_ref() == Some(worker) && m.op() == Some(op::PAYOUT))
        .filter_map(|m| payout_amount(&m.body))
        .sum()
}

#[tokio::test]
async fn channel_lifecycle_with_claims_refusals_and_unilateral_close() {
    let b = Bench::new();
    let params = b.params(1);
    let ch = params.address().unwrap();
    let client_before = b.balance(&b.client.addr());

    // Deploy with a deposit.
    let (tx, _) = b.on_channel(&b.client.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0), "{tx:?}");
    assert!(tx.success);
    let st = b.state(&ch).await.unwrap();
    assert_eq!((st.deposited, st.claimed, st.last_seqno, st.close_started_at), (10 * TON, 0, 0, 0));
    assert!(b.balance(&ch) >= 10 * TON, "the deposit is held");
    assert!(client_before - b.balance(&b.client.addr()) > 10 * TON, "the client paid deposit plus fees");

    // Top up while open.
    let (tx, _) = b.on_channel(&b.client.wallet, contract::top_up(&ch, 5 * TON, 2).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(b.state(&ch).await.unwrap().deposited, 15 * TON);

    // A valid claim pays the voucher; the contract's balance drops by exactly that.
    let v1 = Voucher { channel: ch.clone(), cumulative: 3 * TON, seqno: 1 }.sign(&b.client.key).unwrap();
    let held = b.balance(&ch);
    let worker_before = b.balance(&b.worker.addr());
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&v1, 3).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(payout_to(&txs, &b.worker.addr()), 3 * TON);
    assert_eq!(held - b.balance(&ch), 3 * TON, "gas came out of the claim's attached value");
    let gained = b.balance(&b.worker.addr()) - worker_before;
    assert!(gained > 3 * TON - TON / 100 && gained < 3 * TON, "worker gained {gained}");
    let st = b.state(&ch).await.unwrap();
    assert_eq!((st.claimed, st.last_seqno), (3 * TON, 1));

    // A second claim pays only the difference.
    let v2 = Voucher { channel: ch.clone(), cumulative: 5 * TON, seqno: 2 }.sign(&b.client.key).unwrap();
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&v2, 4).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(payout_to(&txs, &b.worker.addr()), 2 * TON);

    // Refusals leave the channel untouched.
    let held = b.balance(&ch);
    let before = b.state(&ch).await.unwrap();
    let forged = Voucher { channel: ch.clone(), cumulative: 9 * TON, seqno: 3 }.sign(&b.other.key).unwrap();
    let lower = Voucher { channel: ch.clone(), cumulative: 4 * TON, seqno: 1 }.sign(&b.client.key).unwrap();
    let elsewhere = Voucher { channel: StdAddr::new(0, HashBytes([7; 32])), cumulative: 9 * TON, seqno: 3 };
    let mut elsewhere = elsewhere.sign(&b.client.key).unwrap();
    let for_another_channel = contract::claim(&elsewhere, 5).unwrap();
    elsewhere.voucher.channel = ch.clone(); // re-address the transfer only; the signed cell still names the other channel
    let mut misaddressed = for_another_channel;
    misaddressed.to = ch.clone();
    for (transfer, code, what) in [
        (contract::claim(&v2, 5).unwrap(), exit::NOTHING_TO_CLAIM, "replayed voucher"),
        (contract::claim(&lower, 6).unwrap(), exit::NOTHING_TO_CLAIM, "lower voucher"),
        (misaddressed, exit::WRONG_CHANNEL, "voucher for another channel"),
        (contract::claim(&forged, 7).unwrap(), exit::BAD_SIGNATURE, "bad signature"),
    ] {
        let (tx, txs) = b.on_channel(&b.worker.wallet, transfer).await;
        assert_eq!(tx.exit_code, Some(code), "{what}");
        assert!(!tx.success, "{what}");
        assert_eq!(payout_to(&txs, &b.worker.addr()), 0, "{what}");
        assert_eq!(b.state(&ch).await.unwrap(), before, "{what}");
        assert_eq!(b.balance(&ch), held, "{what}: bounced value returns, the deposit stays");
    }

    // A claim above the balance pays at most what is deposited; after a top-up the same voucher
    // pays the rest.
    let big = Voucher { channel: ch.clone(), cumulative: 100 * TON, seqno: 3 }.sign(&b.client.key).unwrap();
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&big, 8).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(payout_to(&txs, &b.worker.addr()), 10 * TON, "capped at the deposit");
    let st = b.state(&ch).await.unwrap();
    assert_eq!((st.deposited, st.claimed), (15 * TON, 15 * TON));
    assert!(b.balance(&ch) < TON / 10, "only the fee buffer is left");
    let (tx, _) = b.on_channel(&b.worker.wallet, contract::claim(&big, 9).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::NOTHING_TO_CLAIM), "nothing left, never negative");
    b.on_channel(&b.client.wallet, contract::top_up(&ch, 20 * TON, 10).unwrap()).await;
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&big, 11).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(payout_to(&txs, &b.worker.addr()), 20 * TON);

    // Closing: only the client may start; claims still work inside the window; top-ups and an
    // early finish are refused; after the window the client gets the remainder.
    b.on_channel(&b.client.wallet, contract::top_up(&ch, 4 * TON, 12).unwrap()).await;
    let (tx, _) = b.on_channel(&b.worker.wallet, contract::start_close(&ch, 13).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::NOT_CLIENT));
    let (tx, _) = b.on_channel(&b.client.wallet, contract::start_close(&ch, 14).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    let st = b.state(&ch).await.unwrap();
    assert_eq!(st.close_started_at, b.chain.now_secs());
    let (tx, _) = b.on_channel(&b.client.wallet, contract::start_close(&ch, 15).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::ALREADY_CLOSING));
    let (tx, _) = b.on_channel(&b.client.wallet, contract::top_up(&ch, TON, 16).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::CLOSING));
    b.chain.advance(1800).unwrap();
    let v4 = Voucher { channel: ch.clone(), cumulative: 36 * TON, seqno: 4 }.sign(&b.client.key).unwrap();
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&v4, 17).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0), "claims work inside the window");
    assert_eq!(payout_to(&txs, &b.worker.addr()), TON);
    let (tx, _) = b.on_channel(&b.other.wallet, contract::finish_close(&ch, 18).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::WINDOW_OPEN));
    b.chain.advance(1800).unwrap();
    let remainder = b.balance(&ch);
    assert!(remainder > 3 * TON);
    let client_before = b.balance(&b.client.addr());
    let (tx, txs) = b.on_channel(&b.other.wallet, contract::finish_close(&ch, 19).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    let refund: u64 =
        txs.iter().flat_map(|t| &t.out_msgs).filter(|m| m.op() == Some(op::REFUND)).map(|m| m.value).sum();
    assert!(refund > 3 * TON && refund <= remainder + contract::OP_FEE, "refund {refund}");
    assert!(b.balance(&b.client.addr()) > client_before + 3 * TON - TON / 100);
    assert_eq!(b.chain.account(&ch).await.unwrap().status, AccountStatus::Nonexistent, "destroyed");
    assert_eq!(b.state(&ch).await, None);
}

#[tokio::test]
async fn cooperative_close_pays_both_at_once_and_needs_both_signatures() {
    let b = Bench::new();
    let params = b.params(2);
    let ch = params.address().unwrap();
    b.on_channel(&b.client.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    let close = CloseRequest { channel: ch.clone(), cumulative: 4 * TON, seqno: 1 };
    let client_sig = close.sign(&b.client.key).unwrap();
    let worker_sig = close.sign(&b.worker.key).unwrap();
    let wrong_sig = close.sign(&b.other.key).unwrap();

    for (c, w, what) in [
        (&client_sig, &wrong_sig, "bad worker signature"),
        (&wrong_sig, &worker_sig, "bad client signature"),
        (&worker_sig, &client_sig, "swapped"),
    ] {
        let (tx, _) = b.on_channel(&b.other.wallet, contract::coop_close(&close, c, w, 2).unwrap()).await;
        assert_eq!(tx.exit_code, Some(exit::BAD_SIGNATURE), "{what}");
        assert_eq!(b.state(&ch).await.unwrap().deposited, 10 * TON, "{what}");
    }

    let worker_before = b.balance(&b.worker.addr());
    let client_before = b.balance(&b.client.addr());
    let held = b.balance(&ch);
    let (tx, txs) = b
        .on_channel(&b.other.wallet, contract::coop_close(&close, &client_sig, &worker_sig, 3).unwrap())
        .await;
    assert_eq!(tx.exit_code, Some(0));
    let to_worker: u64 =
        tx.out_msgs.iter().filter(|m| m.dst.as_ref() == Some(&b.worker.addr())).map(|m| m.value).sum();
    assert_eq!(to_worker, 4 * TON, "the worker's message carries exactly its share");
    let fees_of =
        |who: &StdAddr| txs.iter().filter(|t| t.account == who.address).map(|t| t.total_fees).sum::<u64>();
    assert_eq!(b.balance(&b.worker.addr()) - worker_before, 4 * TON - fees_of(&b.worker.addr()));
    let to_client: u64 =
        tx.out_msgs.iter().filter(|m| m.dst.as_ref() == Some(&b.client.addr())).map(|m| m.value).sum();
    assert!(to_client > 5 * TON && to_client < held - 4 * TON + contract::OP_FEE, "{to_client}");
    assert_eq!(b.balance(&b.client.addr()) - client_before, to_client - fees_of(&b.client.addr()));
    assert!(txs.iter().all(|t| t.success || t.account != ch.address));
    assert_eq!(b.chain.account(&ch).await.unwrap().status, AccountStatus::Nonexistent);
}

/// Finding 1 of issue 19 against version 1: the client claims a 1-nanoton-higher voucher with a
/// seqno near `u64::MAX` from its own wallet. In version 2 the worker's real voucher still pays
/// everything it promised, and the client's close cannot take it back.
#[tokio::test]
async fn a_client_front_running_claim_cannot_cancel_the_workers_voucher() {
    let b = Bench::new();
    let params = b.params(3);
    let ch = params.address().unwrap();
    b.on_channel(&b.client.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    let earned = Voucher { channel: ch.clone(), cumulative: 6 * TON, seqno: 40 }.sign(&b.client.key).unwrap();
    let (tx, _) = b.on_channel(&b.worker.wallet, contract::claim(&earned, 2).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    // The worker holds a later voucher it has not claimed yet.
    let held = Voucher { channel: ch.clone(), cumulative: 9 * TON, seqno: 41 }.sign(&b.client.key).unwrap();
    let trick = Voucher { channel: ch.clone(), cumulative: 6 * TON + 1, seqno: u64::MAX - 1 };
    let trick = trick.sign(&b.client.key).unwrap();
    let (tx, txs) = b.on_channel(&b.client.wallet, contract::claim(&trick, 3).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0), "anyone may claim; it pays the worker");
    assert_eq!(payout_to(&txs, &b.worker.addr()), 1);
    b.on_channel(&b.client.wallet, contract::start_close(&ch, 4).unwrap()).await;
    let (tx, txs) = b.on_channel(&b.worker.wallet, contract::claim(&held, 5).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0), "{tx:?}");
    assert_eq!(payout_to(&txs, &b.worker.addr()), 3 * TON - 1, "the rest of what the voucher promised");
    assert_eq!(b.state(&ch).await.unwrap().claimed, 9 * TON);
    // The same trick after the fact changes nothing, and the stale trick voucher pays nothing.
    let (tx, _) = b.on_channel(&b.client.wallet, contract::claim(&trick, 6).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::NOTHING_TO_CLAIM));
    b.chain.advance(3600).unwrap();
    let (tx, txs) = b.on_channel(&b.client.wallet, contract::finish_close(&ch, 7).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    let refund: u64 =
        txs.iter().flat_map(|t| &t.out_msgs).filter(|m| m.op() == Some(op::REFUND)).map(|m| m.value).sum();
    // 1 TON unpromised plus what is left of the fee buffer and the close messages' attached value.
    assert!(refund > TON && refund < TON + TON / 10, "the client gets back only the unpromised {refund}");
}

/// Every other entry point, sent by the party that would gain from it: nobody but the client
/// starts a close, a close cannot be started twice (restarting the window), top-ups by strangers
/// only add money, nobody finishes early, a cooperative close with the other party's signature
/// missing or for a lower amount than claimed pays no less than was claimed, and a claim on the
/// destroyed channel pays nothing.
#[tokio::test]
async fn every_entry_point_refuses_what_would_hurt_the_other_party() {
    let b = Bench::new();
    let params = b.params(4);
    let ch = params.address().unwrap();
    b.on_channel(&b.client.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    let v = Voucher { channel: ch.clone(), cumulative: 4 * TON, seqno: 1 }.sign(&b.client.key).unwrap();
    b.on_channel(&b.worker.wallet, contract::claim(&v, 2).unwrap()).await;
    for who in [&b.worker, &b.other] {
        let (tx, _) = b.on_channel(&who.wallet, contract::start_close(&ch, 3).unwrap()).await;
        assert_eq!(tx.exit_code, Some(exit::NOT_CLIENT));
    }
    let (tx, _) = b.on_channel(&b.other.wallet, contract::top_up(&ch, TON, 4).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0), "a stranger's top-up is a gift to the channel");
    assert_eq!(b.state(&ch).await.unwrap().deposited, 11 * TON);
    let (tx, _) = b.on_channel(&b.worker.wallet, contract::finish_close(&ch, 5).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::NOT_CLOSING));
    b.on_channel(&b.client.wallet, contract::start_close(&ch, 6).unwrap()).await;
    let started = b.state(&ch).await.unwrap().close_started_at;
    b.chain.advance(1000).unwrap();
    let (tx, _) = b.on_channel(&b.client.wallet, contract::start_close(&ch, 7).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::ALREADY_CLOSING), "the window cannot be restarted");
    assert_eq!(b.state(&ch).await.unwrap().close_started_at, started);
    let (tx, _) = b.on_channel(&b.client.wallet, contract::finish_close(&ch, 8).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::WINDOW_OPEN));
    // A cooperative close the worker signed for less than it already claimed pays it nothing
    // more and takes nothing back; the client alone cannot sign one.
    let low = CloseRequest { channel: ch.clone(), cumulative: TON, seqno: 0 };
    let (cs, ws) = (low.sign(&b.client.key).unwrap(), low.sign(&b.worker.key).unwrap());
    let (tx, _) = b.on_channel(&b.client.wallet, contract::coop_close(&low, &cs, &cs, 9).unwrap()).await;
    assert_eq!(tx.exit_code, Some(exit::BAD_SIGNATURE));
    let (tx, txs) = b.on_channel(&b.client.wallet, contract::coop_close(&low, &cs, &ws, 10).unwrap()).await;
    assert_eq!(tx.exit_code, Some(0));
    assert_eq!(payout_to(&txs, &b.worker.addr()), 0, "the 4 TON claimed stay claimed");
    assert_eq!(b.state(&ch).await, None);
    // A claim on the destroyed channel bounces its value; nothing is paid.
    let txs = b.send(&b.worker.wallet, contract::claim(&v, 11).unwrap()).await;
    assert_eq!(payout_to(&txs, &b.worker.addr()), 0);
}
