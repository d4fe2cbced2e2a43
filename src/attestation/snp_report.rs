//! The layout of an SEV-SNP attestation report and what this verifier reads of it: offsets (AMD
//! 56860 rev 1.55 Table 22), products with a pinned root, TCB versions (§2.2) and the decoded
//! report.

use sev::certs::snp::builtin;

use super::SnpError;

/// Length of an attestation report (0x4A0).
pub const REPORT_LEN: usize = 0x4A0;
/// The report's bytes covered by its signature: `[0, 0x2A0)`.
pub(super) const SIGNED_LEN: usize = 0x2A0;
pub(super) const VERSION: usize = 0x000;
pub(super) const GUEST_SVN: usize = 0x004;
pub(super) const POLICY: usize = 0x008;
pub(super) const VMPL: usize = 0x030;
pub(super) const SIGNATURE_ALGO: usize = 0x034;
pub(super) const KEY_INFO: usize = 0x048;
pub(super) const REPORT_DATA: usize = 0x050;
pub(super) const MEASUREMENT: usize = 0x090;
pub(super) const HOST_DATA: usize = 0x0C0;
pub(super) const REPORTED_TCB: usize = 0x180;
/// CPUID family (extended + base), from report version 3 on; reserved before.
pub(super) const CPUID_FAMILY: usize = 0x188;
/// CPUID model (extended model << 4 | base model), from report version 3 on.
pub(super) const CPUID_MODEL: usize = 0x189;
pub(super) const CHIP_ID: usize = 0x1A0;
/// r and s: little-endian, 72-byte slots of which the low 48 bytes are used.
pub(super) const SIG_R: usize = 0x2A0;
pub(super) const SIG_S: usize = 0x2E8;
pub(super) const SIG_SLOT: usize = 72;
pub(super) const SCALAR_LEN: usize = 48;
/// `SIGNATURE_ALGO` of ECDSA P-384 with SHA-384, the only one defined.
pub(super) const ECDSA_P384_SHA384: u32 = 1;
/// `KEY_INFO` bit 1: the chip key is masked, so the report is not signed.
pub(super) const MASK_CHIP_KEY: u32 = 1 << 1;
/// `KEY_INFO` bits 4:2, the signing key: 0 VCEK (1 VLEK, 7 none).
pub(super) const SIGNING_KEY_SHIFT: u32 = 2;
pub(super) const SIGNING_KEY_MASK: u32 = 0b111;
/// Guest policy bit 19: the guest can be debugged, so its memory is not confidential.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Report versions with the layout read here (3 adds the CPUID fields, 5 the mitigation vectors,
/// both in bytes that were reserved).
pub(super) const VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// An AMD EPYC generation with a pinned root key (ARK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnpProduct {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004 (and Bergamo, Siena).
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl SnpProduct {
    /// Every product pinned.
    pub const ALL: [SnpProduct; 3] = [SnpProduct::Milan, SnpProduct::Genoa, SnpProduct::Turin];

    /// AMD's name (`Milan`, as in KDS URLs).
    pub fn name(self) -> &'static str {
        match self {
            SnpProduct::Milan => "Milan",
            SnpProduct::Genoa => "Genoa",
            SnpProduct::Turin => "Turin",
        }
    }

    /// The product named `name` (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// CPUID family: Milan and Genoa are Zen 3/4 (19h), Turin Zen 5 (1Ah).
    pub(super) fn cpuid_family(self) -> u8 {
        match self {
            SnpProduct::Milan | SnpProduct::Genoa => 0x19,
            SnpProduct::Turin => 0x1A,
        }
    }

    /// AMD's ASK and ARK for this product (PEM), as the `sev` crate ships them: the chain a
    /// VCEK from KDS or a host is verified with.
    pub fn pinned_chain(self) -> (&'static [u8], &'static [u8]) {
        match self {
            SnpProduct::Milan => (builtin::milan::ASK, builtin::milan::ARK),
            SnpProduct::Genoa => (builtin::genoa::ASK, builtin::genoa::ARK),
            SnpProduct::Turin => (builtin::turin::ASK, builtin::turin::ARK),
        }
    }

    /// AMD's root certificate for this product, as the `sev` crate ships it.
    pub(super) fn pinned_ark(self) -> std::io::Result<sev::certs::snp::Certificate> {
        match self {
            SnpProduct::Milan => builtin::milan::ark(),
            SnpProduct::Genoa => builtin::genoa::ark(),
            SnpProduct::Turin => builtin::turin::ark(),
        }
    }
}

/// A TCB version (security patch levels). `fmc` exists on Turin only (0 elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnpTcb {
    /// Firmware mask ROM (Turin).
    pub fmc: u8,
    /// PSP bootloader.
    pub bootloader: u8,
    /// PSP OS (TEE).
    pub tee: u8,
    /// SNP firmware.
    pub snp: u8,
    /// CPU microcode.
    pub microcode: u8,
}

