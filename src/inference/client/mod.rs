//! The client side of `/cocoon/inference/2`: choose a verified worker for the model
//! (`cocoon_protocol::inference::selection`), re-check its record under this node's policy, open
//! a stream (dialling directly or through a relay; a worker this node has no address for, say
//! after a restart, is looked up on the DHT and the stream retried once), run the Noise handshake
//! against the worker's *attested* static key with the request inside (a stream reset before the
//! worker's reply is opened again, at most twice: see `connect`), and relay the answer's events
//! (text, tool calls, log-probabilities) to the caller.
//!
//! Failures before the first chunk (no stream, handshake failure, `Busy`, a timeout, a worker
//! that dies, and any refusal: a worker that refuses what its attested offer promised is a
//! failure like any other) move the request to another worker, at most `attempts` workers in
//! all; every failure and refusal counts against that worker in later selections. An answer that
//! breaks after its first chunk (a cap, a stall, a receipt that does not check) counts as several
//! failures; what happens to the request depends on the caller's [`Delivery`]: a caller that
//! shows text as it arrives gets the error (it has seen part of an answer, which is never
//! silently resent), one that keeps the text until the end is told to discard it
//! ([`Delta::Discard`]) and the request goes to another worker. The final receipt is checked
//! against the request, the text received and the worker's attested prices before the request
//! counts as done; then, with payments on, the client pays it with a voucher on its channel with
//! that worker (`crate::payments::client`) and waits for the worker's acknowledgement. A request
//! too large for the wire is refused here, before anything is sent.
//!
//! Submodules: `choose` picks the worker for each attempt; `connect` opens the stream and runs the
//! handshake; `answer` reads the answer after its first frame, its caps, the receipt and the
//! payment.

mod answer;
mod choose;
mod connect;

pub use answer::{MAX_ANSWER_BYTES, MAX_CHUNK_BYTES, max_prompt_tokens};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_protocol::attestation::gpu_policy::GpuRequirement;
use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::attestation::signed::SignedRecord;
use cocoon_protocol::inference::messages::{
    ErrorCode, Event, FinishReason, MAX_REQUEST, MAX_SERVER_FRAME, Prompt, Request, ServerFrame,
};
use cocoon_protocol::inference::pricing::worst_case;
use cocoon_protocol::inference::receipt::Receipt;
use cocoon_protocol::inference::selection::{Need, Observed};
use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::mpsc;

use super::session::SessionError;
use crate::attestation::service::AttestationHandle;
use crate::attestation::verifier::Verifier;
use crate::network::NetworkHandle;
use crate::payments::client::ClientPayments;

/// Failures one broken answer counts for in selection (each halves a worker's score): a worker
/// that starts an answer and then breaks it costs the caller the whole request.
const BROKEN_ANSWER_FAILURES: u32 = 4;

/// Client limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Workers tried per request.
    pub attempts: usize,
    /// Opening a stream (including a dial).
    pub open: Duration,
    /// From the handshake to the first chunk.
    pub first_token: Duration,
    /// Between later frames.
    pub idle: Duration,
    /// The whole answer, from the first frame to the receipt.
    pub total: Duration,
    /// Waiting for the worker's acknowledgement of a voucher (the channel is locked meanwhile).
    pub voucher: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            attempts: 3,
            open: Duration::from_secs(10),
            first_token: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            // Beyond the worker's own 300 s limit on a generation, with room for the receipt.
            total: Duration::from_secs(360),
            voucher: Duration::from_secs(10),
        }
    }
}

