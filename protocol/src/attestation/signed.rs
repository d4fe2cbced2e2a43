//! The signed envelope around an [`AttestationRecord`].
//!
//! ```text
//! bytes  libp2p public key (protobuf encoding, ≤ 128)
//! bytes  record (canonical encoding, ≤ 96 KiB: a TDX quote and eight GPUs fit)
//! bytes  signature over RECORD_DOMAIN ‖ record bytes (≤ 128)
//! ```
//!
//! Opening an envelope checks that the key signed the record bytes and that the key is the one
//! the record's peer id names. It says nothing about the TEE evidence: that is `policy`'s job.

use libp2p_identity::Keypair;
use sha2::{Digest, Sha256};

use super::record::AttestationRecord;
use crate::codec::CodecError;
use crate::envelope::{Envelope, EnvelopeError};

/// Domain tag of record signatures, so they can never be confused with other signed data.
pub const RECORD_DOMAIN: &[u8] = b"cocoon/attestation-record/v1\0";
const MAX_RECORD: usize = 96 * 1024;

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

impl From<EnvelopeError> for RecordError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Codec(c) => Self::Codec(c),
            EnvelopeError::BadSignature => Self::BadSignature,
            EnvelopeError::Signing(s) => Self::Signing(s),
        }
    }
}

/// A record with its signature, as gossiped and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    record: AttestationRecord,
    envelope: Envelope,
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
        let envelope = Envelope::seal(RECORD_DOMAIN, record.encode()?, key)?;
        Ok(Self { record, envelope })
    }

    /// Decode an envelope and check its signature and signer.
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        let envelope = Envelope::open(RECORD_DOMAIN, bytes, MAX_RECORD)?;
        let record = AttestationRecord::decode(envelope.body())?;
        let signer = envelope.signer();
        if signer != record.peer_id {
            return Err(RecordError::WrongSigner {
                record: record.peer_id.to_string(),
                signer: signer.to_string(),
            });
        }
        Ok(Self { record, envelope })
    }

    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.envelope.encode()
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
        let forged = Envelope::seal(RECORD_DOMAIN, record_bytes, &thief).unwrap();
        assert!(matches!(SignedRecord::open(&forged.encode()), Err(RecordError::WrongSigner { .. })));
    }
}
