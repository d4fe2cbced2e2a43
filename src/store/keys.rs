//! Long-term secret keys kept as files in the data directory, readable by their owner only.
//!
//! | file | key |
//! |---|---|
//! | `identity.key` | libp2p ed25519 identity (protobuf encoding) — see `identity.rs` |
//! | `noise.key` | X25519 static key for end-to-end Noise sessions: 32 private ‖ 32 public bytes |
//! | `simulator.key` | ed25519 secret of the SIMULATED TEE (development only): 32 bytes |
//!
//! Files are written to a temporary name, synced and renamed, so a crash never leaves half a key.

use std::io::Write;
use std::path::Path;

use libp2p::identity::ed25519;

use super::StoreError;

/// File of the Noise static key.
pub const NOISE_KEY_FILE: &str = "noise.key";
/// File of the simulated-TEE signing key.
pub const SIMULATOR_KEY_FILE: &str = "simulator.key";
/// The Noise pattern whose static keys these are.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// An X25519 static key pair for Noise.
#[derive(Clone)]
pub struct NoiseKey {
    /// Private scalar (keep secret).
    pub private: [u8; 32],
    /// Public key, as attested in the worker's record.
    pub public: [u8; 32],
}

impl std::fmt::Debug for NoiseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseKey").field("public", &hex::encode(self.public)).finish_non_exhaustive()
    }
}

/// Write `bytes` to `path` atomically with owner-only permissions.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Dir { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// Read `data_dir/name`, or create it with `make` (and persist it) if absent.
pub(crate) fn load_or_create(
    data_dir: &Path,
    name: &str,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, StoreError> {
    super::create_private_dir(data_dir)?;
    let path = data_dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make().map_err(|message| StoreError::BadIdentity { path: path.clone(), message })?;
            write_private_file(&path, &bytes)?;
            Ok(bytes)
        }
        Err(source) => Err(StoreError::Dir { path, source }),
    }
}

/// The node's Noise static key, created on first use.
pub fn load_or_create_noise_key(data_dir: &Path) -> Result<NoiseKey, StoreError> {
    let bytes = load_or_create(data_dir, NOISE_KEY_FILE, || {
        let params = NOISE_PARAMS.parse().map_err(|e| format!("noise params: {e:?}"))?;
        let pair = snow::Builder::new(params).generate_keypair().map_err(|e| e.to_string())?;
        Ok([pair.private, pair.public].concat())
    })?;
    let bad = || StoreError::BadIdentity {
        path: data_dir.join(NOISE_KEY_FILE),
        message: "expected 64 bytes".into(),
    };
    let (private, public) = (bytes.get(..32).ok_or_else(bad)?, bytes.get(32..64).ok_or_else(bad)?);
    if bytes.len() != 64 {
        return Err(bad());
    }
    Ok(NoiseKey {
        private: private.try_into().map_err(|_| bad())?,
        public: public.try_into().map_err(|_| bad())?,
    })
}

/// File holding the ed25519 seed of the node's TON wallet (v5r1).
pub const WALLET_KEY_FILE: &str = "wallet.key";

/// The seed of the node's TON wallet, created on first use. Whoever holds this file holds the
/// wallet's funds.
pub fn load_or_create_wallet_seed(data_dir: &Path) -> Result<[u8; 32], StoreError> {
    let bytes =
        load_or_create(data_dir, WALLET_KEY_FILE, || Ok(ed25519::SecretKey::generate().as_ref().to_vec()))?;
    bytes.as_slice().try_into().map_err(|_| StoreError::BadIdentity {
        path: data_dir.join(WALLET_KEY_FILE),
        message: "expected a 32-byte seed".into(),
    })
}

/// The SIMULATED TEE's signing key, created on first use (development only).
pub fn load_or_create_simulator_key(data_dir: &Path) -> Result<ed25519::Keypair, StoreError> {
    let mut bytes = load_or_create(data_dir, SIMULATOR_KEY_FILE, || {
        Ok(ed25519::SecretKey::generate().as_ref().to_vec())
    })?;
    let secret = ed25519::SecretKey::try_from_bytes(&mut bytes).map_err(|e| StoreError::BadIdentity {
        path: data_dir.join(SIMULATOR_KEY_FILE),
        message: e.to_string(),
    })?;
    Ok(ed25519::Keypair::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_noise_key(dir.path()).unwrap();
        let b = load_or_create_noise_key(dir.path()).unwrap();
        assert_eq!((a.private, a.public), (b.private, b.public));
        assert_ne!(a.public, [0; 32]);
        let s1 = load_or_create_simulator_key(dir.path()).unwrap();
        let s2 = load_or_create_simulator_key(dir.path()).unwrap();
        assert_eq!(s1.public(), s2.public());
        #[cfg(unix)]
        for name in [NOISE_KEY_FILE, SIMULATOR_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name} readable by others: {mode:o}");
        }
    }

    #[test]
    fn keys_in_a_data_dir_that_does_not_exist_yet_create_it_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("fresh/data");
        load_or_create_noise_key(&data).unwrap();
        load_or_create_wallet_seed(&dir.path().join("fresh/other")).unwrap();
        assert!(data.join(NOISE_KEY_FILE).is_file());
        assert!(dir.path().join("fresh/other").join(WALLET_KEY_FILE).is_file());
        #[cfg(unix)]
        for d in ["fresh", "fresh/data", "fresh/other"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{d}: {mode:o}");
        }
    }

    #[test]
    fn truncated_noise_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NOISE_KEY_FILE), [1u8; 40]).unwrap();
        assert!(matches!(load_or_create_noise_key(dir.path()), Err(StoreError::BadIdentity { .. })));
    }
}
