//! The methods `chain serve` answers, each one function of the chain and its typed parameters,
//! shared by the REST routes and JSON-RPC. Numbers may come as JSON numbers or as strings
//! ([`Lenient`]): query strings carry only strings, and SDKs send `lt` as a string.
//!
//! - `getAddressInformation`: balance, state, code and data (`""` when none), the last
//!   transaction, the current block and time; `getAddressBalance` and `getAddressState` each one
//!   of those; `getWalletInformation` adds the wallet's type, seqno and id for the standard
//!   wallets it recognises by code ([`wallets`](super::wallets)).
//! - `runGetMethod`: by name, without arguments; an account without code gives exit code −13.
//! - `sendBoc` / `sendBocReturnHash`: executed at once with everything it sets off.
//! - `getTransactions`: newest first from `(lt, hash)` inclusive (hash in hex or base64), down to
//!   `to_lt` exclusive, at most [`MAX_LIMIT`].
//! - `estimateFee`: the external message is emulated on the current state and nothing is kept;
//!   `source_fees` come from that transaction (`in_fwd_fee` is the import fee), and
//!   `destination_fees` is empty (what it sends is not emulated further).

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Value, json};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{
    Account, AccountState, ExtInMsgInfo, IntAddr, Message, MsgInfo, StateInit, StdAddr,
};
use tycho_types::num::Tokens;

use super::json::{
    MASTER_SHARD, base64, block_id, boc_or_empty, stack_entry, transaction_entry, transaction_id,
};
use super::{ApiError, Outcome, wallets};
use crate::chain::local::LocalChain;
use crate::chain::{ChainError, parse_address};

/// Most transactions one `getTransactions` call returns (as Toncenter).
const MAX_LIMIT: u64 = 100;
/// Transactions returned when no limit is given (as Toncenter).
const DEFAULT_LIMIT: u64 = 10;
/// The exit code Toncenter reports for get-methods on accounts without code.
const NO_CODE_EXIT: i32 = -13;

/// A parameter given as a JSON number or boolean, or as a string holding one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lenient<T>(pub T);

struct LenientVisitor<T>(PhantomData<T>);

impl<T: FromStr<Err: Display>> Visitor<'_> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number, or a string holding one")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.trim().parse().map(Lenient).map_err(|e| E::custom(format!("{v:?}: {e}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }
}

impl<'de, T: FromStr<Err: Display>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(PhantomData))
    }
}

/// `?address=`.
#[derive(Deserialize)]
pub(super) struct AddressParams {
    address: String,
}

/// No parameters (any given are ignored).
#[derive(Deserialize)]
pub(super) struct NoParams {}

#[derive(Deserialize)]
pub(super) struct GetMethodParams {
    address: String,
    method: String,
    #[serde(default)]
    stack: Vec<Value>,
}

#[derive(Deserialize)]
pub(super) struct BocParams {
    boc: String,
}

#[derive(Deserialize)]
pub(super) struct TransactionsParams {
    address: String,
    limit: Option<Lenient<u64>>,
    lt: Option<Lenient<u64>>,
    hash: Option<String>,
    to_lt: Option<Lenient<u64>>,
}

#[derive(Deserialize)]
pub(super) struct BlockParams {
    workchain: Lenient<i32>,
    shard: Lenient<i64>,
    seqno: Lenient<u64>,
}

#[derive(Deserialize)]
pub(super) struct FeeParams {
    address: String,
    body: String,
    #[serde(default)]
    init_code: String,
    #[serde(default)]
    init_data: String,
    /// Toncenter's default: signatures are not checked.
    ignore_chksig: Option<Lenient<bool>>,
}

fn address(text: &str) -> Result<StdAddr, ApiError> {
    parse_address(text).map_err(|e| ApiError::bad(e.to_string()))
}

/// A base64 BOC parameter; `None` when empty.
fn cell_param(name: &str, text: &str) -> Result<Option<Cell>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Boc::decode_base64(text).map(Some).map_err(|e| ApiError::bad(format!("{name}: not a base64 BOC: {e}")))
}

/// Run blocking chain work (the executor, the state file) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("chain task failed: {e}")))
}

fn masterchain_seqno(chain: &LocalChain) -> u64 {
    chain.transaction_count() + 1
}

/// One account read in one go.
struct Snapshot {
    account: Option<Account>,
    last_lt: u64,
    last_hash: HashBytes,
}

impl Snapshot {
    fn read(chain: &LocalChain, addr: &StdAddr) -> Result<Self, ApiError> {
        let shard = chain.shard_account(addr)?;
        let account = shard.load_account().map_err(ChainError::from)?;
        Ok(Self { account, last_lt: shard.last_trans_lt, last_hash: shard.last_trans_hash })
    }

    fn balance(&self) -> String {
        self.account.as_ref().map_or(0, |a| a.balance.tokens.into_inner()).to_string()
    }

