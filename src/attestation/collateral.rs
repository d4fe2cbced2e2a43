//! Where a node gets collateral for the TDX quotes it verifies: memory, then the store, then the
//! configured PCCS. Collateral is keyed by platform.
//!
//! Nothing is kept that has not verified ([`verify_collateral`]: Intel's signatures up to its
//! root, TDX collateral for the quote's FMSPC, inside its signed validity window), and collateral
//! read back from the store is verified again before use. It is used until the earliest signed
//! `nextUpdate` (TCB info, QE identity, CRLs) but at most [`MAX_COLLATERAL_AGE`] after it was
//! verified; a refresh is tried [`REFRESH_INTERVAL`] after that or [`REFRESH_BEFORE`] the end,
//! whichever comes first, and a refresh that fails keeps using the cached copy while it is still
//! valid, so a PCCS outage of days does not stop verification.
//!
//! Fetches are serialised, a platform whose fetch failed is not asked for again for
//! [`RETRY_AFTER_FAILURE`] seconds, and at most [`FETCHES_PER_MINUTE`] fetches start per minute:
//! a platform is named by the quote, so a flood of records with many platforms must not turn into
//! a flood of requests (`judge` fetches only for quotes whose own signatures verify up to Intel's
//! root, which bounds the platforms to real ones).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::pccs::{PccsClient, PccsError, Platform};
use super::tdx::{Collateral, QuoteError, verify_collateral};
use crate::store::CollateralCache;

/// Seconds before a platform whose fetch failed is tried again.
pub const RETRY_AFTER_FAILURE: u64 = 60;
/// Seconds before the end of its use at which cached collateral is refreshed.
pub const REFRESH_BEFORE: u64 = 3600;
/// Seconds after verification at which cached collateral is refreshed: PCCSs refresh from Intel
/// daily, so asking more often brings nothing new.
pub const REFRESH_INTERVAL: u64 = 24 * 3600;
/// Longest collateral is used after it was verified (seconds), whatever its signed `nextUpdate`
/// says (a month for Intel's TCB info): bounds how stale this node's view of Intel's TCB ratings
/// and revocations can get when refreshes keep failing.
pub const MAX_COLLATERAL_AGE: u64 = 7 * 24 * 3600;
/// Most fetches started per minute.
pub const FETCHES_PER_MINUTE: u32 = 30;
/// Most platforms remembered in memory: a network sees a few CPU families, and the bound keeps
/// many made-up or failing platforms from growing the map.
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
    #[error("the PCCS served collateral for {0} that is not valid now (expired or not yet issued)")]
    Stale(String),
    /// The PCCS served collateral that does not verify (signatures, platform, format).
    #[error("the PCCS served collateral for {platform} that does not verify: {error}")]
    Invalid {
        /// Platform key.
        platform: String,
        /// What does not verify.
        error: String,
    },
    /// A recent fetch for this platform failed; not retried yet.
    #[error("collateral for {0} unavailable (a recent fetch failed; retrying later)")]
    RecentFailure(String),
    /// Too many fetches this minute.
    #[error("collateral fetch rate limit reached; {0} not fetched")]
    RateLimited(String),
}

/// Verified collateral in use for one platform.
#[derive(Debug, Clone)]
struct Ready {
    collateral: Arc<Collateral>,
    /// Not used from this time on (Unix seconds).
    until: u64,
    /// A fetch is tried from this time on; until [`Ready::until`] a failed one keeps this copy.
    refresh_at: u64,
}

impl Ready {
    /// Collateral verified at `now`, whose signed window ends at `signed_until`.
    fn new(collateral: Arc<Collateral>, signed_until: u64, now: u64) -> Self {
        let until = signed_until.min(now.saturating_add(MAX_COLLATERAL_AGE));
        let refresh_at = until.saturating_sub(REFRESH_BEFORE).min(now.saturating_add(REFRESH_INTERVAL));
        Self { collateral, until, refresh_at }
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// The verified collateral held, if any.
    ready: Option<Ready>,
    /// After a failed fetch: no new fetch before this time.
    retry_at: u64,
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
        let platform = Platform::of_quote(quote).ok()?;
        self.held(&platform, now).filter(|r| now < r.until).map(|r| r.collateral)
    }

