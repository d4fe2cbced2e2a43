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
use std::sync::Mutex;

use cocoon_protocol::attestation::policy::{self, AttestationPolicy, EvidenceClaims, Rejection};
use cocoon_protocol::attestation::record::{AttestationRecord, TeeEvidence};
use sha2::{Digest, Sha256};

use super::tdx::{Collateral, QuoteError, check_quote, collateral_window, verify_quote};

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
}

#[derive(Debug, Clone)]
enum Cached {
    Valid { claims: Box<EvidenceClaims>, until: u64 },
    Invalid { error: QuoteError, until: u64 },
}

impl Cached {
    fn until(&self) -> u64 {
        match self {
            Cached::Valid { until, .. } | Cached::Invalid { until, .. } => *until,
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
    capacity: usize,
    cache: Mutex<Cache>,
}

impl Verifier {
    /// A verifier applying `policy`, caching up to `capacity` quote results.
    pub fn new(policy: AttestationPolicy, capacity: usize) -> Self {
        Self { policy, capacity: capacity.max(1), cache: Mutex::new(Cache::default()) }
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
            None => check_quote(quote).map(|_| ()).map_err(|e| self.failed(key, e, now)),
        }
    }

    /// The claims of `evidence` at `now`: from the cache, or by verifying with `collateral`.
    pub fn claims(
        &self,
        evidence: &TeeEvidence,
        collateral: Option<&Collateral>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        let quote = match evidence {
            TeeEvidence::Simulated(sim) => return Ok(EvidenceClaims::from_simulated(sim)?),
            TeeEvidence::Tdx { quote } => quote,
        };
        let key: [u8; 32] = Sha256::digest(quote).into();
        if let Some(hit) = self.lookup(&key, now) {
            return hit;
        }
        let Some(collateral) = collateral else {
            // Still tell a bad quote from a missing collateral.
            check_quote(quote).map_err(|e| self.failed(key, e, now))?;
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
            Err(e) => Err(self.failed(key, e, now)),
        }
    }

    /// Verify `record`'s evidence and apply the policy at `now`.
    pub fn verify_record(
        &self,
        record: &AttestationRecord,
        collateral: Option<&Collateral>,
        now: u64,
    ) -> Result<EvidenceClaims, VerifyError> {
        let claims = self.claims(&record.evidence, collateral, now)?;
        policy::check(&self.policy, record, &claims, now)?;
        Ok(claims)
    }

    /// Cache `error` for the quote hashed to `key` when it does not depend on collateral.
    fn failed(&self, key: [u8; 32], error: QuoteError, now: u64) -> VerifyError {
        if error.is_senders_fault() || matches!(error, QuoteError::Unsupported(_)) {
            let until = now.saturating_add(INVALID_RESULT_TTL);
            self.insert(key, Cached::Invalid { error: error.clone(), until });
        }
        error.into()
    }

    fn lookup(&self, key: &[u8; 32], now: u64) -> Option<Result<EvidenceClaims, VerifyError>> {
        let cache = self.cache.lock().ok()?;
        match cache.entries.get(key)? {
            entry if now >= entry.until() => None,
            Cached::Valid { claims, .. } => Some(Ok((**claims).clone())),
            Cached::Invalid { error, .. } => Some(Err(error.clone().into())),
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
