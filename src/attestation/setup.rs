//! Setting up attestation in a node from its configuration: the policies (file, governance key,
//! overrides), the verifier with its VCEK source and online GPU checks, TDX collateral, and what
//! a worker attests about itself (its TEE and GPU providers).

use std::sync::Arc;
use std::time::Duration;

use cocoon_protocol::attestation::gpu_policy::GpuRequirement;
use cocoon_protocol::attestation::record::ModelOffer;
use libp2p::identity::Keypair;

use super::collateral::CollateralSource;
use super::gpu_online::GpuOnline;
use super::gpu_provider::{GpuProvider, NoGpus, NvmlGpus, SimulatedGpus};
use super::kds::VcekSource;
use super::pccs::PccsClient;
use super::policy_file::load_policies;
use super::provider::{ConfigfsTsm, SimulatedTee, TeeProvider};
use super::service::OwnRecord;
use super::snp::SnpPolicy;
use super::snp_provider::SnpTsm;
use super::verifier::Verifier;
use crate::config::{Config, ConfigError, GpuKind, Role, TeeKind};
use crate::node::{NodeError, VERIFIER_CACHE};
use crate::store::{self, Store};

/// The policies this node applies to workers' records (the SEV-SNP one apart: it reads verified
/// reports).
pub(crate) fn attestation_policy(
    config: &Config,
) -> Result<(cocoon_protocol::attestation::policy::AttestationPolicy, SnpPolicy), NodeError> {
    let a = &config.attestation;
    let governance = match &a.governance_key {
        None => None,
        Some(text) => {
            let bytes = hex::decode(text.trim())
                .map_err(|e| ConfigError::Invalid(format!("attestation.governance_key is not hex: {e}")))?;
            Some(libp2p::identity::ed25519::PublicKey::try_from_bytes(&bytes).map_err(|e| {
                ConfigError::Invalid(format!("attestation.governance_key is not an ed25519 key: {e}"))
            })?)
        }
    };
    let (mut policy, snp) = match &a.policy_file {
        Some(path) => load_policies(path, governance.as_ref())?,
        None if governance.is_some() => {
            return Err(
                ConfigError::Invalid("attestation.governance_key is set but no policy_file".into()).into()
            );
        }
        None => Default::default(),
    };
    policy.allow_simulated |= a.allow_simulated;
    if policy.allow_simulated {
        tracing::warn!("this node accepts SIMULATED attestation evidence (development only)");
    }
    if let Some(require) = &a.require_gpu {
        policy.gpu.require = GpuRequirement::from_name(require).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "attestation.require_gpu = {require:?}: use \"none\", \"any\" or \"cc\""
            ))
        })?;
    }
    Ok((policy, snp))
}

/// The verifier of workers' evidence: the policies, VCEKs from the store and AMD's KDS, and the
/// online GPU checks the configuration requires.
pub(crate) fn tee_verifier(
    config: &Config,
    store: &Store,
    policy: cocoon_protocol::attestation::policy::AttestationPolicy,
    snp: SnpPolicy,
) -> Result<Verifier, NodeError> {
    let kds = &config.attestation.kds;
    let vceks = VcekSource::new(kds, Some(store.vcek_cache()?))
        .map_err(|e| ConfigError::Invalid(format!("attestation.kds: {e}")))?;
    let mut verifier = Verifier::new(policy, VERIFIER_CACHE).with_snp_policy(snp).with_vceks(Arc::new(vceks));
    if let Some(online) = GpuOnline::new(&config.attestation.gpu)
        .map_err(|e| ConfigError::Invalid(format!("attestation.gpu: {e}")))?
    {
        verifier = verifier.with_gpu_online(Arc::new(online));
    }
    Ok(verifier)
}

/// Collateral for TDX quotes: the store's cache, refreshed from the configured PCCS (if any).
pub(crate) fn collateral_source(config: &Config, store: &Store) -> Result<CollateralSource, NodeError> {
    let url = &config.attestation.pccs_url;
    let pccs = if url.is_empty() {
        None
    } else {
        Some(PccsClient::new(url, Duration::from_secs(config.attestation.pccs_timeout_secs))?)
    };
    Ok(CollateralSource::new(pccs, Some(store.collateral_cache()?)))
}

/// What this node attests, if it is a worker.
pub(crate) fn own_record(
    config: &Config,
    identity: &Keypair,
    offers: Vec<ModelOffer>,
) -> Result<Option<OwnRecord>, NodeError> {
    if !config.has_role(Role::Worker) {
        return Ok(None);
    }
    let dir = &config.node.data_dir;
    let tee: Arc<dyn TeeProvider> = match config.worker.tee {
        TeeKind::Tdx => Arc::new(ConfigfsTsm::default()),
        TeeKind::SevSnp => Arc::new(SnpTsm::default()),
        TeeKind::Simulated => {
            tracing::warn!("worker publishes SIMULATED attestation evidence: strict peers will refuse it");
            Arc::new(SimulatedTee::new(store::load_or_create_simulator_key(dir)?))
        }
    };
    let gpus: Arc<dyn GpuProvider> = match config.worker.gpus {
        GpuKind::None => Arc::new(NoGpus),
        GpuKind::Nvidia => Arc::new(NvmlGpus),
        GpuKind::Simulated => {
            tracing::warn!("worker publishes SIMULATED GPU evidence: strict peers will refuse it");
            let key = store::load_or_create_simulator_key(dir)?;
            Arc::new(SimulatedGpus::new(key, config.worker.simulated_gpus))
        }
    };
    Ok(Some(OwnRecord {
        identity: identity.clone(),
        noise_public: store::load_or_create_noise_key(dir)?.public,
        payout_address: config.worker.payout_address.clone(),
        terms: config.payments.worker_terms(),
        offers,
        tee,
        gpus,
        validity: Duration::from_secs(config.worker.record_validity_secs),
    }))
}
