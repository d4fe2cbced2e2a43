//! Verifying one NVIDIA Hopper GPU's confidential-computing evidence offline: its SPDM
//! attestation report and the certificate chain it sends, against NVIDIA's pinned device root.
//!
//! [`verify_evidence`] checks, in this order, each failure with its own [`GpuError`] variant:
//!
//! 1. the report parses strictly ([`parse_report`]: SPDM 1.1 GET_MEASUREMENTS request and
//!    MEASUREMENTS response, every length consistent, nothing left over);
//! 2. the nonce in the request is the verifier's;
//! 3. the chain has NVIDIA's shape: five certificates, leaf first, the last (the GPU's copy of the
//!    root) replaced by the pinned root, as NVIDIA's verifier does; each certificate names the
//!    next as issuer, is signed by its key (ECDSA P-384, SHA-384), each issuer is a CA, and all
//!    are valid at the given time;
//! 4. the leaf key (the attestation key the GPU firmware derives each boot) signed the report:
//!    raw `r ‖ s` over every byte but the last 96;
//! 5. the leaf's FWID extension equals the report's FWID (opaque data type 20), both mandatory.
//!
//! The architecture comes from the verified chain (the identity CA's name, see
//! [`GpuArchitecture`]); Blackwell chains are recognised and refused as
//! [`GpuError::Unsupported`] until a real Blackwell sample can be tested. The device certificate's
//! hash ([`VerifiedGpu::device_id`]) identifies a GPU across boots.
//!
//! Around it: [`nvml`] collects local GPUs' evidence through the NVIDIA driver; [`ocsp`] and
//! [`rim`] are the optional online checks (revocation, golden measurements), configured by
//! [`ocsp::GpuServicesConfig`].
//!
//! A verified chain can be kept ([`verify_chain`], then [`VerifiedChain::verify_report`]) so
//! later reports from the same GPU cost one signature check. What this does not check: whether
//! the measurements are NVIDIA's golden values (the RIMs), and revocation (OCSP): both online.

use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sha2::{Digest, Sha256};

#[path = "gpu_cert.rs"]
mod cert;
#[path = "nvml.rs"]
pub mod nvml;
#[path = "gpu_ocsp.rs"]
pub mod ocsp;
#[path = "gpu_report.rs"]
mod report;
#[path = "gpu_rim.rs"]
pub mod rim;

use cert::Cert;
pub use report::{
    FWID_LEN, GpuReport, Measurement, NONCE_LEN, OPAQUE_DRIVER_VERSION, OPAQUE_FWID, OPAQUE_VBIOS_VERSION,
    REQUEST_LEN, ReportError, SIGNATURE_LEN, parse_report,
};

/// Certificates in a Hopper chain: attestation leaf, device (BROM), provisioner ICA, GH100
/// identity CA, NVIDIA device root.
pub const CHAIN_LEN: usize = 5;

/// NVIDIA's device identity root (`CN=NVIDIA Device Identity CA, O=NVIDIA`, P-384, valid
/// 2021-11-05 to 9999-12-31), as shipped in NVIDIA's verifier (`verifier_device_root.pem` of
/// `nv-local-gpu-verifier`). SHA-256 of its DER:
/// `102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48`.
pub const NVIDIA_DEVICE_ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw
IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE
SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM
GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG
ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX
gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB
2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY
MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3
TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+
EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=
-----END CERTIFICATE-----";

/// The GPU generation of evidence, read from the verified chain (the protocol's type: records
/// state it and verifiers check it).
pub use cocoon_protocol::attestation::record::GpuArchitecture;

