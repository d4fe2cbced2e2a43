//! The worker's signed receipt (invoice) for one request: which request and response it covers
//! (hashes), the usage, the prices of its attested offer and the amount due. Signed with the
//! worker's libp2p identity key, the key its attestation record is signed with and whose peer id
//! the client dialled, so a client can prove what it was charged and by whom.

use libp2p_identity::{Keypair, PeerId};
use sha2::{Digest, Sha256};

use crate::codec::{CodecError, Reader, Writer};
use crate::envelope::{Envelope, EnvelopeError};

/// Domain tag of receipt signatures.
pub const RECEIPT_DOMAIN: &[u8] = b"cocoon/inference-receipt/v1\0";
const MAX_RECEIPT: usize = 2048;
const MAX_ENGINE: usize = 64;

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Tokens of the (templated) prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// What one request cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The worker.
    pub worker: PeerId,
    /// The model that ran.
    pub model_id: String,
    /// The engine that ran it (`mistral.rs …`, or `STAND-IN …` for simnet's labelled engine).
    pub engine: String,
    /// The client's request id.
    pub request_id: [u8; 16],
    /// SHA-256 of the request frame.
    pub request_hash: [u8; 32],
    /// The answer's hash: SHA-256 over its events' encodings in order
    /// ([`super::answer::AnswerDigest`]: text, tool calls, log-probabilities).
    pub response_hash: [u8; 32],
    /// Token counts.
    pub usage: Usage,
    /// Price per 1,000 prompt tokens, nanotons (from the worker's attested offer).
    pub price_prompt_per_1k: u64,
    /// Price per 1,000 completion tokens, nanotons.
    pub price_completion_per_1k: u64,
    /// Amount due, nanotons ([`super::pricing::amount_due`]).
    pub amount: u64,
    /// Unix seconds.
    pub issued_at: u64,
}

/// Why a receipt is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Bad bytes or signature.
    #[error("receipt: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Bad body.
    #[error("receipt: {0}")]
    Codec(#[from] CodecError),
    /// Signed by someone other than the worker it names.
    #[error("receipt names worker {named} but is signed by {signer}")]
    WrongSigner {
        /// Worker in the receipt.
        named: String,
        /// Signer.
        signer: String,
    },
}

impl Receipt {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1)
            .bytes(&self.worker.to_bytes())
            .str(&self.model_id)
            .str(&self.engine)
            .fixed(&self.request_id)
            .fixed(&self.request_hash)
            .fixed(&self.response_hash)
            .u32(self.usage.prompt_tokens)
            .u32(self.usage.completion_tokens)
            .u64(self.price_prompt_per_1k)
            .u64(self.price_completion_per_1k)
            .u64(self.amount)
            .u64(self.issued_at);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("receipt version")?;
        if version != 1 {
            return Err(CodecError::Unknown { field: "receipt version", value: version.into() });
        }
        let worker = PeerId::from_bytes(r.bytes("worker", 64)?)
            .map_err(|e| CodecError::Invalid { field: "worker", reason: e.to_string() })?;
        let receipt = Self {
            worker,
            model_id: r.str("model id", super::messages::MAX_MODEL_ID)?.to_owned(),
            engine: r.str("engine", MAX_ENGINE)?.to_owned(),
            request_id: r.array("request id")?,
            request_hash: r.array("request hash")?,
            response_hash: r.array("response hash")?,
            usage: Usage {
                prompt_tokens: r.u32("prompt tokens")?,
                completion_tokens: r.u32("completion tokens")?,
            },
            price_prompt_per_1k: r.u64("prompt price")?,
            price_completion_per_1k: r.u64("completion price")?,
            amount: r.u64("amount")?,
            issued_at: r.u64("issued at")?,
        };
        r.finish()?;
        Ok(receipt)
    }

    /// Sign with the worker's identity key; returns the envelope bytes.
    pub fn sign(&self, key: &Keypair) -> Result<Vec<u8>, ReceiptError> {
        Ok(Envelope::seal(RECEIPT_DOMAIN, self.encode(), key)?.encode())
    }

    /// Open a signed receipt: signature valid and made by the worker it names.
    pub fn open(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let envelope = Envelope::open(RECEIPT_DOMAIN, bytes, MAX_RECEIPT)?;
        let receipt = Self::decode(envelope.body())?;
        if envelope.signer() != receipt.worker {
            return Err(ReceiptError::WrongSigner {
                named: receipt.worker.to_string(),
                signer: envelope.signer().to_string(),
            });
        }
        Ok(receipt)
    }
}

/// SHA-256 of `bytes` (request frames and response text).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(worker: PeerId) -> Receipt {
        Receipt {
            worker,
            model_id: "m@sha256:aa".into(),
            engine: "mistral.rs 0.8.1".into(),
            request_id: [1; 16],
            request_hash: [2; 32],
            response_hash: [3; 32],
            usage: Usage { prompt_tokens: 10, completion_tokens: 20 },
            price_prompt_per_1k: 1000,
            price_completion_per_1k: 2000,
            amount: 50,
            issued_at: 1_800_000_000,
        }
    }

    #[test]
    fn signed_receipts_open_and_tampering_is_detected() {
        let key = Keypair::generate_ed25519();
        let r = receipt(key.public().to_peer_id());
        let bytes = r.sign(&key).unwrap();
        assert_eq!(Receipt::open(&bytes).unwrap(), r);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 1;
            assert!(Receipt::open(&t).is_err(), "flipped byte {i} unnoticed");
        }
        // Signed by a key other than the named worker's.
        let other = Keypair::generate_ed25519();
        assert!(matches!(Receipt::open(&r.sign(&other).unwrap()), Err(ReceiptError::WrongSigner { .. })));
    }
}
