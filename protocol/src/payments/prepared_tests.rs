//! [`PreparedKey`] against `ed25519-dalek`'s own verification (through libp2p's key type, what
//! the worker used before): the same answer on valid signatures, damaged ones, non-canonical
//! scalars, keys that are no point, and keys and nonces with small-order components, where a
//! cofactored check would differ.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use libp2p_identity::ed25519;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha512};

use super::*;

/// What the worker checked before: `ed25519-dalek`'s `verify`.
fn reference(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519::PublicKey::try_from_bytes(key).is_ok_and(|k| k.verify(message, signature))
}

fn prepared(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    PreparedKey::new(key).is_some_and(|k| k.verify(message, signature))
}

/// The eight points of small order, as multiples of one of order eight.
fn torsion() -> Vec<EdwardsPoint> {
    let bytes: [u8; 32] = hex::decode("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
        .unwrap()
        .try_into()
        .unwrap();
    let t = CompressedEdwardsY(bytes).decompress().unwrap();
    assert!(t.is_small_order());
    assert_ne!(t * Scalar::from(4u64), EdwardsPoint::default(), "of order eight");
    (0..8u64).map(|i| t * Scalar::from(i)).collect()
}

fn scalar(rng: &mut impl RngCore) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Sign `message` with secret scalar `a` for the key `key` (whatever point it encodes) and the
/// nonce point `nonce`, as a signer that adds small-order components would.
fn raw_sign(a: &Scalar, key: &[u8; 32], r: &Scalar, nonce: &EdwardsPoint, message: &[u8]) -> [u8; 64] {
    let r_bytes = nonce.compress().to_bytes();
    let k = Scalar::from_bytes_mod_order_wide(
        &Sha512::new().chain_update(r_bytes).chain_update(key).chain_update(message).finalize().into(),
    );
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

#[test]
fn agrees_on_valid_and_damaged_signatures() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..64 {
        let key = ed25519::Keypair::generate();
        let public = key.public().to_bytes();
        let message: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.r#gen()).collect();
        let sig: [u8; 64] = key.sign(&message).try_into().unwrap();
        assert!(prepared(&public, &message, &sig) && reference(&public, &message, &sig));
        for _ in 0..8 {
            let mut bad = sig;
            bad[rng.gen_range(0..64)] ^= 1 << rng.gen_range(0..8);
            assert_eq!(prepared(&public, &message, &bad), reference(&public, &message, &bad));
            assert!(!prepared(&public, &message, &bad));
            let mut other = message.clone();
            other.push(rng.r#gen());
            assert!(!prepared(&public, &other, &sig) && !reference(&public, &other, &sig));
        }
        // s + ℓ names the same scalar, but not canonically: both refuse it.
        let s = Scalar::from_canonical_bytes(sig[32..].try_into().unwrap()).unwrap();
        let mut wide = [0u8; 32];
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l: [u8; 32] = hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .unwrap()
            .try_into()
            .unwrap();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(s.as_bytes()[i]) + u16::from(l[i]) + carry;
            wide[i] = sum as u8;
            carry = sum >> 8;
        }
        let mut malleable = sig;
        malleable[32..].copy_from_slice(&wide);
        assert!(!prepared(&public, &message, &malleable) && !reference(&public, &message, &malleable));
    }
}

/// Keys and nonces with small-order components: each side computes the same point, so they
/// accept exactly the same signatures (some are accepted: those whose torsion cancels).
#[test]
fn agrees_where_small_order_components_are_involved() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let torsion = torsion();
    let (mut accepted, mut cases) = (0, 0);
    for t_key in &torsion {
        for t_nonce in &torsion {
            for _ in 0..4 {
                let a = scalar(&mut rng);
                let key = (EdwardsPoint::mul_base(&a) + t_key).compress().to_bytes();
                let r = scalar(&mut rng);
                let nonce = EdwardsPoint::mul_base(&r) + t_nonce;
                let message: [u8; 32] = rng.r#gen();
                let sig = raw_sign(&a, &key, &r, &nonce, &message);
                let (ours, theirs) = (prepared(&key, &message, &sig), reference(&key, &message, &sig));
                assert_eq!(ours, theirs, "key torsion {t_key:?}, nonce torsion {t_nonce:?}");
                accepted += usize::from(ours);
                cases += 1;
            }
        }
        // A key of small order alone, with an arbitrary nonce of small order and s = 0.
        let key = t_key.compress().to_bytes();
        for t_nonce in &torsion {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&t_nonce.compress().to_bytes());
            let message: [u8; 16] = rng.r#gen();
            assert_eq!(prepared(&key, &message, &sig), reference(&key, &message, &sig));
        }
    }
    assert!(accepted > 0 && accepted < cases, "{accepted} of {cases}");
}

#[test]
fn keys_that_are_no_point_verify_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut refused = 0;
    while refused < 16 {
        let key: [u8; 32] = rng.r#gen();
        if CompressedEdwardsY(key).decompress().is_none() {
            assert!(PreparedKey::new(&key).is_none());
            assert!(ed25519::PublicKey::try_from_bytes(&key).is_err());
            refused += 1;
        }
    }
}
