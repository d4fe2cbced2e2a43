//! The embedding engine: a BERT-family sentence encoder (all-MiniLM-L6-v2 in development) run with
//! candle on the CPU, from a directory holding `config.json`, `tokenizer.json` and
//! `model.safetensors` (as Hugging Face and sentence-transformers lay them out). Each input is
//! tokenized with its special tokens, encoded, mean-pooled over its tokens and normalised to unit
//! length, as sentence-transformers does for this model. An input longer than the model's
//! sequence limit is refused, not silently cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use cocoon_protocol::inference::messages::{Event, FinishReason, Prompt, Shape};
use cocoon_protocol::inference::receipt::Usage;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::engine::{EVENTS, Engine, EngineError, EngineEvent, Generation, emit};

/// Engine name in receipts.
pub const ENGINE_NAME: &str = "candle 0.10.2 BERT (CPU)";
/// The weights file in a model directory (its SHA-256 is the model id's).
pub const WEIGHTS: &str = "model.safetensors";

#[derive(Debug, Clone, serde::Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

struct Bert {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
}

fn failed(e: impl std::fmt::Display) -> EngineError {
    EngineError::Failed(e.to_string())
}

impl Bert {
    fn load(c: &Config, vb: &VarBuilder<'_>) -> candle_core::Result<Self> {
        let e = vb.pp("embeddings");
        let norm = |size, vb: VarBuilder<'_>| candle_nn::layer_norm(size, c.layer_norm_eps, vb);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let (a, h, m) = (l.pp("attention"), c.hidden_size, c.intermediate_size);
                Ok(Layer {
                    query: candle_nn::linear(h, h, a.pp("self.query"))?,
                    key: candle_nn::linear(h, h, a.pp("self.key"))?,
                    value: candle_nn::linear(h, h, a.pp("self.value"))?,
                    attention_out: candle_nn::linear(h, h, a.pp("output.dense"))?,
                    attention_norm: norm(h, a.pp("output.LayerNorm"))?,
                    intermediate: candle_nn::linear(h, m, l.pp("intermediate.dense"))?,
                    output: candle_nn::linear(m, h, l.pp("output.dense"))?,
                    output_norm: norm(h, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            words: candle_nn::embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
            positions: candle_nn::embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embeddings"),
            )?,
            types: candle_nn::embedding(c.type_vocab_size, c.hidden_size, e.pp("token_type_embeddings"))?,
            norm: norm(c.hidden_size, e.pp("LayerNorm"))?,
            layers,
            heads: c.num_attention_heads,
        })
    }

    /// Self-attention of `x` (1 × n × hidden) in one layer.
    fn attend(&self, layer: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, n, hidden) = x.dims3()?;
        let per_head = hidden / self.heads;
        let split = |t: Tensor| t.reshape((1, n, self.heads, per_head))?.transpose(1, 2)?.contiguous();
        let q = split(layer.query.forward(x)?)?;
        let k = split(layer.key.forward(x)?)?;
        let v = split(layer.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (per_head as f64).sqrt())?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights.matmul(&v)?.transpose(1, 2)?.reshape((1, n, hidden))
    }

    /// The unit-length mean-pooled embedding of `ids`.
    fn embed(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let device = Device::Cpu;
        let n = ids.len();
        let ids = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let positions = Tensor::arange(0u32, n as u32, &device)?.unsqueeze(0)?;
        let types = Tensor::zeros((1, n), DType::U32, &device)?;
        let x = (self.words.forward(&ids)? + self.positions.forward(&positions)?)?;
        let mut x = self.norm.forward(&(x + self.types.forward(&types)?)?)?;
        for layer in &self.layers {
            let attended = layer.attention_out.forward(&self.attend(layer, &x)?)?;
            x = layer.attention_norm.forward(&(attended + &x)?)?;
            let inner = layer.intermediate.forward(&x)?.gelu_erf()?;
            x = layer.output_norm.forward(&(layer.output.forward(&inner)? + &x)?)?;
        }
        let pooled = x.mean(1)?.squeeze(0)?;
        let length = pooled.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?.max(1e-12);
        (pooled / f64::from(length))?.to_vec1::<f32>()
    }
}

/// Turns inputs into token ids (cheap to clone: tokenizing runs on blocking threads).
#[derive(Clone)]
struct Encoder {
    tokenizer: Arc<tokenizers::Tokenizer>,
    model_id: String,
    max_tokens: u32,
}

/// A loaded sentence encoder.
pub struct BertEngine {
    bert: Arc<Bert>,
    encoder: Encoder,
    dimensions: usize,
}

