//! The real engine: mistral.rs running a local GGUF model in process, on the CPU or, in a build
//! with the `cuda` feature and `worker.device = "cuda"`, on the first visible NVIDIA GPU.
//!
//! The model is loaded from an existing local directory (mistral.rs then never contacts a model
//! hub), with the tokenizer and chat template embedded in the GGUF. Requests go to mistral.rs's
//! engine thread as raw streaming requests, so each generation owns its response channel: when
//! the worker drops a generation's receiver, this task drops mistral.rs's channel and mistral.rs
//! marks the sequence cancelled at its next step.
//!
//! Usage: chat requests get mistral.rs's own counts from the final chunk. Plain-text completions
//! get no usage from mistral.rs when streamed, so the prompt is tokenized here and each streamed
//! step counts one completion token; a step that ends inside a multi-byte character is merged
//! into the next chunk by mistral.rs, so such a step is under-counted (never over-charged).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_protocol::inference::answer::{MAX_TOKEN_TEXT, MIN_LOGPROB};
use cocoon_protocol::inference::messages::{
    Event, FinishReason, MAX_TOP_LOGPROBS, Prompt, Shape, TokenLogprob, ToolCallDelta, TopLogprob,
};
use cocoon_protocol::inference::receipt::Usage;
use futures::future::BoxFuture;
use mistralrs::core::TokenSource;
use mistralrs::{GgufModelBuilder, Model, NormalRequest, Request, Response};
use tokio::sync::mpsc;

use super::engine::{EVENTS, Engine, EngineError, EngineEvent, Generation, emit};
use super::mistral_request;
use super::tools::CallStream;
use crate::config::EngineDevice;

/// Engine name in receipts, for a model on the CPU.
pub const ENGINE_NAME: &str = "mistral.rs 0.8.1 (CPU)";
/// Engine name in receipts, for a model on an NVIDIA GPU.
pub const ENGINE_NAME_CUDA: &str = "mistral.rs 0.8.1 (CUDA)";

/// A GGUF model loaded in mistral.rs.
pub struct MistralEngine {
    model: Arc<Model>,
    model_id: String,
    engine_name: &'static str,
    context_length: u32,
    max_token_bytes: Option<u32>,
}

impl std::fmt::Debug for MistralEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralEngine").field("model_id", &self.model_id).finish_non_exhaustive()
    }
}

fn gguf_header(path: &Path) -> Result<candle_core::quantized::gguf_file::Content, EngineError> {
    let mut file =
        std::fs::File::open(path).map_err(|e| EngineError::Failed(format!("{}: {e}", path.display())))?;
    candle_core::quantized::gguf_file::Content::read(&mut file)
        .map_err(|e| EngineError::Failed(format!("{}: not a GGUF file: {e}", path.display())))
}

/// The longest token of a GGUF file's vocabulary (`tokenizer.ggml.tokens`), in UTF-8 bytes. Every
/// vocabulary encoding in use spells a token with at least as many bytes as the text it stands
/// for (byte-level BPE maps each byte to a character of 1–2 bytes; SentencePiece writes the space
/// as the 3-byte `▁` and a fallback byte as `<0xNN>`), so this bounds the text per token.
pub fn gguf_max_token_bytes(path: &Path) -> Result<Option<u32>, EngineError> {
    let content = gguf_header(path)?;
    let Some(candle_core::quantized::gguf_file::Value::Array(tokens)) =
        content.metadata.get("tokenizer.ggml.tokens")
    else {
        return Ok(None);
    };
    let longest = tokens.iter().filter_map(|t| t.to_string().ok()).map(String::len).max();
    Ok(longest.map(|n| u32::try_from(n).unwrap_or(u32::MAX).max(1)))
}

/// The context length a GGUF file declares (`<architecture>.context_length`).
pub fn gguf_context_length(path: &Path) -> Result<u32, EngineError> {
    let failed = |e: String| EngineError::Failed(format!("{}: {e}", path.display()));
    let content = gguf_header(path)?;
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| failed("no general.architecture".into()))?
        .clone();
    let value = content
        .metadata
        .get(&format!("{arch}.context_length"))
        .ok_or_else(|| failed(format!("no {arch}.context_length")))?;
    let n = value.to_u64().or_else(|_| value.to_u32().map(u64::from)).map_err(|e| failed(e.to_string()))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

impl MistralEngine {
    /// Load the GGUF file at `path` as `model_id` on the CPU, serving up to `max_concurrent`
    /// sequences at once with at most `context_length` tokens (capped at what the file declares).
    pub async fn load(
        path: &Path,
        model_id: String,
        context_length: Option<u32>,
        max_concurrent: u32,
    ) -> Result<Self, EngineError> {
        Self::load_on(path, model_id, context_length, max_concurrent, EngineDevice::Cpu).await
    }

