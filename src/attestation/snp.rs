//! Verifying AMD SEV-SNP attestation reports: a pure function of the report's bytes, its VCEK
//! certificate chain, the expected report data, a policy and the time.
//!
//! Two stages, so a chain verified once can be cached per VCEK (it is the costly part: three
//! RSA-4096 signatures):
//!
//! 1. [`VerifiedVcek::verify`]: the ARK is one of AMD's roots pinned by the `sev` crate (byte for
//!    byte; the crate itself accepts any self-signed ARK), the ARK signs itself and the ASK, the
//!    ASK signs the VCEK (`sev`'s `Chain::verify`, RSA-PSS), and each certificate is valid at the
//!    given time. It also reads the VCEK's key, TCB and hwID extensions.
//! 2. [`verify_report`]: the report decodes, the chain is valid at the time, the VCEK's ECDSA
//!    P-384 key signed the report's **raw** bytes `[0, 0x2A0)` (`sev` checks a re-encoding that
//!    drops reserved bytes, so tampering there would pass it), the VCEK was issued for the
//!    report's chip and reported TCB, the report data is the expected one, and [`check_policy`]
//!    (product, debug, VMPL, minimum TCB, launch measurement).
//!
//! [`SnpError::is_senders_fault`] separates forged or inconsistent evidence from what depends on
//! this node's clock, policy or software. Report layout: AMD 56860 (SEV-SNP firmware ABI) rev 1.55
//! Table 22; VCEK extensions: AMD 57230.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sev::certs::snp::{Chain, Verifiable, builtin, ca};
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, OctetStringRef};
use x509_cert::der::{Decode, DecodePem, Encode};

/// Length of an attestation report (0x4A0).
pub const REPORT_LEN: usize = 0x4A0;
/// The report's bytes covered by its signature: `[0, 0x2A0)`.
const SIGNED_LEN: usize = 0x2A0;
const VERSION: usize = 0x000;
const GUEST_SVN: usize = 0x004;
const POLICY: usize = 0x008;
const VMPL: usize = 0x030;
const SIGNATURE_ALGO: usize = 0x034;
const KEY_INFO: usize = 0x048;
const REPORT_DATA: usize = 0x050;
const MEASUREMENT: usize = 0x090;
const HOST_DATA: usize = 0x0C0;
const REPORTED_TCB: usize = 0x180;
/// CPUID family (extended + base), from report version 3 on; reserved before.
const CPUID_FAMILY: usize = 0x188;
const CHIP_ID: usize = 0x1A0;
/// r and s: little-endian, 72-byte slots of which the low 48 bytes are used.
const SIG_R: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const SIG_SLOT: usize = 72;
const SCALAR_LEN: usize = 48;
/// `SIGNATURE_ALGO` of ECDSA P-384 with SHA-384, the only one defined.
const ECDSA_P384_SHA384: u32 = 1;
/// `KEY_INFO` bit 1: the chip key is masked, so the report is not signed.
const MASK_CHIP_KEY: u32 = 1 << 1;
/// `KEY_INFO` bits 4:2, the signing key: 0 VCEK (1 VLEK, 7 none).
const SIGNING_KEY_SHIFT: u32 = 2;
const SIGNING_KEY_MASK: u32 = 0b111;
/// Guest policy bit 19: the guest can be debugged, so its memory is not confidential.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Report versions with the layout read here (3 adds the CPUID fields, 5 the mitigation vectors,
/// both in bytes that were reserved).
const VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// VCEK extensions (AMD 57230): TCB components as DER INTEGERs, hwID as raw bytes.
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// Why SEV-SNP evidence did not verify. See [`SnpError::is_senders_fault`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    /// The report or a certificate does not decode.
    #[error("malformed SEV-SNP evidence: {0}")]
    Malformed(String),
    /// A report or key this build cannot check (version, signature algorithm, VLEK, unsigned).
    #[error("unsupported SEV-SNP evidence: {0}")]
    Unsupported(String),
    /// The ARK is none of AMD's roots pinned in this build.
    #[error("the ARK is not a pinned AMD root")]
    UnpinnedRoot,
    /// A signature on the way from the pinned ARK to the VCEK does not verify.
    #[error("VCEK certificate chain does not verify: {0}")]
    Chain(String),
    /// A certificate of the chain is not valid at the verification time.
    #[error("{certificate} is valid from {not_before} until {not_after}, not at {now}")]
    CertificateTime {
        /// `ARK`, `ASK` or `VCEK`.
        certificate: &'static str,
        /// Unix seconds.
        not_before: u64,
        /// Unix seconds.
        not_after: u64,
        /// The verification time.
        now: u64,
    },
    /// The VCEK's key did not sign these report bytes.
    #[error("report signature is invalid: {0}")]
    Signature(String),
    /// The report's CPUID family is not the pinned root's product's.
    #[error("report CPUID family {family:#x} is not {product:?}'s")]
    ProductMismatch {
        /// From the report.
        family: u8,
        /// From the pinned ARK.
        product: SnpProduct,
    },
    /// The VCEK was issued for another TCB than the report's reported TCB.
    #[error("VCEK is for TCB {vcek:?}, the report has {report:?}")]
    VcekTcbMismatch {
        /// From the VCEK's extensions.
        vcek: SnpTcb,
        /// The report's reported TCB.
        report: SnpTcb,
    },
    /// The VCEK was issued for another chip (its hwID is not the report's chip ID).
    #[error("VCEK hwID is not the report's chip ID")]
    ChipIdMismatch,
    /// The report was produced for other data.
    #[error("report data is not the expected value")]
    ReportDataMismatch,
    /// The pinned root's product is not allowed by the policy.
    #[error("product {0:?} is not allowed")]
    ProductNotAllowed(SnpProduct),
    /// The guest policy allows debugging.
    #[error("the guest allows debugging")]
    Debug,
    /// The report was requested at a VMPL the policy does not allow.
    #[error("VMPL {0} is not allowed")]
    VmplNotAllowed(u32),
    /// A component of the reported TCB is below the policy's minimum.
    #[error("reported TCB {reported:?} is below the minimum {minimum:?}")]
    TcbTooLow {
        /// The report's reported TCB.
        reported: SnpTcb,
        /// The policy's minimum.
        minimum: SnpTcb,
    },
    /// The launch measurement is not an allowed one.
    #[error("launch measurement {0} is not allowed")]
    MeasurementNotAllowed(String),
}

