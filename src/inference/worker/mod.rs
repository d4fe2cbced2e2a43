//! The worker side of `/cocoon/inference/1`: accept streams, complete the Noise handshake with
//! the attested static key, check the request (model attested here, context, price cap), admit
//! it into a bounded number of slots per model (`Busy` at once beyond them), stream the engine's
//! text, and finish with a receipt signed by the node's identity key. With payments on, the
//! request must name a channel that covers its worst-case price (`crate::payments::worker`), and
//! the client's voucher is stored durably before the worker answers `Paid`.
//!
//! A client that goes away mid-stream cancels the generation: the next chunk cannot be sent, the
//! engine's receiver is dropped, and the engine stops at its next token. Frames that fail to
//! decrypt, are oversized or malformed end the stream and block the peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::inference::messages::{
    ClientFrame, ErrorCode, FinishReason, MAX_CLIENT_FRAME, MAX_REQUEST, PROTOCOL, Request, ServerFrame,
};
use cocoon_protocol::inference::pricing::{amount_due, worst_case};
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};
use futures::StreamExt;
use futures::io::WriteHalf;
use libp2p::identity::Keypair;
use libp2p::{PeerId, StreamProtocol};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::engine::{Engine, EngineEvent, Generation};
use super::session::{self, Session, SessionError, Writer};
use crate::clock::unix_now;
use crate::network::NetworkHandle;
use crate::payments::worker::{Admission, Refusal, Settled, WorkerPayments};

/// Time limits of the worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Handshake plus request frame.
    pub handshake: Duration,
    /// Whole generation.
    pub request: Duration,
    /// Waiting for the client's voucher after the receipt.
    pub voucher: Duration,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            request: Duration::from_secs(300),
            voucher: Duration::from_secs(10),
        }
    }
}

/// A model this worker serves: its engine and the offer it attests.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// The attested offer (prices, context, concurrency).
    pub offer: ModelOffer,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    requests: Family<Vec<(String, String)>, Counter>,
    tokens: Counter,
    in_flight: Gauge,
    vouchers: Family<Vec<(String, String)>, Counter>,
    invoiced: Counter,
}

impl Metrics {
    fn outcome(&self, outcome: &str) {
        self.requests.get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]).inc();
    }
}

struct Inner {
    models: HashMap<String, (ServedModel, Arc<Semaphore>)>,
    identity: Keypair,
    noise_private: [u8; 32],
    network: NetworkHandle,
    limits: WorkerLimits,
    metrics: Metrics,
    /// Streams being handled (handshake included); beyond it new streams are dropped.
    streams: Arc<Semaphore>,
    /// Payment rules and voucher book; `None` serves without payment.
    payments: Option<Arc<WorkerPayments>>,
}

/// Outcome of one stream, for metrics and logs.
enum Outcome {
    Completed,
    Refused(ErrorCode),
    Canceled,
    Malformed(String),
    Failed(String),
}

/// What a worker serves with.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Signs receipts.
    pub identity: Keypair,
    /// The attested Noise static key.
    pub noise_private: [u8; 32],
    /// The models served.
    pub models: Vec<ServedModel>,
    /// Time limits.
    pub limits: WorkerLimits,
    /// Payment rules and voucher book; `None` serves without payment.
    pub payments: Option<Arc<WorkerPayments>>,
}

