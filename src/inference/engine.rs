//! What a worker runs requests on: the [`Engine`] trait, and the labelled [`StandInEngine`] that
//! simnet uses instead of a real model.
//!
//! An engine streams text for one request through a bounded channel and ends with exact usage
//! counts; dropping the receiver cancels the generation (the engine notices at its next token).
//! An engine never waits on that channel ([`emit`]): a reader that falls [`EVENTS`] events behind
//! gets [`EngineEvent::Stalled`] and its generation is stopped, so one slow client can never hold
//! the engine loop that every other sequence of the model runs on.

use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::inference::messages::{Event, FinishReason, Prompt, ResponseFormat, Sampling, Shape};
use cocoon_protocol::inference::receipt::Usage;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// Capacity of a generation's event channel: the answer one request may buffer between the
/// engine and its client. The engine never waits on it, so its size is only a memory bound
/// (4,096 tokens: a few hundred KiB per request) and the slack a slow but live reader gets:
/// minutes of generation for a CPU model, and enough for a fast small model whose worker sends
/// more slowly than it generates (a stuck reader is dropped by the send deadline long before).
pub const EVENTS: usize = 4096;

/// Hand `event` to the generation's reader without waiting. `false` means stop generating: the
/// reader went away, or it fell so far behind that the channel is full (then the last free slot
/// carries [`EngineEvent::Stalled`]).
pub fn emit(tx: &mpsc::Sender<EngineEvent>, event: EngineEvent) -> bool {
    // One producer per channel: the free capacity only grows between this check and the send.
    if tx.capacity() <= 1 {
        let _ = tx.try_send(EngineEvent::Stalled);
        return false;
    }
    tx.try_send(event).is_ok()
}

/// One generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// What to complete.
    pub prompt: Prompt,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: Sampling,
    /// Tools, response format, log-probabilities.
    pub shape: Shape,
    /// The prompt's token count when the caller already has it from [`Engine::prompt_tokens`]
    /// (saves counting it again).
    pub prompt_tokens: Option<u32>,
}

/// What an engine reports while generating.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The next event of the answer: text (one decoding step, with its log-probabilities when
    /// asked for) or a piece of a tool call.
    Answer(Event),
    /// Finished, with exact token counts.
    Done {
        /// Token counts.
        usage: Usage,
        /// Why it stopped.
        finish_reason: FinishReason,
    },
    /// The engine failed.
    Failed(String),
    /// The reader fell [`EVENTS`] events behind; the engine stopped this generation.
    Stalled,
}

impl EngineEvent {
    /// Plain text, without log-probabilities.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Answer(Event::Text { text: text.into(), logprob: None })
    }
}

/// Why an engine refused or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request is not valid for this model (e.g. the chat template refuses it).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine failed.
    #[error("engine failure: {0}")]
    Failed(String),
}

/// A loaded model that generates text.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// `name@sha256:<hex>`.
    fn model_id(&self) -> &str;
    /// The engine, as named in receipts (`mistral.rs 0.8.1`, `STAND-IN …`).
    fn engine_name(&self) -> &str;
    /// Tokens of prompt plus completion the model handles.
    fn context_length(&self) -> u32;
    /// The most bytes of text one token can stand for, when known (the longest entry of the
    /// vocabulary): a prompt of `n` bytes then takes at least `n / max_token_bytes` tokens, which
    /// lets a worker refuse a prompt that cannot fit before tokenising it.
    fn max_token_bytes(&self) -> Option<u32>;
    /// Tokens `prompt` takes once templated with what `shape` adds to it (a forced tool call's
    /// instruction): what admission and pricing check before running.
    fn prompt_tokens<'a>(
        &'a self,
        prompt: &'a Prompt,
        shape: &'a Shape,
    ) -> BoxFuture<'a, Result<u32, EngineError>>;
    /// Start generating; events arrive on the returned receiver, and dropping it cancels.
    fn generate(&self, generation: Generation) -> mpsc::Receiver<EngineEvent>;
}

/// A deterministic stand-in for a model, for simnet only: it "generates" `tok0 tok1 …` at a fixed
/// pace after a fixed delay. Its engine name and model id say STAND-IN, so every record, receipt
/// and response it touches is labelled.
#[derive(Debug, Clone)]
pub struct StandInEngine {
    model_id: String,
    context_length: u32,
    first_token: Duration,
    per_token: Duration,
}

/// Engine name of [`StandInEngine`].
pub const STAND_IN_ENGINE: &str = "STAND-IN (simulated timing, no model)";

impl StandInEngine {
    /// A stand-in named `name` (its model id is `stand-in-<name>@sha256:0…0`).
    pub fn new(name: &str, context_length: u32, first_token: Duration, per_token: Duration) -> Self {
        Self {
            model_id: format!("stand-in-{name}@sha256:{}", "0".repeat(64)),
            context_length,
            first_token,
            per_token,
        }
    }

    fn words(prompt: &Prompt) -> u32 {
        let text = match prompt {
            Prompt::Text(t) => t.split_whitespace().count(),
            Prompt::Embed(inputs) => inputs.iter().map(|i| i.split_whitespace().count()).sum(),
            Prompt::Chat(messages) => messages.iter().map(|m| m.content.split_whitespace().count() + 4).sum(),
        };
        u32::try_from(text).unwrap_or(u32::MAX)
    }
}

impl Engine for StandInEngine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn engine_name(&self) -> &str {
        STAND_IN_ENGINE
    }

    fn context_length(&self) -> u32 {
        self.context_length
    }

    fn max_token_bytes(&self) -> Option<u32> {
        None // a "token" is a whitespace-separated word of any length
    }

    fn prompt_tokens<'a>(
        &'a self,
        prompt: &'a Prompt,
        shape: &'a Shape,
    ) -> BoxFuture<'a, Result<u32, EngineError>> {
        let refused =
            !shape.tools.is_empty() || shape.format != ResponseFormat::Text || shape.logprobs.is_some();
        Box::pin(std::future::ready(if refused {
            Err(EngineError::Invalid(format!("{STAND_IN_ENGINE} has no tools, response formats or logprobs")))
        } else {
            Ok(Self::words(prompt))
        }))
    }

    fn generate(&self, generation: Generation) -> mpsc::Receiver<EngineEvent> {
        let (tx, rx) = mpsc::channel(EVENTS);
        let me = Arc::new(self.clone());
        tokio::spawn(async move {
            tokio::time::sleep(me.first_token).await;
            let prompt_tokens = Self::words(&generation.prompt);
            for i in 0..generation.max_tokens {
                if i > 0 {
                    tokio::time::sleep(me.per_token).await;
                }
                if !emit(&tx, EngineEvent::text(format!("tok{i} "))) {
                    return; // cancelled, or the reader fell behind
                }
            }
            let usage = Usage { prompt_tokens, completion_tokens: generation.max_tokens };
            emit(&tx, EngineEvent::Done { usage, finish_reason: FinishReason::Length });
        });
        rx
    }
}
