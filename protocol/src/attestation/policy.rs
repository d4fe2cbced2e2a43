//! Attestation policy: which evidence a node accepts, as a pure function of time.
//!
//! Inputs are the record, the [`EvidenceClaims`] obtained from its evidence (for TDX, after the
//! node verified the quote's signature chain and collateral with DCAP), and `now`. Checks, in
//! order, each with its own [`Rejection`]:
//!
//! 1. the evidence binds the record's keys (`binding`): each GPU's report answers the record's
//!    GPU nonce and names a distinct GPU, and the CPU evidence's report data is the record's;
//! 2. simulated evidence only if `allow_simulated` (and then its signature must verify; image and
//!    TCB checks do not apply to fake measurements);
//! 3. the TCB status is accepted (default: `UpToDate` only);
//! 4. the image is allowed: its [`image_hash`] is listed, or its MRTD and, where the image pins
//!    them, RTMR0–3 match an allowed image;
//! 5. freshness: issued no later than `now + skew`, not expired, not older than the maximum age,
//!    and a lifetime no longer than the maximum validity;
//! 6. the GPUs ([`super::gpu_policy`]): the policy's GPU requirement, architectures and driver
//!    versions.
//!
//! SEV-SNP evidence skips 3 and 4: its rules (launch measurements, product, minimum TCB, debug,
//! VMPL) read fields of the verified report, and the node's verifier applies them as it verifies.

use sha2::{Digest, Sha384};

use super::binding::expected_report_data;
use super::gpu_policy::{GpuClaims, GpuPolicy, check_gpu_bindings, check_gpu_rules};
use super::record::{AttestationRecord, Measurement, SimulatedEvidence};

/// TCB status that simulated evidence reports.
pub const SIMULATED_TCB_STATUS: &str = "Simulated";

/// The kind of CPU TEE evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKind {
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    SevSnp,
    /// SIMULATED (development).
    Simulated,
}

/// What verified evidence says about the TD or VM that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceClaims {
    /// Which TEE.
    pub kind: CpuKind,
    /// MRTD (initial TD measurement; an SEV-SNP guest's launch measurement).
    pub mrtd: Measurement,
    /// RTMR0–3 (runtime measurement registers; zero for SEV-SNP).
    pub rtmr: [Measurement; 4],
    /// The 64 bytes of report data.
    pub report_data: [u8; 64],
    /// Intel's TCB status for the platform (`UpToDate`, `SWHardeningNeeded`, `OutOfDate`, …), or
    /// [`SIMULATED_TCB_STATUS`].
    pub tcb_status: String,
}

impl EvidenceClaims {
    /// Whether the evidence is SIMULATED.
    pub fn simulated(&self) -> bool {
        self.kind == CpuKind::Simulated
    }

    /// The image hash of these measurements (see [`image_hash`]).
    pub fn image_hash(&self) -> Measurement {
        image_hash(&self.mrtd, &self.rtmr)
    }

    /// Claims of simulated evidence, if its simulator signature verifies.
    pub fn from_simulated(evidence: &SimulatedEvidence) -> Result<Self, Rejection> {
        if !evidence.signature_valid() {
            return Err(Rejection::SimulatedSignatureInvalid);
        }
        Ok(Self {
            kind: CpuKind::Simulated,
            mrtd: evidence.mrtd,
            rtmr: evidence.rtmr,
            report_data: evidence.report_data,
            tcb_status: SIMULATED_TCB_STATUS.into(),
        })
    }
}

/// One value naming a whole TD image: SHA-384 of MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ RTMR3 (240 bytes,
/// no separator), so `cat mrtd rtmr0 rtmr1 rtmr2 rtmr3 | sha384sum` reproduces it.
pub fn image_hash(mrtd: &Measurement, rtmr: &[Measurement; 4]) -> Measurement {
    let mut h = Sha384::new();
    h.update(mrtd);
    for r in rtmr {
        h.update(r);
    }
    h.finalize().into()
}

/// An approved TD image named by its [`image_hash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedImageHash {
    /// Human-readable name (for logs).
    pub name: String,
    /// The image hash.
    pub hash: Measurement,
}

