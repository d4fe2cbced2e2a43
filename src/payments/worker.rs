//! The worker's side of payments: admit a request only on a channel that names this worker,
//! belongs to the client on the stream and holds enough unspent deposit, and only while the
//! client's unpaid worst cases stay within the exposure caps (`cocoon_protocol::payments::
//! exposure`); accept the voucher that pays exactly the invoice, store it durably (with the other
//! streams' vouchers, one flush per batch: [`super::commit`]), and only then acknowledge it. A
//! client that leaves a request unpaid is refused until an operator forgives the debt.

use std::sync::Arc;

use cocoon_protocol::budget::{Budgets, Quota};
use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::exposure::{Exposure, ExposureError, ExposureLimits};
use cocoon_protocol::payments::ledger::{VoucherRejection, WorkerChannel};
use cocoon_protocol::payments::voucher::{SignedVoucher, VerifiedVoucher};
use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;
use tycho_types::models::StdAddr;

use super::commit::{Channels, Committed, Committer};
use super::keys::PreparedKeys;
use super::{contract, peer_key};
use crate::chain::SharedChain;
use crate::clock::unix_now;
use crate::store::{PaymentBook, StoredChannel};

/// Metrics shared by the worker's payment code and its settlement loop.
#[derive(Debug, Clone, Default)]
pub struct PaymentMetrics {
    /// Vouchers by outcome.
    pub vouchers: Family<Vec<(String, String)>, Counter>,
    /// Nanotons held in vouchers and not yet claimed.
    pub unclaimed: Gauge,
    /// Claims sent, by reason.
    pub claims: Family<Vec<(String, String)>, Counter>,
    /// Chain operations that failed.
    pub chain_errors: Counter,
    /// Worst-case prices of admitted requests not paid yet, all clients.
    pub exposure: Gauge,
    /// Voucher batches written (one transaction and flush each).
    pub flushes: Counter,
    /// Cooperative close proposals, by outcome (signed, refused).
    pub closes: Family<Vec<(String, String)>, Counter>,
}

impl PaymentMetrics {
    /// Register under `cocoon_payments`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cocoon_payments");
        r.register("vouchers", "Vouchers received, by outcome", self.vouchers.clone());
        r.register(
            "voucher_flushes",
            "Voucher batches written, one sled transaction and flush each \
             (accepted vouchers per flush = vouchers_total{outcome=accepted} / this)",
            self.flushes.clone(),
        );
        r.register("unclaimed_nanotons", "Vouchered but not yet claimed on chain", self.unclaimed.clone());
        r.register("claims", "Claims sent on chain, by reason", self.claims.clone());
        r.register(
            "close_proposals",
            "Cooperative close proposals from clients, by outcome (signed, refused)",
            self.closes.clone(),
        );
        r.register("chain_errors", "Chain operations that failed (retried later)", self.chain_errors.clone());
        r.register(
            "unpaid_in_flight_nanotons",
            "Worst-case prices of admitted requests not paid yet (capped by payments.exposure.total)",
            self.exposure.clone(),
        );
    }

    pub(crate) fn voucher(&self, outcome: &str) {
        self.vouchers.get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]).inc();
    }

    pub(crate) fn close(&self, outcome: &str) {
        self.closes.get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]).inc();
    }
}

/// What the worker requires of channels.
#[derive(Debug, Clone)]
pub struct WorkerTerms {
    /// This worker's identity key (the channel's `worker_key`).
    pub worker_key: [u8; 32],
    /// Where payouts must go (the attested payout address).
    pub payout: StdAddr,
    /// Shortest dispute window accepted, seconds.
    pub min_dispute_window: u32,
    /// Least deposit a channel must hold, nanotons.
    pub min_deposit: u64,
    /// Unpaid work risked per client and in total.
    pub exposure: ExposureLimits,
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The worker's total exposure cap is reached: try another worker.
    #[error("{0}")]
    Busy(String),
    /// The channel or the client's standing does not allow it.
    #[error("{0}")]
    Payment(String),
}

