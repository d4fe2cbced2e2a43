//! The channel contract's rules (version 2) as a pure state machine, without gas or fees: what a
//! call does to the channel and what it pays. The differential tests run the real contract on
//! `LocalChain` and this model side by side and require them to agree after every step, so the
//! model is the readable statement of what the contract promises.

use tycho_types::models::StdAddr;

use super::channel::{ChannelParams, ChannelState, exit};
use super::voucher::{CloseRequest, SignedVoucher};

/// Who sends a message to the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The channel's client wallet.
    Client,
    /// Anyone else (the worker's wallet included).
    Other,
}

/// A message to the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Deposit `amount` (with the value it needs attached).
    TopUp {
        /// Credited amount.
        amount: u64,
    },
    /// Claim with a voucher.
    Claim(SignedVoucher),
    /// Start the unilateral close.
    StartClose,
    /// Finish a close after the window.
    FinishClose,
    /// Close at once with both parties' signatures.
    CoopClose {
        /// What both signed.
        close: CloseRequest,
        /// The client's signature.
        client_sig: [u8; 64],
        /// The worker's signature.
        worker_sig: [u8; 64],
    },
}

/// What a successful call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The deposit grew.
    Deposited(u64),
    /// The worker was paid this much.
    Paid(u64),
    /// The close started.
    CloseStarted,
    /// The channel paid the worker this much and refunded the rest to the client: it is gone.
    Closed {
        /// Paid to the worker by this call.
        paid: u64,
    },
}

/// One channel as the contract keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelModel {
    /// Fixed parameters.
    pub params: ChannelParams,
    /// Its address.
    pub address: StdAddr,
    /// The state the get-method shows; `None` once closed.
    pub state: Option<ChannelState>,
}

impl ChannelModel {
    /// A channel deployed with a first deposit.
    pub fn deployed(params: ChannelParams, address: StdAddr, deposit: u64) -> Self {
        let window = params.dispute_window;
        let state = ChannelState { deposited: deposit, dispute_window: window, ..Default::default() };
        Self { params, address, state: Some(state) }
    }

    /// Apply a call sent by `from` at unix time `now`: its effect, or the exit code the contract
    /// throws (the state is then unchanged). `None` when the channel no longer exists.
    pub fn apply(&mut self, call: &Call, from: Sender, now: u32) -> Option<Result<Effect, i32>> {
        let st = self.state.as_mut()?;
        let result = match call {
            Call::TopUp { amount } => Self::top_up(st, *amount),
            Call::Claim(v) => Self::claim(st, &self.params, &self.address, v),
            Call::StartClose => Self::start_close(st, from, now),
            Call::FinishClose => Self::finish_close(st, now),
            Call::CoopClose { close, client_sig, worker_sig } => {
                Self::coop_close(st, &self.params, &self.address, close, client_sig, worker_sig)
            }
        };
        if matches!(result, Ok(Effect::Closed { .. })) {
            self.state = None;
        }
        Some(result)
    }

    fn top_up(st: &mut ChannelState, amount: u64) -> Result<Effect, i32> {
        if st.close_started_at != 0 {
            return Err(exit::CLOSING);
        }
        st.deposited = st.deposited.checked_add(amount).ok_or(exit::LOW_VALUE)?;
        Ok(Effect::Deposited(amount))
    }

    fn claim(
        st: &mut ChannelState,
        p: &ChannelParams,
        at: &StdAddr,
        v: &SignedVoucher,
    ) -> Result<Effect, i32> {
        v.verify(&p.client_key).map_err(|_| exit::BAD_SIGNATURE)?;
        if &v.voucher.channel != at {
            return Err(exit::WRONG_CHANNEL);
        }
        let pay = v.voucher.cumulative.min(st.deposited).saturating_sub(st.claimed);
        if pay == 0 {
            return Err(exit::NOTHING_TO_CLAIM);
        }
        st.claimed += pay;
        st.last_seqno = v.voucher.seqno;
        Ok(Effect::Paid(pay))
    }

    fn start_close(st: &mut ChannelState, from: Sender, now: u32) -> Result<Effect, i32> {
        if from != Sender::Client {
            return Err(exit::NOT_CLIENT);
        }
        if st.close_started_at != 0 {
            return Err(exit::ALREADY_CLOSING);
        }
        st.close_started_at = now;
        Ok(Effect::CloseStarted)
    }

    fn finish_close(st: &ChannelState, now: u32) -> Result<Effect, i32> {
        let Some(at) = st.closes_at() else { return Err(exit::NOT_CLOSING) };
        if u64::from(now) < at {
            return Err(exit::WINDOW_OPEN);
        }
        Ok(Effect::Closed { paid: 0 })
    }

    fn coop_close(
        st: &ChannelState,
        p: &ChannelParams,
        at: &StdAddr,
        close: &CloseRequest,
        client_sig: &[u8; 64],
        worker_sig: &[u8; 64],
    ) -> Result<Effect, i32> {
        close.verify(&p.client_key, client_sig).map_err(|_| exit::BAD_SIGNATURE)?;
        close.verify(&p.worker_key, worker_sig).map_err(|_| exit::BAD_SIGNATURE)?;
        if &close.channel != at {
            return Err(exit::WRONG_CHANNEL);
        }
        let paid = close.cumulative.min(st.deposited).saturating_sub(st.claimed);
        Ok(Effect::Closed { paid })
    }
}
