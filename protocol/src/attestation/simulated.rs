//! SIMULATED TEE evidence for development and simnet.
//!
//! A local ed25519 "simulator" key signs fake measurements and the record's report data. This
//! proves nothing about the hardware; it exists so the whole system can run without TDX, and every
//! verifier refuses it unless its policy says `allow_simulated = true`.

use libp2p_identity::ed25519;

use super::evidence::{GpuArchitecture, Measurement, SimulatedEvidence, SimulatedGpuEvidence};

/// Domain tag of simulator signatures.
pub const SIMULATED_DOMAIN: &[u8] = b"cocoon/simulated-tee/v1\0";
/// Domain tag of simulated GPU evidence signatures.
pub const SIMULATED_GPU_DOMAIN: &[u8] = b"cocoon/simulated-gpu/v1\0";
/// MRTD that simulated evidence reports: ASCII "SIMULATED", zero-padded.
pub const SIMULATED_MRTD: Measurement =
    *b"SIMULATED\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn signed_bytes(mrtd: &Measurement, rtmr: &[Measurement; 4], report_data: &[u8; 64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIMULATED_DOMAIN.len() + 48 * 5 + 64);
    v.extend_from_slice(SIMULATED_DOMAIN);
    v.extend_from_slice(mrtd);
    for r in rtmr {
        v.extend_from_slice(r);
    }
    v.extend_from_slice(report_data);
    v
}

impl SimulatedEvidence {
    /// Evidence with [`SIMULATED_MRTD`], zero RTMRs and `report_data`, signed by `simulator`.
    pub fn create(simulator: &ed25519::Keypair, report_data: [u8; 64]) -> Self {
        let (mrtd, rtmr) = (SIMULATED_MRTD, [[0u8; 48]; 4]);
        let signature = simulator.sign(&signed_bytes(&mrtd, &rtmr, &report_data));
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&signature);
        Self { mrtd, rtmr, report_data, signer: simulator.public().to_bytes(), signature: sig }
    }

    /// Whether the simulator signature is valid.
    pub fn signature_valid(&self) -> bool {
        ed25519::PublicKey::try_from_bytes(&self.signer)
            .map(|key| key.verify(&signed_bytes(&self.mrtd, &self.rtmr, &self.report_data), &self.signature))
            .unwrap_or(false)
    }
}

fn gpu_signed_bytes(architecture: u8, device: &[u8; 32], nonce: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIMULATED_GPU_DOMAIN.len() + 1 + 64);
    v.extend_from_slice(SIMULATED_GPU_DOMAIN);
    v.push(architecture);
    v.extend_from_slice(device);
    v.extend_from_slice(nonce);
    v
}

impl SimulatedGpuEvidence {
    /// Evidence of a fake `architecture` GPU named `device` answering `nonce`, signed by
    /// `simulator`.
    pub fn create(
        simulator: &ed25519::Keypair,
        architecture: GpuArchitecture,
        device: [u8; 32],
        nonce: [u8; 32],
    ) -> Self {
        let mut evidence =
            Self { architecture, device, nonce, signer: simulator.public().to_bytes(), signature: [0; 64] };
        let signature = simulator.sign(&gpu_signed_bytes(evidence.architecture_code(), &device, &nonce));
        evidence.signature.copy_from_slice(&signature);
        evidence
    }

    /// Whether the simulator signature is valid.
    pub fn signature_valid(&self) -> bool {
        let signed = gpu_signed_bytes(self.architecture_code(), &self.device, &self.nonce);
        ed25519::PublicKey::try_from_bytes(&self.signer)
            .map(|key| key.verify(&signed, &self.signature))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_measurements_and_report_data() {
        let key = ed25519::Keypair::generate();
        let evidence = SimulatedEvidence::create(&key, [5; 64]);
        assert!(evidence.signature_valid());
        let mut e = evidence.clone();
        e.report_data[0] ^= 1;
        assert!(!e.signature_valid());
        let mut e = evidence.clone();
        e.rtmr[3][0] ^= 1;
        assert!(!e.signature_valid());
        let mut e = evidence;
        e.signer = ed25519::Keypair::generate().public().to_bytes();
        assert!(!e.signature_valid());
    }

    #[test]
    fn gpu_signature_covers_architecture_device_and_nonce() {
        let key = ed25519::Keypair::generate();
        let gpu = SimulatedGpuEvidence::create(&key, GpuArchitecture::Hopper, [1; 32], [2; 32]);
        assert!(gpu.signature_valid());
        let mut g = gpu.clone();
        g.architecture = GpuArchitecture::Blackwell;
        assert!(!g.signature_valid());
        let mut g = gpu.clone();
        g.device[0] ^= 1;
        assert!(!g.signature_valid());
        let mut g = gpu;
        g.nonce[31] ^= 1;
        assert!(!g.signature_valid());
    }
}
