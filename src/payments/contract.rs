//! The wallet transfers that drive the channel contract (deploy, top up, claim, close) and reading
//! its state back through a get-method. Amounts attached for gas are the contract's documented
//! fees; everything else is `cocoon_protocol::payments::channel`.

use cocoon_protocol::payments::channel::{self, CLAIM_FEE, ChannelParams, ChannelState, TOPUP_FEE};
use cocoon_protocol::payments::voucher::{CloseRequest, SignedVoucher};
use tycho_types::models::StdAddr;

use crate::chain::wallet::Transfer;
use crate::chain::{AccountStatus, Chain, ChainError};

/// Value attached to messages that carry no deposit (close requests): pays their gas.
pub const OP_FEE: u64 = 20_000_000;

/// Deploy a channel with a first deposit of `amount`.
pub fn deploy(params: &ChannelParams, amount: u64, query_id: u64) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: params.address()?,
        value: amount + TOPUP_FEE,
        bounce: false,
        state_init: Some(params.state_init()?),
        body: channel::top_up_body(query_id, amount)?,
    })
}

/// Deposit `amount` more.
pub fn top_up(channel: &StdAddr, amount: u64, query_id: u64) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: channel.clone(),
        value: amount + TOPUP_FEE,
        bounce: true,
        state_init: None,
        body: channel::top_up_body(query_id, amount)?,
    })
}

/// Claim with a voucher (the payout returns what the gas did not use).
pub fn claim(voucher: &SignedVoucher, query_id: u64) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: voucher.voucher.channel.clone(),
        value: CLAIM_FEE,
        bounce: true,
        state_init: None,
        body: channel::claim_body(query_id, voucher)?,
    })
}

/// The client starts closing.
pub fn start_close(channel: &StdAddr, query_id: u64) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: channel.clone(),
        value: OP_FEE,
        bounce: true,
        state_init: None,
        body: channel::start_close_body(query_id)?,
    })
}

/// Finish a close after the dispute window.
pub fn finish_close(channel: &StdAddr, query_id: u64) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: channel.clone(),
        value: OP_FEE,
        bounce: true,
        state_init: None,
        body: channel::finish_close_body(query_id)?,
    })
}

/// Close at once with both signatures.
pub fn coop_close(
    close: &CloseRequest,
    client_sig: &[u8; 64],
    worker_sig: &[u8; 64],
    query_id: u64,
) -> Result<Transfer, ChainError> {
    Ok(Transfer {
        to: close.channel.clone(),
        value: OP_FEE,
        bounce: true,
        state_init: None,
        body: channel::coop_close_body(query_id, close, client_sig, worker_sig)?,
    })
}

/// The channel's on-chain state; `None` if it is not deployed (never, or closed and destroyed).
pub async fn state(chain: &dyn Chain, channel: &StdAddr) -> Result<Option<ChannelState>, ChainError> {
    if chain.account(channel).await?.status != AccountStatus::Active {
        return Ok(None);
    }
    let r = chain.run_get_method(channel, "get_channel_state").await?;
    let field = |i: usize| {
        r.u64_at(i).ok_or_else(|| ChainError::GetMethod {
            method: "get_channel_state".into(),
            reason: format!("entry {i} is not an integer in range"),
        })
    };
    let small =
        |i: usize| field(i).and_then(|v| u32::try_from(v).map_err(|e| ChainError::Malformed(e.to_string())));
    Ok(Some(ChannelState {
        deposited: field(0)?,
        claimed: field(1)?,
        last_seqno: field(2)?,
        close_started_at: small(3)?,
        dispute_window: small(4)?,
    }))
}
