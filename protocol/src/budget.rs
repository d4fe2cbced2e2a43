//! Per-peer budgets: token buckets that refill over time, kept in a table with a cap on the
//! number of keys, so a peer (or many made-up peers) can only spend what its bucket holds and can
//! never grow the table without bound.
//!
//! Time is an argument (milliseconds on any monotonic clock), as everywhere in this crate.

use std::collections::HashMap;
use std::hash::Hash;

/// A quota: at most `burst` at once, refilled at `per_sec` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Tokens a full bucket holds (the burst allowed after a quiet period).
    pub burst: u32,
    /// Tokens added per second.
    pub per_sec: f64,
}

impl Quota {
    /// `burst` at once, then `per_sec` per second.
    pub const fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst, per_sec }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `quota` at `now_ms`.
    pub fn full(quota: Quota, now_ms: u64) -> Self {
        Self { tokens: f64::from(quota.burst), at_ms: now_ms }
    }

    fn refill(&mut self, quota: Quota, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * quota.per_sec).min(f64::from(quota.burst));
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Take one token if there is one.
    pub fn take(&mut self, quota: Quota, now_ms: u64) -> bool {
        self.refill(quota, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Return one token (never beyond a full bucket).
    pub fn give_back(&mut self, quota: Quota, now_ms: u64) {
        self.refill(quota, now_ms);
        self.tokens = (self.tokens + 1.0).min(f64::from(quota.burst));
    }

    /// Whether the bucket is full again at `now_ms` (its key can be forgotten).
    pub fn is_full(&self, quota: Quota, now_ms: u64) -> bool {
        let mut b = *self;
        b.refill(quota, now_ms);
        b.tokens >= f64::from(quota.burst)
    }
}

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// This key spent its bucket.
    #[error("this peer's budget is spent; try again later")]
    Peer,
    /// Every key together spent the shared bucket.
    #[error("the shared budget is spent; try again later")]
    Shared,
}

/// Token buckets per key plus one shared bucket, at most `max_keys` keys remembered.
///
/// Eviction: when the table is full, keys whose bucket has refilled are dropped first (they carry
/// no information); if none has, the request is refused as [`Exhausted::Shared`] rather than
/// evicting a key that is still paying off its spending (which would hand it a fresh bucket).
#[derive(Debug, Clone)]
pub struct Budgets<K> {
    per_key: Quota,
    shared_quota: Quota,
    shared: TokenBucket,
    buckets: HashMap<K, TokenBucket>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    /// Budgets of `per_key` each and `shared` in all, for at most `max_keys` keys.
    pub fn new(per_key: Quota, shared: Quota, max_keys: usize, now_ms: u64) -> Self {
        Self {
            per_key,
            shared_quota: shared,
            shared: TokenBucket::full(shared, now_ms),
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Spend one token of `key`'s bucket and of the shared bucket, or neither.
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), Exhausted> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let quota = self.per_key;
            self.buckets.retain(|_, b| !b.is_full(quota, now_ms));
            if self.buckets.len() >= self.max_keys {
                return Err(Exhausted::Shared);
            }
        }
        let quota = self.per_key;
        let bucket = self.buckets.entry(key.clone()).or_insert_with(|| TokenBucket::full(quota, now_ms));
        let mut trial = *bucket;
        if !trial.take(quota, now_ms) {
            *bucket = trial;
            return Err(Exhausted::Peer);
        }
        if !self.shared.take(self.shared_quota, now_ms) {
            return Err(Exhausted::Shared);
        }
        *bucket = trial;
        Ok(())
    }

    /// Return the token a successful [`Budgets::take`] by `key` spent, to its bucket and the
    /// shared one: for work that turned out to be what the budget is not meant to limit (an
    /// answer served in full). Neither bucket grows past its burst; a key already forgotten had a
    /// full bucket, so only the shared bucket is refunded.
    pub fn refund(&mut self, key: &K, now_ms: u64) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            bucket.give_back(self.per_key, now_ms);
        }
        self.shared.give_back(self.shared_quota, now_ms);
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let q = Quota::new(3, 2.0);
        let mut b = TokenBucket::full(q, 0);
        assert!((0..3).all(|_| b.take(q, 0)));
        assert!(!b.take(q, 0));
        assert!(!b.take(q, 499), "half a token after 499 ms");
        assert!(b.take(q, 500));
        assert!(b.is_full(q, 10_000));
        // A clock that goes backwards never mints tokens.
        assert!(!b.take(q, 100));
    }

    #[test]
    fn one_key_cannot_spend_another_keys_budget() {
        let mut budgets = Budgets::new(Quota::new(2, 0.1), Quota::new(100, 10.0), 16, 0);
        assert!(budgets.take(&"mallory", 0).is_ok());
        assert!(budgets.take(&"mallory", 0).is_ok());
        assert_eq!(budgets.take(&"mallory", 0), Err(Exhausted::Peer));
        assert!(budgets.take(&"alice", 0).is_ok());
    }

    #[test]
    fn a_refund_returns_one_token_and_never_more_than_the_burst() {
        let mut budgets = Budgets::new(Quota::new(2, 0.0), Quota::new(3, 0.0), 16, 0);
        assert!(budgets.take(&"alice", 0).is_ok());
        assert!(budgets.take(&"alice", 0).is_ok());
        assert_eq!(budgets.take(&"alice", 0), Err(Exhausted::Peer));
        budgets.refund(&"alice", 0);
        assert!(budgets.take(&"alice", 0).is_ok(), "the refunded token is spent again");
        assert_eq!(budgets.take(&"alice", 0), Err(Exhausted::Peer));
        // Refunds beyond what was taken cannot build a bucket above its burst (or the shared one).
        for _ in 0..10 {
            budgets.refund(&"alice", 0);
        }
        assert!(budgets.take(&"alice", 0).is_ok());
        assert!(budgets.take(&"alice", 0).is_ok());
        assert_eq!(budgets.take(&"alice", 0), Err(Exhausted::Peer));
        assert!(budgets.take(&"bob", 0).is_ok(), "the shared bucket was refunded up to its burst");
        assert_eq!(budgets.take(&"carol", 0), Err(Exhausted::Shared));
    }

    #[test]
    fn the_shared_bucket_caps_many_keys_together() {
        let mut budgets = Budgets::new(Quota::new(5, 1.0), Quota::new(3, 1.0), 1000, 0);
        let spent: Vec<_> = (0..5).map(|k| budgets.take(&k, 0)).collect();
        assert_eq!(spent.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(spent[4], Err(Exhausted::Shared));
    }

    #[test]
    fn the_table_is_capped_and_forgets_only_refilled_keys() {
        let mut budgets = Budgets::new(Quota::new(1, 1.0), Quota::new(1000, 1000.0), 4, 0);
        for k in 0..4 {
            assert!(budgets.take(&k, 0).is_ok());
        }
        // Full of keys still paying off: a fifth is refused, and nobody gets a fresh bucket.
        assert_eq!(budgets.take(&99, 0), Err(Exhausted::Shared));
        assert_eq!(budgets.take(&0, 0), Err(Exhausted::Peer));
        assert_eq!(budgets.len(), 4);
        // A second later every bucket has refilled: they are forgotten to make room.
        assert!(budgets.take(&99, 1000).is_ok());
        assert!(budgets.len() <= 4);
    }
}
