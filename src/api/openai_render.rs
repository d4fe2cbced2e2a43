//! Answers in OpenAI's shapes: the typed events of an answer (text, tool-call pieces,
//! log-probabilities) as streamed `chat.completion.chunk` / `text_completion` events, or gathered
//! into one `chat.completion` / `text_completion` object; plus the `usage` and `cocoon` objects.

use axum::body::Bytes;
use cocoon_protocol::inference::messages::{Event, FinishReason, TokenLogprob, TopLogprob};
use serde_json::{Value, json};

use crate::inference::client::{Completion, Payment};

/// Which endpoint an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What every chunk or answer of one request repeats.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// The full model id.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The endpoint.
    pub kind: Kind,
    /// Which of the request's `n` answers this is.
    pub index: u32,
}

/// A tool call gathered from its pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatheredCall {
    /// Its id.
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments (JSON text).
    pub arguments: String,
}

/// A whole answer gathered from its events.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// The text.
    pub text: String,
    /// The tool calls, by index.
    pub calls: Vec<GatheredCall>,
    /// Each text token's log-probabilities, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// The embeddings of an embedding request, in input order.
    pub embeddings: Vec<Vec<f32>>,
}

impl Gathered {
    /// Add the next event (already checked against the request by the client).
    pub fn add(&mut self, event: Event) {
        match event {
            Event::Text { text, logprob } => {
                self.text.push_str(&text);
                self.logprobs.extend(logprob);
            }
            Event::ToolCall(d) => {
                let index = d.index as usize;
                if index == self.calls.len() {
                    self.calls.push(GatheredCall { id: d.id, name: d.name, arguments: String::new() });
                }
                if let Some(call) = self.calls.get_mut(index) {
                    call.arguments.push_str(&d.arguments);
                }
            }
            Event::Embedding { vector, .. } => self.embeddings.push(vector),
        }
    }
}

/// OpenAI's name for a finish reason.
pub fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        // Only a client that stopped reading asks for it, and then nobody reads the answer.
        FinishReason::Cancelled => "stop",
    }
}

fn top_json(t: &TopLogprob) -> Value {
    json!({"token": t.token, "logprob": t.logprob, "bytes": t.token.as_bytes()})
}

/// One token's entry of a chat answer's `logprobs.content`.
fn logprob_json(l: &TokenLogprob) -> Value {
    let mut entry = top_json(&l.chosen);
    entry["top_logprobs"] = Value::Array(l.top.iter().map(top_json).collect());
    entry
}

