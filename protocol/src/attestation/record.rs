//! The attestation record a worker publishes, and its canonical encoding (version 1).
//!
//! ```text
//! u8       version = 1
//! bytes    peer id (libp2p multihash bytes, ≤ 64)
//! [32]     X25519 Noise static public key
//! str      TON payout address (≤ 128)
//! u16      number of offers (≤ 64), then per offer:
//!            str model id (≤ 256), u64 nanotons per 1k prompt tokens,
//!            u64 nanotons per 1k completion tokens, u32 context length, u32 max concurrent
//! u8       evidence kind: 1 = TDX, 2 = simulated
//!            TDX:       bytes quote (≤ 16 KiB)
//!            simulated: [48] MRTD, 4 × [48] RTMR, [64] report data, [32] signer key, [64] signature
//! u64      issued at (Unix seconds)
//! u64      expires at (Unix seconds)
//! ```
//!
//! Integers are big-endian; `bytes`/`str` carry a u32 length prefix. Every record has exactly one
//! encoding, and decoding rejects anything else (see [`crate::codec`]).

use libp2p_identity::PeerId;

use crate::codec::{CodecError, Reader, Writer};

/// Encoding version written by this implementation.
pub const RECORD_VERSION: u8 = 1;
/// Most model offers in one record.
pub const MAX_OFFERS: usize = 64;
/// Longest model id (`name@sha256:<64 hex>` fits easily).
pub const MAX_MODEL_ID: usize = 256;
/// Longest payout address (TON user-friendly addresses are 48 characters).
pub const MAX_PAYOUT_ADDRESS: usize = 128;
/// Largest TDX quote (v4/v5 quotes with certification data are about 5 KiB).
pub const MAX_QUOTE: usize = 16 * 1024;
/// Longest peer id encoding.
const MAX_PEER_ID: usize = 64;

/// A 48-byte TDX measurement register (SHA-384).
pub type Measurement = [u8; 48];

/// One model a worker serves, at attested prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOffer {
    /// `name@sha256:<hex of the GGUF file>`.
    pub model_id: String,
    /// Price per 1,000 prompt tokens, in nanotons.
    pub price_prompt_per_1k: u64,
    /// Price per 1,000 completion tokens, in nanotons.
    pub price_completion_per_1k: u64,
    /// Maximum context length in tokens.
    pub context_length: u32,
    /// Requests served at once.
    pub max_concurrent: u32,
}

/// Evidence that the record's keys live in an approved TEE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeeEvidence {
    /// An Intel TDX quote whose report data binds the record (see `binding`).
    Tdx {
        /// The raw quote as produced by the quoting enclave.
        quote: Vec<u8>,
    },
    /// SIMULATED evidence for development: fake measurements signed by a local key. It proves
    /// nothing and is refused unless the verifier's policy sets `allow_simulated`.
    Simulated(Box<SimulatedEvidence>),
}

/// The body of simulated evidence (see [`TeeEvidence::Simulated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedEvidence {
    /// Fake MRTD.
    pub mrtd: Measurement,
    /// Fake RTMR0–3.
    pub rtmr: [Measurement; 4],
    /// Report data, computed exactly as for a real quote.
    pub report_data: [u8; 64],
    /// ed25519 public key of the simulator that signed it.
    pub signer: [u8; 32],
    /// ed25519 signature over the domain tag, measurements and report data.
    pub signature: [u8; 64],
}

/// A worker's attestation record (unsigned body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRecord {
    /// The worker's libp2p identity; the record is signed with its key.
    pub peer_id: PeerId,
    /// X25519 static key clients run Noise IK against.
    pub noise_static: [u8; 32],
    /// Where the worker is paid.
    pub payout_address: String,
    /// Models served.
    pub offers: Vec<ModelOffer>,
    /// TEE evidence.
    pub evidence: TeeEvidence,
    /// Unix seconds when issued.
    pub issued_at: u64,
    /// Unix seconds after which the record is invalid.
    pub expires_at: u64,
}

fn limit(field: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max { Err(CodecError::TooLong { field, len, max }) } else { Ok(()) }
}