    fn state(&self) -> &'static str {
        match self.account.as_ref().map(|a| &a.state) {
            Some(AccountState::Active(_)) => "active",
            Some(AccountState::Frozen(_)) => "frozen",
            Some(AccountState::Uninit) | None => "uninitialized",
        }
    }

    fn init(&self) -> Option<&StateInit> {
        match self.account.as_ref().map(|a| &a.state) {
            Some(AccountState::Active(init)) => Some(init),
            _ => None,
        }
    }

    fn frozen_hash(&self) -> String {
        match self.account.as_ref().map(|a| &a.state) {
            Some(AccountState::Frozen(hash)) => base64(hash.as_slice()),
            _ => String::new(),
        }
    }

    fn last_transaction(&self) -> Value {
        transaction_id(self.last_lt, &self.last_hash)
    }
}

pub(super) async fn address_information(chain: Arc<LocalChain>, p: AddressParams) -> Outcome {
    let snap = Snapshot::read(&chain, &address(&p.address)?)?;
    let init = snap.init();
    Ok(json!({
        "@type": "raw.fullAccountState",
        "balance": snap.balance(),
        "extra_currencies": [],
        "code": boc_or_empty(init.and_then(|i| i.code.as_ref())),
        "data": boc_or_empty(init.and_then(|i| i.data.as_ref())),
        "last_transaction_id": snap.last_transaction(),
        "block_id": block_id(masterchain_seqno(&chain)),
        "frozen_hash": snap.frozen_hash(),
        "sync_utime": chain.now_secs(),
        "state": snap.state(),
    }))
}

pub(super) async fn address_balance(chain: Arc<LocalChain>, p: AddressParams) -> Outcome {
    Ok(Value::String(Snapshot::read(&chain, &address(&p.address)?)?.balance()))
}

pub(super) async fn address_state(chain: Arc<LocalChain>, p: AddressParams) -> Outcome {
    Ok(json!(Snapshot::read(&chain, &address(&p.address)?)?.state()))
}

pub(super) async fn wallet_information(chain: Arc<LocalChain>, p: AddressParams) -> Outcome {
    let snap = Snapshot::read(&chain, &address(&p.address)?)?;
    let mut info = json!({
        "wallet": false,
        "balance": snap.balance(),
        "account_state": snap.state(),
        "last_transaction_id": snap.last_transaction(),
    });
    if let Some(w) = snap.init().and_then(wallets::recognise) {
        info["wallet"] = json!(true);
        info["wallet_type"] = json!(w.kind);
        info["seqno"] = json!(w.seqno);
        if let Some(id) = w.wallet_id {
            info["wallet_id"] = json!(id);
        }
    }
    Ok(info)
}

