//! The rest of an answer once the worker's first frame arrived: relay the events to the caller
//! within the request's caps (an overall deadline, a gap between frames, no more events than
//! `max_tokens`, bounded bytes) and its terms (tool calls and log-probabilities only as asked),
//! check the receipt, and pay it. A worker is a stranger: it can
//! stream for ever, send huge chunks or inflate a receipt, and none of it holds this client
//! longer than its deadlines or makes it sign more than the receipt it verified.

use std::time::Instant;

use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::attestation::signed::SignedRecord;
use cocoon_protocol::inference::answer::{AnswerCheck, MAX_DIMENSIONS, MAX_EVENT_TEXT};
use cocoon_protocol::inference::messages::{
    AnswerDigest, ClientFrame, Event, MAX_SERVER_FRAME, Prompt, Request, ServerFrame, Shape,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, sha256};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tycho_types::models::StdAddr;

use super::{Completion, Delta, InferenceClient, InferenceError, Payment};
use crate::inference::session::Session;
use crate::payments::peer_key;

/// Most bytes one text chunk may carry: a chunk is one decoding step (one token, or a few bytes
/// of a character split across steps); the longest vocabulary entries are a few dozen bytes.
pub const MAX_CHUNK_BYTES: usize = 1024;
/// Most bytes one tool-call event may carry: an engine that parses calls from the model's own
/// format sends each call whole.
pub const MAX_CALL_BYTES: usize = MAX_EVENT_TEXT;
/// Most bytes of text one answer may carry in all (also what a non-streamed answer buffers).
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Template tokens a prompt may add beyond one token per byte of its text (a default system
/// prompt, role markers): generous, since the context length bounds the count as well.
const TEMPLATE_TOKENS: u64 = 256;
/// Special tokens an embedding model adds around each input (at most).
const EMBED_SPECIAL_TOKENS: u64 = 4;
/// Template tokens per chat message (role markers and separators).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 16;

/// What an answer has delivered so far, against its caps.
struct Tally {
    chunks: u32,
    bytes: usize,
    max_chunks: u32,
}

impl Tally {
    /// Count an event, or say which cap it breaks.
    fn add(&mut self, event: &Event) -> Result<(), String> {
        let len = event.text_len();
        let cap = match event {
            Event::Text { .. } => MAX_CHUNK_BYTES,
            Event::ToolCall(_) => MAX_CALL_BYTES,
            Event::Embedding { .. } => MAX_DIMENSIONS * 4,
        };
        self.chunks = self.chunks.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len);
        if len > cap {
            return Err(format!("an event of {len} bytes (at most {cap})"));
        }
        if self.chunks > self.max_chunks {
            return Err(format!("more chunks than max_tokens ({})", self.max_chunks));
        }
        if self.bytes > MAX_ANSWER_BYTES {
            return Err(format!("more than {MAX_ANSWER_BYTES} bytes of text"));
        }
        Ok(())
    }
}

