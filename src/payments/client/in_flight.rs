//! What the client has in flight on each worker's channel: the worst-case prices of its requests
//! not yet paid (each is reserved at the worker until its voucher lands, so a top-up must cover
//! them all, not only the newest) and when the channel was last used (idle channels are closed).
//! One entry per worker the client paid since it started (at most one per channel it opened).
//! Also when each channel in use was last read from the chain ([`Seen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tycho_types::models::StdAddr;

/// The requests in flight per worker key.
#[derive(Debug, Default, Clone)]
pub(super) struct Ledger(Arc<Mutex<HashMap<[u8; 32], Use>>>);

#[derive(Debug, Clone, Copy)]
struct Use {
    /// Worst cases of the requests in flight.
    worst: u64,
    /// How many.
    requests: usize,
    /// When one last started or ended.
    last: Instant,
}

impl Ledger {
    /// Count a request of worst case `worst` on the channel with `key` until the result drops.
    pub(super) fn start(&self, key: [u8; 32], worst: u64) -> InFlight {
        let now = Instant::now();
        let total = self.with(key, now, |u| {
            u.worst = u.worst.saturating_add(worst);
            u.requests = u.requests.saturating_add(1);
            u.last = now;
            u.worst
        });
        InFlight { ledger: self.clone(), key, worst, total }
    }

    /// How long the channel with `key` has gone without a request, `None` while one is in flight.
    /// A channel not seen before counts as used now (after a restart, the idle time starts over).
    pub(super) fn idle_for(&self, key: [u8; 32], now: Instant) -> Option<Duration> {
        self.with(key, now, |u| (u.requests == 0).then(|| now.saturating_duration_since(u.last)))
    }

    /// The channel with `key` closed: forget it.
    pub(super) fn forget(&self, key: &[u8; 32]) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    fn with<T>(&self, key: [u8; 32], now: Instant, f: impl FnOnce(&mut Use) -> T) -> T {
        // A poisoned map only lost a count; go on with what it holds.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(key).or_insert(Use { worst: 0, requests: 0, last: now }))
    }
}

/// When each channel in use was last read from the chain (one entry per channel in use: entries
/// go when the channel is retired).
#[derive(Debug, Default)]
pub(super) struct Seen(Mutex<HashMap<StdAddr, Instant>>);

impl Seen {
    /// The chain showed `address` open just now.
    pub(super) fn seen(&self, address: &StdAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(address.clone(), Instant::now());
    }

    /// Whether the chain showed `address` open less than `age` ago.
    pub(super) fn seen_within(&self, address: &StdAddr, age: Duration) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(address).is_some_and(|t| t.elapsed() < age)
    }

    /// `address` is no longer in use.
    pub(super) fn forget(&self, address: &StdAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }
}

/// One request counted in flight; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight {
    ledger: Ledger,
    key: [u8; 32],
    worst: u64,
    total: u64,
}

impl InFlight {
    /// Worst cases in flight on the channel, this request's included, when it started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.ledger.with(self.key, now, |u| {
            u.worst = u.worst.saturating_sub(self.worst);
            u.requests = u.requests.saturating_sub(1);
            u.last = now;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_add_up_while_in_flight_and_the_channel_is_idle_only_after() {
        let ledger = Ledger::default();
        let a = ledger.start([1; 32], 100);
        let b = ledger.start([1; 32], 50);
        let other = ledger.start([2; 32], 7);
        assert_eq!((a.total(), b.total(), other.total()), (100, 150, 7));
        assert_eq!(ledger.idle_for([1; 32], Instant::now()), None);
        drop(a);
        assert_eq!(ledger.start([1; 32], 1).total(), 51);
        drop(b);
        let later = Instant::now() + Duration::from_secs(5);
        assert!(ledger.idle_for([1; 32], later).is_some_and(|d| d >= Duration::from_secs(5)));
        // First sight counts as a use.
        assert_eq!(ledger.idle_for([3; 32], later), Some(Duration::ZERO));
    }
}