/// Serve `/cocoon/inference/1` until `shutdown`.
pub fn start(
    network: NetworkHandle,
    setup: WorkerSetup,
    registry: &mut Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let WorkerSetup { identity, noise_private, models, limits, payments } = setup;
    let metrics = Metrics::default();
    let r = registry.sub_registry_with_prefix("cocoon_inference_worker");
    r.register("requests", "Inference streams served, by outcome", metrics.requests.clone());
    r.register("tokens", "Text chunks generated and sent", metrics.tokens.clone());
    r.register("in_flight", "Requests generating now", metrics.in_flight.clone());
    r.register("invoiced_nanotons", "Amounts of the receipts sent to clients", metrics.invoiced.clone());
    r.register(
        "vouchers",
        "Closing frames after a receipt when payments are off (empty: no payment channel)",
        metrics.vouchers.clone(),
    );
    let capacity: usize = models.iter().map(|m| m.offer.max_concurrent as usize).sum();
    let models = models
        .into_iter()
        .map(|m| {
            let slots = Arc::new(Semaphore::new(m.offer.max_concurrent.max(1) as usize));
            (m.offer.model_id.clone(), (m, slots))
        })
        .collect();
    let inner = Arc::new(Inner {
        models,
        identity,
        noise_private,
        network: network.clone(),
        limits,
        metrics,
        streams: Arc::new(Semaphore::new(4 * capacity + 16)),
        payments,
    });
    let mut incoming =
        network.streams().accept(StreamProtocol::new(PROTOCOL)).map_err(|e| format!("{PROTOCOL}: {e:?}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => return },
                _ = shutdown.changed() => return,
            };
            let Ok(permit) = inner.streams.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many inference streams; dropping one");
                continue;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                // Keep the client's connection from being trimmed while its answer streams.
                let in_use = inner.network.in_use(peer).await;
                let outcome = serve(&inner, peer, stream).await;
                drop(in_use);
                drop(permit);
                inner.record(peer, outcome).await;
            });
        }
    }))
}

impl Inner {
    async fn record(&self, peer: PeerId, outcome: Outcome) {
        match outcome {
            Outcome::Completed => self.metrics.outcome("completed"),
            Outcome::Canceled => {
                tracing::info!(%peer, "client went away; generation cancelled");
                self.metrics.outcome("canceled");
            }
            Outcome::Refused(code) => {
                tracing::debug!(%peer, ?code, "request refused");
                self.metrics.outcome(&format!("{code:?}").to_lowercase());
            }
            Outcome::Failed(reason) => {
                tracing::warn!(%peer, %reason, "inference failed");
                self.metrics.outcome("failed");
            }
            Outcome::Malformed(reason) => {
                tracing::warn!(%peer, %reason, "malformed inference stream; blocking the peer");
                self.metrics.outcome("malformed");
                let _ = self.network.block(peer, format!("malformed inference stream: {reason}")).await;
            }
        }
    }
}

type Stream = libp2p::Stream;
type Out = Writer<WriteHalf<Stream>>;

async fn refuse(out: &mut Out, code: ErrorCode, message: impl Into<String>) -> Outcome {
    let _ = out.send(&ServerFrame::Error { code, message: message.into() }.encode()).await;
    let _ = out.close().await;
    Outcome::Refused(code)
}

