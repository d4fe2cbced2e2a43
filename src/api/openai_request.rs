//! Parsing and validating OpenAI-style request bodies into cocoon requests.
//!
//! Fields cocoon does not use are **ignored** (OpenAI clients send many: `user`, `seed`,
//! `presence_penalty`, …), consistently across endpoints; fields it uses are checked strictly,
//! and every refusal names the parameter. `n` other than 1 and `tools` are refused rather than
//! silently ignored, because ignoring them would change the meaning of the answer.

use cocoon_protocol::inference::messages::{ChatMessage, MAX_STOP, MAX_STOP_LEN, Prompt, Role, Sampling};
use serde_json::Value;

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

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
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
    /// SSE streaming.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Price cap from the `cocoon_max_price` extension (nanotons), if given.
    pub max_price: Option<u64>,
}

/// Parse a JSON body.
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Invalid { message: "the request body must be a JSON object".into(), param: None }),
        Err(e) => Err(Invalid { message: format!("the request body is not valid JSON: {e}"), param: None }),
    }
}

fn text_content(value: &Value, param: &'static str) -> Result<String, Invalid> {
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
    max_tokens: u32,
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
    max_price: Option<u64>,
}

fn common(map: &serde_json::Map<String, Value>, limits: &RequestLimits) -> Result<Common, Invalid> {
    let model = match map.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_owned(),
        Some(_) => return Err(invalid("model", "model must be a non-empty string")),
        None => return Err(invalid("model", "you must provide a model parameter")),
    };
    if let Some(n) = map.get("n")
        && n.as_u64() != Some(1)
    {
        return Err(invalid("n", "only n = 1 is supported"));
    }
    if map.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(invalid("tools", "tools are not supported"));
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
    if stop.len() > MAX_STOP || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(invalid(
            "stop",
            format!("at most {MAX_STOP} non-empty stop sequences of at most {MAX_STOP_LEN} bytes"),
        ));
    }
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
    let sampling = Sampling { temperature, top_p, top_k: None, stop };
    Ok(Common { model, max_tokens, sampling, stream, include_usage, max_price })
}

impl Common {
    fn into_parsed(self, prompt: Prompt) -> Parsed {
        let Common { model, max_tokens, sampling, stream, include_usage, max_price } = self;
        Parsed { model, prompt, max_tokens, sampling, stream, include_usage, max_price }
    }
}

/// `POST /v1/chat/completions`.
pub fn chat(body: &[u8], limits: &RequestLimits) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    let c = common(&map, limits)?;
    let messages = match map.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(invalid("messages", "messages must not be empty")),
        Some(_) => return Err(invalid("messages", "messages must be an array")),
        None => return Err(invalid("messages", "you must provide a messages parameter")),
    };
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => return Err(invalid("messages", format!("unsupported role {other:?}"))),
            None => return Err(invalid("messages", "every message needs a role")),
        };
        let content = text_content(m.get("content").unwrap_or(&Value::Null), "messages")?;
        out.push(ChatMessage { role, content });
    }
    Ok(c.into_parsed(Prompt::Chat(out)))
}

/// `POST /v1/completions`.
pub fn completion(body: &[u8], limits: &RequestLimits) -> Result<Parsed, Invalid> {
    let map = object(body)?;
    let c = common(&map, limits)?;
    let prompt = match map.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::Array(items)) if items.len() == 1 && items[0].as_str().is_some_and(|p| !p.is_empty()) => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        Some(_) => return Err(invalid("prompt", "prompt must be a non-empty string")),
        None => return Err(invalid("prompt", "you must provide a prompt parameter")),
    };
    Ok(c.into_parsed(Prompt::Text(prompt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits { max_tokens: 100, default_max_tokens: 16 };

    #[test]
    fn a_typical_chat_request_parses_and_extras_are_ignored() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"}]}],
            "stream":true,"stream_options":{"include_usage":true},"temperature":0.5,
            "stop":"\n","user":"someone","seed":3}"#;
        let p = chat(body, &LIMITS).unwrap();
        assert_eq!(p.model, "m");
        assert_eq!(p.max_tokens, 16);
        assert!(p.stream && p.include_usage);
        assert_eq!(p.sampling.stop, vec!["\n".to_owned()]);
        let Prompt::Chat(m) = p.prompt else { panic!() };
        assert_eq!((m[1].role, m[1].content.as_str()), (Role::User, "hi"));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let cases: [(&[u8], Option<&str>); 9] = [
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
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, Some("n")),
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
        assert!(matches!(
            completion(br#"{"model":"m","prompt":"once"}"#, &LIMITS).unwrap().prompt,
            Prompt::Text(_)
        ));
    }
}