impl SnpTcb {
    /// Decode the 8 bytes of a TCB_VERSION: the layout depends on the product (56860 §2.2).
    pub fn from_bytes(raw: [u8; 8], product: SnpProduct) -> Self {
        match product {
            SnpProduct::Milan | SnpProduct::Genoa => {
                Self { fmc: 0, bootloader: raw[0], tee: raw[1], snp: raw[6], microcode: raw[7] }
            }
            SnpProduct::Turin => {
                Self { fmc: raw[0], bootloader: raw[1], tee: raw[2], snp: raw[3], microcode: raw[7] }
            }
        }
    }

    /// Whether every component is at least `minimum`'s.
    pub fn meets(&self, minimum: &SnpTcb) -> bool {
        self.fmc >= minimum.fmc
            && self.bootloader >= minimum.bootloader
            && self.tee >= minimum.tee
            && self.snp >= minimum.snp
            && self.microcode >= minimum.microcode
    }
}

/// The fields of an attestation report this verifier reads, decoded from its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// Report format version.
    pub version: u32,
    /// The guest's security version.
    pub guest_svn: u32,
    /// Guest policy (bit 19: debug, [`POLICY_DEBUG`]).
    pub policy: u64,
    /// The VMPL the report was requested at.
    pub vmpl: u32,
    /// The 64 bytes the guest asked to be signed.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Data the host supplied at launch.
    pub host_data: [u8; 32],
    /// The TCB the VCEK was derived from (raw TCB_VERSION).
    pub reported_tcb: [u8; 8],
    /// CPUID family (version 3 on).
    pub cpuid_family: Option<u8>,
    /// CPUID model (version 3 on).
    pub cpuid_model: Option<u8>,
    /// The chip's ID (Turin: 8 bytes, then zeros).
    pub chip_id: [u8; 64],
}

impl SnpReport {
    /// Decode `raw`, refusing what this verifier cannot check: a length other than
    /// [`REPORT_LEN`], an unknown version or signature algorithm, a report not signed by a VCEK.
    pub fn parse(raw: &[u8]) -> Result<Self, SnpError> {
        let raw: &[u8; REPORT_LEN] = raw
            .try_into()
            .map_err(|_| SnpError::Malformed(format!("report is {} bytes, not {REPORT_LEN}", raw.len())))?;
        let u32_at = |at| u32::from_le_bytes(bytes(raw, at));
        let version = u32_at(VERSION);
        if !VERSIONS.contains(&version) {
            return Err(SnpError::Unsupported(format!("report version {version}")));
        }
        let algo = u32_at(SIGNATURE_ALGO);
        if algo != ECDSA_P384_SHA384 {
            return Err(SnpError::Unsupported(format!("signature algorithm {algo}")));
        }
        let key_info = u32_at(KEY_INFO);
        if key_info & MASK_CHIP_KEY != 0 {
            return Err(SnpError::Unsupported("the chip key is masked: the report is unsigned".into()));
        }
        let signing_key = (key_info >> SIGNING_KEY_SHIFT) & SIGNING_KEY_MASK;
        if signing_key != 0 {
            return Err(SnpError::Unsupported(format!("signing key {signing_key} (only VCEK, 0)")));
        }
        Ok(Self {
            version,
            guest_svn: u32_at(GUEST_SVN),
            policy: u64::from_le_bytes(bytes(raw, POLICY)),
            vmpl: u32_at(VMPL),
            report_data: bytes(raw, REPORT_DATA),
            measurement: bytes(raw, MEASUREMENT),
            host_data: bytes(raw, HOST_DATA),
            reported_tcb: bytes(raw, REPORTED_TCB),
            cpuid_family: (version >= 3).then_some(raw[CPUID_FAMILY]),
            cpuid_model: (version >= 3).then_some(raw[CPUID_MODEL]),
            chip_id: bytes(raw, CHIP_ID),
        })
    }
}

impl SnpReport {
    /// The products the report may come from, most likely first. From version 3 on the CPUID
    /// family and model say it (Genoa: models 10h-1Fh and A0h-AFh of family 19h, Bergamo and
    /// Siena included); a version 2 report with an 8-byte chip ID is Turin's, otherwise Milan's
    /// or Genoa's.
    pub fn products(&self) -> Vec<SnpProduct> {
        match (self.cpuid_family, self.cpuid_model) {
            (Some(0x1A), _) => vec![SnpProduct::Turin],
            (Some(0x19), Some(0x10..=0x1F | 0xA0..=0xAF)) => {
                vec![SnpProduct::Genoa]
            }
            (Some(0x19), _) => vec![SnpProduct::Milan],
            (Some(_), _) => Vec::new(),
            (None, _) if self.chip_id[8..].iter().all(|b| *b == 0) => vec![SnpProduct::Turin],
            (None, _) => vec![SnpProduct::Milan, SnpProduct::Genoa],
        }
    }
}

/// `N` bytes of the report at `at` (offsets are this file's constants, all inside the report).
pub(super) fn bytes<const N: usize>(raw: &[u8; REPORT_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&raw[at..at + N]);
    out
}
