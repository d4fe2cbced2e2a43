//! The request of `/cocoon/inference/2`: the conversation (with tool calls and tool results), the
//! sampling parameters, the shape the answer must take (tools and tool choice, a response
//! format, log-probabilities), the price cap and the payment channel. Its canonical encoding is
//! what the receipt's request hash covers, so every field that can change the answer is in it.

use crate::codec::{CodecError, Reader, Writer};
use crate::payments::channel::ChannelParams;

use super::messages::{MAX_REQUEST, VERSION};

/// Longest model id.
pub const MAX_MODEL_ID: usize = 256;
/// Most chat messages in one request.
pub const MAX_MESSAGES: usize = 1024;
/// Most stop sequences.
pub const MAX_STOP: usize = 4;
/// Longest stop sequence, bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Most tools one request declares (OpenAI allows 128; a model's context is the real bound).
pub const MAX_TOOLS: usize = 128;
/// Longest tool name (OpenAI's rule: `a-z A-Z 0-9 _ -`, at most 64).
pub const MAX_TOOL_NAME: usize = 64;
/// Longest tool call id.
pub const MAX_CALL_ID: usize = 256;
/// Most tool calls one assistant message carries.
pub const MAX_TOOL_CALLS: usize = 128;
/// Most alternatives per token a request may ask log-probabilities for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;
/// Most inputs one embedding request carries (OpenAI's limit).
pub const MAX_EMBED_INPUTS: usize = 2048;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call (the message names the call it answers).
    Tool,
}

/// A tool call the model made, as it appears in the history of a later request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// The call's id (a tool message answers it by this id).
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments, as the model wrote them (JSON text).
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who.
    pub role: Role,
    /// What (for a tool message: the tool's result).
    pub content: String,
    /// The calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// What to complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, completed as is.
    Text(String),
    /// Texts to embed (one vector each), for an embedding model.
    Embed(Vec<String>),
}

/// Sampling parameters; `None` means the engine's default (temperature 1, as OpenAI's; no
/// penalty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// Temperature (0 = greedy; default 1).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling.
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// OpenAI's presence penalty (-2 to 2).
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty (-2 to 2).
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty (above 0; 1 is none).
    pub repetition_penalty: Option<f32>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does (shown to the model).
    pub description: String,
    /// JSON Schema of its arguments, as JSON text (`{}` when it takes none).
    pub parameters: String,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// No tool call.
    None,
    /// At least one tool call (the output is constrained to a call of a declared tool).
    Required,
    /// A call of this function (the output is constrained to its argument schema).
    Named(String),
}

/// The form of the answer's text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object (constrained decoding).
    JsonObject,
    /// JSON matching this schema (constrained decoding); the schema as JSON text.
    JsonSchema(String),
}

/// The shape the answer must take beyond text: tools, a response format, log-probabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    /// Functions the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether it must.
    pub tool_choice: ToolChoice,
    /// The text's form.
    pub format: ResponseFormat,
    /// Log-probabilities of each generated token with this many alternatives (`None`: none).
    pub logprobs: Option<u8>,
}

/// An inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Client-chosen id, echoed in the receipt.
    pub request_id: [u8; 16],
    /// `name@sha256:<hex>` of the model to run.
    pub model_id: String,
    /// What to complete.
    pub prompt: Prompt,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: Sampling,
    /// Tools, response format, log-probabilities.
    pub shape: Shape,
    /// Most the client will pay for this request, nanotons.
    pub max_price: u64,
    /// The payment channel the client will pay on (`None`: the client offers no payment, which
    /// only a worker with payments off accepts).
    pub channel: Option<ChannelParams>,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::System => 0,
        Role::User => 1,
        Role::Assistant => 2,
        Role::Tool => 3,
    }
}

fn read_role(r: &mut Reader<'_>) -> Result<Role, CodecError> {
    Ok(match r.u8("role")? {
        0 => Role::System,
        1 => Role::User,
        2 => Role::Assistant,
        3 => Role::Tool,
        other => return Err(CodecError::Unknown { field: "role", value: other.into() }),
    })
}

pub(crate) fn opt_f32(w: &mut Writer, v: Option<f32>) {
    match v {
        Some(v) => w.u8(1).u32(v.to_bits()),
        None => w.u8(0),
    };
}

pub(crate) fn read_opt_f32(r: &mut Reader<'_>, field: &'static str) -> Result<Option<f32>, CodecError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => {
            let v = f32::from_bits(r.u32(field)?);
            if v.is_finite() {
                Ok(Some(v))
            } else {
                Err(CodecError::Invalid { field, reason: "not finite".into() })
            }
        }
        other => Err(CodecError::Unknown { field, value: other.into() }),
    }
}

