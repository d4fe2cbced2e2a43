//! Signed statements about a channel: the client's cumulative voucher (what a worker claims with)
//! and the close request both parties sign for a cooperative close. Each is a cell whose first 32
//! bits are a tag (domain separation) followed by the channel's own address; the signature is
//! ed25519 over the cell's representation hash, exactly what the contract checks.

use libp2p_identity::ed25519;
use tycho_types::cell::{Cell, CellBuilder, CellFamily, Store};
use tycho_types::models::StdAddr;
use tycho_types::num::Tokens;

use super::PaymentError;
use super::channel::{read_addr, write_addr};
use super::prepared::PreparedKey;
use crate::codec::{CodecError, Reader, Writer};

/// Tag of a voucher cell ("vouc").
pub const VOUCHER_TAG: u32 = 0x766f_7563;
/// Tag of a cooperative close request ("coop").
pub const CLOSE_TAG: u32 = 0x636f_6f70;

/// "The client owes the worker `cumulative` nanotons in total on `channel`."
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voucher {
    /// The channel contract's address.
    pub channel: StdAddr,
    /// Everything owed since the channel opened, nanotons.
    pub cumulative: u64,
    /// Increases with every voucher.
    pub seqno: u64,
}

fn tagged_cell(tag: u32, channel: &StdAddr, cumulative: u64, seqno: u64) -> Result<Cell, PaymentError> {
    let mut b = CellBuilder::new();
    b.store_u32(tag)?;
    channel.store_into(&mut b, Cell::empty_context())?;
    Tokens::new(cumulative.into()).store_into(&mut b, Cell::empty_context())?;
    b.store_u64(seqno)?;
    Ok(b.build()?)
}

fn sign_hash(cell: &Cell, key: &ed25519::Keypair) -> [u8; 64] {
    let sig = key.sign(cell.repr_hash().as_slice());
    let mut out = [0u8; 64];
    out.copy_from_slice(&sig);
    out
}

/// Whether `signature` is `key`'s signature over `cell`'s hash.
fn verify_hash(cell: &Cell, key: &[u8; 32], signature: &[u8; 64]) -> Result<(), PaymentError> {
    let public = ed25519::PublicKey::try_from_bytes(key).map_err(|_| PaymentError::BadSignature)?;
    if public.verify(cell.repr_hash().as_slice(), signature) {
        Ok(())
    } else {
        Err(PaymentError::BadSignature)
    }
}

impl Voucher {
    /// The cell the signature covers.
    pub fn cell(&self) -> Result<Cell, PaymentError> {
        tagged_cell(VOUCHER_TAG, &self.channel, self.cumulative, self.seqno)
    }

    /// Sign with the client's key.
    pub fn sign(self, key: &ed25519::Keypair) -> Result<SignedVoucher, PaymentError> {
        let signature = sign_hash(&self.cell()?, key);
        Ok(SignedVoucher { voucher: self, signature })
    }
}

/// A voucher with the client's signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedVoucher {
    /// What is signed.
    pub voucher: Voucher,
    /// ed25519 over the voucher cell's hash.
    pub signature: [u8; 64],
}

impl SignedVoucher {
    /// Check the signature against the channel's client key.
    pub fn verify(&self, client_key: &[u8; 32]) -> Result<(), PaymentError> {
        verify_hash(&self.voucher.cell()?, client_key, &self.signature)
    }

    /// [`Self::verify`] with the key already decoded (decoding a key is a point decompression:
    /// a worker decodes each channel's client key once, not once per voucher).
    pub fn verify_with(&self, client: &ed25519::PublicKey) -> Result<(), PaymentError> {
        if client.verify(self.voucher.cell()?.repr_hash().as_slice(), &self.signature) {
            Ok(())
        } else {
            Err(PaymentError::BadSignature)
        }
    }

    /// Canonical wire encoding.
    pub fn encode(&self, w: &mut Writer) {
        write_addr(w, &self.voucher.channel);
        w.u64(self.voucher.cumulative).u64(self.voucher.seqno).fixed(&self.signature);
    }

