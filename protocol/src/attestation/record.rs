//! The attestation record a worker publishes, and its canonical encoding (version 3; versions 1
//! and 2 are still read, and written for records they can express: a record is always written
//! in the lowest version that holds it, and decoding refuses any other, so each record has one
//! encoding).
//!
//! ```text
//! u8       version: 1 = no terms field, no GPUs, no SEV-SNP; 2 = terms, no GPUs, no SEV-SNP;
//!            3 = terms (2 = unstated), SEV-SNP evidence, GPU list
//! bytes    peer id (libp2p multihash bytes, ≤ 64)
//! [32]     X25519 Noise static public key
//! str      TON payout address (≤ 128)
//! u8       payment terms (versions 2 and 3): 0 = free (no channel accepted), 1 = paid, then
//!            str network (≤ 32), u64 minimum deposit (nanotons), u32 minimum dispute window
//!            (seconds), u8 contract version
//! u16      number of offers (≤ 64), then per offer:
//!            str model id (≤ 256), u64 nanotons per 1k prompt tokens,
//!            u64 nanotons per 1k completion tokens, u32 context length, u32 max concurrent
//!          CPU evidence (see [`super::evidence`]: 1 = TDX, 2 = simulated, 3 = SEV-SNP)
//!          GPU evidence list (version 3 only; see [`super::evidence`])
//! u64      issued at (Unix seconds)
//! u64      expires at (Unix seconds)
//! ```
//!
//! Integers are big-endian; `bytes`/`str` carry a u32 length prefix. Every record has exactly one
//! encoding, and decoding rejects anything else (see [`crate::codec`]).

use libp2p_identity::PeerId;

pub use super::evidence::{
    GpuArchitecture, GpuEvidence, MAX_QUOTE, Measurement, NvidiaGpuEvidence, SimulatedEvidence,
    SimulatedGpuEvidence, SnpEvidence, TeeEvidence,
};
use crate::codec::{CodecError, Reader, Writer};

/// The current encoding version: SEV-SNP evidence and GPU evidence.
pub const RECORD_VERSION_3: u8 = 3;
/// The version with payment terms, before SEV-SNP and GPUs.
pub const RECORD_VERSION: u8 = 2;
/// The version before payment terms (read, and written for [`PaymentTerms::Unstated`]).
pub const RECORD_VERSION_1: u8 = 1;
/// Longest network name in payment terms.
pub const MAX_NETWORK: usize = 32;
/// Most model offers in one record.
pub const MAX_OFFERS: usize = 64;
/// Longest model id (`name@sha256:<64 hex>` fits easily).
pub const MAX_MODEL_ID: usize = 256;
/// Longest payout address (TON user-friendly addresses are 48 characters).
pub const MAX_PAYOUT_ADDRESS: usize = 128;
/// Longest peer id encoding.
const MAX_PEER_ID: usize = 64;

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

/// What a worker accepts as payment, so a client never opens a channel the worker would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentTerms {
    /// A version 1 record: the worker did not say (its admission tells).
    Unstated,
    /// The worker takes no payment: requests carry no channel, whatever the offers' prices.
    Free,
    /// The worker is paid through channels on `network`.
    Paid(PaidTerms),
}

/// The channels a paid worker accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidTerms {
    /// The chain its channels live on (`payments.network`: e.g. `ton-mainnet`, `ton-testnet`);
    /// empty when unnamed (matches any).
    pub network: String,
    /// Least deposit a channel must hold, nanotons.
    pub min_deposit: u64,
    /// Shortest dispute window a channel may have, seconds.
    pub min_dispute_window: u32,
    /// The channel contract version it runs.
    pub contract_version: u8,
}

/// What a client would open a channel with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTerms<'a> {
    /// Its chain.
    pub network: &'a str,
    /// The deposit of its channels.
    pub deposit: u64,
    /// Their dispute window.
    pub dispute_window: u32,
    /// The contract version it deploys.
    pub contract_version: u8,
}