/// A request admitted on a channel, with its reservation.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The channel.
    pub channel: StdAddr,
    /// The client's key.
    pub client_key: [u8; 32],
    /// Reserved worst-case price.
    pub worst_case: u64,
}

/// The result of a voucher: acknowledged, or refused with what the worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Stored durably.
    Paid {
        /// New cumulative.
        cumulative: u64,
        /// Its seqno.
        seqno: u64,
    },
    /// Refused.
    Refused {
        /// What the worker holds.
        cumulative: u64,
        /// Its seqno.
        seqno: u64,
        /// Why.
        reason: String,
    },
}

/// Chain reads a request may trigger (a channel this worker does not know yet, or one that looks
/// short): they cost the worker its chain API quota and time, and a stranger can name any channel,
/// so each client key gets a few (burst 4, then one every 10 s: a client opens few channels) and
/// all clients together 2 a second (burst 16). Beyond that the request is answered `Busy`.
const CHAIN_READS_PER_CLIENT: Quota = Quota::new(4, 0.1);
/// See [`CHAIN_READS_PER_CLIENT`].
const CHAIN_READS_SHARED: Quota = Quota::new(16, 2.0);
/// Client keys whose chain-read budget is remembered: beyond it, keys whose bucket has refilled
/// are forgotten, and if none has, lookups are refused until one has (32 bytes plus a bucket
/// each: a few hundred KiB at most).
const CHAIN_READ_KEYS: usize = 4096;

/// What a peer is told when this worker's chain or store fails (the details, which may name the
/// operator's API endpoint or paths, stay in the worker's log).
const CHAIN_UNAVAILABLE: &str = "the worker cannot read the chain now; try again later";
/// See [`CHAIN_UNAVAILABLE`].
const STORE_FAILED: &str = "the worker cannot store payments now; try again later";

/// Payments state of a worker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct WorkerPayments {
    pub(crate) book: PaymentBook,
    pub(crate) chain: SharedChain,
    terms: WorkerTerms,
    /// Never held across a chain read or any other await on something outside this process.
    pub(crate) channels: Channels,
    /// Stores vouchers in batches (see [`super::commit`]).
    committer: Committer,
    exposure: std::sync::Mutex<Exposure>,
    chain_reads: std::sync::Mutex<Budgets<[u8; 32]>>,
    /// Client keys prepared for the channels paying now.
    prepared: PreparedKeys,
    pub(crate) metrics: PaymentMetrics,
}

impl WorkerPayments {
    /// Load the worker's channels from the store.
    pub fn new(
        book: PaymentBook,
        chain: SharedChain,
        terms: WorkerTerms,
        metrics: PaymentMetrics,
    ) -> Result<Self, crate::store::StoreError> {
        let channels: Channels = Arc::new(Mutex::new(
            book.channels()?.into_iter().map(|c| (c.channel.address.clone(), c)).collect(),
        ));
        let committer =
            Committer::start(book.clone(), channels.clone(), metrics.flushes.clone()).map_err(|e| {
                crate::store::StoreError::Encode(format!("cannot start the voucher committer: {e}"))
            })?;
        let exposure = std::sync::Mutex::new(Exposure::new(terms.exposure));
        let chain_reads = std::sync::Mutex::new(Budgets::new(
            CHAIN_READS_PER_CLIENT,
            CHAIN_READS_SHARED,
            CHAIN_READ_KEYS,
            crate::clock::monotonic_ms(),
        ));
        let prepared = PreparedKeys::default();
        Ok(Self { book, chain, terms, channels, committer, prepared, exposure, chain_reads, metrics })
    }