    /// Decode what [`Self::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            voucher: Voucher {
                channel: read_addr(r, "voucher channel")?,
                cumulative: r.u64("voucher cumulative")?,
                seqno: r.u64("voucher seqno")?,
            },
            signature: r.array("voucher signature")?,
        })
    }

    /// Encode to bytes (the store keeps vouchers in this form).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Decode bytes written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// "Close `channel` now, with `cumulative` going to the worker": signed by both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseRequest {
    /// The channel contract's address.
    pub channel: StdAddr,
    /// Total owed to the worker.
    pub cumulative: u64,
    /// At least the last claimed seqno.
    pub seqno: u64,
}

impl CloseRequest {
    /// The cell both signatures cover.
    pub fn cell(&self) -> Result<Cell, PaymentError> {
        tagged_cell(CLOSE_TAG, &self.channel, self.cumulative, self.seqno)
    }

    /// One party's signature.
    pub fn sign(&self, key: &ed25519::Keypair) -> Result<[u8; 64], PaymentError> {
        Ok(sign_hash(&self.cell()?, key))
    }

    /// Check one party's signature.
    pub fn verify(&self, key: &[u8; 32], signature: &[u8; 64]) -> Result<(), PaymentError> {
        verify_hash(&self.cell()?, key, signature)
    }
}

/// A voucher whose signature verified against a key: the costly part of taking a voucher (a hash
/// and an ed25519 verification), done before and outside whatever orders the vouchers of a
/// channel. Only [`Self::verify`] makes one, so holding one proves the check ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedVoucher {
    signed: SignedVoucher,
    key: [u8; 32],
}

impl VerifiedVoucher {
    /// Verify `signed` against `client`.
    pub fn verify(signed: SignedVoucher, client: &ed25519::PublicKey) -> Result<Self, PaymentError> {
        signed.verify_with(client)?;
        Ok(Self { signed, key: client.to_bytes() })
    }

    /// Verify `signed` against a key prepared for many vouchers (the same check, faster).
    pub fn verify_prepared(signed: SignedVoucher, client: &PreparedKey) -> Result<Self, PaymentError> {
        if client.verify(signed.voucher.cell()?.repr_hash().as_slice(), &signed.signature) {
            Ok(Self { signed, key: *client.key() })
        } else {
            Err(PaymentError::BadSignature)
        }
    }

    /// The voucher.
    pub fn signed(&self) -> &SignedVoucher {
        &self.signed
    }

    /// The key its signature verified against.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use tycho_types::cell::HashBytes;

    use super::*;

    fn voucher() -> Voucher {
        Voucher { channel: StdAddr::new(0, HashBytes([9; 32])), cumulative: 1_000, seqno: 3 }
    }

    #[test]
    fn vouchers_verify_only_against_their_key_and_content() {
        let key = ed25519::Keypair::generate();
        let other = ed25519::Keypair::generate();
        let signed = voucher().sign(&key).unwrap();
        signed.verify(&key.public().to_bytes()).unwrap();
        assert_eq!(signed.verify(&other.public().to_bytes()), Err(PaymentError::BadSignature));
        let mut raised = signed.clone();
        raised.voucher.cumulative += 1;
        assert_eq!(raised.verify(&key.public().to_bytes()), Err(PaymentError::BadSignature));
        let bytes = signed.to_bytes();
        assert_eq!(SignedVoucher::from_bytes(&bytes).unwrap(), signed);
        assert!(SignedVoucher::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_voucher_signature_is_not_a_close_signature() {
        let key = ed25519::Keypair::generate();
        let v = voucher();
        let close = CloseRequest { channel: v.channel.clone(), cumulative: v.cumulative, seqno: v.seqno };
        let signed = v.sign(&key).unwrap();
        assert_eq!(
            close.verify(&key.public().to_bytes(), &signed.signature),
            Err(PaymentError::BadSignature),
            "the tag separates the two statements"
        );
    }
}