impl SnpError {
    /// Whether the evidence itself is forged or inconsistent, so that no clock, policy or
    /// verifier version could make it verify (what may count against the peer that sent it).
    /// An unknown root is not: a newer build may pin it.
    pub fn is_senders_fault(&self) -> bool {
        match self {
            SnpError::Malformed(_)
            | SnpError::Chain(_)
            | SnpError::Signature(_)
            | SnpError::ProductMismatch { .. }
            | SnpError::VcekTcbMismatch { .. }
            | SnpError::ChipIdMismatch
            | SnpError::ReportDataMismatch => true,
            SnpError::Unsupported(_)
            | SnpError::UnpinnedRoot
            | SnpError::CertificateTime { .. }
            | SnpError::ProductNotAllowed(_)
            | SnpError::Debug
            | SnpError::VmplNotAllowed(_)
            | SnpError::TcbTooLow { .. }
            | SnpError::MeasurementNotAllowed(_) => false,
        }
    }
}

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
    fn cpuid_family(self) -> u8 {
        match self {
            SnpProduct::Milan | SnpProduct::Genoa => 0x19,
            SnpProduct::Turin => 0x1A,
        }
    }

    /// AMD's root certificate for this product, as the `sev` crate ships it.
    fn pinned_ark(self) -> std::io::Result<sev::certs::snp::Certificate> {
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

/// What a node accepts of verified SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Lowest acceptable reported TCB, component by component.
    pub min_tcb: SnpTcb,
    /// VMPLs at which the report may have been requested (0 is the most privileged).
    pub allowed_vmpls: Vec<u32>,
    /// Accept guests whose policy allows debugging (never in production).
    pub allow_debug: bool,
    /// Allowed launch measurements; empty allows any.
    pub allowed_measurements: Vec<[u8; 48]>,
    /// Products whose pinned root may anchor the chain.
    pub allowed_products: Vec<SnpProduct>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        Self {
            min_tcb: SnpTcb::default(),
            allowed_vmpls: vec![0],
            allow_debug: false,
            allowed_measurements: Vec::new(),
            allowed_products: SnpProduct::ALL.to_vec(),
        }
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
            chip_id: bytes(raw, CHIP_ID),
        })
    }
}