async fn serve(inner: &Inner, peer: PeerId, stream: Stream) -> Outcome {
    let opened = tokio::time::timeout(inner.limits.handshake, async {
        let mut session = session::respond(stream, &inner.noise_private).await?;
        let request = session.recv(MAX_REQUEST).await;
        Ok::<_, SessionError>((session, request))
    })
    .await;
    let (mut session, request) = match opened {
        Err(_) => return Outcome::Failed("handshake timed out".into()),
        Ok(Err(SessionError::Noise(e))) => return Outcome::Malformed(format!("handshake: {e}")),
        Ok(Err(e)) => return Outcome::Failed(format!("handshake: {e}")),
        Ok(Ok(s)) => s,
    };
    let request_bytes = match request {
        Ok(bytes) => bytes,
        Err(e @ SessionError::FrameTooLarge { .. }) => {
            refuse(&mut session.writer, ErrorCode::TooLarge, e.to_string()).await;
            return Outcome::Malformed(e.to_string());
        }
        Err(e @ SessionError::Noise(_)) => return Outcome::Malformed(e.to_string()),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let request = match Request::decode(&request_bytes) {
        Ok(r) => r,
        Err(e) => {
            refuse(&mut session.writer, ErrorCode::InvalidRequest, e.to_string()).await;
            return Outcome::Malformed(format!("request: {e}"));
        }
    };
    let Some((model, slots)) = inner.models.get(&request.model_id) else {
        return refuse(
            &mut session.writer,
            ErrorCode::UnknownModel,
            format!("model {} is not served here", request.model_id),
        )
        .await;
    };
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        return refuse(&mut session.writer, ErrorCode::Busy, "all slots for this model are taken").await;
    };
    if request.max_tokens == 0 {
        return refuse(&mut session.writer, ErrorCode::InvalidRequest, "max_tokens must be at least 1").await;
    }
    let offer = &model.offer;
    let prompt_tokens = match model.engine.prompt_tokens(&request.prompt).await {
        Ok(n) => n,
        Err(e) => return refuse(&mut session.writer, ErrorCode::InvalidRequest, e.to_string()).await,
    };
    if u64::from(prompt_tokens) + u64::from(request.max_tokens) > u64::from(offer.context_length) {
        let message = format!(
            "prompt ({prompt_tokens} tokens) plus max_tokens ({}) exceeds the context length {}",
            request.max_tokens, offer.context_length
        );
        return refuse(&mut session.writer, ErrorCode::TooLarge, message).await;
    }
    let worst = worst_case(
        offer.price_prompt_per_1k,
        offer.price_completion_per_1k,
        prompt_tokens,
        request.max_tokens,
    );
    if worst > request.max_price {
        let message = format!("worst-case price {worst} nanotons exceeds max_price {}", request.max_price);
        return refuse(&mut session.writer, ErrorCode::PriceTooHigh, message).await;
    }
    let admission = match (&inner.payments, &request.channel) {
        // Nothing to pay for (free model): no channel needed.
        (None, _) | (Some(_), None) if worst == 0 => None,
        (None, _) => None,
        (Some(_), None) => {
            return refuse(
                &mut session.writer,
                ErrorCode::PaymentRequired,
                "this worker is paid through a payment channel; the request named none",
            )
            .await;
        }
        (Some(payments), Some(params)) => match payments.admit(&peer, params, worst).await {
            Ok(a) => Some((payments.clone(), a)),
            Err(Refusal::Busy(message)) => {
                return refuse(&mut session.writer, ErrorCode::Busy, message).await;
            }
            Err(Refusal::Payment(message)) => {
                return refuse(&mut session.writer, ErrorCode::PaymentRequired, message).await;
            }
        },
    };
    inner.metrics.in_flight.inc();
    let paying = admission.as_ref().map(|(p, a)| (p.as_ref(), a));
    let outcome =
        generate(inner, &mut session, model, slot, &request, &request_bytes, prompt_tokens, paying).await;
    inner.metrics.in_flight.dec();
    if let Some((payments, admission)) = &admission {
        payments.release(admission).await;
    }
    outcome
}

/// How the generation ended for the client.
enum Ended {
    /// The engine finished, or the client asked to stop (`ClientFrame::Cancel`, then `cancelled`):
    /// a receipt for what was generated and sent is due.
    Receipt(Answer, bool),
    /// The client went away mid-answer; it owes what it was sent (`usage`).
    Vanished(Usage),
    /// Nothing more to do (the client broke the protocol, or the worker refused).
    Over(Outcome),
}

/// The answer a receipt covers.
struct Answer {
    usage: Usage,
    finish_reason: FinishReason,
    response_hash: [u8; 32],
}

/// The client's next frame, being read while the answer streams (the read is not cancel-safe, so
/// the one future lives until it completes).
type Watch<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, SessionError>> + Send + 'a>>;

