//! The attestation record a worker publishes, and its canonical encoding (version 2; version 1,
//! without payment terms, is still read and written for records that state none).
//!
//! ```text
//! u8       version = 2 (1: no terms field)
//! bytes    peer id (libp2p multihash bytes, ≤ 64)
//! [32]     X25519 Noise static public key
//! str      TON payout address (≤ 128)
//! u8       payment terms (version 2 only): 0 = free (no channel accepted), 1 = paid, then
//!            str network (≤ 32), u64 minimum deposit (nanotons), u32 minimum dispute window
//!            (seconds), u8 contract version
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

/// Encoding version written by this implementation for records that state payment terms.
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

    fn encode(&self, w: &mut Writer) -> Result<(), CodecError> {
        match self {
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

    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.u8("payment terms")? {
            0 => Self::Free,
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
    /// What it accepts as payment.
    pub terms: PaymentTerms,
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
        let version = if self.terms == PaymentTerms::Unstated { RECORD_VERSION_1 } else { RECORD_VERSION };
        w.u8(version).bytes(&peer).fixed(&self.noise_static).str(&self.payout_address);
        self.terms.encode(&mut w)?;
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
        if version != RECORD_VERSION && version != RECORD_VERSION_1 {
            return Err(CodecError::Unknown { field: "record version", value: version.into() });
        }
        let peer_id = PeerId::from_bytes(r.bytes("peer id", MAX_PEER_ID)?)
            .map_err(|e| CodecError::Invalid { field: "peer id", reason: e.to_string() })?;
        let noise_static = r.array("noise key")?;
        let payout_address = r.str("payout address", MAX_PAYOUT_ADDRESS)?.to_owned();
        let terms =
            if version == RECORD_VERSION { PaymentTerms::decode(&mut r)? } else { PaymentTerms::Unstated };
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
        Ok(Self { peer_id, noise_static, payout_address, terms, offers, evidence, issued_at, expires_at })
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

    #[test]
    fn rejects_non_canonical_and_oversized_input() {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![1; 10] });
        let bytes = record.encode().unwrap();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(AttestationRecord::decode(&trailing), Err(CodecError::Trailing(1)));
        let mut version = bytes.clone();
        version[0] = 3;
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
