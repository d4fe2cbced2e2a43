//! Claims of SEV-SNP and GPU evidence: what [`super::verifier`] caches and the pure policy judges.
//!
//! - An SEV-SNP report is verified with a [`VerifiedVcek`] (the chip's key, shown to chain to a
//!   pinned AMD root) against its own report data; binding that data to the record is the
//!   policy's check, so a cached result serves whichever record carries the report. The SEV-SNP
//!   policy (launch measurement, product, minimum TCB, debug, VMPL) is applied here, on the
//!   verified report.
//! - A GPU's evidence is verified for the record's GPU nonce up to NVIDIA's pinned device root;
//!   a report for another nonce becomes the policy's [`Rejection::GpuNonceMismatch`]. The
//!   architecture the record states must be the chain's. Only Hopper evidence is verified by
//!   this build: Blackwell is unsupported (ignored, never held against the sender).

use cocoon_protocol::attestation::gpu_policy::GpuClaims;
use cocoon_protocol::attestation::policy::{CpuKind, EvidenceClaims, Rejection};
use cocoon_protocol::attestation::record::{GpuEvidence, NvidiaGpuEvidence, SnpEvidence};

use super::gpu::{self, GpuError};
use super::snp::{self, SnpError, SnpPolicy, SnpProduct, SnpReport, VerifiedVcek};

/// TCB status recorded in the claims of verified SEV-SNP evidence (its TCB rules are the SEV-SNP
/// policy's minimum, applied while verifying).
pub const SNP_TCB_STATUS: &str = "SEV-SNP";

/// Why one GPU's evidence does not verify (an architecture this build does not verify is
/// [`GpuError::Unsupported`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuFailure {
    /// The verifier refused the evidence.
    #[error(transparent)]
    Evidence(#[from] GpuError),
    /// The record states another architecture than the verified chain's.
    #[error("the record states a {stated} GPU, its certificate chain is a {verified}'s")]
    ArchitectureMismatch {
        /// What the record says.
        stated: &'static str,
        /// What the chain says.
        verified: &'static str,
    },
}

impl GpuFailure {
    /// Whether the evidence is forged whatever the verifier's clock or version: a signature or
    /// link that does not verify, or a report whose firmware is not its certificate's. Parse
    /// failures are not (a newer driver may extend the report), nor are validity times.
    pub fn is_senders_fault(&self) -> bool {
        matches!(
            self,
            GpuFailure::Evidence(
                GpuError::CertificateSignature { .. }
                    | GpuError::IssuerMismatch { .. }
                    | GpuError::ReportSignature
                    | GpuError::FwidMismatch
            ) | GpuFailure::ArchitectureMismatch { .. }
        )
    }

    /// Whether the failure depends on the evidence's bytes alone (cacheable as invalid).
    pub fn is_final(&self) -> bool {
        self.is_senders_fault() || matches!(self, GpuFailure::Evidence(GpuError::Unsupported(_)))
    }
}

/// The claims of SEV-SNP `evidence` signed by `vcek`, under `policy`, at `now`; the report data
/// is left for the record-level policy to compare.
pub fn snp_claims(
    evidence: &SnpEvidence,
    vcek: &VerifiedVcek,
    policy: &SnpPolicy,
    now: u64,
) -> Result<EvidenceClaims, SnpError> {
    let own_data = SnpReport::parse(&evidence.report)?.report_data;
    let claims = snp::verify_report(&evidence.report, vcek, &own_data, policy, now)?;
    Ok(EvidenceClaims {
        kind: CpuKind::SevSnp,
        mrtd: claims.report.measurement,
        rtmr: [[0; 48]; 4],
        report_data: claims.report.report_data,
        tcb_status: SNP_TCB_STATUS.into(),
    })
}

/// The claims of one GPU's evidence for `nonce` at `now`. An NVIDIA report for another nonce is
/// the policy's rejection (it binds other keys), not a verification failure.
pub fn gpu_claims(
    evidence: &GpuEvidence,
    index: usize,
    nonce: &[u8; 32],
    root: &[u8],
    now: u64,
) -> Result<Result<GpuClaims, Rejection>, GpuFailure> {
    match evidence {
        GpuEvidence::Simulated(sim) => Ok(GpuClaims::from_simulated(sim)),
        GpuEvidence::Unattested { .. } => Ok(Ok(GpuClaims::unattested())),
        GpuEvidence::Nvidia(nv) => match nvidia_claims(nv, nonce, root, now) {
            Err(GpuFailure::Evidence(GpuError::NonceMismatch)) => {
                Ok(Err(Rejection::GpuNonceMismatch { index }))
            }
            other => other.map(Ok),
        },
    }
}

fn nvidia_claims(
    evidence: &NvidiaGpuEvidence,
    nonce: &[u8; 32],
    root: &[u8],
    now: u64,
) -> Result<GpuClaims, GpuFailure> {
    let verified = gpu::verify_evidence(&evidence.report, &evidence.chain, nonce, now, root)?;
    if verified.architecture != evidence.architecture {
        let (stated, verified) = (evidence.architecture.name(), verified.architecture.name());
        return Err(GpuFailure::ArchitectureMismatch { stated, verified });
    }
    Ok(GpuClaims {
        simulated: false,
        confidential: true,
        architecture: Some(verified.architecture),
        driver_version: Some(verified.driver_version),
        nonce: Some(verified.report.nonce),
        device: Some(verified.device_id),
    })
}

/// The VCEK an SEV-SNP evidence carries, verified up to AMD's root of whichever pinned product
/// issued it.
pub fn carried_vcek(evidence: &SnpEvidence, now: u64) -> Result<VerifiedVcek, SnpError> {
    let mut last = SnpError::Malformed("no VCEK in the evidence".into());
    for product in SnpProduct::ALL {
        match VerifiedVcek::verify_pinned(&evidence.vcek, product, now) {
            Ok(vcek) => return Ok(vcek),
            // Another product's chain: try the next. Anything else is this VCEK's own fault.
            Err(e @ SnpError::Chain(_)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
