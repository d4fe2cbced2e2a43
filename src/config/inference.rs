//! Configuration of inference: the OpenAI-compatible API of client nodes (`[api]`), the models
//! a worker serves (`[[worker.models]]`) and the device its engine runs on (`worker.device`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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

/// `worker.device`: where mistral.rs loads the worker's GGUF models. Written `"cpu"` (the
/// default), `"cuda"` (the same as `"cuda:0"`) or `"cuda:N"`. Embedding models (BERT) always run
/// on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EngineDevice {
    /// The CPU, whatever accelerators the machine has.
    #[default]
    Cpu,
    /// The NVIDIA GPU of this CUDA ordinal (as the process sees them: after
    /// `CUDA_VISIBLE_DEVICES`). Needs a build with the `cuda` feature (docs/cuda.md).
    Cuda(u32),
}

impl EngineDevice {
    /// Whether this build can load models on this device, with the reason when it cannot.
    pub fn check(self) -> Result<(), String> {
        match self {
            Self::Cpu => Ok(()),
            Self::Cuda(_) if !cfg!(feature = "cuda") => Err(format!(
                "worker.device = \"{self}\" needs a cocoon built with the `cuda` feature, and this one \
                 was built without it (see docs/cuda.md); use \"cpu\" or a CUDA build"
            )),
            // mistral.rs 0.8.1's GgufModelBuilder ignores `with_device`: a GGUF model always
            // starts on the first visible GPU (`best_device`), so another ordinal cannot be
            // honoured in process. Refused rather than silently loaded on GPU 0.
            Self::Cuda(n) if n != 0 => Err(format!(
                "worker.device = \"{self}\": mistral.rs 0.8.1 loads GGUF models on the first visible \
                 GPU only; select GPU {n} with CUDA_VISIBLE_DEVICES={n} and worker.device = \"cuda\""
            )),
            Self::Cuda(_) => Ok(()),
        }
    }
}

impl fmt::Display for EngineDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for EngineDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\" (N a GPU ordinal)");
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // Digits only: u32's parser would also take a leading '+'.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl TryFrom<String> for EngineDevice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<EngineDevice> for String {
    fn from(d: EngineDevice) -> Self {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parses_and_prints_back() {
        assert_eq!("cpu".parse(), Ok(EngineDevice::Cpu));
        assert_eq!("cuda".parse(), Ok(EngineDevice::Cuda(0)));
        assert_eq!("cuda:0".parse(), Ok(EngineDevice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(EngineDevice::Cuda(3)));
        for d in [EngineDevice::Cpu, EngineDevice::Cuda(0), EngineDevice::Cuda(7)] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
        for bad in ["", "CPU", "gpu", "cuda:", "cuda:+1", "cuda:-1", "cuda:x", "cuda:99999999999", "metal"] {
            assert!(bad.parse::<EngineDevice>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!(EngineDevice::default(), EngineDevice::Cpu);
    }

    #[test]
    fn device_is_checked_against_the_build() {
        assert_eq!(EngineDevice::Cpu.check(), Ok(()));
        let cuda = EngineDevice::Cuda(0).check();
        if cfg!(feature = "cuda") {
            assert_eq!(cuda, Ok(()));
        } else {
            let e = cuda.expect_err("a build without the cuda feature refuses cuda");
            assert!(e.contains("`cuda` feature") && e.contains("docs/cuda.md"), "{e}");
        }
        let other = EngineDevice::Cuda(1).check().expect_err("mistral.rs 0.8.1 cannot pick GPU 1");
        assert!(other.contains("CUDA_VISIBLE_DEVICES") || other.contains("`cuda` feature"), "{other}");
    }

    #[test]
    fn device_key_in_the_file() {
        use crate::config::Config;
        let config = Config::parse("[worker]\ndevice = \"cuda\"\n").expect("parses");
        assert_eq!(config.worker.device, EngineDevice::Cuda(0));
        assert_eq!(config.validate().is_ok(), cfg!(feature = "cuda"));
        let dumped = config.to_toml().expect("dumps");
        assert!(dumped.contains("device = \"cuda:0\""), "{dumped}");
        assert_eq!(Config::parse(&dumped).expect("parses back").worker.device, EngineDevice::Cuda(0));
        assert_eq!(Config::parse("").expect("parses").worker.device, EngineDevice::Cpu);
        let bad = Config::parse("[worker]\ndevice = \"gpu\"\n").expect_err("refused");
        assert!(bad.contains("\"cpu\", \"cuda\" or \"cuda:N\""), "{bad}");
    }
}
