//! The checks a request passes before the worker generates for it, cheapest first: the model is
//! served here, `max_tokens` is sane, the channel's terms and the client's debt (lookups), the
//! channel itself (a chain read within the client's budget when unknown, holding no slot), a
//! byte bound that proves a prompt cannot fit the context, then a slot (possibly after waiting in
//! the model's bounded queue, `super::queue`), then the exact token
//! count (on the model's engine loop, within a deadline), the context and price cap, and last the
//! payment admission (which may read the chain, within the client's budget).

use std::sync::Arc;

use cocoon_protocol::inference::messages::{ErrorCode, Prompt, Request, ServerFrame};
use cocoon_protocol::inference::pricing::worst_case;
use libp2p::PeerId;
use tokio::sync::OwnedSemaphorePermit;

use super::queue::Slot;
use super::{Inner, Out, ServedModel};
use crate::payments::worker::{Admission, Refusal, WorkerPayments};

/// A request that passed every check.
pub(super) struct Admitted<'a> {
    /// The model and its engine.
    pub model: &'a ServedModel,
    /// The model slot (taken back once generation no longer needs it).
    pub slot: Option<OwnedSemaphorePermit>,
    /// The prompt's exact token count.
    pub prompt_tokens: u32,
    /// The payment admission, with payments on and a price to pay.
    pub payment: Option<(Arc<WorkerPayments>, Admission)>,
}

/// Why a request is refused: the code and the message the client gets.
pub(super) type Refused = (ErrorCode, String);

fn payment_refused(refusal: Refusal) -> Refused {
    match refusal {
        Refusal::Busy(m) => (ErrorCode::Busy, m),
        Refusal::Payment(m) => (ErrorCode::PaymentRequired, m),
    }
}

/// Why a paid worker refuses a request that names no channel.
const NO_CHANNEL: &str = "this worker is paid through a payment channel; the request named none";

/// Whether `model` costs nothing (then no payment channel is needed).
fn free(model: &ServedModel) -> bool {
    model.offer.price_prompt_per_1k == 0 && model.offer.price_completion_per_1k == 0
}

/// Bytes of text a prompt carries.
fn prompt_bytes(prompt: &Prompt) -> u64 {
    match prompt {
        Prompt::Text(t) => t.len() as u64,
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.len() as u64).sum(),
        // Each input has the context to itself (the engine checks each).
        Prompt::Embed(_) => 0,
    }
}

/// Check `request` from `peer`, cheapest first.
pub(super) async fn check<'a>(
    inner: &'a Inner,
    peer: &PeerId,
    request: &Request,
    out: &mut Out,
) -> Result<Admitted<'a>, Refused> {
    let Some((model, queue)) = inner.models.get(&request.model_id) else {
        return Err((ErrorCode::UnknownModel, format!("model {} is not served here", request.model_id)));
    };
    if request.max_tokens == 0 {
        return Err((ErrorCode::InvalidRequest, "max_tokens must be at least 1".into()));
    }
    if let (Some(payments), Some(params)) = (&inner.payments, &request.channel) {
        // The channel's terms and the client's debt (lookups), and the channel itself: read from
        // the chain within the client's budget if unknown, before a slot is taken.
        payments.learn(peer, params).await.map_err(payment_refused)?;
    }
    cannot_fit(model, request)?;
    // Tools and formats that cannot steer generation (a schema that does not parse, a named tool
    // not declared) are refused before a slot is taken.
    crate::inference::tools::steering(&request.shape).map_err(|e| (ErrorCode::InvalidRequest, e))?;
    if inner.payments.is_some() && request.channel.is_none() && !free(model) {
        return Err((ErrorCode::PaymentRequired, NO_CHANNEL.into()));
    }
    // A slot, possibly after waiting in the model's bounded queue (the client is told).
    let slot = match queue.take()? {
        Slot::Now(permit) => permit,
        Slot::Queued(place) => {
            let depth = u32::try_from(place.depth()).unwrap_or(u32::MAX);
            if out.send(&ServerFrame::Queued { depth }.encode()).await.is_err() {
                return Err((ErrorCode::Busy, "the client went away while queued".into()));
            }
            place.wait().await?
        }
    };
    let counted = tokio::time::timeout(
        inner.limits.tokenize,
        model.engine.prompt_tokens(&request.prompt, &request.shape),
    );
    let prompt_tokens = match counted.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err((ErrorCode::InvalidRequest, e.to_string())),
        Err(_) => return Err((ErrorCode::Busy, "the engine is too busy to count the prompt".into())),
    };
    let worst = within_offer(model, request, prompt_tokens)?;
    let payment = match (&inner.payments, &request.channel) {
        // Nothing to pay for (free model): no channel needed.
        (None, _) | (Some(_), None) if worst == 0 => None,
        (None, _) => None,
        // A priced model without a channel was refused before the queue; this catches a worst
        // case above zero at prices that round to nothing there.
        (Some(_), None) => return Err((ErrorCode::PaymentRequired, NO_CHANNEL.into())),
        (Some(payments), Some(params)) => {
            let admission = payments.admit(peer, params, worst).await.map_err(payment_refused)?;
            Some((payments.clone(), admission))
        }
    };
    Ok(Admitted { model, slot: Some(slot), prompt_tokens, payment })
}

/// Refuse, before tokenising, a prompt whose bytes alone prove it cannot fit: it takes at least
/// `bytes / max_token_bytes` tokens (the template only adds to that).
fn cannot_fit(model: &ServedModel, request: &Request) -> Result<(), Refused> {
    let Some(per_token) = model.engine.max_token_bytes() else { return Ok(()) };
    let at_least = prompt_bytes(&request.prompt).div_ceil(u64::from(per_token.max(1)));
    let context = u64::from(model.offer.context_length);
    if at_least.saturating_add(u64::from(request.max_tokens)) > context {
        let message = format!(
            "the prompt (at least {at_least} tokens) plus max_tokens ({}) exceeds the context length {context}",
            request.max_tokens
        );
        return Err((ErrorCode::TooLarge, message));
    }
    Ok(())
}

/// The exact prompt must fit the context and the worst case stay within the price cap; returns
/// the worst case.
fn within_offer(model: &ServedModel, request: &Request, prompt_tokens: u32) -> Result<u64, Refused> {
    let offer = &model.offer;
    // Embedding inputs each have the context to themselves (the engine refused any too long).
    let embedding = matches!(request.prompt, Prompt::Embed(_));
    if !embedding
        && u64::from(prompt_tokens) + u64::from(request.max_tokens) > u64::from(offer.context_length)
    {
        let message = format!(
            "prompt ({prompt_tokens} tokens) plus max_tokens ({}) exceeds the context length {}",
            request.max_tokens, offer.context_length
        );
        return Err((ErrorCode::TooLarge, message));
    }
    let worst = worst_case(
        offer.price_prompt_per_1k,
        offer.price_completion_per_1k,
        prompt_tokens,
        request.max_tokens,
    );
    if worst > request.max_price {
        let message = format!("worst-case price {worst} nanotons exceeds max_price {}", request.max_price);
        return Err((ErrorCode::PriceTooHigh, message));
    }
    Ok(worst)
}
