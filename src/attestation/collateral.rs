//! Where a node gets collateral for the TDX quotes it verifies: memory, then the store, then the
//! configured PCCS. Collateral is keyed by platform and reused until shortly before its
//! `nextUpdate`; a refresh that fails keeps using the cached copy while it is still valid, so a
//! PCCS outage does not stop verification.
//!
//! Fetches are serialised, a platform whose fetch failed is not asked for again for
//! [`RETRY_AFTER_FAILURE`] seconds, and at most [`FETCHES_PER_MINUTE`] fetches start per minute:
//! the platform is read from the quote before its certificate chain is verified, so a flood of
//! records with made-up platforms must not turn into a flood of requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::pccs::{PccsClient, PccsError, Platform};
use super::tdx::{Collateral, collateral_window};
use crate::store::CollateralCache;

/// Seconds before a platform whose fetch failed is tried again.
pub const RETRY_AFTER_FAILURE: u64 = 60;
/// Seconds before `nextUpdate` at which cached collateral is refreshed.
pub const REFRESH_BEFORE: u64 = 3600;
/// Most fetches started per minute.
pub const FETCHES_PER_MINUTE: u32 = 30;
/// Most platforms remembered in memory.
const CAPACITY: usize = 1024;

/// Why no collateral is available for a quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollateralError {
    /// The quote does not say which platform it comes from (malformed).
    #[error("{0}")]
    Quote(PccsError),
    /// Nothing cached and no PCCS configured.
    #[error("no collateral cached for {0} and no PCCS configured")]
    NotCached(String),
    /// The fetch failed.
    #[error("collateral for {platform}: {error}")]
    Fetch {
        /// Platform key.
        platform: String,
        /// What failed.
        error: PccsError,
    },
    /// The PCCS served collateral that is not valid now.
    #[error("the PCCS served collateral for {0} that is already expired")]
    Stale(String),
    /// A recent fetch for this platform failed; not retried yet.
    #[error("collateral for {0} unavailable (a recent fetch failed; retrying later)")]
    RecentFailure(String),
    /// Too many fetches this minute.
    #[error("collateral fetch rate limit reached; {0} not fetched")]
    RateLimited(String),
}

#[derive(Debug, Clone)]
enum Slot {
    Ready { collateral: Arc<Collateral>, until: u64 },
    Failed { retry_at: u64 },
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<String, Slot>,
    minute: u64,
    fetches: u32,
}

/// Counts of what happened, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollateralStats {
    /// Fetches that produced valid collateral.
    pub fetched: u64,
    /// Fetches that failed.
    pub failed: u64,
}

/// Collateral for quotes: memory, store, PCCS.
#[derive(Debug)]
pub struct CollateralSource {
    pccs: Option<PccsClient>,
    store: Option<CollateralCache>,
    state: Mutex<State>,
    fetched: Counter,
    failed: Counter,
    fetching: tokio::sync::Mutex<()>,
}

