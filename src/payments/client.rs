//! The client's side of payments: one channel per worker, opened (deployed with a deposit) the
//! first time the client uses that worker and reused afterwards; topped up when its unspent
//! deposit runs low; and a voucher per request that raises the cumulative amount by exactly the
//! invoiced amount. Vouchers on one channel are signed one at a time and recorded durably before
//! they are sent, so the client never signs two different vouchers with the same seqno.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::ledger::ClientChannel;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use cocoon_protocol::payments::voucher::SignedVoucher;
use libp2p::PeerId;
use libp2p::identity::ed25519;
use rand::RngCore;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::contract;
use super::peer_key;
use crate::chain::wallet::Wallet;
use crate::chain::{ChainError, SharedChain, parse_address};
use crate::store::PaymentBook;

/// How a client funds its channels.
#[derive(Debug, Clone, Copy)]
pub struct ClientTerms {
    /// First deposit of a new channel, nanotons.
    pub deposit: u64,
    /// Dispute window of new channels, seconds.
    pub dispute_window: u32,
    /// How long to wait for a deploy or top-up to show on chain.
    pub confirm_timeout: Duration,
}

/// Why the client cannot pay.
#[derive(Debug, thiserror::Error)]
pub enum ClientPaymentError {
    /// The chain failed.
    #[error("payment channel: {0}")]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error("payment channel store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Something about the worker or channel is unusable.
    #[error("payment channel: {0}")]
    Unusable(String),
}

/// Payments state of a client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ClientPayments {
    book: PaymentBook,
    chain: SharedChain,
    wallet: Wallet,
    identity: ed25519::Keypair,
    terms: ClientTerms,
    policy: SettlementPolicy,
    locks: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
    topups: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
}

/// A channel locked for one request's voucher.
#[derive(Debug)]
pub struct ChannelGuard {
    _lock: OwnedMutexGuard<()>,
    /// The channel as recorded.
    pub channel: ClientChannel,
}

impl ClientPayments {
    /// Client payments with the node's wallet and identity key.
    pub fn new(
        book: PaymentBook,
        chain: SharedChain,
        wallet: Wallet,
        identity: ed25519::Keypair,
        terms: ClientTerms,
        policy: SettlementPolicy,
    ) -> Self {
        Self {
            book,
            chain,
            wallet,
            identity,
            terms,
            policy,
            locks: Mutex::default(),
            topups: Mutex::default(),
        }
    }