/// A text completion's legacy `logprobs` object (`tokens`, `token_logprobs`, `top_logprobs`,
/// `text_offset`).
fn legacy_logprobs(all: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(all.len());
    for l in all {
        offsets.push(at);
        at += l.chosen.token.len();
    }
    let top: Vec<Value> = all
        .iter()
        .map(|l| Value::Object(l.top.iter().map(|t| (t.token.clone(), json!(t.logprob))).collect()))
        .collect();
    json!({
        "tokens": all.iter().map(|l| l.chosen.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": all.iter().map(|l| l.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// The `usage` object of several answers together (`n`): their counts summed.
pub fn summed_usage(completions: &[&Completion]) -> Value {
    // Every count comes from a worker: add them in 64 bits, where a few u32 cannot overflow.
    let (prompt, completion) = completions.iter().fold((0u64, 0u64), |(p, c), x| {
        (p + u64::from(x.receipt.usage.prompt_tokens), c + u64::from(x.receipt.usage.completion_tokens))
    });
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The `cocoon` object: worker, model, engine, receipt, amount, failovers, payment.
pub fn cocoon_json(c: &Completion) -> Value {
    json!({
        "worker": c.worker.to_string(),
        "model_id": c.receipt.model_id,
        "engine": c.receipt.engine,
        "receipt": hex::encode(&c.receipt_bytes),
        "amount_nanotons": c.receipt.amount,
        "failovers": c.failovers,
        "payment": payment_json(&c.payment),
    })
}

fn payment_json(p: &Payment) -> Value {
    match p {
        Payment::None => json!({"status": "off"}),
        Payment::Paid { channel, cumulative, seqno } => {
            json!({"status": "paid", "channel": channel, "cumulative_nanotons": cumulative, "seqno": seqno})
        }
        Payment::Failed(reason) => json!({"status": "unpaid", "reason": reason}),
    }
}

fn sse_event(body: &Value) -> Bytes {
    Bytes::from(format!("data: {body}\n\n"))
}

impl Meta {
    fn object(&self, whole: bool) -> &'static str {
        match (self.kind, whole) {
            (Kind::Chat, false) => "chat.completion.chunk",
            (Kind::Chat, true) => "chat.completion",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn body(&self, choice: Value, whole: bool) -> Value {
        json!({"id": self.id, "object": self.object(whole), "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// A chunk whose chat delta (or completion text) is `delta`.
    fn chunk(&self, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": self.index, "delta": delta, "finish_reason": finish, "logprobs": logprobs})
            }
            Kind::Text => {
                json!({"index": self.index, "text": delta, "finish_reason": finish, "logprobs": logprobs})
            }
        };
        self.body(choice, false)
    }

    /// The chunk that opens a chat stream (an empty assistant delta, as OpenAI's streams open).
    pub fn opening(&self) -> Bytes {
        let delta = match self.kind {
            Kind::Chat => json!({"role": "assistant", "content": ""}),
            Kind::Text => json!(""),
        };
        sse_event(&self.chunk(delta, Value::Null, None))
    }

    /// The chunk of one event; `offset` is the text's length so far (legacy logprobs need it).
    pub fn event(&self, event: &Event, offset: usize) -> Bytes {
        let body = match (self.kind, event) {
            (Kind::Chat, Event::Text { text, logprob }) => {
                let logprobs =
                    logprob.as_ref().map_or(Value::Null, |l| json!({"content": [logprob_json(l)]}));
                self.chunk(json!({"content": text}), logprobs, None)
            }
            (Kind::Chat, Event::ToolCall(d)) => {
                let call = if d.name.is_empty() {
                    json!({"index": d.index, "function": {"arguments": d.arguments}})
                } else {
                    json!({"index": d.index, "id": d.id, "type": "function", "function": {"name": d.name, "arguments": d.arguments}})
                };
                self.chunk(json!({"tool_calls": [call]}), Value::Null, None)
            }
            (Kind::Text, Event::Text { text, logprob }) => {
                let logprobs = logprob
                    .as_ref()
                    .map_or(Value::Null, |l| legacy_logprobs(std::slice::from_ref(l), offset));
                self.chunk(json!(text), logprobs, None)
            }
            // The client refuses tool calls on a text completion (it declares no tools), and
            // embeddings for any generation.
            (Kind::Text, Event::ToolCall(_)) | (_, Event::Embedding { .. }) => {
                self.chunk(json!(""), Value::Null, None)
            }
        };
        sse_event(&body)
    }

    /// The final chunk of an answer: its finish reason and its `cocoon` object.
    pub fn closing(&self, c: &Completion) -> Bytes {
        let empty = if self.kind == Kind::Chat { json!({}) } else { json!("") };
        let mut last = self.chunk(empty, Value::Null, Some(finish_name(c.finish_reason)));
        last["cocoon"] = cocoon_json(c);
        sse_event(&last)
    }

    /// The chunk with empty `choices` and `usage` that `stream_options.include_usage` asks for.
    pub fn usage_chunk(&self, usage: Value) -> Bytes {
        let body = json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "choices": [], "usage": usage});
        sse_event(&body)
    }

    /// The `choices` entry of a whole answer.
    pub fn choice(&self, answer: &Gathered, c: &Completion) -> Value {
        let finish = finish_name(c.finish_reason);
        match self.kind {
            Kind::Chat => {
                let logprobs = if answer.logprobs.is_empty() {
                    Value::Null
                } else {
                    json!({"content": answer.logprobs.iter().map(logprob_json).collect::<Vec<_>>()})
                };
                let content = if answer.text.is_empty() && !answer.calls.is_empty() {
                    Value::Null
                } else {
                    json!(answer.text)
                };
                let mut message = json!({"role": "assistant", "content": content, "refusal": null});
                if !answer.calls.is_empty() {
                    message["tool_calls"] = answer
                        .calls
                        .iter()
                        .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
                        .collect();
                }
                json!({"index": self.index, "message": message, "finish_reason": finish, "logprobs": logprobs})
            }
            Kind::Text => {
                let logprobs = if answer.logprobs.is_empty() {
                    Value::Null
                } else {
                    legacy_logprobs(&answer.logprobs, 0)
                };
                json!({"index": self.index, "text": answer.text, "finish_reason": finish, "logprobs": logprobs})
            }
        }
    }

    /// A whole answer's body of `choices` (one per answer of `n`), its `usage` summed.
    pub fn whole(&self, choices: Vec<Value>, completions: &[&Completion]) -> Value {
        let mut body = self.body(Value::Null, true);
        body["choices"] = Value::Array(choices);
        body["usage"] = summed_usage(completions);
        body["cocoon"] = match completions {
            [one] => cocoon_json(one),
            many => json!({"answers": many.iter().map(|c| cocoon_json(c)).collect::<Vec<_>>()}),
        };
        body
    }
}