/// One approved TD image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedImage {
    /// Human-readable name (for logs).
    pub name: String,
    /// Required MRTD.
    pub mrtd: Measurement,
    /// Required RTMR0–3, or `None` to accept any runtime measurements for this MRTD.
    pub rtmr: Option<[Measurement; 4]>,
}

/// What a node accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationPolicy {
    /// Approved images by measurements. With `allowed_image_hashes` empty too, no TDX evidence is
    /// accepted.
    pub allowed_images: Vec<AllowedImage>,
    /// Approved images by image hash.
    pub allowed_image_hashes: Vec<AllowedImageHash>,
    /// Accepted TCB statuses.
    pub accepted_tcb_statuses: Vec<String>,
    /// Oldest acceptable `issued_at`, as an age in seconds.
    pub max_record_age_secs: u64,
    /// Longest acceptable `expires_at - issued_at`.
    pub max_validity_secs: u64,
    /// Tolerated clock difference for `issued_at` in the future.
    pub clock_skew_secs: u64,
    /// Accept SIMULATED evidence (development only).
    pub allow_simulated: bool,
    /// What workers' GPUs must be.
    pub gpu: GpuPolicy,
}

impl Default for AttestationPolicy {
    fn default() -> Self {
        Self {
            allowed_images: Vec::new(),
            allowed_image_hashes: Vec::new(),
            accepted_tcb_statuses: vec!["UpToDate".into()],
            max_record_age_secs: 24 * 3600,
            max_validity_secs: 24 * 3600,
            clock_skew_secs: 60,
            allow_simulated: false,
            gpu: GpuPolicy::default(),
        }
    }
}

/// Why a record is refused. Every variant is a distinct, stable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The evidence was produced for other keys.
    #[error("report data does not bind this record's keys")]
    ReportDataMismatch,
    /// Simulated evidence under a policy that forbids it.
    #[error("simulated evidence is not allowed by this node's policy")]
    SimulatedNotAllowed,
    /// Simulated evidence whose simulator signature is invalid.
    #[error("simulated evidence signature is invalid")]
    SimulatedSignatureInvalid,
    /// The platform's TCB status is not accepted.
    #[error("TCB status {0} is not accepted")]
    TcbStatus(String),
    /// The MRTD is not an approved image.
    #[error("MRTD {0} is not an allowed image")]
    MrtdNotAllowed(String),
    /// No allowed image hash matches (and no image is allowed by measurements).
    #[error("image hash {0} is not an allowed image")]
    ImageHashNotAllowed(String),
    /// The MRTD is approved but an RTMR differs from the image's.
    #[error("RTMR{index} does not match allowed image {image}")]
    RtmrMismatch {
        /// Which register.
        index: usize,
        /// The image whose MRTD matched.
        image: String,
    },
    /// `issued_at` is in the future.
    #[error("record is issued in the future")]
    NotYetValid,
    /// `now >= expires_at`.
    #[error("record expired")]
    Expired,
    /// Issued longer ago than the policy allows.
    #[error("record is older than the maximum age")]
    TooOld,
    /// Its lifetime is longer than the policy allows.
    #[error("record validity period is longer than allowed")]
    ValidityTooLong,
    /// A GPU's report answers another nonce: it was made for other keys.
    #[error("GPU {index}'s evidence does not answer this record's GPU nonce")]
    GpuNonceMismatch {
        /// Its position in the record's GPU list.
        index: usize,
    },
    /// The same GPU listed twice.
    #[error("GPU {index} is listed twice")]
    DuplicateGpu {
        /// The second listing's position.
        index: usize,
    },
    /// The worker's GPUs do not meet the required `none`/`any`/`cc`.
    #[error("the worker's GPUs do not meet the requirement {0:?}")]
    GpuRequirement(&'static str),
    /// A GPU architecture the policy does not accept.
    #[error("GPU architecture {0} is not allowed")]
    GpuArchitectureNotAllowed(String),
    /// A GPU driver version the policy does not accept.
    #[error("GPU driver version {0} is not allowed")]
    GpuDriverNotAllowed(String),
}

