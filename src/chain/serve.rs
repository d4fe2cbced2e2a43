//! A [`LocalChain`] behind the subset of the TON Center HTTP API v2 that
//! [`Toncenter`](super::toncenter::Toncenter) uses, so nodes and tools talk to a devnet chain
//! exactly as they talk to testnet or mainnet:
//!
//! - `GET  /api/v2/getAddressInformation?address=`
//! - `POST /api/v2/runGetMethod` with `{"address", "method", "stack": []}`
//! - `POST /api/v2/sendBoc` with `{"boc"}` (executed at once, with everything it sets off)
//! - `GET  /api/v2/getTransactions?address=&limit=[&lt=&hash=][&to_lt=]`
//! - `GET  /api/v2/getMasterchainInfo`
//! - `GET  /api/v2/getBlockHeader?workchain=-1&shard=-9223372036854775808&seqno=` (`gen_utime` is
//!   the chain's clock; the masterchain "seqno" counts executed transactions)
//!
//! Answers are Toncenter's envelopes: `{"ok":true,"result":...}`, or
//! `{"ok":false,"error":...,"code":N}` with HTTP status `N` (400 for bad input and for rejected
//! external messages, 401 for a missing or wrong API key). Account code and data, message details
//! and fee breakdowns are not reported.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tycho_types::boc::Boc;
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

use super::local::LocalChain;
use super::{AccountStatus, Chain, ChainError, StackValue, TxSummary, parse_address};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Most transactions one `getTransactions` call returns (as Toncenter).
const MAX_LIMIT: usize = 100;
/// The masterchain's only shard, as Toncenter writes it.
const MASTER_SHARD: i64 = i64::MIN;
/// The exit code Toncenter reports for get-methods on accounts without code.
const NO_CODE_EXIT: i32 = -13;

#[derive(Clone)]
struct AppState {
    chain: Arc<LocalChain>,
    api_key: Option<Arc<str>>,
}

/// A refusal in Toncenter's shape.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> Self {
        let status = match e {
            ChainError::Storage(_) | ChainError::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "ok": false, "error": self.message, "code": self.status.as_u16() });
        (self.status, Json(body)).into_response()
    }
}

type Answer = Result<Json<Value>, ApiError>;

fn ok(result: Value) -> Answer {
    Ok(Json(json!({ "ok": true, "result": result })))
}

/// The API's routes under `/api/v2`, answering for `chain`; with `api_key`, every request must
/// carry it (`X-API-Key` header or `api_key` query parameter).
pub fn router(chain: Arc<LocalChain>, api_key: Option<String>) -> Router {
    let state = AppState { chain, api_key: api_key.map(Arc::from) };
    let api = Router::new()
        .route("/getAddressInformation", get(address_information))
        .route("/runGetMethod", post(run_get_method))
        .route("/sendBoc", post(send_boc))
        .route("/getTransactions", get(transactions))
        .route("/getMasterchainInfo", get(masterchain_info))
        .route("/getBlockHeader", get(block_header));
    Router::new()
        .nest("/api/v2", api)
        .fallback(|| async { ApiError { status: StatusCode::NOT_FOUND, message: "unknown method".into() } })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serve `chain` on `listener` until `shutdown` completes.
pub async fn serve(
    chain: Arc<LocalChain>,
    listener: tokio::net::TcpListener,
    api_key: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(chain, api_key)).with_graceful_shutdown(shutdown).await
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let header = request.headers().get("x-api-key").is_some_and(|v| same(v.as_bytes(), key.as_bytes()));
        let query = || {
            Query::<HashMap<String, String>>::try_from_uri(request.uri())
                .is_ok_and(|q| q.get("api_key").is_some_and(|v| same(v.as_bytes(), key.as_bytes())))
        };
        if !header && !query() {
            let message = "API key does not exist".to_owned();
            return ApiError { status: StatusCode::UNAUTHORIZED, message }.into_response();
        }
    }
    next.run(request).await
}

/// Equality that takes as long wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::bad(e.body_text()))
}

fn raw_body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError { status: e.status(), message: e.body_text() })
}

fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    json_body(&raw_body(b)?)
}

fn address(text: &str) -> Result<StdAddr, ApiError> {
    parse_address(text).map_err(|e| ApiError::bad(e.to_string()))
}

/// Run blocking chain work (the executor, the state file) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("chain task failed: {e}"),
    })
}

/// Standard base64 with padding, as Toncenter writes hashes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() { char::from(ALPHABET[sextet as usize]) } else { '=' });
        }
    }
    out
}

fn transaction_id(lt: u64, hash: &HashBytes) -> Value {
    json!({ "@type": "internal.transactionId", "lt": lt.to_string(), "hash": base64(hash.as_slice()) })
}

