//! Binding a TEE report to the record's keys.
//!
//! The 64 bytes of report data that a TDX quote (or simulated evidence) carries must equal
//!
//! ```text
//! SHA-512( REPORT_DATA_DOMAIN ‖ u32 len ‖ peer id bytes ‖ noise static key (32)
//!          ‖ u32 len ‖ payout address ‖ u64 expires_at )
//! ```
//!
//! so a quote produced for one node's keys cannot be reused in a record with any other peer id,
//! Noise key, payout address or lifetime. SEV-SNP reports carry the same 64 bytes. A GPU's
//! attestation nonce is 32 bytes: `SHA-256( GPU_NONCE_DOMAIN ‖ report data )`, the same binding
//! hashed under its own domain, so a GPU report made for one record's keys fits no other record.

use sha2::{Digest, Sha256, Sha512};

use super::record::AttestationRecord;
use crate::codec::Writer;

/// Domain tag of report data.
pub const REPORT_DATA_DOMAIN: &[u8] = b"cocoon/tdx-report-data/v1\0";

/// Domain tag of GPU nonces.
pub const GPU_NONCE_DOMAIN: &[u8] = b"cocoon/gpu-nonce/v1\0";

/// The nonce every GPU attestation report of `record` must answer.
pub fn expected_gpu_nonce(record: &AttestationRecord) -> [u8; 32] {
    gpu_nonce(&expected_report_data(record))
}

/// The GPU nonce for `report_data` (a worker computes its record's report data first).
pub fn gpu_nonce(report_data: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(GPU_NONCE_DOMAIN);
    h.update(report_data);
    h.finalize().into()
}

/// The report data a TEE report must carry for `record`.
pub fn expected_report_data(record: &AttestationRecord) -> [u8; 64] {
    let mut w = Writer::new();
    w.fixed(REPORT_DATA_DOMAIN)
        .bytes(&record.peer_id.to_bytes())
        .fixed(&record.noise_static)
        .str(&record.payout_address)
        .u64(record.expires_at);
    Sha512::digest(w.finish()).into()
}

#[cfg(test)]
mod tests {
    use libp2p_identity::PeerId;

    use super::super::record::TeeEvidence;
    use super::super::record::tests::sample;
    use super::*;

    #[test]
    fn every_bound_field_changes_the_report_data() {
        let base = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![] });
        let data = expected_report_data(&base);
        let nonce = expected_gpu_nonce(&base);
        assert_ne!(&data[..32], &nonce[..], "the GPU nonce is not a prefix of the report data");
        let mut other = base.clone();
        other.peer_id = PeerId::random();
        assert_ne!(expected_report_data(&other), data);
        let mut other = base.clone();
        other.noise_static[0] ^= 1;
        assert_ne!(expected_report_data(&other), data);
        assert_ne!(expected_gpu_nonce(&other), nonce, "a GPU nonce binds the Noise key");
        let mut other = base.clone();
        other.payout_address.push('x');
        assert_ne!(expected_report_data(&other), data);
        let mut other = base.clone();
        other.expires_at += 1;
        assert_ne!(expected_report_data(&other), data);
        // Offers and issue time are covered by the record signature, not the quote.
        let mut other = base;
        other.offers.clear();
        assert_eq!(expected_report_data(&other), data);
    }
}