/// `N` bytes of the report at `at` (offsets are this file's constants, all inside the report).
fn bytes<const N: usize>(raw: &[u8; REPORT_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&raw[at..at + N]);
    out
}

/// What verified evidence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpClaims {
    /// The product of the pinned root the chain leads to.
    pub product: SnpProduct,
    /// The report's reported TCB, decoded for that product.
    pub reported_tcb: SnpTcb,
    /// The report.
    pub report: SnpReport,
}

/// A certificate's validity period, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `ARK`, `ASK` or `VCEK`.
    pub certificate: &'static str,
    /// First valid second.
    pub not_before: u64,
    /// Last valid second.
    pub not_after: u64,
}

/// A VCEK whose chain up to a pinned AMD root verified: what [`verify_report`] needs, cacheable
/// per VCEK (the validity periods are checked again at each report's time).
#[derive(Debug, Clone)]
pub struct VerifiedVcek {
    product: SnpProduct,
    key: VerifyingKey,
    tcb: SnpTcb,
    hw_id: Vec<u8>,
    validity: [Validity; 3],
}

impl VerifiedVcek {
    /// Verify `vcek` (DER) with `ask` and `ark` (DER or PEM) at `now` (Unix seconds): stage 1
    /// of the module documentation.
    pub fn verify(vcek: &[u8], ask: &[u8], ark: &[u8], now: u64) -> Result<Self, SnpError> {
        let ark = parse_certificate(ark, "ARK")?;
        let product = pinned_product(&ark)?;
        let ask = parse_certificate(ask, "ASK")?;
        let vcek = Certificate::from_der(vcek).map_err(|e| SnpError::Malformed(format!("VCEK: {e}")))?;
        let chain = Chain {
            ca: ca::Chain { ark: ark.clone().into(), ask: ask.clone().into() },
            vek: vcek.clone().into(),
        };
        (&chain).verify().map_err(|e| SnpError::Chain(e.to_string()))?;
        let validity = [validity(&ark, "ARK")?, validity(&ask, "ASK")?, validity(&vcek, "VCEK")?];
        let spki = &vcek.tbs_certificate.subject_public_key_info.subject_public_key;
        let key = VerifyingKey::from_sec1_bytes(spki.raw_bytes())
            .map_err(|_| SnpError::Malformed("VCEK key is not an ECDSA P-384 key".into()))?;
        let verified =
            Self { product, key, tcb: vcek_tcb(&vcek, product)?, hw_id: vcek_hw_id(&vcek)?, validity };
        verified.check_time(now)?;
        Ok(verified)
    }

    /// The product of the pinned root.
    pub fn product(&self) -> SnpProduct {
        self.product
    }

    /// The TCB the VCEK was issued for.
    pub fn tcb(&self) -> SnpTcb {
        self.tcb
    }

    /// The validity periods of the ARK, ASK and VCEK.
    pub fn validity(&self) -> [Validity; 3] {
        self.validity
    }

    /// Whether every certificate of the chain is valid at `now`.
    pub fn check_time(&self, now: u64) -> Result<(), SnpError> {
        match self.validity.iter().find(|v| now < v.not_before || now > v.not_after) {
            Some(v) => Err(SnpError::CertificateTime {
                certificate: v.certificate,
                not_before: v.not_before,
                not_after: v.not_after,
                now,
            }),
            None => Ok(()),
        }
    }

