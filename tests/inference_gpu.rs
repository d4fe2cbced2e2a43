//! Choosing workers by their GPUs, on an in-process network with SIMULATED CPU and GPU evidence:
//! a request with `cocoon_require_gpu = "cc"` is never sent to a worker without confidential
//! GPUs, however much cheaper it is; a client node whose policy requires them never lists such a
//! worker; `/v1/models` says which TEE and GPUs the workers of each model have.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use cocoon::config::{GpuKind, Role};
use common::inference::{boot, client, get, metric, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_requiring_confidential_gpus_never_uses_a_worker_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (_boot, boot_addr) = boot(dir.path()).await;
    // The CPU-only worker is free, so every client prefers it (selection weighs price).
    let cpu = start(with_admin(worker(
        config(&dir.path().join("cpu"), Role::Worker, Some(&boot_addr)),
        &model,
        0,
        4,
    )))
    .await;
    let mut g = with_admin(worker(
        config(&dir.path().join("gpu"), Role::Worker, Some(&boot_addr)),
        &model,
        50_000,
        4,
    ));
    g.worker.gpus = GpuKind::Simulated;
    g.worker.simulated_gpus = 2;
    let gpu = start(g).await;
    let client_node = start(client(config(&dir.path().join("client"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 2).await;
    let api = client_node.api_addr().unwrap();

    let (status, models) = get(api, "/v1/models").await;
    assert_eq!(status, 200);
    let hardware = &models["data"][0]["cocoon"]["hardware"];
    assert_eq!(hardware["tee"], json!({"simulated": 2}), "{hardware}");
    assert_eq!(hardware["gpu_workers"], 1, "{hardware}");
    assert_eq!(hardware["gpu_cc_workers"], 1, "{hardware}");
    assert_eq!(hardware["gpus"], json!({"hopper (simulated)": 2}), "{hardware}");

    for _ in 0..6 {
        let body = json!({
            "model": model_id,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "cocoon_require_gpu": "cc",
        });
        let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["worker"], gpu.peer_id().to_string(), "{answer}");
    }
    assert_eq!(
        metric(&cpu, "cocoon_inference_worker_requests_total", "").await,
        0,
        "the CPU worker was sent a request"
    );

    // `any`: a GPU, confidential or not; the CPU-only worker has none.
    let body = json!({
        "model": model_id,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "cocoon_require_gpu": "any",
    });
    let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["worker"], gpu.peer_id().to_string(), "{answer}");
    assert_eq!(metric(&cpu, "cocoon_inference_worker_requests_total", "").await, 0);

    let bad = json!({"model": model_id, "messages": [{"role": "user", "content": "hi"}], "cocoon_require_gpu": "yes"});
    let (status, answer) = post(api, "/v1/chat/completions", bad.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "cocoon_require_gpu", "{answer}");

    // A client node whose policy requires confidential GPUs knows only the GPU worker.
    let mut strict = client(config(&dir.path().join("strict"), Role::Client, Some(&boot_addr)));
    strict.attestation.require_gpu = Some("cc".into());
    let strict = start(strict).await;
    wait_for_workers(&strict, 1).await;
    let offering = strict.attestation().offering(&model_id);
    assert_eq!(offering.len(), 1);
    assert_eq!(offering[0].record().peer_id, gpu.peer_id());
    assert!(strict.attestation().record_of(&cpu.peer_id()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_worker_can_meet_is_refused_without_being_sent() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (_boot, boot_addr) = boot(dir.path()).await;
    let cpu = start(with_admin(worker(
        config(&dir.path().join("cpu"), Role::Worker, Some(&boot_addr)),
        &model,
        0,
        4,
    )))
    .await;
    let client_node = start(client(config(&dir.path().join("client"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let api = client_node.api_addr().unwrap();
    for requirement in ["any", "cc"] {
        let body = json!({
            "model": model_id,
            "messages": [{"role": "user", "content": "hi"}],
            "cocoon_require_gpu": requirement,
        });
        let (status, answer) = post(api, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "no_gpu_worker", "{answer}");
    }
    assert_eq!(metric(&cpu, "cocoon_inference_worker_requests_total", "").await, 0);
}
