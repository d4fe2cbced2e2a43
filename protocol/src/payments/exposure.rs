//! How much unpaid work a worker risks. A request is served before it is paid (the client pays
//! the receipt), so every admitted request is a loan of at most its worst-case price. The worker
//! caps those loans per client identity and in total, whatever the concurrency:
//!
//! - per client key: `in flight + debt ≤ per_client` (a client with any debt is refused, so what
//!   a defaulting identity ever takes is at most `per_client`);
//! - per worker: `Σ in flight over all clients ≤ total`.
//!
//! A fresh identity buys another `per_client` only with a new channel: a deploy and a close with
//! their fees (about 0.026 TON together, measured) and a deposit locked for the dispute window;
//! the default `per_client` is below those fees. Pure bookkeeping: the node calls [`Exposure::reserve`] at admission and
//! [`Exposure::release`] when the request is paid or written off as debt.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The caps, nanotons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureLimits {
    /// Unpaid worst cases plus debt allowed to one client key. Default 20,000,000 (0.02 TON: less
    /// than the fees of deploying and closing the channel a new identity needs).
    pub per_client: u64,
    /// Unpaid worst cases allowed across all clients at once. Default 500,000,000 (0.5 TON).
    pub total: u64,
}

impl Default for ExposureLimits {
    fn default() -> Self {
        Self { per_client: 20_000_000, total: 500_000_000 }
    }
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    /// The client's unpaid requests (and debt) would pass its cap.
    #[error(
        "this client already has {in_flight} nanotons unpaid in flight and owes {debt}; another {worst_case} would pass the worker's limit of {limit} per client"
    )]
    PerClient {
        /// The client's admitted, unpaid worst cases.
        in_flight: u64,
        /// Its recorded debt.
        debt: u64,
        /// The new request's worst case.
        worst_case: u64,
        /// `per_client`.
        limit: u64,
    },
    /// All clients' unpaid requests would pass the worker's total cap.
    #[error("the worker has {in_flight} nanotons of unpaid requests in flight; its limit is {limit}")]
    Total {
        /// Everything in flight.
        in_flight: u64,
        /// `total`.
        limit: u64,
    },
}

/// What is in flight, by client key. Entries exist only while a client has requests in flight, so
/// the map is bounded by the worker's stream limit.
#[derive(Debug, Clone, Default)]
pub struct Exposure {
    limits: ExposureLimits,
    by_client: HashMap<[u8; 32], u64>,
    total: u64,
}

impl Exposure {
    /// Nothing in flight.
    pub fn new(limits: ExposureLimits) -> Self {
        Self { limits, by_client: HashMap::new(), total: 0 }
    }

    /// Reserve `worst_case` for a request of `client`, who owes `debt` already.
    pub fn reserve(&mut self, client: [u8; 32], debt: u64, worst_case: u64) -> Result<(), ExposureError> {
        let in_flight = self.of(&client);
        let client_after = in_flight.saturating_add(debt).saturating_add(worst_case);
        if client_after > self.limits.per_client {
            return Err(ExposureError::PerClient {
                in_flight,
                debt,
                worst_case,
                limit: self.limits.per_client,
            });
        }
        if self.total.saturating_add(worst_case) > self.limits.total {
            return Err(ExposureError::Total { in_flight: self.total, limit: self.limits.total });
        }
        *self.by_client.entry(client).or_default() += worst_case;
        self.total += worst_case;
        Ok(())
    }

    /// Give back a reservation made by [`Self::reserve`].
    pub fn release(&mut self, client: [u8; 32], worst_case: u64) {
        if let Some(v) = self.by_client.get_mut(&client) {
            let freed = worst_case.min(*v);
            *v -= freed;
            self.total = self.total.saturating_sub(freed);
            if *v == 0 {
                self.by_client.remove(&client);
            }
        }
    }

    /// In flight for one client.
    pub fn of(&self, client: &[u8; 32]) -> u64 {
        self.by_client.get(client).copied().unwrap_or(0)
    }

    /// In flight for all clients.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_client_and_in_total_whatever_the_concurrency() {
        let mut e = Exposure::new(ExposureLimits { per_client: 100, total: 250 });
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        for _ in 0..3 {
            e.reserve(a, 0, 30).unwrap();
        }
        assert!(matches!(e.reserve(a, 0, 30), Err(ExposureError::PerClient { in_flight: 90, .. })));
        e.reserve(a, 0, 10).unwrap();
        assert!(
            matches!(e.reserve(b, 95, 10), Err(ExposureError::PerClient { debt: 95, .. })),
            "debt counts"
        );
        e.reserve(b, 0, 100).unwrap();
        assert_eq!(e.reserve(c, 0, 60), Err(ExposureError::Total { in_flight: 200, limit: 250 }));
        e.reserve(c, 0, 50).unwrap();
        assert_eq!(e.total(), 250);
        e.release(a, 30);
        e.release(a, 1_000); // never below zero, never touches others
        assert_eq!((e.of(&a), e.of(&b), e.total()), (0, 100, 150));
        assert!(e.by_client.len() == 2, "empty entries are dropped");
    }
}
