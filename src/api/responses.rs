//! OpenAI's Responses API on a client node, `POST /v1/responses`: `input` as text or items
//! (messages, `function_call`, `function_call_output`), `instructions`, function tools and
//! `tool_choice`, `text.format` (JSON object or schema), and streaming with the Responses event
//! types. Nothing is stored (`store` is accepted and ignored; `previous_response_id` is refused,
//! since a client node keeps no conversations): each request carries its whole conversation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cocoon_protocol::inference::messages::{ChatMessage, Event, FinishReason, Prompt, Role, ToolCall};
use serde_json::{Map, Value, json};

use super::openai::{ApiError, ApiState, body_or_error, now_secs, start_one};
use super::openai_render::{Gathered, cocoon_json};
use super::openai_request::{Invalid, Parsed, invalid, object};
use super::openai_stream::{Dialect, gather, stream_one};
use crate::inference::client::Completion;

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let parsed = match body_or_error(body).and_then(|b| parse(&b, &state).map_err(ApiError::from)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let answer = match start_one(&state, &parsed, "resp_") {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let head = Head { id: answer.meta.id.clone(), model: answer.meta.model.clone(), created: now_secs() };
    if parsed.stream {
        let stream = Stream { head, sequence: 0, items: Vec::new(), open: None };
        return stream_one(answer, stream, IntoResponse::into_response).await;
    }
    match gather(answer).await {
        Ok((gathered, c)) => Json(head.response(&items(&head.id, &gathered), Some(&c))).into_response(),
        Err(e) => e.into_response(),
    }
}

const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "store",
    "metadata",
    "user",
    "service_tier",
    "truncation",
    "cocoon_max_price",
    "cocoon_require_gpu",
];

/// The request as the chat completion it amounts to, parsed by the same rules.
fn parse(body: &[u8], state: &ApiState) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    if map.contains_key("previous_response_id") {
        return Err(invalid(
            "previous_response_id",
            "responses are not stored: send the whole conversation as input",
        ));
    }
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Invalid { message: format!("unknown parameter: {unknown}"), param: None });
    }
    if map.get("truncation").and_then(Value::as_str).is_some_and(|t| t != "disabled") {
        return Err(invalid("truncation", "only truncation \"disabled\" is supported"));
    }
    let mut chat = Map::new();
    for key in [
        "model",
        "temperature",
        "top_p",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "cocoon_max_price",
        "cocoon_require_gpu",
    ] {
        if let Some(v) = map.get(key) {
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(n) = map.get("max_output_tokens") {
        chat.insert("max_tokens".into(), n.clone());
    }
    if let Some(format) = map.get("text").and_then(|t| t.get("format")) {
        let converted = match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                json!({"type": "json_schema", "json_schema": {"schema": format.get("schema")}})
            }
            _ => format.clone(),
        };
        chat.insert("response_format".into(), converted);
    }
    let mut messages: Vec<Value> = Vec::new();
    if let Some(instructions) = map.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    chat.insert("messages".into(), Value::Array(messages));
    let text = Value::Object(chat).to_string();
    let mut parsed = super::openai_request::chat_without_messages(text.as_bytes(), &state.limits)?;
    let Prompt::Chat(history) = &mut parsed.prompt else { return Err(invalid("input", "input is required")) };
    history.extend(input(map.get("input").ok_or_else(|| invalid("input", "input is required"))?)?);
    if history.is_empty() {
        return Err(invalid("input", "input must not be empty"));
    }
    Ok(parsed)
}

/// `input`: a string, or items (messages, function calls and their outputs).
fn input(value: &Value) -> Result<Vec<ChatMessage>, Invalid> {
    let items = match value {
        Value::String(s) => return Ok(vec![ChatMessage::text(Role::User, s.clone())]),
        Value::Array(items) => items,
        _ => return Err(invalid("input", "input must be a string or an array of items")),
    };
    let mut out: Vec<ChatMessage> = Vec::new();
    for item in items {
        let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => {
                let mut m = super::openai_tools::chat_message(&with_text_parts(item))?;
                if m.role == Role::Tool {
                    return Err(invalid("input", "tool results are function_call_output items"));
                }
                m.tool_calls.clear();
                out.push(m);
            }
            "function_call" => {
                let call = ToolCall { id: text("call_id"), name: text("name"), arguments: text("arguments") };
                if call.id.is_empty() || call.name.is_empty() {
                    return Err(invalid("input", "a function_call item needs call_id and name"));
                }
                // Consecutive calls belong to one assistant turn.
                match out.last_mut() {
                    Some(last) if last.role == Role::Assistant && !last.tool_calls.is_empty() => {
                        last.tool_calls.push(call)
                    }
                    _ => out.push(ChatMessage {
                        tool_calls: vec![call],
                        ..ChatMessage::text(Role::Assistant, "")
                    }),
                }
            }
            "function_call_output" => {
                let id = text("call_id");
                if id.is_empty() {
                    return Err(invalid("input", "a function_call_output item needs call_id"));
                }
                out.push(ChatMessage {
                    tool_call_id: Some(id),
                    ..ChatMessage::text(Role::Tool, text("output"))
                });
            }
            other => {
                return Err(invalid("input", format!("input items of type {other:?} are not supported")));
            }
        }
    }
    Ok(out)
}

/// A message item with `input_text`/`output_text` parts written as chat's `text` parts.
fn with_text_parts(item: &Value) -> Value {
    let mut item = item.clone();
    if let Some(Value::Array(parts)) = item.get_mut("content") {
        for part in parts {
            if matches!(part.get("type").and_then(Value::as_str), Some("input_text" | "output_text")) {
                part["type"] = json!("text");
            }
        }
    }
    item
}

