//! OpenAI's embeddings endpoint on a client node, `POST /v1/embeddings`: each input is embedded by
//! a verified worker that offers an embedding model, through the same attested, encrypted path as
//! a completion, priced per input token and paid with a voucher against the worker's signed
//! receipt (whose response hash covers every vector).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cocoon_protocol::inference::messages::{MAX_EMBED_INPUTS, Prompt, Sampling, Shape};
use serde_json::{Value, json};

use super::openai::{ApiError, ApiState, body_or_error, start_one};
use super::openai_render::{cocoon_json, summed_usage};
use super::openai_request::{Invalid, Parsed, invalid, object};
use super::openai_stream::gather;

const KNOWN: &[&str] =
    &["model", "input", "encoding_format", "dimensions", "user", "cocoon_max_price", "cocoon_require_gpu"];

/// `POST /v1/embeddings`.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (parsed, base64) = match body_or_error(body).and_then(|b| parse(&b).map_err(ApiError::from)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let answer = match start_one(&state, &parsed, "emb-") {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let model = answer.meta.model.clone();
    let (gathered, c) = match gather(answer).await {
        Ok(done) => done,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = gathered
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut usage = summed_usage(&[&c]);
    usage.as_object_mut().map(|u| u.remove("completion_tokens"));
    Json(json!({"object": "list", "data": data, "model": model, "usage": usage, "cocoon": cocoon_json(&c)}))
        .into_response()
}

/// The request, and whether vectors go back base64-encoded (little-endian f32, as OpenAI's).
fn parse(body: &[u8]) -> Result<(Parsed, bool), Invalid> {
    let map = object(body)?;
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Invalid {
            message: format!("unrecognized request argument supplied: {unknown}"),
            param: None,
        });
    }
    let model = map.get("model").and_then(Value::as_str).map(str::trim).filter(|m| !m.is_empty());
    let model = model.ok_or_else(|| invalid("model", "you must provide a model parameter"))?.to_owned();
    let inputs: Vec<String> = match map.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(Value::Array(_)) => {
            return Err(invalid(
                "input",
                "input must be text: token arrays are not supported (token ids differ between models)",
            ));
        }
        _ => return Err(invalid("input", "input must be a string or an array of strings")),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS || inputs.iter().any(String::is_empty) {
        return Err(invalid("input", format!("1 to {MAX_EMBED_INPUTS} non-empty inputs")));
    }
    let base64 = match map.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(invalid("encoding_format", "encoding_format must be \"float\" or \"base64\"")),
    };
    if map.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(invalid(
            "dimensions",
            "dimensions is not supported: the model's vectors have a fixed length",
        ));
    }
    let max_price = match map.get("cocoon_max_price") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            invalid("cocoon_max_price", "cocoon_max_price must be a whole number of nanotons")
        })?),
    };
    let parsed = Parsed {
        model,
        // One event per input: the client's cap on an answer's events.
        max_tokens: u32::try_from(inputs.len()).unwrap_or(u32::MAX),
        prompt: Prompt::Embed(inputs),
        sampling: Sampling::default(),
        shape: Shape::default(),
        n: 1,
        stream: false,
        include_usage: false,
        max_price,
        require_gpu: super::openai_request::require_gpu(&map)?,
    };
    Ok((parsed, base64))
}