fn opt_str(w: &mut Writer, v: Option<&str>) {
    match v {
        Some(s) => w.u8(1).str(s),
        None => w.u8(0),
    };
}

fn read_opt_str(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<Option<String>, CodecError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(r.str(field, max)?.to_owned())),
        other => Err(CodecError::Unknown { field, value: other.into() }),
    }
}

/// A count prefix of at most `max` items.
fn read_count(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<usize, CodecError> {
    let n = r.u32(field)? as usize;
    if n > max {
        return Err(CodecError::TooLong { field, len: n, max });
    }
    Ok(n)
}

fn encode_message(w: &mut Writer, m: &ChatMessage) {
    w.u8(role_byte(m.role)).str(&m.content);
    w.u32(m.tool_calls.len() as u32);
    for call in &m.tool_calls {
        w.str(&call.id).str(&call.name).str(&call.arguments);
    }
    opt_str(w, m.tool_call_id.as_deref());
}

fn decode_message(r: &mut Reader<'_>) -> Result<ChatMessage, CodecError> {
    let role = read_role(r)?;
    let content = r.str("content", MAX_REQUEST)?.to_owned();
    let n = read_count(r, "tool calls", MAX_TOOL_CALLS)?;
    let mut tool_calls = Vec::with_capacity(n);
    for _ in 0..n {
        tool_calls.push(ToolCall {
            id: r.str("tool call id", MAX_CALL_ID)?.to_owned(),
            name: r.str("tool name", MAX_TOOL_NAME)?.to_owned(),
            arguments: r.str("tool arguments", MAX_REQUEST)?.to_owned(),
        });
    }
    let tool_call_id = read_opt_str(r, "tool call id", MAX_CALL_ID)?;
    Ok(ChatMessage { role, content, tool_calls, tool_call_id })
}

fn encode_prompt(w: &mut Writer, prompt: &Prompt) {
    match prompt {
        Prompt::Chat(messages) => {
            w.u8(1).u32(messages.len() as u32);
            for m in messages {
                encode_message(w, m);
            }
        }
        Prompt::Text(text) => {
            w.u8(2).str(text);
        }
        Prompt::Embed(inputs) => {
            w.u8(3).u32(inputs.len() as u32);
            for input in inputs {
                w.str(input);
            }
        }
    }
}

fn decode_prompt(r: &mut Reader<'_>) -> Result<Prompt, CodecError> {
    Ok(match r.u8("prompt kind")? {
        1 => {
            let n = read_count(r, "messages", MAX_MESSAGES)?;
            let mut messages = Vec::with_capacity(n);
            for _ in 0..n {
                messages.push(decode_message(r)?);
            }
            Prompt::Chat(messages)
        }
        2 => Prompt::Text(r.str("prompt", MAX_REQUEST)?.to_owned()),
        3 => {
            let n = read_count(r, "embedding inputs", MAX_EMBED_INPUTS)?;
            Prompt::Embed(
                (0..n)
                    .map(|_| Ok(r.str("input", MAX_REQUEST)?.to_owned()))
                    .collect::<Result<_, CodecError>>()?,
            )
        }
        other => return Err(CodecError::Unknown { field: "prompt kind", value: other.into() }),
    })
}

fn encode_sampling(w: &mut Writer, s: &Sampling) {
    opt_f32(w, s.temperature);
    opt_f32(w, s.top_p);
    match s.top_k {
        Some(k) => w.u8(1).u32(k),
        None => w.u8(0),
    };
    w.u8(s.stop.len() as u8);
    for stop in &s.stop {
        w.str(stop);
    }
    opt_f32(w, s.presence_penalty);
    opt_f32(w, s.frequency_penalty);
    opt_f32(w, s.repetition_penalty);
}

fn decode_sampling(r: &mut Reader<'_>) -> Result<Sampling, CodecError> {
    let temperature = read_opt_f32(r, "temperature")?;
    let top_p = read_opt_f32(r, "top p")?;
    let top_k = match r.u8("top k")? {
        0 => None,
        1 => Some(r.u32("top k")?),
        other => return Err(CodecError::Unknown { field: "top k", value: other.into() }),
    };
    let n = r.u8("stop count")? as usize;
    if n > MAX_STOP {
        return Err(CodecError::TooLong { field: "stop sequences", len: n, max: MAX_STOP });
    }
    let mut stop = Vec::with_capacity(n);
    for _ in 0..n {
        stop.push(r.str("stop", MAX_STOP_LEN)?.to_owned());
    }
    Ok(Sampling {
        temperature,
        top_p,
        top_k,
        stop,
        presence_penalty: read_opt_f32(r, "presence penalty")?,
        frequency_penalty: read_opt_f32(r, "frequency penalty")?,
        repetition_penalty: read_opt_f32(r, "repetition penalty")?,
    })
}

fn encode_shape(w: &mut Writer, shape: &Shape) {
    w.u32(shape.tools.len() as u32);
    for t in &shape.tools {
        w.str(&t.name).str(&t.description).str(&t.parameters);
    }
    match &shape.tool_choice {
        ToolChoice::Auto => w.u8(0),
        ToolChoice::None => w.u8(1),
        ToolChoice::Required => w.u8(2),
        ToolChoice::Named(name) => w.u8(3).str(name),
    };
    match &shape.format {
        ResponseFormat::Text => w.u8(0),
        ResponseFormat::JsonObject => w.u8(1),
        ResponseFormat::JsonSchema(schema) => w.u8(2).str(schema),
    };
    match shape.logprobs {
        Some(top) => w.u8(1).u8(top),
        None => w.u8(0),
    };
}

fn decode_shape(r: &mut Reader<'_>) -> Result<Shape, CodecError> {
    let n = read_count(r, "tools", MAX_TOOLS)?;
    let mut tools = Vec::with_capacity(n);
    for _ in 0..n {
        tools.push(ToolSpec {
            name: r.str("tool name", MAX_TOOL_NAME)?.to_owned(),
            description: r.str("tool description", MAX_REQUEST)?.to_owned(),
            parameters: r.str("tool parameters", MAX_REQUEST)?.to_owned(),
        });
    }
    let tool_choice = match r.u8("tool choice")? {
        0 => ToolChoice::Auto,
        1 => ToolChoice::None,
        2 => ToolChoice::Required,
        3 => ToolChoice::Named(r.str("tool choice", MAX_TOOL_NAME)?.to_owned()),
        other => return Err(CodecError::Unknown { field: "tool choice", value: other.into() }),
    };
    let format = match r.u8("response format")? {
        0 => ResponseFormat::Text,
        1 => ResponseFormat::JsonObject,
        2 => ResponseFormat::JsonSchema(r.str("json schema", MAX_REQUEST)?.to_owned()),
        other => return Err(CodecError::Unknown { field: "response format", value: other.into() }),
    };
    let logprobs = match r.u8("logprobs")? {
        0 => None,
        1 => match r.u8("top logprobs")? {
            top if top <= MAX_TOP_LOGPROBS => Some(top),
            top => {
                return Err(CodecError::TooLong {
                    field: "top logprobs",
                    len: top.into(),
                    max: MAX_TOP_LOGPROBS.into(),
                });
            }
        },
        other => return Err(CodecError::Unknown { field: "logprobs", value: other.into() }),
    };
    Ok(Shape { tools, tool_choice, format, logprobs })
}

impl Request {
    /// Canonical bytes (what the receipt's request hash covers).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION).fixed(&self.request_id).str(&self.model_id);
        encode_prompt(&mut w, &self.prompt);
        w.u32(self.max_tokens);
        encode_sampling(&mut w, &self.sampling);
        encode_shape(&mut w, &self.shape);
        w.u64(self.max_price);
        match &self.channel {
            Some(params) => {
                w.u8(1);
                params.encode(&mut w);
            }
            None => {
                w.u8(0);
            }
        }
        w.finish()
    }

    /// Decode a request frame. A request of another protocol version is refused by its first
    /// byte, before anything else is read.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(CodecError::Unknown { field: "request version", value: version.into() });
        }
        let request_id = r.array("request id")?;
        let model_id = r.str("model id", MAX_MODEL_ID)?.to_owned();
        let prompt = decode_prompt(&mut r)?;
        let max_tokens = r.u32("max tokens")?;
        let sampling = decode_sampling(&mut r)?;
        let shape = decode_shape(&mut r)?;
        let max_price = r.u64("max price")?;
        let channel = match r.u8("channel")? {
            0 => None,
            1 => Some(ChannelParams::decode(&mut r)?),
            other => return Err(CodecError::Unknown { field: "channel", value: other.into() }),
        };
        r.finish()?;
        Ok(Self { request_id, model_id, prompt, max_tokens, sampling, shape, max_price, channel })
    }
}