    /// Collateral for `quote` at `now`: cached, or fetched when missing or due for a refresh.
    pub async fn for_quote(&self, quote: &[u8], now: u64) -> Result<Arc<Collateral>, CollateralError> {
        let platform = Platform::of_quote(quote).map_err(CollateralError::Quote)?;
        let key = platform.key();
        let held = self.held(&platform, now).filter(|r| now < r.until);
        if let Some(ready) = &held
            && now < ready.refresh_at
        {
            return Ok(ready.collateral.clone());
        }
        let Some(pccs) = &self.pccs else {
            return held.map(|r| r.collateral).ok_or(CollateralError::NotCached(key));
        };
        let _serial = self.fetching.lock().await;
        // Someone else may have fetched while this call waited.
        if let Some(ready) = self.held(&platform, now)
            && now < ready.refresh_at.min(ready.until)
        {
            return Ok(ready.collateral);
        }
        if let Err(e) = self.may_fetch(&key, now) {
            return held.map(|r| r.collateral).ok_or(e);
        }
        match self.fetch(pccs, &platform, &key, now).await {
            Ok(fresh) => Ok(fresh),
            Err(error) => {
                self.update(&key, |slot| slot.retry_at = now + RETRY_AFTER_FAILURE);
                self.count(false);
                match held {
                    Some(ready) => {
                        tracing::warn!(platform = %key, %error, "collateral refresh failed; using the cached copy");
                        Ok(ready.collateral)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Fetch, verify, then keep (memory and store).
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
        let signed_until =
            verify_collateral(&collateral, Some(platform.fmspc), now).map_err(|e| match e {
                QuoteError::CollateralTime(_) => CollateralError::Stale(key.to_owned()),
                e => CollateralError::Invalid { platform: key.to_owned(), error: e.to_string() },
            })?;
        let ready = Ready::new(Arc::new(collateral), signed_until, now);
        tracing::info!(platform = %key, pccs = pccs.base_url(), until = ready.until, "fetched TDX collateral");
        if let Some(store) = &self.store
            && let Err(e) = store.put(key, &ready.collateral, ready.until)
        {
            tracing::warn!(platform = %key, error = %e, "cannot persist collateral");
        }
        let collateral = ready.collateral.clone();
        self.update(key, |slot| *slot = Slot { ready: Some(ready), retry_at: 0 });
        self.count(true);
        Ok(collateral)
    }

    /// What memory holds for `platform`; on the first use of a platform, what the store holds,
    /// verified again at `now`.
    fn held(&self, platform: &Platform, now: u64) -> Option<Ready> {
        let key = platform.key();
        if let Ok(state) = self.state.lock()
            && let Some(slot) = state.slots.get(&key)
        {
            return slot.ready.clone();
        }
        let ready = self.load(platform, &key, now);
        self.update(&key, |slot| slot.ready = ready.clone());
        ready
    }

    fn load(&self, platform: &Platform, key: &str, now: u64) -> Option<Ready> {
        let (collateral, stored_until) = self.store.as_ref()?.get(key).ok()??;
        match verify_collateral(&collateral, Some(platform.fmspc), now) {
            Ok(signed_until) => {
                let mut ready = Ready::new(Arc::new(collateral), signed_until.min(stored_until), now);
                // When it was verified is not stored: refresh early rather than late.
                ready.refresh_at = ready
                    .refresh_at
                    .min(ready.until.saturating_sub(MAX_COLLATERAL_AGE).saturating_add(REFRESH_INTERVAL));
                Some(ready)
            }
            Err(error) => {
                tracing::info!(platform = %key, %error, "stored collateral is not usable; fetching anew");
                None
            }
        }
    }

    /// Whether a fetch for `key` may start now (failure back-off, global rate).
    fn may_fetch(&self, key: &str, now: u64) -> Result<(), CollateralError> {
        let Ok(mut state) = self.state.lock() else { return Ok(()) };
        if let Some(slot) = state.slots.get(key)
            && now < slot.retry_at
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

    /// Change the slot of `key` (created if missing, evicting another beyond [`CAPACITY`]).
    fn update(&self, key: &str, change: impl FnOnce(&mut Slot)) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.slots.len() >= CAPACITY && !state.slots.contains_key(key) {
            // Forget platforms without collateral first; they are the cheap ones to lose.
            let victim = state
                .slots
                .iter()
                .find(|(_, s)| s.ready.is_none())
                .or_else(|| state.slots.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                state.slots.remove(&victim);
            }
        }
        change(state.slots.entry(key.to_owned()).or_default());
    }

    fn count(&self, ok: bool) {
        if ok {
            self.fetched.inc()
        } else {
            self.failed.inc()
        };
    }
}
