//! The client's side of payments: one channel per worker, opened (deployed with a deposit) the
//! first time the client uses that worker and reused afterwards; topped up when its unspent
//! deposit runs low; and a voucher per request that raises the cumulative amount by exactly the
//! amount of the receipt the client verified. Vouchers on one channel are signed one at a time
//! and recorded durably before they are sent; what a worker says it holds can lower the next
//! voucher, never raise it. The wallet has limits (`max_channels`, `max_total_deposit`); a
//! channel's parameters are recorded before its deploy; a channel that can no longer be used
//! (the worker's payout address changed, an old contract version, closed by hand) is retired and
//! wound down (`wind_down`), never forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::attestation::record::PaymentTerms;
use cocoon_protocol::payments::channel::{ChannelParams, CodeVersion};
use cocoon_protocol::payments::ledger::{ClientChannel, ClientRejection};
use cocoon_protocol::payments::settlement::SettlementPolicy;
use cocoon_protocol::payments::voucher::SignedVoucher;
use libp2p::PeerId;
use libp2p::identity::ed25519;
use rand::RngCore;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tycho_types::models::StdAddr;

use super::contract;
use super::peer_key;
use crate::chain::wallet::Wallet;
use crate::chain::{ChainError, SharedChain, parse_address};
use crate::store::PaymentBook;

mod close;
mod in_flight;
mod wind_down;

pub use close::Closing;
pub use in_flight::InFlight;
pub use wind_down::start as start_wind_down;

/// How a client funds its channels.
#[derive(Debug, Clone)]
pub struct ClientTerms {
    /// First deposit of a new channel, nanotons.
    pub deposit: u64,
    /// Dispute window of new channels, seconds.
    pub dispute_window: u32,
    /// How long to wait for a deploy or top-up to show on chain.
    pub confirm_timeout: Duration,
    /// Most channels open or being closed at once.
    pub max_channels: usize,
    /// Most nanotons deposited across those channels.
    pub max_total_deposit: u64,
    /// Close a channel unused this long (`None`: never).
    pub idle_close: Option<Duration>,
    /// The network its channels live on (`payments.network`), compared with workers' terms.
    pub network: String,
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
    /// The worker asked for something the client never signs.
    #[error("payment channel: {0}")]
    Worker(#[from] ClientRejection),
    /// A configured limit of the client's wallet.
    #[error("payment channel: {0}")]
    Limit(String),
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
    /// Held while the wallet limits are checked and a deposit is committed to (an open or a
    /// top-up), so requests to different workers cannot pass the limits together.
    funding: Mutex<()>,
    /// Worst-case prices of the requests in flight per worker, and when each channel was last
    /// used (top-ups cover the former; idle closes read the latter).
    in_flight: in_flight::Ledger,
    /// How workers are asked to co-sign cooperative closes (set once the node's network runs).
    network: std::sync::OnceLock<crate::network::NetworkHandle>,
    /// Channels being closed cooperatively: the wind-down pass leaves them alone meanwhile.
    closing: std::sync::Mutex<std::collections::HashSet<StdAddr>>,
    /// When each channel in use was last read from the chain (see [`CHANNEL_STATE_FRESH`]).
    fresh: in_flight::Seen,
}

/// How long a channel's on-chain state, once read, is trusted by the next requests: a request
/// reads it only when older (a chain API round trip, and TON Center's rate limit, per request
/// otherwise). Only a close started from outside this node makes it stale in a way that matters
/// (its own closes retire the channel at once); deposits only grow, and a top-up reads the chain
/// again.
const CHANNEL_STATE_FRESH: Duration = Duration::from_secs(30);

/// A client's channels as worker selection sees them ([`ClientPayments::standing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Keys of the workers the client has a channel with.
    pub with: std::collections::HashSet<[u8; 32]>,
    /// Whether the caps allow one more channel.
    pub may_open: bool,
    /// What a new channel of this client would be, for workers' published terms.
    pub offer: ChannelOffer,
}

/// What a client's new channels are: its network, deposit and dispute window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOffer {
    /// `payments.network`.
    pub network: String,
    /// The first deposit.
    pub deposit: u64,
    /// The dispute window.
    pub dispute_window: u32,
}

