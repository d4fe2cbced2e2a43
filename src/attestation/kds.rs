//! Where a node gets the VCEK for the SEV-SNP reports it verifies: memory, then the store, then
//! AMD's Key Distribution Service (KDS), or the VCEK a worker's record carried.
//!
//! A VCEK is per chip and reported TCB ([`vcek_key`]), never changes, and is valid for seven
//! years, so one fetch serves a worker for as long as its firmware stays the same. Nothing is
//! kept that has not verified: the VCEK must chain to the ASK and ARK pinned in this build
//! ([`VerifiedVcek::verify_pinned`]) and be the one issued for the report's chip and TCB
//! ([`VerifiedVcek::matches`]); one read back from the store is verified again.
//!
//! KDS throttles per client with HTTP 429 and publishes no quota (reports in the wild: 429 after
//! a handful of fetches in ten minutes), so fetches are serialised (one in flight: parallel ones
//! would only meet the throttle sooner), each key is fetched at most once per
//! [`KdsConfig::min_interval_secs`], and a 429 stops all fetches for a back-off that doubles up
//! to [`MAX_BACKOFF`] (or the server's `Retry-After`, capped likewise). Keys come from reports a
//! peer sends, so the memory map is capped at [`CAPACITY`] and callers should ask only for
//! reports from peers worth the cost (a fetch needs a chip ID that KDS knows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::snp::{SnpError, SnpProduct, SnpReport, SnpTcb, VerifiedVcek};
use crate::http::describe;
use crate::store::VcekCache;

/// AMD's Key Distribution Service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";
/// Largest response accepted (a VCEK is about 1.4 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest back-off after HTTP 429 (seconds): KDS throttles for minutes, not days.
pub const MAX_BACKOFF: u64 = 3600;
/// Most keys remembered in memory: a network has a few thousand chips at most, and the bound
/// keeps made-up chip IDs from growing the map.
pub const CAPACITY: usize = 4096;

/// How to reach AMD's KDS (a section of the node's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KdsConfig {
    /// Base URL of the KDS (default [`AMD_KDS_URL`]); empty never fetches (only VCEKs already
    /// stored or carried by records are used).
    pub url: String,
    /// Seconds before a KDS request is abandoned (default 10).
    pub timeout_secs: u64,
    /// Least seconds between two fetches of the same VCEK, and the first back-off after HTTP 429
    /// (default 60).
    pub min_interval_secs: u64,
}

impl Default for KdsConfig {
    fn default() -> Self {
        Self { url: AMD_KDS_URL.to_owned(), timeout_secs: 10, min_interval_secs: 60 }
    }
}

/// Why no verified VCEK is available for a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdsError {
    /// The report cannot be read, or names no known product.
    #[error("report: {0}")]
    Report(SnpError),
    /// The configured URL is not usable.
    #[error("invalid KDS URL {0:?}")]
    Url(String),
    /// Nothing cached and no KDS configured.
    #[error("no VCEK cached for {0} and no KDS configured")]
    NotCached(String),
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// KDS answered with an error status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is too large.
    #[error("GET {url}: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// KDS throttled this node (HTTP 429); no fetch before `until` (Unix seconds).
    #[error("KDS is throttling this node; no fetch before {until}")]
    Throttled {
        /// End of the back-off.
        until: u64,
    },
    /// This VCEK was fetched (or tried) less than `min_interval_secs` ago.
    #[error("VCEK {0} was fetched recently; not fetched again yet")]
    RateLimited(String),
    /// The VCEK (served or carried) does not verify or is not the report's.
    #[error("VCEK for {key} does not verify: {error}")]
    Invalid {
        /// The VCEK key.
        key: String,
        /// Why.
        error: SnpError,
    },
}

/// The key of a report's VCEK: product, hwID (the chip ID; its first 8 bytes on Turin) and the
/// reported TCB, e.g. `Milan/d495…1eb6/0300000000000873`.
pub fn vcek_key(report: &SnpReport, product: SnpProduct) -> String {
    format!("{}/{}/{}", product.name(), hex::encode(hw_id(report, product)), hex::encode(report.reported_tcb))
}