impl Rejection {
    /// Whether the record itself is at fault whatever the verifier's policy, clock or collateral:
    /// its evidence binds other keys, lists a GPU twice, or carries a forged simulator signature.
    pub fn is_senders_fault(&self) -> bool {
        matches!(
            self,
            Rejection::ReportDataMismatch
                | Rejection::SimulatedSignatureInvalid
                | Rejection::GpuNonceMismatch { .. }
                | Rejection::DuplicateGpu { .. }
        )
    }
}

/// Check `record` with its verified CPU evidence `claims` and GPU claims `gpus` (one per entry
/// of `record.gpus`) against `policy` at `now` (Unix seconds).
pub fn check(
    policy: &AttestationPolicy,
    record: &AttestationRecord,
    claims: &EvidenceClaims,
    gpus: &[GpuClaims],
    now: u64,
) -> Result<(), Rejection> {
    check_gpu_bindings(record, gpus)?;
    if claims.report_data != expected_report_data(record) {
        return Err(Rejection::ReportDataMismatch);
    }
    check_evidence(policy, claims)?;
    check_freshness(policy, record, now)?;
    check_gpu_rules(&policy.gpu, policy.allow_simulated, record, gpus)
}

/// The rules about the evidence alone (simulated, TCB status, image): what can be judged of a
/// quote without its record.
pub fn check_evidence(policy: &AttestationPolicy, claims: &EvidenceClaims) -> Result<(), Rejection> {
    match claims.kind {
        CpuKind::Simulated => {
            return if policy.allow_simulated { Ok(()) } else { Err(Rejection::SimulatedNotAllowed) };
        }
        CpuKind::SevSnp => return Ok(()), // judged by the SEV-SNP policy while verifying
        CpuKind::Tdx => {}
    }
    if !policy.accepted_tcb_statuses.iter().any(|s| s == &claims.tcb_status) {
        return Err(Rejection::TcbStatus(claims.tcb_status.clone()));
    }
    if !policy.allowed_image_hashes.is_empty() {
        let hash = claims.image_hash();
        if policy.allowed_image_hashes.iter().any(|i| i.hash == hash) {
            return Ok(());
        }
        if policy.allowed_images.is_empty() {
            return Err(Rejection::ImageHashNotAllowed(hex::encode(hash)));
        }
    }
    let image = policy
        .allowed_images
        .iter()
        .find(|i| i.mrtd == claims.mrtd)
        .ok_or_else(|| Rejection::MrtdNotAllowed(hex::encode(claims.mrtd)))?;
    if let Some(rtmr) = &image.rtmr
        && let Some(index) = (0..4).find(|i| rtmr[*i] != claims.rtmr[*i])
    {
        return Err(Rejection::RtmrMismatch { index, image: image.name.clone() });
    }
    Ok(())
}