/// Why a request did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// No verified worker offers this model.
    #[error("no verified worker offers model {0}")]
    UnknownModel(String),
    /// Workers offer the model, but none within the price cap and context length.
    #[error("no worker offering {0} fits this request's price cap and context length")]
    NoEligibleWorker(String),
    /// Workers offer the model, but none whose GPUs meet the request's requirement.
    #[error("no verified worker offering {model} meets cocoon_require_gpu = {requirement:?}")]
    NoGpuWorker {
        /// The model.
        model: String,
        /// The requirement (`any`, `cc`).
        requirement: &'static str,
    },
    /// Every worker tried was busy.
    #[error("all workers for this model are busy (tried {0})")]
    Busy(usize),
    /// A worker refused the request itself (not retried: another would refuse it too).
    #[error("{message}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// Detail from the worker.
        message: String,
    },
    /// The workers failed (before or after the first chunk).
    #[error("worker {worker} failed: {reason}")]
    WorkerFailed {
        /// The last worker tried.
        worker: String,
        /// What happened.
        reason: String,
    },
    /// The worker took too long.
    #[error("worker {0} timed out")]
    Timeout(String),
    /// The receipt does not match what happened.
    #[error("worker {worker} sent an invalid receipt: {reason}")]
    BadReceipt {
        /// The worker.
        worker: String,
        /// The mismatch.
        reason: String,
    },
    /// The caller went away.
    #[error("the caller cancelled the request")]
    Cancelled,
    /// The client could not set up payment for this worker (chain down, wallet empty, ...).
    #[error("{0}")]
    Payment(String),
}

/// A piece of an answer, for the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The answer's next event (text, or a piece of a tool call), checked against the request.
    Answer(Event),
    /// Forget the text received so far: the worker broke its answer and the request goes to
    /// another worker. Sent only to a caller that asked for [`Delivery::Replaceable`].
    Discard,
}

/// What the caller does with text as it arrives, which decides whether a broken answer can be
/// replaced by another worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Shown as it arrives (a streamed API response): once text has reached the caller, an answer
    /// that breaks fails the request.
    Shown,
    /// Kept until the answer completes (a non-streamed API response): an answer that breaks is
    /// discarded ([`Delta::Discard`]) and the request goes to another worker, within `attempts`.
    Replaceable,
}

/// How a completed request was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// Nothing was paid: payments are off on this client, or the model is free.
    None,
    /// The worker acknowledged the voucher: the channel's cumulative amount and seqno now.
    Paid {
        /// Channel address.
        channel: String,
        /// Cumulative amount.
        cumulative: u64,
        /// Voucher seqno.
        seqno: u64,
    },
    /// The voucher was not acknowledged (the text was delivered nevertheless).
    Failed(String),
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The worker that served it.
    pub worker: PeerId,
    /// The verified receipt.
    pub receipt: Receipt,
    /// The receipt as signed (for the caller to keep).
    pub receipt_bytes: Vec<u8>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Workers that failed before this one.
    pub failovers: u32,
    /// How it was paid.
    pub payment: Payment,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    requests: Family<Vec<(String, String)>, Counter>,
    failovers: Counter,
    replaced: Counter,
    reopened: Counter,
    worker_lookups: Family<Vec<(String, String)>, Counter>,
}

/// Count one event of `family` under its `outcome` label.
fn count(family: &Family<Vec<(String, String)>, Counter>, outcome: &str) {
    family.get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]).inc();
}

/// Sends requests to workers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct InferenceClient {
    network: NetworkHandle,
    attestation: AttestationHandle,
    verifier: Arc<Verifier>,
    limits: ClientLimits,
    observed: Arc<Mutex<HashMap<PeerId, Observed>>>,
    rng: Arc<Mutex<StdRng>>,
    metrics: Metrics,
    payments: Option<Arc<ClientPayments>>,
}

/// One attempt's failure: whether the next worker may be tried.
enum Attempt {
    /// Before the first chunk: the next worker may be tried.
    Retry(InferenceError),
    /// After the first chunk: the worker broke its answer; another worker may be tried only if
    /// the caller can discard the text it received.
    Broken(InferenceError),
    /// Trying another worker would not help.
    Fatal(InferenceError),
}