impl InferenceClient {
    /// After the first frame: relay chunks, then check the receipt and close with the voucher.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stream_rest(
        &self,
        mut session: Session<libp2p::Stream>,
        first: ServerFrame,
        record: &SignedRecord,
        offer: &ModelOffer,
        request: &Request,
        request_bytes: &[u8],
        deltas: &mpsc::Sender<Delta>,
    ) -> Result<Completion, InferenceError> {
        let worker = record.record().peer_id;
        let failed = |reason: String| InferenceError::WorkerFailed { worker: worker.to_string(), reason };
        let deadline = Instant::now() + self.limits.total;
        let mut response = AnswerDigest::default();
        let mut check = AnswerCheck::new(request);
        let mut tally = Tally { chunks: 0, bytes: 0, max_chunks: request.max_tokens };
        let mut frame = first;
        // The caller went away: the worker is asked to stop and to invoice what it sent, which is
        // paid like any answer (a paying client that just vanished would owe it as a debt). From
        // then on the worker has `idle` in all to finish, however it trickles frames.
        let mut cancelled: Option<Instant> = None;
        loop {
            match frame {
                ServerFrame::Event(event) => {
                    tally.add(&event).map_err(|e| failed(format!("the answer broke its caps: {e}")))?;
                    check.event(&event).map_err(|e| failed(format!("the answer broke its request: {e}")))?;
                    response.update(&event);
                    if cancelled.is_none() && deltas.send(Delta::Answer(event)).await.is_err() {
                        cancelled = Some(Instant::now() + self.limits.idle);
                        if !self.send_cancel(&mut session, request).await {
                            let _ = session.close().await; // the worker stops generating
                            return Err(InferenceError::Cancelled);
                        }
                    }
                }
                ServerFrame::Error { code, message } => {
                    return Err(failed(format!("{code:?} after the first chunk: {message}")));
                }
                ServerFrame::Queued { .. } => {
                    return Err(failed("a queue report after the answer began".into()));
                }
                ServerFrame::Paid { .. } | ServerFrame::Unpaid { .. } => {
                    return Err(failed("payment frame before the receipt".into()));
                }
                ServerFrame::Done { finish_reason, receipt } => {
                    check
                        .finish(finish_reason)
                        .map_err(|e| failed(format!("the answer broke its request: {e}")))?;
                    let hash = response.finish();
                    let parsed =
                        check_receipt(&receipt, worker, offer, request, request_bytes, hash).map_err(
                            |reason| InferenceError::BadReceipt { worker: worker.to_string(), reason },
                        )?;
                    let payment = self.close_with_payment(&mut session, worker, request, parsed.amount).await;
                    if cancelled.is_some() {
                        tracing::debug!(%worker, ?payment, "cancelled request invoiced");
                        return Err(InferenceError::Cancelled);
                    }
                    let receipt_bytes = receipt;
                    let completion = Completion {
                        worker,
                        receipt: parsed,
                        receipt_bytes,
                        finish_reason,
                        failovers: 0,
                        payment,
                    };
                    return Ok(completion);
                }
            }
            let until = cancelled.unwrap_or_else(|| (Instant::now() + self.limits.idle).min(deadline));
            let wait = until.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(wait, session.recv(MAX_SERVER_FRAME))
                .await
                .map_err(|_| InferenceError::Timeout(worker.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
            frame = ServerFrame::decode(&next).map_err(|e| failed(format!("bad frame: {e}")))?;
        }
    }

    /// Ask the worker to stop (only worth it on a paid request, where it invoices what it sent);
    /// `false` when the request should simply be dropped.
    async fn send_cancel(&self, session: &mut Session<libp2p::Stream>, request: &Request) -> bool {
        request.channel.is_some() && session.send(&ClientFrame::Cancel.encode()).await.is_ok()
    }

    /// Pay the receipt's `amount` (or close with an empty voucher frame when nothing is paid),
    /// then close the session.
    async fn close_with_payment(
        &self,
        session: &mut Session<libp2p::Stream>,
        worker: PeerId,
        request: &Request,
        amount: u64,
    ) -> Payment {
        let payment = match request.channel.as_ref().map(|p| p.address()) {
            Some(Ok(channel)) => self.pay(session, worker, &channel, amount).await,
            Some(Err(e)) => Payment::Failed(e.to_string()),
            None => {
                // No payments, or a free model: close with an empty voucher frame.
                let _ = session.send(&ClientFrame::Voucher(Vec::new()).encode()).await;
                Payment::None
            }
        };
        let _ = session.close().await;
        payment
    }

    /// Pay `amount` to `worker` on the open session: sign the voucher, send it, wait for the
    /// acknowledgement (each within its deadline: the channel's lock is held meanwhile, and every
    /// later request to this worker waits on it); once, follow the worker's statement of what it
    /// holds.
    async fn pay(
        &self,
        session: &mut Session<libp2p::Stream>,
        worker: PeerId,
        channel: &StdAddr,
        amount: u64,
    ) -> Payment {
        let Some(payments) = &self.payments else {
            return Payment::Failed("payments are off on this client".into());
        };
        let result = async {
            let key = peer_key(&worker).ok_or("worker id has no ed25519 key")?;
            let mut guard = payments.relock(key, channel).await.map_err(|e| e.to_string())?;
            let mut voucher = payments.sign(&mut guard, amount).await.map_err(|e| e.to_string())?;
            for _ in 0..2 {
                session
                    .send(&ClientFrame::Voucher(voucher.to_bytes()).encode())
                    .await
                    .map_err(|e| e.to_string())?;
                let reply = tokio::time::timeout(self.limits.voucher, session.recv(MAX_SERVER_FRAME))
                    .await
                    .map_err(|_| "no acknowledgement".to_owned())?
                    .map_err(|e| e.to_string())?;
                match ServerFrame::decode(&reply).map_err(|e| e.to_string())? {
                    ServerFrame::Paid { cumulative, seqno } => {
                        payments.acknowledged(&guard, cumulative).map_err(|e| e.to_string())?;
                        return Ok(Payment::Paid {
                            channel: guard.channel.address.to_string(),
                            cumulative,
                            seqno,
                        });
                    }
                    ServerFrame::Unpaid { cumulative, seqno, message } => {
                        tracing::warn!(%worker, %message, "voucher refused; resynchronising");
                        voucher = payments
                            .resync(&mut guard, amount, cumulative, seqno)
                            .await
                            .map_err(|e| format!("worker refused the voucher ({message}) and {e}"))?;
                    }
                    other => return Err(format!("unexpected frame after the voucher: {other:?}")),
                }
            }
            Err("worker refused the corrected voucher".to_owned())
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::warn!(%worker, error = %e, "request not paid");
            Payment::Failed(e)
        })
    }
}

