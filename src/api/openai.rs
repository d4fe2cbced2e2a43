//! The OpenAI-compatible API of a client node: `POST /v1/chat/completions` and
//! `POST /v1/completions` (JSON or SSE streaming), `GET /v1/models`. Each request goes to a
//! verified worker through [`InferenceClient`]; answers carry the usual `usage` plus a `cocoon`
//! object (worker peer id, model id, engine, signed receipt in hex, amount in nanotons, failovers,
//! payment status) and an `x-cocoon-worker` header. Errors use OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! A streamed answer starts only once the first chunk arrived, so failures before it (no worker,
//! all busy, a worker failing before its first token) get a proper status code; a failure after
//! it ends the stream with an `error` event. A non-streamed answer is kept until it completes, so
//! one that a worker breaks after its first chunk (a cap, a stall, a receipt that does not check)
//! is discarded and the request goes to another worker. A caller that disconnects cancels the
//! request, and the worker stops generating.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_protocol::inference::messages::{ErrorCode, FinishReason, Request};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::openai_request::{self, Invalid, Parsed, RequestLimits};
use crate::inference::client::{Completion, Delivery, Delta, InferenceClient, InferenceError, Payment};

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Sends requests to workers.
    pub client: InferenceClient,
    /// Request limits.
    pub limits: RequestLimits,
    /// Price cap per request when the caller sets none, nanotons.
    pub max_price: u64,
    /// Largest request body, bytes.
    pub max_body: usize,
}

/// An OpenAI-shaped error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), param: None }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self {
            param: e.param,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", e.message)
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        let (status, kind, code) = match &e {
            InferenceError::UnknownModel(_) => (S::NOT_FOUND, "invalid_request_error", "model_not_found"),
            InferenceError::NoEligibleWorker(_) => {
                (S::SERVICE_UNAVAILABLE, "server_error", "no_eligible_worker")
            }
            InferenceError::Busy(_) => (S::TOO_MANY_REQUESTS, "rate_limit_error", "workers_busy"),
            InferenceError::Refused { code, .. } => match code {
                ErrorCode::TooLarge => (S::BAD_REQUEST, "invalid_request_error", "context_length_exceeded"),
                ErrorCode::PriceTooHigh => (S::BAD_REQUEST, "invalid_request_error", "price_cap_too_low"),
                ErrorCode::UnknownModel => (S::NOT_FOUND, "invalid_request_error", "model_not_found"),
                ErrorCode::PaymentRequired => (S::PAYMENT_REQUIRED, "payment_error", "payment_required"),
                _ => (S::BAD_REQUEST, "invalid_request_error", "invalid_request"),
            },
            InferenceError::WorkerFailed { .. } | InferenceError::BadReceipt { .. } => {
                (S::BAD_GATEWAY, "server_error", "worker_failed")
            }
            InferenceError::Timeout(_) => (S::GATEWAY_TIMEOUT, "server_error", "worker_timeout"),
            InferenceError::Cancelled => (S::BAD_REQUEST, "invalid_request_error", "cancelled"),
            InferenceError::Payment(_) => (S::PAYMENT_REQUIRED, "payment_error", "payment_failed"),
        };
        Self::new(status, kind, code, message)
    }
}

/// Serve the API on `listener` under `limits` (connections, header and body deadlines; never a
/// deadline on a streamed answer) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: crate::http::ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_body = state.max_body;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "unknown_url", "unknown endpoint")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    crate::http::serve(listener, app, limits, stop).await;
}

/// Bind the API's listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn body_or_error(body: Result<Bytes, axum::extract::rejection::BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                "request body is too large",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_body", e.body_text())
        }
    })
}

