//! Producing an AMD SEV-SNP attestation report inside an SNP guest through configfs-tsm
//! (provider `sev_guest`), with the certificates the host may supply in `auxblob`.
//!
//! The auxblob is the GHCB certificate table (AMD 56421 §4.1.8.1): 24-byte entries
//! `GUID ‖ offset u32 LE ‖ length u32 LE`, ended by an all-zero entry, offsets counted from the
//! start of the table, the blobs after the entries. It is empty on hosts that supply no
//! certificates (then the VCEK comes from AMD's KDS, see [`super::kds`]). Nothing in it is
//! trusted: the VCEK must still chain to a pinned AMD root ([`super::snp::VerifiedVcek`]).

use std::path::PathBuf;

use cocoon_protocol::attestation::record::{SnpEvidence, TeeEvidence};

use super::provider::{CONFIGFS_TSM_REPORT, ProviderError, TeeProvider};
use super::snp::REPORT_LEN;
use super::tsm;

/// The configfs-tsm provider name of SEV-SNP guests (the `sev-guest` driver).
pub const SNP_PROVIDER: &str = "sev_guest";
/// GUID of the VCEK in a certificate table (63da758d-e664-4564-adc5-f4b93be8accd).
pub const VCEK_GUID: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5, 0xf4b93be8accd);
/// GUID of the ASK (4ab7b379-bbac-4fe4-a02f-05aef327c782).
pub const ASK_GUID: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f, 0x05aef327c782);
/// GUID of the ARK (c0b406a4-a803-4952-9743-3fb6014cd0ae).
pub const ARK_GUID: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743, 0x3fb6014cd0ae);
/// Length of one table entry.
const ENTRY_LEN: usize = 24;
/// Most entries read before the terminator: the GHCB spec defines five GUIDs (ARK, ASK, VCEK,
/// VLEK, CRL); 64 leaves room for vendor ones while keeping a hostile table's cost trivial.
pub const MAX_CERT_ENTRIES: usize = 64;

/// A GUID's bytes in RFC 4122 order (the canonical string written left to right), as the
/// certificate table holds them.
const fn guid(a: u32, b: u16, c: u16, d: u16, e: u64) -> [u8; 16] {
    let (a, b, c, d, e) =
        (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes(), d.to_be_bytes(), e.to_be_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5], e[6], e[7]]
}

/// Why a certificate table does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertTableError {
    /// The entries run past the end of the blob without an all-zero terminator.
    #[error("certificate table has no terminating all-zero entry")]
    NoTerminator,
    /// More than [`MAX_CERT_ENTRIES`] entries.
    #[error("certificate table has more than {MAX_CERT_ENTRIES} entries")]
    TooManyEntries,
    /// An entry's blob is not inside the blob, after the entries (or its end overflows).
    #[error("certificate table entry {index} (offset {offset}, length {length}) is outside the blob")]
    OutOfBounds {
        /// Position of the entry.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
    },
    /// Two entries have the same GUID.
    #[error("certificate table lists GUID {0} twice")]
    Duplicate(String),
}

/// One certificate of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTableEntry<'a> {
    /// What it is ([`VCEK_GUID`], [`ASK_GUID`], [`ARK_GUID`], …).
    pub guid: [u8; 16],
    /// Its bytes (normally DER).
    pub data: &'a [u8],
}

/// The entries of the certificate table `blob`, in order.
pub fn parse_cert_table(blob: &[u8]) -> Result<Vec<CertTableEntry<'_>>, CertTableError> {
    let mut headers = Vec::new();
    let mut chunks = blob.chunks_exact(ENTRY_LEN);
    loop {
        let Some(entry) = chunks.next() else { return Err(CertTableError::NoTerminator) };
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        if headers.len() == MAX_CERT_ENTRIES {
            return Err(CertTableError::TooManyEntries);
        }
        let (guid, rest) = entry.split_at(16);
        let (offset, length) = rest.split_at(4);
        let mut id = [0u8; 16];
        id.copy_from_slice(guid);
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        headers.push((id, word(offset), word(length)));
    }
    // The blobs follow the entries and the terminator.
    let table_end = (headers.len() + 1) * ENTRY_LEN;
    let mut entries: Vec<CertTableEntry<'_>> = Vec::with_capacity(headers.len());
    for (index, (guid, offset, length)) in headers.into_iter().enumerate() {
        let out_of_bounds = CertTableError::OutOfBounds { index, offset, length };
        let start = usize::try_from(offset).map_err(|_| out_of_bounds.clone())?;
        let end =
            usize::try_from(length).ok().and_then(|l| start.checked_add(l)).ok_or(out_of_bounds.clone())?;
        if start < table_end {
            return Err(out_of_bounds);
        }
        let data = blob.get(start..end).ok_or(out_of_bounds)?;
        if entries.iter().any(|e| e.guid == guid) {
            return Err(CertTableError::Duplicate(hex::encode(guid)));
        }
        entries.push(CertTableEntry { guid, data });
    }
    Ok(entries)
}