impl InferenceClient {
    /// A client using the verified records of `attestation`, re-checked with `verifier`.
    pub fn new(
        network: NetworkHandle,
        attestation: AttestationHandle,
        verifier: Arc<Verifier>,
        limits: ClientLimits,
        seed: u64,
        payments: Option<Arc<ClientPayments>>,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("cocoon_inference_client");
        r.register("requests", "Inference requests sent, by outcome", metrics.requests.clone());
        r.register(
            "failovers",
            "Requests moved to another worker before the first chunk",
            metrics.failovers.clone(),
        );
        r.register(
            "answers_replaced",
            "Answers a worker broke after its first chunk, discarded by the caller and asked of another worker",
            metrics.replaced.clone(),
        );
        r.register(
            "streams_reopened",
            "Streams reset before the worker's handshake reply and opened again (see connect.rs)",
            metrics.reopened.clone(),
        );
        r.register(
            "worker_lookups",
            "Workers looked up on the DHT because no stream could be opened to them, by outcome",
            metrics.worker_lookups.clone(),
        );
        Self {
            network,
            attestation,
            verifier,
            limits,
            observed: Arc::default(),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            metrics,
            payments,
        }
    }

    /// How long `worker`'s queue was when it last answered this client (0 when it answered at
    /// once or never did).
    pub fn queued(&self, worker: &PeerId) -> u32 {
        self.observed.lock().ok().and_then(|all| all.get(worker).map(|o| o.queued)).unwrap_or(0)
    }

    /// The offer of each verified worker for each model: `(model id, offers)`.
    /// The verified record of `worker`, if any.
    pub fn worker_record(&self, worker: &PeerId) -> Option<SignedRecord> {
        self.attestation.record_of(worker)
    }

    pub fn models(&self) -> Vec<(String, Vec<(PeerId, ModelOffer)>)> {
        let mut by_model: HashMap<String, Vec<(PeerId, ModelOffer)>> = HashMap::new();
        for signed in self.attestation.records() {
            let r = signed.record();
            for offer in &r.offers {
                by_model.entry(offer.model_id.clone()).or_default().push((r.peer_id, offer.clone()));
            }
        }
        let mut models: Vec<_> = by_model.into_iter().collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        models
    }

    /// Run `request`, sending each chunk of text to `deltas` as it arrives, and
    /// [`Delta::Discard`] before a replacement answer when `delivery` allows one.
    pub async fn complete(
        &self,
        request: Request,
        deltas: mpsc::Sender<Delta>,
        delivery: Delivery,
    ) -> Result<Completion, InferenceError> {
        self.complete_with(request, deltas, delivery, GpuRequirement::None).await
    }

