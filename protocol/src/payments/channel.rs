//! The payment-channel contract as seen from Rust: its compiled code, op codes, exit codes and fee
//! constants (all documented in `docs/payments.md`), the parameters that make up its initial data
//! and therefore its address, the message bodies each operation sends, and the state its
//! get-method returns.

use std::sync::OnceLock;

use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Load, Store};
use tycho_types::models::{StateInit, StdAddr};
use tycho_types::num::Tokens;

use super::PaymentError;
use super::voucher::{CloseRequest, SignedVoucher};
use crate::codec::{CodecError, Reader, Writer};

/// The compiled contract (version 2), lowercase hex of its code BOC (rebuilt and checked by
/// `protocol/contracts/build.mjs`).
pub const CODE_HEX: &str = include_str!("../../contracts/payment_channel.code.hex");

/// Version 1 of the contract, frozen: its seqno rule let a client cancel the worker's vouchers,
/// so no new channel uses it. Kept only to find (by address) and wind down channels opened
/// with it before version 2.
pub const CODE_V1_HEX: &str = include_str!("../../contracts/payment_channel.v1.code.hex");

/// Which contract code a channel runs (its address depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CodeVersion {
    /// Seqno-ordered claims; wound down, never opened any more.
    V1,
    /// Cumulative-ordered claims: what every new channel runs.
    #[default]
    V2,
}

impl CodeVersion {
    /// The byte stored with channel records.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The version a stored byte names.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

/// Operation codes of the messages the contract receives and sends.
pub mod op {
    /// Deposit (also the deploy message's body).
    pub const TOP_UP: u32 = 0x746f_7075;
    /// Claim with a client-signed voucher.
    pub const CLAIM: u32 = 0x636c_6169;
    /// The client starts closing.
    pub const START_CLOSE: u32 = 0x636c_6f73;
    /// Anyone finishes a close after the dispute window.
    pub const FINISH_CLOSE: u32 = 0x6669_6e69;
    /// Close at once, signed by both parties.
    pub const COOP_CLOSE: u32 = 0x636f_6f70;
    /// Body of the payment the worker receives.
    pub const PAYOUT: u32 = 0x7061_796f;
    /// Body of the remainder the client receives.
    pub const REFUND: u32 = 0x7265_6675;
}

/// Exit codes the contract throws.
pub mod exit {
    /// The attached value does not cover the amount plus the fee.
    pub const LOW_VALUE: i32 = 101;
    /// Top-up while closing.
    pub const CLOSING: i32 = 102;
    /// Close started twice.
    pub const ALREADY_CLOSING: i32 = 103;
    /// Only the client may start a close.
    pub const NOT_CLIENT: i32 = 104;
    /// A signature does not verify.
    pub const BAD_SIGNATURE: i32 = 105;
    /// The voucher names another channel.
    pub const WRONG_CHANNEL: i32 = 106;
    /// The signed cell has the wrong tag.
    pub const WRONG_TAG: i32 = 107;
    /// Version 1 only: the voucher's seqno is below the last claimed one (version 2 orders
    /// vouchers by their cumulative amount and never throws it).
    pub const STALE_SEQNO: i32 = 108;
    /// Nothing is left to pay for this voucher.
    pub const NOTHING_TO_CLAIM: i32 = 109;
    /// Finish without a started close.
    pub const NOT_CLOSING: i32 = 110;
    /// Finish before the dispute window has passed.
    pub const WINDOW_OPEN: i32 = 111;
    /// Empty body or unknown op.
    pub const UNKNOWN_OP: i32 = 0xffff;

    /// A short name for an exit code (for errors and logs).
    pub fn name(code: i32) -> &'static str {
        match code {
            0 | 1 => "ok",
            LOW_VALUE => "attached value too low",
            CLOSING => "channel is closing",
            ALREADY_CLOSING => "close already started",
            NOT_CLIENT => "sender is not the client",
            BAD_SIGNATURE => "bad signature",
            WRONG_CHANNEL => "voucher for another channel",
            WRONG_TAG => "wrong signed-cell tag",
            STALE_SEQNO => "stale seqno",
            NOTHING_TO_CLAIM => "nothing to claim",
            NOT_CLOSING => "channel is not closing",
            WINDOW_OPEN => "dispute window still open",
            UNKNOWN_OP => "unknown op",
            _ => "other",
        }
    }
}

/// Value a top-up must attach beyond its amount (stays as the contract's fee buffer).
pub const TOPUP_FEE: u64 = 10_000_000;
/// Least value a claim must attach (pays its gas; the rest returns with the payout).
pub const CLAIM_FEE: u64 = 10_000_000;

fn decode_code(hex_text: &str) -> Result<Cell, String> {
    let bytes = hex::decode(hex_text.trim()).map_err(|e| e.to_string())?;
    Boc::decode(bytes).map_err(|e| e.to_string())
}

/// The contract's code cell (version 2, what new channels run).
pub fn code() -> Result<Cell, PaymentError> {
    code_of(CodeVersion::V2)
}

