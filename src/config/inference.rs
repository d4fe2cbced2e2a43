//! Configuration of inference: the OpenAI-compatible API of client nodes (`[api]`) and the models
//! a worker serves (`[[worker.models]]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[api]`: the OpenAI-compatible HTTP API (client role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Serve the API on client nodes. Default true.
    pub enabled: bool,
    /// Address of the API. Default `127.0.0.1:8080` (loopback: it is not authenticated and
    /// spends this node's money).
    pub listen: SocketAddr,
    /// Largest request body in bytes; larger ones get 413. Default 1048576 (1 MiB).
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for. Default 4096.
    pub max_tokens: u32,
    /// `max_tokens` of requests that give none. Default 256.
    pub default_max_tokens: u32,
    /// Price cap per request in nanotons when the request sets none (`cocoon_max_price`).
    /// Default 1000000000 (1 TON).
    pub max_price_nanotons: u64,
    /// Workers tried per request before giving up (failures before the first token, and answers
    /// broken later when the request is not streamed). Default 3.
    pub attempts: usize,
    /// Seconds from sending a request to its first token before trying another worker.
    /// Default 120.
    pub first_token_timeout_secs: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1 << 20,
            max_tokens: 4096,
            default_max_tokens: 256,
            max_price_nanotons: 1_000_000_000,
            attempts: 3,
            first_token_timeout_secs: 120,
        }
    }
}

/// One `[[worker.models]]` entry: a local GGUF file served at a price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Name in the model id (`name@sha256:<hex of the file>`): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The GGUF file of a text model, or the directory of an embedding model (BERT family:
    /// `config.json`, `tokenizer.json`, `model.safetensors`; the id hashes the safetensors file).
    pub path: PathBuf,
    /// Price per 1,000 prompt tokens, nanotons. Default 0.
    #[serde(default)]
    pub price_prompt_per_1k: u64,
    /// Price per 1,000 completion tokens, nanotons. Default 0.
    #[serde(default)]
    pub price_completion_per_1k: u64,
    /// Requests served at once; more get `Busy`. Default 1.
    #[serde(default = "one")]
    pub max_concurrent: u32,
    /// Context length offered (prompt plus completion tokens). Default: what the file declares
    /// (never more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
}

fn one() -> u32 {
    1
}
