//! Anthropic's Messages API on a client node, `POST /v1/messages`, so the official Anthropic SDKs
//! work unchanged: `system`, content blocks (text, `tool_use`, `tool_result`), tools and
//! `tool_choice`, `stop_sequences`, and streaming with Anthropic's named events. Each request is
//! translated into the same cocoon request as a chat completion and goes through the same
//! attested, encrypted path; the answer's events are rendered as Anthropic's content blocks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cocoon_protocol::inference::messages::{
    ChatMessage, Event, FinishReason, Prompt, Role, Sampling, Shape, ToolCall, ToolChoice, ToolSpec,
};
use serde_json::{Map, Value, json};

use super::openai::{ApiError, ApiState, body_or_error, start_one};
use super::openai_render::Gathered;
use super::openai_request::{Invalid, Parsed, invalid, object};
use super::openai_stream::{Dialect, gather, stream_one};
use crate::inference::client::Completion;

/// An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
fn error(e: ApiError) -> Response {
    let kind = match e.status() {
        StatusCode::BAD_REQUEST => "invalid_request_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::PAYMENT_REQUIRED => "billing_error",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": e.message()}});
    e.with_body(body)
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<ApiState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let parsed = match body_or_error(body).and_then(|b| parse(&b, &state).map_err(ApiError::from)) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let answer = match start_one(&state, &parsed, "msg_") {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let id = answer.meta.id.clone();
    let model = answer.meta.model.clone();
    if parsed.stream {
        return stream_one(answer, Stream::new(id, model), error).await;
    }
    match gather(answer).await {
        Ok((gathered, c)) => Json(message(&id, &model, &gathered, &c)).into_response(),
        Err(e) => error(e),
    }
}

const KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "service_tier",
    "cocoon_max_price",
    "cocoon_require_gpu",
];

fn parse(body: &[u8], state: &ApiState) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Invalid { message: format!("{unknown}: Extra inputs are not permitted"), param: None });
    }
    let model = map.get("model").and_then(Value::as_str).filter(|m| !m.trim().is_empty());
    let model = model.ok_or_else(|| invalid("model", "model: Field required"))?.trim().to_owned();
    let max_tokens = match map.get("max_tokens").and_then(Value::as_u64) {
        Some(n) if n >= 1 && n <= u64::from(state.limits.max_tokens) => n as u32,
        _ => {
            return Err(invalid(
                "max_tokens",
                format!("max_tokens: an integer from 1 to {}", state.limits.max_tokens),
            ));
        }
    };
    let mut messages = Vec::new();
    if let Some(system) = map.get("system").filter(|s| !s.is_null()) {
        messages.push(ChatMessage::text(Role::System, text_blocks(system, "system")?));
    }
    let list = map.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty());
    for m in list.ok_or_else(|| invalid("messages", "messages: a non-empty array is required"))? {
        messages.extend(turn(m)?);
    }
    let tools = tools(&map)?;
    let tool_choice = tool_choice(&map, &tools)?;
    let number = |key: &'static str, hi: f64| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| (0.0..=hi).contains(x))
            .map(|x| Some(x as f32))
            .ok_or_else(|| invalid(key, format!("{key}: a number from 0 to {hi}"))),
    };
    let stop = match map.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop_sequences", "stop_sequences: strings"))?,
        Some(_) => return Err(invalid("stop_sequences", "stop_sequences: an array of strings")),
    };
    super::openai_request::check_stop(&stop, "stop_sequences")?;
    let top_k = map.get("top_k").and_then(Value::as_u64).map(|k| k.min(u64::from(u32::MAX)) as u32);
    let sampling = Sampling {
        temperature: number("temperature", 1.0)?,
        top_p: number("top_p", 1.0)?,
        top_k,
        stop,
        ..Sampling::default()
    };
    let max_price = map.get("cocoon_max_price").and_then(Value::as_u64);
    Ok(Parsed {
        model,
        prompt: Prompt::Chat(messages),
        max_tokens,
        sampling,
        shape: Shape { tools, tool_choice, ..Shape::default() },
        n: 1,
        stream: map.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        max_price,
        require_gpu: super::openai_request::require_gpu(&map)?,
    })
}

/// A string, or text blocks joined.
fn text_blocks(value: &Value, param: &'static str) -> Result<String, Invalid> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                (Some("text"), Some(t)) => Ok(t),
                _ => Err(invalid(param, format!("{param}: only text blocks are supported here"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.concat()),
        _ => Err(invalid(param, format!("{param}: a string or an array of text blocks"))),
    }
}

/// One turn: a user turn's `tool_result` blocks become tool messages (before its text); an
/// assistant turn's `tool_use` blocks become its tool calls.
fn turn(m: &Value) -> Result<Vec<ChatMessage>, Invalid> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        _ => return Err(invalid("messages", "messages: role must be \"user\" or \"assistant\"")),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => return Ok(vec![ChatMessage::text(role, s.clone())]),
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(invalid("messages", "messages: content must be a string or an array of blocks")),
    };
    let (mut text, mut calls, mut results) = (String::new(), Vec::new(), Vec::new());
    for block in blocks {
        match (block.get("type").and_then(Value::as_str), role) {
            (Some("text"), _) => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            (Some("tool_use"), Role::Assistant) => calls.push(ToolCall {
                id: field(block, "id")?,
                name: field(block, "name")?,
                arguments: block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            (Some("tool_result"), Role::User) => {
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_blocks(c, "messages")?,
                };
                let id = field(block, "tool_use_id")?;
                results
                    .push(ChatMessage { tool_call_id: Some(id), ..ChatMessage::text(Role::Tool, content) });
            }
            (other, _) => {
                return Err(invalid(
                    "messages",
                    format!("messages: content block {other:?} is not supported in this turn"),
                ));
            }
        }
    }
    if !text.is_empty() || !calls.is_empty() || results.is_empty() {
        results.push(ChatMessage { tool_calls: calls, ..ChatMessage::text(role, text) });
    }
    Ok(results)
}

