//! Parsing and validating OpenAI-style request bodies into cocoon requests.
//!
//! Every parameter is used, refused with an error naming it, or ignored only when it cannot
//! change the answer (`user`, `metadata`, `store`, `service_tier`, …: [`IGNORED`]). A parameter
//! this API does not know is refused, as OpenAI refuses one, rather than silently dropped.
//! `seed` is used only with temperature 0 (greedy decoding is reproducible; mistral.rs cannot
//! seed one request's sampling), and refused otherwise. See `docs/api.md` for the full table.

use cocoon_protocol::attestation::gpu_policy::GpuRequirement;
use cocoon_protocol::inference::messages::{MAX_STOP, MAX_STOP_LEN, Prompt, Sampling, Shape};
use serde_json::Value;

/// Most answers one request may ask for (`n`): each is a request of its own to a worker.
pub const MAX_N: u32 = 8;

/// Parameters accepted and ignored because they cannot change the answer.
pub const IGNORED: &[&str] =
    &["user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key", "prediction"];

/// Parameters both endpoints use.
const COMMON: &[&str] = &[
    "model",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "logit_bias",
    "logprobs",
    "cocoon_max_price",
    "cocoon_require_gpu",
];
/// Parameters only chat completions use.
const CHAT: &[&str] =
    &["messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "top_logprobs"];
/// Parameters only text completions use.
const TEXT: &[&str] = &["prompt", "echo", "best_of", "suffix"];

/// Limits applied to requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest `max_tokens` accepted.
    pub max_tokens: u32,
    /// `max_tokens` when the request gives none.
    pub default_max_tokens: u32,
}

/// A request refused before it reaches a worker: HTTP 400 with this message and parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Human-readable.
    pub message: String,
    /// The parameter at fault.
    pub param: Option<&'static str>,
}

pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { message: message.into(), param: Some(param) }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// As given (a full model id or a model name).
    pub model: String,
    /// What to complete.
    pub prompt: Prompt,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: Sampling,
    /// Tools, response format, log-probabilities.
    pub shape: Shape,
    /// Answers asked for (`n`).
    pub n: u32,
    /// SSE streaming.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Price cap from the `cocoon_max_price` extension (nanotons), if given.
    pub max_price: Option<u64>,
    /// What the serving worker's GPUs must be, from the `cocoon_require_gpu` extension
    /// (`"none"`, `"any"`, `"cc"`; default `"none"`).
    pub require_gpu: GpuRequirement,
}

/// The `cocoon_require_gpu` extension of `map`.
pub(super) fn require_gpu(map: &serde_json::Map<String, Value>) -> Result<GpuRequirement, Invalid> {
    match map.get("cocoon_require_gpu") {
        None | Some(Value::Null) => Ok(GpuRequirement::None),
        Some(Value::String(name)) => GpuRequirement::from_name(name).ok_or_else(|| {
            invalid("cocoon_require_gpu", "cocoon_require_gpu must be \"none\", \"any\" or \"cc\"")
        }),
        Some(_) => Err(invalid("cocoon_require_gpu", "cocoon_require_gpu must be a string")),
    }
}

/// Parse a JSON body.
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Invalid { message: "the request body must be a JSON object".into(), param: None }),
        Err(e) => Err(Invalid { message: format!("the request body is not valid JSON: {e}"), param: None }),
    }
}

pub(super) fn text_content(value: &Value, param: &'static str) -> Result<String, Invalid> {
    match value {
        Value::String(s) => Ok(s.clone()),
        // The array form: text parts only.
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => return Err(invalid(param, "only text content parts are supported")),
                }
            }
            Ok(out)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(param, "content must be a string or an array of text parts")),
    }
}

/// The parameters both endpoints share.
struct Common {
    model: String,
    n: u32,
    max_tokens: u32,
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
    max_price: Option<u64>,
    require_gpu: GpuRequirement,
}