impl std::fmt::Debug for BertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEngine").field("model_id", &self.encoder.model_id).finish_non_exhaustive()
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, EngineError> {
    std::fs::read(dir.join(name)).map_err(|e| failed(format!("{}: {e}", dir.join(name).display())))
}

impl BertEngine {
    /// Load the model in `dir` as `model_id`.
    pub fn load(dir: &Path, model_id: String) -> Result<Self, EngineError> {
        let config: Config = serde_json::from_slice(&read(dir, "config.json")?)
            .map_err(|e| failed(format!("{}/config.json: {e}", dir.display())))?;
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(failed("config.json: hidden_size is not a multiple of num_attention_heads"));
        }
        let vb = VarBuilder::from_buffered_safetensors(read(dir, WEIGHTS)?, DType::F32, &Device::Cpu)
            .map_err(failed)?;
        let bert = Bert::load(&config, &vb).map_err(failed)?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(failed)?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(failed)?;
        let max_tokens = u32::try_from(config.max_position_embeddings).unwrap_or(u32::MAX);
        tracing::info!(%model_id, dimensions = config.hidden_size, max_tokens, "embedding model loaded");
        let encoder = Encoder { tokenizer: Arc::new(tokenizer), model_id, max_tokens };
        Ok(Self { bert: Arc::new(bert), encoder, dimensions: config.hidden_size })
    }

    /// The length of the vectors it produces.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }
}

impl Encoder {
    /// Each input's token ids, or why the inputs cannot be embedded.
    fn tokenize(&self, prompt: &Prompt, shape: &Shape) -> Result<Vec<Vec<u32>>, EngineError> {
        let Prompt::Embed(inputs) = prompt else {
            return Err(EngineError::Invalid(format!(
                "{} only embeds (it does not generate text)",
                self.model_id
            )));
        };
        if !shape.tools.is_empty() || shape.logprobs.is_some() {
            return Err(EngineError::Invalid("an embedding has no tools or logprobs".into()));
        }
        inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let ids = self.tokenizer.encode(text.as_str(), true).map_err(failed)?.get_ids().to_vec();
                if ids.len() > self.max_tokens as usize {
                    return Err(EngineError::Invalid(format!(
                        "input {i} is {} tokens, more than this model's {}",
                        ids.len(),
                        self.max_tokens
                    )));
                }
                Ok(ids)
            })
            .collect()
    }
}

/// The model directory's weights file (whose hash names the model).
pub fn weights(dir: &Path) -> PathBuf {
    dir.join(WEIGHTS)
}

impl Engine for BertEngine {
    fn model_id(&self) -> &str {
        &self.encoder.model_id
    }

    fn engine_name(&self) -> &str {
        ENGINE_NAME
    }

    fn context_length(&self) -> u32 {
        self.encoder.max_tokens
    }

    fn max_token_bytes(&self) -> Option<u32> {
        None
    }

    fn prompt_tokens<'a>(
        &'a self,
        prompt: &'a Prompt,
        shape: &'a Shape,
    ) -> BoxFuture<'a, Result<u32, EngineError>> {
        // Up to 2,048 inputs of a 1 MiB request: tokenized on a blocking thread, never on the
        // async workers (the caller's deadline cannot interrupt a synchronous loop).
        let (encoder, prompt, shape) = (self.encoder.clone(), prompt.clone(), shape.clone());
        Box::pin(async move {
            let all = tokio::task::spawn_blocking(move || encoder.tokenize(&prompt, &shape))
                .await
                .map_err(failed)??;
            let n: u64 = all.iter().map(|ids| ids.len() as u64).sum();
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    fn generate(&self, generation: Generation) -> mpsc::Receiver<EngineEvent> {
        let (tx, rx) = mpsc::channel(EVENTS);
        let (encoder, bert) = (self.encoder.clone(), self.bert.clone());
        tokio::task::spawn_blocking(move || {
            let all = match encoder.tokenize(&generation.prompt, &generation.shape) {
                Ok(all) => all,
                Err(e) => return emit(&tx, EngineEvent::Failed(e.to_string())),
            };
            let mut tokens: u32 = 0;
            for (index, ids) in all.iter().enumerate() {
                let vector = match bert.embed(ids) {
                    Ok(v) => v,
                    Err(e) => return emit(&tx, EngineEvent::Failed(format!("embedding input {index}: {e}"))),
                };
                tokens = tokens.saturating_add(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                let event = Event::Embedding { index: u32::try_from(index).unwrap_or(u32::MAX), vector };
                if !emit(&tx, EngineEvent::Answer(event)) {
                    return false; // the worker dropped the request
                }
            }
            let usage = Usage { prompt_tokens: tokens, completion_tokens: 0 };
            emit(&tx, EngineEvent::Done { usage, finish_reason: FinishReason::Stop })
        });
        rx
    }
}
