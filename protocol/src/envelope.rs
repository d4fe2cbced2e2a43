//! A signed envelope: a libp2p public key, a body, and that key's signature over a domain tag
//! followed by the body. Attestation records and inference receipts both travel in one.
//!
//! ```text
//! bytes  libp2p public key (protobuf encoding, ≤ 128)
//! bytes  body (≤ the caller's maximum)
//! bytes  signature over DOMAIN ‖ body (≤ 128)
//! ```
//!
//! Opening checks the signature; what the body means and whether the signer is the right one is
//! the caller's business.

use libp2p_identity::{Keypair, PeerId, PublicKey};

use crate::codec::{CodecError, Reader, Writer};

const MAX_PUBLIC_KEY: usize = 128;
const MAX_SIGNATURE: usize = 128;

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Malformed bytes.
    #[error("malformed envelope: {0}")]
    Codec(#[from] CodecError),
    /// The signature does not verify.
    #[error("signature is invalid")]
    BadSignature,
    /// The key refused to sign.
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// A body signed by a libp2p identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    public_key: PublicKey,
    body: Vec<u8>,
    signature: Vec<u8>,
}

impl Envelope {
    /// Sign `body` under `domain` with `key`.
    pub fn seal(domain: &[u8], body: Vec<u8>, key: &Keypair) -> Result<Self, EnvelopeError> {
        let signature =
            key.sign(&signing_input(domain, &body)).map_err(|e| EnvelopeError::Signing(e.to_string()))?;
        Ok(Self { public_key: key.public(), body, signature })
    }

    /// Decode an envelope whose body is at most `max_body` bytes and check its signature.
    pub fn open(domain: &[u8], bytes: &[u8], max_body: usize) -> Result<Self, EnvelopeError> {
        let mut r = Reader::new(bytes);
        let key_bytes = r.bytes("public key", MAX_PUBLIC_KEY)?;
        let body = r.bytes("body", max_body)?.to_vec();
        let signature = r.bytes("signature", MAX_SIGNATURE)?.to_vec();
        r.finish()?;
        let public_key = PublicKey::try_decode_protobuf(key_bytes)
            .map_err(|e| CodecError::Invalid { field: "public key", reason: e.to_string() })?;
        // Protobuf has many encodings of one key (unknown fields, repeated fields) and the
        // signature does not cover them: only the key's own encoding is accepted, so one signed
        // body has one envelope (gossip ids and record hashes are over the bytes).
        if public_key.encode_protobuf() != key_bytes {
            return Err(CodecError::Invalid {
                field: "public key",
                reason: "not its canonical encoding".into(),
            }
            .into());
        }
        if !public_key.verify(&signing_input(domain, &body), &signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Self { public_key, body, signature })
    }

    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.public_key.encode_protobuf()).bytes(&self.body).bytes(&self.signature);
        w.finish()
    }

    /// The signed body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The peer id of the signing key.
    pub fn signer(&self) -> PeerId {
        self.public_key.to_peer_id()
    }
}

/// What is signed: `domain ‖ body`.
pub fn signing_input(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + body.len());
    input.extend_from_slice(domain);
    input.extend_from_slice(body);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_domain_separation() {
        let key = Keypair::generate_ed25519();
        let sealed = Envelope::seal(b"a\0", b"body".to_vec(), &key).unwrap();
        let opened = Envelope::open(b"a\0", &sealed.encode(), 16).unwrap();
        assert_eq!(opened, sealed);
        assert_eq!(opened.signer(), key.public().to_peer_id());
        assert_eq!(Envelope::open(b"b\0", &sealed.encode(), 16), Err(EnvelopeError::BadSignature));
        assert!(matches!(Envelope::open(b"a\0", &sealed.encode(), 3), Err(EnvelopeError::Codec(_))));
    }

    #[test]
    fn a_key_in_another_protobuf_encoding_is_refused() {
        let key = Keypair::generate_ed25519();
        let sealed = Envelope::seal(b"a\0", b"body".to_vec(), &key).unwrap();
        // The same key with an unknown field (5, varint 0) appended: the signature still verifies.
        let mut padded = key.public().encode_protobuf();
        padded.extend_from_slice(&[0x28, 0x00]);
        let mut w = Writer::new();
        w.bytes(&padded).bytes(sealed.body()).bytes(&sealed.signature);
        let opened = Envelope::open(b"a\0", &w.finish(), 16);
        assert!(matches!(opened, Err(EnvelopeError::Codec(CodecError::Invalid { field: "public key", .. }))));
    }
}
