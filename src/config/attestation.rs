//! `[attestation]`: the policy, where TDX collateral and SEV-SNP VCEKs come from, what workers'
//! GPUs must be, and the optional online GPU checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::attestation::gpu::ocsp::GpuServicesConfig;
use crate::attestation::kds::KdsConfig;

/// `[attestation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationSection {
    /// Policy file (format in docs/attestation.md). Default none: the built-in policy, which
    /// accepts no TDX image and no simulated evidence.
    pub policy_file: Option<PathBuf>,
    /// Governance key (64 hex digits, ed25519) that must have signed the policy file
    /// (`<policy_file>.sig`). Default none.
    pub governance_key: Option<String>,
    /// Also accept SIMULATED evidence, whatever the policy file says (development networks only).
    /// Default false.
    pub allow_simulated: bool,
    /// PCCS (or Intel PCS) that TDX collateral is fetched from; fetched collateral is cached in
    /// the store until shortly before it expires. Empty: never fetch (only cached collateral is
    /// used). Default Intel's PCS, `https://api.trustedservices.intel.com`.
    pub pccs_url: String,
    /// Timeout of each PCCS request in seconds. Default 10.
    pub pccs_timeout_secs: u64,
    /// Accept a plain-HTTP `pccs_url` (`http://`). Collateral is signed by Intel and verified
    /// before use, but over plain HTTP anyone on the path can withhold it or serve stale copies,
    /// leaving this node unable to verify TDX workers. Default false: `http://` is refused at
    /// start-up, loopback included (a local PCCS for tests or a devnet sets this explicitly).
    pub allow_insecure_pccs: bool,
    /// What every accepted worker's GPUs must be, overriding the policy file's `gpu.require`:
    /// `"none"`, `"any"` (at least one GPU) or `"cc"` (at least one, and every GPU in NVIDIA
    /// confidential-computing mode with verified evidence). Workers that do not meet it are never
    /// listed or sent requests. Default unset: the policy file's (itself `"none"` by default).
    pub require_gpu: Option<String>,
    /// AMD's key distribution service, where VCEKs of SEV-SNP reports that carry none are
    /// fetched (`[attestation.kds]`: `url`, default `https://kdsintf.amd.com`, empty = stored
    /// VCEKs only; `timeout_secs`, default 10; `min_interval_secs`, default 60).
    pub kds: KdsConfig,
    /// Online checks of NVIDIA GPU evidence (`[attestation.gpu]`: `require_ocsp`, `require_rim`,
    /// both default false; `ocsp_url`, `rim_url`, default NVIDIA's; `timeout_secs`, default 10;
    /// `cache_secs`, default 3600). Offline verification never needs them.
    pub gpu: GpuServicesConfig,
}

impl Default for AttestationSection {
    fn default() -> Self {
        Self {
            policy_file: None,
            governance_key: None,
            allow_simulated: false,
            pccs_url: crate::attestation::pccs::INTEL_PCS_URL.to_owned(),
            pccs_timeout_secs: 10,
            allow_insecure_pccs: false,
            require_gpu: None,
            kds: KdsConfig::default(),
            gpu: GpuServicesConfig::default(),
        }
    }
}
