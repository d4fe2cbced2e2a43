//! How `chain serve` writes chain objects in Toncenter's JSON, in the shapes `@ton/ton` checks:
//! hashes and BOCs in standard base64, 64-bit numbers as decimal strings, addresses user-friendly
//! (bounceable, url-safe) or `""` where a message has none.
//!
//! A transaction carries its BOC (`data`), `fee` (all fees), `storage_fee` (the storage phase)
//! and `other_fee` (the rest), `in_msg` (absent when there is none) and `out_msgs`. A message
//! carries `value`, `fwd_fee`, `created_lt`, its body as `msg.dataRaw` with the body's hash, and
//! `ihr_fee` always `"0"` (TON no longer has instant hypercube routing; the field's bits now hold
//! flags).

use serde_json::{Value, json};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{Message, MsgInfo, StdAddr};

use crate::chain::{ChainError, MsgSummary, StackValue, TxSummary, friendly};

/// The masterchain's only shard, as Toncenter writes it.
pub(super) const MASTER_SHARD: i64 = i64::MIN;

/// Standard base64 with padding, as Toncenter writes hashes.
pub(super) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A cell's BOC in base64, or `""` for none.
pub(super) fn boc_or_empty(cell: Option<&Cell>) -> String {
    cell.map_or_else(String::new, Boc::encode_base64)
}

pub(super) fn transaction_id(lt: u64, hash: &HashBytes) -> Value {
    json!({ "@type": "internal.transactionId", "lt": lt.to_string(), "hash": base64(hash.as_slice()) })
}

pub(super) fn block_id(seqno: u64) -> Value {
    let zero = base64(HashBytes::ZERO.as_slice());
    json!({
        "@type": "ton.blockIdExt",
        "workchain": -1,
        "shard": MASTER_SHARD.to_string(),
        "seqno": seqno,
        "root_hash": zero,
        "file_hash": zero,
    })
}

/// A get-method's stack entry, as Toncenter writes it (integers in hex).
pub(crate) fn stack_entry(v: &StackValue) -> Value {
    match v {
        StackValue::Int(i) => json!(["num", format!("{i:#x}")]),
        StackValue::Cell(c) => json!(["cell", { "bytes": Boc::encode_base64(c) }]),
        StackValue::Slice(c) => json!(["slice", { "bytes": Boc::encode_base64(c) }]),
        StackValue::Null => json!(["null"]),
        StackValue::Other => json!(["unsupported", null]),
    }
}

/// One transaction of `addr`.
pub(super) fn transaction_entry(addr: &StdAddr, tx: &TxSummary) -> Result<Value, ChainError> {
    let fees = tx.fees()?;
    let out_msgs = tx.out_msgs.iter().map(message_entry).collect::<Result<Vec<_>, _>>()?;
    let mut entry = json!({
        "@type": "raw.transaction",
        "address": { "@type": "accountAddress", "account_address": friendly(addr, true) },
        "utime": tx.now,
        "data": Boc::encode_base64(&tx.cell),
        "transaction_id": transaction_id(tx.lt, &tx.hash),
        "fee": fees.total.to_string(),
        "storage_fee": fees.storage.to_string(),
        "other_fee": fees.total.saturating_sub(fees.storage).to_string(),
        "out_msgs": out_msgs,
    });
    if let Some(m) = &tx.in_msg {
        entry["in_msg"] = message_entry(m)?;
    }
    Ok(entry)
}

fn address(a: Option<&StdAddr>) -> String {
    a.map_or_else(String::new, |a| friendly(a, true))
}

/// One message, as Toncenter's `raw.message`.
fn message_entry(m: &MsgSummary) -> Result<Value, ChainError> {
    let msg = m.cell.parse::<Message<'_>>()?;
    let created_lt = match &msg.info {
        MsgInfo::Int(i) => i.created_lt,
        MsgInfo::ExtOut(o) => o.created_lt,
        MsgInfo::ExtIn(_) => 0,
    };
    // A source or destination that is not a standard address (none on this chain) reads as none.
    let init = msg.init.as_ref().map(CellBuilder::build_from).transpose()?;
    Ok(json!({
        "@type": "raw.message",
        "hash": base64(m.cell.repr_hash().as_slice()),
        "source": address(m.src.as_ref()),
        "destination": address(m.dst.as_ref()),
        "value": m.value.to_string(),
        "extra_currencies": [],
        "fwd_fee": m.fwd_fee.to_string(),
        "ihr_fee": "0",
        "created_lt": created_lt.to_string(),
        "body_hash": base64(m.body.repr_hash().as_slice()),
        "msg_data": {
            "@type": "msg.dataRaw",
            "body": Boc::encode_base64(&m.body),
            "init_state": boc_or_empty(init.as_ref()),
        },
    }))
}
