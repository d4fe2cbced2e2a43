//! A cocoon request as mistral.rs input: the conversation (tool calls and tool results in the
//! structured form mistral.rs gives chat templates), sampling with penalties, tools for `auto`,
//! and constrained decoding for response formats and forced tool calls (see [`super::tools`]).
//! Counting a prompt's tokens renders exactly the same conversation, so admission and pricing see
//! what generation runs.

use std::collections::HashMap;

use cocoon_protocol::inference::messages::{ChatMessage, Prompt, Role, Shape, ToolChoice as Choice};
use either::Either;
use indexmap::IndexMap;
use mistralrs::core::{Function, RequestMessage, TokenizationRequest, Tool, ToolChoice, ToolType};
use mistralrs::{Constraint, MessageContent, Model, SamplingParams, StopTokens};
use serde_json::Value;

use super::engine::{EngineError, Generation};
use super::tools::{Steering, steering, with_instruction};

/// What mistral.rs runs for one request.
pub struct Prepared {
    /// The conversation or text.
    pub messages: RequestMessage,
    /// Tools offered to the model's own format (`auto` only).
    pub tools: Option<Vec<Tool>>,
    /// Their choice.
    pub tool_choice: Option<ToolChoice>,
    /// Constrained decoding.
    pub constraint: Constraint,
    /// How the output is read back.
    pub steering: Steering,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// One message in mistral.rs's map form (`tool_calls` and `tool_call_id` as OpenAI names them).
fn message(m: &ChatMessage) -> IndexMap<String, MessageContent> {
    let mut entry: IndexMap<String, MessageContent> = IndexMap::new();
    entry.insert("role".into(), Either::Left(role_name(m.role).into()));
    entry.insert("content".into(), Either::Left(m.content.clone()));
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| {
                let mut call: IndexMap<String, Value> = IndexMap::new();
                call.insert("id".into(), Value::String(c.id.clone()));
                call.insert("type".into(), Value::String("function".into()));
                let function = serde_json::json!({"name": c.name, "arguments": c.arguments});
                call.insert("function".into(), function);
                call
            })
            .collect();
        entry.insert("tool_calls".into(), Either::Right(calls));
    }
    if let Some(id) = &m.tool_call_id {
        entry.insert("tool_call_id".into(), Either::Left(id.clone()));
    }
    entry
}

/// The declared tools in mistral.rs's form.
fn tools(shape: &Shape) -> Result<Vec<Tool>, EngineError> {
    shape
        .tools
        .iter()
        .map(|t| {
            let parameters = match serde_json::from_str::<Value>(&t.parameters) {
                Ok(Value::Object(map)) => Some(map.into_iter().collect::<HashMap<_, _>>()),
                _ if t.parameters.trim().is_empty() => None,
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "the parameters of tool {:?} are not a JSON object",
                        t.name
                    )));
                }
            };
            let description = (!t.description.is_empty()).then(|| t.description.clone());
            Ok(Tool {
                tp: ToolType::Function,
                function: Function { description, name: t.name.clone(), parameters },
            })
        })
        .collect()
}

/// `prompt` under `shape`, ready for mistral.rs.
pub fn prepare(prompt: &Prompt, shape: &Shape) -> Result<Prepared, EngineError> {
    let steering = steering(shape).map_err(EngineError::Invalid)?;
    let offered = matches!(shape.tool_choice, Choice::Auto) && !shape.tools.is_empty();
    let messages = match prompt {
        Prompt::Chat(messages) => RequestMessage::Chat {
            messages: with_instruction(messages, shape, &steering).iter().map(message).collect(),
            enable_thinking: None,
            reasoning_effort: None,
        },
        Prompt::Embed(_) => {
            return Err(EngineError::Invalid("this model generates text; it does not embed".into()));
        }
        Prompt::Text(_) if !shape.tools.is_empty() => {
            return Err(EngineError::Invalid("tools need a chat prompt".into()));
        }
        Prompt::Text(text) => {
            RequestMessage::Completion { text: text.clone(), echo_prompt: false, best_of: None }
        }
    };
    let constraint = steering.schema().map_or(Constraint::None, |s| Constraint::JsonSchema(s.clone()));
    Ok(Prepared {
        messages,
        tools: offered.then(|| tools(shape)).transpose()?,
        tool_choice: offered.then_some(ToolChoice::Auto),
        constraint,
        steering,
    })
}

/// Sampling parameters of `g`.
pub fn sampling(g: &Generation) -> SamplingParams {
    let s = &g.sampling;
    SamplingParams {
        temperature: s.temperature.map(f64::from),
        top_p: s.top_p.map(f64::from),
        top_k: s.top_k.map(|k| k as usize),
        stop_toks: (!s.stop.is_empty()).then(|| StopTokens::Seqs(s.stop.clone())),
        max_len: Some(g.max_tokens as usize),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        repetition_penalty: s.repetition_penalty,
        top_n_logprobs: g.shape.logprobs.map_or(0, usize::from),
        ..SamplingParams::neutral()
    }
}

/// Tokens `prompt` takes under `shape`, rendered as generation renders it.
pub async fn count(model: &Model, prompt: &Prompt, shape: &Shape) -> Result<u32, EngineError> {
    let prepared = prepare(prompt, shape)?;
    let (text, chat) = match prepared.messages {
        RequestMessage::Chat { messages, .. } => (Either::Left(messages), true),
        RequestMessage::Completion { text, .. } => (Either::Right(text), false),
        _ => return Err(EngineError::Invalid("unsupported prompt".into())),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let request = mistralrs::Request::Tokenize(TokenizationRequest {
        text,
        tools: prepared.tools,
        add_special_tokens: !chat,
        add_generation_prompt: chat,
        enable_thinking: None,
        reasoning_effort: None,
        response: tx,
    });
    let sender = model.inner().get_sender(None).map_err(|e| EngineError::Failed(e.to_string()))?;
    sender.send(request).await.map_err(|e| EngineError::Failed(format!("engine unavailable: {e}")))?;
    let tokens = rx
        .recv()
        .await
        .ok_or_else(|| EngineError::Failed("the engine dropped a tokenization".into()))?
        .map_err(|e| EngineError::Invalid(format!("cannot tokenize the prompt: {e}")))?;
    Ok(u32::try_from(tokens.len()).unwrap_or(u32::MAX))
}