impl PaymentTerms {
    /// Why a worker with these terms would refuse a channel `client` opens; `None` if it would
    /// not (or did not say).
    pub fn refusal(&self, client: &ClientTerms<'_>) -> Option<String> {
        let Self::Paid(t) = self else { return None };
        // An unnamed network (a devnet, a self-hosted API) matches any: only two names differ.
        if !t.network.is_empty() && !client.network.is_empty() && t.network != client.network {
            return Some(format!(
                "the worker is paid on {}, this client pays on {}",
                t.network, client.network
            ));
        }
        if t.contract_version != client.contract_version {
            return Some(format!(
                "the worker runs channel contract version {}, this client {}",
                t.contract_version, client.contract_version
            ));
        }
        if client.deposit < t.min_deposit {
            return Some(format!(
                "the worker needs a deposit of at least {} nanotons, this client deposits {}",
                t.min_deposit, client.deposit
            ));
        }
        if client.dispute_window < t.min_dispute_window {
            return Some(format!(
                "the worker needs a dispute window of at least {} s, this client's is {} s",
                t.min_dispute_window, client.dispute_window
            ));
        }
        None
    }

    /// Encode; unstated terms are written only in version 3 (as 2), versions 1 has no field.
    fn encode(&self, w: &mut Writer, version: u8) -> Result<(), CodecError> {
        match self {
            Self::Unstated if version == RECORD_VERSION_3 => {
                w.u8(2);
            }
            Self::Unstated => {}
            Self::Free => {
                w.u8(0);
            }
            Self::Paid(t) => {
                limit("network", t.network.len(), MAX_NETWORK)?;
                w.u8(1).str(&t.network).u64(t.min_deposit).u32(t.min_dispute_window).u8(t.contract_version);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>, version: u8) -> Result<Self, CodecError> {
        if version == RECORD_VERSION_1 {
            return Ok(Self::Unstated);
        }
        Ok(match r.u8("payment terms")? {
            0 => Self::Free,
            2 if version == RECORD_VERSION_3 => Self::Unstated,
            1 => Self::Paid(PaidTerms {
                network: r.str("network", MAX_NETWORK)?.to_owned(),
                min_deposit: r.u64("minimum deposit")?,
                min_dispute_window: r.u32("minimum dispute window")?,
                contract_version: r.u8("contract version")?,
            }),
            other => return Err(CodecError::Unknown { field: "payment terms", value: other.into() }),
        })
    }
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
    /// What it accepts as payment.
    pub terms: PaymentTerms,
    /// Models served.
    pub offers: Vec<ModelOffer>,
    /// CPU TEE evidence.
    pub evidence: TeeEvidence,
    /// GPU evidence, one per GPU the worker serves from (empty: CPU only).
    pub gpus: Vec<GpuEvidence>,
    /// Unix seconds when issued.
    pub issued_at: u64,
    /// Unix seconds after which the record is invalid.
    pub expires_at: u64,
}

fn limit(field: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max { Err(CodecError::TooLong { field, len, max }) } else { Ok(()) }
}

impl AttestationRecord {
    /// The lowest encoding version that holds this record.
    pub fn version(&self) -> u8 {
        if !self.gpus.is_empty() || self.evidence.needs_v3() {
            RECORD_VERSION_3
        } else if self.terms == PaymentTerms::Unstated {
            RECORD_VERSION_1
        } else {
            RECORD_VERSION
        }
    }

    /// The canonical encoding; fails only if a field exceeds its maximum.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let peer = self.peer_id.to_bytes();
        limit("peer id", peer.len(), MAX_PEER_ID)?;
        limit("payout address", self.payout_address.len(), MAX_PAYOUT_ADDRESS)?;
        limit("offers", self.offers.len(), MAX_OFFERS)?;
        let mut w = Writer::new();
        let version = self.version();
        w.u8(version).bytes(&peer).fixed(&self.noise_static).str(&self.payout_address);
        self.terms.encode(&mut w, version)?;
        w.u16(self.offers.len() as u16);
        for offer in &self.offers {
            limit("model id", offer.model_id.len(), MAX_MODEL_ID)?;
            w.str(&offer.model_id)
                .u64(offer.price_prompt_per_1k)
                .u64(offer.price_completion_per_1k)
                .u32(offer.context_length)
                .u32(offer.max_concurrent);
        }
        self.evidence.encode(&mut w)?;
        if version == RECORD_VERSION_3 {
            GpuEvidence::encode_list(&self.gpus, &mut w)?;
        }
        w.u64(self.issued_at).u64(self.expires_at);
        Ok(w.finish())
    }

    /// Decode a canonical encoding (the whole input).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("record version")?;
        if !(RECORD_VERSION_1..=RECORD_VERSION_3).contains(&version) {
            return Err(CodecError::Unknown { field: "record version", value: version.into() });
        }
        let peer_id = PeerId::from_bytes(r.bytes("peer id", MAX_PEER_ID)?)
            .map_err(|e| CodecError::Invalid { field: "peer id", reason: e.to_string() })?;
        let noise_static = r.array("noise key")?;
        let payout_address = r.str("payout address", MAX_PAYOUT_ADDRESS)?.to_owned();
        let terms = PaymentTerms::decode(&mut r, version)?;
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
        let v3 = version == RECORD_VERSION_3;
        let evidence = TeeEvidence::decode(&mut r, v3)?;
        let gpus = if v3 { GpuEvidence::decode_list(&mut r)? } else { Vec::new() };
        let issued_at = r.u64("issued at")?;
        let expires_at = r.u64("expires at")?;
        r.finish()?;
        let record = Self {
            peer_id,
            noise_static,
            payout_address,
            terms,
            offers,
            evidence,
            gpus,
            issued_at,
            expires_at,
        };
        if record.version() != version {
            return Err(CodecError::Invalid {
                field: "record version",
                reason: format!("version {version} for a record that version {} holds", record.version()),
            });
        }
        Ok(record)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::evidence::MAX_GPUS;
    use super::*;

    pub(crate) fn sample(peer_id: PeerId, evidence: TeeEvidence) -> AttestationRecord {
        AttestationRecord {
            peer_id,
            noise_static: [7; 32],
            payout_address: "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into(),
            terms: PaymentTerms::Paid(PaidTerms {
                network: "ton-testnet".into(),
                min_deposit: 1_000_000_000,
                min_dispute_window: 3_600,
                contract_version: 2,
            }),
            offers: vec![ModelOffer {
                model_id: format!("smollm2-135m-instruct@sha256:{}", "ab".repeat(32)),
                price_prompt_per_1k: 1_000,
                price_completion_per_1k: 4_000,
                context_length: 8192,
                max_concurrent: 4,
            }],
            evidence,
            gpus: Vec::new(),
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
    fn terms_round_trip_and_a_record_without_them_is_version_1() {
        let mut record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![3; 10] });
        for terms in [PaymentTerms::Unstated, PaymentTerms::Free, record.terms.clone()] {
            record.terms = terms;
            let bytes = record.encode().unwrap();
            let version =
                if record.terms == PaymentTerms::Unstated { RECORD_VERSION_1 } else { RECORD_VERSION };
            assert_eq!(bytes[0], version);
            assert_eq!(AttestationRecord::decode(&bytes).unwrap(), record);
        }
        let mut long = record.clone();
        long.terms = PaymentTerms::Paid(PaidTerms { network: "n".repeat(MAX_NETWORK + 1), ..paid(&record) });
        assert!(matches!(long.encode(), Err(CodecError::TooLong { field: "network", .. })));
    }

    fn paid(record: &AttestationRecord) -> PaidTerms {
        match &record.terms {
            PaymentTerms::Paid(t) => t.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_learns_why_a_worker_would_refuse_its_channel() {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![] });
        let fits = ClientTerms {
            network: "ton-testnet",
            deposit: 2_000_000_000,
            dispute_window: 86_400,
            contract_version: 2,
        };
        assert_eq!(record.terms.refusal(&fits), None);
        let cases = [
            (ClientTerms { network: "ton-mainnet", ..fits.clone() }, "paid on ton-testnet"),
            (ClientTerms { deposit: 999_999_999, ..fits.clone() }, "deposit of at least 1000000000"),
            (ClientTerms { dispute_window: 60, ..fits.clone() }, "dispute window of at least 3600"),
            (ClientTerms { contract_version: 1, ..fits.clone() }, "contract version 2"),
        ];
        for (client, why) in cases {
            let refusal = record.terms.refusal(&client).unwrap();
            assert!(refusal.contains(why), "{refusal}");
        }
        assert_eq!(PaymentTerms::Free.refusal(&fits), None);
        let unnamed = ClientTerms { network: "", ..fits.clone() };
        assert_eq!(record.terms.refusal(&unnamed), None, "an unnamed client network matches any");
        assert_eq!(PaymentTerms::Unstated.refusal(&fits), None);
    }

    fn gpus() -> Vec<GpuEvidence> {
        vec![
            GpuEvidence::Nvidia(Box::new(NvidiaGpuEvidence {
                architecture: GpuArchitecture::Hopper,
                report: vec![5; 4000],
                chain: vec![vec![1; 900], vec![2; 800]],
            })),
            GpuEvidence::Simulated(Box::new(SimulatedGpuEvidence {
                architecture: GpuArchitecture::Blackwell,
                device: [1; 32],
                nonce: [2; 32],
                signer: [3; 32],
                signature: [4; 64],
            })),
            GpuEvidence::Unattested { name: "NVIDIA L40S".into() },
        ]
    }

    #[test]
    fn version_3_carries_sev_snp_and_gpus_and_older_records_keep_their_version() {
        let snp = TeeEvidence::SevSnp(Box::new(SnpEvidence { report: vec![9; 1184], vcek: vec![8; 1300] }));
        let mut record = sample(PeerId::random(), snp);
        for terms in [PaymentTerms::Unstated, PaymentTerms::Free, record.terms.clone()] {
            record.terms = terms;
            let bytes = record.encode().unwrap();
            assert_eq!(bytes[0], RECORD_VERSION_3);
            assert_eq!(AttestationRecord::decode(&bytes).unwrap(), record);
        }
        let mut tdx = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![3; 100] });
        tdx.gpus = gpus();
        let bytes = tdx.encode().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION_3);
        assert_eq!(AttestationRecord::decode(&bytes).unwrap(), tdx);
        // Without GPUs or SEV-SNP the record is what version 2 wrote, byte for byte.
        tdx.gpus.clear();
        let v2 = tdx.encode().unwrap();
        assert_eq!(v2[0], RECORD_VERSION);
        assert_eq!(bytes.len(), v2.len() + gpu_list_len(&gpus()), "only the version and the list differ");
        assert_eq!(AttestationRecord::decode(&v2).unwrap(), tdx);
    }

    fn gpu_list_len(gpus: &[GpuEvidence]) -> usize {
        let mut w = Writer::new();
        GpuEvidence::encode_list(gpus, &mut w).unwrap();
        w.finish().len()
    }

    #[test]
    fn a_record_in_a_higher_version_than_it_needs_is_refused() {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![3; 10] });
        let mut bytes = record.encode().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        // The same record in version 3 form: version byte, and an empty GPU list before the times.
        bytes[0] = RECORD_VERSION_3;
        bytes.insert(bytes.len() - 16, 0);
        assert!(matches!(
            AttestationRecord::decode(&bytes),
            Err(CodecError::Invalid { field: "record version", .. })
        ));
        // SEV-SNP evidence and GPU kinds do not exist in version 2.
        let mut snp = sample(
            PeerId::random(),
            TeeEvidence::SevSnp(Box::new(SnpEvidence { report: vec![1; 8], vcek: vec![] })),
        );
        snp.terms = PaymentTerms::Free;
        let mut v3 = snp.encode().unwrap();
        v3[0] = RECORD_VERSION;
        assert!(AttestationRecord::decode(&v3).is_err());
    }

    #[test]
    fn gpu_lists_are_bounded() {
        let mut record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![3; 10] });
        record.gpus = vec![GpuEvidence::Unattested { name: "g".into() }; MAX_GPUS + 1];
        assert!(matches!(record.encode(), Err(CodecError::TooLong { field: "GPUs", .. })));
        record.gpus = vec![GpuEvidence::Nvidia(Box::new(NvidiaGpuEvidence {
            architecture: GpuArchitecture::Hopper,
            report: vec![1; 10],
            chain: vec![],
        }))];
        assert!(record.encode().is_err(), "a GPU without certificates");
        record.gpus = gpus();
        let bytes = record.encode().unwrap();
        for cut in [bytes.len() - 17, bytes.len() - 200, bytes.len() - 3000] {
            assert!(AttestationRecord::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn rejects_non_canonical_and_oversized_input() {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![1; 10] });
        let bytes = record.encode().unwrap();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(AttestationRecord::decode(&trailing), Err(CodecError::Trailing(1)));
        let mut version = bytes.clone();
        version[0] = 4;
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
