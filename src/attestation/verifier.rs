//! Verifying evidence once per node: TDX quote results are cached by quote hash, so a record seen
//! many times (gossip, direct fetches, re-publication of the same quote) costs one DCAP
//! verification.
//!
//! Two kinds of result are cached, each with an expiry:
//! - a verified quote's claims, until its collateral's signed validity ends but at most
//!   [`VALID_RESULT_TTL`];
//! - a quote that is the sender's fault ([`QuoteError::is_senders_fault`]) or in a format this
//!   build cannot check, for [`INVALID_RESULT_TTL`], so a flood of the same bad quote costs one
//!   check, and a misjudgement heals.
//!
//! Failures that depend on the collateral (stale, invalid, a TCB rating) are not cached: other
//! collateral may give another answer. The cache holds at most the capacity given to
//! [`Verifier::new`] (a node gives 4,096: about half a kilobyte an entry, 2 MiB in all); beyond
//! it the oldest entry is evicted, so a flood of distinct bad quotes cannot grow it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cocoon_protocol::attestation::binding::expected_gpu_nonce;
use cocoon_protocol::attestation::gpu_policy::GpuClaims;
use cocoon_protocol::attestation::policy::{self, AttestationPolicy, EvidenceClaims, Rejection};
use cocoon_protocol::attestation::record::{AttestationRecord, GpuEvidence, SnpEvidence, TeeEvidence};
use sha2::{Digest, Sha256};

use super::gpu::nvidia_device_root;
use super::gpu_online::GpuOnline;
use super::kds::VcekSource;
use super::snp::{SnpError, SnpPolicy, VerifiedVcek};
use super::tdx::{Collateral, QuoteError, check_quote, collateral_window, verify_quote};
use super::tee_claims::{GpuFailure, carried_vcek, gpu_claims, snp_claims};

/// Longest a verified quote's claims are reused (seconds). The collateral's own window is a
/// month; re-verifying daily lets a revocation in fresher collateral reach cached results
/// within a day (PCCSs refresh from Intel daily).
pub const VALID_RESULT_TTL: u64 = 24 * 3600;
/// How long a quote found to be the sender's fault, or unsupported, stays cached (seconds). The
/// verdict is a function of the quote's bytes, but it expires so that a wrong one (a verifier bug,
/// a newer build after an upgrade) does not last.
pub const INVALID_RESULT_TTL: u64 = 3600;

/// Why a record's evidence is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The TDX quote did not verify.
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The evidence verified but the policy refuses it.
    #[error("refused by policy: {0}")]
    Policy(#[from] Rejection),
    /// A TDX quote arrived with no collateral to verify it against and no cached result.
    #[error("no collateral available to verify this quote")]
    NoCollateral,
    /// The SEV-SNP report did not verify, or its policy refuses it.
    #[error(transparent)]
    Snp(#[from] SnpError),
    /// An SEV-SNP report without a VCEK in the record, none cached or fetched yet.
    #[error("no VCEK available to verify this SEV-SNP report")]
    NoVcek,
    /// A GPU's evidence did not verify.
    #[error("GPU {index}: {failure}")]
    Gpu {
        /// Its position in the record's GPU list.
        index: usize,
        /// What failed.
        failure: GpuFailure,
    },
}

impl VerifyError {
    /// Whether the evidence is the sender's fault under any collateral, clock, policy or verifier
    /// version (what may count against the peer that sent it).
    pub fn is_senders_fault(&self) -> bool {
        match self {
            VerifyError::Quote(quote) => quote.is_senders_fault(),
            VerifyError::Policy(rejection) => rejection.is_senders_fault(),
            VerifyError::Snp(snp) => snp.is_senders_fault(),
            VerifyError::Gpu { failure, .. } => failure.is_senders_fault(),
            VerifyError::NoCollateral | VerifyError::NoVcek => false,
        }
    }

    /// Whether this result depends only on the evidence's bytes (cached as invalid for
    /// [`INVALID_RESULT_TTL`]), not on collateral, policy or time.
    fn cacheable(&self) -> bool {
        match self {
            VerifyError::Quote(q) => q.is_senders_fault() || matches!(q, QuoteError::Unsupported(_)),
            VerifyError::Snp(s) => s.is_senders_fault(),
            VerifyError::Gpu { failure, .. } => failure.is_final(),
            VerifyError::Policy(_) | VerifyError::NoCollateral | VerifyError::NoVcek => false,
        }
    }
}

/// What verification may need besides the record: collateral for a TDX quote, the VCEK of an
/// SEV-SNP report that does not carry one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// TDX collateral.
    pub collateral: Option<&'a Collateral>,
    /// A verified VCEK for the record's SEV-SNP report.
    pub vcek: Option<&'a VerifiedVcek>,
}