    /// The checks that cost nothing but a lookup: the channel is this client's and pays this
    /// worker, and the client owes nothing. Run before anything that costs CPU or a chain read.
    pub fn precheck(&self, client: &PeerId, params: &ChannelParams) -> Result<[u8; 32], Refusal> {
        let client_key = self.check_terms(client, params).map_err(Refusal::Payment)?;
        let owed = self.book.debt(&client_key).map_err(|e| {
            tracing::error!(error = %e, "cannot read a client's debt");
            Refusal::Busy(STORE_FAILED.into())
        })?;
        if owed > 0 {
            return Err(Refusal::Payment(format!("an earlier request of {owed} nanotons is unpaid")));
        }
        Ok(client_key)
    }

    /// The durable book (tests and the CLI read it).
    pub fn book(&self) -> &PaymentBook {
        &self.book
    }

    /// Admit a request from `client` on `params` that may cost up to `worst_case`.
    pub async fn admit(
        &self,
        client: &PeerId,
        params: &ChannelParams,
        worst_case: u64,
    ) -> Result<Admission, Refusal> {
        let client_key = self.precheck(client, params)?;
        self.reserve(client_key, 0, worst_case)?;
        let admitted = async {
            let channel = params.address().map_err(|e| Refusal::Payment(e.to_string()))?;
            self.admit_on_channel(client_key, params, &channel, worst_case).await?;
            Ok::<_, Refusal>(channel)
        }
        .await;
        match admitted {
            Ok(channel) => Ok(Admission { channel, client_key, worst_case }),
            Err(e) => {
                self.unreserve(client_key, worst_case);
                Err(e)
            }
        }
    }

    /// The channel must be this client's, pay this worker's attested address and give it time.
    fn check_terms(&self, client: &PeerId, params: &ChannelParams) -> Result<[u8; 32], String> {
        let client_key = peer_key(client).ok_or("the client's peer id carries no ed25519 key")?;
        if params.client_key != client_key {
            return Err("the channel belongs to another client".into());
        }
        if params.worker_key != self.terms.worker_key || params.worker != self.terms.payout {
            return Err("the channel does not pay this worker's attested payout address".into());
        }
        if params.dispute_window < self.terms.min_dispute_window {
            return Err(format!(
                "dispute window {} s is shorter than this worker accepts ({} s)",
                params.dispute_window, self.terms.min_dispute_window
            ));
        }
        Ok(client_key)
    }

    fn reserve(&self, client_key: [u8; 32], owed: u64, worst_case: u64) -> Result<(), Refusal> {
        let mut exposure =
            self.exposure.lock().map_err(|_| Refusal::Busy("exposure book poisoned".into()))?;
        let reserved = exposure.reserve(client_key, owed, worst_case);
        self.metrics.exposure.set(i64::try_from(exposure.total()).unwrap_or(i64::MAX));
        reserved.map_err(|e| match e {
            ExposureError::Total { .. } => Refusal::Busy(e.to_string()),
            ExposureError::PerClient { .. } => Refusal::Payment(e.to_string()),
        })
    }

    fn unreserve(&self, client_key: [u8; 32], worst_case: u64) {
        if let Ok(mut exposure) = self.exposure.lock() {
            exposure.release(client_key, worst_case);
            self.metrics.exposure.set(i64::try_from(exposure.total()).unwrap_or(i64::MAX));
        }
    }

    /// The cheap checks, then make sure this worker knows the channel `params` names: one it
    /// does not know is read from the chain (outside every lock, within the client's chain-read
    /// budget). Run before the request takes a model slot, so a lookup holds nothing.
    pub async fn learn(&self, client: &PeerId, params: &ChannelParams) -> Result<(), Refusal> {
        let client_key = self.precheck(client, params)?;
        let address = params.address().map_err(|e| Refusal::Payment(e.to_string()))?;
        if self.channels.lock().await.contains_key(&address) {
            return Ok(());
        }
        self.refresh(client_key, params, &address).await
    }

