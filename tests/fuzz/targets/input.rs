//! Helpers the fuzz targets share: a cursor that splits fuzzer bytes into fields (running out
//! reads as zeros, so every input means something), fixed keys, and base64 for BOC bodies.

use libp2p::identity::{Keypair, ed25519};

/// Reads fields off the fuzzer's bytes.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    /// One byte (0 once the input is used up).
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// Big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    /// A piece with a one-byte length prefix.
    pub fn piece(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// A fixed ed25519 identity: `index` picks one of a few, the same in every run (seeds signed with
/// them stay valid).
pub fn identity(index: u8) -> Keypair {
    let secret = ed25519::SecretKey::try_from_bytes([index.wrapping_add(1); 32]).expect("32-byte secret");
    Keypair::from(ed25519::Keypair::from(secret))
}

/// The ed25519 key pair behind [`identity`].
pub fn ed25519_key(index: u8) -> ed25519::Keypair {
    identity(index).try_into_ed25519().expect("an ed25519 identity")
}

/// Standard base64 with padding (what `Boc::decode_base64` reads).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(if i <= chunk.len() { char::from(ALPHABET[sextet as usize]) } else { '=' });
        }
    }
    out
}