struct Head {
    id: String,
    model: String,
    created: u64,
}

fn usage(c: &Completion) -> Value {
    let (i, o) = (u64::from(c.receipt.usage.prompt_tokens), u64::from(c.receipt.usage.completion_tokens));
    json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o})
}

fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, index: usize, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{id}_{index}"), "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// The output items of a whole answer.
fn items(id: &str, g: &Gathered) -> Vec<Value> {
    let bare = id.trim_start_matches("resp_");
    let mut out = Vec::new();
    if !g.text.is_empty() || g.calls.is_empty() {
        out.push(text_item(bare, &g.text, "completed"));
    }
    for (i, call) in g.calls.iter().enumerate() {
        out.push(call_item(bare, i, &call.id, &call.name, &call.arguments, "completed"));
    }
    out
}

impl Head {
    /// The response object: in progress (no completion yet) or finished.
    fn response(&self, output: &[Value], c: Option<&Completion>) -> Value {
        let (status, incomplete) = match c.map(|c| c.finish_reason) {
            None => ("in_progress", Value::Null),
            Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
            Some(_) => ("completed", Value::Null),
        };
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
            "output": output, "error": null, "incomplete_details": incomplete, "instructions": null,
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "metadata": {},
            "usage": c.map_or(Value::Null, usage),
        });
        if let Some(c) = c {
            r["cocoon"] = cocoon_json(c);
        }
        r
    }
}

/// The Responses stream: `response.created`, per output item `response.output_item.added`, its
/// deltas and `.done` events, then `response.completed` (or `response.incomplete`).
struct Stream {
    head: Head,
    sequence: u64,
    /// Output items so far, as they will appear in the final response.
    items: Vec<Value>,
    /// The open item: its output index and whether it is text (else this tool call's index).
    open: Option<(usize, Option<u32>)>,
}

impl Stream {
    fn emit(&mut self, kind: &str, mut body: Value) -> Bytes {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {body}\n\n"))
    }

    fn close(&mut self) -> Vec<Bytes> {
        let Some((index, kind)) = self.open.take() else { return Vec::new() };
        let Some(item) = self.items.get_mut(index) else { return Vec::new() };
        item["status"] = json!("completed");
        let item = item.clone();
        let id = item["id"].clone();
        let mut out = Vec::new();
        if kind.is_none() {
            let text = item["content"][0]["text"].clone();
            let part = item["content"][0].clone();
            out.push(self.emit(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
            ));
            out.push(self.emit(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            ));
        } else {
            let arguments = item["arguments"].clone();
            out.push(self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": arguments}),
            ));
        }
        out.push(self.emit("response.output_item.done", json!({"output_index": index, "item": item})));
        out
    }

    /// Open an item unless the one open is `kind`; returns the events and the open index.
    fn ensure(&mut self, kind: Option<u32>, item: Value) -> (Vec<Bytes>, usize) {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return (Vec::new(), index);
        }
        let mut out = self.close();
        let index = self.items.len();
        self.items.push(item.clone());
        self.open = Some((index, kind));
        out.push(self.emit("response.output_item.added", json!({"output_index": index, "item": item})));
        if kind.is_none() {
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            out.push(self.emit(
                "response.content_part.added",
                json!({"item_id": item["id"], "output_index": index, "content_index": 0, "part": part}),
            ));
        }
        (out, index)
    }
}

impl Dialect for Stream {
    fn opening(&mut self) -> Vec<Bytes> {
        let response = self.head.response(&[], None);
        vec![
            self.emit("response.created", json!({"response": response.clone()})),
            self.emit("response.in_progress", json!({"response": response})),
        ]
    }

    fn event(&mut self, event: Event) -> Vec<Bytes> {
        let bare = self.head.id.trim_start_matches("resp_").to_owned();
        match event {
            // Never for a chat request: the client refuses an embedding in a generation.
            Event::Embedding { .. } => Vec::new(),
            Event::Text { text, .. } => {
                let (mut out, index) = self.ensure(None, text_item(&bare, "", "in_progress"));
                if let Some(t) = self.items[index]["content"][0]["text"].as_str() {
                    self.items[index]["content"][0]["text"] = json!(format!("{t}{text}"));
                }
                let id = self.items[index]["id"].clone();
                out.push(self.emit(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
                ));
                out
            }
            Event::ToolCall(d) => {
                let item = call_item(&bare, d.index as usize, &d.id, &d.name, "", "in_progress");
                let (mut out, index) = self.ensure(Some(d.index), item);
                if let Some(a) = self.items[index]["arguments"].as_str() {
                    self.items[index]["arguments"] = json!(format!("{a}{}", d.arguments));
                }
                let id = self.items[index]["id"].clone();
                out.push(self.emit(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": d.arguments}),
                ));
                out
            }
        }
    }

    fn end(&mut self, result: Result<Completion, ApiError>) -> Vec<Bytes> {
        let mut out = self.close();
        match result {
            Ok(c) => {
                let response = self.head.response(&self.items, Some(&c));
                let kind = if c.finish_reason == FinishReason::Length {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                out.push(self.emit(kind, json!({"response": response})));
            }
            Err(e) => {
                let mut response = self.head.response(&self.items, None);
                response["status"] = json!("failed");
                response["error"] = json!({"code": "server_error", "message": e.message()});
                out.push(self.emit("response.failed", json!({"response": response})));
            }
        }
        out
    }
}
