//! The GPU rules of the attestation policy: what a node (or one request) requires of a worker's
//! GPUs, judged on the claims of its verified GPU evidence, as a pure function.
//!
//! A record's GPU evidence must all answer the record's GPU nonce (`binding`), name distinct
//! devices, be simulated only where simulated evidence is allowed, and come from allowed
//! architectures and driver versions; then the requirement: `none` accepts any worker, `any` a
//! worker with at least one GPU (confidential or not), `cc` one whose every GPU is in
//! confidential-computing mode (at least one): a single GPU outside it can read the prompts that
//! pass through it.

use std::collections::HashSet;

use super::binding::expected_gpu_nonce;
use super::evidence::{GpuArchitecture, GpuEvidence, SimulatedGpuEvidence};
use super::policy::Rejection;
use super::record::AttestationRecord;

/// What a worker's GPUs must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum GpuRequirement {
    /// Nothing: CPU-only workers too.
    #[default]
    None,
    /// At least one GPU, confidential or not.
    Any,
    /// At least one GPU, and every GPU in confidential-computing mode with verified evidence.
    Cc,
}

impl GpuRequirement {
    /// The configuration spelling: `none`, `any`, `cc`.
    pub fn name(self) -> &'static str {
        match self {
            GpuRequirement::None => "none",
            GpuRequirement::Any => "any",
            GpuRequirement::Cc => "cc",
        }
    }

    /// The requirement spelt `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [GpuRequirement::None, GpuRequirement::Any, GpuRequirement::Cc].into_iter().find(|r| r.name() == name)
    }

    /// Whether a worker with `gpus` (evidence the node verified when it accepted the record)
    /// meets this requirement.
    pub fn met_by(self, gpus: &[GpuEvidence]) -> bool {
        match self {
            GpuRequirement::None => true,
            GpuRequirement::Any => !gpus.is_empty(),
            GpuRequirement::Cc => {
                !gpus.is_empty() && gpus.iter().all(|g| !matches!(g, GpuEvidence::Unattested { .. }))
            }
        }
    }
}

/// What a node accepts of a worker's GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuPolicy {
    /// What every accepted worker's GPUs must be.
    pub require: GpuRequirement,
    /// Architectures accepted for confidential GPUs; empty accepts every one this build verifies.
    pub allowed_architectures: Vec<GpuArchitecture>,
    /// Driver versions accepted for confidential GPUs, each a whole version ("550.90.07") or a
    /// prefix of whole components ("550", "550.90"); empty accepts any.
    pub allowed_driver_versions: Vec<String>,
}

/// What one GPU's verified evidence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuClaims {
    /// SIMULATED evidence.
    pub simulated: bool,
    /// In confidential-computing mode with evidence that verified (real or simulated).
    pub confidential: bool,
    /// Its architecture (none for an unattested GPU).
    pub architecture: Option<GpuArchitecture>,
    /// Its driver version, as the signed report states it (none for unattested or simulated).
    pub driver_version: Option<String>,
    /// The nonce its report answers (none for an unattested GPU).
    pub nonce: Option<[u8; 32]>,
    /// A stable identity of the device, so one GPU cannot be listed twice.
    pub device: Option<[u8; 32]>,
}

impl GpuClaims {
    /// Claims of simulated GPU evidence, if its simulator signature verifies.
    pub fn from_simulated(evidence: &SimulatedGpuEvidence) -> Result<Self, Rejection> {
        if !evidence.signature_valid() {
            return Err(Rejection::SimulatedSignatureInvalid);
        }
        Ok(Self {
            simulated: true,
            confidential: true,
            architecture: Some(evidence.architecture),
            driver_version: None,
            nonce: Some(evidence.nonce),
            device: Some(evidence.device),
        })
    }

    /// Claims of a GPU declared without evidence.
    pub fn unattested() -> Self {
        Self {
            simulated: false,
            confidential: false,
            architecture: None,
            driver_version: None,
            nonce: None,
            device: None,
        }
    }
}

/// Whether `version` is allowed by `allowed` (see [`GpuPolicy::allowed_driver_versions`]).
pub fn driver_allowed(allowed: &[String], version: &str) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            version == a || version.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('.'))
        })
}

/// Check `record`'s GPU `claims` (one per entry of `record.gpus`, in order) against `policy`:
/// [`check_gpu_bindings`], then the policy's rules.
pub fn check_gpus(
    policy: &GpuPolicy,
    allow_simulated: bool,
    record: &AttestationRecord,
    claims: &[GpuClaims],
) -> Result<(), Rejection> {
    check_gpu_bindings(record, claims)?;
    check_gpu_rules(policy, allow_simulated, record, claims)
}

/// What is the record's own fault: a GPU answering another nonce, or listed twice.
pub fn check_gpu_bindings(record: &AttestationRecord, claims: &[GpuClaims]) -> Result<(), Rejection> {
    let nonce = expected_gpu_nonce(record);
    let mut devices = HashSet::new();
    for (index, gpu) in claims.iter().enumerate() {
        if let Some(answered) = gpu.nonce
            && answered != nonce
        {
            return Err(Rejection::GpuNonceMismatch { index });
        }
        if let Some(device) = gpu.device
            && !devices.insert(device)
        {
            return Err(Rejection::DuplicateGpu { index });
        }
    }
    Ok(())
}