fn block_id(seqno: u64) -> Value {
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

#[derive(Deserialize)]
struct AddressQuery {
    address: String,
}

async fn address_information(
    State(s): State<AppState>,
    q: Result<Query<AddressQuery>, QueryRejection>,
) -> Answer {
    let addr = address(&query(q)?.address)?;
    let info = s.chain.account(&addr).await?;
    let last_hash = s.chain.history(&addr, 1)?.first().map_or(HashBytes::ZERO, |t| t.hash);
    let state = match info.status {
        AccountStatus::Active => "active",
        AccountStatus::Frozen => "frozen",
        AccountStatus::Uninit | AccountStatus::Nonexistent => "uninitialized",
    };
    ok(json!({
        "@type": "raw.fullAccountState",
        "balance": info.balance.to_string(),
        "code": "",
        "data": "",
        "last_transaction_id": transaction_id(info.last_lt, &last_hash),
        "frozen_hash": "",
        "sync_utime": s.chain.now_secs(),
        "state": state,
    }))
}

#[derive(Deserialize)]
struct RunGetMethod {
    address: String,
    method: String,
    #[serde(default)]
    stack: Vec<Value>,
}

pub(crate) fn stack_entry(v: &StackValue) -> Value {
    match v {
        StackValue::Int(i) => json!(["num", format!("{i:#x}")]),
        StackValue::Cell(c) => json!(["cell", { "bytes": Boc::encode_base64(c) }]),
        StackValue::Slice(c) => json!(["slice", { "bytes": Boc::encode_base64(c) }]),
        StackValue::Null => json!(["null"]),
        StackValue::Other => json!(["unsupported", null]),
    }
}

async fn run_get_method(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Answer {
    let req: RunGetMethod = body(b)?;
    let addr = address(&req.address)?;
    if !req.stack.is_empty() {
        return Err(ApiError::bad("get-method arguments are not supported"));
    }
    let run_result = |exit_code: i32, stack: Vec<Value>| {
        ok(json!({ "@type": "smc.runResult", "gas_used": 0, "stack": stack, "exit_code": exit_code }))
    };
    if s.chain.account(&addr).await?.status != AccountStatus::Active {
        return run_result(NO_CODE_EXIT, Vec::new());
    }
    let chain = s.chain.clone();
    match blocking(move || chain.get_method(&addr, &req.method)).await? {
        Ok(r) => run_result(r.exit_code, r.stack.iter().map(stack_entry).collect()),
        // LocalChain reports a failed get-method's exit code in its reason.
        Err(ChainError::GetMethod { reason, .. }) => {
            match reason.strip_prefix("exit code ").map(str::parse) {
                Some(Ok(code)) => run_result(code, Vec::new()),
                _ => Err(ApiError::bad(reason)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct SendBoc {
    boc: String,
}

async fn send_boc(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Answer {
    submit_boc(s.chain, &raw_body(b)?).await
}

/// `sendBoc` with the request body `bytes`: the answer as sent.
pub(crate) async fn send_boc_body(chain: Arc<LocalChain>, bytes: &[u8]) -> Response {
    submit_boc(chain, bytes).await.into_response()
}

async fn submit_boc(chain: Arc<LocalChain>, bytes: &[u8]) -> Answer {
    let req: SendBoc = json_body(bytes)?;
    let message = Boc::decode_base64(req.boc.trim())
        .map_err(|e| ApiError::bad(format!("failed to parse external message: {e}")))?;
    match blocking(move || chain.execute(message)).await? {
        Ok(_) => ok(json!({ "@type": "ok" })),
        Err(e @ (ChainError::Storage(_) | ChainError::Unavailable(_))) => Err(e.into()),
        Err(e) => Err(ApiError::bad(format!("cannot apply external message to current state : {e}"))),
    }
}

#[derive(Deserialize)]
struct TransactionsQuery {
    address: String,
    limit: Option<usize>,
    lt: Option<u64>,
    hash: Option<String>,
    to_lt: Option<u64>,
}

fn transaction_entry(addr: &StdAddr, tx: &TxSummary) -> Value {
    json!({
        "@type": "raw.transaction",
        "address": { "@type": "accountAddress", "account_address": super::friendly(addr, true) },
        "utime": tx.now,
        "data": Boc::encode_base64(&tx.cell),
        "transaction_id": transaction_id(tx.lt, &tx.hash),
        "fee": tx.total_fees.to_string(),
    })
}

async fn transactions(
    State(s): State<AppState>,
    q: Result<Query<TransactionsQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let addr = address(&q.address)?;
    let limit = q.limit.unwrap_or(10);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad(format!("limit must be at most {MAX_LIMIT}")));
    }
    let start = match (q.lt, q.hash.as_deref()) {
        (None, None) => None,
        (Some(lt), Some(hash)) => {
            Some((lt, HashBytes::from_str(hash).map_err(|e| ApiError::bad(format!("hash: {e}")))?))
        }
        _ => return Err(ApiError::bad("lt and hash must be given together")),
    };
    let history = s.chain.history(&addr, usize::MAX)?;
    let from = match start {
        None => 0,
        Some((lt, hash)) => {
            history.iter().position(|t| t.lt == lt && t.hash == hash).unwrap_or(history.len())
        }
    };
    let to_lt = q.to_lt.unwrap_or(0);
    let page: Vec<Value> = history[from..]
        .iter()
        .take_while(|t| t.lt > to_lt)
        .take(limit)
        .map(|t| transaction_entry(&addr, t))
        .collect();
    ok(Value::Array(page))
}

fn masterchain_seqno(chain: &LocalChain) -> u64 {
    chain.transaction_count() + 1
}

async fn masterchain_info(State(s): State<AppState>) -> Answer {
    ok(json!({
        "@type": "blocks.masterchainInfo",
        "last": block_id(masterchain_seqno(&s.chain)),
        "state_root_hash": base64(HashBytes::ZERO.as_slice()),
        "init": block_id(0),
    }))
}

#[derive(Deserialize)]
struct BlockQuery {
    workchain: i32,
    shard: i64,
    seqno: u64,
}

async fn block_header(State(s): State<AppState>, q: Result<Query<BlockQuery>, QueryRejection>) -> Answer {
    let q = query(q)?;
    if q.workchain != -1 || q.shard != MASTER_SHARD {
        return Err(ApiError::bad("only masterchain blocks are known"));
    }
    if q.seqno == 0 || q.seqno > masterchain_seqno(&s.chain) {
        return Err(ApiError::bad(format!("block {} not found", q.seqno)));
    }
    ok(json!({
        "@type": "blocks.header",
        "id": block_id(q.seqno),
        "is_key_block": false,
        "gen_utime": s.chain.now_secs(),
        "prev_blocks": [],
    }))
}
