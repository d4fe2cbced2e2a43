//! Verifying evidence once per node: TDX quote results are cached by quote hash until their
//! collateral's validity ends, so a record seen many times (gossip, direct fetches, re-publication
//! of the same quote) costs one DCAP verification. Quotes whose signatures are invalid are cached
//! as such too, so a flood of the same forged quote costs one check.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use cocoon_protocol::attestation::policy::{self, AttestationPolicy, EvidenceClaims, Rejection};
use cocoon_protocol::attestation::record::{AttestationRecord, TeeEvidence};
use sha2::{Digest, Sha256};

use super::tdx::{Collateral, QuoteError, collateral_window, verify_quote};

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
    Forged(QuoteError),
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<[u8; 32], Cached>,
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

    /// Number of cached quote results.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.entries.len()).unwrap_or(0)
    }

    /// Whether a result for `quote` valid at `now` is cached (so no collateral is needed).
    pub fn has_result(&self, quote: &[u8], now: u64) -> bool {
        self.lookup(&Sha256::digest(quote).into(), now).is_some()
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
        let collateral = collateral.ok_or(VerifyError::NoCollateral)?;
        match verify_quote(quote, collateral, now) {
            Ok(claims) => {
                let until = collateral_window(collateral).map_or(now, |(_, until)| until);
                self.insert(key, Cached::Valid { claims: Box::new(claims.clone()), until });
                Ok(claims)
            }
            Err(e @ QuoteError::Signature(_)) => {
                self.insert(key, Cached::Forged(e.clone()));
                Err(e.into())
            }
            Err(e) => Err(e.into()),
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

    fn lookup(&self, key: &[u8; 32], now: u64) -> Option<Result<EvidenceClaims, VerifyError>> {
        let cache = self.cache.lock().ok()?;
        match cache.entries.get(key)? {
            Cached::Valid { claims, until } if now < *until => Some(Ok((**claims).clone())),
            Cached::Valid { .. } => None,
            Cached::Forged(e) => Some(Err(e.clone().into())),
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
