//! Confidential inference in the node: the Noise session ([`session`]), engines ([`engine`],
//! [`mistral`], the embedding engine [`bert`]), model ids ([`model`]), the worker that serves `/cocoon/inference/2`
//! ([`worker`]) and the client that sends requests to verified workers ([`client`]); how tools
//! and response formats steer an engine ([`tools`]).

#[cfg(feature = "mistralrs")]
pub mod bert;
pub mod client;
pub mod engine;
pub mod fetch;
#[cfg(feature = "mistralrs")]
pub mod mistral;
#[cfg(feature = "mistralrs")]
mod mistral_request;
pub mod model;
pub mod session;
pub mod setup;
pub mod tools;
pub mod worker;

/// Where the in-process engine runs by default (`worker.device = "cpu"`, mistral.rs's
/// `with_force_cpu`), whatever accelerators the machine has. A build with the `cuda` feature can
/// load GGUF models on a GPU instead (`worker.device = "cuda"`, docs/cuda.md).
pub const ENGINE_DEVICE: &str = "CPU";
