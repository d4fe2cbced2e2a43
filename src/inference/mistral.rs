//! The real engine: mistral.rs running a local GGUF model in process, on the CPU.
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

use cocoon_protocol::inference::messages::{FinishReason, Prompt, Role};
use cocoon_protocol::inference::receipt::Usage;
use either::Either;
use futures::future::BoxFuture;
use indexmap::IndexMap;
use mistralrs::core::TokenSource;
use mistralrs::{
    Constraint, GgufModelBuilder, MessageContent, Model, NormalRequest, Request, Response, SamplingParams,
    StopTokens, TextMessageRole, TextMessages,
};
use tokio::sync::mpsc;

use super::engine::{EVENTS, Engine, EngineError, EngineEvent, Generation, emit};

/// Engine name in receipts.
pub const ENGINE_NAME: &str = "mistral.rs 0.8.1 (CPU)";

/// A GGUF model loaded in mistral.rs.
pub struct MistralEngine {
    model: Arc<Model>,
    model_id: String,
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
    /// Load the GGUF file at `path` as `model_id`, serving up to `max_concurrent` sequences at
    /// once with at most `context_length` tokens (capped at what the file declares).
    pub async fn load(
        path: &Path,
        model_id: String,
        context_length: Option<u32>,
        max_concurrent: u32,
    ) -> Result<Self, EngineError> {
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
        let model = GgufModelBuilder::new(dir.to_string_lossy(), vec![file])
            .with_force_cpu()
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(max_concurrent.max(1) as usize)
            .with_prefix_cache_n(None)
            .build()
            .await
            .map_err(|e| EngineError::Failed(format!("loading {}: {e:#}", path.display())))?;
        let device =
            model.config().map_or_else(|_| "unknown".into(), |c| format!("{:?}", c.device.location()));
        tracing::info!(%model_id, context_length, ?max_token_bytes, %device, "model loaded in mistral.rs");
        Ok(Self { model: Arc::new(model), model_id, context_length, max_token_bytes })
    }
}

fn role(role: Role) -> TextMessageRole {
    match role {
        Role::System => TextMessageRole::System,
        Role::User => TextMessageRole::User,
        Role::Assistant => TextMessageRole::Assistant,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

async fn count_prompt(model: &Model, prompt: &Prompt) -> Result<u32, EngineError> {
    let input = match prompt {
        Prompt::Chat(messages) => {
            let mut text = TextMessages::new();
            for m in messages {
                text = text.add_message(role(m.role), m.content.clone());
            }
            Either::Left(text)
        }
        Prompt::Text(t) => Either::Right(t.clone()),
    };
    let chat = matches!(prompt, Prompt::Chat(_));
    let tokens = model
        .tokenize(input, None, !chat, chat, None)
        .await
        .map_err(|e| EngineError::Invalid(format!("cannot tokenize the prompt: {e}")))?;
    Ok(u32::try_from(tokens.len()).unwrap_or(u32::MAX))
}

fn finish(reason: &str) -> FinishReason {
    if reason == "length" { FinishReason::Length } else { FinishReason::Stop }
}

impl Engine for MistralEngine {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn engine_name(&self) -> &str {
        ENGINE_NAME
    }

    fn context_length(&self) -> u32 {
        self.context_length
    }

    fn max_token_bytes(&self) -> Option<u32> {
        self.max_token_bytes
    }

    fn prompt_tokens<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<u32, EngineError>> {
        Box::pin(count_prompt(&self.model, prompt))
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
        None => count_prompt(model, &g.prompt).await.map_err(|e| e.to_string())?,
    };
    let messages = match &g.prompt {
        Prompt::Chat(messages) => mistralrs::core::RequestMessage::Chat {
            messages: messages
                .iter()
                .map(|m| {
                    let mut entry: IndexMap<String, MessageContent> = IndexMap::new();
                    entry.insert("role".into(), Either::Left(role_name(m.role).into()));
                    entry.insert("content".into(), Either::Left(m.content.clone()));
                    entry
                })
                .collect(),
            enable_thinking: None,
            reasoning_effort: None,
        },
        Prompt::Text(text) => mistralrs::core::RequestMessage::Completion {
            text: text.clone(),
            echo_prompt: false,
            best_of: None,
        },
    };
    let sampling_params = SamplingParams {
        temperature: g.sampling.temperature.map(f64::from),
        top_p: g.sampling.top_p.map(f64::from),
        top_k: g.sampling.top_k.map(|k| k as usize),
        stop_toks: (!g.sampling.stop.is_empty()).then(|| StopTokens::Seqs(g.sampling.stop.clone())),
        max_len: Some(g.max_tokens as usize),
        ..SamplingParams::neutral()
    };
    let (responder, mut responses) = tokio::sync::mpsc::channel(16);
    let request = Request::Normal(Box::new(NormalRequest {
        messages,
        sampling_params,
        response: responder,
        return_logprobs: false,
        is_streaming: true,
        id: 0,
        constraint: Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }));
    let sender = model.inner().get_sender(None).map_err(|e| e.to_string())?;
    sender.send(request).await.map_err(|e| format!("engine unavailable: {e}"))?;
    let mut steps = 0u32;
    loop {
        let response = tokio::select! {
            r = responses.recv() => r,
            // The worker dropped the generation: dropping `responses` cancels the sequence.
            _ = tx.closed() => return Ok(()),
        };
        let (texts, done) = match response {
            Some(Response::Chunk(chunk)) => {
                steps += 1;
                let usage = chunk.usage.as_ref().map(|u| Usage {
                    prompt_tokens: u32::try_from(u.prompt_tokens).unwrap_or(u32::MAX),
                    completion_tokens: u32::try_from(u.completion_tokens).unwrap_or(u32::MAX),
                });
                let done = chunk.choices.iter().find_map(|c| c.finish_reason.clone());
                let texts: Vec<String> = chunk.choices.into_iter().filter_map(|c| c.delta.content).collect();
                (texts, done.map(|r| (finish(&r), usage)))
            }
            Some(Response::CompletionChunk(chunk)) => {
                steps += 1;
                let done = chunk.choices.iter().find_map(|c| c.finish_reason.clone());
                (chunk.choices.into_iter().map(|c| c.text).collect(), done.map(|r| (finish(&r), None)))
            }
            Some(Response::ModelError(e, _) | Response::CompletionModelError(e, _)) => return Err(e),
            Some(Response::InternalError(e) | Response::ValidationError(e)) => return Err(e.to_string()),
            Some(_) => return Err("unexpected response kind from mistral.rs".into()),
            // mistral.rs ends a stream without a final chunk when the last step ends inside a
            // multi-byte character: finished by length, counted as described above.
            None => (Vec::new(), Some((FinishReason::Length, None))),
        };
        // Never wait on the worker here: this loop must keep draining mistral.rs's channel, or
        // mistral.rs's engine loop (every sequence of the model) blocks on it.
        for text in texts.into_iter().filter(|t| !t.is_empty()) {
            if !emit(tx, EngineEvent::Text(text)) {
                return Ok(()); // dropping `responses` cancels the sequence
            }
        }
        if let Some((finish_reason, usage)) = done {
            let usage = usage.unwrap_or(Usage { prompt_tokens, completion_tokens: steps });
            emit(tx, EngineEvent::Done { usage, finish_reason });
            return Ok(());
        }
    }
}
