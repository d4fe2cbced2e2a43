//! The node's durable state: one sled database per node in `<data-dir>/db`, plus key files
//! (`identity.key`, `noise.key`, `simulator.key`, `wallet.key`; owner-only permissions, see `keys.rs`).
//! Trees: `peers/v1` (peer book), `attestations/v1` (verified records), `collateral/v1` (TDX
//! collateral from a PCCS), `snp-vcek/v1` (SEV-SNP VCEKs from AMD's KDS), `models/v1` (model file hashes), and the payment trees (`pay-*`, see
//! `payments.rs`), and the worker's voucher log `<data-dir>/vouchers.log` (`voucher_log.rs`),
//! folded into the payment trees when the store is opened.
//!
//! sled is opened with its background flush timer off: the node decides when data is durable. It
//! flushes the peer book periodically and on shutdown, and anything that represents money is
//! flushed before it is acknowledged. Tree names carry a version (`peers/v1`) so a format change
//! is a new tree, never a silent reinterpretation.

pub(crate) mod collateral;
mod identity;
mod keys;
pub(crate) mod models;
pub(crate) mod payments;
pub(crate) mod peer_book;
mod records;
pub(crate) mod snp;
pub(crate) mod voucher_log;

use std::path::{Path, PathBuf};

pub use collateral::{COLLATERAL_TREE, CollateralCache};
pub use identity::load_or_create_identity;
pub use keys::{
    NOISE_PARAMS, NoiseKey, WALLET_KEY_FILE, load_or_create_noise_key, load_or_create_simulator_key,
    load_or_create_wallet_seed,
};
pub use models::{MODELS_TREE, ModelHashes};
pub use payments::{ClaimEntry, PaymentBook, StoredChannel, VoucherWrite};
pub use peer_book::{KnownPeer, PeerBook};
pub use records::{ATTESTATIONS_TREE, RecordCache};
pub use snp::{VCEK_TREE, VcekCache};

/// Name of the peer-book tree.
pub const PEERS_TREE: &str = "peers/v1";

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually another cocoon node) holds the database lock.
    #[error(
        "data directory {0} is locked: another cocoon process is using it (stop it or pass another --data-dir)"
    )]
    Locked(PathBuf),
    /// The data directory could not be created or used.
    #[error("cannot use data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database exists but cannot be read.
    #[error("store in {path} is corrupt or unreadable: {message}")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// sled's description.
        message: String,
    },
    /// The identity key file exists but is not a valid key.
    #[error("identity key {path} is invalid: {message}")]
    BadIdentity {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode a value for the store: {0}")]
    Encode(String),
    /// Any other database error.
    #[error("store error: {0}")]
    Db(#[from] sled::Error),
}

/// Pause between attempts to open a locked database.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(25);
/// Attempts after the first before a lock is reported (0.5 s in all).
const LOCK_RETRIES: u32 = 20;

/// Handle to the node's database. Cheap to clone; all clones share one database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
}

impl Store {
    /// Open (or create) the store in `data_dir`, creating the directory with owner-only access.
    ///
    /// sled's background writer threads hold the database's file lock for a moment after the last
    /// handle is dropped, so reopening right after a close in the same process (a node restarted
    /// in process, a test) can find it still held: a lock is retried for up to
    /// [`LOCK_RETRY`] × [`LOCK_RETRIES`] before it is reported as [`StoreError::Locked`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let db_path = data_dir.join("db");
        let mut tries = 0;
        loop {
            match sled::Config::new().path(&db_path).flush_every_ms(None).open() {
                Ok(db) => {
                    let store = Self { db, dir: data_dir.to_owned() };
                    voucher_log::recover(&store)?;
                    return Ok(store);
                }
                Err(e) => match classify_open_error(data_dir, e) {
                    StoreError::Locked(_) if tries < LOCK_RETRIES => {
                        tries += 1;
                        std::thread::sleep(LOCK_RETRY);
                    }
                    other => return Err(other),
                },
            }
        }
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The peer book (known peers and their addresses).
    pub fn peer_book(&self) -> Result<PeerBook, StoreError> {
        Ok(PeerBook::new(self.db.open_tree(PEERS_TREE)?))
    }

    /// Verified attestation records.
    pub fn record_cache(&self) -> Result<RecordCache, StoreError> {
        Ok(RecordCache::new(self.db.open_tree(ATTESTATIONS_TREE)?))
    }

    /// Hashes of model files.
    pub fn model_hashes(&self) -> Result<ModelHashes, StoreError> {
        Ok(ModelHashes::new(self.db.open_tree(MODELS_TREE)?))
    }

    /// TDX collateral fetched from a PCCS.
    pub fn collateral_cache(&self) -> Result<CollateralCache, StoreError> {
        Ok(CollateralCache::new(self.db.open_tree(COLLATERAL_TREE)?))
    }

    /// SEV-SNP VCEKs fetched from AMD's KDS.
    pub fn vcek_cache(&self) -> Result<VcekCache, StoreError> {
        Ok(VcekCache::new(self.db.open_tree(VCEK_TREE)?))
    }

    /// Payment channels, vouchers, debts and the settlement journal.
    pub fn payments(&self) -> Result<PaymentBook, StoreError> {
        PaymentBook::new(self.db.clone(), self.dir.clone())
    }

    /// Write everything to disk; returns once it is durable.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }
}

fn classify_open_error(dir: &Path, err: sled::Error) -> StoreError {
    match err {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            StoreError::Locked(dir.to_owned())
        }
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) | sled::Error::ReportableBug(_) => {
            StoreError::Corrupt { path: dir.to_owned(), message: err.to_string() }
        }
        sled::Error::Io(io) => StoreError::Corrupt { path: dir.to_owned(), message: io.to_string() },
        other => StoreError::Db(other),
    }
}

/// Create `dir` (and missing parents, owner-only) and restrict `dir` itself to its owner: it holds
/// the node's keys.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let wrap = |source| StoreError::Dir { path: dir.to_owned(), source };
    crate::dirs::create_dir(dir).map_err(wrap)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(wrap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_dir_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
        assert!(err.to_string().contains("another cocoon process"));
    }

    #[test]
    fn garbage_database_is_reported_as_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/conf"), b"\xff\xfe not a sled config").unwrap();
        std::fs::write(dir.path().join("db/db"), vec![0xAB; 4096]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn a_store_in_a_directory_that_does_not_exist_yet_creates_it_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("home/.local/share/cocoon");
        let store = Store::open(&data).unwrap();
        store.peer_book().unwrap();
        store.flush().unwrap();
        assert!(data.join("db").is_dir());
        #[cfg(unix)]
        for d in ["home", "home/.local", "home/.local/share", "home/.local/share/cocoon"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{d}: {mode:o}");
        }
    }
}
