//! A tiny random-weight llama model in GGUF, written at test time (about 330 KB, deterministic
//! for a seed) so inference tests run the real mistral.rs engine in milliseconds per token.
//!
//! 2 layers, 64-dimensional embeddings, a 105-token GPT-2 byte-level vocabulary of ASCII only
//! (random weights then never emit half a UTF-8 character), ChatML chat template, context 4096.
//! Greedy decoding never picks a control or whitespace token (see the embeddings), so answers
//! always run to `max_tokens` with one visible, non-blank token per chunk on any CPU.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EMBD: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 2;
const FF: usize = 128;
pub const CONTEXT: u32 = 4096;
/// The control tokens and tab, newline and space come first in the vocabulary.
const BLANK_TOKENS: usize = 6;

/// GPT-2's byte-to-character map for the bytes used here.
fn byte_char(b: u8) -> char {
    match b {
        b'!'..=b'~' => b as char,
        // Bytes GPT-2 remaps, in order: 0..=32 then 127.., so 9 → U+0109, 10 → U+010A, 32 → U+0120.
        _ => char::from_u32(256 + u32::from(b)).unwrap_or('?'),
    }
}

fn tokens() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    for b in [9u8, 10].into_iter().chain(0x20..0x7F) {
        tokens.push(byte_char(b).to_string());
    }
    let space = byte_char(b' ');
    let merges = vec![format!("{space} t"), "h e".into(), format!("{space}t he"), "i n".into(), "e r".into()];
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    (tokens, merges)
}

fn weights(rng: &mut StdRng, out: usize, inp: usize) -> QTensor {
    weights_with_zero_rows(rng, out, inp, 0)
}

/// Random weights whose first `zero_rows` rows are zero.
fn weights_with_zero_rows(rng: &mut StdRng, out: usize, inp: usize, zero_rows: usize) -> QTensor {
    let mut data: Vec<f32> = (0..out * inp).map(|_| rng.gen_range(-0.05f32..0.05)).collect();
    data[..zero_rows * inp].fill(0.0);
    let t = Tensor::from_vec(data, (out, inp), &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::F32).unwrap()
}

fn ones(n: usize) -> QTensor {
    QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32)
        .unwrap()
}

/// Write the model to `path`.
pub fn write(path: &Path, seed: u64) {
    write_with_context(path, seed, CONTEXT);
}

/// Write the model to `path`, declaring a context of `context` tokens.
pub fn write_with_context(path: &Path, seed: u64, context: u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (tokens, merges) = tokens();
    let head_dim = (EMBD / HEADS) as u32;
    let u32v = Value::U32;
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let types = Value::Array((0..tokens.len()).map(|i| Value::I32(if i < 3 { 3 } else { 1 })).collect());
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] \
                    + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("tiny-random-llama".into())),
        ("llama.context_length", u32v(context)),
        ("llama.embedding_length", u32v(EMBD as u32)),
        ("llama.block_count", u32v(LAYERS as u32)),
        ("llama.feed_forward_length", u32v(FF as u32)),
        ("llama.attention.head_count", u32v(HEADS as u32)),
        ("llama.attention.head_count_kv", u32v(KV_HEADS as u32)),
        ("llama.rope.dimension_count", u32v(head_dim)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", u32v(tokens.len() as u32)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", u32v(1)),
        ("tokenizer.ggml.eos_token_id", u32v(2)),
        ("tokenizer.ggml.unknown_token_id", u32v(0)),
        ("tokenizer.ggml.padding_token_id", u32v(2)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.chat_template", Value::String(template.into())),
    ];
    let h = HEADS * EMBD / HEADS;
    let kv = KV_HEADS * EMBD / HEADS;
    // The output projection is tied to the embeddings; zero rows for the three control tokens and
    // the three whitespace ones (tab, newline, space) give them logit 0 while the other tokens'
    // logits are spread around 0, so greedy decoding never picks them: every answer runs to
    // max_tokens, and every token is visible text that mistral.rs's trimming of leading whitespace
    // cannot empty. (Which visible token wins depends on the CPU's float rounding: a completion
    // of whitespace only, trimmed to nothing, failed CI on another machine.)
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), weights_with_zero_rows(&mut rng, tokens.len(), EMBD, BLANK_TOKENS)),
        ("output_norm.weight".into(), ones(EMBD)),
    ];
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_norm.weight"), ones(EMBD)));
        tensors.push((format!("{p}.attn_q.weight"), weights(&mut rng, h, EMBD)));
        tensors.push((format!("{p}.attn_k.weight"), weights(&mut rng, kv, EMBD)));
        tensors.push((format!("{p}.attn_v.weight"), weights(&mut rng, kv, EMBD)));
        tensors.push((format!("{p}.attn_output.weight"), weights(&mut rng, EMBD, h)));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(EMBD)));
        tensors.push((format!("{p}.ffn_gate.weight"), weights(&mut rng, FF, EMBD)));
        tensors.push((format!("{p}.ffn_up.weight"), weights(&mut rng, FF, EMBD)));
        tensors.push((format!("{p}.ffn_down.weight"), weights(&mut rng, EMBD, FF)));
    }
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}