impl CollateralSource {
    /// A source fetching from `pccs` (if any) and persisting in `store` (if any).
    pub fn new(pccs: Option<PccsClient>, store: Option<CollateralCache>) -> Self {
        Self {
            pccs,
            store,
            state: Mutex::new(State::default()),
            fetched: Counter::default(),
            failed: Counter::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A source with neither PCCS nor store (quotes need collateral given explicitly).
    pub fn offline() -> Self {
        Self::new(None, None)
    }

    /// Fetch outcomes so far.
    pub fn stats(&self) -> CollateralStats {
        CollateralStats { fetched: self.fetched.get(), failed: self.failed.get() }
    }

    /// Register the fetch counters (`cocoon_attestation_collateral_{fetched,fetch_failed}_total`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cocoon_attestation_collateral");
        r.register("fetched", "TDX collateral fetches from the PCCS that succeeded", self.fetched.clone());
        r.register("fetch_failed", "TDX collateral fetches from the PCCS that failed", self.failed.clone());
    }

    /// Collateral for `quote` valid at `now`, without contacting the PCCS.
    pub fn cached(&self, quote: &[u8], now: u64) -> Option<Arc<Collateral>> {
        let platform = Platform::of_quote(quote).ok()?.key();
        self.held(&platform).filter(|(_, until)| now < *until).map(|(c, _)| c)
    }

    /// Collateral for `quote` at `now`: cached, or fetched when missing or close to expiry.
    pub async fn for_quote(&self, quote: &[u8], now: u64) -> Result<Arc<Collateral>, CollateralError> {
        let platform = Platform::of_quote(quote).map_err(CollateralError::Quote)?;
        let key = platform.key();
        let held = self.held(&key).filter(|(_, until)| now < *until);
        if let Some((collateral, until)) = &held
            && now + REFRESH_BEFORE < *until
        {
            return Ok(collateral.clone());
        }
        let Some(pccs) = &self.pccs else {
            return held.map(|(c, _)| c).ok_or(CollateralError::NotCached(key));
        };
        let _serial = self.fetching.lock().await;
        // Someone else may have fetched while this call waited.
        if let Some((collateral, until)) = self.held(&key)
            && now + REFRESH_BEFORE < until
        {
            return Ok(collateral);
        }
        if let Err(e) = self.may_fetch(&key, now) {
            return held.map(|(c, _)| c).ok_or(e);
        }
        match self.fetch(pccs, &platform, &key, now).await {
            Ok(fresh) => Ok(fresh),
            Err(error) => {
                self.record(&key, Slot::Failed { retry_at: now + RETRY_AFTER_FAILURE });
                self.count(false);
                match held {
                    Some((collateral, _)) => {
                        tracing::warn!(platform = %key, %error, "collateral refresh failed; using the cached copy");
                        Ok(collateral)
                    }
                    None => Err(error),
                }
            }
        }
    }

    async fn fetch(
        &self,
        pccs: &PccsClient,
        platform: &Platform,
        key: &str,
        now: u64,
    ) -> Result<Arc<Collateral>, CollateralError> {
        let collateral = pccs
            .fetch(platform)
            .await
            .map_err(|error| CollateralError::Fetch { platform: key.to_owned(), error })?;
        let until = match collateral_window(&collateral) {
            Some((from, until)) if from <= now && now < until => until,
            _ => return Err(CollateralError::Stale(key.to_owned())),
        };
        tracing::info!(platform = %key, pccs = pccs.base_url(), until, "fetched TDX collateral");
        if let Some(store) = &self.store
            && let Err(e) = store.put(key, &collateral, until)
        {
            tracing::warn!(platform = %key, error = %e, "cannot persist collateral");
        }
        let collateral = Arc::new(collateral);
        self.record(key, Slot::Ready { collateral: collateral.clone(), until });
        self.count(true);
        Ok(collateral)
    }

    /// Memory first, then the store (loading it into memory).
    fn held(&self, key: &str) -> Option<(Arc<Collateral>, u64)> {
        if let Ok(state) = self.state.lock()
            && let Some(Slot::Ready { collateral, until }) = state.slots.get(key)
        {
            return Some((collateral.clone(), *until));
        }
        let (collateral, until) = self.store.as_ref()?.get(key).ok()??;
        let collateral = Arc::new(collateral);
        if let Ok(state) = self.state.lock()
            && matches!(state.slots.get(key), Some(Slot::Failed { .. }))
        {
            return Some((collateral, until));
        }
        self.record(key, Slot::Ready { collateral: collateral.clone(), until });
        Some((collateral, until))
    }

    /// Whether a fetch for `key` may start now (failure back-off, global rate).
    fn may_fetch(&self, key: &str, now: u64) -> Result<(), CollateralError> {
        let Ok(mut state) = self.state.lock() else { return Ok(()) };
        if let Some(Slot::Failed { retry_at }) = state.slots.get(key)
            && now < *retry_at
        {
            return Err(CollateralError::RecentFailure(key.to_owned()));
        }
        let minute = now / 60;
        if state.minute != minute {
            state.minute = minute;
            state.fetches = 0;
        }
        if state.fetches >= FETCHES_PER_MINUTE {
            return Err(CollateralError::RateLimited(key.to_owned()));
        }
        state.fetches += 1;
        Ok(())
    }

    fn record(&self, key: &str, slot: Slot) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.slots.len() >= CAPACITY && !state.slots.contains_key(key) {
            // Forget failures first; they are the cheap ones to lose.
            let victim = state
                .slots
                .iter()
                .find(|(_, s)| matches!(s, Slot::Failed { .. }))
                .or_else(|| state.slots.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                state.slots.remove(&victim);
            }
        }
        state.slots.insert(key.to_owned(), slot);
    }

    fn count(&self, ok: bool) {
        if ok {
            self.fetched.inc()
        } else {
            self.failed.inc()
        };
    }
}
