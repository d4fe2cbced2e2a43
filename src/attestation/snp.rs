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
use sev::certs::snp::{Chain, Verifiable, ca};
use x509_cert::Certificate;
use x509_cert::der::Decode;

#[path = "snp_cert.rs"]
mod cert;
#[path = "snp_report.rs"]
mod report;

pub use cert::Validity;
use cert::*;
use report::*;
pub use report::{POLICY_DEBUG, REPORT_LEN, SnpProduct, SnpReport, SnpTcb};

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

/// What a node accepts of verified SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Lowest acceptable reported TCB, component by component.
    pub min_tcb: SnpTcb,
    /// VMPLs at which the report may have been requested (0 is the most privileged).
    pub allowed_vmpls: Vec<u32>,
    /// Accept guests whose policy allows debugging (never in production).
    pub allow_debug: bool,
    /// Allowed launch measurements; empty allows none (as no TDX image is allowed by default):
    /// the chip proves only that *some* guest produced the report.
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

    /// Verify `vcek` (DER) with `product`'s ASK and ARK pinned in this build, at `now`.
    pub fn verify_pinned(vcek: &[u8], product: SnpProduct, now: u64) -> Result<Self, SnpError> {
        let (ask, ark) = product.pinned_chain();
        Self::verify(vcek, ask, ark, now)
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

    /// Whether this VCEK was issued for `report`'s product, chip and reported TCB (what makes
    /// it the VCEK to verify that report with; its signature is not checked here).
    pub fn matches(&self, report: &SnpReport) -> Result<(), SnpError> {
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
        Ok(())
    }

    /// The report's claims, once shown to be from the chip and TCB this VCEK was issued for.
    fn bind(&self, report: SnpReport) -> Result<SnpClaims, SnpError> {
        self.matches(&report)?;
        let reported_tcb = SnpTcb::from_bytes(report.reported_tcb, self.product);
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
    if !policy.allowed_measurements.contains(&report.measurement) {
        return Err(SnpError::MeasurementNotAllowed(hex::encode(report.measurement)));
    }
    Ok(())
}

#[cfg(test)]
#[path = "snp_tests.rs"]
mod tests;
