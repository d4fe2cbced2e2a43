//! The worker side of `/cocoon/inference/2`: accept streams, complete the Noise handshake with
//! the attested static key, check the request (model attested here, context, price cap), admit
//! it into a bounded number of slots per model (`Busy` at once beyond them), stream the engine's
//! text, and finish with a receipt signed by the node's identity key. With payments on, the
//! request must name a channel that covers its worst-case price (`crate::payments::worker`), and
//! the client's voucher is stored durably before the worker answers `Paid`.
//!
//! Every peer is a stranger here:
//! - each peer has a budget of streams (open at once, and opened per second, a completed answer
//!   giving its token back), beyond which its streams are reset before any handshake work;
//! - the handshake and every frame sent have deadlines, so a peer that stops reading or writing
//!   releases what it holds; a slow reader can never block the engine (it falls behind a bounded
//!   buffer and only its own generation is stopped, see `super::engine::emit`);
//! - cheap checks (model, channel terms, debt, a byte bound on the prompt) run before a slot is
//!   taken and the prompt tokenised (`admit`);
//! - misbehaviour is reported with a graded [`Tolerance`] for what is provably the peer's own
//!   fault (authenticated bytes that do not decode, a handshake left hanging).
//!
//! Submodules: `admit` (the checks before generation), `answer` (streaming, receipt, voucher).

mod admit;
mod answer;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::budget::{Budgets, Quota};
use cocoon_protocol::inference::messages::{ErrorCode, MAX_REQUEST, PROTOCOL, Request, ServerFrame};
use futures::StreamExt;
use futures::io::WriteHalf;
use libp2p::identity::Keypair;
use libp2p::{PeerId, StreamProtocol};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::engine::Engine;
use super::session::{self, Session, SessionError, Writer};
use crate::network::{NetworkHandle, Tolerance};
use crate::payments::worker::WorkerPayments;

/// Time limits of the worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Handshake plus request frame.
    pub handshake: Duration,
    /// Whole generation.
    pub request: Duration,
    /// Waiting for the client's voucher after the receipt.
    pub voucher: Duration,
    /// Sending one frame (a client that stops reading longer than this is dropped).
    pub send: Duration,
    /// Counting the prompt's tokens (it runs on the model's engine loop; under load, `Busy`).
    pub tokenize: Duration,
    /// Requests of one model that may wait for a slot when all are taken.
    pub queue_length: usize,
    /// Longest a request waits in the queue before it is answered `Busy`.
    pub queue_wait: Duration,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            request: Duration::from_secs(300),
            voucher: Duration::from_secs(10),
            send: session::SEND_TIMEOUT,
            tokenize: Duration::from_secs(10),
            queue_length: 16,
            queue_wait: Duration::from_secs(60),
        }
    }
}

/// New streams one peer may open: a burst of 32, then 8 a second. An honest client opens one per
/// request and a worker serves a handful at once; a peer above this only costs handshakes. A
/// stream that ends in a completed answer gives its token back (see `Inner::record`), so the
/// budget limits streams that bring no served work, never a client's rate of answered requests
/// (that is bounded by the slots).
const STREAMS_PER_PEER: Quota = Quota::new(32, 8.0);
/// New streams all peers together may open: a burst of 256, then 64 a second (a few percent of
/// one core in Noise handshakes, measured ≈ 2,000 a CPU-second).
const STREAMS_SHARED: Quota = Quota::new(256, 64.0);
/// Peers whose stream budget is remembered (see `cocoon_protocol::budget::Budgets`).
const STREAM_BUDGET_PEERS: usize = 4096;
/// Streams one peer may have open at once beyond the worker's total slots and queue places: it
/// may fill every slot and the queues and have a few more waiting on a handshake or a voucher,
/// never the whole stream pool.
const EXTRA_STREAMS_PER_PEER: usize = 4;

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
    streams_refused: Family<Vec<(String, String)>, Counter>,
    tokens: Counter,
    in_flight: Gauge,
    vouchers: Family<Vec<(String, String)>, Counter>,
    invoiced: Counter,
}

fn label(family: &Family<Vec<(String, String)>, Counter>, key: &str, value: &str) {
    family.get_or_create(&vec![(key.to_owned(), value.to_owned())]).inc();
}

impl Metrics {
    fn outcome(&self, outcome: &str) {
        label(&self.requests, "outcome", outcome);
    }
}