    /// [`MistralEngine::load`] on `device` (`worker.device`). A CUDA device that cannot be opened
    /// (no driver, no GPU) fails the load: mistral.rs would otherwise fall back to the CPU.
    pub async fn load_on(
        path: &Path,
        model_id: String,
        context_length: Option<u32>,
        max_concurrent: u32,
        device: EngineDevice,
    ) -> Result<Self, EngineError> {
        device.check().map_err(EngineError::Failed)?;
        let path = std::fs::canonicalize(path)
            .map_err(|e| EngineError::Failed(format!("model file {}: {e}", path.display())))?;
        if !path.is_file() {
            return Err(EngineError::Failed(format!("model file {} is not a file", path.display())));
        }
        let declared = gguf_context_length(&path)?;
        let max_token_bytes = gguf_max_token_bytes(&path)?;
        let context_length = context_length.map_or(declared, |c| c.min(declared));
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        // An existing local directory: every lookup is a local file read, never a hub request.
        let builder = match device {
            EngineDevice::Cpu => GgufModelBuilder::new(dir.to_string_lossy(), vec![file]).with_force_cpu(),
            EngineDevice::Cuda(ordinal) => {
                // Open the GPU first so a missing driver or GPU is named as such. mistral.rs 0.8.1
                // then picks the first visible GPU itself (`best_device`, which `check` allows
                // for); `with_device` is passed for the versions that honour it.
                let gpu = mistralrs::Device::new_cuda(ordinal as usize)
                    .map_err(|e| EngineError::Failed(format!("CUDA device {ordinal}: {e}")))?;
                GgufModelBuilder::new(dir.to_string_lossy(), vec![file]).with_device(gpu)
            }
        };
        let model = builder
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(max_concurrent.max(1) as usize)
            .with_prefix_cache_n(None)
            .build()
            .await
            .map_err(|e| EngineError::Failed(format!("loading {}: {e:#}", path.display())))?;
        let location = model.config().map(|c| c.device.location()).ok();
        let on_gpu = matches!(location, Some(candle_core::DeviceLocation::Cuda { .. }));
        if device != EngineDevice::Cpu && !on_gpu {
            return Err(EngineError::Failed(format!(
                "{}: worker.device = \"{device}\" but mistral.rs loaded it on {location:?}",
                path.display()
            )));
        }
        let engine_name = if on_gpu { ENGINE_NAME_CUDA } else { ENGINE_NAME };
        let shown = location.map_or_else(|| "unknown".into(), |l| format!("{l:?}"));
        tracing::info!(%model_id, context_length, ?max_token_bytes, device = %shown, "model loaded in mistral.rs");
        Ok(Self { model: Arc::new(model), model_id, engine_name, context_length, max_token_bytes })
    }
}

fn finish(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

impl Engine for MistralEngine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn engine_name(&self) -> &str {
        self.engine_name
    }

    fn context_length(&self) -> u32 {
        self.context_length
    }

    fn max_token_bytes(&self) -> Option<u32> {
        self.max_token_bytes
    }

    fn prompt_tokens<'a>(
        &'a self,
        prompt: &'a Prompt,
        shape: &'a Shape,
    ) -> BoxFuture<'a, Result<u32, EngineError>> {
        Box::pin(mistral_request::count(&self.model, prompt, shape))
    }

    fn generate(&self, generation: Generation) -> mpsc::Receiver<EngineEvent> {
        let (tx, rx) = mpsc::channel(EVENTS);
        let model = self.model.clone();
        tokio::spawn(async move {
            if let Err(e) = run(&model, generation, &tx).await {
                emit(&tx, EngineEvent::Failed(e));
            }
        });
        rx
    }
}