impl<'a> Inputs<'a> {
    /// Only `collateral`.
    pub fn collateral(collateral: Option<&'a Collateral>) -> Self {
        Self { collateral, vcek: None }
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Valid { claims: Box<EvidenceClaims>, until: u64 },
    Gpu { claims: Box<Result<GpuClaims, Rejection>>, until: u64 },
    Invalid { error: VerifyError, until: u64 },
}

impl Cached {
    fn until(&self) -> u64 {
        match self {
            Cached::Valid { until, .. } | Cached::Gpu { until, .. } | Cached::Invalid { until, .. } => *until,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<[u8; 32], Cached>,
    /// Insertion order, for eviction; each key appears once.
    order: VecDeque<[u8; 32]>,
}

/// Evidence verification under one policy, with a bounded cache.
#[derive(Debug)]
pub struct Verifier {
    policy: AttestationPolicy,
    snp: SnpPolicy,
    /// VCEKs held for SEV-SNP reports that carry none (fetched from AMD's KDS by the judge).
    vceks: Option<Arc<VcekSource>>,
    /// The online GPU checks the judge runs, when the configuration requires any.
    gpu_online: Option<Arc<GpuOnline>>,
    /// NVIDIA's pinned device root (DER), decoded once.
    gpu_root: Vec<u8>,
    capacity: usize,
    cache: Mutex<Cache>,
}

impl Verifier {
    /// A verifier applying `policy` (and the default SEV-SNP policy: no launch measurement
    /// allowed), caching up to `capacity` evidence results.
    pub fn new(policy: AttestationPolicy, capacity: usize) -> Self {
        Self {
            policy,
            snp: SnpPolicy::default(),
            vceks: None,
            gpu_online: None,
            // The pinned root is a constant of this build; it decodes (a unit test shows it).
            gpu_root: nvidia_device_root().unwrap_or_default(),
            capacity: capacity.max(1),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The same verifier applying `snp` to SEV-SNP evidence.
    pub fn with_snp_policy(mut self, snp: SnpPolicy) -> Self {
        self.snp = snp;
        self
    }

    /// The same verifier taking VCEKs for reports that carry none from `vceks`.
    pub fn with_vceks(mut self, vceks: Arc<VcekSource>) -> Self {
        self.vceks = Some(vceks);
        self
    }

    /// The same verifier with online GPU checks (OCSP, RIMs) for the judge to run.
    pub fn with_gpu_online(mut self, online: Arc<GpuOnline>) -> Self {
        self.gpu_online = Some(online);
        self
    }

    /// The online GPU checks required, if any.
    pub fn gpu_online(&self) -> Option<&Arc<GpuOnline>> {
        self.gpu_online.as_ref()
    }

    /// Where VCEKs come from, if anywhere.
    pub fn vceks(&self) -> Option<&Arc<VcekSource>> {
        self.vceks.as_ref()
    }

    /// The SEV-SNP policy applied.
    pub fn snp_policy(&self) -> &SnpPolicy {
        &self.snp
    }

    /// The policy applied.
    pub fn policy(&self) -> &AttestationPolicy {
        &self.policy
    }

    /// Number of cached quote results (expired ones included until they are evicted).
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.entries.len()).unwrap_or(0)
    }

    /// Whether a result for `quote` valid at `now` is cached (so no collateral is needed).
    pub fn has_result(&self, quote: &[u8], now: u64) -> bool {
        self.lookup(&Sha256::digest(quote).into(), now).is_some()
    }

    /// The checks on `quote` that need no collateral ([`check_quote`]), from the cache or run now
    /// (and cached when they fail). Run before fetching collateral for the quote.
    pub fn precheck(&self, quote: &[u8], now: u64) -> Result<(), VerifyError> {
        let key: [u8; 32] = Sha256::digest(quote).into();
        match self.lookup(&key, now) {
            Some(result) => result.map(|_| ()),
            None => check_quote(quote).map(|_| ()).map_err(|e| self.failed(key, e.into(), now)),
        }
    }

    /// The claims of `evidence` at `now`: from the cache, or by verifying with `collateral`.
    pub fn claims(
        &self,
        evidence: &TeeEvidence,
        collateral: Option<&Collateral>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        self.cpu_claims(evidence, Inputs::collateral(collateral), now)
    }

    /// The claims of CPU `evidence` at `now`: from the cache, or by verifying with `inputs`.
    pub fn cpu_claims(
        &self,
        evidence: &TeeEvidence,
        inputs: Inputs<'_>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        match evidence {
            TeeEvidence::Simulated(sim) => Ok(EvidenceClaims::from_simulated(sim)?),
            TeeEvidence::Tdx { quote } => self.tdx_claims(quote, inputs.collateral, now),
            TeeEvidence::SevSnp(snp) => self.sev_snp_claims(snp, inputs.vcek, now),
        }
    }

    fn tdx_claims(
        &self,
        quote: &[u8],
        collateral: Option<&Collateral>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        let key: [u8; 32] = Sha256::digest(quote).into();
        if let Some(hit) = self.lookup(&key, now) {
            return hit;
        }
        let Some(collateral) = collateral else {
            // Still tell a bad quote from a missing collateral.
            check_quote(quote).map_err(|e| self.failed(key, e.into(), now))?;
            return Err(VerifyError::NoCollateral);
        };
        match verify_quote(quote, collateral, now) {
            Ok(claims) => {
                // dcap-qvl has just verified the collateral, so its window is signed data.
                let end = collateral_window(collateral).map_or(now, |(_, until)| until);
                let until = end.min(now.saturating_add(VALID_RESULT_TTL));
                self.insert(key, Cached::Valid { claims: Box::new(claims.clone()), until });
                Ok(claims)
            }
            Err(e) => Err(self.failed(key, e.into(), now)),
        }
    }

    /// SEV-SNP claims: cached by the hash of the report and the VCEK it carries, until the
    /// chain's first expiry (at most [`VALID_RESULT_TTL`]).
    fn sev_snp_claims(
        &self,
        evidence: &SnpEvidence,
        vcek: Option<&VerifiedVcek>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        let key = tagged_hash(b"sev-snp", &[&evidence.report, &evidence.vcek]);
        if let Some(hit) = self.lookup(&key, now) {
            return hit;
        }
        let carried;
        let held;
        let vcek = match vcek {
            Some(v) => v,
            None if !evidence.vcek.is_empty() => {
                carried = carried_vcek(evidence, now).map_err(|e| self.failed(key, e.into(), now))?;
                &carried
            }
            None => match self.vceks.as_ref().and_then(|v| v.cached(&evidence.report, now)) {
                Some(v) => {
                    held = v;
                    &*held
                }
                None => return Err(VerifyError::NoVcek),
            },
        };
        match snp_claims(evidence, vcek, &self.snp, now) {
            Ok(claims) => {
                let end = vcek.validity().iter().map(|v| v.not_after).min().unwrap_or(now);
                let until = end.min(now.saturating_add(VALID_RESULT_TTL));
                self.insert(key, Cached::Valid { claims: Box::new(claims.clone()), until });
                Ok(claims)
            }
            Err(e) => Err(self.failed(key, e.into(), now)),
        }
    }

    /// The claims of each GPU of `record`, in order: cached by the hash of the evidence and the
    /// nonce it must answer.
    pub fn gpu_claims(&self, record: &AttestationRecord, now: u64) -> Result<Vec<GpuClaims>, VerifyError> {
        let nonce = expected_gpu_nonce(record);
        let mut all = Vec::with_capacity(record.gpus.len());
        for (index, gpu) in record.gpus.iter().enumerate() {
            all.push(self.one_gpu(gpu, index, &nonce, now)?);
        }
        Ok(all)
    }

    fn one_gpu(
        &self,
        gpu: &GpuEvidence,
        index: usize,
        nonce: &[u8; 32],
        now: u64,
    ) -> Result<GpuClaims, VerifyError> {
        let GpuEvidence::Nvidia(nv) = gpu else {
            return gpu_claims(gpu, index, nonce, &self.gpu_root, now)
                .map_err(|failure| VerifyError::Gpu { index, failure })?
                .map_err(VerifyError::Policy);
        };
        let mut parts: Vec<&[u8]> = vec![nonce, &nv.report];
        parts.extend(nv.chain.iter().map(Vec::as_slice));
        let key = tagged_hash(b"nvidia-gpu", &parts);
        let cached = self.cache.lock().ok().and_then(|c| match c.entries.get(&key) {
            Some(Cached::Gpu { claims, until }) if now < *until => Some((**claims).clone()),
            _ => None,
        });
        let result = match cached {
            Some(result) => result,
            None => match gpu_claims(gpu, index, nonce, &self.gpu_root, now) {
                Ok(result) => {
                    // NVIDIA's certificates last years (the root until 9999): re-verify daily.
                    let until = now.saturating_add(VALID_RESULT_TTL);
                    self.insert(key, Cached::Gpu { claims: Box::new(result.clone()), until });
                    result
                }
                Err(failure) => {
                    return Err(self.failed(key, VerifyError::Gpu { index, failure }, now));
                }
            },
        };
        result
            .map_err(|rejection| match rejection {
                Rejection::GpuNonceMismatch { .. } => Rejection::GpuNonceMismatch { index },
                other => other,
            })
            .map_err(VerifyError::Policy)
    }

    /// Verify `record`'s evidence and apply the policy at `now`.
    pub fn verify_record(
        &self,
        record: &AttestationRecord,
        collateral: Option<&Collateral>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        self.verify_record_with(record, Inputs::collateral(collateral), now)
    }

    /// Verify `record`'s CPU and GPU evidence with `inputs` and apply the policy at `now`.
    pub fn verify_record_with(
        &self,
        record: &AttestationRecord,
        inputs: Inputs<'_>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        let claims = self.cpu_claims(&record.evidence, inputs, now)?;
        let gpus = self.gpu_claims(record, now)?;
        policy::check(&self.policy, record, &claims, &gpus, now)?;
        Ok(claims)
    }

    /// Cache `error` for the evidence hashed to `key` when it depends on the evidence alone.
    fn failed(&self, key: [u8; 32], error: VerifyError, now: u64) -> VerifyError {
        if error.cacheable() {
            let until = now.saturating_add(INVALID_RESULT_TTL);
            self.insert(key, Cached::Invalid { error: error.clone(), until });
        }
        error
    }

    fn lookup(&self, key: &[u8; 32], now: u64) -> Option<Result<EvidenceClaims, VerifyError>> {
        let cache = self.cache.lock().ok()?;
        match cache.entries.get(key)? {
            entry if now >= entry.until() => None,
            Cached::Valid { claims, .. } => Some(Ok((**claims).clone())),
            Cached::Gpu { .. } => None, // a GPU result under a CPU key cannot happen: keys are tagged
            Cached::Invalid { error, .. } => Some(Err(error.clone())),
        }
    }

    fn insert(&self, key: [u8; 32], value: Cached) {
        let Ok(mut cache) = self.cache.lock() else { return };
        if cache.entries.insert(key, value).is_none() {
            cache.order.push_back(key);
        }
        while cache.entries.len() > self.capacity {
            let Some(oldest) = cache.order.pop_front() else { break };
            cache.entries.remove(&oldest);
        }
    }
}

/// SHA-256 over a domain `tag` and length-prefixed `parts` (cache keys of SEV-SNP and GPU
/// evidence; a TDX quote's key is its plain hash, and no tag makes a 32-byte quote).
fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tag);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}
