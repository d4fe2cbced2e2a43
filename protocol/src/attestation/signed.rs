//! The signed envelope around an [`AttestationRecord`].
//!
//! ```text
//! bytes  libp2p public key (protobuf encoding, ≤ 128)
//! bytes  record (canonical encoding, ≤ 24 KiB)
//! bytes  signature over RECORD_DOMAIN ‖ record bytes (≤ 128)
//! ```
//!
//! Opening an envelope checks that the key signed the record bytes and that the key is the one
//! the record's peer id names. It says nothing about the TEE evidence: that is `policy`'s job.

use libp2p_identity::{Keypair, PublicKey};
use sha2::{Digest, Sha256};

use super::record::AttestationRecord;
use crate::codec::{CodecError, Reader, Writer};

/// Domain tag of record signatures, so they can never be confused with other signed data.
pub const RECORD_DOMAIN: &[u8] = b"cocoon/attestation-record/v1\0";
const MAX_PUBLIC_KEY: usize = 128;
const MAX_RECORD: usize = 24 * 1024;
const MAX_SIGNATURE: usize = 128;

/// Why a record could not be signed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Malformed bytes.
    #[error("malformed record: {0}")]
    Codec(#[from] CodecError),
    /// The signing key is not the key of the record's peer id.
    #[error("record names peer {record} but is signed by {signer}")]
    WrongSigner {
        /// Peer id in the record.
        record: String,
        /// Peer id of the signing key.
        signer: String,
    },
    /// The signature does not verify.
    #[error("record signature is invalid")]
    BadSignature,
    /// The key refused to sign.
    #[error("cannot sign record: {0}")]
    Signing(String),
}

/// A record with its signature, as gossiped and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    record: AttestationRecord,
    public_key: PublicKey,
    record_bytes: Vec<u8>,
    signature: Vec<u8>,
}

impl SignedRecord {
    /// Sign `record` with the identity key of its peer id.
    pub fn sign(record: AttestationRecord, key: &Keypair) -> Result<Self, RecordError> {
        let signer = key.public().to_peer_id();
        if signer != record.peer_id {
            return Err(RecordError::WrongSigner {
                record: record.peer_id.to_string(),
                signer: signer.to_string(),
            });
        }
        let record_bytes = record.encode()?;
        let signature =
            key.sign(&signing_input(&record_bytes)).map_err(|e| RecordError::Signing(e.to_string()))?;
        Ok(Self { record, public_key: key.public(), record_bytes, signature })
    }

    /// Decode an envelope and check its signature and signer.
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        let key_bytes = r.bytes("public key", MAX_PUBLIC_KEY)?;
        let record_bytes = r.bytes("record", MAX_RECORD)?.to_vec();
        let signature = r.bytes("signature", MAX_SIGNATURE)?.to_vec();
        r.finish()?;
        let public_key = PublicKey::try_decode_protobuf(key_bytes)
            .map_err(|e| CodecError::Invalid { field: "public key", reason: e.to_string() })?;
        let record = AttestationRecord::decode(&record_bytes)?;
        let signer = public_key.to_peer_id();
        if signer != record.peer_id {
            return Err(RecordError::WrongSigner {
                record: record.peer_id.to_string(),
                signer: signer.to_string(),
            });
        }
        if !public_key.verify(&signing_input(&record_bytes), &signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(Self { record, public_key, record_bytes, signature })
    }

    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.public_key.encode_protobuf()).bytes(&self.record_bytes).bytes(&self.signature);
        w.finish()
    }

    /// The record inside.
    pub fn record(&self) -> &AttestationRecord {
        &self.record
    }

    /// SHA-256 of the envelope: identifies this exact record (cache key, dedup).
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }
}

fn signing_input(record_bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(RECORD_DOMAIN.len() + record_bytes.len());
    input.extend_from_slice(RECORD_DOMAIN);
    input.extend_from_slice(record_bytes);
    input
}

#[cfg(test)]
mod tests {
    use super::super::record::TeeEvidence;
    use super::super::record::tests::sample;
    use super::*;

    #[test]
    fn sign_open_round_trip() {
        let key = Keypair::generate_ed25519();
        let signed = SignedRecord::sign(
            sample(key.public().to_peer_id(), TeeEvidence::Tdx { quote: vec![1; 64] }),
            &key,
        )
        .unwrap();
        let opened = SignedRecord::open(&signed.encode()).unwrap();
        assert_eq!(opened, signed);
        assert_eq!(opened.hash(), signed.hash());
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let key = Keypair::generate_ed25519();
        let signed = SignedRecord::sign(
            sample(key.public().to_peer_id(), TeeEvidence::Tdx { quote: vec![1; 64] }),
            &key,
        )
        .unwrap();
        let bytes = signed.encode();
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            assert!(SignedRecord::open(&tampered).is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn record_resigned_by_another_identity_is_rejected() {
        let owner = Keypair::generate_ed25519();
        let thief = Keypair::generate_ed25519();
        let record = sample(owner.public().to_peer_id(), TeeEvidence::Tdx { quote: vec![1; 64] });
        assert!(matches!(SignedRecord::sign(record.clone(), &thief), Err(RecordError::WrongSigner { .. })));
        // Build the forged envelope by hand: the thief's key and signature around the owner's record.
        let record_bytes = record.encode().unwrap();
        let mut w = Writer::new();
        w.bytes(&thief.public().encode_protobuf())
            .bytes(&record_bytes)
            .bytes(&thief.sign(&signing_input(&record_bytes)).unwrap());
        assert!(matches!(SignedRecord::open(&w.finish()), Err(RecordError::WrongSigner { .. })));
    }
}
