//! The optional online checks of a record's NVIDIA GPUs, after its evidence verified offline:
//! OCSP (NVIDIA's responder says the device, provisioner and identity certificates are not
//! revoked) and RIMs (the report's measurements are NVIDIA's golden values for its driver and
//! VBIOS). Each runs only when the node's configuration requires it (`gpu.require_ocsp`,
//! `gpu.require_rim`); answers are cached, so a record costs at most one round per GPU. A
//! failure is this node's verdict on what NVIDIA's services say (or cannot say, offline), never
//! the sender's fault: the record is ignored, not rejected.

use cocoon_protocol::attestation::binding::expected_gpu_nonce;
use cocoon_protocol::attestation::record::{AttestationRecord, GpuEvidence};

use super::gpu::ocsp::{GpuOcsp, GpuServicesConfig};
use super::gpu::rim::GpuRims;
use super::gpu::{nvidia_device_root, verify_evidence};

/// The online checks a node runs.
#[derive(Debug)]
pub struct GpuOnline {
    ocsp: Option<GpuOcsp>,
    rims: Option<GpuRims>,
    root: Vec<u8>,
}

impl GpuOnline {
    /// The checks `config` requires; `None` when it requires none.
    pub fn new(config: &GpuServicesConfig) -> Result<Option<Self>, String> {
        if !config.require_ocsp && !config.require_rim {
            return Ok(None);
        }
        let ocsp =
            config.require_ocsp.then(|| GpuOcsp::new(config)).transpose().map_err(|e| e.to_string())?;
        let rims = config.require_rim.then(|| GpuRims::new(config)).transpose().map_err(|e| e.to_string())?;
        let root = nvidia_device_root().map_err(|e| e.to_string())?;
        Ok(Some(Self { ocsp, rims, root }))
    }

    /// Run the required checks on every NVIDIA GPU of `record` (whose evidence has verified) at
    /// `now`; the first failure, naming its GPU.
    pub async fn check(&self, record: &AttestationRecord, now: u64) -> Result<(), String> {
        let nonce = expected_gpu_nonce(record);
        for (index, gpu) in record.gpus.iter().enumerate() {
            let GpuEvidence::Nvidia(nv) = gpu else { continue };
            if let Some(ocsp) = &self.ocsp {
                ocsp.check_chain(&nv.chain, &self.root, now)
                    .await
                    .map_err(|e| format!("GPU {index}: OCSP: {e}"))?;
            }
            if let Some(rims) = &self.rims {
                let verified = verify_evidence(&nv.report, &nv.chain, &nonce, now, &self.root)
                    .map_err(|e| format!("GPU {index}: {e}"))?;
                rims.check(&verified, now).await.map_err(|e| format!("GPU {index}: RIM: {e}"))?;
            }
        }
        Ok(())
    }
}