/// The time checks alone (also used to expire cached records).
pub fn check_freshness(
    policy: &AttestationPolicy,
    record: &AttestationRecord,
    now: u64,
) -> Result<(), Rejection> {
    if record.issued_at > now.saturating_add(policy.clock_skew_secs) {
        return Err(Rejection::NotYetValid);
    }
    if now >= record.expires_at {
        return Err(Rejection::Expired);
    }
    if now.saturating_sub(record.issued_at) > policy.max_record_age_secs {
        return Err(Rejection::TooOld);
    }
    if record.expires_at.saturating_sub(record.issued_at) > policy.max_validity_secs {
        return Err(Rejection::ValidityTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use libp2p_identity::{PeerId, ed25519};

    use super::super::record::TeeEvidence;
    use super::super::record::tests::sample;
    use super::*;

    const NOW: u64 = 1_750_000_100;

    fn tdx_setup() -> (AttestationPolicy, AttestationRecord, EvidenceClaims) {
        let record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![] });
        let claims = EvidenceClaims {
            kind: CpuKind::Tdx,
            mrtd: [0xAA; 48],
            rtmr: [[1; 48], [2; 48], [3; 48], [4; 48]],
            report_data: expected_report_data(&record),
            tcb_status: "UpToDate".into(),
        };
        let policy = AttestationPolicy {
            allowed_images: vec![AllowedImage {
                name: "img".into(),
                mrtd: [0xAA; 48],
                rtmr: Some(claims.rtmr),
            }],
            ..AttestationPolicy::default()
        };
        (policy, record, claims)
    }

    #[test]
    fn accepts_a_matching_tdx_record() {
        let (policy, record, claims) = tdx_setup();
        assert_eq!(check(&policy, &record, &claims, &[], NOW), Ok(()));
    }

    #[test]
    fn each_violation_has_its_own_reason() {
        let (policy, record, claims) = tdx_setup();
        let mut c = claims.clone();
        c.report_data[0] ^= 1;
        assert_eq!(check(&policy, &record, &c, &[], NOW), Err(Rejection::ReportDataMismatch));
        let mut c = claims.clone();
        c.tcb_status = "OutOfDate".into();
        assert_eq!(check(&policy, &record, &c, &[], NOW), Err(Rejection::TcbStatus("OutOfDate".into())));
        let mut c = claims.clone();
        c.mrtd = [0xBB; 48];
        assert!(matches!(check(&policy, &record, &c, &[], NOW), Err(Rejection::MrtdNotAllowed(_))));
        let mut c = claims.clone();
        c.rtmr[2][0] ^= 1;
        assert_eq!(
            check(&policy, &record, &c, &[], NOW),
            Err(Rejection::RtmrMismatch { index: 2, image: "img".into() })
        );
        assert_eq!(check(&policy, &record, &claims, &[], record.expires_at), Err(Rejection::Expired));
        assert_eq!(check(&policy, &record, &claims, &[], record.issued_at - 61), Err(Rejection::NotYetValid));
        let strict = AttestationPolicy { max_record_age_secs: 10, ..policy.clone() };
        assert_eq!(check(&strict, &record, &claims, &[], record.issued_at + 11), Err(Rejection::TooOld));
        let short = AttestationPolicy { max_validity_secs: 60, ..policy };
        assert_eq!(check(&short, &record, &claims, &[], NOW), Err(Rejection::ValidityTooLong));
    }

    #[test]
    fn images_can_be_allowed_by_hash() {
        let (mut policy, record, claims) = tdx_setup();
        policy.allowed_images.clear();
        let hash = image_hash(&claims.mrtd, &claims.rtmr);
        policy.allowed_image_hashes = vec![AllowedImageHash { name: "img".into(), hash }];
        assert_eq!(check(&policy, &record, &claims, &[], NOW), Ok(()));
        // Any changed register changes the hash.
        let mut c = claims.clone();
        c.rtmr[3][47] ^= 1;
        assert_eq!(
            check(&policy, &record, &c, &[], NOW),
            Err(Rejection::ImageHashNotAllowed(hex::encode(c.image_hash())))
        );
        // The hash is over the 240 bytes of measurements, nothing else.
        let mut bytes = claims.mrtd.to_vec();
        claims.rtmr.iter().for_each(|r| bytes.extend_from_slice(r));
        assert_eq!(hash.as_slice(), Sha384::digest(&bytes).as_slice());
    }

    #[test]
    fn image_without_pinned_rtmrs_accepts_any() {
        let (mut policy, record, mut claims) = tdx_setup();
        policy.allowed_images[0].rtmr = None;
        claims.rtmr = [[9; 48]; 4];
        assert_eq!(check(&policy, &record, &claims, &[], NOW), Ok(()));
    }

    #[test]
    fn simulated_evidence_needs_the_policy_flag_and_a_valid_signature() {
        let simulator = ed25519::Keypair::generate();
        let mut record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![] });
        let evidence = SimulatedEvidence::create(&simulator, expected_report_data(&record));
        record.evidence = TeeEvidence::Simulated(Box::new(evidence.clone()));
        let claims = EvidenceClaims::from_simulated(&evidence).unwrap();
        let strict = AttestationPolicy::default();
        assert_eq!(check(&strict, &record, &claims, &[], NOW), Err(Rejection::SimulatedNotAllowed));
        let dev = AttestationPolicy { allow_simulated: true, ..strict };
        assert_eq!(check(&dev, &record, &claims, &[], NOW), Ok(()));
        let mut forged = evidence;
        forged.mrtd[0] ^= 1;
        assert_eq!(EvidenceClaims::from_simulated(&forged), Err(Rejection::SimulatedSignatureInvalid));
    }
}