#[allow(clippy::too_many_arguments)]
async fn generate(
    inner: &Inner,
    session: &mut Session<Stream>,
    model: &ServedModel,
    slot: tokio::sync::OwnedSemaphorePermit,
    request: &Request,
    request_bytes: &[u8],
    prompt_tokens: u32,
    paying: Option<(&WorkerPayments, &Admission)>,
) -> Outcome {
    let events = model.engine.generate(Generation {
        prompt: request.prompt.clone(),
        max_tokens: request.max_tokens,
        sampling: request.sampling.clone(),
        prompt_tokens: Some(prompt_tokens),
    });
    // The client sends nothing but a cancel until the receipt: the end of its stream before then
    // means it went away, and anything else is a protocol violation. After the receipt, the same
    // read yields the closing frame (the voucher's place).
    let mut watch: Watch<'_> = Box::pin(session.reader.recv(MAX_CLIENT_FRAME));
    let (answer, cancelled) = match relay(inner, &mut session.writer, &mut watch, events, prompt_tokens).await
    {
        Ended::Receipt(answer, cancelled) => (answer, cancelled),
        Ended::Over(outcome) => return outcome,
        Ended::Vanished(usage) => {
            // A client that vanished mid-answer owes what it was sent (it could have cancelled
            // and paid for it): otherwise walking away just before the receipt would be free.
            if let Some((payments, admission)) = paying {
                let offer = &model.offer;
                payments
                    .unpaid(
                        admission,
                        amount_due(offer.price_prompt_per_1k, offer.price_completion_per_1k, usage),
                    )
                    .await;
            }
            return Outcome::Canceled;
        }
    };
    // With payments on, the voucher exchange does not need the engine: the slot is free before
    // the client hears of the receipt, so its next request never finds its own slot still taken.
    // Without payments the slot is held until the closing frame, as before.
    let slot = if paying.is_some() {
        drop(slot);
        None
    } else {
        Some(slot)
    };
    let (amount, receipt) = match sign_receipt(inner, model, request, request_bytes, &answer) {
        Ok(signed) => signed,
        Err(e) => return refuse(&mut session.writer, ErrorCode::Engine, e).await,
    };
    let done = ServerFrame::Done { finish_reason: answer.finish_reason, receipt };
    if session.writer.send(&done.encode()).await.is_err() {
        if let Some((payments, admission)) = paying {
            payments.unpaid(admission, amount).await;
        }
        return Outcome::Failed("client left before the receipt".into());
    }
    inner.metrics.invoiced.inc_by(amount);
    let closing = if cancelled {
        drop(watch); // it completed with the cancel: read the next frame afresh
        tokio::time::timeout(inner.limits.voucher, session.reader.recv(MAX_CLIENT_FRAME)).await
    } else {
        let closing = tokio::time::timeout(inner.limits.voucher, &mut watch).await;
        drop(watch);
        match closing {
            // The client cancelled as the engine finished: its voucher for this receipt follows.
            Ok(Ok(bytes)) if ClientFrame::decode(&bytes) == Ok(ClientFrame::Cancel) => {
                tokio::time::timeout(inner.limits.voucher, session.reader.recv(MAX_CLIENT_FRAME)).await
            }
            other => other,
        }
    };
    let Some((payments, admission)) = paying else {
        let _ = session.writer.close().await;
        drop(slot);
        return voucher(inner, closing);
    };
    let outcome = collect(inner, session, payments, admission, amount, closing).await;
    let _ = session.writer.close().await;
    outcome
}

/// Relay the engine's text to the client until the engine finishes, the client cancels or goes
/// away, or the request's time runs out.
async fn relay(
    inner: &Inner,
    out: &mut Out,
    watch: &mut Watch<'_>,
    mut events: tokio::sync::mpsc::Receiver<EngineEvent>,
    prompt_tokens: u32,
) -> Ended {
    let deadline = tokio::time::sleep(inner.limits.request);
    tokio::pin!(deadline);
    let mut response = Sha256::new();
    // Text chunks sent so far: each is one decoding step, so a cancelled answer is charged for at
    // most the tokens generated.
    let mut sent: u32 = 0;
    loop {
        let usage = Usage { prompt_tokens, completion_tokens: sent };
        let event = tokio::select! {
            e = events.recv() => e,
            early = &mut *watch => return match early {
                Ok(bytes) if ClientFrame::decode(&bytes) == Ok(ClientFrame::Cancel) => {
                    let response_hash = response.finalize().into();
                    Ended::Receipt(Answer { usage, finish_reason: FinishReason::Cancelled, response_hash }, true)
                }
                Err(SessionError::Closed | SessionError::Io(_)) => Ended::Vanished(usage),
                Err(e) => Ended::Over(Outcome::Malformed(e.to_string())),
                Ok(_) => Ended::Over(Outcome::Malformed("client frame before the receipt".into())),
            },
            _ = &mut deadline => {
                drop(events);
                return Ended::Over(refuse(out, ErrorCode::Timeout, "generation ran past the worker's time limit").await);
            }
        };
        match event {
            Some(EngineEvent::Text(text)) => {
                response.update(text.as_bytes());
                if out.send(&ServerFrame::Chunk(text).encode()).await.is_err() {
                    return Ended::Vanished(usage); // `events` dropped here: the engine stops
                }
                sent = sent.saturating_add(1);
                inner.metrics.tokens.inc();
            }
            Some(EngineEvent::Done { usage, finish_reason }) => {
                return Ended::Receipt(
                    Answer { usage, finish_reason, response_hash: response.finalize().into() },
                    false,
                );
            }
            Some(EngineEvent::Failed(e)) => return Ended::Over(refuse(out, ErrorCode::Engine, e).await),
            None => {
                return Ended::Over(
                    refuse(out, ErrorCode::Engine, "the engine stopped without finishing").await,
                );
            }
        }
    }
}

