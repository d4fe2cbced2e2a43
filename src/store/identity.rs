//! The node's long-term libp2p identity (ed25519), created once and reused.
//!
//! Kept in `<data-dir>/identity.key` as libp2p's protobuf key encoding, readable by its owner only.
//! The file is written to a temporary name and renamed, so a crash never leaves half a key.

use std::path::Path;

use libp2p::identity::Keypair;

use super::StoreError;

/// File name of the identity key inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Load the identity from `data_dir`, or create and persist a new one.
pub fn load_or_create_identity(data_dir: &Path) -> Result<Keypair, StoreError> {
    let bytes = super::keys::load_or_create(data_dir, IDENTITY_FILE, || {
        Keypair::generate_ed25519().to_protobuf_encoding().map_err(|e| e.to_string())
    })?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| StoreError::BadIdentity { path: data_dir.join(IDENTITY_FILE), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"not a key").unwrap();
        let err = load_or_create_identity(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::BadIdentity { .. }), "{err:?}");
    }
}
