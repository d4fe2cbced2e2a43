//! Producing GPU evidence for this worker's record, behind [`GpuProvider`]: none, NVIDIA GPUs
//! through NVML ([`NvmlGpus`]: a GPU in confidential-computing mode gives its attestation report
//! and chain, any other is declared by name as not confidential), or SIMULATED GPUs signed by the local simulator key (development only, labelled
//! as such in the record and refused by any policy without `allow_simulated`).

use cocoon_protocol::attestation::evidence::MAX_GPU_NAME;
use cocoon_protocol::attestation::record::{
    GpuArchitecture, GpuEvidence, NvidiaGpuEvidence, SimulatedGpuEvidence,
};
use libp2p::identity::ed25519;
use sha2::{Digest, Sha256};

use super::gpu::nvml;
use super::provider::ProviderError;

/// Something that reports this machine's GPUs, attesting those it can for a nonce.
pub trait GpuProvider: Send + Sync + std::fmt::Debug {
    /// Short name for logs (`none`, `nvidia`, `simulated`).
    fn name(&self) -> &'static str;
    /// Evidence of every GPU, each confidential one answering `nonce`.
    fn evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, ProviderError>;
}

/// A CPU-only worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGpus;

impl GpuProvider for NoGpus {
    fn name(&self) -> &'static str {
        "none"
    }

    fn evidence(&self, _nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, ProviderError> {
        Ok(Vec::new())
    }
}

/// Every NVIDIA GPU NVML reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmlGpus;

impl GpuProvider for NvmlGpus {
    fn name(&self) -> &'static str {
        "nvidia"
    }

    fn evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, ProviderError> {
        let gpus = nvml::collect(nonce).map_err(|e| ProviderError::Gpu(e.to_string()))?;
        Ok(gpus
            .into_iter()
            .map(|gpu| {
                if !gpu.cc_enabled {
                    return GpuEvidence::Unattested { name: gpu.name.chars().take(MAX_GPU_NAME).collect() };
                }
                GpuEvidence::Nvidia(Box::new(NvidiaGpuEvidence {
                    architecture: architecture_of(&gpu.name),
                    report: gpu.report,
                    chain: gpu.chain_der,
                }))
            })
            .collect())
    }
}

/// The architecture of an NVIDIA product name ("NVIDIA H100 80GB HBM3", "NVIDIA B200"); the
/// verifier checks it against the certificate chain.
fn architecture_of(name: &str) -> GpuArchitecture {
    let blackwell = name.split_whitespace().any(|w| {
        let w = w.strip_prefix("G").unwrap_or(w);
        w.strip_prefix('B').is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
    });
    if blackwell { GpuArchitecture::Blackwell } else { GpuArchitecture::Hopper }
}

/// SIMULATED Hopper GPUs signed by a local simulator key.
#[derive(Debug, Clone)]
pub struct SimulatedGpus {
    key: ed25519::Keypair,
    count: u8,
}

impl SimulatedGpus {
    /// `count` simulated GPUs signed with `key`.
    pub fn new(key: ed25519::Keypair, count: u8) -> Self {
        Self { key, count }
    }
}

impl GpuProvider for SimulatedGpus {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, ProviderError> {
        let signer = self.key.public().to_bytes();
        Ok((0..self.count)
            .map(|i| {
                // A device identity stable per simulator key and GPU index.
                let device: [u8; 32] = Sha256::new().chain_update(signer).chain_update([i]).finalize().into();
                let sim = SimulatedGpuEvidence::create(&self.key, GpuArchitecture::Hopper, device, *nonce);
                GpuEvidence::Simulated(Box::new(sim))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::attestation::gpu_policy::GpuClaims;

    use super::*;

    #[test]
    fn simulated_gpus_answer_the_nonce_with_distinct_devices() {
        let gpus = SimulatedGpus::new(ed25519::Keypair::generate(), 3).evidence(&[7; 32]).unwrap();
        let claims: Vec<_> = gpus
            .iter()
            .map(|g| match g {
                GpuEvidence::Simulated(s) => GpuClaims::from_simulated(s).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(claims.iter().all(|c| c.simulated && c.confidential && c.nonce == Some([7; 32])));
        let devices: std::collections::HashSet<_> = claims.iter().map(|c| c.device).collect();
        assert_eq!(devices.len(), 3);
        assert!(NoGpus.evidence(&[0; 32]).unwrap().is_empty());
    }

    #[test]
    fn architectures_from_product_names() {
        assert_eq!(architecture_of("NVIDIA H100 80GB HBM3"), GpuArchitecture::Hopper);
        assert_eq!(architecture_of("NVIDIA H200"), GpuArchitecture::Hopper);
        assert_eq!(architecture_of("NVIDIA B200"), GpuArchitecture::Blackwell);
        assert_eq!(architecture_of("NVIDIA GB200"), GpuArchitecture::Blackwell);
    }
}
