//! Turning configuration into inference services: the offers a worker attests (model ids and
//! context lengths, known without loading the weights), the loaded engines, and the client's
//! OpenAI-compatible API.

use std::time::Duration;

use cocoon_protocol::attestation::record::ModelOffer;

use super::client::ClientLimits;
use super::engine::EngineError;
use super::model::{self, ModelError};
use super::worker::{ServedModel, WorkerLimits};
use crate::api::openai_request::RequestLimits;
use crate::config::{Config, ModelEntry};
use crate::store::ModelHashes;

/// Why the worker's models cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A model file is missing or unreadable, or its name is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The engine could not load a model.
    #[error("model {name}: {source}")]
    Engine {
        /// The model's name.
        name: String,
        /// What failed.
        source: EngineError,
    },
    /// This build has no engine.
    #[error("this cocoon was built without the `mistralrs` feature, so it cannot serve models")]
    NoEngine,
}

/// The offer for one configured model: its id (hashing the file, cached in `hashes`) and the
/// context length (the configured one, capped at what the file declares).
pub fn offer(entry: &ModelEntry, hashes: Option<&ModelHashes>) -> Result<ModelOffer, SetupError> {
    let model_id = model::model_id(&entry.name, &weights_file(entry), hashes)?;
    let declared = declared_context(entry)?;
    Ok(ModelOffer {
        model_id,
        price_prompt_per_1k: entry.price_prompt_per_1k,
        price_completion_per_1k: entry.price_completion_per_1k,
        context_length: entry.context_length.map_or(declared, |c| c.min(declared)),
        max_concurrent: entry.max_concurrent,
    })
}

/// Whether `entry` is an embedding model: a directory (config, tokenizer, safetensors weights)
/// rather than a GGUF file.
fn is_embedding(entry: &ModelEntry) -> bool {
    entry.path.is_dir()
}

/// The file whose hash names the model: the GGUF file, or an embedding model's weights.
fn weights_file(entry: &ModelEntry) -> std::path::PathBuf {
    if is_embedding(entry) { entry.path.join("model.safetensors") } else { entry.path.clone() }
}

#[cfg(feature = "mistralrs")]
fn declared_context(entry: &ModelEntry) -> Result<u32, SetupError> {
    let failed = |source| SetupError::Engine { name: entry.name.clone(), source };
    if is_embedding(entry) {
        let config = std::fs::read(entry.path.join("config.json"))
            .map_err(|e| failed(EngineError::Failed(format!("{}/config.json: {e}", entry.path.display()))))?;
        let positions = serde_json::from_slice::<serde_json::Value>(&config)
            .ok()
            .and_then(|c| c["max_position_embeddings"].as_u64())
            .ok_or_else(|| {
                failed(EngineError::Failed("config.json has no max_position_embeddings".into()))
            })?;
        return Ok(u32::try_from(positions).unwrap_or(u32::MAX));
    }
    super::mistral::gguf_context_length(&entry.path).map_err(failed)
}

#[cfg(not(feature = "mistralrs"))]
fn declared_context(_entry: &ModelEntry) -> Result<u32, SetupError> {
    Err(SetupError::NoEngine)
}

/// Offers for every configured model.
pub fn offers(config: &Config, hashes: Option<&ModelHashes>) -> Result<Vec<ModelOffer>, SetupError> {
    config.worker.models.iter().map(|m| offer(m, hashes)).collect()
}

/// Load every configured model into the engine.
#[cfg(feature = "mistralrs")]
pub async fn load(config: &Config, offers: &[ModelOffer]) -> Result<Vec<ServedModel>, SetupError> {
    let mut served = Vec::new();
    for (entry, offer) in config.worker.models.iter().zip(offers) {
        if is_embedding(entry) {
            let engine = super::bert::BertEngine::load(&entry.path, offer.model_id.clone())
                .map_err(|source| SetupError::Engine { name: entry.name.clone(), source })?;
            served.push(ServedModel { engine: std::sync::Arc::new(engine), offer: offer.clone() });
            continue;
        }
        let engine = super::mistral::MistralEngine::load_on(
            &entry.path,
            offer.model_id.clone(),
            Some(offer.context_length),
            offer.max_concurrent,
            config.worker.device,
        )
        .await
        .map_err(|source| SetupError::Engine { name: entry.name.clone(), source })?;
        let engine: std::sync::Arc<dyn super::engine::Engine> = std::sync::Arc::new(engine);
        served.push(ServedModel { engine, offer: offer.clone() });
    }
    Ok(served)
}

/// Load every configured model into the engine.
#[cfg(not(feature = "mistralrs"))]
pub async fn load(config: &Config, _offers: &[ModelOffer]) -> Result<Vec<ServedModel>, SetupError> {
    if config.worker.models.is_empty() { Ok(Vec::new()) } else { Err(SetupError::NoEngine) }
}

/// The worker's time limits from configuration.
pub fn worker_limits(config: &Config) -> WorkerLimits {
    WorkerLimits {
        request: Duration::from_secs(config.worker.request_timeout_secs),
        handshake: Duration::from_secs(config.worker.handshake_timeout_secs.max(1)),
        send: Duration::from_secs(config.worker.send_timeout_secs.max(1)),
        queue_length: config.worker.queue_length as usize,
        queue_wait: Duration::from_secs(config.worker.queue_wait_secs),
        ..WorkerLimits::default()
    }
}

/// The client's limits from configuration.
pub fn client_limits(config: &Config) -> ClientLimits {
    ClientLimits {
        attempts: config.api.attempts,
        first_token: Duration::from_secs(config.api.first_token_timeout_secs),
        ..ClientLimits::default()
    }
}

/// The API's request limits from configuration.
pub fn request_limits(config: &Config) -> RequestLimits {
    RequestLimits { max_tokens: config.api.max_tokens, default_max_tokens: config.api.default_max_tokens }
}
