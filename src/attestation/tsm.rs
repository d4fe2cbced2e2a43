//! One report through Linux configfs-tsm (`/sys/kernel/config/tsm/report`, Linux 6.7+), whatever
//! the TEE: create an entry, check its `provider`, write the 64-byte `inblob`, read `outblob`
//! (and `auxblob` when asked), check that nobody else wrote the entry meanwhile (`generation`
//! advanced by exactly one), remove the entry. Used by the TDX ([`super::provider::ConfigfsTsm`],
//! provider `tdx_guest`) and SEV-SNP ([`super::snp_provider::SnpTsm`], provider `sev_guest`)
//! providers. Written here rather than taken from a crate (the one that wraps it is AGPL).

use std::io::ErrorKind;
use std::path::Path;

use super::provider::ProviderError;

/// What one configfs-tsm entry produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// `outblob`: the TDX quote or SEV-SNP report.
    pub outblob: Vec<u8>,
    /// `auxblob` when asked for and non-empty (SEV-SNP: the host's certificate table).
    pub auxblob: Option<Vec<u8>>,
}

/// Generate one report under `root` (normally [`super::provider::CONFIGFS_TSM_REPORT`]) from a
/// provider named `provider` (`tdx_guest`, `sev_guest`), reading `auxblob` when `aux` is set.
///
/// A `root` that is not a directory is [`ProviderError::NotMounted`]; an entry without the
/// expected `provider` (or any `provider` or `generation` attribute, as on a plain file system)
/// is [`ProviderError::WrongProvider`]. The entry is removed whatever happens.
pub fn generate(
    root: &Path,
    provider: &'static str,
    report_data: &[u8; 64],
    aux: bool,
) -> Result<TsmReport, ProviderError> {
    if !root.is_dir() {
        return Err(ProviderError::NotMounted(root.to_owned()));
    }
    let entry = root.join(format!("cocoon-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir(&entry).map_err(|e| io(&entry, e))?;
    let result = in_entry(&entry, provider, report_data, aux);
    if let Err(e) = std::fs::remove_dir(&entry) {
        tracing::warn!(entry = %entry.display(), error = %e, "cannot remove configfs-tsm report entry");
    }
    result
}

/// The work inside a created entry.
fn in_entry(
    entry: &Path,
    expected: &'static str,
    report_data: &[u8; 64],
    aux: bool,
) -> Result<TsmReport, ProviderError> {
    let wrong = |found: &str| ProviderError::WrongProvider { expected, found: found.to_owned() };
    let generation = || -> Result<u64, ProviderError> {
        read_trimmed(&entry.join("generation"))?.parse().map_err(|_| wrong("no generation counter"))
    };
    let provider = read_trimmed(&entry.join("provider")).map_err(|_| wrong("no provider attribute"))?;
    if provider != expected {
        return Err(wrong(&provider));
    }
    let before = generation()?;
    let inblob = entry.join("inblob");
    std::fs::write(&inblob, report_data).map_err(|e| io(&inblob, e))?;
    let outblob = entry.join("outblob");
    let out = std::fs::read(&outblob).map_err(|e| io(&outblob, e))?;
    let auxblob = if aux {
        let path = entry.join("auxblob");
        match std::fs::read(&path) {
            Ok(blob) if blob.is_empty() => None,
            Ok(blob) => Some(blob),
            // Kernels or providers without the attribute: no certificates, not an error.
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path, e)),
        }
    } else {
        None
    };
    if generation()? != before + 1 {
        return Err(ProviderError::Raced);
    }
    Ok(TsmReport { outblob: out, auxblob })
}

/// An I/O error at `path`, permission problems named as such.
fn io(path: &Path, source: std::io::Error) -> ProviderError {
    match source.kind() {
        ErrorKind::PermissionDenied => ProviderError::Permission(path.to_owned()),
        _ => ProviderError::Io { path: path.to_owned(), source },
    }
}

fn read_trimmed(path: &Path) -> Result<String, ProviderError> {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_has_no_provider_and_is_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(dir.path(), "sev_guest", &[0; 64], true).unwrap_err();
        assert!(
            matches!(&err, ProviderError::WrongProvider { expected: "sev_guest", found } if found.contains("provider")),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "entry not cleaned up");
    }

    #[test]
    fn a_missing_root_is_not_mounted() {
        let err = generate(Path::new("/nonexistent/tsm/report"), "tdx_guest", &[0; 64], false).unwrap_err();
        assert!(matches!(err, ProviderError::NotMounted(_)), "{err:?}");
    }
}