/// The certificates of AMD's chain found in a certificate table (empty ones count as absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpCertificates {
    /// The VCEK (DER).
    pub vcek: Option<Vec<u8>>,
    /// The ASK.
    pub ask: Option<Vec<u8>>,
    /// The ARK.
    pub ark: Option<Vec<u8>>,
}

impl SnpCertificates {
    /// The VCEK, ASK and ARK of the certificate table `blob` (other entries, VLEK included, are
    /// ignored).
    pub fn from_cert_table(blob: &[u8]) -> Result<Self, CertTableError> {
        let entries = parse_cert_table(blob)?;
        let find = |guid: [u8; 16]| {
            entries.iter().find(|e| e.guid == guid && !e.data.is_empty()).map(|e| e.data.to_vec())
        };
        Ok(Self { vcek: find(VCEK_GUID), ask: find(ASK_GUID), ark: find(ARK_GUID) })
    }
}

/// A report and the certificates the host supplied with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpTsmReport {
    /// The attestation report ([`REPORT_LEN`] bytes).
    pub report: Vec<u8>,
    /// The host's certificates (all `None` when it supplied none).
    pub certificates: SnpCertificates,
}

/// SEV-SNP reports through configfs-tsm.
#[derive(Debug, Clone)]
pub struct SnpTsm {
    root: PathBuf,
}

impl Default for SnpTsm {
    fn default() -> Self {
        Self { root: PathBuf::from(CONFIGFS_TSM_REPORT) }
    }
}

impl SnpTsm {
    /// A provider using report entries under `root` (normally [`CONFIGFS_TSM_REPORT`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// A report carrying `report_data`, with the host's VCEK (and ASK, ARK) when supplied.
    /// Requested at the guest's own VMPL (`privlevel` is not written).
    pub fn report(&self, report_data: &[u8; 64]) -> Result<SnpTsmReport, ProviderError> {
        let out = tsm::generate(&self.root, SNP_PROVIDER, report_data, true)?;
        if out.outblob.len() != REPORT_LEN {
            return Err(ProviderError::Malformed(format!(
                "SEV-SNP report is {} bytes, not {REPORT_LEN}",
                out.outblob.len()
            )));
        }
        let certificates = match &out.auxblob {
            Some(blob) => SnpCertificates::from_cert_table(blob)
                .map_err(|e| ProviderError::Malformed(format!("auxblob: {e}")))?,
            None => SnpCertificates::default(),
        };
        Ok(SnpTsmReport { report: out.outblob, certificates })
    }
}

