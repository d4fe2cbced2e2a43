//! A client key prepared for the many vouchers of one channel: ed25519 verification with the
//! lookup tables of the key (and of the base point) computed once instead of per signature.
//!
//! The check is exactly the one `ed25519-dalek`'s `verify` makes, and the one the contract's
//! `CHKSIGNU` makes: the signature's `s` must be canonical (below the group order), `k` is
//! SHA-512(R ‖ A ‖ message) reduced, and `[k](−A) + [s]B` must encode to exactly the signature's
//! `R` bytes (cofactorless; no batch equation, which would accept signatures with small-order
//! components that the chain refuses). Only the way the point is computed differs: a Straus
//! multiplication over tables of odd multiples of −A and B built once per key (a verification
//! costs about an eighth less). `tests` compares the two on valid, damaged and small-order
//! inputs.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, VartimeEdwardsPrecomputation};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimePrecomputedMultiscalarMul;
use sha2::{Digest, Sha512};

/// A client key with its verification tables (about 20 KiB: keep one per channel in use, not
/// one per channel ever seen).
pub struct PreparedKey {
    key: [u8; 32],
    tables: VartimeEdwardsPrecomputation,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey").field("key", &hex::encode(self.key)).finish_non_exhaustive()
    }
}

impl PreparedKey {
    /// Prepare `key` (the encoding of a curve point); `None` if it encodes none.
    pub fn new(key: &[u8; 32]) -> Option<Self> {
        let point = CompressedEdwardsY(*key).decompress()?;
        let tables = VartimeEdwardsPrecomputation::new([-point, ED25519_BASEPOINT_POINT]);
        Some(Self { key: *key, tables })
    }

    /// The key's encoding.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Whether `signature` is this key's ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let (r, s) = signature.split_at(32);
        let Ok(s) = <[u8; 32]>::try_from(s) else { return false };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else { return false };
        let mut h = Sha512::new();
        h.update(r);
        h.update(self.key);
        h.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        self.tables.vartime_multiscalar_mul([k, s]).compress().as_bytes() == r
    }
}

#[cfg(test)]
#[path = "prepared_tests.rs"]
mod tests;
