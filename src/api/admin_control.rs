//! The admin endpoint's operations that change something, each behind the node's admin token
//! (`Authorization: Bearer <token>`, the token in `<data-dir>/admin.token`, owner-only): a web
//! page on another origin cannot send that header without a preflight this endpoint never
//! answers, and another local user cannot read the file.
//!
//! - `POST /payments/close?channel=ADDR` (client): close the channel in use at `ADDR`
//!   cooperatively when its worker co-signs, else start the unilateral close; answers the
//!   outcome (`crate::payments::client::Closing`) as JSON. `cocoon channel close` uses it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admin::AdminState;
use crate::payments::client::{ClientPaymentError, ClientPayments};

/// What the operations need.
#[derive(Debug, Clone)]
pub struct AdminControl {
    /// The token callers must present.
    pub token: String,
    /// The client's payments, when this node pays workers.
    pub client: Option<Arc<ClientPayments>>,
}

/// `?channel=ADDR`
#[derive(Debug, serde::Deserialize)]
pub struct CloseQuery {
    /// The channel's address (raw or user-friendly).
    pub channel: String,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

/// Whether `headers` carry `token` (compared in constant time).
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `POST /payments/close?channel=ADDR`
pub async fn close(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<CloseQuery>,
) -> Response {
    let Some(control) = state.control.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node takes no admin operations");
    };
    if !authorised(&headers, &control.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token (see <data-dir>/admin.token)");
    }
    let Some(client) = control.client.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this node does not pay workers (no client payments)");
    };
    let address = match crate::chain::parse_address(&q.channel) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("channel: {e}")),
    };
    match client.close(&address).await {
        Ok(closing) => Json(closing).into_response(),
        Err(e @ ClientPaymentError::Unusable(_)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorised() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(authorised(&with("Bearer s3cret"), "s3cret"));
        for wrong in ["Bearer s3cre", "Bearer s3cretx", "Bearer S3cret", "s3cret", "Basic s3cret", "Bearer "]
        {
            assert!(!authorised(&with(wrong), "s3cret"), "{wrong}");
        }
        assert!(!authorised(&HeaderMap::new(), "s3cret"));
    }
}