async fn chat(
    State(state): State<ApiState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body_or_error(body).and_then(|b| Ok(openai_request::chat(&b, &state.limits)?)) {
        Ok(parsed) => run(state, parsed, Kind::Chat).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(state): State<ApiState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body_or_error(body).and_then(|b| Ok(openai_request::completion(&b, &state.limits)?)) {
        Ok(parsed) => run(state, parsed, Kind::Text).await,
        Err(e) => e.into_response(),
    }
}

async fn models(State(state): State<ApiState>) -> Response {
    let data: Vec<Value> = state
        .client
        .models()
        .into_iter()
        .map(|(id, offers)| {
            let min = |f: fn(&cocoon_protocol::attestation::record::ModelOffer) -> u64| {
                offers.iter().map(|(_, o)| f(o)).min()
            };
            json!({
                "id": id,
                "object": "model",
                "created": 0,
                "owned_by": "cocoon",
                "cocoon": {
                    "workers": offers.len(),
                    "min_price_prompt_per_1k_nanotons": min(|o| o.price_prompt_per_1k),
                    "min_price_completion_per_1k_nanotons": min(|o| o.price_completion_per_1k),
                    "max_context_length": offers.iter().map(|(_, o)| o.context_length).max(),
                },
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// The full model id `requested` names: itself, or the only verified model with that name.
fn resolve_model(client: &InferenceClient, requested: &str) -> Result<String, ApiError> {
    let ids: Vec<String> = client.models().into_iter().map(|(id, _)| id).collect();
    if ids.iter().any(|id| id == requested) {
        return Ok(requested.to_owned());
    }
    let named: Vec<&String> = ids.iter().filter(|id| id.split('@').next() == Some(requested)).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {requested:?} is not offered by any verified worker (see GET /v1/models)"),
        )),
        many => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "ambiguous_model",
            format!(
                "{requested:?} names several models; use a full id: {}",
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn run(state: ApiState, parsed: Parsed, kind: Kind) -> Response {
    let model_id = match resolve_model(&state.client, &parsed.model) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let request_id: [u8; 16] = rand::random();
    let request = Request {
        request_id,
        model_id: model_id.clone(),
        prompt: parsed.prompt.clone(),
        max_tokens: parsed.max_tokens,
        sampling: parsed.sampling.clone(),
        max_price: parsed.max_price.unwrap_or(state.max_price),
        channel: None, // set per worker by the client when it pays
    };
    // A streamed answer is shown as it arrives; a whole one is kept until it completes, so one
    // that a worker breaks can be replaced by another worker's.
    let delivery = if parsed.stream { Delivery::Shown } else { Delivery::Replaceable };
    let (tx, mut rx) = mpsc::channel::<Delta>(32);
    let client = state.client.clone();
    let mut task = tokio::spawn(async move { client.complete(request, tx, delivery).await });
    let prefix = if kind == Kind::Chat { "chatcmpl-" } else { "cmpl-" };
    let meta = Meta {
        id: format!("{prefix}{}", hex::encode(request_id)),
        model: model_id,
        created: now_secs(),
        kind,
    };
    if !parsed.stream {
        return whole_answer(&meta, rx, task).await;
    }

    // Nothing is sent to the caller before the first chunk: until then an error has its status.
    let first = tokio::select! {
        d = rx.recv() => d,
        r = &mut task => return finish_without_text(r, &meta, parsed.include_usage),
    };
    let Some(first) = first else {
        return finish_without_text(task.await, &meta, parsed.include_usage);
    };
    stream_response(meta, shown(first), rx, task, parsed.include_usage)
}

/// The text of a [`Delivery::Shown`] delta: such a caller is never asked to discard text.
fn shown(delta: Delta) -> String {
    match delta {
        Delta::Text(text) => text,
        Delta::Discard => String::new(),
    }
}

/// A non-streamed answer: the text of the answer that completed (a broken one is discarded).
async fn whole_answer(
    meta: &Meta,
    mut rx: mpsc::Receiver<Delta>,
    task: tokio::task::JoinHandle<Result<Completion, InferenceError>>,
) -> Response {
    let mut text = String::new();
    while let Some(delta) = rx.recv().await {
        match delta {
            Delta::Text(t) => text.push_str(&t),
            Delta::Discard => text.clear(),
        }
    }
    match task.await {
        Ok(Ok(c)) => whole_response(meta, &text, &c),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", e.to_string())
        .into_response()
}

type Joined = Result<Result<Completion, InferenceError>, tokio::task::JoinError>;

/// A streamed request that ended before its first chunk.
fn finish_without_text(result: Joined, meta: &Meta, include_usage: bool) -> Response {
    match result {
        Ok(Ok(c)) => {
            let mut events = vec![meta.chunk(Some(""), None, None)];
            events.extend(meta.closing(&c, include_usage));
            sse(futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>)), Some(&c))
        }
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => internal(e),
    }
}

struct Meta {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        // Only a client that stopped reading asks for it, and then nobody reads the answer.
        FinishReason::Cancelled => "stop",
    }
}

fn usage_json(c: &Completion) -> Value {
    let u = c.receipt.usage;
    // Both counts come from the worker: add them in 64 bits, where two u32 cannot overflow.
    let total = u64::from(u.prompt_tokens) + u64::from(u.completion_tokens);
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": total})
}

fn cocoon_json(c: &Completion) -> Value {
    json!({
        "worker": c.worker.to_string(),
        "model_id": c.receipt.model_id,
        "engine": c.receipt.engine,
        "receipt": hex::encode(&c.receipt_bytes),
        "amount_nanotons": c.receipt.amount,
        "failovers": c.failovers,
        "payment": payment_json(&c.payment),
    })
}

fn payment_json(p: &Payment) -> Value {
    match p {
        Payment::None => json!({"status": "off"}),
        Payment::Paid { channel, cumulative, seqno } => {
            json!({"status": "paid", "channel": channel, "cumulative_nanotons": cumulative, "seqno": seqno})
        }
        Payment::Failed(reason) => json!({"status": "unpaid", "reason": reason}),
    }
}

impl Meta {
    /// One SSE event: a chunk with `text` (or none), a finish reason, extra fields.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, extra: Option<(&str, Value)>) -> Bytes {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match text {
                    Some("") => json!({"role": "assistant", "content": ""}),
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null})
            }
        };
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]});
        if let Some((key, value)) = extra {
            body[key] = value;
        }
        Bytes::from(format!("data: {body}\n\n"))
    }

    /// The final chunk (finish reason and the `cocoon` object), the usage chunk if asked, `[DONE]`.
    fn closing(&self, c: &Completion, include_usage: bool) -> Vec<Bytes> {
        let mut out =
            vec![self.chunk(None, Some(finish_name(c.finish_reason)), Some(("cocoon", cocoon_json(c))))];
        if include_usage {
            let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
            let body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage_json(c)});
            out.push(Bytes::from(format!("data: {body}\n\n")));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