/// The code cell of a contract version.
pub fn code_of(version: CodeVersion) -> Result<Cell, PaymentError> {
    static V1: OnceLock<Result<Cell, String>> = OnceLock::new();
    static V2: OnceLock<Result<Cell, String>> = OnceLock::new();
    let code = match version {
        CodeVersion::V1 => V1.get_or_init(|| decode_code(CODE_V1_HEX)),
        CodeVersion::V2 => V2.get_or_init(|| decode_code(CODE_HEX)),
    };
    code.clone().map_err(PaymentError::Code)
}

/// Everything fixed when a channel is created; its hash with the code is the channel's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelParams {
    /// The client's ed25519 key (its libp2p identity key): signs vouchers.
    pub client_key: [u8; 32],
    /// The worker's ed25519 key (its libp2p identity key): co-signs cooperative closes.
    pub worker_key: [u8; 32],
    /// Where the remainder goes (the client's wallet).
    pub client: StdAddr,
    /// Where payouts go (the worker's attested payout address).
    pub worker: StdAddr,
    /// Seconds the worker may still claim after the client starts closing.
    pub dispute_window: u32,
    /// Makes the address unique among channels of the same pair.
    pub seed: u64,
}

impl ChannelParams {
    /// The contract's initial data: nothing deposited, claimed or closing.
    pub fn initial_data(&self) -> Result<Cell, PaymentError> {
        let mut keys = CellBuilder::new();
        keys.store_u256(&HashBytes(self.client_key))?;
        keys.store_u256(&HashBytes(self.worker_key))?;
        let mut parties = CellBuilder::new();
        self.client.store_into(&mut parties, Cell::empty_context())?;
        self.worker.store_into(&mut parties, Cell::empty_context())?;
        let mut b = CellBuilder::new();
        Tokens::ZERO.store_into(&mut b, Cell::empty_context())?;
        Tokens::ZERO.store_into(&mut b, Cell::empty_context())?;
        b.store_u64(0)?;
        b.store_u32(0)?;
        b.store_u32(self.dispute_window)?;
        b.store_u64(self.seed)?;
        b.store_reference(keys.build()?)?;
        b.store_reference(parties.build()?)?;
        Ok(b.build()?)
    }

    /// Code (version 2) and initial data, as sent with the deploy message.
    pub fn state_init(&self) -> Result<StateInit, PaymentError> {
        self.state_init_of(CodeVersion::V2)
    }

    fn state_init_of(&self, version: CodeVersion) -> Result<StateInit, PaymentError> {
        Ok(StateInit {
            split_depth: None,
            special: None,
            code: Some(code_of(version)?),
            data: Some(self.initial_data()?),
            libraries: Default::default(),
        })
    }

    /// The address of a new channel (version 2, basechain): the hash of its state init.
    pub fn address(&self) -> Result<StdAddr, PaymentError> {
        self.address_of(CodeVersion::V2)
    }

    /// The address these parameters had (or have) under a contract version.
    pub fn address_of(&self, version: CodeVersion) -> Result<StdAddr, PaymentError> {
        let cell = CellBuilder::build_from(self.state_init_of(version)?)?;
        Ok(StdAddr::new(0, *cell.repr_hash()))
    }

    /// Canonical wire encoding (sent with vouchers so the worker can recompute the address).
    pub fn encode(&self, w: &mut Writer) {
        w.fixed(&self.client_key).fixed(&self.worker_key);
        write_addr(w, &self.client);
        write_addr(w, &self.worker);
        w.u32(self.dispute_window).u64(self.seed);
    }

    /// Decode what [`Self::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            client_key: r.array("client key")?,
            worker_key: r.array("worker key")?,
            client: read_addr(r, "client address")?,
            worker: read_addr(r, "worker address")?,
            dispute_window: r.u32("dispute window")?,
            seed: r.u64("channel seed")?,
        })
    }
}

/// Write a basechain/masterchain address as workchain byte plus 32-byte account id.
pub fn write_addr(w: &mut Writer, addr: &StdAddr) {
    w.u8(addr.workchain as u8).fixed(addr.address.as_array());
}

/// Read an address written by [`write_addr`].
pub fn read_addr(r: &mut Reader<'_>, field: &'static str) -> Result<StdAddr, CodecError> {
    let workchain = r.u8(field)? as i8;
    if workchain != 0 && workchain != -1 {
        return Err(CodecError::Invalid { field, reason: format!("workchain {workchain}") });
    }
    Ok(StdAddr::new(workchain, HashBytes(r.array(field)?)))
}

/// What `get_channel_state` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelState {
    /// Total deposited (excluding fee buffers), nanotons.
    pub deposited: u64,
    /// Total paid to the worker, nanotons.
    pub claimed: u64,
    /// Seqno of the voucher that last paid (diagnostic: version 2 orders by the cumulative
    /// amount, never by this).
    pub last_seqno: u64,
    /// Unix time the client started closing; 0 while open.
    pub close_started_at: u32,
    /// Dispute window, seconds.
    pub dispute_window: u32,
}