    /// [`Self::complete`] on workers whose GPUs meet `gpu` only (their records' GPU evidence,
    /// verified when the records were accepted).
    pub async fn complete_with(
        &self,
        request: Request,
        deltas: mpsc::Sender<Delta>,
        delivery: Delivery,
        gpu: GpuRequirement,
    ) -> Result<Completion, InferenceError> {
        let result = self.run(request, deltas, delivery, gpu).await;
        let outcome = match &result {
            Ok(_) => "completed",
            Err(
                InferenceError::UnknownModel(_)
                | InferenceError::NoEligibleWorker(_)
                | InferenceError::NoGpuWorker { .. },
            ) => "no_worker",
            Err(InferenceError::Busy(_)) => "busy",
            Err(InferenceError::Refused { .. }) => "refused",
            Err(InferenceError::Cancelled) => "cancelled",
            Err(InferenceError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        count(&self.metrics.requests, outcome);
        result
    }

    async fn run(
        &self,
        request: Request,
        deltas: mpsc::Sender<Delta>,
        delivery: Delivery,
        gpu: GpuRequirement,
    ) -> Result<Completion, InferenceError> {
        let mut records = self.attestation.offering(&request.model_id);
        if records.is_empty() {
            return Err(InferenceError::UnknownModel(request.model_id.clone()));
        }
        records.retain(|r| gpu.met_by(&r.record().gpus));
        if records.is_empty() {
            let model = request.model_id.clone();
            return Err(InferenceError::NoGpuWorker { model, requirement: gpu.name() });
        }
        let need = Need {
            prompt_tokens: estimate_tokens(&request.prompt),
            max_tokens: request.max_tokens,
            max_price: request.max_price,
        };
        // One random number per request orders the workers for all of its attempts.
        let seed = self.rng.lock().map(|mut rng| rng.next_u64()).unwrap_or_default();
        let mut tried = Vec::new();
        let mut busy = 0;
        let mut last = None;
        while tried.len() < self.limits.attempts {
            let Some((record, offer)) = self.choose(&records, &request.model_id, &need, &tried, seed) else {
                if tried.is_empty() {
                    return Err(self.none_eligible(&records, &request.model_id, &need));
                }
                break;
            };
            let worker = record.record().peer_id;
            tried.push(worker);
            match self.attempt(&record, &offer, &request, &deltas).await {
                Ok(mut completion) => {
                    completion.failovers = (tried.len() - 1) as u32;
                    return Ok(completion);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Broken(e)) if delivery == Delivery::Shown => return Err(e),
                Err(Attempt::Broken(e)) => {
                    tracing::info!(%worker, error = %e, "worker broke its answer; discarding it and trying another");
                    if deltas.send(Delta::Discard).await.is_err() {
                        return Err(InferenceError::Cancelled);
                    }
                    self.metrics.replaced.inc();
                    last = Some(e);
                }
                Err(Attempt::Retry(e)) => {
                    tracing::info!(%worker, error = %e, "worker failed before the first chunk; trying another");
                    self.metrics.failovers.inc();
                    if matches!(e, InferenceError::Busy(_)) {
                        busy += 1;
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            None => Err(InferenceError::NoEligibleWorker(request.model_id.clone())),
            Some(_) if busy == tried.len() => Err(InferenceError::Busy(busy)),
            Some(e) => Err(e),
        }
    }

    fn observe(&self, worker: PeerId, update: impl FnOnce(&mut Observed)) {
        if let Ok(mut all) = self.observed.lock() {
            update(all.entry(worker).or_default());
        }
    }

    async fn attempt(
        &self,
        record: &SignedRecord,
        offer: &ModelOffer,
        request: &Request,
        deltas: &mpsc::Sender<Delta>,
    ) -> Result<Completion, Attempt> {
        let worker = record.record().peer_id;
        let failed = |reason: String| InferenceError::WorkerFailed { worker: worker.to_string(), reason };
        // The channel is per worker, so the request (and the hash the receipt covers) is too.
        let mut request = request.clone();
        let free = choose::unpaid(record.record(), offer);
        // Counts this request's worst case on the channel until the attempt ends (top-ups of
        // requests started meanwhile cover it).
        let mut _in_flight = None;
        if let Some(payments) = self.payments.as_ref().filter(|_| !free) {
            // The worker counts prompt tokens exactly; the estimate is doubled to stay above it.
            let prompt = estimate_tokens(&request.prompt).saturating_mul(2).saturating_add(64);
            let worst = worst_case(
                offer.price_prompt_per_1k,
                offer.price_completion_per_1k,
                prompt,
                request.max_tokens,
            )
            .min(request.max_price);
            // A channel that cannot be set up with this worker (its deploy did not confirm, a cap
            // reached meanwhile) moves the request on: another worker may have a channel already.
            let guard = payments
                .channel(&worker, &record.record().payout_address, worst)
                .await
                .map_err(|e| Attempt::Retry(InferenceError::Payment(e.to_string())))?;
            request.channel = Some(guard.channel.params.clone());
            _in_flight = guard.into_in_flight();
        }
        let request = &request;
        let request_bytes = &request.encode()[..];
        if request_bytes.len() > MAX_REQUEST {
            // Refused here: a worker would refuse it too, and count it against this node.
            return Err(Attempt::Fatal(InferenceError::Refused {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the request takes {} bytes on the wire, more than the {MAX_REQUEST} a worker accepts",
                    request_bytes.len()
                ),
            }));
        }
        self.observe(worker, |o| o.in_flight += 1);
        let started = Instant::now();
        let result = async {
            // The connection manager must not trim this connection while the answer streams.
            let _in_use =
                self.network.in_use(worker).await.map_err(|e| Attempt::Fatal(failed(e.to_string())))?;
            let deadline = tokio::time::Instant::now() + self.limits.first_token;
            let mut s = self.connect(worker, &record.record().noise_static, request_bytes, deadline).await?;
            let opened = tokio::time::timeout_at(deadline, async move {
                let first = s.recv(MAX_SERVER_FRAME).await?;
                // A worker whose slots are taken says so once, then answers when one frees:
                // its queue depth informs later selections (all within the same deadline).
                let depth = match ServerFrame::decode(&first) {
                    Ok(ServerFrame::Queued { depth }) => depth,
                    _ => {
                        self.observe(worker, |o| o.queued = 0);
                        return Ok::<_, SessionError>((s, first));
                    }
                };
                self.observe(worker, |o| o.queued = depth);
                let next = s.recv(MAX_SERVER_FRAME).await?;
                Ok((s, next))
            })
            .await;
            let (session, first) = match opened {
                Err(_) => return Err(Attempt::Retry(InferenceError::Timeout(worker.to_string()))),
                Ok(Err(e)) => return Err(Attempt::Retry(failed(e.to_string()))),
                Ok(Ok(x)) => x,
            };
            let first =
                ServerFrame::decode(&first).map_err(|e| Attempt::Retry(failed(format!("bad frame: {e}"))))?;
            if let ServerFrame::Error { code, message } = &first {
                // Every refusal moves on to another worker: one that refuses what its attested
                // offer promised (or everything) must not end the request. If every worker
                // refuses, the last refusal is what the caller gets.
                return Err(Attempt::Retry(match code {
                    ErrorCode::Busy => InferenceError::Busy(1),
                    _ if code.retryable() => failed(format!("{code:?}: {message}")),
                    _ => InferenceError::Refused { code: *code, message: message.clone() },
                }));
            }
            let ttft = started.elapsed();
            let done = self
                .stream_rest(session, first, record, offer, request, request_bytes, deltas)
                .await
                .map_err(|e| match e {
                    InferenceError::Cancelled => Attempt::Fatal(e),
                    e => Attempt::Broken(e),
                })?;
            // Speed counts only for answers that completed: a worker that answers at once and
            // then breaks its answer must not look fast.
            self.observe(worker, |o| {
                let ms = ttft.as_secs_f64() * 1000.0;
                o.latency_ms = Some(o.latency_ms.map_or(ms, |old| 0.8 * old + 0.2 * ms));
            });
            Ok(done)
        }
        .await;
        self.observe(worker, |o| {
            o.in_flight = o.in_flight.saturating_sub(1);
            match &result {
                Ok(_) => {
                    o.failures /= 2;
                    o.busy /= 2;
                }
                Err(Attempt::Retry(InferenceError::Busy(_))) => o.busy += 1,
                // The caller leaving, or a request refused here before anything was sent, says
                // nothing about the worker; a refusal from the worker counts as its failure.
                Err(Attempt::Fatal(InferenceError::Cancelled | InferenceError::Refused { .. })) => {}
                // An answer broken after it started (caps, receipt, stall) cost the caller the
                // request or a whole answer's wait: it weighs as much as several failures.
                Err(Attempt::Broken(_)) => o.failures = o.failures.saturating_add(BROKEN_ANSWER_FAILURES),
                Err(_) => o.failures = o.failures.saturating_add(1),
            }
        });
        result
    }
}

/// An estimate of a prompt's tokens for choosing workers (the worker counts exactly): about four
/// bytes per token, plus a few per chat message for the template.
pub fn estimate_tokens(prompt: &Prompt) -> u32 {
    let bytes = match prompt {
        Prompt::Text(t) => t.len(),
        Prompt::Embed(inputs) => inputs.iter().map(String::len).sum(),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>()
                    + 16
            })
            .sum(),
    };
    u32::try_from(bytes / 4).unwrap_or(u32::MAX)
}