fn whole_response(meta: &Meta, text: &str, c: &Completion) -> Response {
    let finish = finish_name(c.finish_reason);
    let body = match meta.kind {
        Kind::Chat => json!({
            "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": null}],
            "usage": usage_json(c), "cocoon": cocoon_json(c),
        }),
        Kind::Text => json!({
            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
            "usage": usage_json(c), "cocoon": cocoon_json(c),
        }),
    };
    with_worker(Json(body).into_response(), Some(c))
}

/// Add the `x-cocoon-worker` header when the worker is known.
fn with_worker(mut response: Response, c: Option<&Completion>) -> Response {
    if let Some(v) = c.and_then(|c| HeaderValue::from_str(&c.worker.to_string()).ok()) {
        response.headers_mut().insert("x-cocoon-worker", v);
    }
    response
}

/// A `text/event-stream` response of `events`.
fn sse<S>(events: S, c: Option<&Completion>) -> Response
where
    S: futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(events));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_worker(response, c)
}

enum Phase {
    /// Chat streams open with an empty assistant delta (as OpenAI's do).
    Role(String),
    First(String),
    Deltas,
    Closing(std::collections::VecDeque<Bytes>),
}

struct Streaming {
    meta: Meta,
    rx: mpsc::Receiver<Delta>,
    task: tokio::task::JoinHandle<Result<Completion, InferenceError>>,
    include_usage: bool,
    phase: Phase,
}

impl Streaming {
    /// The next SSE event, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Deltas) {
                Phase::Role(first) => {
                    self.phase = Phase::First(first);
                    return Some(self.meta.chunk(Some(""), None, None));
                }
                Phase::First(text) if !text.is_empty() => {
                    return Some(self.meta.chunk(Some(&text), None, None));
                }
                Phase::First(_) => {}
                Phase::Deltas => match self.rx.recv().await {
                    Some(d) => return Some(self.meta.chunk(Some(&shown(d)), None, None)),
                    None => {
                        let events = match (&mut self.task).await {
                            Ok(Ok(c)) => self.meta.closing(&c, self.include_usage),
                            Ok(Err(e)) => {
                                vec![error_event(ApiError::from(e)), Bytes::from_static(b"data: [DONE]\n\n")]
                            }
                            Err(e) => vec![error_event(ApiError::new(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "server_error",
                                "internal",
                                e.to_string(),
                            ))],
                        };
                        self.phase = Phase::Closing(events.into());
                    }
                },
                Phase::Closing(mut events) => {
                    let next = events.pop_front()?;
                    self.phase = Phase::Closing(events);
                    return Some(next);
                }
            }
        }
    }
}

fn stream_response(
    meta: Meta,
    first: String,
    rx: mpsc::Receiver<Delta>,
    task: tokio::task::JoinHandle<Result<Completion, InferenceError>>,
    include_usage: bool,
) -> Response {
    let phase = if meta.kind == Kind::Chat { Phase::Role(first) } else { Phase::First(first) };
    let state = Streaming { meta, rx, task, include_usage, phase };
    // Dropping this stream (the caller went away) drops `rx`: the client cancels the request.
    let events = futures::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    // The worker is known only at the end: it is in the final chunk's `cocoon` object.
    sse(events, None)
}

fn error_event(e: ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", e.body()))
}
