//! Transactions and messages reduced to what cocoon reads from them (who paid whom, how much, with
//! which op, and whether the contract succeeded), parsed from the transaction cell so that every
//! backend reports them the same way.

use cocoon_protocol::payments::channel::body_op;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{ComputePhase, IntAddr, Message, MsgInfo, StdAddr, Transaction, TxInfo};
use tycho_types::num::Tokens;

use super::ChainError;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgSummary {
    /// Sender (internal messages).
    pub src: Option<StdAddr>,
    /// Recipient (internal and inbound external messages).
    pub dst: Option<StdAddr>,
    /// Value carried, nanotons.
    pub value: u64,
    /// Forwarding fee still owed on delivery (internal messages; not part of `value` nor of the
    /// sending transaction's fees).
    pub fwd_fee: u64,
    /// Whether this is a bounce.
    pub bounced: bool,
    /// Inbound external message.
    pub external: bool,
    /// The body.
    pub body: Cell,
    /// The whole message cell (what the embedded chain delivers).
    pub cell: Cell,
}

impl MsgSummary {
    /// The op code at the start of the body, if any.
    pub fn op(&self) -> Option<u32> {
        body_op(&self.body).map(|(op, _)| op)
    }

    fn parse(cell: &Cell) -> Result<Self, ChainError> {
        let msg = cell.parse::<Message<'_>>()?;
        let body = CellBuilder::build_from(msg.body)?;
        let std = |a: &IntAddr| match a {
            IntAddr::Std(s) => Some(s.clone()),
            IntAddr::Var(_) => None,
        };
        Ok(match &msg.info {
            MsgInfo::Int(i) => Self {
                src: std(&i.src),
                dst: std(&i.dst),
                value: u64::try_from(i.value.tokens.into_inner()).unwrap_or(u64::MAX),
                fwd_fee: u64::try_from(i.fwd_fee.into_inner()).unwrap_or(u64::MAX),
                bounced: i.bounced,
                external: false,
                body,
                cell: cell.clone(),
            },
            MsgInfo::ExtIn(i) => Self {
                src: None,
                dst: std(&i.dst),
                value: 0,
                fwd_fee: 0,
                bounced: false,
                external: true,
                body,
                cell: cell.clone(),
            },
            MsgInfo::ExtOut(i) => Self {
                src: std(&i.src),
                dst: None,
                value: 0,
                fwd_fee: 0,
                bounced: false,
                external: false,
                body,
                cell: cell.clone(),
            },
        })
    }
}

/// A transaction's fees by phase, nanotons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxFees {
    /// Storage fees the storage phase collected.
    pub storage: u64,
    /// Gas fees of the compute phase.
    pub gas: u64,
    /// Forwarding fees of every message the action phase sent (in full, including the part
    /// paid to validators on delivery).
    pub fwd: u64,
    /// The part of the action phase's fees this transaction collected.
    pub action: u64,
    /// Everything this transaction collected (its `total_fees`): for an inbound external
    /// message, the fee for importing it is the rest after storage, gas and action fees.
    pub total: u64,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct TxSummary {
    /// Hash of the transaction cell.
    pub hash: HashBytes,
    /// Logical time.
    pub lt: u64,
    /// Unix time.
    pub now: u32,
    /// The account's id (workchain 0).
    pub account: HashBytes,
    /// What triggered it.
    pub in_msg: Option<MsgSummary>,
    /// What it sent.
    pub out_msgs: Vec<MsgSummary>,
    /// TVM exit code, if the compute phase ran.
    pub exit_code: Option<i32>,
    /// Compute and action phases succeeded and nothing aborted.
    pub success: bool,
    /// Gas used by the compute phase.
    pub gas_used: u64,
    /// All fees the transaction collected, nanotons.
    pub total_fees: u64,
    /// The transaction cell itself.
    pub cell: Cell,
}

impl TxSummary {
    /// Parse a transaction cell.
    pub fn parse(cell: &Cell) -> Result<Self, ChainError> {
        let tx = cell.parse::<Transaction>()?;
        let in_msg = tx.in_msg.as_ref().map(MsgSummary::parse).transpose()?;
        let mut out_msgs = Vec::new();
        for out in tx.out_msgs.values() {
            out_msgs.push(MsgSummary::parse(&out?)?);
        }
        let (mut exit_code, mut success, mut gas_used) = (None, false, 0);
        if let TxInfo::Ordinary(info) = tx.load_info()? {
            if let ComputePhase::Executed(c) = &info.compute_phase {
                exit_code = Some(c.exit_code);
                gas_used = c.gas_used.into_inner();
                success = c.success;
            }
            success &= !info.aborted && info.action_phase.as_ref().is_none_or(|a| a.success);
        }
        Ok(Self {
            hash: *cell.repr_hash(),
            lt: tx.lt,
            now: tx.now,
            account: tx.account,
            in_msg,
            out_msgs,
            exit_code,
            success,
            gas_used,
            total_fees: u64::try_from(tx.total_fees.tokens.into_inner()).unwrap_or(u64::MAX),
            cell: cell.clone(),
        })
    }

    /// Its fees by phase (zeros for phases that did not run).
    pub fn fees(&self) -> Result<TxFees, ChainError> {
        let tx = self.cell.parse::<Transaction>()?;
        let nanotons = |t: Tokens| u64::try_from(t.into_inner()).unwrap_or(u64::MAX);
        let mut fees = TxFees { total: nanotons(tx.total_fees.tokens), ..TxFees::default() };
        if let TxInfo::Ordinary(info) = tx.load_info()? {
            fees.storage = info.storage_phase.map_or(0, |s| nanotons(s.storage_fees_collected));
            if let ComputePhase::Executed(c) = &info.compute_phase {
                fees.gas = nanotons(c.gas_fees);
            }
            if let Some(a) = &info.action_phase {
                fees.fwd = a.total_fwd_fees.map_or(0, nanotons);
                fees.action = a.total_action_fees.map_or(0, nanotons);
            }
        }
        Ok(fees)
    }

    /// The op code of the inbound message.
    pub fn in_op(&self) -> Option<u32> {
        self.in_msg.as_ref().and_then(MsgSummary::op)
    }

    /// Value sent to `dst` by this transaction's outbound messages.
    pub fn sent_to(&self, dst: &StdAddr) -> u64 {
        self.out_msgs.iter().filter(|m| m.dst.as_ref() == Some(dst)).map(|m| m.value).sum()
    }
}