impl ChannelState {
    /// Deposited and not yet paid out.
    pub fn available(&self) -> u64 {
        self.deposited.saturating_sub(self.claimed)
    }

    /// When a started close may be finished, if one was started.
    pub fn closes_at(&self) -> Option<u64> {
        (self.close_started_at != 0)
            .then(|| u64::from(self.close_started_at) + u64::from(self.dispute_window))
    }
}

fn header(op: u32, query_id: u64) -> Result<CellBuilder, PaymentError> {
    let mut b = CellBuilder::new();
    b.store_u32(op)?;
    b.store_u64(query_id)?;
    Ok(b)
}

/// Body of a deposit (and of the deploy message).
pub fn top_up_body(query_id: u64, amount: u64) -> Result<Cell, PaymentError> {
    let mut b = header(op::TOP_UP, query_id)?;
    Tokens::new(amount.into()).store_into(&mut b, Cell::empty_context())?;
    Ok(b.build()?)
}

/// Body of a claim.
pub fn claim_body(query_id: u64, voucher: &SignedVoucher) -> Result<Cell, PaymentError> {
    let mut b = header(op::CLAIM, query_id)?;
    b.store_raw(&voucher.signature, 512)?;
    b.store_reference(voucher.voucher.cell()?)?;
    Ok(b.build()?)
}

/// Body of the client's close request.
pub fn start_close_body(query_id: u64) -> Result<Cell, PaymentError> {
    Ok(header(op::START_CLOSE, query_id)?.build()?)
}

/// Body of the message that finishes a close after the window.
pub fn finish_close_body(query_id: u64) -> Result<Cell, PaymentError> {
    Ok(header(op::FINISH_CLOSE, query_id)?.build()?)
}

/// Body of a cooperative close carrying both signatures: the client's in the body, the close
/// request in the first reference and the worker's signature alone in the second (one cell holds
/// at most 1,023 bits).
pub fn coop_close_body(
    query_id: u64,
    close: &CloseRequest,
    client_sig: &[u8; 64],
    worker_sig: &[u8; 64],
) -> Result<Cell, PaymentError> {
    let mut b = header(op::COOP_CLOSE, query_id)?;
    b.store_raw(client_sig, 512)?;
    b.store_reference(close.cell()?)?;
    let mut sig = CellBuilder::new();
    sig.store_raw(worker_sig, 512)?;
    b.store_reference(sig.build()?)?;
    Ok(b.build()?)
}

/// The op code and query id at the start of a body, if it has them.
pub fn body_op(body: &Cell) -> Option<(u32, u64)> {
    let mut s = body.as_slice().ok()?;
    let op = s.load_u32().ok()?;
    let query_id = s.load_u64().ok()?;
    Some((op, query_id))
}

/// The amount in a payout body (`op query_id pay:Coins`).
pub fn payout_amount(body: &Cell) -> Option<u64> {
    let mut s = body.as_slice().ok()?;
    if s.load_u32().ok()? != op::PAYOUT {
        return None;
    }
    s.load_u64().ok()?;
    let pay = Tokens::load_from(&mut s).ok()?;
    u64::try_from(pay.into_inner()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChannelParams {
        ChannelParams {
            client_key: [1; 32],
            worker_key: [2; 32],
            client: StdAddr::new(0, HashBytes([3; 32])),
            worker: StdAddr::new(0, HashBytes([4; 32])),
            dispute_window: 3600,
            seed: 7,
        }
    }

    #[test]
    fn code_decodes_and_addresses_depend_on_every_parameter() {
        code().unwrap();
        let base = params().address().unwrap();
        assert_eq!(base, params().address().unwrap(), "the address is deterministic");
        let mut variants = vec![];
        let mut p = params();
        p.seed = 8;
        variants.push(p);
        let mut p = params();
        p.dispute_window = 60;
        variants.push(p);
        let mut p = params();
        p.client_key[0] = 9;
        variants.push(p);
        let mut p = params();
        p.worker = StdAddr::new(0, HashBytes([5; 32]));
        variants.push(p);
        for v in variants {
            assert_ne!(v.address().unwrap(), base);
        }
    }

    #[test]
    fn params_round_trip_and_reject_bad_workchains() {
        let mut w = Writer::new();
        params().encode(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(ChannelParams::decode(&mut r).unwrap(), params());
        r.finish().unwrap();
        let mut bad = bytes.clone();
        bad[64] = 5;
        assert!(ChannelParams::decode(&mut Reader::new(&bad)).is_err());
    }

    #[test]
    fn payout_amount_reads_only_payout_bodies() {
        let mut b = header(op::PAYOUT, 1).unwrap();
        Tokens::new(12345).store_into(&mut b, Cell::empty_context()).unwrap();
        assert_eq!(payout_amount(&b.build().unwrap()), Some(12345));
        assert_eq!(payout_amount(&top_up_body(1, 12345).unwrap()), None);
        assert_eq!(body_op(&start_close_body(9).unwrap()), Some((op::START_CLOSE, 9)));
    }
}
