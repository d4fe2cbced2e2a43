//! `Toncenter`: the [`Chain`] trait over the TON Center HTTP API v2 (`https://toncenter.com/api/v2`
//! for mainnet, `https://testnet.toncenter.com/api/v2` for testnet, or a `LocalChain` behind
//! `cocoon chain serve`).
//!
//! Every request carries `X-API-Key` when a key is set, has its own timeout, and reads at most
//! [`MAX_BODY`] bytes of the answer. Transport failures, 5xx and 429 answers are retried with
//! exponential backoff (a 429's `Retry-After` is honoured, up to a bound); other refusals are
//! final. Transactions are parsed from their BOCs with [`TxSummary::parse`], so this backend
//! reports them exactly as `LocalChain` does.

use crate::http::describe;
use std::time::Duration;

use futures::future::BoxFuture;
use num_bigint::BigInt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;

use super::{AccountInfo, AccountStatus, Chain, ChainError, GetMethodResult, StackValue, TxSummary};

/// Largest response body read (bigger ones are refused as malformed).
pub const MAX_BODY: usize = 8 << 20;
/// Most transactions Toncenter returns per `getTransactions` call.
const PAGE: usize = 100;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Error texts of 5xx answers that no retry can change (Toncenter reports a rejected external
/// message and a failed get-method as server errors).
const FINAL_ERRORS: [&str; 3] = ["cannot apply external message", "Exit code", "failed to parse"];

/// A client of one Toncenter API v2 endpoint.
#[derive(Debug, Clone)]
pub struct Toncenter {
    http: reqwest::Client,
    base: String,
    attempts: u32,
    backoff: Duration,
}

/// The `{"ok": ..., "result": ..., "error": ..., "code": ...}` envelope of every answer.
#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<String>,
}

/// What one attempt came to.
pub(crate) enum Attempt {
    Done(Result<Value, ChainError>),
    Retry { reason: String, after: Option<Duration> },
}

