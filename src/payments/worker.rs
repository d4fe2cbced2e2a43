//! The worker's side of payments: admit a request only on a channel that names this worker,
//! belongs to the client on the stream and holds enough unspent deposit, and only while the
//! client's unpaid worst cases stay within the exposure caps (`cocoon_protocol::payments::
//! exposure`); accept the voucher that pays exactly the invoice, store it durably, and only then
//! acknowledge it. A client that leaves a request unpaid is refused until an operator forgives the
//! debt.

use std::collections::HashMap;
use std::sync::Arc;

use cocoon_protocol::payments::channel::ChannelParams;
use cocoon_protocol::payments::exposure::{Exposure, ExposureError, ExposureLimits};
use cocoon_protocol::payments::ledger::{VoucherRejection, WorkerChannel};
use cocoon_protocol::payments::voucher::SignedVoucher;
use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;
use tycho_types::models::StdAddr;

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
}

impl PaymentMetrics {
    /// Register under `cocoon_payments`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cocoon_payments");
        r.register("vouchers", "Vouchers received, by outcome", self.vouchers.clone());
        r.register("unclaimed_nanotons", "Vouchered but not yet claimed on chain", self.unclaimed.clone());
        r.register("claims", "Claims sent on chain, by reason", self.claims.clone());
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

/// Payments state of a worker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct WorkerPayments {
    pub(crate) book: PaymentBook,
    pub(crate) chain: SharedChain,
    terms: WorkerTerms,
    pub(crate) channels: Mutex<HashMap<StdAddr, StoredChannel>>,
    exposure: std::sync::Mutex<Exposure>,
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
        let channels = book.channels()?.into_iter().map(|c| (c.channel.address.clone(), c)).collect();
        let exposure = std::sync::Mutex::new(Exposure::new(terms.exposure));
        Ok(Self { book, chain, terms, channels: Mutex::new(channels), exposure, metrics })
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
        let client_key = self.check_terms(client, params).map_err(Refusal::Payment)?;
        let owed = self.book.debt(&client_key).map_err(|e| Refusal::Payment(e.to_string()))?;
        if owed > 0 {
            return Err(Refusal::Payment(format!("an earlier request of {owed} nanotons is unpaid")));
        }
        self.reserve(client_key, owed, worst_case)?;
        let admitted = async {
            let channel = params.address().map_err(|e| e.to_string())?;
            self.admit_on_channel(params, &channel, worst_case).await?;
            Ok::<_, String>(channel)
        }
        .await;
        match admitted {
            Ok(channel) => Ok(Admission { channel, client_key, worst_case }),
            Err(e) => {
                self.unreserve(client_key, worst_case);
                Err(Refusal::Payment(e))
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

    /// Reserve `worst_case` of the channel's unspent deposit, reading the chain when the channel
    /// is unknown or looks short (it may have been topped up).
    async fn admit_on_channel(
        &self,
        params: &ChannelParams,
        address: &StdAddr,
        worst_case: u64,
    ) -> Result<(), String> {
        let mut channels = self.channels.lock().await;
        if !channels.contains_key(address) || channels[address].channel.unspent() < worst_case {
            let state = contract::state(self.chain.as_ref(), address).await.map_err(|e| {
                self.metrics.chain_errors.inc();
                format!("cannot read the channel from the chain: {e}")
            })?;
            let Some(state) = state else { return Err(format!("channel {address} is not deployed")) };
            let entry = match channels.remove(address) {
                Some(mut c) => {
                    c.channel.chain = state;
                    c
                }
                None => StoredChannel {
                    channel: WorkerChannel::new(params.clone(), state).map_err(|e| e.to_string())?,
                    last_voucher_at: unix_now(),
                },
            };
            self.book.put_channel(&entry).map_err(|e| e.to_string())?;
            channels.insert(address.clone(), entry);
        }
        let entry = channels.get_mut(address).ok_or("channel vanished")?;
        entry.channel.admit(worst_case).map_err(|e| e.to_string())
    }

    /// Settle an admitted request that was invoiced `invoiced` with the voucher bytes received.
    pub async fn settle(&self, admission: &Admission, voucher: &[u8], invoiced: u64) -> Settled {
        let mut channels = self.channels.lock().await;
        let Some(entry) = channels.get_mut(&admission.channel) else {
            return Settled::Refused { cumulative: 0, seqno: 0, reason: "unknown channel".into() };
        };
        let refused = |c: &WorkerChannel, reason: String| Settled::Refused {
            cumulative: c.cumulative(),
            seqno: c.seqno(),
            reason,
        };
        let v = match SignedVoucher::from_bytes(voucher) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.voucher("malformed");
                return refused(&entry.channel, format!("malformed voucher: {e}"));
            }
        };
        let mut check = entry.channel.check(&v, invoiced);
        if matches!(check, Err(VoucherRejection::OverDeposit { .. })) {
            // The client may have topped up since the request was admitted.
            if let Ok(Some(state)) = contract::state(self.chain.as_ref(), &admission.channel).await {
                entry.channel.chain = state;
                check = entry.channel.check(&v, invoiced);
            }
        }
        if let Err(rejection) = check {
            self.metrics.voucher("rejected");
            return refused(&entry.channel, rejection.to_string());
        }
        let mut next = entry.clone();
        next.channel.accept(v.clone());
        next.last_voucher_at = unix_now();
        let book = self.book.clone();
        let stored = {
            let next = next.clone();
            tokio::task::spawn_blocking(move || book.accept_voucher(&next, &v)).await
        };
        match stored {
            Ok(Ok(())) => {
                let (cumulative, seqno) = (next.channel.cumulative(), next.channel.seqno());
                *entry = next;
                self.metrics.voucher("accepted");
                self.metrics.unclaimed.inc_by(i64::try_from(invoiced).unwrap_or(i64::MAX));
                Settled::Paid { cumulative, seqno }
            }
            Ok(Err(e)) => refused(&entry.channel, format!("cannot store the voucher: {e}")),
            Err(e) => refused(&entry.channel, format!("cannot store the voucher: {e}")),
        }
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
