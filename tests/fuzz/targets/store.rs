//! Targets for the store's record codecs (what a node reads back from its own sled trees, which
//! a crash, a bug or an older version may have left in any state): decode, encode again, and
//! the result must decode to the same value.

use cocoon::attestation::tdx::collateral_window;
use cocoon::fuzzing;

use super::input::Input;

/// The payment trees. First byte: 0 `pay-channels/v1`, 1 `pay-client/v1`, 2 `pay-journal/v1`,
/// 3 `pay-debts/v1` (32 bytes of key, then the value); the rest is the value.
pub fn store_payments(data: &[u8]) {
    let mut input = Input(data);
    match input.u8() % 4 {
        0 => {
            if let Ok(c) = fuzzing::store_decode_channel(input.rest()) {
                let bytes = fuzzing::store_encode_channel(&c);
                assert_eq!(fuzzing::store_decode_channel(&bytes).ok(), Some(c), "channel record round trip");
            }
        }
        1 => {
            if let Ok(c) = fuzzing::store_decode_client(input.rest()) {
                let bytes = fuzzing::store_encode_client(&c);
                assert_eq!(fuzzing::store_decode_client(&bytes).ok(), Some(c), "client channel round trip");
            }
        }
        2 => {
            let value = input.rest();
            if let Ok(e) = fuzzing::store_decode_claim(value) {
                assert_eq!(fuzzing::store_encode_claim(&e), value, "claim journal entry round trip");
            }
        }
        _ => {
            let key = input.take(32);
            let value = input.rest();
            if let Ok((client, owed)) = fuzzing::store_decode_debt(key, value) {
                assert_eq!((&client[..], &owed.to_be_bytes()[..]), (key, value));
            }
        }
    }
}

/// The node's caches. First byte: 0 `peers/v1` (a one-byte-prefixed key, then the value),
/// 1 `collateral/v1`, 2 `models/v1` (16 bytes naming the file's size and modification time,
/// then the value).
pub fn store_caches(data: &[u8]) {
    let mut input = Input(data);
    match input.u8() % 3 {
        0 => {
            let key = input.piece();
            if let Some(peer) = fuzzing::store_decode_peer(key, input.rest()) {
                let bytes = fuzzing::store_encode_peer(&peer).expect("encoding a peer");
                assert_eq!(fuzzing::store_decode_peer(key, &bytes), Some(peer), "peer book entry round trip");
            }
        }
        1 => {
            if let Some((collateral, until)) = fuzzing::store_decode_collateral(input.rest()) {
                let _ = collateral_window(&collateral);
                let bytes =
                    fuzzing::store_encode_collateral(&collateral, until).expect("encoding collateral");
                assert_eq!(fuzzing::store_decode_collateral(&bytes), Some((collateral, until)));
            }
        }
        _ => {
            let size = u64::from_be_bytes(input.take(8).try_into().unwrap_or_default());
            let mtime = u64::from_be_bytes(input.take(8).try_into().unwrap_or_default());
            let value = input.rest();
            if let Some(hash) = fuzzing::store_decode_model(value, size, mtime) {
                assert_eq!(fuzzing::store_encode_model(size, mtime, &hash), value, "model hash round trip");
            }
        }
    }
}