fn field(block: &Value, key: &str) -> Result<String, Invalid> {
    block
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| invalid("messages", format!("messages: a block needs {key}")))
}

fn tools(map: &Map<String, Value>) -> Result<Vec<ToolSpec>, Invalid> {
    let Some(list) = map.get("tools").filter(|t| !t.is_null()) else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| invalid("tools", "tools: an array"))?;
    list.iter()
        .map(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            let schema = t.get("input_schema").filter(|s| s.is_object()).ok_or_else(|| invalid("tools", "tools: each needs a name and an input_schema object"))?;
            let description = t.get("description").and_then(Value::as_str).unwrap_or_default();
            // The same rules as OpenAI's function tools (name characters and length).
            let as_openai = json!({"type": "function", "function": {"name": name, "description": description, "parameters": schema}});
            super::openai_tools::tool(&as_openai)
        })
        .collect()
}

fn tool_choice(map: &Map<String, Value>, tools: &[ToolSpec]) -> Result<ToolChoice, Invalid> {
    let Some(choice) = map.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(if tools.is_empty() { ToolChoice::None } else { ToolChoice::Auto });
    };
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true)
        && choice.get("type").and_then(Value::as_str) == Some("auto")
    {
        return Err(invalid(
            "tool_choice",
            "tool_choice: disable_parallel_tool_use needs type \"any\" or \"tool\"",
        ));
    }
    let choice = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => {
            ToolChoice::Named(choice.get("name").and_then(Value::as_str).unwrap_or_default().to_owned())
        }
        _ => return Err(invalid("tool_choice", "tool_choice: type must be auto, any, tool or none")),
    };
    match &choice {
        ToolChoice::None => Ok(choice),
        _ if tools.is_empty() => Err(invalid("tool_choice", "tool_choice: needs tools")),
        ToolChoice::Named(n) if !tools.iter().any(|t| &t.name == n) => {
            Err(invalid("tool_choice", format!("tool_choice: {n:?} is not among the tools")))
        }
        _ => Ok(choice),
    }
}

fn stop_reason(c: &Completion) -> &'static str {
    match c.finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Stop | FinishReason::Cancelled => "end_turn",
    }
}

fn usage(c: &Completion) -> Value {
    json!({"input_tokens": c.receipt.usage.prompt_tokens, "output_tokens": c.receipt.usage.completion_tokens})
}

/// A call's arguments as a JSON value (text that does not parse is kept as a string).
fn input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

fn message(id: &str, model: &str, g: &Gathered, c: &Completion) -> Value {
    let mut content = Vec::new();
    if !g.text.is_empty() {
        content.push(json!({"type": "text", "text": g.text}));
    }
    for call in &g.calls {
        content.push(
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input(&call.arguments)}),
        );
    }
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(c), "stop_sequence": null, "usage": usage(c),
        "cocoon": super::openai_render::cocoon_json(c),
    })
}

/// Anthropic's stream: `message_start`, per block `content_block_start`, deltas and
/// `content_block_stop`, then `message_delta` (stop reason, usage) and `message_stop`.
struct Stream {
    id: String,
    model: String,
    /// The open block: its index and whether it is text (else the tool call of this index).
    open: Option<(usize, Option<u32>)>,
    blocks: usize,
}

fn event(name: &str, body: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {body}\n\n"))
}

impl Stream {
    fn new(id: String, model: String) -> Self {
        Self { id, model, open: None, blocks: 0 }
    }

    fn close(&mut self) -> Option<Bytes> {
        let (index, _) = self.open.take()?;
        Some(event("content_block_stop", json!({"type": "content_block_stop", "index": index})))
    }

    /// Open a block unless the one open is `kind`; returns the events and the open index.
    fn ensure(&mut self, kind: Option<u32>, block: impl FnOnce() -> Value) -> (Vec<Bytes>, usize) {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return (Vec::new(), index);
        }
        let mut out: Vec<Bytes> = self.close().into_iter().collect();
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((index, kind));
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block()}),
        ));
        (out, index)
    }
}

impl Dialect for Stream {
    fn opening(&mut self) -> Vec<Bytes> {
        let message = json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                             "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}});
        vec![event("message_start", json!({"type": "message_start", "message": message}))]
    }

    fn event(&mut self, e: Event) -> Vec<Bytes> {
        match e {
            // Never for a chat request: the client refuses an embedding in a generation.
            Event::Embedding { .. } => Vec::new(),
            Event::Text { text, .. } => {
                let (mut out, index) = self.ensure(None, || json!({"type": "text", "text": ""}));
                out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
                out
            }
            Event::ToolCall(d) => {
                let (id, name) = (d.id.clone(), d.name.clone());
                let (mut out, index) = self.ensure(
                    Some(d.index),
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                if !d.arguments.is_empty() {
                    out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": d.arguments}})));
                }
                out
            }
        }
    }

    fn end(&mut self, result: Result<Completion, ApiError>) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self.close().into_iter().collect();
        match result {
            Ok(c) => {
                let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(&c), "stop_sequence": null},
                                   "usage": usage(&c), "cocoon": super::openai_render::cocoon_json(&c)});
                out.push(event("message_delta", delta));
                out.push(event("message_stop", json!({"type": "message_stop"})));
            }
            Err(e) => out.push(event(
                "error",
                json!({"type": "error", "error": {"type": "api_error", "message": e.message()}}),
            )),
        }
        out
    }
}
