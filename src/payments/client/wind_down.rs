//! Channels the client stopped using are closed, never forgotten: a retired channel gets the
//! client's close request at once, stays in the store (counting against `max_channels` and
//! `max_total_deposit`) and is finished after its dispute window, when its remainder returns to
//! the wallet. `wind_down` runs before every new channel is opened and on a timer
//! ([`start`], which first closes idle channels: `close`); a chain error leaves the channel as it
//! was for the next pass.

use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::payments::ledger::ClientChannel;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ClientPaymentError, ClientPayments};
use crate::payments::contract;

/// Wind down retired channels every `interval` until `shutdown`.
pub fn start(
    payments: Arc<ClientPayments>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    crate::payments::every(interval, shutdown, move || {
        let payments = payments.clone();
        async move {
            payments.close_idle().await;
            payments.wind_down().await
        }
    })
}

impl ClientPayments {
    /// Stop using `channel` (`why` is logged): ask the chain to start closing it and move its
    /// record to the retired channels.
    pub(super) async fn retire(&self, channel: &ClientChannel, why: &str) -> Result<(), ClientPaymentError> {
        tracing::info!(channel = %channel.address, %why, "retiring payment channel");
        if let Err(e) = self.step(channel).await {
            tracing::warn!(channel = %channel.address, error = %e, "cannot start closing a retired channel yet");
        }
        self.retire_record(channel).await
    }

    /// Move `channel`'s record to the retired channels (durably).
    pub(super) async fn retire_record(&self, channel: &ClientChannel) -> Result<(), ClientPaymentError> {
        self.fresh.forget(&channel.address);
        let (book, c) = (self.book.clone(), channel.clone());
        tokio::task::spawn_blocking(move || book.retire_client_channel(&c))
            .await
            .map_err(|e| ClientPaymentError::Unusable(format!("the store write did not finish: {e}")))??;
        Ok(())
    }

    /// One pass over the retired channels: start closes that have not started, finish those whose
    /// window has passed, forget those the chain no longer has.
    pub async fn wind_down(&self) {
        let retired = match self.book.retired_channels() {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "cannot read the retired channels"),
        };
        // A cooperative close under way finishes (or falls back) on its own.
        for channel in retired.into_iter().filter(|c| !self.is_closing(&c.address)) {
            match self.step(&channel).await {
                Ok(true) => {
                    if let Err(e) = self.book.forget_retired(&channel.address) {
                        tracing::warn!(channel = %channel.address, error = %e, "cannot forget a closed channel");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(channel = %channel.address, error = %e, "cannot wind down a channel yet")
                }
            }
        }
    }

    /// Move one retired channel towards closed; `true` once the chain no longer has it.
    async fn step(&self, channel: &ClientChannel) -> Result<bool, ClientPaymentError> {
        let chain = self.chain.as_ref();
        let Some(state) = contract::state(chain, &channel.address).await? else {
            if channel.deposited == 0 {
                tracing::warn!(
                    channel = %channel.address,
                    "forgetting a channel whose deploy never showed on chain; if it lands later, close it with `cocoon channel close`"
                );
            }
            return Ok(true);
        };
        match state.closes_at() {
            None => {
                let start = contract::start_close(&channel.address, rand::random())?;
                self.wallet.send(chain, &[start]).await?;
                Ok(false)
            }
            Some(at) if chain.now().await? >= at => {
                let finish = contract::finish_close(&channel.address, rand::random())?;
                self.wallet.send(chain, &[finish]).await?;
                // A chain that executes at once (the local one) shows the channel gone already.
                Ok(contract::state(chain, &channel.address).await?.is_none())
            }
            Some(_) => Ok(false),
        }
    }
}