/// The architecture an identity CA's common name names, if any: the identity CA below NVIDIA's
/// root is one per architecture ("NVIDIA GH100 Identity" for Hopper; Blackwell's name
/// GB100/GB10x/GB20x chips).
pub fn architecture_from_identity_name(common_name: &str) -> Option<GpuArchitecture> {
    let chip = |prefix: &str| {
        common_name.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| {
            word.strip_prefix(prefix).is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if chip("GH") {
        Some(GpuArchitecture::Hopper)
    } else if chip("GB") {
        Some(GpuArchitecture::Blackwell)
    } else {
        None
    }
}

/// Index of the per-device (BROM) certificate in the chain: the same for every boot of a GPU,
/// unlike the leaf, which the firmware makes anew.
pub const DEVICE_CERT_INDEX: usize = 1;
/// Index of the architecture's identity CA in the chain.
pub const IDENTITY_CA_INDEX: usize = 3;

/// Why GPU evidence does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The report does not parse.
    #[error("malformed GPU attestation report: {0}")]
    Report(#[from] ReportError),
    /// The report answers another nonce than the verifier's.
    #[error("the GPU report carries another nonce")]
    NonceMismatch,
    /// The PEM chain does not decode (or holds more than five certificates).
    #[error("the GPU certificate chain does not decode")]
    ChainEncoding,
    /// The chain does not hold exactly five certificates.
    #[error("the GPU certificate chain holds {found} certificates, not {}", CHAIN_LEN)]
    ChainLength {
        /// How many it holds.
        found: usize,
    },
    /// A certificate does not decode or is not of the kind NVIDIA issues.
    #[error("GPU certificate {index}: {reason}")]
    Certificate {
        /// Its position, leaf 0, pinned root 4.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A certificate's issuer is not the next certificate's subject.
    #[error("GPU certificate {index} is not issued by certificate {}", index + 1)]
    IssuerMismatch {
        /// The issued certificate.
        index: usize,
    },
    /// An issuer is not a CA allowed to sign certificates.
    #[error("GPU certificate {index} is not a certificate authority")]
    NotCa {
        /// The issuer.
        index: usize,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("GPU certificate {index}'s signature does not verify")]
    CertificateSignature {
        /// The signed certificate.
        index: usize,
    },
    /// A certificate is not valid at the verification time.
    #[error("GPU certificate {index} is not valid at {now}")]
    CertificateTime {
        /// The certificate.
        index: usize,
        /// The verification time (Unix seconds).
        now: u64,
    },
    /// The report's signature does not verify with the leaf's key.
    #[error("the GPU report's signature does not verify")]
    ReportSignature,
    /// The FWID is missing from the report or from the leaf certificate.
    #[error("no FWID in the {0}")]
    FwidMissing(&'static str),
    /// The report's FWID is not the leaf certificate's.
    #[error("the GPU report's FWID is not its attestation certificate's")]
    FwidMismatch,
    /// The report lacks the driver or VBIOS version.
    #[error("the GPU report has no {0}")]
    VersionMissing(&'static str),
    /// The identity CA names no GPU architecture known here.
    #[error("GPU certificate 3 names no known GPU architecture")]
    UnknownArchitecture,
    /// The chain is genuine NVIDIA but of an architecture whose evidence is not verified here.
    #[error("{0} GPU evidence is not supported yet")]
    Unsupported(GpuArchitecture),
}

/// What verified evidence shows: the parsed report (measurements, nonces, opaque data) and the
/// versions and FWID it is bound to, and which GPU signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGpu {
    /// The GPU generation.
    pub architecture: GpuArchitecture,
    /// SHA-256 of the device certificate (chain index 1): the same GPU across boots, so two
    /// evidences with the same value are one GPU counted twice.
    pub device_id: [u8; 32],
    /// The whole parsed report.
    pub report: GpuReport,
    /// The driver version ("550.90.07").
    pub driver_version: String,
    /// The VBIOS version ("96.00.9f.00.01").
    pub vbios_version: String,
    /// The firmware ID, equal in the report and the attestation certificate.
    pub fwid: [u8; FWID_LEN],
}

/// A chain shown to lead from an attestation key to the pinned root: what later reports of the
/// same GPU are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The GPU generation.
    architecture: GpuArchitecture,
    /// SHA-256 of the device certificate.
    device_id: [u8; 32],
    /// The leaf's uncompressed P-384 key.
    leaf_key: Vec<u8>,
    /// The leaf's FWID.
    fwid: [u8; FWID_LEN],
    /// Validity of each certificate (Unix seconds, inclusive).
    windows: [(u64, u64); CHAIN_LEN],
}

/// The pinned root's DER.
pub fn nvidia_device_root() -> Result<Vec<u8>, GpuError> {
    let mut certs = chain_from_pem(NVIDIA_DEVICE_ROOT_PEM)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        found => Err(GpuError::ChainLength { found }),
    }
}

/// The DER certificates of a PEM chain as NVML returns it (at most five).
pub fn chain_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, GpuError> {
    super::intel_pki::pem_certificates(pem, "GPU chain").map_err(|_| GpuError::ChainEncoding)
}

/// Verify a report and its chain (DER certificates, leaf first, as the GPU sends them) for
/// `expected_nonce` at `now` (Unix seconds), with `root_der` as the trusted root.
pub fn verify_evidence<C: AsRef<[u8]>>(
    report: &[u8],
    chain: &[C],
    expected_nonce: &[u8; NONCE_LEN],
    now: u64,
    root_der: &[u8],
) -> Result<VerifiedGpu, GpuError> {
    let parsed = parse_report(report)?;
    check_nonce(&parsed, expected_nonce)?;
    let verified = verify_chain(chain, root_der, now)?;
    verified.check_parsed(report, parsed)
}

/// Verify a chain (DER certificates, leaf first, as the GPU sends them) at `now` up to `root_der`.
pub fn verify_chain<C: AsRef<[u8]>>(
    chain: &[C],
    root_der: &[u8],
    now: u64,
) -> Result<VerifiedChain, GpuError> {
    if chain.len() != CHAIN_LEN {
        return Err(GpuError::ChainLength { found: chain.len() });
    }
    // The GPU's own copy of the root is ignored; the pinned one takes its place.
    let ders: Vec<&[u8]> =
        chain.iter().take(CHAIN_LEN - 1).map(|der| der.as_ref()).chain(std::iter::once(root_der)).collect();
    let certs = ders
        .iter()
        .enumerate()
        .map(|(index, der)| Cert::parse(der).map_err(|reason| GpuError::Certificate { index, reason }))
        .collect::<Result<Vec<_>, _>>()?;
    for index in 0..CHAIN_LEN - 1 {
        check_link(&certs, index)?;
    }
    let mut windows = [(0, 0); CHAIN_LEN];
    for (window, cert) in windows.iter_mut().zip(&certs) {
        *window = (cert.not_before, cert.not_after);
    }
    check_windows(&windows, now)?;
    // Only now that the identity CA is shown to be NVIDIA's does its name mean anything.
    let architecture = certs
        .get(IDENTITY_CA_INDEX)
        .and_then(Cert::common_name)
        .and_then(architecture_from_identity_name)
        .ok_or(GpuError::UnknownArchitecture)?;
    if architecture != GpuArchitecture::Hopper {
        return Err(GpuError::Unsupported(architecture));
    }
    let leaf = certs.first().ok_or(GpuError::ChainLength { found: 0 })?;
    let fwid = leaf.hopper_fwid().map_err(|reason| GpuError::Certificate { index: 0, reason })?;
    let fwid =
        fwid.and_then(|f| f.try_into().ok()).ok_or(GpuError::FwidMissing("attestation certificate"))?;
    let device = ders.get(DEVICE_CERT_INDEX).ok_or(GpuError::ChainLength { found: 0 })?;
    let device_id = Sha256::digest(device).into();
    Ok(VerifiedChain { architecture, device_id, leaf_key: leaf.key.to_vec(), fwid, windows })
}

/// Certificate `index` is issued and signed by certificate `index + 1`, a CA.
fn check_link(certs: &[Cert<'_>], index: usize) -> Result<(), GpuError> {
    let (Some(cert), Some(issuer)) = (certs.get(index), certs.get(index + 1)) else {
        return Err(GpuError::ChainLength { found: certs.len() });
    };
    if cert.issuer != issuer.subject {
        return Err(GpuError::IssuerMismatch { index });
    }
    if !issuer.is_ca {
        return Err(GpuError::NotCa { index: index + 1 });
    }
    if !cert.signed_by(issuer.key) {
        return Err(GpuError::CertificateSignature { index });
    }
    Ok(())
}

fn check_windows(windows: &[(u64, u64)], now: u64) -> Result<(), GpuError> {
    match windows.iter().position(|(from, until)| now < *from || now > *until) {
        Some(index) => Err(GpuError::CertificateTime { index, now }),
        None => Ok(()),
    }
}

fn check_nonce(report: &GpuReport, expected: &[u8; NONCE_LEN]) -> Result<(), GpuError> {
    if &report.nonce == expected { Ok(()) } else { Err(GpuError::NonceMismatch) }
}

impl VerifiedChain {
    /// The GPU generation.
    pub fn architecture(&self) -> GpuArchitecture {
        self.architecture
    }

    /// SHA-256 of the device certificate: the GPU's identity across boots.
    pub fn device_id(&self) -> &[u8; 32] {
        &self.device_id
    }

    /// The leaf's FWID.
    pub fn fwid(&self) -> &[u8; FWID_LEN] {
        &self.fwid
    }

    /// Verify a report of this chain's GPU for `expected_nonce` at `now`: the checks of
    /// [`verify_evidence`] but the chain's signatures, done once already.
    pub fn verify_report(
        &self,
        report: &[u8],
        expected_nonce: &[u8; NONCE_LEN],
        now: u64,
    ) -> Result<VerifiedGpu, GpuError> {
        let parsed = parse_report(report)?;
        check_nonce(&parsed, expected_nonce)?;
        check_windows(&self.windows, now)?;
        self.check_parsed(report, parsed)
    }

    /// The report's signature, FWID and versions.
    fn check_parsed(&self, bytes: &[u8], report: GpuReport) -> Result<VerifiedGpu, GpuError> {
        let signed = bytes.get(..report.signed_len).ok_or(ReportError::Truncated("the signed bytes"))?;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &self.leaf_key)
            .verify(signed, &report.signature)
            .map_err(|_| GpuError::ReportSignature)?;
        let fwid = report.fwid().ok_or(GpuError::FwidMissing("report"))?;
        if fwid != self.fwid {
            return Err(GpuError::FwidMismatch);
        }
        let driver_version = report.driver_version().ok_or(GpuError::VersionMissing("driver version"))?;
        let vbios_version = report.vbios_version().ok_or(GpuError::VersionMissing("VBIOS version"))?;
        Ok(VerifiedGpu {
            architecture: self.architecture,
            device_id: self.device_id,
            report,
            driver_version,
            vbios_version,
            fwid,
        })
    }
}

#[cfg(test)]
#[path = "gpu_tests.rs"]
mod tests;