    /// Reserve `worst_case` of the channel's unspent deposit, reading the chain again when the
    /// channel is unknown or looks short (it may have been topped up).
    async fn admit_on_channel(
        &self,
        client_key: [u8; 32],
        params: &ChannelParams,
        address: &StdAddr,
        worst_case: u64,
    ) -> Result<(), Refusal> {
        let refused = |e: cocoon_protocol::payments::ledger::AdmissionError| Refusal::Payment(e.to_string());
        let min = self.terms.min_deposit;
        if let Some(entry) = self.channels.lock().await.get_mut(address)
            && entry.channel.unspent() >= worst_case
            && entry.channel.chain.deposited >= min
        {
            return entry.channel.admit(worst_case).map_err(refused);
        }
        self.refresh(client_key, params, address).await?;
        let mut channels = self.channels.lock().await;
        let entry = channels.get_mut(address).ok_or_else(|| Refusal::Payment("unknown channel".into()))?;
        if entry.channel.chain.deposited < min {
            return Err(Refusal::Payment(format!(
                "the channel holds {} nanotons; this worker needs a deposit of at least {min} (its published terms)",
                entry.channel.chain.deposited
            )));
        }
        entry.channel.admit(worst_case).map_err(refused)
    }

    /// Read the channel from the chain (outside the lock, within `client_key`'s budget) and
    /// record its state, keeping the reservations of a channel already known.
    async fn refresh(
        &self,
        client_key: [u8; 32],
        params: &ChannelParams,
        address: &StdAddr,
    ) -> Result<(), Refusal> {
        self.spend_chain_read(client_key)?;
        let state = self.read_channel(address).await?;
        let Some(state) = state else {
            return Err(Refusal::Payment(format!("channel {address} is not deployed")));
        };
        let mut channels = self.channels.lock().await;
        let entry = match channels.remove(address) {
            // Known (perhaps added meanwhile by another request): keep its reservations.
            Some(mut c) => {
                c.channel.chain = state;
                c
            }
            None => StoredChannel {
                channel: WorkerChannel::new(params.clone(), state)
                    .map_err(|e| Refusal::Payment(e.to_string()))?,
                last_voucher_at: unix_now(),
            },
        };
        let stored = self.book.put_channel(&entry);
        channels.insert(address.clone(), entry);
        stored.map_err(|e| {
            tracing::error!(error = %e, "cannot store a channel");
            Refusal::Busy(STORE_FAILED.into())
        })
    }

    /// Spend one chain read of `client_key`'s budget.
    fn spend_chain_read(&self, client_key: [u8; 32]) -> Result<(), Refusal> {
        let mut budgets =
            self.chain_reads.lock().map_err(|_| Refusal::Busy("chain-read budget poisoned".into()))?;
        budgets.take(&client_key, crate::clock::monotonic_ms()).map_err(|e| {
            self.metrics.voucher("lookup_refused");
            Refusal::Busy(format!("too many channel lookups: {e}"))
        })
    }

    /// The channel's state on chain; a failure is logged here and told to the peer plainly.
    async fn read_channel(
        &self,
        address: &StdAddr,
    ) -> Result<Option<cocoon_protocol::payments::channel::ChannelState>, Refusal> {
        contract::state(self.chain.as_ref(), address).await.map_err(|e| {
            self.metrics.chain_errors.inc();
            tracing::warn!(channel = %address, error = %e, "cannot read a channel from the chain");
            Refusal::Busy(CHAIN_UNAVAILABLE.into())
        })
    }

