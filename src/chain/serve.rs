//! A [`LocalChain`] behind TON Center's HTTP API v2, so nodes, tools and the official TON SDKs
//! talk to a devnet chain exactly as they talk to testnet or mainnet. One set of methods
//! (`methods`), served in two forms under `/api/v2`:
//!
//! - REST, as [`Toncenter`](super::toncenter::Toncenter) uses it: `GET getAddressInformation`,
//!   `getAddressBalance`, `getAddressState`, `getWalletInformation` (`?address=`),
//!   `getTransactions` (`?address=&limit=[&lt=&hash=][&to_lt=]`), `getMasterchainInfo`,
//!   `getBlockHeader` (`?workchain=-1&shard=-9223372036854775808&seqno=`); `POST runGetMethod`
//!   (`{"address", "method", "stack": []}`), `sendBoc` and `sendBocReturnHash` (`{"boc"}`:
//!   executed at once, with everything it sets off), `estimateFee` (`{"address", "body",
//!   "init_code", "init_data", "ignore_chksig"}`: emulated, nothing kept).
//! - JSON-RPC, as `@ton/ton`'s `TonClient` uses it: `POST jsonRPC` with `{"id", "jsonrpc": "2.0",
//!   "method", "params": {...}}`, the same eleven methods by the same names and parameters
//!   (`jsonrpc`).
//!
//! Answers are Toncenter's envelopes: `{"ok":true,"result":...}`, or
//! `{"ok":false,"error":...,"code":N}` with HTTP status `N` (400 for bad input and for rejected
//! external messages, 401 for a missing or wrong API key, 422 for an unknown JSON-RPC method);
//! JSON-RPC answers add `"jsonrpc":"2.0"` and echo the request's `id`. The masterchain "seqno"
//! counts executed transactions, block hashes are zeros (the chain has no blocks) and
//! `gen_utime` is the chain's clock. Get-method arguments are refused. The shapes of accounts,
//! transactions and messages are described in `json`.

mod json;
mod jsonrpc;
mod methods;
mod wallets;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ChainError;
use super::local::LocalChain;

pub(crate) use json::stack_entry;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
struct AppState {
    chain: Arc<LocalChain>,
    api_key: Option<Arc<str>>,
}

/// A refusal in Toncenter's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
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

/// What a method answers: its `result`, or a refusal.
type Outcome = Result<Value, ApiError>;
type Answer = Result<Json<Value>, ApiError>;

fn ok(result: Value) -> Json<Value> {
    Json(json!({ "ok": true, "result": result }))
}

/// The API's routes under `/api/v2`, answering for `chain`; with `api_key`, every request must
/// carry it (`X-API-Key` header or `api_key` query parameter).
pub fn router(chain: Arc<LocalChain>, api_key: Option<String>) -> Router {
    let state = AppState { chain, api_key: api_key.map(Arc::from) };
    let api = Router::new()
        .route("/getAddressInformation", rest_get(methods::address_information))
        .route("/getAddressBalance", rest_get(methods::address_balance))
        .route("/getAddressState", rest_get(methods::address_state))
        .route("/getWalletInformation", rest_get(methods::wallet_information))
        .route("/runGetMethod", rest_post(methods::run_get_method))
        .route("/sendBoc", rest_post(methods::send_boc))
        .route("/sendBocReturnHash", rest_post(methods::send_boc_return_hash))
        .route("/estimateFee", rest_post(methods::estimate_fee))
        .route("/getTransactions", rest_get(methods::transactions))
        .route("/getMasterchainInfo", rest_get(methods::masterchain_info))
        .route("/getBlockHeader", rest_get(methods::block_header))
        .route("/jsonRPC", post(jsonrpc::handle));
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

/// A REST `GET` route: the query string parsed as `P`, answered by `method`.
fn rest_get<P, F, Fut>(method: F) -> MethodRouter<AppState>
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(Arc<LocalChain>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    get(move |State(s): State<AppState>, q: Result<Query<P>, QueryRejection>| async move {
        let Query(params) = q.map_err(|e| ApiError::bad(e.body_text()))?;
        method(s.chain, params).await.map(ok)
    })
}

/// A REST `POST` route: the JSON body parsed as `P`, answered by `method`.
fn rest_post<P, F, Fut>(method: F) -> MethodRouter<AppState>
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(Arc<LocalChain>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    post(move |State(s): State<AppState>, b: Result<Bytes, BytesRejection>| async move {
        let params = json_body(&raw_body(b)?)?;
        method(s.chain, params).await.map(ok)
    })
}

fn raw_body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError { status: e.status(), message: e.body_text() })
}

fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

/// `sendBoc` with the request body `bytes`: the answer as sent.
pub(crate) async fn send_boc_body(chain: Arc<LocalChain>, bytes: &[u8]) -> Response {
    let answer: Answer = async { methods::send_boc(chain, json_body(bytes)?).await.map(ok) }.await;
    answer.into_response()
}