    /// Whether this VCEK's key signed `raw`'s bytes `[0, 0x2A0)`.
    fn check_signature(&self, raw: &[u8]) -> Result<(), SnpError> {
        let (Some(r), Some(s), Some(signed)) =
            (raw.get(SIG_R..SIG_R + SIG_SLOT), raw.get(SIG_S..SIG_S + SIG_SLOT), raw.get(..SIGNED_LEN))
        else {
            return Err(SnpError::Malformed("report too short for its signature".into()));
        };
        if r[SCALAR_LEN..].iter().chain(&s[SCALAR_LEN..]).any(|b| *b != 0) {
            return Err(SnpError::Signature("r or s does not fit in 48 bytes".into()));
        }
        // Little-endian scalars to the big-endian `r ‖ s` that p384 reads.
        let mut rs = [0u8; 2 * SCALAR_LEN];
        let scalars = r[..SCALAR_LEN].iter().rev().chain(s[..SCALAR_LEN].iter().rev());
        rs.iter_mut().zip(scalars).for_each(|(dst, src)| *dst = *src);
        let signature =
            Signature::from_slice(&rs).map_err(|_| SnpError::Signature("r or s is out of range".into()))?;
        self.key
            .verify(signed, &signature)
            .map_err(|_| SnpError::Signature("the VCEK did not sign this report".into()))
    }

    /// The report's claims, once shown to be from the chip and TCB this VCEK was issued for.
    fn bind(&self, report: SnpReport) -> Result<SnpClaims, SnpError> {
        if let Some(family) = report.cpuid_family
            && family != self.product.cpuid_family()
        {
            return Err(SnpError::ProductMismatch { family, product: self.product });
        }
        let reported_tcb = SnpTcb::from_bytes(report.reported_tcb, self.product);
        if reported_tcb != self.tcb {
            return Err(SnpError::VcekTcbMismatch { vcek: self.tcb, report: reported_tcb });
        }
        let (head, tail) =
            report.chip_id.split_at_checked(self.hw_id.len()).ok_or(SnpError::ChipIdMismatch)?;
        if head != self.hw_id.as_slice() || tail.iter().any(|b| *b != 0) {
            return Err(SnpError::ChipIdMismatch);
        }
        Ok(SnpClaims { product: self.product, reported_tcb, report })
    }
}

/// Verify a report (`raw`, [`REPORT_LEN`] bytes) end to end: [`VerifiedVcek::verify`], then
/// [`verify_report`].
pub fn verify(
    raw: &[u8],
    vcek: &[u8],
    ask: &[u8],
    ark: &[u8],
    expected_report_data: &[u8; 64],
    policy: &SnpPolicy,
    now: u64,
) -> Result<SnpClaims, SnpError> {
    let vcek = VerifiedVcek::verify(vcek, ask, ark, now)?;
    verify_report(raw, &vcek, expected_report_data, policy, now)
}

/// Verify a report (`raw`) signed by an already verified `vcek` at `now`: stage 2 of the module
/// documentation.
pub fn verify_report(
    raw: &[u8],
    vcek: &VerifiedVcek,
    expected_report_data: &[u8; 64],
    policy: &SnpPolicy,
    now: u64,
) -> Result<SnpClaims, SnpError> {
    let report = SnpReport::parse(raw)?;
    vcek.check_time(now)?;
    vcek.check_signature(raw)?;
    let claims = vcek.bind(report)?;
    if claims.report.report_data != *expected_report_data {
        return Err(SnpError::ReportDataMismatch);
    }
    check_policy(&claims, policy)?;
    Ok(claims)
}

/// The policy's rules on verified claims: product, debug, VMPL, minimum TCB, measurement.
pub fn check_policy(claims: &SnpClaims, policy: &SnpPolicy) -> Result<(), SnpError> {
    if !policy.allowed_products.contains(&claims.product) {
        return Err(SnpError::ProductNotAllowed(claims.product));
    }
    let report = &claims.report;
    if report.policy & POLICY_DEBUG != 0 && !policy.allow_debug {
        return Err(SnpError::Debug);
    }
    if !policy.allowed_vmpls.contains(&report.vmpl) {
        return Err(SnpError::VmplNotAllowed(report.vmpl));
    }
    if !claims.reported_tcb.meets(&policy.min_tcb) {
        return Err(SnpError::TcbTooLow { reported: claims.reported_tcb, minimum: policy.min_tcb });
    }
    if !policy.allowed_measurements.is_empty() && !policy.allowed_measurements.contains(&report.measurement) {
        return Err(SnpError::MeasurementNotAllowed(hex::encode(report.measurement)));
    }
    Ok(())
}