struct Inner {
    models: HashMap<String, (ServedModel, queue::Queue)>,
    identity: Keypair,
    noise_private: [u8; 32],
    network: NetworkHandle,
    limits: WorkerLimits,
    metrics: Metrics,
    /// Streams being handled (handshake included); beyond it new streams are reset.
    streams: Arc<Semaphore>,
    /// Streams open per peer (an entry lives while the peer has one), at most `per_peer` each.
    open: Mutex<HashMap<PeerId, usize>>,
    per_peer: usize,
    /// New streams per peer and in all.
    budgets: Mutex<Budgets<PeerId>>,
    /// Payment rules and voucher book; `None` serves without payment.
    payments: Option<Arc<WorkerPayments>>,
}

/// Outcome of one stream, for metrics, logs and the peer's standing.
enum Outcome {
    Completed,
    Refused(ErrorCode),
    Canceled,
    /// The client stopped reading: its generation was stopped.
    Stalled,
    /// The peer broke the protocol: reported at this tolerance.
    Misbehaved(Tolerance, String),
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

/// Serve `/cocoon/inference/2` until `shutdown`.
pub fn start(
    network: NetworkHandle,
    setup: WorkerSetup,
    registry: &mut Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let inner = Arc::new(Inner::new(network.clone(), setup, registry));
    let mut incoming =
        network.streams().accept(StreamProtocol::new(PROTOCOL)).map_err(|e| format!("{PROTOCOL}: {e:?}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => return },
                _ = shutdown.changed() => return,
            };
            let Some(admitted) = inner.clone().take_stream(peer) else {
                drop(stream); // reset before any handshake work
                continue;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                // Keep the client's connection from being trimmed while its answer streams.
                let in_use = inner.network.in_use(peer).await;
                let outcome = serve(&inner, peer, stream).await;
                drop(in_use);
                drop(admitted);
                inner.record(peer, outcome).await;
            });
        }
    }))
}

