//! The answer to an admitted request: relay the engine's events to the client (each send within
//! its deadline; a client that falls behind gets only its own generation stopped), sign the
//! receipt, and take the voucher.

use cocoon_protocol::inference::messages::{
    AnswerDigest, ClientFrame, ErrorCode, FinishReason, MAX_CLIENT_FRAME, Request, ServerFrame,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};

use super::admit::Admitted;
use super::{Inner, Out, Outcome, ServedModel, Stream, refuse};
use crate::clock::unix_now;
use crate::inference::engine::{EngineEvent, Generation};
use crate::inference::session::{Session, SessionError};
use crate::network::Tolerance;
use crate::payments::worker::{Admission, Settled, WorkerPayments};

/// How the generation ended for the client.
enum Ended {
    /// The engine finished, or the client asked to stop (`ClientFrame::Cancel`, then `cancelled`):
    /// a receipt for what was generated and sent is due.
    Receipt(Answer, bool),
    /// The client went away mid-answer; it owes what it was sent (`usage`).
    Vanished(Usage),
    /// The client stopped reading mid-answer; its generation was stopped, and it owes what it
    /// was sent (`usage`).
    Stalled(Usage),
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

/// Generate the answer, invoice it and take the voucher.
pub(super) async fn generate(
    inner: &Inner,
    session: &mut Session<Stream>,
    admitted: &mut Admitted<'_>,
    request: &Request,
    request_bytes: &[u8],
) -> Outcome {
    let model = admitted.model;
    let prompt_tokens = admitted.prompt_tokens;
    let events = model.engine.generate(Generation {
        prompt: request.prompt.clone(),
        max_tokens: request.max_tokens,
        sampling: request.sampling.clone(),
        shape: request.shape.clone(),
        prompt_tokens: Some(prompt_tokens),
    });
    let paying = admitted.payment.as_ref().map(|(p, a)| (p.as_ref(), a));
    // The client sends nothing but a cancel until the receipt: the end of its stream before then
    // means it went away, and anything else is a protocol violation. After the receipt, the same
    // read yields the closing frame (the voucher's place).
    let mut watch: Watch<'_> = Box::pin(session.reader.recv(MAX_CLIENT_FRAME));
    let ended = relay(inner, &mut session.writer, &mut watch, events, prompt_tokens).await;
    let (answer, cancelled) = match ended {
        Ended::Receipt(answer, cancelled) => (answer, cancelled),
        Ended::Over(outcome) => return outcome,
        Ended::Vanished(usage) | Ended::Stalled(usage) => {
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
            return if matches!(ended, Ended::Stalled(_)) { Outcome::Stalled } else { Outcome::Canceled };
        }
    };
    // With payments on, the voucher exchange does not need the engine: the slot is free before
    // the client hears of the receipt, so its next request never finds its own slot still taken.
    // Without payments the slot is held until the closing frame, as before.
    if paying.is_some() {
        admitted.slot = None;
    }
    let (amount, receipt) = match sign_receipt(inner, admitted.model, request, request_bytes, &answer) {
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
        admitted.slot = None;
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
    let mut response = AnswerDigest::default();
    // Events sent so far: each is at most one decoding step, so a cancelled answer is charged for
    // at most the tokens generated.
    let mut sent: u32 = 0;
    loop {
        let usage = Usage { prompt_tokens, completion_tokens: sent };
        let event = tokio::select! {
            e = events.recv() => e,
            early = &mut *watch => return match early {
                Ok(bytes) if ClientFrame::decode(&bytes) == Ok(ClientFrame::Cancel) => {
                    let response_hash = response.finish();
                    Ended::Receipt(Answer { usage, finish_reason: FinishReason::Cancelled, response_hash }, true)
                }
                Err(SessionError::Closed | SessionError::Io(_)) => Ended::Vanished(usage),
                Err(e) => Ended::Over(misbehaved(e)),
                Ok(_) => Ended::Over(Outcome::Misbehaved(Tolerance::Fatal, "client frame before the receipt".into())),
            },
            _ = &mut deadline => {
                drop(events);
                return Ended::Over(refuse(out, ErrorCode::Timeout, "generation ran past the worker's time limit").await);
            }
        };
        match event {
            Some(EngineEvent::Answer(event)) => {
                response.update(&event);
                match out.send(&ServerFrame::Event(event).encode()).await {
                    Ok(()) => {}
                    // `events` is dropped on return: the engine stops this generation.
                    Err(SessionError::SendTimedOut(_)) => return Ended::Stalled(usage),
                    Err(_) => return Ended::Vanished(usage),
                }
                sent = sent.saturating_add(1);
                inner.metrics.tokens.inc();
            }
            Some(EngineEvent::Done { usage, finish_reason }) => {
                return Ended::Receipt(
                    Answer { usage, finish_reason, response_hash: response.finish() },
                    false,
                );
            }
            Some(EngineEvent::Failed(e)) => return Ended::Over(refuse(out, ErrorCode::Engine, e).await),
            Some(EngineEvent::Stalled) => {
                let _ = refuse(out, ErrorCode::Timeout, "the client fell behind reading the answer").await;
                return Ended::Stalled(usage);
            }
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
                    return Outcome::Misbehaved(Tolerance::Fatal, "a cancel after the receipt".into());
                }
                Err(e) => {
                    payments.unpaid(admission, amount).await;
                    return Outcome::Misbehaved(Tolerance::Fatal, format!("voucher frame: {e}"));
                }
            },
            Ok(Err(e @ (SessionError::Noise(_) | SessionError::FrameTooLarge { .. }))) => {
                payments.unpaid(admission, amount).await;
                return misbehaved(e);
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
            Ok(ClientFrame::Cancel) => {
                return Outcome::Misbehaved(Tolerance::Fatal, "a cancel after the receipt".into());
            }
            Err(e) => return Outcome::Misbehaved(Tolerance::Fatal, format!("closing frame: {e}")),
        },
        Ok(Err(e @ (SessionError::Noise(_) | SessionError::FrameTooLarge { .. }))) => return misbehaved(e),
        Ok(Err(_)) | Err(_) => "missing",
    };
    inner.metrics.vouchers.get_or_create(&vec![("kind".to_owned(), kind.to_owned())]).inc();
    Outcome::Completed
}

/// How much a session error mid-answer counts against the client: an oversized frame was sent
/// inside the authenticated session (only the client can have framed it); a frame that fails to
/// decrypt may have been damaged on a relayed path, so it counts less.
fn misbehaved(e: SessionError) -> Outcome {
    let level = match e {
        SessionError::FrameTooLarge { .. } => Tolerance::Fatal,
        _ => Tolerance::Low,
    };
    Outcome::Misbehaved(level, e.to_string())
}