async fn run(model: &Model, g: Generation, tx: &mpsc::Sender<EngineEvent>) -> Result<(), String> {
    let prompt_tokens = match g.prompt_tokens {
        Some(n) => n,
        None => mistral_request::count(model, &g.prompt, &g.shape).await.map_err(|e| e.to_string())?,
    };
    let prepared = mistral_request::prepare(&g.prompt, &g.shape).map_err(|e| e.to_string())?;
    let (responder, mut responses) = tokio::sync::mpsc::channel(16);
    let request = Request::Normal(Box::new(NormalRequest {
        messages: prepared.messages,
        sampling_params: mistral_request::sampling(&g),
        response: responder,
        return_logprobs: g.shape.logprobs.is_some(),
        is_streaming: true,
        id: 0,
        constraint: prepared.constraint,
        suffix: None,
        tools: prepared.tools,
        tool_choice: prepared.tool_choice,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }));
    let sender = model.inner().get_sender(None).map_err(|e| e.to_string())?;
    sender.send(request).await.map_err(|e| format!("engine unavailable: {e}"))?;
    let mut calls = CallStream::new(prepared.steering);
    let mut steps = 0u32;
    loop {
        let response = tokio::select! {
            r = responses.recv() => r,
            // The worker dropped the generation: dropping `responses` cancels the sequence.
            _ = tx.closed() => return Ok(()),
        };
        let Step { events, mut done } = step(response, &mut steps)?;
        // Never wait on the worker here: this loop must keep draining mistral.rs's channel, or
        // mistral.rs's engine loop (every sequence of the model) blocks on it.
        for event in events.into_iter().flat_map(|e| calls.step(e)) {
            if !emit(tx, EngineEvent::Answer(event)) {
                return Ok(()); // dropping `responses` cancels the sequence
            }
        }
        // A constrained JSON value that closed is the whole answer: stop there (dropping
        // `responses` cancels the sequence), whether or not the model ends it.
        if done.is_none() && calls.closed() {
            done = Some((FinishReason::Stop, None));
        }
        if let Some((mut finish_reason, usage)) = done {
            let (rest, called) = calls.finish();
            for event in rest {
                if !emit(tx, EngineEvent::Answer(event)) {
                    return Ok(());
                }
            }
            if called && finish_reason == FinishReason::Stop {
                finish_reason = FinishReason::ToolCalls;
            }
            let usage = usage.unwrap_or(Usage { prompt_tokens, completion_tokens: steps });
            emit(tx, EngineEvent::Done { usage, finish_reason });
            return Ok(());
        }
    }
}

/// One response of mistral.rs: the events it carries, and the end if it is the last.
struct Step {
    events: Vec<Event>,
    done: Option<(FinishReason, Option<Usage>)>,
}

fn step(response: Option<Response>, steps: &mut u32) -> Result<Step, String> {
    Ok(match response {
        Some(Response::Chunk(chunk)) => {
            *steps += 1;
            let usage = chunk.usage.as_ref().map(|u| Usage {
                prompt_tokens: u32::try_from(u.prompt_tokens).unwrap_or(u32::MAX),
                completion_tokens: u32::try_from(u.completion_tokens).unwrap_or(u32::MAX),
            });
            let done = chunk.choices.iter().find_map(|c| c.finish_reason.clone());
            let mut events = Vec::new();
            for choice in chunk.choices {
                let logprob = choice.logprobs.as_ref().map(token_logprob);
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    events.push(Event::Text { text, logprob });
                }
                for call in choice.delta.tool_calls.unwrap_or_default() {
                    events.push(Event::ToolCall(ToolCallDelta {
                        index: u32::try_from(call.index).unwrap_or(u32::MAX),
                        id: call.id,
                        name: call.function.name,
                        arguments: call.function.arguments,
                    }));
                }
            }
            Step { events, done: done.map(|r| (finish(&r), usage)) }
        }
        Some(Response::CompletionChunk(chunk)) => {
            *steps += 1;
            let done = chunk.choices.iter().find_map(|c| c.finish_reason.clone());
            let events = chunk
                .choices
                .into_iter()
                .filter(|c| !c.text.is_empty())
                .map(|c| Event::Text { logprob: c.logprobs.as_ref().map(token_logprob), text: c.text })
                .collect();
            Step { events, done: done.map(|r| (finish(&r), None)) }
        }
        Some(Response::ModelError(e, _) | Response::CompletionModelError(e, _)) => return Err(e),
        Some(Response::InternalError(e) | Response::ValidationError(e)) => return Err(e.to_string()),
        Some(_) => return Err("unexpected response kind from mistral.rs".into()),
        // mistral.rs ends a stream without a final chunk when the last step ends inside a
        // multi-byte character: finished by length, counted as described above.
        None => Step { events: Vec::new(), done: Some((FinishReason::Length, None)) },
    })
}

/// A log-probability on the wire: finite, from [`MIN_LOGPROB`] to 0.
fn clamp(logprob: f32) -> f32 {
    if logprob.is_nan() { MIN_LOGPROB } else { logprob.clamp(MIN_LOGPROB, 0.0) }
}

/// A token's text on the wire, cut to [`MAX_TOKEN_TEXT`] bytes at a character boundary.
fn token_text(text: &str) -> String {
    let mut end = text.len().min(MAX_TOKEN_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn token_logprob(l: &mistralrs::core::ResponseLogprob) -> TokenLogprob {
    TokenLogprob {
        chosen: TopLogprob { token: token_text(&l.token), logprob: clamp(l.logprob) },
        top: l
            .top_logprobs
            .iter()
            .take(usize::from(MAX_TOP_LOGPROBS))
            .map(|t| TopLogprob {
                token: token_text(t.bytes.as_deref().unwrap_or_default()),
                logprob: clamp(t.logprob),
            })
            .collect(),
    }
}
