//! Closing a channel the client no longer needs: cooperatively when the worker co-signs (one
//! transaction pays the worker what the vouchers promise and returns the rest of the deposit at
//! once), else by starting the unilateral close (the rest returns after the dispute window).
//! Channels unused for `idle_close` are closed this way by the wind-down pass; `cocoon channel
//! close` asks a running node to do the same for one channel.

use std::time::Instant;

use cocoon_protocol::payments::close::CloseProposal;
use cocoon_protocol::payments::ledger::ClientChannel;
use cocoon_protocol::payments::voucher::CloseRequest;
use libp2p::PeerId;
use libp2p::identity::{PublicKey, ed25519};
use tycho_types::models::StdAddr;

use super::{ClientPaymentError, ClientPayments};
use crate::payments::{close, contract};

/// How a close went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Closing {
    /// Closed in one transaction: the worker got `paid_nanotons`, the client's wallet the
    /// `refunded_nanotons` left of the deposit (and the contract's fee buffer).
    Cooperative {
        /// The channel.
        channel: String,
        /// Paid out to the worker by the close (what its claims had not taken yet).
        paid_nanotons: u64,
        /// Deposit returned to the client.
        refunded_nanotons: u64,
    },
    /// The worker did not co-sign; the unilateral close was started and the remaining deposit
    /// returns after the dispute window (the wind-down pass finishes it).
    Unilateral {
        /// The channel.
        channel: String,
        /// Why the cooperative close did not happen.
        reason: String,
    },
}

impl ClientPayments {
    /// Close the channel in use at `address` now (cooperatively if the worker co-signs).
    pub async fn close(&self, address: &StdAddr) -> Result<Closing, ClientPaymentError> {
        let worker_key = self
            .book
            .client_channels()?
            .into_iter()
            .find(|c| &c.address == address)
            .map(|c| c.params.worker_key)
            .ok_or_else(|| ClientPaymentError::Unusable(format!("no channel in use at {address}")))?;
        let lock = self.lock(worker_key).await;
        let closing = self.close_locked(worker_key).await;
        drop(lock);
        closing
    }

    /// Close every channel unused for `idle_close` whose lock is free (one pass).
    pub async fn close_idle(&self) {
        let Some(idle) = self.terms.idle_close else { return };
        let channels = match self.book.client_channels() {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "cannot read the channels to close idle ones"),
        };
        let now = Instant::now();
        for c in channels.into_iter().filter(|c| c.deposited > 0) {
            let key = c.params.worker_key;
            if self.in_flight.idle_for(key, now).is_none_or(|d| d < idle) {
                continue;
            }
            let Some(lock) = self.try_lock(key).await else { continue }; // in use: not idle
            match self.close_locked(key).await {
                Ok(closing) => tracing::info!(?closing, "closed an idle payment channel"),
                Err(e) => {
                    tracing::warn!(channel = %c.address, error = %e, "cannot close an idle channel yet")
                }
            }
            drop(lock);
        }
    }

    /// Close the channel with `worker_key`, whose lock the caller holds.
    async fn close_locked(&self, worker_key: [u8; 32]) -> Result<Closing, ClientPaymentError> {
        let channel = self
            .book
            .client_channel(&worker_key)?
            .ok_or_else(|| ClientPaymentError::Unusable("the channel record vanished".into()))?;
        let address = channel.address.to_string();
        let refused = match self.cooperatively(&channel).await {
            Ok(closing) => return Ok(closing),
            Err(e) => e.to_string(),
        };
        self.retire(&channel, &format!("closing; not cooperatively: {refused}")).await?;
        self.in_flight.forget(&worker_key);
        Ok(Closing::Unilateral { channel: address, reason: refused })
    }

    /// The cooperative close: both signatures, one transaction, the channel gone from the chain
    /// and from the store. An error leaves the channel as it was (still in use).
    async fn cooperatively(&self, channel: &ClientChannel) -> Result<Closing, ClientPaymentError> {
        let network = self
            .network
            .get()
            .ok_or_else(|| ClientPaymentError::Unusable("this node cannot reach workers".into()))?;
        let chain = self.chain.as_ref();
        let state = contract::state(chain, &channel.address)
            .await?
            .filter(|s| s.close_started_at == 0)
            .ok_or_else(|| ClientPaymentError::Unusable("the channel is closing or gone already".into()))?;
        let close = CloseRequest {
            channel: channel.address.clone(),
            cumulative: channel.cumulative,
            seqno: channel.seqno,
        };
        let client_signature =
            close.sign(&self.identity).map_err(|e| ClientPaymentError::Unusable(e.to_string()))?;
        let proposal = CloseProposal { close: close.clone(), client_signature };
        let worker = worker_peer(&channel.params.worker_key)?;
        let worker_signature = close::ask(network, worker, &proposal)
            .await
            .map_err(|e| ClientPaymentError::Unusable(e.to_string()))?;
        close
            .verify(&channel.params.worker_key, &worker_signature)
            .map_err(|_| ClientPaymentError::Unusable("the worker's signature does not verify".into()))?;
        self.mark_closing(&channel.address, true);
        let sent = self.send_and_await(channel, &close, &client_signature, &worker_signature).await;
        self.mark_closing(&channel.address, false);
        sent?;
        let paid = channel.cumulative.saturating_sub(state.claimed).min(state.available());
        let refunded = state.available().saturating_sub(paid);
        Ok(Closing::Cooperative {
            channel: channel.address.to_string(),
            paid_nanotons: paid,
            refunded_nanotons: refunded,
        })
    }

    /// Send the close and wait for the channel to leave the chain, then forget it; retired first,
    /// so a crash or timeout meanwhile leaves it to the wind-down pass (which forgets a channel
    /// that is gone and otherwise starts the unilateral close).
    async fn send_and_await(
        &self,
        channel: &ClientChannel,
        close: &CloseRequest,
        client_signature: &[u8; 64],
        worker_signature: &[u8; 64],
    ) -> Result<(), ClientPaymentError> {
        let transfer = contract::coop_close(close, client_signature, worker_signature, rand::random())?;
        self.retire_record(channel).await?;
        self.wallet.send(self.chain.as_ref(), &[transfer]).await?;
        self.in_flight.forget(&channel.params.worker_key);
        let deadline = tokio::time::Instant::now() + self.terms.confirm_timeout;
        let mut wait = std::time::Duration::from_millis(50);
        while contract::state(self.chain.as_ref(), &channel.address).await?.is_some() {
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ClientPaymentError::Unusable(format!(
                    "the cooperative close of {} did not show on chain in time",
                    channel.address
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
        }
        self.book.forget_retired(&channel.address)?;
        tracing::info!(channel = %channel.address, cumulative = close.cumulative, "closed a payment channel cooperatively");
        Ok(())
    }

    fn mark_closing(&self, address: &StdAddr, closing: bool) {
        let mut set = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        if closing {
            set.insert(address.clone());
        } else {
            set.remove(address);
        }
    }

    /// Whether a cooperative close of `address` is under way.
    pub(super) fn is_closing(&self, address: &StdAddr) -> bool {
        self.closing.lock().unwrap_or_else(|p| p.into_inner()).contains(address)
    }
}

/// The peer id of the worker whose channel key is `key`.
fn worker_peer(key: &[u8; 32]) -> Result<PeerId, ClientPaymentError> {
    let public = ed25519::PublicKey::try_from_bytes(key)
        .map_err(|_| ClientPaymentError::Unusable("the channel's worker key is not an ed25519 key".into()))?;
    Ok(PublicKey::from(public).to_peer_id())
}