/// The signed receipt for `answer` and its amount.
fn sign_receipt(
    inner: &Inner,
    model: &ServedModel,
    request: &Request,
    request_bytes: &[u8],
    answer: &Answer,
) -> Result<(u64, Vec<u8>), String> {
    let offer = &model.offer;
    let amount = amount_due(offer.price_prompt_per_1k, offer.price_completion_per_1k, answer.usage);
    let receipt = Receipt {
        worker: inner.identity.public().to_peer_id(),
        model_id: offer.model_id.clone(),
        engine: model.engine.engine_name().to_owned(),
        request_id: request.request_id,
        request_hash: sha256(request_bytes),
        response_hash: answer.response_hash,
        usage: answer.usage,
        price_prompt_per_1k: offer.price_prompt_per_1k,
        price_completion_per_1k: offer.price_completion_per_1k,
        amount,
        issued_at: unix_now(),
    };
    let signed = receipt.sign(&inner.identity).map_err(|e| format!("cannot sign the receipt: {e}"))?;
    Ok((amount, signed))
}

type Closing = Result<Result<Vec<u8>, SessionError>, tokio::time::error::Elapsed>;

/// Take the client's voucher for `amount`: acknowledge it once stored, or say what the worker
/// holds and allow one corrected voucher; without a valid one the client owes the amount.
async fn collect(
    inner: &Inner,
    session: &mut Session<Stream>,
    payments: &WorkerPayments,
    admission: &Admission,
    amount: u64,
    mut closing: Closing,
) -> Outcome {
    for _ in 0..2 {
        let voucher = match closing {
            Ok(Ok(bytes)) => match ClientFrame::decode(&bytes) {
                Ok(ClientFrame::Voucher(v)) => v,
                Ok(ClientFrame::Cancel) => {
                    payments.unpaid(admission, amount).await;
                    return Outcome::Malformed("a cancel after the receipt".into());
                }
                Err(e) => {
                    payments.unpaid(admission, amount).await;
                    return Outcome::Malformed(format!("voucher frame: {e}"));
                }
            },
            Ok(Err(e @ (SessionError::Noise(_) | SessionError::FrameTooLarge { .. }))) => {
                payments.unpaid(admission, amount).await;
                return Outcome::Malformed(e.to_string());
            }
            Ok(Err(_)) | Err(_) => break,
        };
        let frame = match payments.settle(admission, &voucher, amount).await {
            Settled::Paid { cumulative, seqno } => {
                let _ = session.writer.send(&ServerFrame::Paid { cumulative, seqno }.encode()).await;
                return Outcome::Completed;
            }
            Settled::Refused { cumulative, seqno, reason } => {
                tracing::info!(channel = %admission.channel, %reason, "voucher refused");
                ServerFrame::Unpaid { cumulative, seqno, message: reason }
            }
        };
        if session.writer.send(&frame.encode()).await.is_err() {
            break;
        }
        closing = tokio::time::timeout(inner.limits.voucher, session.reader.recv(MAX_CLIENT_FRAME)).await;
    }
    payments.unpaid(admission, amount).await;
    Outcome::Completed
}

/// Count the client's closing frame when payments are off.
fn voucher(inner: &Inner, closing: Closing) -> Outcome {
    let kind = match closing {
        Ok(Ok(bytes)) => match ClientFrame::decode(&bytes) {
            Ok(ClientFrame::Voucher(v)) if v.is_empty() => "empty",
            Ok(ClientFrame::Voucher(_)) => "present",
            Ok(ClientFrame::Cancel) => return Outcome::Malformed("a cancel after the receipt".into()),
            Err(e) => return Outcome::Malformed(format!("closing frame: {e}")),
        },
        Ok(Err(e @ (SessionError::Noise(_) | SessionError::FrameTooLarge { .. }))) => {
            return Outcome::Malformed(e.to_string());
        }
        Ok(Err(_)) | Err(_) => "missing",
    };
    inner.metrics.vouchers.get_or_create(&vec![("kind".to_owned(), kind.to_owned())]).inc();
    Outcome::Completed
}
