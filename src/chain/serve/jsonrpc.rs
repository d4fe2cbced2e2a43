//! `POST /api/v2/jsonRPC`: Toncenter's JSON-RPC form of the API, as `@ton/ton`'s `TonClient`
//! calls it. A request is `{"id", "jsonrpc": "2.0", "method", "params": {...}}` with named
//! parameters (the same names, and the same functions, as the REST routes). The answer is
//! `{"ok":true,"result":...,"jsonrpc":"2.0","id":<the request's id>}` with HTTP 200, or
//! `{"ok":false,"error":...,"code":N,"jsonrpc":"2.0","id":...}` with HTTP status N: 400 for a
//! body that is not such a request or for bad parameters, 422 for an unknown method (as
//! Toncenter). A missing or wrong API key is refused (401) before the body is read, in the REST
//! envelope.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, AppState, Outcome, methods, raw_body};
use crate::chain::local::LocalChain;

/// Every method answered here.
const METHODS: [&str; 11] = [
    "getAddressInformation",
    "getAddressBalance",
    "getAddressState",
    "getWalletInformation",
    "runGetMethod",
    "sendBoc",
    "sendBocReturnHash",
    "getTransactions",
    "getMasterchainInfo",
    "getBlockHeader",
    "estimateFee",
];

/// Most characters of an unknown method's name repeated in the refusal.
const NAME_SHOWN: usize = 64;

pub(super) async fn handle(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Response {
    let request = match raw_body(b).and_then(|bytes| parse(&bytes)) {
        Ok(r) => r,
        Err(e) => return reply(Value::Null, Err(e)),
    };
    let (id, method, params) = request;
    let outcome = dispatch(s.chain, &method, params).await;
    reply(id, outcome)
}

/// The request's id, method and parameters.
fn parse(bytes: &[u8]) -> Result<(Value, String, Value), ApiError> {
    let mut request: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))?;
    let Some(fields) = request.as_object_mut() else {
        return Err(ApiError::bad("a JSON-RPC request is an object"));
    };
    let id = fields.remove("id").unwrap_or(Value::Null);
    let method = match fields.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(ApiError::bad("the request has no method name")),
    };
    Ok((id, method, fields.remove("params").unwrap_or(Value::Null)))
}

async fn dispatch(chain: Arc<LocalChain>, method: &str, params: Value) -> Outcome {
    match method {
        "getAddressInformation" => call(methods::address_information, chain, params).await,
        "getAddressBalance" => call(methods::address_balance, chain, params).await,
        "getAddressState" => call(methods::address_state, chain, params).await,
        "getWalletInformation" => call(methods::wallet_information, chain, params).await,
        "runGetMethod" => call(methods::run_get_method, chain, params).await,
        "sendBoc" => call(methods::send_boc, chain, params).await,
        "sendBocReturnHash" => call(methods::send_boc_return_hash, chain, params).await,
        "getTransactions" => call(methods::transactions, chain, params).await,
        "getMasterchainInfo" => call(methods::masterchain_info, chain, params).await,
        "getBlockHeader" => call(methods::block_header, chain, params).await,
        "estimateFee" => call(methods::estimate_fee, chain, params).await,
        other => {
            let shown: String = other.chars().take(NAME_SHOWN).collect();
            Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("unknown method {shown:?}; the devnet chain answers {}", METHODS.join(", ")),
            })
        }
    }
}

/// `method` with `params` (an object, or absent for none) parsed as its parameters.
async fn call<P, F, Fut>(method: F, chain: Arc<LocalChain>, params: Value) -> Outcome
where
    P: DeserializeOwned,
    F: FnOnce(Arc<LocalChain>, P) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let params = match params {
        Value::Null => json!({}),
        Value::Object(_) => params,
        _ => return Err(ApiError::bad("params must be an object of named parameters")),
    };
    let p = serde_json::from_value(params).map_err(|e| ApiError::bad(format!("invalid params: {e}")))?;
    method(chain, p).await
}

fn reply(id: Value, outcome: Outcome) -> Response {
    match outcome {
        Ok(result) => {
            Json(json!({ "ok": true, "result": result, "jsonrpc": "2.0", "id": id })).into_response()
        }
        Err(e) => {
            let body = json!({
                "ok": false,
                "error": e.message,
                "code": e.status.as_u16(),
                "jsonrpc": "2.0",
                "id": id,
            });
            (e.status, Json(body)).into_response()
        }
    }
}