/// The most tokens `prompt` can take once templated under `shape`: every token stands for at
/// least one byte of text, plus what the template adds. Tools count twice (the template may
/// render them, and a forced call's instruction repeats them).
pub fn max_prompt_tokens(prompt: &Prompt, shape: &Shape) -> u64 {
    let tools: u64 = shape
        .tools
        .iter()
        .map(|t| {
            (t.name.len() + t.description.len() + t.parameters.len()) as u64 + TEMPLATE_TOKENS_PER_MESSAGE
        })
        .sum();
    let text = match prompt {
        Prompt::Text(t) => t.len() as u64,
        // No template; each input gains its special tokens (a BERT encoder's two).
        Prompt::Embed(inputs) => inputs.iter().map(|i| i.len() as u64 + EMBED_SPECIAL_TOKENS).sum(),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| {
                let calls: usize =
                    m.tool_calls.iter().map(|c| c.id.len() + c.name.len() + c.arguments.len()).sum();
                let id = m.tool_call_id.as_ref().map_or(0, String::len);
                (m.content.len() + calls + id) as u64 + TEMPLATE_TOKENS_PER_MESSAGE
            })
            .sum::<u64>(),
    };
    text.saturating_add(tools.saturating_mul(2)).saturating_add(TEMPLATE_TOKENS)
}

/// A receipt must be signed by the worker, name this request and the text received, charge the
/// attested prices correctly for counts the request can have taken, and stay within the price cap.
pub(super) fn check_receipt(
    bytes: &[u8],
    worker: PeerId,
    offer: &ModelOffer,
    request: &Request,
    request_bytes: &[u8],
    response_hash: [u8; 32],
) -> Result<Receipt, String> {
    let r = Receipt::open(bytes).map_err(|e| e.to_string())?;
    let expected = amount_due(offer.price_prompt_per_1k, offer.price_completion_per_1k, r.usage);
    let tokens = u64::from(r.usage.prompt_tokens) + u64::from(r.usage.completion_tokens);
    let problems = [
        (r.worker != worker, "signed by another worker"),
        (
            r.request_id != request.request_id || r.request_hash != sha256(request_bytes),
            "names another request",
        ),
        (r.response_hash != response_hash, "does not match the answer received"),
        (r.model_id != offer.model_id, "names another model"),
        (
            r.price_prompt_per_1k != offer.price_prompt_per_1k
                || r.price_completion_per_1k != offer.price_completion_per_1k,
            "charges other prices than attested",
        ),
        (r.amount != expected, "amount does not match usage and prices"),
        (r.amount > request.max_price, "amount exceeds the price cap"),
        (r.usage.completion_tokens > request.max_tokens, "more tokens than max_tokens"),
        (
            u64::from(r.usage.prompt_tokens) > max_prompt_tokens(&request.prompt, &request.shape),
            "more prompt tokens than the prompt can hold",
        ),
        (
            tokens > u64::from(offer.context_length) && !matches!(request.prompt, Prompt::Embed(_)),
            "more tokens than the attested context length",
        ),
        (
            matches!(request.prompt, Prompt::Embed(_)) && r.usage.completion_tokens > 0,
            "completion tokens for an embedding",
        ),
    ];
    match problems.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err((*why).to_owned()),
        None => Ok(r),
    }
}