    /// The wallet paying for channels.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    async fn lock(&self, worker_key: [u8; 32]) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().await.entry(worker_key).or_default().clone();
        lock.lock_owned().await
    }

    async fn topup_lock(&self, worker_key: [u8; 32]) -> OwnedMutexGuard<()> {
        let lock = self.topups.lock().await.entry(worker_key).or_default().clone();
        lock.lock_owned().await
    }

    /// Lock the channel with `worker` (whose record names `payout`), opening or topping it up so
    /// that at least `needed` (the request's worst-case price) is unspent.
    pub async fn channel(
        &self,
        worker: &PeerId,
        payout: &str,
        needed: u64,
    ) -> Result<ChannelGuard, ClientPaymentError> {
        let worker_key = peer_key(worker)
            .ok_or_else(|| ClientPaymentError::Unusable("worker id has no ed25519 key".into()))?;
        let payout = parse_address(payout)?;
        let mut lock = self.lock(worker_key).await;
        let mut channel = match self.book.client_channel(&worker_key)? {
            Some(c) if c.params.worker == payout => c,
            _ => self.open(worker_key, payout).await?,
        };
        let chain_state = contract::state(self.chain.as_ref(), &channel.address).await?;
        match chain_state {
            Some(s) if s.close_started_at == 0 => channel.deposited = s.deposited,
            // Closed or closing: open a fresh channel.
            _ => channel = self.open(worker_key, channel.params.worker.clone()).await?,
        }
        // Keep a deposit of `deposit` (at least twice this request's worst case): top up to it
        // when less than the policy's share of it is left, or when this request would not fit.
        let target = self.terms.deposit.max(needed.saturating_mul(2));
        let due = |c: &ClientChannel| {
            self.policy
                .topup_due(target, c.remaining())
                .or_else(|| (c.remaining() < needed).then(|| target.saturating_sub(c.remaining())))
        };
        if due(&channel).is_some() {
            // Top up without holding the channel: vouchers of requests in flight on it must not
            // wait for the chain (the worker waits only briefly for them). One top-up at a time.
            drop(lock);
            let topping = self.topup_lock(worker_key).await;
            let address = channel.address.clone();
            let deposited = contract::state(self.chain.as_ref(), &address).await?.map_or(0, |s| s.deposited);
            let signed = self.book.client_channel(&worker_key)?.map_or(channel.cumulative, |c| c.cumulative);
            let unspent = deposited.saturating_sub(signed);
            let again = ClientChannel { deposited, cumulative: signed, ..channel.clone() };
            let mut deposited = deposited;
            if let Some(amount) = due(&again) {
                self.wallet
                    .send(self.chain.as_ref(), &[contract::top_up(&address, amount, rand::random())?])
                    .await?;
                deposited = self.confirm(&address, deposited + amount).await?;
                tracing::info!(channel = %address, amount, unspent, "topped up payment channel");
            }
            drop(topping);
            lock = self.lock(worker_key).await;
            channel = self
                .book
                .client_channel(&worker_key)?
                .ok_or_else(|| ClientPaymentError::Unusable("channel record vanished".into()))?;
            if channel.address == address {
                channel.deposited = deposited; // read (or confirmed) under the top-up lock
            }
        }
        // Most requests change nothing here (the deposit read back is the one recorded): skip the
        // flush then; the voucher's own write follows.
        if self.book.client_channel(&worker_key)?.as_ref() != Some(&channel) {
            self.record(&channel).await?;
        }
        Ok(ChannelGuard { _lock: lock, channel })
    }

    async fn open(
        &self,
        worker_key: [u8; 32],
        payout: tycho_types::models::StdAddr,
    ) -> Result<ClientChannel, ClientPaymentError> {
        let params = ChannelParams {
            client_key: self.identity.public().to_bytes(),
            worker_key,
            client: self.wallet.address().clone(),
            worker: payout,
            dispute_window: self.terms.dispute_window,
            seed: rand::thread_rng().next_u64(),
        };
        let address = params.address().map_err(|e| ClientPaymentError::Unusable(e.to_string()))?;
        self.wallet.send(self.chain.as_ref(), &[contract::deploy(&params, self.terms.deposit, 0)?]).await?;
        let deposited = self.confirm(&address, self.terms.deposit).await?;
        let channel =
            ClientChannel::new(params, deposited).map_err(|e| ClientPaymentError::Unusable(e.to_string()))?;
        self.record(&channel).await?;
        tracing::info!(channel = %address, deposit = deposited, "opened payment channel");
        Ok(channel)
    }

    /// Wait until the channel's deposit reaches `want`; returns the deposit seen.
    async fn confirm(
        &self,
        address: &tycho_types::models::StdAddr,
        want: u64,
    ) -> Result<u64, ClientPaymentError> {
        let deadline = tokio::time::Instant::now() + self.terms.confirm_timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            if let Some(s) = contract::state(self.chain.as_ref(), address).await?
                && s.deposited >= want
            {
                return Ok(s.deposited);
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ClientPaymentError::Unusable(format!(
                    "channel {address} did not reach a deposit of {want} nanotons in time (wallet empty?)"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Lock the channel with the worker whose key is `worker_key` as currently recorded (to sign
    /// the voucher for a request admitted on it).
    pub async fn relock(&self, worker_key: [u8; 32]) -> Result<ChannelGuard, ClientPaymentError> {
        let lock = self.lock(worker_key).await;
        let channel = self
            .book
            .client_channel(&worker_key)?
            .ok_or_else(|| ClientPaymentError::Unusable("no channel with this worker".into()))?;
        Ok(ChannelGuard { _lock: lock, channel })
    }

    /// Record `channel` durably. The flush waits for the disk, so it runs on the blocking pool:
    /// on a runtime thread it would stall every task scheduled there (a gateway's other requests,
    /// simnet's other nodes).
    async fn record(&self, channel: &ClientChannel) -> Result<(), ClientPaymentError> {
        let (book, channel) = (self.book.clone(), channel.clone());
        tokio::task::spawn_blocking(move || book.put_client_channel(&channel))
            .await
            .map_err(|e| ClientPaymentError::Unusable(format!("the store write did not finish: {e}")))??;
        Ok(())
    }

    /// Sign and record the voucher paying `amount` more on the guarded channel.
    pub async fn sign(
        &self,
        guard: &mut ChannelGuard,
        amount: u64,
    ) -> Result<SignedVoucher, ClientPaymentError> {
        let voucher = guard.channel.next_voucher(amount);
        guard.channel.signed(&voucher);
        self.record(&guard.channel).await?;
        voucher.sign(&self.identity).map_err(|e| ClientPaymentError::Unusable(e.to_string()))
    }

    /// The worker acknowledged the channel at `cumulative` and `seqno`: from now on vouchers build
    /// on that. After a resynchronisation this forgets the higher, lost voucher; it can cost the
    /// client at most that one request's amount more (the worker could only ever claim the
    /// highest voucher signed), and it keeps later vouchers from being refused again.
    pub async fn acknowledged(
        &self,
        guard: &mut ChannelGuard,
        cumulative: u64,
        seqno: u64,
    ) -> Result<(), ClientPaymentError> {
        if (guard.channel.cumulative, guard.channel.seqno) != (cumulative, seqno) {
            guard.channel.cumulative = cumulative;
            guard.channel.seqno = guard.channel.seqno.max(seqno);
            self.record(&guard.channel).await?;
        }
        Ok(())
    }

    /// The worker refused the voucher and says it holds `cumulative` at `seqno`. If that is less
    /// than the client signed (the worker lost an unacknowledged voucher), sign `amount` on top of
    /// what the worker holds: the worker could only ever claim the higher of the two. Returns
    /// `None` when the worker asks for more than the client owes.
    pub async fn resync(
        &self,
        guard: &mut ChannelGuard,
        amount: u64,
        cumulative: u64,
        seqno: u64,
    ) -> Result<Option<SignedVoucher>, ClientPaymentError> {
        let before = guard.channel.cumulative.saturating_sub(amount);
        if cumulative > before {
            return Ok(None);
        }
        let mut voucher = guard.channel.next_voucher(0);
        voucher.cumulative = cumulative.saturating_add(amount);
        voucher.seqno = voucher.seqno.max(seqno + 1);
        let signed_cumulative = guard.channel.cumulative; // keep the highest ever signed
        guard.channel.signed(&voucher);
        guard.channel.cumulative = signed_cumulative.max(voucher.cumulative);
        self.record(&guard.channel).await?;
        voucher.sign(&self.identity).map(Some).map_err(|e| ClientPaymentError::Unusable(e.to_string()))
    }
}