pub(super) async fn run_get_method(chain: Arc<LocalChain>, p: GetMethodParams) -> Outcome {
    let addr = address(&p.address)?;
    if !p.stack.is_empty() {
        return Err(ApiError::bad("get-method arguments are not supported by the devnet chain"));
    }
    let run_result = |exit_code: i32, gas_used: u64, stack: Vec<Value>| json!({ "@type": "smc.runResult", "gas_used": gas_used, "stack": stack, "exit_code": exit_code });
    if Snapshot::read(&chain, &addr)?.init().is_none() {
        return Ok(run_result(NO_CODE_EXIT, 0, Vec::new()));
    }
    let method = p.method;
    match blocking(move || chain.get_method(&addr, &method)).await? {
        Ok(r) => Ok(run_result(r.exit_code, r.gas_used, r.stack.iter().map(stack_entry).collect())),
        // LocalChain reports a failed get-method's exit code in its reason.
        Err(ChainError::GetMethod { reason, .. }) => {
            match reason.strip_prefix("exit code ").map(str::parse) {
                Some(Ok(code)) => Ok(run_result(code, 0, Vec::new())),
                _ => Err(ApiError::bad(reason)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Execute the external message in `boc`; its hash.
async fn submit(chain: Arc<LocalChain>, boc: &str) -> Result<HashBytes, ApiError> {
    let message = Boc::decode_base64(boc.trim())
        .map_err(|e| ApiError::bad(format!("failed to parse external message: {e}")))?;
    let hash = *message.repr_hash();
    match blocking(move || chain.execute(message)).await? {
        Ok(_) => Ok(hash),
        Err(e @ (ChainError::Storage(_) | ChainError::Unavailable(_))) => Err(e.into()),
        Err(e) => Err(ApiError::bad(format!("cannot apply external message to current state : {e}"))),
    }
}

pub(super) async fn send_boc(chain: Arc<LocalChain>, p: BocParams) -> Outcome {
    submit(chain, &p.boc).await?;
    Ok(json!({ "@type": "ok" }))
}

pub(super) async fn send_boc_return_hash(chain: Arc<LocalChain>, p: BocParams) -> Outcome {
    let hash = submit(chain, &p.boc).await?;
    Ok(json!({ "@type": "raw.extMessageInfo", "hash": base64(hash.as_slice()) }))
}

pub(super) async fn transactions(chain: Arc<LocalChain>, p: TransactionsParams) -> Outcome {
    let addr = address(&p.address)?;
    let limit = p.limit.map_or(DEFAULT_LIMIT, |l| l.0);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad(format!("limit must be at most {MAX_LIMIT}")));
    }
    let start = match (p.lt, p.hash.as_deref()) {
        (None, None) => None,
        (Some(Lenient(lt)), Some(hash)) => {
            Some((lt, HashBytes::from_str(hash.trim()).map_err(|e| ApiError::bad(format!("hash: {e}")))?))
        }
        _ => return Err(ApiError::bad("lt and hash must be given together")),
    };
    let history = chain.history(&addr, usize::MAX)?;
    let from = match start {
        None => 0,
        Some((lt, hash)) => {
            history.iter().position(|t| t.lt == lt && t.hash == hash).unwrap_or(history.len())
        }
    };
    let to_lt = p.to_lt.map_or(0, |l| l.0);
    let page = history[from..]
        .iter()
        .take_while(|t| t.lt > to_lt)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|t| transaction_entry(&addr, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::Array(page))
}

pub(super) async fn masterchain_info(chain: Arc<LocalChain>, _: NoParams) -> Outcome {
    Ok(json!({
        "@type": "blocks.masterchainInfo",
        "last": block_id(masterchain_seqno(&chain)),
        "state_root_hash": base64(HashBytes::ZERO.as_slice()),
        "init": block_id(0),
    }))
}

pub(super) async fn block_header(chain: Arc<LocalChain>, p: BlockParams) -> Outcome {
    if p.workchain.0 != -1 || p.shard.0 != MASTER_SHARD {
        return Err(ApiError::bad("only masterchain blocks are known"));
    }
    let seqno = p.seqno.0;
    if seqno == 0 || seqno > masterchain_seqno(&chain) {
        return Err(ApiError::bad(format!("block {seqno} not found")));
    }
    Ok(json!({
        "@type": "blocks.header",
        "id": block_id(seqno),
        "is_key_block": false,
        "gen_utime": chain.now_secs(),
        "prev_blocks": [],
    }))
}

/// The inbound external message `estimateFee` describes.
fn external_message(
    dst: StdAddr,
    body: &Cell,
    code: Option<Cell>,
    data: Option<Cell>,
) -> Result<Cell, ApiError> {
    let init = (code.is_some() || data.is_some()).then(|| StateInit { code, data, ..StateInit::default() });
    let message = Message {
        info: MsgInfo::ExtIn(ExtInMsgInfo { src: None, dst: IntAddr::Std(dst), import_fee: Tokens::ZERO }),
        init,
        body: body.as_slice().map_err(|e| ApiError::bad(format!("body: {e}")))?,
        layout: None,
    };
    CellBuilder::build_from(message).map_err(|e| ApiError::bad(format!("message: {e}")))
}

pub(super) async fn estimate_fee(chain: Arc<LocalChain>, p: FeeParams) -> Outcome {
    let addr = address(&p.address)?;
    let body = cell_param("body", &p.body)?.ok_or_else(|| ApiError::bad("body: required"))?;
    let code = cell_param("init_code", &p.init_code)?;
    let data = cell_param("init_data", &p.init_data)?;
    let message = external_message(addr, &body, code, data)?;
    let ignore_signatures = p.ignore_chksig.is_none_or(|b| b.0);
    let tx = match blocking(move || chain.emulate(message, ignore_signatures)).await? {
        Ok(tx) => tx,
        Err(e @ (ChainError::Storage(_) | ChainError::Unavailable(_))) => return Err(e.into()),
        Err(e) => return Err(ApiError::bad(format!("cannot estimate the message's fees: {e}"))),
    };
    let fees = tx.fees()?;
    let import = fees.total.saturating_sub(fees.storage.saturating_add(fees.gas).saturating_add(fees.action));
    Ok(json!({
        "@type": "query.fees",
        "source_fees": {
            "@type": "fees",
            "in_fwd_fee": import,
            "storage_fee": fees.storage,
            "gas_fee": fees.gas,
            "fwd_fee": fees.fwd,
        },
        "destination_fees": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_as_json_numbers_or_as_strings_holding_one() {
        let p: TransactionsParams =
            serde_json::from_value(json!({ "address": "a", "limit": 5, "lt": " 17 ", "to_lt": 3 })).unwrap();
        assert_eq!(
            (p.limit.map(|l| l.0), p.lt.map(|l| l.0), p.to_lt.map(|l| l.0)),
            (Some(5), Some(17), Some(3))
        );
        let p: BlockParams =
            serde_json::from_value(json!({ "workchain": "-1", "shard": "-9223372036854775808", "seqno": 2 }))
                .unwrap();
        assert_eq!((p.workchain.0, p.shard.0, p.seqno.0), (-1, i64::MIN, 2));
        let p: FeeParams =
            serde_json::from_value(json!({ "address": "a", "body": "", "ignore_chksig": "false" })).unwrap();
        assert!(!p.ignore_chksig.unwrap().0);
        for bad in [json!(1.5), json!("1.5"), json!(-1), json!([1]), json!("18446744073709551616")] {
            let e = serde_json::from_value::<TransactionsParams>(json!({ "address": "a", "lt": bad }));
            assert!(e.is_err(), "{bad}");
        }
    }
}