impl Toncenter {
    /// A client of the API at `base_url` (e.g. `https://toncenter.com/api/v2`), sending `api_key`
    /// as `X-API-Key` when given and giving up on each request after `timeout`. Retries 3 times
    /// from 200 ms by default (see [`Toncenter::with_retries`]).
    pub fn new(base_url: &str, api_key: Option<String>, timeout: Duration) -> Result<Self, ChainError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ChainError::Malformed(format!("Toncenter URL {base_url:?} is not http(s)")));
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = HeaderValue::from_str(&key).map_err(|_| {
                ChainError::Malformed("the Toncenter API key is not a valid header value".into())
            })?;
            value.set_sensitive(true);
            headers.insert("X-API-Key", value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .default_headers(headers)
            .user_agent(concat!("cocoon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChainError::Unavailable(format!("HTTP client: {}", describe(&e))))?;
        Ok(Self { http, base, attempts: 3, backoff: Duration::from_millis(200) })
    }

    /// Make up to `attempts` tries per request (at least one), waiting `base` after the first
    /// failure and twice as long after each further one.
    pub fn with_retries(mut self, attempts: u32, base: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = base;
        self
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Call `method` (a GET with `query`, or a POST of `body`), retrying what may pass.
    async fn call(
        &self,
        method: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ChainError> {
        let url = format!("{}/{method}", self.base);
        let body = body.map(|b| b.to_string());
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let request = match &body {
                Some(b) => self.http.post(&url).header(CONTENT_TYPE, "application/json").body(b.clone()),
                None => self.http.get(&url).query(query),
            };
            match self.attempt(request).await {
                Attempt::Done(result) => return result.map_err(|e| in_method(method, e)),
                Attempt::Retry { reason, after } => {
                    tracing::debug!(method, attempt, %reason, "Toncenter request failed");
                    last = reason;
                    if attempt < self.attempts {
                        tokio::time::sleep(after.map_or(wait, |a| a.min(MAX_RETRY_AFTER).max(wait))).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Err(ChainError::Unavailable(format!("{method}: {last} (after {} attempts)", self.attempts)))
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        let retry = |reason: String| Attempt::Retry { reason, after: None };
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return retry(describe(&e)),
        };
        let status = response.status();
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY => {
                    return Attempt::Done(Err(ChainError::Malformed(format!(
                        "answer larger than {MAX_BODY} bytes"
                    ))));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return retry(describe(&e)),
            }
        }
        classify(status, after, &body)
    }

    async fn get_account(&self, address: &StdAddr) -> Result<AccountInfo, ChainError> {
        let r = self.call("getAddressInformation", &[("address", address.to_string())], None).await?;
        account_info(&r)
    }

    async fn get_method(&self, address: &StdAddr, method: &str) -> Result<GetMethodResult, ChainError> {
        let body = json!({ "address": address.to_string(), "method": method, "stack": [] });
        let r = match self.call("runGetMethod", &[], Some(body)).await {
            Err(ChainError::Rejected(reason)) if reason.contains("Exit code") => {
                return Err(ChainError::GetMethod { method: method.to_owned(), reason });
            }
            other => other?,
        };
        get_method_result(method, &r)
    }

    async fn get_transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, ChainError> {
        let mut out: Vec<TxSummary> = Vec::new();
        // Toncenter pages from a transaction (lt, hash) on, that transaction included.
        let mut cursor: Option<(String, String, HashBytes)> = None;
        while out.len() < limit {
            let ask = (limit - out.len() + usize::from(cursor.is_some())).min(PAGE);
            let mut query = vec![("address", address.to_string()), ("limit", ask.to_string())];
            if let Some((lt, hash, _)) = &cursor {
                query.extend([("lt", lt.clone()), ("hash", hash.clone())]);
            }
            let r = self.call("getTransactions", &query, None).await?;
            let page =
                r.as_array().ok_or_else(|| ChainError::Malformed("getTransactions: not a list".into()))?;
            let mut next = None;
            for entry in page {
                let (tx, id) = transaction_entry(entry)?;
                if cursor.as_ref().is_some_and(|(_, _, h)| *h == tx.hash) {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                next = id.map(|(l, h)| (l, h, tx.hash));
                out.push(tx);
            }
            if page.len() < ask || next.is_none() {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    async fn get_now(&self) -> Result<u64, ChainError> {
        let info = self.call("getMasterchainInfo", &[], None).await?;
        let header = self.call("getBlockHeader", &last_block(&info)?, None).await?;
        number(&header["gen_utime"], "gen_utime")
    }
}

/// What an answer with HTTP `status`, `Retry-After` `after` and `body` comes to: the envelope's
/// result, a final refusal, or a reason to retry.
pub(crate) fn classify(status: StatusCode, after: Option<Duration>, body: &[u8]) -> Attempt {
    let envelope: Option<Envelope> = serde_json::from_slice(body).ok();
    let error = match &envelope {
        Some(Envelope { error: Some(e), .. }) => e.clone(),
        Some(Envelope { ok: false, result: Value::String(e), .. }) => e.clone(),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    };
    if status.as_u16() == 429 || status.is_server_error() {
        if !FINAL_ERRORS.iter().any(|f| error.contains(f)) {
            return Attempt::Retry { reason: format!("HTTP {}: {error}", status.as_u16()), after };
        }
        return Attempt::Done(Err(ChainError::Rejected(format!("HTTP {}: {error}", status.as_u16()))));
    }
    if !status.is_success() {
        return Attempt::Done(Err(ChainError::Rejected(format!("HTTP {}: {error}", status.as_u16()))));
    }
    Attempt::Done(match envelope {
        None => Err(ChainError::Malformed(format!("answer is not a Toncenter envelope: {error}"))),
        Some(Envelope { ok: false, .. }) => Err(ChainError::Rejected(error)),
        Some(Envelope { result, .. }) => Ok(result),
    })
}

/// The result of `getAddressInformation`.
pub(crate) fn account_info(r: &Value) -> Result<AccountInfo, ChainError> {
    let balance = number(&r["balance"], "balance")?;
    let last_lt = match r.get("last_transaction_id").and_then(|t| t.get("lt")) {
        Some(lt) => number(lt, "last_transaction_id.lt")?,
        None => 0,
    };
    let status = match r["state"].as_str() {
        Some("active") => AccountStatus::Active,
        Some("frozen") => AccountStatus::Frozen,
        Some("uninitialized" | "uninit") if balance == 0 && last_lt == 0 => AccountStatus::Nonexistent,
        Some("uninitialized" | "uninit") => AccountStatus::Uninit,
        Some("nonexist" | "nonexistent") => AccountStatus::Nonexistent,
        other => return Err(ChainError::Malformed(format!("account state {other:?}"))),
    };
    Ok(AccountInfo { status, balance, last_lt })
}

/// The result of `runGetMethod` for `method`.
pub(crate) fn get_method_result(method: &str, r: &Value) -> Result<GetMethodResult, ChainError> {
    let fail = |reason: String| ChainError::GetMethod { method: method.to_owned(), reason };
    let exit_code = r["exit_code"]
        .as_i64()
        .and_then(|c| i32::try_from(c).ok())
        .ok_or_else(|| ChainError::Malformed(format!("runGetMethod: exit_code {}", r["exit_code"])))?;
    if exit_code != 0 && exit_code != 1 {
        return Err(fail(format!("exit code {exit_code}")));
    }
    let entries = r["stack"].as_array().ok_or_else(|| fail("the answer has no stack".into()))?;
    let stack = entries.iter().map(stack_value).collect::<Result<_, _>>()?;
    let gas_used = r["gas_used"].as_u64().unwrap_or(0);
    Ok(GetMethodResult { exit_code, gas_used, stack })
}

/// One entry of a `getTransactions` page: the transaction, and its id (lt, hash) as given.
pub(crate) fn transaction_entry(entry: &Value) -> Result<(TxSummary, Option<(String, String)>), ChainError> {
    let data = entry["data"]
        .as_str()
        .ok_or_else(|| ChainError::Malformed("getTransactions: an entry has no data".into()))?;
    let cell = Boc::decode_base64(data).map_err(|e| ChainError::Malformed(format!("transaction: {e}")))?;
    let tx = TxSummary::parse(&cell)?;
    let id = &entry["transaction_id"];
    Ok((tx, scalar(&id["lt"]).zip(id["hash"].as_str().map(str::to_owned))))
}

/// The `getBlockHeader` query for the last block named in a `getMasterchainInfo` result.
pub(crate) fn last_block(info: &Value) -> Result<[(&'static str, String); 3], ChainError> {
    let last = &info["last"];
    let field = |name: &str| {
        scalar(&last[name]).ok_or_else(|| ChainError::Malformed(format!("getMasterchainInfo: last.{name}")))
    };
    Ok([("workchain", field("workchain")?), ("shard", field("shard")?), ("seqno", field("seqno")?)])
}

fn in_method(method: &str, e: ChainError) -> ChainError {
    match e {
        ChainError::Rejected(m) => ChainError::Rejected(format!("{method}: {m}")),
        ChainError::Malformed(m) => ChainError::Malformed(format!("{method}: {m}")),
        other => other,
    }
}

/// A string or number as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer given as a number or a decimal string.
pub(crate) fn number(v: &Value, what: &str) -> Result<u64, ChainError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ChainError::Malformed(format!("{what}: {v}")))
}

/// A stack entry: `["num", "0x1a"]`, `["cell", {"bytes": ...}]`, `["slice", ...]`, `["null"]`, ...
pub(crate) fn stack_value(entry: &Value) -> Result<StackValue, ChainError> {
    let bad = || ChainError::Malformed(format!("stack entry {entry}"));
    let items = entry.as_array().ok_or_else(bad)?;
    let cell = || {
        let bytes = items.get(1).and_then(|v| v["bytes"].as_str()).ok_or_else(bad)?;
        Boc::decode_base64(bytes).map_err(|e| ChainError::Malformed(format!("stack cell: {e}")))
    };
    Ok(match items.first().and_then(Value::as_str).ok_or_else(bad)? {
        "num" | "int" => StackValue::Int(items.get(1).and_then(integer).ok_or_else(bad)?),
        "cell" => StackValue::Cell(cell()?),
        "slice" => StackValue::Slice(cell()?),
        "null" => StackValue::Null,
        _ => StackValue::Other,
    })
}

/// Most digits of a stack integer. TVM integers are 257-bit signed (at most 65 hex or 78 decimal
/// digits); parsing decimal text takes time quadratic in its length (a million digits, about 3 s),
/// so a longer number in an answer of up to [`MAX_BODY`] is refused rather than parsed.
const MAX_INT_DIGITS: usize = 80;

/// `"0x1a"`, `"-0x1a"`, `"26"` or `26`.
fn integer(v: &Value) -> Option<BigInt> {
    if let Some(i) = v.as_i64() {
        return Some(BigInt::from(i));
    }
    let text = v.as_str()?.trim();
    if text.len() > MAX_INT_DIGITS + 3 {
        return None;
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => BigInt::parse_bytes(hex.as_bytes(), 16)?,
        None => BigInt::parse_bytes(digits.as_bytes(), 10)?,
    };
    Some(if negative { -value } else { value })
}

impl Chain for Toncenter {
    fn name(&self) -> &'static str {
        "toncenter"
    }

    fn account(&self, address: &StdAddr) -> BoxFuture<'_, Result<AccountInfo, ChainError>> {
        let address = address.clone();
        Box::pin(async move { self.get_account(&address).await })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
    ) -> BoxFuture<'a, Result<GetMethodResult, ChainError>> {
        Box::pin(self.get_method(address, method))
    }

    fn send_external(&self, message: Cell) -> BoxFuture<'_, Result<(), ChainError>> {
        let body = json!({ "boc": Boc::encode_base64(&message) });
        Box::pin(async move { self.call("sendBoc", &[], Some(body)).await.map(|_| ()) })
    }

    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TxSummary>, ChainError>> {
        Box::pin(self.get_transactions(address, limit))
    }

    fn now(&self) -> BoxFuture<'_, Result<u64, ChainError>> {
        Box::pin(self.get_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_integers_are_read_in_every_form_and_bounded() {
        assert_eq!(integer(&json!(26)), Some(BigInt::from(26)));
        assert_eq!(integer(&json!("26")), Some(BigInt::from(26)));
        assert_eq!(integer(&json!("-0x1a")), Some(BigInt::from(-26)));
        let widest = BigInt::from(-1) << 256;
        assert_eq!(integer(&json!(format!("{widest:#x}"))), Some(widest));
        // A million digits would take seconds to parse: refused at once.
        assert_eq!(integer(&json!("9".repeat(1_000_000))), None);
    }
}
