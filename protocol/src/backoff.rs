//! Exponential backoff with caller-supplied jitter.
//!
//! Used when a node cannot reach any bootstrap peer: each failed round waits longer, up to a cap,
//! and a successful round resets the schedule. Jitter is an input in `[0, 1)` so that callers (and
//! simnet) choose the randomness source.

use std::time::Duration;

/// Retry schedule: `initial * 2^attempt`, capped at `max`, spread by up to ±`jitter_share`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter_share: f64,
    attempt: u32,
}

impl Backoff {
    /// A schedule starting at `initial` and never exceeding `max`. `jitter_share` (clamped to
    /// `[0, 0.5]`) is the largest fraction by which a delay is shortened or lengthened.
    pub fn new(initial: Duration, max: Duration, jitter_share: f64) -> Self {
        Self { initial: initial.min(max), max, jitter_share: jitter_share.clamp(0.0, 0.5), attempt: 0 }
    }

    /// How many delays have been handed out since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next retry. `jitter` is a uniform sample in `[0, 1)`; 0.5 means none.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.attempt.min(31);
        self.attempt = self.attempt.saturating_add(1);
        let base = self.initial.checked_mul(1u32 << exp).unwrap_or(self.max).min(self.max);
        let spread = (jitter.clamp(0.0, 1.0) * 2.0 - 1.0) * self.jitter_share;
        base.mul_f64(1.0 + spread).min(self.max)
    }

    /// Start again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 0.0);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(0.3).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay(0.9), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_share_and_cap() {
        let mut lo = Backoff::new(Duration::from_secs(4), Duration::from_secs(60), 0.25);
        let mut hi = lo.clone();
        assert_eq!(lo.next_delay(0.0), Duration::from_secs(3));
        assert_eq!(hi.next_delay(0.999_999).as_millis(), 4_999);
        let mut capped = Backoff::new(Duration::from_secs(100), Duration::from_secs(60), 0.5);
        assert_eq!(capped.next_delay(0.99), Duration::from_secs(60));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(300), 0.0);
        for _ in 0..100 {
            assert!(b.next_delay(0.5) <= Duration::from_secs(300));
        }
    }
}