impl TeeProvider for SnpTsm {
    fn name(&self) -> &'static str {
        "sev-snp"
    }

    /// The report with the host's VCEK when it supplied one (verifiers fetch it from AMD's KDS
    /// otherwise).
    fn evidence(&self, report_data: &[u8; 64]) -> Result<TeeEvidence, ProviderError> {
        let out = self.report(report_data)?;
        let vcek = out.certificates.vcek.unwrap_or_default();
        Ok(TeeEvidence::SevSnp(Box::new(SnpEvidence { report: out.report, vcek })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::sev_samples::read;

    /// A table of `entries` (GUID, blob) laid out as the kernel does, blobs after the terminator.
    fn table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let mut offset = (entries.len() + 1) * ENTRY_LEN;
        let mut head = Vec::new();
        let mut tail = Vec::new();
        for (guid, data) in entries {
            head.extend_from_slice(guid);
            head.extend_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
            head.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
            tail.extend_from_slice(data);
            offset += data.len();
        }
        head.extend_from_slice(&[0; ENTRY_LEN]);
        head.extend_from_slice(&tail);
        head
    }

    /// Overwrite entry `index`'s offset and length.
    fn set(table: &mut [u8], index: usize, offset: u32, length: u32) {
        let at = index * ENTRY_LEN + 16;
        table[at..at + 4].copy_from_slice(&offset.to_le_bytes());
        table[at + 4..at + 8].copy_from_slice(&length.to_le_bytes());
    }

    #[test]
    fn guids_are_in_rfc4122_byte_order() {
        assert_eq!(hex::encode(VCEK_GUID), "63da758de6644564adc5f4b93be8accd");
        assert_eq!(hex::encode(ARK_GUID), "c0b406a4a803495297433fb6014cd0ae");
    }

    #[test]
    fn the_real_vcek_is_found_in_a_table() {
        let vcek = read("vcek_milan.der");
        let other = [0x11; 16];
        let blob = table(&[(ARK_GUID, b"ark"), (other, b"vendor"), (VCEK_GUID, &vcek), (ASK_GUID, b"ask")]);
        let certs = SnpCertificates::from_cert_table(&blob).unwrap();
        assert_eq!(certs.vcek.as_deref(), Some(vcek.as_slice()));
        assert_eq!(certs.ask.as_deref(), Some(&b"ask"[..]));
        assert_eq!(certs.ark.as_deref(), Some(&b"ark"[..]));
        assert_eq!(parse_cert_table(&blob).unwrap().len(), 4);
        // A table without certificates, only the terminator.
        assert_eq!(SnpCertificates::from_cert_table(&[0; ENTRY_LEN]).unwrap(), SnpCertificates::default());
    }

    #[test]
    fn malformed_tables_are_refused() {
        let vcek = read("vcek_milan.der");
        let good = table(&[(VCEK_GUID, &vcek), (ASK_GUID, b"ask")]);
        let len = u32::try_from(good.len()).unwrap();

        let mut past_end = good.clone();
        set(&mut past_end, 1, len - 2, 3);
        assert!(matches!(parse_cert_table(&past_end), Err(CertTableError::OutOfBounds { index: 1, .. })));

        let mut overflow = good.clone();
        set(&mut overflow, 0, u32::MAX, u32::MAX);
        assert!(matches!(parse_cert_table(&overflow), Err(CertTableError::OutOfBounds { index: 0, .. })));

        let mut into_the_entries = good.clone();
        set(&mut into_the_entries, 0, 0, 24);
        assert!(matches!(parse_cert_table(&into_the_entries), Err(CertTableError::OutOfBounds { .. })));

        let duplicate = table(&[(VCEK_GUID, &vcek), (VCEK_GUID, b"another")]);
        assert!(matches!(parse_cert_table(&duplicate), Err(CertTableError::Duplicate(_))));

        // Entries only, no terminator (and a trailing partial entry).
        let no_terminator = good[..2 * ENTRY_LEN + 10].to_vec();
        assert_eq!(parse_cert_table(&no_terminator), Err(CertTableError::NoTerminator));
        assert_eq!(parse_cert_table(&[]), Err(CertTableError::NoTerminator));

        let many: Vec<([u8; 16], &[u8])> =
            (0..=MAX_CERT_ENTRIES).map(|i| ([i as u8 + 1; 16], &b"x"[..])).collect();
        assert_eq!(parse_cert_table(&table(&many)), Err(CertTableError::TooManyEntries));
    }

    #[test]
    fn a_directory_that_is_not_configfs_is_not_mistaken_for_an_snp_guest() {
        let dir = tempfile::tempdir().unwrap();
        let err = SnpTsm::new(dir.path()).report(&[0; 64]).unwrap_err();
        assert!(matches!(err, ProviderError::WrongProvider { expected: SNP_PROVIDER, .. }), "{err:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "entry not cleaned up");
        let err = SnpTsm::new("/nonexistent/tsm/report").report(&[0; 64]).unwrap_err();
        assert!(matches!(err, ProviderError::NotMounted(_)), "{err:?}");
    }
}