fn common(map: &serde_json::Map<String, Value>, limits: &RequestLimits) -> Result<Common, Invalid> {
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_owned(),
        Some(_) => return Err(invalid("model", "model must be a non-empty string")),
        None => return Err(invalid("model", "you must provide a model parameter")),
    };
    let n = match map.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_N)).contains(&n) => n as u32,
            _ => return Err(invalid("n", format!("n must be an integer from 1 to {MAX_N}"))),
        },
    };
    if map.get("logit_bias").is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty())) {
        // Its keys are token ids of OpenAI's tokenizers, which mean nothing to these models.
        return Err(invalid("logit_bias", "logit_bias is not supported (token ids differ between models)"));
    }
    let max_tokens = match map.get("max_completion_tokens").or_else(|| map.get("max_tokens")) {
        None | Some(Value::Null) => limits.default_max_tokens,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(limits.max_tokens) => n as u32,
            _ => {
                return Err(invalid(
                    "max_tokens",
                    format!("max_tokens must be an integer from 1 to {}", limits.max_tokens),
                ));
            }
        },
    };
    let number = |param: &'static str, lo: f64, hi: f64| -> Result<Option<f32>, Invalid> {
        match map.get(param) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (lo..=hi).contains(&x) => Ok(Some(x as f32)),
                _ => Err(invalid(param, format!("{param} must be a number from {lo} to {hi}"))),
            },
        }
    };
    let temperature = number("temperature", 0.0, 2.0)?;
    let top_p = number("top_p", 0.0, 1.0)?;
    let presence_penalty = number("presence_penalty", -2.0, 2.0)?;
    let frequency_penalty = number("frequency_penalty", -2.0, 2.0)?;
    let repetition_penalty = number("repetition_penalty", 0.01, 10.0)?;
    let top_k = match map.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(k) if (1..=u64::from(u32::MAX)).contains(&k) => Some(k as u32),
            _ => return Err(invalid("top_k", "top_k must be a positive integer")),
        },
    };
    if map.get("seed").is_some_and(|s| !s.is_null()) {
        if !map.get("seed").is_some_and(|s| s.is_i64() || s.is_u64()) {
            return Err(invalid("seed", "seed must be an integer"));
        }
        if temperature != Some(0.0) {
            return Err(invalid(
                "seed",
                "seed is supported only with temperature 0 (greedy decoding, which is reproducible): \
                 the engine cannot seed one request's sampling",
            ));
        }
    }
    let stop = match map.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop", "stop must be a string or an array of strings"))?,
        Some(_) => return Err(invalid("stop", "stop must be a string or an array of strings")),
    };
    check_stop(&stop, "stop")?;
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "stream must be a boolean")),
    };
    let include_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_price = match map.get("cocoon_max_price") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            invalid("cocoon_max_price", "cocoon_max_price must be a whole number of nanotons")
        })?),
    };
    let sampling =
        Sampling { temperature, top_p, top_k, stop, presence_penalty, frequency_penalty, repetition_penalty };
    let require_gpu = require_gpu(map)?;
    Ok(Common { model, n, max_tokens, sampling, stream, include_usage, max_price, require_gpu })
}

impl Common {
    fn into_parsed(self, prompt: Prompt, shape: Shape) -> Parsed {
        let Common { model, n, max_tokens, sampling, stream, include_usage, max_price, require_gpu } = self;
        Parsed {
            model,
            prompt,
            max_tokens,
            sampling,
            shape,
            n,
            stream,
            include_usage,
            max_price,
            require_gpu,
        }
    }
}