/// The policy's rules: simulated GPUs, architectures, driver versions, the requirement.
pub fn check_gpu_rules(
    policy: &GpuPolicy,
    allow_simulated: bool,
    record: &AttestationRecord,
    claims: &[GpuClaims],
) -> Result<(), Rejection> {
    for gpu in claims {
        if gpu.simulated && !allow_simulated {
            return Err(Rejection::SimulatedNotAllowed);
        }
        if let Some(arch) = gpu.architecture
            && !policy.allowed_architectures.is_empty()
            && !policy.allowed_architectures.contains(&arch)
        {
            return Err(Rejection::GpuArchitectureNotAllowed(arch.name().into()));
        }
        if let Some(version) = &gpu.driver_version
            && !driver_allowed(&policy.allowed_driver_versions, version)
        {
            return Err(Rejection::GpuDriverNotAllowed(version.clone()));
        }
    }
    if !policy.require.met_by(&record.gpus) {
        return Err(Rejection::GpuRequirement(policy.require.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use libp2p_identity::{PeerId, ed25519};

    use super::super::evidence::TeeEvidence;
    use super::super::record::tests::sample;
    use super::*;

    fn record_with(gpus: usize) -> (AttestationRecord, Vec<GpuClaims>, ed25519::Keypair) {
        let simulator = ed25519::Keypair::generate();
        let mut record = sample(PeerId::random(), TeeEvidence::Tdx { quote: vec![] });
        let nonce = expected_gpu_nonce(&record);
        record.gpus = (0..gpus)
            .map(|i| {
                let sim =
                    SimulatedGpuEvidence::create(&simulator, GpuArchitecture::Hopper, [i as u8; 32], nonce);
                GpuEvidence::Simulated(Box::new(sim))
            })
            .collect();
        let claims = record
            .gpus
            .iter()
            .map(|g| match g {
                GpuEvidence::Simulated(s) => GpuClaims::from_simulated(s).unwrap(),
                _ => unreachable!(),
            })
            .collect();
        (record, claims, simulator)
    }

    #[test]
    fn requirements() {
        let (record, claims, _) = record_with(2);
        for require in [GpuRequirement::None, GpuRequirement::Any, GpuRequirement::Cc] {
            let policy = GpuPolicy { require, ..GpuPolicy::default() };
            assert_eq!(check_gpus(&policy, true, &record, &claims), Ok(()));
        }
        let (cpu_only, none, _) = record_with(0);
        let cc = GpuPolicy { require: GpuRequirement::Cc, ..GpuPolicy::default() };
        assert_eq!(check_gpus(&cc, true, &cpu_only, &none), Err(Rejection::GpuRequirement("cc")));
        let any = GpuPolicy { require: GpuRequirement::Any, ..GpuPolicy::default() };
        assert_eq!(check_gpus(&any, true, &cpu_only, &none), Err(Rejection::GpuRequirement("any")));
        // One GPU outside confidential computing is enough to fail `cc`, not `any`.
        let (mut mixed, mut claims, _) = record_with(1);
        mixed.gpus.push(GpuEvidence::Unattested { name: "NVIDIA L4".into() });
        claims.push(GpuClaims::unattested());
        assert_eq!(check_gpus(&any, true, &mixed, &claims), Ok(()));
        assert_eq!(check_gpus(&cc, true, &mixed, &claims), Err(Rejection::GpuRequirement("cc")));
    }

    #[test]
    fn a_gpu_answering_another_records_nonce_is_refused() {
        let (mut record, claims, _) = record_with(2);
        record.noise_static[0] ^= 1; // the GPUs attested the old key
        assert_eq!(
            check_gpus(&GpuPolicy::default(), true, &record, &claims),
            Err(Rejection::GpuNonceMismatch { index: 0 })
        );
    }

    #[test]
    fn duplicates_simulation_architecture_and_driver() {
        let (record, mut claims, _) = record_with(2);
        claims[1].device = claims[0].device;
        let open = GpuPolicy::default();
        assert_eq!(check_gpus(&open, true, &record, &claims), Err(Rejection::DuplicateGpu { index: 1 }));
        let (record, mut claims, _) = record_with(1);
        assert_eq!(check_gpus(&open, false, &record, &claims), Err(Rejection::SimulatedNotAllowed));
        let blackwell = GpuPolicy { allowed_architectures: vec![GpuArchitecture::Blackwell], ..open.clone() };
        assert_eq!(
            check_gpus(&blackwell, true, &record, &claims),
            Err(Rejection::GpuArchitectureNotAllowed("hopper".into()))
        );
        claims[0].driver_version = Some("535.104.05".into());
        let drivers = GpuPolicy { allowed_driver_versions: vec!["550".into(), "560.35.03".into()], ..open };
        assert_eq!(
            check_gpus(&drivers, true, &record, &claims),
            Err(Rejection::GpuDriverNotAllowed("535.104.05".into()))
        );
        claims[0].driver_version = Some("550.90.07".into());
        assert_eq!(check_gpus(&drivers, true, &record, &claims), Ok(()));
        assert!(!driver_allowed(&["550".into()], "5501.1"), "prefixes are whole components");
        assert!(driver_allowed(&["560.35.03".into()], "560.35.03"));
    }

    #[test]
    fn requirement_names_round_trip() {
        for r in [GpuRequirement::None, GpuRequirement::Any, GpuRequirement::Cc] {
            assert_eq!(GpuRequirement::from_name(r.name()), Some(r));
        }
        assert_eq!(GpuRequirement::from_name("CC!"), None);
    }
}