/// The hwID KDS names a chip by.
fn hw_id(report: &SnpReport, product: SnpProduct) -> &[u8] {
    match product {
        SnpProduct::Turin => &report.chip_id[..8],
        SnpProduct::Milan | SnpProduct::Genoa => &report.chip_id,
    }
}

/// The KDS path of a report's VCEK (AMD 57230 §4): `/vcek/v1/{product}/{hwID}?…SPL=…`.
pub fn vcek_path(report: &SnpReport, product: SnpProduct) -> String {
    let tcb = SnpTcb::from_bytes(report.reported_tcb, product);
    let fmc = match product {
        SnpProduct::Turin => format!("fmcSPL={}&", tcb.fmc),
        SnpProduct::Milan | SnpProduct::Genoa => String::new(),
    };
    format!(
        "/vcek/v1/{}/{}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        product.name(),
        hex::encode(hw_id(report, product)),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    )
}

/// A client of one KDS.
#[derive(Debug, Clone)]
struct KdsClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

/// What a KDS request gave.
enum Fetched {
    Body(Vec<u8>),
    /// HTTP 429, with the server's `Retry-After` seconds if any.
    Throttled(Option<u64>),
}

impl KdsClient {
    fn new(config: &KdsConfig) -> Result<Self, KdsError> {
        let base = config.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(KdsError::Url(config.url.clone()));
        }
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = super::pccs::http_client(timeout)
            .map_err(|e| KdsError::Request { url: base.clone(), reason: e.to_string() })?;
        Ok(Self { http, base, timeout })
    }

    /// GET `path`, the whole exchange within the timeout.
    async fn get(&self, path: &str) -> Result<Fetched, KdsError> {
        let url = format!("{}{path}", self.base);
        let timed_out =
            || KdsError::Request { url: url.clone(), reason: format!("no answer in {:?}", self.timeout) };
        tokio::time::timeout(self.timeout, self.exchange(&url)).await.map_err(|_| timed_out())?
    }

    async fn exchange(&self, url: &str) -> Result<Fetched, KdsError> {
        let failed = |e: reqwest::Error| KdsError::Request { url: url.to_owned(), reason: describe(&e) };
        let mut response = self.http.get(url).send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if status == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            return Ok(Fetched::Throttled(retry_after));
        }
        if !(200..300).contains(&status) {
            return Err(KdsError::Status { url: url.to_owned(), status });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(KdsError::Body {
                    url: url.to_owned(),
                    reason: format!("larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body(body))
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// The verified VCEK, if any.
    vcek: Option<Arc<VerifiedVcek>>,
    /// No fetch for this key before this time.
    retry_at: u64,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// After HTTP 429: no fetch at all before this time.
    throttled_until: u64,
    /// The current back-off (seconds), doubled on each 429, reset by a success.
    backoff: u64,
}

/// Counts of what happened, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KdsStats {
    /// Requests sent to KDS.
    pub requests: u64,
    /// Fetches that produced a verified VCEK.
    pub fetched: u64,
    /// HTTP 429 answers.
    pub throttled: u64,
}

/// VCEKs for reports: memory, store, KDS.
#[derive(Debug)]
pub struct VcekSource {
    kds: Option<KdsClient>,
    store: Option<VcekCache>,
    min_interval: u64,
    state: Mutex<State>,
    stats: Mutex<KdsStats>,
    /// One fetch in flight at a time (see the module documentation).
    fetching: tokio::sync::Mutex<()>,
}

impl VcekSource {
    /// A source fetching from the KDS of `config` (none if its URL is empty) and persisting in
    /// `store` (if any).
    pub fn new(config: &KdsConfig, store: Option<VcekCache>) -> Result<Self, KdsError> {
        let kds = if config.url.is_empty() { None } else { Some(KdsClient::new(config)?) };
        Ok(Self::with(kds, store, config.min_interval_secs))
    }

    /// A source that never fetches: VCEKs from `store` (if any) or carried by records.
    pub fn offline(store: Option<VcekCache>) -> Self {
        Self::with(None, store, KdsConfig::default().min_interval_secs)
    }

    fn with(kds: Option<KdsClient>, store: Option<VcekCache>, min_interval: u64) -> Self {
        Self {
            kds,
            store,
            min_interval,
            state: Mutex::new(State::default()),
            stats: Mutex::new(KdsStats::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> KdsStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// The verified VCEK for `report` (raw bytes) valid at `now`, without contacting KDS.
    pub fn cached(&self, report: &[u8], now: u64) -> Option<Arc<VerifiedVcek>> {
        let report = SnpReport::parse(report).ok()?;
        report.products().into_iter().find_map(|p| self.held(&report, p, now))
    }

    /// The verified VCEK for `report` (raw bytes) at `now`: cached, or fetched from KDS.
    pub async fn for_report(&self, report: &[u8], now: u64) -> Result<Arc<VerifiedVcek>, KdsError> {
        let report = SnpReport::parse(report).map_err(KdsError::Report)?;
        let products = report.products();
        if let Some(vcek) = products.iter().find_map(|p| self.held(&report, *p, now)) {
            return Ok(vcek);
        }
        let Some(&first) = products.first() else {
            return Err(KdsError::Report(SnpError::Unsupported(
                "no known product for the report's CPUID".into(),
            )));
        };
        let Some(kds) = &self.kds else { return Err(KdsError::NotCached(vcek_key(&report, first))) };
        let _serial = self.fetching.lock().await;
        let mut last = None;
        for product in products {
            // Someone else may have fetched while this call waited.
            if let Some(vcek) = self.held(&report, product, now) {
                return Ok(vcek);
            }
            match self.fetch(kds, &report, product, now).await {
                Ok(vcek) => return Ok(vcek),
                // The wrong product for a version 2 report: KDS knows no such chip there.
                Err(e @ KdsError::Status { status: 400 | 404, .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KdsError::NotCached(vcek_key(&report, first))))
    }

    /// Verify a VCEK (DER) that came with `report` (in a record or the host's certificate table)
    /// at `now`, and keep it (memory and store) like a fetched one. A VCEK already held for the
    /// report is returned without verifying the offered one.
    pub fn offered(&self, report: &[u8], vcek: &[u8], now: u64) -> Result<Arc<VerifiedVcek>, KdsError> {
        let report = SnpReport::parse(report).map_err(KdsError::Report)?;
        let products = report.products();
        if let Some(vcek) = products.iter().find_map(|p| self.held(&report, *p, now)) {
            return Ok(vcek);
        }
        let mut last = None;
        for product in products {
            let key = vcek_key(&report, product);
            match self.accept(&report, product, &key, vcek, now) {
                Ok(verified) => {
                    self.persist(&key, vcek);
                    return Ok(verified);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            KdsError::Report(SnpError::Unsupported("no known product for the report's CPUID".into()))
        }))
    }

    /// Fetch, verify and keep `report`'s VCEK as `product`'s.
    async fn fetch(
        &self,
        kds: &KdsClient,
        report: &SnpReport,
        product: SnpProduct,
        now: u64,
    ) -> Result<Arc<VerifiedVcek>, KdsError> {
        let key = vcek_key(report, product);
        self.may_fetch(&key, now)?;
        self.count(|s| s.requests += 1);
        let fetched = kds.get(&vcek_path(report, product)).await;
        let der = match fetched? {
            Fetched::Body(der) => der,
            Fetched::Throttled(retry_after) => {
                self.count(|s| s.throttled += 1);
                let until = self.throttle(retry_after, now);
                tracing::warn!(until, "AMD KDS is throttling this node (HTTP 429); backing off");
                return Err(KdsError::Throttled { until });
            }
        };
        let verified = self.accept(report, product, &key, &der, now)?;
        self.persist(&key, &der);
        if let Ok(mut state) = self.state.lock() {
            state.backoff = 0;
        }
        self.count(|s| s.fetched += 1);
        tracing::info!(key, kds = %kds.base, "fetched SEV-SNP VCEK");
        Ok(verified)
    }

    /// Keep a verified VCEK in the store (if any) for the next start.
    fn persist(&self, key: &str, der: &[u8]) {
        if let Some(store) = &self.store
            && let Err(e) = store.put(key, der)
        {
            tracing::warn!(key, error = %e, "cannot persist VCEK");
        }
    }

    /// Verify `der` as `report`'s VCEK for `product` and keep it in memory.
    fn accept(
        &self,
        report: &SnpReport,
        product: SnpProduct,
        key: &str,
        der: &[u8],
        now: u64,
    ) -> Result<Arc<VerifiedVcek>, KdsError> {
        let invalid = |error| KdsError::Invalid { key: key.to_owned(), error };
        let verified = VerifiedVcek::verify_pinned(der, product, now).map_err(invalid)?;
        verified.matches(report).map_err(invalid)?;
        let verified = Arc::new(verified);
        self.update(key, |slot| slot.vcek = Some(verified.clone()));
        Ok(verified)
    }

    /// What memory holds for `report` as `product`'s; on the first use of a key, what the store
    /// holds, verified again at `now`. Only a VCEK valid at `now`.
    fn held(&self, report: &SnpReport, product: SnpProduct, now: u64) -> Option<Arc<VerifiedVcek>> {
        let key = vcek_key(report, product);
        let in_memory = match self.state.lock() {
            Ok(state) => state.slots.get(&key).map(|s| s.vcek.clone()),
            Err(_) => None,
        };
        let vcek = match in_memory {
            Some(vcek) => vcek,
            None => {
                let der = self.store.as_ref()?.get(&key).ok()??;
                match self.accept(report, product, &key, &der, now) {
                    Ok(vcek) => Some(vcek),
                    Err(error) => {
                        tracing::info!(key, %error, "stored VCEK is not usable; dropping it");
                        if let Some(store) = &self.store {
                            let _ = store.remove(&key);
                        }
                        None
                    }
                }
            }
        };
        vcek.filter(|v| v.check_time(now).is_ok())
    }

    /// Whether a fetch for `key` may start now (429 back-off, per-key interval); if so, the
    /// key's next fetch is pushed `min_interval` ahead.
    fn may_fetch(&self, key: &str, now: u64) -> Result<(), KdsError> {
        {
            let Ok(state) = self.state.lock() else { return Ok(()) };
            if now < state.throttled_until {
                return Err(KdsError::Throttled { until: state.throttled_until });
            }
            if let Some(slot) = state.slots.get(key)
                && now < slot.retry_at
            {
                return Err(KdsError::RateLimited(key.to_owned()));
            }
        }
        let retry_at = now.saturating_add(self.min_interval);
        self.update(key, |slot| slot.retry_at = retry_at);
        Ok(())
    }

    /// Start (or lengthen) the back-off after HTTP 429; returns its end.
    fn throttle(&self, retry_after: Option<u64>, now: u64) -> u64 {
        let Ok(mut state) = self.state.lock() else { return now };
        let doubled =
            if state.backoff == 0 { self.min_interval.max(1) } else { state.backoff.saturating_mul(2) };
        state.backoff = doubled.max(retry_after.unwrap_or(0)).min(MAX_BACKOFF);
        state.throttled_until = now.saturating_add(state.backoff);
        state.throttled_until
    }

    /// Change the slot of `key` (created if missing, evicting another beyond [`CAPACITY`]).
    fn update(&self, key: &str, change: impl FnOnce(&mut Slot)) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.slots.len() >= CAPACITY && !state.slots.contains_key(key) {
            // Forget keys without a VCEK first; they are the cheap ones to lose.
            let victim = state
                .slots
                .iter()
                .find(|(_, s)| s.vcek.is_none())
                .or_else(|| state.slots.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                state.slots.remove(&victim);
            }
        }
        change(state.slots.entry(key.to_owned()).or_default());
    }

    fn count(&self, change: impl FnOnce(&mut KdsStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            change(&mut stats);
        }
    }
}

#[cfg(test)]
#[path = "kds_tests.rs"]
mod tests;