/// At most [`MAX_STOP`] non-empty stop sequences of at most [`MAX_STOP_LEN`] bytes.
pub(super) fn check_stop(stop: &[String], param: &'static str) -> Result<(), Invalid> {
    if stop.len() > MAX_STOP || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(invalid(
            param,
            format!("at most {MAX_STOP} non-empty stop sequences of at most {MAX_STOP_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Refuse a parameter neither `COMMON`, `own` nor [`IGNORED`] lists.
fn known_only(map: &serde_json::Map<String, Value>, own: &[&str]) -> Result<(), Invalid> {
    match map.keys().find(|k| ![COMMON, own, IGNORED].iter().any(|list| list.contains(&k.as_str()))) {
        Some(unknown) => Err(Invalid {
            message: format!("unrecognized request argument supplied: {unknown}"),
            param: None,
        }),
        None => Ok(()),
    }
}

/// `POST /v1/chat/completions`.
pub fn chat(body: &[u8], limits: &RequestLimits) -> Result<Parsed, Invalid> {
    chat_body(body, limits, false)
}

/// A chat body whose messages may be empty (the Responses API adds its `input` after).
pub(super) fn chat_without_messages(body: &[u8], limits: &RequestLimits) -> Result<Parsed, Invalid> {
    chat_body(body, limits, true)
}

fn chat_body(body: &[u8], limits: &RequestLimits, may_be_empty: bool) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    known_only(&map, CHAT)?;
    let c = common(&map, limits)?;
    let messages = match map.get("messages") {
        Some(Value::Array(m)) if may_be_empty || !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(invalid("messages", "messages must not be empty")),
        Some(_) => return Err(invalid("messages", "messages must be an array")),
        None => return Err(invalid("messages", "you must provide a messages parameter")),
    };
    let messages = messages.iter().map(super::openai_tools::chat_message).collect::<Result<Vec<_>, _>>()?;
    let shape = super::openai_tools::chat_shape(&map)?;
    Ok(c.into_parsed(Prompt::Chat(messages), shape))
}

/// `POST /v1/completions`.
pub fn completion(body: &[u8], limits: &RequestLimits) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    known_only(&map, TEXT)?;
    let c = common(&map, limits)?;
    if map.get("echo").is_some_and(|e| e.as_bool() == Some(true)) {
        return Err(invalid("echo", "echo is not supported"));
    }
    if map.get("best_of").is_some_and(|b| !b.is_null() && b.as_u64() != Some(1)) {
        return Err(invalid("best_of", "best_of other than 1 is not supported"));
    }
    if map.get("suffix").is_some_and(|s| !s.is_null()) {
        return Err(invalid("suffix", "suffix is not supported"));
    }
    // A text completion's `logprobs` is the number of alternatives per token (0 to 5).
    let logprobs = match map.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(k) if k <= 5 => Some(k as u8),
            _ => return Err(invalid("logprobs", "logprobs must be an integer from 0 to 5")),
        },
    };
    let prompt = match map.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].as_str().is_some_and(|p| !p.is_empty()) => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(_) => return Err(invalid("prompt", "prompt must be a non-empty string")),
        None => return Err(invalid("prompt", "you must provide a prompt parameter")),
    };
    Ok(c.into_parsed(Prompt::Text(prompt), Shape { logprobs, ..Shape::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::inference::messages::{ResponseFormat, Role, ToolChoice};

    const LIMITS: RequestLimits = RequestLimits { max_tokens: 100, default_max_tokens: 16 };

    #[test]
    fn a_typical_chat_request_parses_and_extras_are_ignored() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"}]}],
            "stream":true,"stream_options":{"include_usage":true},"temperature":0.5,
            "stop":"\n","user":"someone","presence_penalty":0.5}"#;
        let p = chat(body, &LIMITS).unwrap();
        assert_eq!(p.model, "m");
        assert_eq!(p.max_tokens, 16);
        assert!(p.stream && p.include_usage);
        assert_eq!(p.sampling.stop, vec!["\n".to_owned()]);
        assert_eq!(p.sampling.presence_penalty, Some(0.5));
        let Prompt::Chat(m) = p.prompt else { panic!() };
        assert_eq!((m[1].role, m[1].content.as_str()), (Role::User, "hi"));
    }

    #[test]
    fn tools_history_and_structured_output_parse_into_the_shape() {
        let body = br#"{"model":"m","n":2,"temperature":0,"seed":7,"logprobs":true,"top_logprobs":3,
            "messages":[{"role":"user","content":"weather?"},
              {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                "function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},
              {"role":"tool","tool_call_id":"call_1","content":"cold"}],
            "tools":[{"type":"function","function":{"name":"get_weather","description":"look it up",
              "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
            "tool_choice":{"type":"function","function":{"name":"get_weather"}},
            "response_format":{"type":"json_object"}}"#;
        let p = chat(body, &LIMITS).unwrap();
        assert_eq!(p.n, 2);
        assert_eq!(p.shape.tool_choice, ToolChoice::Named("get_weather".into()));
        assert_eq!(p.shape.format, ResponseFormat::JsonObject);
        assert_eq!(p.shape.logprobs, Some(3));
        assert!(p.shape.tools[0].parameters.contains("\"city\""));
        let Prompt::Chat(m) = p.prompt else { panic!() };
        assert_eq!(m[1].tool_calls[0].name, "get_weather");
        assert_eq!((m[2].role, m[2].tool_call_id.as_deref()), (Role::Tool, Some("call_1")));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let cases: [(&[u8], Option<&str>); 15] = [
            (b"{not json", None),
            (b"[1]", None),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
            (br#"{"model":"m","messages":[]}"#, Some("messages")),
            (br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, Some("messages")),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":101}"#,
                Some("max_tokens"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                Some("temperature"),
            ),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":9}"#, Some("n")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"seed":1}"#, Some("seed")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"5":1}}"#, Some("logit_bias")),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required"}"#, Some("tool_choice")),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#,
                Some("top_logprobs"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a"}}}"#,
                Some("response_format"),
            ),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"functions":[]}"#, None),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                Some("stop"),
            ),
        ];
        for (body, param) in cases {
            let err = chat(body, &LIMITS).unwrap_err();
            assert_eq!(err.param, param, "{}: {}", String::from_utf8_lossy(body), err.message);
        }
        assert_eq!(completion(br#"{"model":"m","prompt":""}"#, &LIMITS).unwrap_err().param, Some("prompt"));
        assert_eq!(
            completion(br#"{"model":"m","prompt":"a","echo":true}"#, &LIMITS).unwrap_err().param,
            Some("echo")
        );
        let unknown =
            chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"functions":[]}"#, &LIMITS);
        assert!(unknown.unwrap_err().message.contains("functions"));
        assert!(matches!(
            completion(br#"{"model":"m","prompt":"once"}"#, &LIMITS).unwrap().prompt,
            Prompt::Text(_)
        ));
    }
}
