//! The worker's settlement loop. Every tick it reads each channel's on-chain state, finishes or
//! retries the claim recorded in the journal, and asks the lazy-settlement policy whether a new
//! claim is due. A claim is written to the journal (with the wallet's seqno at that moment) before
//! it is sent, so after a crash the worker can tell whether it went out: the wallet's seqno has
//! moved past the recorded one. The contract pays only `cumulative − claimed`, so even a repeated
//! claim cannot pay twice; the journal keeps it from costing a second transaction.

use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::payments::settlement::{ClaimView, SettlementPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tycho_types::models::StdAddr;

use super::contract;
use super::worker::WorkerPayments;
use crate::chain::ChainError;
use crate::chain::wallet::Wallet;
use crate::clock::unix_now;
use crate::store::ClaimEntry;

/// A sent claim not seen landing after this long is sent again (its message has expired).
const RESEND_AFTER_SECS: u64 = 180;

/// What one tick did, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Claims sent.
    pub sent: u32,
    /// Claims seen landing.
    pub landed: u32,
    /// Chain errors met (the work is retried next tick).
    pub errors: u32,
}

/// Run [`tick`] every `interval` until `shutdown`.
pub fn start(
    payments: Arc<WorkerPayments>,
    wallet: Wallet,
    policy: SettlementPolicy,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    super::every(interval, shutdown, move || {
        let (payments, wallet) = (payments.clone(), wallet.clone());
        async move {
            let report = tick(&payments, &wallet, &policy).await;
            if report != TickReport::default() {
                tracing::info!(?report, "settlement tick");
            }
        }
    })
}

/// One pass over every channel.
pub async fn tick(payments: &WorkerPayments, wallet: &Wallet, policy: &SettlementPolicy) -> TickReport {
    let mut report = TickReport::default();
    let addresses: Vec<StdAddr> = payments.channels.lock().await.keys().cloned().collect();
    let mut unclaimed = 0u64;
    for address in addresses {
        match settle_one(payments, wallet, policy, &address, &mut report).await {
            Ok(left) => unclaimed += left,
            Err(e) => {
                report.errors += 1;
                payments.metrics.chain_errors.inc();
                tracing::warn!(channel = %address, error = %e, "settlement failed; retrying next tick");
            }
        }
    }
    payments.metrics.unclaimed.set(i64::try_from(unclaimed).unwrap_or(i64::MAX));
    report
}

async fn settle_one(
    payments: &WorkerPayments,
    wallet: &Wallet,
    policy: &SettlementPolicy,
    address: &StdAddr,
    report: &mut TickReport,
) -> Result<u64, ChainError> {
    let chain = payments.chain.as_ref();
    let on_chain = contract::state(chain, address).await?;
    let now = unix_now();
    let store = |e: crate::store::StoreError| ChainError::Storage(e.to_string());
    let view = {
        let mut channels = payments.channels.lock().await;
        let Some(entry) = channels.get_mut(address) else { return Ok(0) };
        match on_chain {
            Some(state) => entry.channel.chain = state,
            // Closed and destroyed: whatever was not claimed is gone; nothing more to do.
            None if entry.channel.chain.deposited > 0 => {
                entry.channel.chain.claimed = entry.channel.chain.claimed.max(entry.channel.cumulative());
            }
            None => {}
        }
        payments.book.put_channel(entry).map_err(store)?;
        if on_chain.is_none() {
            // Closed: keep the record, stop polling it.
            channels.remove(address);
            payments.book.finish_claim(address).map_err(store)?;
            return Ok(0);
        }
        ClaimView {
            deposited: entry.channel.chain.deposited,
            cumulative: entry.channel.cumulative(),
            claimed: entry.channel.chain.claimed,
            last_voucher_at: entry.last_voucher_at,
            closing: entry.channel.chain.close_started_at != 0,
        }
    };

    if let Some(pending) = payments.book.claim(address).map_err(store)? {
        let payable = pending.cumulative.min(view.deposited);
        if view.claimed >= payable {
            payments.book.finish_claim(address).map_err(store)?;
            report.landed += 1;
        } else {
            let (wallet_seqno, _) = wallet.seqno(chain).await?;
            let went_out = wallet_seqno > pending.wallet_seqno;
            let stale = pending.sent_at != 0 && now.saturating_sub(pending.sent_at) > RESEND_AFTER_SECS;
            if went_out && pending.sent_at != 0 && !stale {
                return Ok(view.unclaimed()); // in flight: wait for it
            }
            if went_out {
                // It went out and did not pay (refused, or capped): decide afresh below.
                payments.book.finish_claim(address).map_err(store)?;
            } else if pending.sent_at == 0 || stale {
                send_claim(payments, wallet, address, pending.cumulative, pending.seqno, wallet_seqno)
                    .await?;
                report.sent += 1;
                return Ok(view.unclaimed());
            } else {
                return Ok(view.unclaimed());
            }
        }
    }

    let Some(reason) = policy.claim_due(&view, now) else { return Ok(view.unclaimed()) };
    let best = {
        let channels = payments.channels.lock().await;
        channels.get(address).and_then(|e| e.channel.best.clone())
    };
    let Some(best) = best else { return Ok(view.unclaimed()) };
    let (wallet_seqno, _) = wallet.seqno(chain).await?;
    let entry = ClaimEntry {
        cumulative: best.voucher.cumulative,
        seqno: best.voucher.seqno,
        wallet_seqno,
        sent_at: 0,
    };
    payments.book.decide_claim(&entry, &best).map_err(store)?;
    send_claim(payments, wallet, address, entry.cumulative, entry.seqno, wallet_seqno).await?;
    payments.metrics.claims.get_or_create(&vec![("reason".to_owned(), reason.as_str().to_owned())]).inc();
    tracing::info!(channel = %address, reason = reason.as_str(), amount = view.unclaimed(), "claiming");
    report.sent += 1;
    Ok(view.unclaimed())
}

async fn send_claim(
    payments: &WorkerPayments,
    wallet: &Wallet,
    address: &StdAddr,
    cumulative: u64,
    seqno: u64,
    wallet_seqno: u32,
) -> Result<(), ChainError> {
    let voucher = {
        let channels = payments.channels.lock().await;
        channels
            .get(address)
            .and_then(|e| e.channel.best.clone())
            .filter(|v| v.voucher.cumulative == cumulative && v.voucher.seqno == seqno)
    };
    // The journal names the voucher; if a better one arrived since, the stored one is still valid
    // (cumulative vouchers), but claim with exactly what was journaled.
    let voucher = match voucher {
        Some(v) => v,
        None => payments
            .book
            .vouchers(address)
            .map_err(|e| ChainError::Storage(e.to_string()))?
            .into_iter()
            .find(|v| v.voucher.seqno == seqno)
            .ok_or_else(|| ChainError::Storage(format!("journaled voucher {seqno} is not stored")))?,
    };
    wallet.send(payments.chain.as_ref(), &[contract::claim(&voucher, u64::from(wallet_seqno))?]).await?;
    let sent = ClaimEntry { cumulative, seqno, wallet_seqno, sent_at: unix_now() };
    payments.book.put_claim(address, &sent).map_err(|e| ChainError::Storage(e.to_string()))
}