/// A certificate in DER or PEM.
fn parse_certificate(input: &[u8], what: &str) -> Result<Certificate, SnpError> {
    let pem = input.trim_ascii_start().starts_with(b"-----BEGIN");
    let parsed = if pem { Certificate::from_pem(input) } else { Certificate::from_der(input) };
    parsed.map_err(|e| SnpError::Malformed(format!("{what}: {e}")))
}

/// The product whose pinned root `ark` is, byte for byte.
fn pinned_product(ark: &Certificate) -> Result<SnpProduct, SnpError> {
    let der = ark.to_der().map_err(|e| SnpError::Malformed(format!("ARK: {e}")))?;
    for product in SnpProduct::ALL {
        let pinned = product.pinned_ark().and_then(|c| c.to_der());
        let pinned = pinned.map_err(|e| SnpError::Unsupported(format!("built-in {product:?} ARK: {e}")))?;
        if pinned == der {
            return Ok(product);
        }
    }
    Err(SnpError::UnpinnedRoot)
}

fn validity(cert: &Certificate, certificate: &'static str) -> Result<Validity, SnpError> {
    let v = &cert.tbs_certificate.validity;
    Ok(Validity {
        certificate,
        not_before: v.not_before.to_unix_duration().as_secs(),
        not_after: v.not_after.to_unix_duration().as_secs(),
    })
}

/// The contents of `cert`'s extension `oid`.
fn extension<'a>(cert: &'a Certificate, oid: &ObjectIdentifier) -> Option<&'a [u8]> {
    let extensions = cert.tbs_certificate.extensions.as_deref()?;
    extensions.iter().find(|e| e.extn_id == *oid).map(|e| e.extn_value.as_bytes())
}

/// The TCB a VCEK was issued for (Turin adds the FMC level).
fn vcek_tcb(vcek: &Certificate, product: SnpProduct) -> Result<SnpTcb, SnpError> {
    let spl = |oid: &ObjectIdentifier, name: &str| {
        let value = extension(vcek, oid).ok_or_else(|| SnpError::Malformed(format!("VCEK has no {name}")))?;
        u8::from_der(value).map_err(|e| SnpError::Malformed(format!("VCEK {name}: {e}")))
    };
    let fmc = if product == SnpProduct::Turin { spl(&OID_FMC_SPL, "fmcSPL")? } else { 0 };
    Ok(SnpTcb {
        fmc,
        bootloader: spl(&OID_BL_SPL, "blSPL")?,
        tee: spl(&OID_TEE_SPL, "teeSPL")?,
        snp: spl(&OID_SNP_SPL, "snpSPL")?,
        microcode: spl(&OID_UCODE_SPL, "ucodeSPL")?,
    })
}

/// A VCEK's hwID: 64 raw bytes, or 8 on Turin (also read inside an OCTET STRING, as
/// go-sev-guest does, should AMD ever wrap it).
fn vcek_hw_id(vcek: &Certificate) -> Result<Vec<u8>, SnpError> {
    let raw = extension(vcek, &OID_HW_ID).ok_or_else(|| SnpError::Malformed("VCEK has no hwID".into()))?;
    let valid = |id: &[u8]| matches!(id.len(), 8 | 64);
    if valid(raw) {
        return Ok(raw.to_vec());
    }
    match OctetStringRef::from_der(raw) {
        Ok(inner) if valid(inner.as_bytes()) => Ok(inner.as_bytes().to_vec()),
        _ => Err(SnpError::Malformed(format!("VCEK hwID of {} bytes", raw.len()))),
    }
}

#[cfg(test)]
#[path = "snp_tests.rs"]
mod tests;
