//! Producing TEE evidence for this node's record, behind [`TeeProvider`].
//!
//! - [`ConfigfsTsm`]: a real TDX quote through Linux configfs-tsm (`/sys/kernel/config/tsm/report`,
//!   Linux 6.7+ inside a TD). Written here rather than taken from a crate (the one that wraps it
//!   is AGPL).
//! - [`SimulatedTee`]: SIMULATED evidence signed by a local key, for development and simnet. It is
//!   labelled as such in the record and refused by any policy without `allow_simulated`.

use std::path::PathBuf;

use cocoon_protocol::attestation::record::{SimulatedEvidence, TeeEvidence};
use libp2p::identity::ed25519;

use super::tsm;

/// Default location of configfs-tsm report entries.
pub const CONFIGFS_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";
/// The configfs-tsm provider name of Intel TDX guests.
const TDX_PROVIDER: &str = "tdx_guest";

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// configfs-tsm is not there.
    #[error(
        "configfs-tsm is not available at {0}: this is not a TDX guest with Linux 6.7+, or configfs is not \
         mounted (mount -t configfs none /sys/kernel/config)"
    )]
    NotMounted(PathBuf),
    /// The kernel refused access.
    #[error("permission denied at {0}: generating a quote through configfs-tsm needs root (or write access)")]
    Permission(PathBuf),
    /// The TSM provider is not TDX (e.g. SEV-SNP) or the entry is not a TSM report.
    #[error("configfs-tsm provider is {0:?}, not a TDX guest ({TDX_PROVIDER})")]
    NotTdx(String),
    /// The configfs-tsm entry is not from the expected provider (another TEE), or is no TSM
    /// report at all (no `provider` or `generation` attribute).
    #[error("configfs-tsm provider is {found:?}, not {expected}")]
    WrongProvider {
        /// The provider asked for (`tdx_guest`, `sev_guest`).
        expected: &'static str,
        /// The provider found, or what is missing.
        found: String,
    },
    /// The TEE produced output this node cannot use (wrong length, malformed certificate table).
    #[error("configfs-tsm output is malformed: {0}")]
    Malformed(String),
    /// Another writer changed the entry while we used it.
    #[error("configfs-tsm report entry was modified concurrently; try again")]
    Raced,
    /// Any other I/O failure.
    #[error("configfs-tsm I/O error at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
    /// The GPUs' evidence could not be collected.
    #[error("cannot collect GPU evidence: {0}")]
    Gpu(String),
}

/// Something that can attest report data.
pub trait TeeProvider: Send + Sync + std::fmt::Debug {
    /// Short name for logs (`tdx`, `simulated`).
    fn name(&self) -> &'static str;
    /// Evidence carrying `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, ProviderError>;
}

/// TDX quotes through configfs-tsm.
#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    root: PathBuf,
}

impl Default for ConfigfsTsm {
    fn default() -> Self {
        Self { root: PathBuf::from(CONFIGFS_TSM_REPORT) }
    }
}

impl ConfigfsTsm {
    /// A provider using report entries under `root` (normally [`CONFIGFS_TSM_REPORT`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl TeeProvider for ConfigfsTsm {
    fn name(&self) -> &'static str {
        "tdx"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, ProviderError> {
        let report = tsm::generate(&self.root, TDX_PROVIDER, report_data, false).map_err(|e| match e {
            ProviderError::WrongProvider { found, .. } => ProviderError::NotTdx(found),
            e => e,
        })?;
        Ok(TeeEvidence::Tdx { quote: report.outblob })
    }
}

/// SIMULATED evidence signed by a local simulator key (development only).
#[derive(Debug, Clone)]
pub struct SimulatedTee {
    key: ed25519::Keypair,
}

impl SimulatedTee {
    /// A simulator signing with `key`.
    pub fn new(key: ed25519::Keypair) -> Self {
        Self { key }
    }
}

impl TeeProvider for SimulatedTee {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, ProviderError> {
        Ok(TeeEvidence::Simulated(Box::new(SimulatedEvidence::create(&self.key, *report_data))))
    }
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::attestation::policy::EvidenceClaims;

    use super::*;

    #[test]
    fn missing_configfs_is_explained() {
        let err = ConfigfsTsm::new("/nonexistent/tsm/report").evidence(&[0; 64]).unwrap_err();
        assert!(matches!(err, ProviderError::NotMounted(_)));
        assert!(err.to_string().contains("not a TDX guest"), "{err}");
    }

    #[test]
    fn a_directory_that_is_not_configfs_is_not_mistaken_for_a_td() {
        // On a plain file system mkdir creates no attributes, so there is no `provider` to read.
        let dir = tempfile::tempdir().unwrap();
        let err = ConfigfsTsm::new(dir.path()).evidence(&[0; 64]).unwrap_err();
        assert!(matches!(err, ProviderError::NotTdx(_)), "{err:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "entry not cleaned up");
    }

    #[test]
    fn simulated_evidence_carries_the_report_data_and_verifies() {
        let tee = SimulatedTee::new(ed25519::Keypair::generate());
        let TeeEvidence::Simulated(evidence) = tee.evidence(&[9; 64]).unwrap() else {
            panic!("not simulated")
        };
        let claims = EvidenceClaims::from_simulated(&evidence).unwrap();
        assert!(claims.simulated());
        assert_eq!(claims.report_data, [9; 64]);
    }
}
