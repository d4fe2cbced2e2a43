//! The OpenAI-compatible API of a client node: `POST /v1/chat/completions` and
//! `POST /v1/completions` (JSON or SSE streaming), `GET /v1/models`; the same node also serves
//! OpenAI's Responses API (`super::responses`) and Anthropic's Messages API (`super::anthropic`). Each request goes to a
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_protocol::attestation::gpu_policy::GpuRequirement;
use cocoon_protocol::inference::messages::{ErrorCode, Request};
use libp2p::PeerId;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::openai_render::{Kind, Meta};
use super::openai_request::{self, Invalid, Parsed, RequestLimits};
use crate::inference::client::{Completion, Delivery, Delta, InferenceClient, InferenceError};

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

    pub(super) fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }

    /// The HTTP status.
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// This error's status (and `Retry-After` when it has one) with another API's `body`.
    pub(super) fn with_body(self, body: Value) -> Response {
        let mut response = self.into_response();
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response
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
            InferenceError::NoGpuWorker { .. } => (S::SERVICE_UNAVAILABLE, "server_error", "no_gpu_worker"),
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
        .route("/v1/responses", post(super::responses::create))
        .route("/v1/embeddings", post(super::embeddings::create))
        .route("/v1/messages", post(super::anthropic::messages))
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

pub(super) fn body_or_error(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
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
                    // Requests waiting in its workers' queues, as they last told this node.
                    "queued": offers.iter().map(|(peer, _)| u64::from(state.client.queued(peer))).sum::<u64>(),
                    "slots": offers.iter().map(|(_, o)| u64::from(o.max_concurrent)).sum::<u64>(),
                    "hardware": hardware(&state.client, offers.iter().map(|(peer, _)| peer)),
                },
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// What the workers of one model run on: how many per TEE (`tdx`, `sev-snp`, `simulated`), how
/// many have a GPU, how many only confidential GPUs (what `cocoon_require_gpu` = `any` and `cc`
/// select), and their GPUs by kind (`hopper`, `hopper (simulated)`, or a non-confidential GPU's
/// name).
fn hardware<'a>(client: &InferenceClient, workers: impl Iterator<Item = &'a PeerId>) -> Value {
    let (mut tee, mut gpus) = (BTreeMap::<&str, u64>::new(), BTreeMap::<String, u64>::new());
    let (mut with_gpu, mut confidential) = (0u64, 0u64);
    for signed in workers.filter_map(|peer| client.worker_record(peer)) {
        let record = signed.record();
        *tee.entry(record.evidence.kind_name()).or_default() += 1;
        with_gpu += u64::from(GpuRequirement::Any.met_by(&record.gpus));
        confidential += u64::from(GpuRequirement::Cc.met_by(&record.gpus));
        for gpu in &record.gpus {
            *gpus.entry(gpu.label()).or_default() += 1;
        }
    }
    json!({"tee": tee, "gpu_workers": with_gpu, "gpu_cc_workers": confidential, "gpus": gpus})
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

pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One of the request's `n` answers on its way: its events and the task that completes it.
pub(super) struct Answer {
    pub(super) meta: Meta,
    pub(super) rx: mpsc::Receiver<Delta>,
    pub(super) task: tokio::task::JoinHandle<Result<Completion, InferenceError>>,
}

type Joined = Result<Result<Completion, InferenceError>, tokio::task::JoinError>;

pub(super) fn flatten(joined: Joined) -> Result<Completion, ApiError> {
    match joined {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(e) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", e.to_string()))
        }
    }
}

async fn run(state: ApiState, parsed: Parsed, kind: Kind) -> Response {
    let prefix = if kind == Kind::Chat { "chatcmpl-" } else { "cmpl-" };
    let answers = match start(&state, &parsed, kind, prefix) {
        Ok(answers) => answers,
        Err(e) => return e.into_response(),
    };
    if parsed.stream {
        super::openai_stream::respond(answers, parsed.include_usage).await
    } else {
        whole_answers(answers).await
    }
}

/// The one answer of a request of another API (Anthropic's, Responses), its id `prefix…`.
pub(super) fn start_one(state: &ApiState, parsed: &Parsed, prefix: &str) -> Result<Answer, ApiError> {
    let mut answers = start(state, parsed, Kind::Chat, prefix)?;
    answers.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "no answer asked for",
        )
    })
}

/// Send the request's `n` answers on their way.
fn start(state: &ApiState, parsed: &Parsed, kind: Kind, prefix: &str) -> Result<Vec<Answer>, ApiError> {
    let model_id = resolve_model(&state.client, &parsed.model)?;
    // A streamed answer is shown as it arrives; a whole one is kept until it completes, so one
    // that a worker breaks can be replaced by another worker's.
    let delivery = if parsed.stream { Delivery::Shown } else { Delivery::Replaceable };
    let id = format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()));
    let created = now_secs();
    // `n` answers are `n` requests, each to its own worker's receipt and payment.
    let answers: Vec<Answer> = (0..parsed.n)
        .map(|index| {
            let request = Request {
                request_id: rand::random(),
                model_id: model_id.clone(),
                prompt: parsed.prompt.clone(),
                max_tokens: parsed.max_tokens,
                sampling: parsed.sampling.clone(),
                shape: parsed.shape.clone(),
                max_price: parsed.max_price.unwrap_or(state.max_price),
                channel: None, // set per worker by the client when it pays
            };
            let (tx, rx) = mpsc::channel::<Delta>(32);
            let client = state.client.clone();
            let gpu = parsed.require_gpu;
            let task = tokio::spawn(async move { client.complete_with(request, tx, delivery, gpu).await });
            let meta = Meta { id: id.clone(), model: model_id.clone(), created, kind, index };
            Answer { meta, rx, task }
        })
        .collect();
    Ok(answers)
}

/// A non-streamed answer: each of the `n` answers that completed (a broken one is discarded and
/// replaced by the client); any that fails fails the request (the others still complete, and
/// are paid).
async fn whole_answers(answers: Vec<Answer>) -> Response {
    // Every answer is read at once: one read after another would leave a later answer's events
    // unread while an earlier one generates, and its worker would see a client that stopped
    // reading.
    let metas: Vec<Meta> = answers.iter().map(|a| a.meta.clone()).collect();
    let mut done = Vec::with_capacity(answers.len());
    for result in futures::future::join_all(answers.into_iter().map(super::openai_stream::gather)).await {
        match result {
            Ok(answer) => done.push(answer),
            Err(e) => return e.into_response(),
        }
    }
    let choices = metas.iter().zip(&done).map(|(meta, (answer, c))| meta.choice(answer, c)).collect();
    let Some(meta) = metas.first() else { return internal("no answer was asked for") };
    let completions: Vec<&Completion> = done.iter().map(|(_, c)| c).collect();
    let body = meta.whole(choices, &completions);
    with_worker(Json(body).into_response(), completions.first().copied())
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal", e.to_string())
        .into_response()
}

/// Add the `x-cocoon-worker` header when the worker is known.
pub(super) fn with_worker(mut response: Response, c: Option<&Completion>) -> Response {
    if let Some(v) = c.and_then(|c| HeaderValue::from_str(&c.worker.to_string()).ok()) {
        response.headers_mut().insert("x-cocoon-worker", v);
    }
    response
}