impl AttestationRecord {
    /// The canonical encoding; fails only if a field exceeds its maximum.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let peer = self.peer_id.to_bytes();
        limit("peer id", peer.len(), MAX_PEER_ID)?;
        limit("payout address", self.payout_address.len(), MAX_PAYOUT_ADDRESS)?;
        limit("offers", self.offers.len(), MAX_OFFERS)?;
        let mut w = Writer::new();
        w.u8(RECORD_VERSION).bytes(&peer).fixed(&self.noise_static).str(&self.payout_address);
        w.u16(self.offers.len() as u16);
        for offer in &self.offers {
            limit("model id", offer.model_id.len(), MAX_MODEL_ID)?;
            w.str(&offer.model_id)
                .u64(offer.price_prompt_per_1k)
                .u64(offer.price_completion_per_1k)
                .u32(offer.context_length)
                .u32(offer.max_concurrent);
        }
        match &self.evidence {
            TeeEvidence::Tdx { quote } => {
                limit("quote", quote.len(), MAX_QUOTE)?;
                w.u8(1).bytes(quote);
            }
            TeeEvidence::Simulated(sim) => {
                w.u8(2).fixed(&sim.mrtd);
                for r in &sim.rtmr {
                    w.fixed(r);
                }
                w.fixed(&sim.report_data).fixed(&sim.signer).fixed(&sim.signature);
            }
        }
        w.u64(self.issued_at).u64(self.expires_at);
        Ok(w.finish())
    }

    /// Decode a canonical encoding (the whole input).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("record version")?;
        if version != RECORD_VERSION {
            return Err(CodecError::Unknown { field: "record version", value: version.into() });
        }
        let peer_id = PeerId::from_bytes(r.bytes("peer id", MAX_PEER_ID)?)
            .map_err(|e| CodecError::Invalid { field: "peer id", reason: e.to_string() })?;
        let noise_static = r.array("noise key")?;
        let payout_address = r.str("payout address", MAX_PAYOUT_ADDRESS)?.to_owned();
        let count = r.u16("offer count")? as usize;
        limit("offers", count, MAX_OFFERS)?;
        let mut offers = Vec::with_capacity(count);
        for _ in 0..count {
            offers.push(ModelOffer {
                model_id: r.str("model id", MAX_MODEL_ID)?.to_owned(),
                price_prompt_per_1k: r.u64("prompt price")?,
                price_completion_per_1k: r.u64("completion price")?,
                context_length: r.u32("context length")?,
                max_concurrent: r.u32("max concurrent")?,
            });
        }
        let evidence = match r.u8("evidence kind")? {
            1 => TeeEvidence::Tdx { quote: r.bytes("quote", MAX_QUOTE)?.to_vec() },
            2 => TeeEvidence::Simulated(Box::new(SimulatedEvidence {
                mrtd: r.array("mrtd")?,
                rtmr: [r.array("rtmr0")?, r.array("rtmr1")?, r.array("rtmr2")?, r.array("rtmr3")?],
                report_data: r.array("report data")?,
                signer: r.array("simulator key")?,
                signature: r.array("simulator signature")?,
            })),
            other => return Err(CodecError::Unknown { field: "evidence kind", value: other.into() }),
        };
        let issued_at = r.u64("issued at")?;
        let expires_at = r.u64("expires at")?;
        r.finish()?;
        Ok(Self { peer_id, noise_static, payout_address, offers, evidence, issued_at, expires_at })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(peer_id: PeerId, evidence: TeeEvidence) -> AttestationRecord {
        AttestationRecord {
            peer_id,
            noise_static: [7; 32],
            payout_address: "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into(),
            offers: vec![ModelOffer {
                model_id: format!("smollm2-135m-instruct@sha256:{}", "ab".repeat(32)),
                price_prompt_per_1k: 1_000,
                price_completion_per_1k: 4_000,
                context_length: 8192,
                max_concurrent: 4,
            }],
            evidence,
            issued_at: 1_750_000_000,
            expires_at: 1_750_003_600,
        }
    }

    #[test]
    fn round_trips_both_evidence_kinds() {
        let tdx = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![3; 5000] });
        assert_eq!(AttestationRecord::decode(&tdx.encode().unwrap()).unwrap(), tdx);
        let sim = sample(
            PeerId::random(),
            TeeEvidence::Simulated(Box::new(SimulatedEvidence {
                mrtd: [1; 48],
                rtmr: [[2; 48], [3; 48], [4; 48], [5; 48]],
                report_data: [6; 64],
                signer: [8; 32],
                signature: [9; 64],
            })),
        );
        assert_eq!(AttestationRecord::decode(&sim.encode().unwrap()).unwrap(), sim);
    }

    #[test]
    fn rejects_non_canonical_and_oversized_input() {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![1; 10] });
        let bytes = record.encode().unwrap();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(AttestationRecord::decode(&trailing), Err(CodecError::Trailing(1)));
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(matches!(AttestationRecord::decode(&version), Err(CodecError::Unknown { .. })));
        for cut in [1, 10, bytes.len() - 1] {
            assert!(AttestationRecord::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut big = record.clone();
        big.evidence = TeeEvidence::Tdx { quote: vec![0; MAX_QUOTE + 1] };
        assert!(matches!(big.encode(), Err(CodecError::TooLong { field: "quote", .. })));
        let mut many = record;
        many.offers = vec![many.offers[0].clone(); MAX_OFFERS + 1];
        assert!(matches!(many.encode(), Err(CodecError::TooLong { field: "offers", .. })));
    }
}