impl ChannelOffer {
    /// Why `terms` refuse this client's channels, if they do.
    pub fn refused_by(&self, terms: &PaymentTerms) -> Option<String> {
        terms.refusal(&cocoon_protocol::attestation::record::ClientTerms {
            network: &self.network,
            deposit: self.deposit,
            dispute_window: self.dispute_window,
            contract_version: CodeVersion::V2.as_u8(),
        })
    }
}

/// A channel locked for one request's voucher.
#[derive(Debug)]
pub struct ChannelGuard {
    _lock: OwnedMutexGuard<()>,
    /// The channel as recorded.
    pub channel: ClientChannel,
    /// The request's worst case, counted while it is in flight (opening a request only).
    in_flight: Option<InFlight>,
}

impl ChannelGuard {
    /// Unlock the channel, keeping the request counted in flight until the returned value drops
    /// (hold it until the request is paid or abandoned).
    pub fn into_in_flight(self) -> Option<InFlight> {
        self.in_flight
    }
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
            funding: Mutex::default(),
            in_flight: in_flight::Ledger::default(),
            network: std::sync::OnceLock::new(),
            closing: std::sync::Mutex::default(),
            fresh: in_flight::Seen::default(),
        }
    }

    /// Ask workers to co-sign cooperative closes through `network` (without it, closes are
    /// unilateral). Only the first call counts.
    pub fn reach_workers(&self, network: crate::network::NetworkHandle) {
        let _ = self.network.set(network);
    }

    /// The durable book of channels (tests and reports read it).
    pub fn book(&self) -> &PaymentBook {
        &self.book
    }

    /// What choosing workers needs to know of this client's channels: the workers (by key) it
    /// has one with, and whether it may open another (its channel and deposit caps). Reads the
    /// store only; an unreadable store is reported as no channels and no room.
    pub fn standing(&self) -> Standing {
        let (Ok(open), Ok(retired)) = (self.book.client_channels(), self.book.retired_channels()) else {
            return Standing::default();
        };
        let with = open.iter().map(|c| c.params.worker_key).collect();
        let all = [open, retired].concat();
        let may_open = all.len() < self.terms.max_channels && self.room_left(&all) >= self.terms.deposit;
        let offer = ChannelOffer {
            network: self.terms.network.clone(),
            deposit: self.terms.deposit,
            dispute_window: self.terms.dispute_window,
        };
        Standing { with, may_open, offer }
    }

    /// The wallet paying for channels.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    async fn lock(&self, worker_key: [u8; 32]) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().await.entry(worker_key).or_default().clone();
        lock.lock_owned().await
    }

    /// The channel lock with `worker_key` if nobody holds it.
    async fn try_lock(&self, worker_key: [u8; 32]) -> Option<OwnedMutexGuard<()>> {
        let lock = self.locks.lock().await.entry(worker_key).or_default().clone();
        lock.try_lock_owned().ok()
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
        let lock = self.lock(worker_key).await;
        // Counted before the deposit is checked: requests in flight on the channel each hold
        // their worst case at the worker, so the deposit must cover all of them, not this one.
        let in_flight = self.in_flight.start(worker_key, needed);
        let needed = in_flight.total();
        let channel = self.usable(worker_key, payout).await?;
        let target = self.terms.deposit.max(needed.saturating_mul(2));
        let (lock, channel) = if self.topup_due(&channel, target, needed).is_some() {
            // Top up without holding the channel: vouchers of requests in flight on it must not
            // wait for the chain (the worker waits only briefly for them). One top-up at a time.
            drop(lock);
            self.top_up(worker_key, channel, target, needed).await?
        } else {
            (lock, channel)
        };
        // Most requests change nothing here (the deposit read back is the one recorded): skip the
        // flush then; the voucher's own write follows.
        if self.book.client_channel(&worker_key)?.as_ref() != Some(&channel) {
            self.record(&channel).await?;
        }
        Ok(ChannelGuard { _lock: lock, channel, in_flight: Some(in_flight) })
    }

    /// The open channel with the worker, as the chain shows it now: the recorded one when it
    /// still pays `payout`, runs the current contract and is open; otherwise the recorded one is
    /// retired (closed, never forgotten) and a new one opened. A deploy that may not have landed
    /// is resumed with the same parameters.
    async fn usable(
        &self,
        worker_key: [u8; 32],
        payout: StdAddr,
    ) -> Result<ClientChannel, ClientPaymentError> {
        let mut channel = match self.book.client_channel(&worker_key)? {
            Some(c) if c.deposited == 0 => self.finish_open(c).await?,
            Some(c) if c.code != CodeVersion::V2 || c.params.worker != payout => {
                let why =
                    if c.code != CodeVersion::V2 { "old contract version" } else { "payout address changed" };
                self.retire(&c, why).await?;
                self.open(worker_key, payout).await?
            }
            Some(c) => c,
            None => self.open(worker_key, payout).await?,
        };
        if self.fresh.seen_within(&channel.address, CHANNEL_STATE_FRESH) {
            return Ok(channel);
        }
        match contract::state(self.chain.as_ref(), &channel.address).await? {
            Some(s) if s.close_started_at == 0 => channel.deposited = s.deposited,
            // Closing (someone closed it from outside this node) or gone: wind it down and open
            // a fresh one.
            _ => {
                self.retire(&channel, "closed").await?;
                channel = self.open(worker_key, channel.params.worker.clone()).await?;
            }
        }
        self.fresh.seen(&channel.address);
        Ok(channel)
    }

    fn topup_due(&self, c: &ClientChannel, target: u64, needed: u64) -> Option<u64> {
        // Keep a deposit of `deposit` (at least twice this request's worst case): top up to it
        // when less than the policy's share of it is left, or when this request would not fit.
        self.policy
            .topup_due(target, c.remaining())
            .or_else(|| (c.remaining() < needed).then(|| target.saturating_sub(c.remaining())))
    }

    async fn top_up(
        &self,
        worker_key: [u8; 32],
        channel: ClientChannel,
        target: u64,
        needed: u64,
    ) -> Result<(OwnedMutexGuard<()>, ClientChannel), ClientPaymentError> {
        let topping = self.topup_lock(worker_key).await;
        let address = channel.address.clone();
        let mut deposited = contract::state(self.chain.as_ref(), &address).await?.map_or(0, |s| s.deposited);
        let signed = self.book.client_channel(&worker_key)?.map_or(channel.cumulative, |c| c.cumulative);
        let unspent = deposited.saturating_sub(signed);
        let again = ClientChannel { deposited, cumulative: signed, ..channel.clone() };
        if let Some(wanted) = self.topup_due(&again, target, needed) {
            let funding = self.funding.lock().await;
            let amount = wanted.min(self.deposit_room()?);
            if amount < needed.saturating_sub(unspent) {
                return Err(self.over_limit(needed));
            }
            if amount > 0 {
                self.wallet
                    .send(self.chain.as_ref(), &[contract::top_up(&address, amount, rand::random())?])
                    .await?;
                deposited = self.confirm(&address, deposited.saturating_add(amount)).await?;
                tracing::info!(channel = %address, amount, unspent, "topped up payment channel");
            }
            drop(funding);
        }
        drop(topping);
        let lock = self.lock(worker_key).await;
        let mut channel = self
            .book
            .client_channel(&worker_key)?
            .ok_or_else(|| ClientPaymentError::Unusable("channel record vanished".into()))?;
        if channel.address == address {
            channel.deposited = deposited; // read (or confirmed) under the top-up lock
        }
        Ok((lock, channel))
    }

    /// What `max_total_deposit` still allows to deposit: the deposits of every channel in use or
    /// being wound down count until the chain refunds them.
    fn deposit_room(&self) -> Result<u64, ClientPaymentError> {
        Ok(self.room_left(&self.all_channels()?))
    }

    /// What `max_total_deposit` leaves with `all` the channels held.
    fn room_left(&self, all: &[ClientChannel]) -> u64 {
        // A pending channel (deploy not seen yet) counts the deposit it is being deployed with.
        let held = |c: &ClientChannel| match c.deposited {
            0 => self.terms.deposit,
            d => d.max(c.cumulative),
        };
        let held: u64 = all.iter().map(held).fold(0, u64::saturating_add);
        self.terms.max_total_deposit.saturating_sub(held)
    }

    fn all_channels(&self) -> Result<Vec<ClientChannel>, ClientPaymentError> {
        let mut all = self.book.client_channels()?;
        all.extend(self.book.retired_channels()?);
        Ok(all)
    }

    fn over_limit(&self, needed: u64) -> ClientPaymentError {
        ClientPaymentError::Limit(format!(
            "depositing for a request that may cost {needed} nanotons would pass payments.max_total_deposit_nanotons ({})",
            self.terms.max_total_deposit
        ))
    }

    async fn open(&self, worker_key: [u8; 32], payout: StdAddr) -> Result<ClientChannel, ClientPaymentError> {
        self.wind_down().await;
        let funding = self.funding.lock().await;
        let all = self.all_channels()?;
        if all.len() >= self.terms.max_channels {
            return Err(ClientPaymentError::Limit(format!(
                "{} channels are open or closing; payments.max_channels is {}",
                all.len(),
                self.terms.max_channels
            )));
        }
        if self.deposit_room()? < self.terms.deposit {
            return Err(self.over_limit(self.terms.deposit));
        }
        let params = ChannelParams {
            client_key: self.identity.public().to_bytes(),
            worker_key,
            client: self.wallet.address().clone(),
            worker: payout,
            dispute_window: self.terms.dispute_window,
            seed: rand::thread_rng().next_u64(),
        };
        let pending =
            ClientChannel::new(params, 0).map_err(|e| ClientPaymentError::Unusable(e.to_string()))?;
        // Recorded before the deploy: if the confirmation times out or the node stops, the next
        // request resumes this channel instead of deploying (and forgetting) another. Once it is
        // recorded it counts against the limits, so the lock can go before the chain wait.
        self.record(&pending).await?;
        drop(funding);
        self.finish_open(pending).await
    }

    /// Deploy a recorded, pending channel (again: a deploy that already landed makes the second
    /// one a top-up of the same channel, nothing is lost) unless the chain already shows it.
    async fn finish_open(&self, mut channel: ClientChannel) -> Result<ClientChannel, ClientPaymentError> {
        let address = channel.address.clone();
        let deposited = match contract::state(self.chain.as_ref(), &address).await? {
            Some(s) if s.deposited > 0 => s.deposited,
            _ => {
                let deploy = contract::deploy(&channel.params, self.terms.deposit, 0)?;
                self.wallet.send(self.chain.as_ref(), &[deploy]).await?;
                self.confirm(&address, self.terms.deposit).await?
            }
        };
        channel.deposited = deposited;
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

    /// Lock the channel at `address` with the worker whose key is `worker_key` (to sign the
    /// voucher for a request admitted on it); an error if that is no longer the channel in use.
    pub async fn relock(
        &self,
        worker_key: [u8; 32],
        address: &StdAddr,
    ) -> Result<ChannelGuard, ClientPaymentError> {
        let lock = self.lock(worker_key).await;
        let channel =
            self.book.client_channel(&worker_key)?.filter(|c| &c.address == address).ok_or_else(|| {
                ClientPaymentError::Unusable(format!("channel {address} is no longer in use"))
            })?;
        Ok(ChannelGuard { _lock: lock, channel, in_flight: None })
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

    /// Sign and record the voucher paying a verified receipt of `amount` on the guarded channel.
    pub async fn sign(
        &self,
        guard: &mut ChannelGuard,
        amount: u64,
    ) -> Result<SignedVoucher, ClientPaymentError> {
        let voucher = guard.channel.pay(amount).map_err(ClientPaymentError::Worker)?;
        self.record(&guard.channel).await?;
        voucher.sign(&self.identity).map_err(|e| ClientPaymentError::Unusable(e.to_string()))
    }

    /// The worker acknowledged the voucher: it must name what was signed. Nothing changes either
    /// way (an acknowledgement can only confirm).
    pub fn acknowledged(&self, guard: &ChannelGuard, cumulative: u64) -> Result<(), ClientPaymentError> {
        guard.channel.acknowledge(cumulative).map_err(ClientPaymentError::Worker)
    }

    /// The worker refused the voucher for `amount` and says it holds `cumulative` at `seqno` (it
    /// lost a voucher it never acknowledged): the voucher paying `amount` on top of that, when
    /// that stays within what the verified receipts add up to; an error otherwise.
    pub async fn resync(
        &self,
        guard: &mut ChannelGuard,
        amount: u64,
        cumulative: u64,
        seqno: u64,
    ) -> Result<SignedVoucher, ClientPaymentError> {
        let voucher = guard.channel.resync(amount, cumulative, seqno).map_err(ClientPaymentError::Worker)?;
        self.record(&guard.channel).await?;
        voucher.sign(&self.identity).map_err(|e| ClientPaymentError::Unusable(e.to_string()))
    }
}