    /// Settle an admitted request that was invoiced `invoiced` with the voucher bytes received:
    /// verify its signature here (streams verify in parallel), then have the committer check it
    /// against the channel and store it with the next batch; `Paid` only once it is durable.
    pub async fn settle(&self, admission: &Admission, voucher: &[u8], invoiced: u64) -> Settled {
        let v = match SignedVoucher::from_bytes(voucher) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.voucher("malformed");
                return self.holding(&admission.channel, format!("malformed voucher: {e}")).await;
            }
        };
        // Announced before the verification: a batch being gathered waits for it.
        let ticket = self.committer.arriving();
        let client = self.channels.lock().await.get(&admission.channel).map(|e| e.channel.params.client_key);
        let Some(client) = client else {
            return Settled::Refused { cumulative: 0, seqno: 0, reason: "unknown channel".into() };
        };
        let verified = self.prepared.get(&client).and_then(|k| VerifiedVoucher::verify_prepared(v, &k).ok());
        let Some(verified) = verified else {
            self.metrics.voucher("rejected");
            return self.holding(&admission.channel, VoucherRejection::BadSignature.to_string()).await;
        };
        // Let the other streams that are ready now verify theirs too (the ticket makes the batch
        // wait for this one meanwhile): then they all share one sync, even on one core.
        tokio::task::yield_now().await;
        let channel = admission.channel.clone();
        let mut committed = self.committer.commit(ticket, channel.clone(), verified.clone(), invoiced).await;
        if matches!(committed, Committed::Rejected { rejection: VoucherRejection::OverDeposit { .. }, .. }) {
            // The client may have topped up since the request was admitted: read the chain with
            // the lock released (other clients' vouchers go on meanwhile), then try again.
            if let Ok(Some(state)) = self.read_channel(&channel).await {
                if let Some(entry) = self.channels.lock().await.get_mut(&channel) {
                    entry.channel.chain = state;
                }
                committed =
                    self.committer.commit(self.committer.arriving(), channel, verified, invoiced).await;
            }
        }
        self.settled(committed, invoiced)
    }

    /// What the committer did, as told to the stream (and counted).
    fn settled(&self, committed: Committed, invoiced: u64) -> Settled {
        match committed {
            Committed::Stored { cumulative, seqno } => {
                self.metrics.voucher("accepted");
                self.metrics.unclaimed.inc_by(i64::try_from(invoiced).unwrap_or(i64::MAX));
                Settled::Paid { cumulative, seqno }
            }
            Committed::Rejected { rejection, cumulative, seqno } => {
                self.metrics.voucher("rejected");
                Settled::Refused { cumulative, seqno, reason: rejection.to_string() }
            }
            Committed::StoreFailed { cumulative, seqno } => {
                Settled::Refused { cumulative, seqno, reason: STORE_FAILED.into() }
            }
            Committed::UnknownChannel => {
                Settled::Refused { cumulative: 0, seqno: 0, reason: "unknown channel".into() }
            }
        }
    }

    /// A refusal that tells the client what the worker holds on `channel`.
    async fn holding(&self, channel: &StdAddr, reason: String) -> Settled {
        let channels = self.channels.lock().await;
        let (cumulative, seqno) =
            channels.get(channel).map_or((0, 0), |e| (e.channel.cumulative(), e.channel.seqno()));
        Settled::Refused { cumulative, seqno, reason }
    }

    /// Release an admission's reservations (after settling or failing; an unpaid request was
    /// recorded as debt first, so the client stays refused).
    pub async fn release(&self, admission: &Admission) {
        if let Some(entry) = self.channels.lock().await.get_mut(&admission.channel) {
            entry.channel.release(admission.worst_case);
        }
        self.unreserve(admission.client_key, admission.worst_case);
    }

    /// Record that an invoiced request was not paid: the client is refused from now on.
    pub async fn unpaid(&self, admission: &Admission, invoiced: u64) {
        self.metrics.voucher("missing");
        if invoiced == 0 {
            return; // nothing was owed
        }
        let book = self.book.clone();
        let key = admission.client_key;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || book.add_debt(&key, invoiced)).await {
            tracing::error!(error = %e, "cannot record an unpaid request");
        }
    }
}

/// Shared handle.
pub type SharedWorkerPayments = Arc<WorkerPayments>;