/// A stream counted against the global pool and its peer's share; both are returned on drop.
struct StreamSlot {
    inner: Arc<Inner>,
    peer: PeerId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.inner.open.lock()
            && let Some(n) = open.get_mut(&self.peer)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl Inner {
    fn new(network: NetworkHandle, setup: WorkerSetup, registry: &mut Registry) -> Self {
        let WorkerSetup { identity, noise_private, models, limits, payments } = setup;
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("cocoon_inference_worker");
        r.register("requests", "Inference streams served, by outcome", metrics.requests.clone());
        r.register(
            "streams_refused",
            "Streams reset before the handshake, by reason (pool full, peer share, peer budget)",
            metrics.streams_refused.clone(),
        );
        r.register("tokens", "Text chunks generated and sent", metrics.tokens.clone());
        r.register("in_flight", "Requests generating now", metrics.in_flight.clone());
        r.register("invoiced_nanotons", "Amounts of the receipts sent to clients", metrics.invoiced.clone());
        r.register(
            "vouchers",
            "Closing frames after a receipt when payments are off (empty: no payment channel)",
            metrics.vouchers.clone(),
        );
        let capacity: usize = models.iter().map(|m| m.offer.max_concurrent.max(1) as usize).sum();
        let queued = limits.queue_length.saturating_mul(models.len());
        let queue_metrics = queue::QueueMetrics::register(r);
        let models = models
            .into_iter()
            .map(|m| {
                let running = m.offer.max_concurrent.max(1) as usize;
                let queue = queue::Queue::new(
                    &m.offer.model_id,
                    running,
                    limits.queue_length,
                    limits.queue_wait,
                    &queue_metrics,
                );
                (m.offer.model_id.clone(), (m, queue))
            })
            .collect();
        let now = crate::clock::monotonic_ms();
        Self {
            models,
            identity,
            noise_private,
            network,
            limits,
            metrics,
            // Every slot and queue place, and room for handshakes and vouchers in flight.
            streams: Arc::new(Semaphore::new(4 * capacity + queued + 16)),
            open: Mutex::default(),
            per_peer: capacity + queued + EXTRA_STREAMS_PER_PEER,
            budgets: Mutex::new(Budgets::new(STREAMS_PER_PEER, STREAMS_SHARED, STREAM_BUDGET_PEERS, now)),
            payments,
        }
    }

    /// Count a new stream from `peer` against the pool, its share and its budget, or refuse it.
    fn take_stream(self: Arc<Self>, peer: PeerId) -> Option<StreamSlot> {
        let refused = |reason: &str| {
            tracing::debug!(%peer, reason, "inference stream refused before the handshake");
            label(&self.metrics.streams_refused, "reason", reason);
            None
        };
        let within_budget = self
            .budgets
            .lock()
            .map(|mut b| b.take(&peer, crate::clock::monotonic_ms()).is_ok())
            .unwrap_or(false);
        if !within_budget {
            return refused("peer_budget");
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else { return refused("pool_full") };
        {
            let Ok(mut open) = self.open.lock() else { return refused("poisoned") };
            let n = open.entry(peer).or_default();
            if *n >= self.per_peer {
                return refused("peer_share");
            }
            *n += 1;
        }
        Some(StreamSlot { inner: self.clone(), peer, _permit: permit })
    }

    async fn record(&self, peer: PeerId, outcome: Outcome) {
        match outcome {
            Outcome::Completed => {
                self.metrics.outcome("completed");
                // An answer served in full was worth its handshake (and, unpaid, it leaves a debt
                // that refuses the peer's next request): its stream token is given back.
                if let Ok(mut budgets) = self.budgets.lock() {
                    budgets.refund(&peer, crate::clock::monotonic_ms());
                }
            }
            Outcome::Canceled => {
                tracing::info!(%peer, "client went away; generation cancelled");
                self.metrics.outcome("canceled");
            }
            Outcome::Stalled => {
                tracing::info!(%peer, "client stopped reading; generation stopped");
                self.metrics.outcome("stalled");
            }
            Outcome::Refused(code) => {
                tracing::debug!(%peer, ?code, "request refused");
                self.metrics.outcome(&format!("{code:?}").to_lowercase());
            }
            Outcome::Failed(reason) => {
                tracing::warn!(%peer, %reason, "inference failed");
                self.metrics.outcome("failed");
            }
            Outcome::Misbehaved(level, reason) => {
                tracing::warn!(%peer, ?level, %reason, "inference stream broke the protocol");
                self.metrics.outcome("misbehaved");
                let _ = self.network.penalize(peer, level, format!("inference stream: {reason}")).await;
            }
        }
    }
}

type Stream = libp2p::Stream;
type Out = Writer<WriteHalf<Stream>>;

/// Tell the client why its request ends here (within the send deadline) and close.
async fn refuse(out: &mut Out, code: ErrorCode, message: impl Into<String>) -> Outcome {
    let _ = out.send(&ServerFrame::Error { code, message: message.into() }.encode()).await;
    let _ = out.close().await;
    Outcome::Refused(code)
}

/// The handshake and the request frame, within the handshake deadline.
async fn open(inner: &Inner, stream: Stream) -> Result<(Session<Stream>, Request, Vec<u8>), Outcome> {
    let opened = tokio::time::timeout(inner.limits.handshake, async {
        let mut session = session::respond(stream, &inner.noise_private).await?;
        let request = session.recv(MAX_REQUEST).await;
        Ok::<_, SessionError>((session, request))
    })
    .await;
    let (mut session, request) = match opened {
        // Holding a stream open without finishing the handshake costs this worker a stream slot.
        Err(_) => return Err(Outcome::Misbehaved(Tolerance::Mid, "handshake timed out".into())),
        // A client may hold a stale record of this worker (a restart rotates the Noise key).
        Ok(Err(SessionError::Noise(e))) => {
            return Err(Outcome::Misbehaved(Tolerance::High, format!("handshake: {e}")));
        }
        Ok(Err(e)) => return Err(Outcome::Failed(format!("handshake: {e}"))),
        Ok(Ok(s)) => s,
    };
    session.writer.set_send_timeout(inner.limits.send);
    let request_bytes = match request {
        Ok(bytes) => bytes,
        Err(e @ SessionError::FrameTooLarge { .. }) => {
            refuse(&mut session.writer, ErrorCode::TooLarge, e.to_string()).await;
            return Err(Outcome::Misbehaved(Tolerance::Mid, e.to_string()));
        }
        Err(e @ SessionError::Noise(_)) => return Err(Outcome::Misbehaved(Tolerance::Fatal, e.to_string())),
        Err(e) => return Err(Outcome::Failed(e.to_string())),
    };
    match Request::decode(&request_bytes) {
        Ok(r) => Ok((session, r, request_bytes)),
        Err(e) => {
            refuse(&mut session.writer, ErrorCode::InvalidRequest, e.to_string()).await;
            // Authenticated bytes that do not decode: only the sender can have made them.
            Err(Outcome::Misbehaved(Tolerance::Fatal, format!("request: {e}")))
        }
    }
}

async fn serve(inner: &Inner, peer: PeerId, stream: Stream) -> Outcome {
    let (mut session, request, request_bytes) = match open(inner, stream).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    let mut admitted = match admit::check(inner, &peer, &request, &mut session.writer).await {
        Ok(admitted) => admitted,
        Err((code, message)) => return refuse(&mut session.writer, code, message).await,
    };
    inner.metrics.in_flight.inc();
    let outcome = answer::generate(inner, &mut session, &mut admitted, &request, &request_bytes).await;
    inner.metrics.in_flight.dec();
    if let Some((payments, admission)) = &admitted.payment {
        payments.release(admission).await;
    }
    outcome
}
