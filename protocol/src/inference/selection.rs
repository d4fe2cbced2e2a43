//! Which worker a client sends a request to: a pure function of the verified offers, the price
//! cap, what the client observed of each worker (latency, `Busy` answers, failures, requests in
//! flight) and an injected random number generator.
//!
//! Eligible workers offer the model, fit the prompt plus `max_tokens` in their context, would cost
//! at most the price cap in the worst case, and are not excluded (already tried for this request).
//! Among them the choice is "power of two choices": two distinct candidates drawn uniformly, the
//! better-scored one wins. That spreads load (the best worker is not picked by every client at
//! once) while still steering away from slow, busy, failing or expensive workers.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use rand_core::RngCore;

use super::pricing::worst_case;

/// What a client remembers of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Smoothed time to first token, milliseconds (`None` before the first request).
    pub latency_ms: Option<f64>,
    /// Recent failures (decayed by the caller).
    pub failures: u32,
    /// Recent `Busy` answers (decayed by the caller).
    pub busy: u32,
    /// Requests this client has in flight there.
    pub in_flight: u32,
}

/// One worker's offer for the model, with what the client observed of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The worker.
    pub peer: PeerId,
    /// Price per 1,000 prompt tokens, nanotons.
    pub price_prompt_per_1k: u64,
    /// Price per 1,000 completion tokens, nanotons.
    pub price_completion_per_1k: u64,
    /// Context length of the offer.
    pub context_length: u32,
    /// Requests the worker serves at once.
    pub max_concurrent: u32,
    /// History.
    pub observed: Observed,
}

/// What the request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Estimated prompt tokens (an upper estimate is fine).
    pub prompt_tokens: u32,
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// Price cap, nanotons.
    pub max_price: u64,
}

/// Whether the prompt plus `max_tokens` fits `c`'s context.
pub fn fits_context(c: &Candidate, need: &Need) -> bool {
    u64::from(need.prompt_tokens) + u64::from(need.max_tokens) <= u64::from(c.context_length)
}

/// Whether the worst case at `c`'s prices stays within the price cap.
pub fn within_price(c: &Candidate, need: &Need) -> bool {
    worst_case(c.price_prompt_per_1k, c.price_completion_per_1k, need.prompt_tokens, need.max_tokens)
        <= need.max_price
}

/// Whether `c` can serve `need` at all.
pub fn eligible(c: &Candidate, need: &Need) -> bool {
    fits_context(c, need) && within_price(c, need)
}

/// The most concurrent requests an offer is believed to serve when weighing load: the figure is
/// the worker's own claim, and a stranger claiming thousands would otherwise look idle however
/// many requests it already holds.
pub const MAX_CREDIBLE_CONCURRENCY: u32 = 64;

/// Higher is better: fast, reliable, idle and cheap.
pub fn score(c: &Candidate, need: &Need) -> f64 {
    let o = &c.observed;
    // Unknown latency counts as 200 ms: neither shunned nor preferred over measured fast workers.
    let latency = 1.0 + o.latency_ms.unwrap_or(200.0).max(0.0) / 100.0;
    let failures = 2f64.powi(o.failures.min(30) as i32);
    let busy = 1.5f64.powi(o.busy.min(30) as i32);
    let load = 1.0 + f64::from(o.in_flight) / f64::from(c.max_concurrent.clamp(1, MAX_CREDIBLE_CONCURRENCY));
    let price = 1.0
        + worst_case(c.price_prompt_per_1k, c.price_completion_per_1k, need.prompt_tokens, need.max_tokens)
            as f64
            / need.max_price.max(1) as f64;
    1.0 / (latency * failures * busy * load * price)
}

/// Pick a worker for `need` among `candidates`, skipping `exclude`.
pub fn select(
    candidates: &[Candidate],
    need: &Need,
    exclude: &[PeerId],
    rng: &mut impl RngCore,
) -> Option<PeerId> {
    let pool: Vec<&Candidate> =
        candidates.iter().filter(|c| !exclude.contains(&c.peer) && eligible(c, need)).collect();
    match pool.len() {
        0 => None,
        1 => Some(pool[0].peer),
        n => {
            let a = (rng.next_u64() % n as u64) as usize;
            let mut b = (rng.next_u64() % (n as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            let (a, b) = (pool[a], pool[b]);
            Some(if score(b, need) > score(a, need) { b.peer } else { a.peer })
        }
    }
}

/// Like [`select`], but the chosen peer's entry in `entries` must also pass `valid` (a check too
/// costly to run on every candidate, such as re-verifying its record): a rejected peer is left
/// out and the choice made again. `None` when no eligible candidate passes.
pub fn select_valid<T>(
    candidates: &[Candidate],
    mut entries: HashMap<PeerId, T>,
    need: &Need,
    exclude: &[PeerId],
    rng: &mut impl RngCore,
    mut valid: impl FnMut(&T) -> bool,
) -> Option<T> {
    let mut rejected = exclude.to_vec();
    loop {
        let peer = select(candidates, need, &rejected, rng)?;
        match entries.remove(&peer) {
            Some(entry) if valid(&entry) => return Some(entry),
            _ => rejected.push(peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn candidate(price: u64) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            price_prompt_per_1k: price,
            price_completion_per_1k: price,
            context_length: 2048,
            max_concurrent: 4,
            observed: Observed::default(),
        }
    }

    const NEED: Need = Need { prompt_tokens: 100, max_tokens: 100, max_price: 1000 };

    fn tally(cands: &[Candidate], exclude: &[PeerId], seed: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0; cands.len()];
        for _ in 0..2000 {
            if let Some(p) = select(cands, &NEED, exclude, &mut rng) {
                counts[cands.iter().position(|c| c.peer == p).unwrap()] += 1;
            }
        }
        counts
    }

    #[test]
    fn select_valid_skips_rejected_entries_and_checks_only_what_it_picks() {
        let cands: Vec<Candidate> = (0..5).map(|_| candidate(1000)).collect();
        let entries = |n: usize| cands.iter().take(n).enumerate().map(|(i, c)| (c.peer, i)).collect();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let mut checked = 0;
            let got = select_valid(&cands, entries(5), &NEED, &[cands[4].peer], &mut rng, |i: &usize| {
                checked += 1;
                *i % 2 == 1
            });
            // Only 1 and 3 pass; 4 is excluded; every check is of a distinct pick.
            assert!(matches!(got, Some(1 | 3)), "{got:?}");
            assert!(checked <= 3, "{checked} checks");
        }
        let none = select_valid(&cands, entries(5), &NEED, &[], &mut rng, |_: &usize| false);
        assert_eq!(none, None);
        // A candidate without an entry counts as rejected.
        let got = select_valid(&cands, entries(1), &NEED, &[], &mut rng, |_: &usize| true);
        assert_eq!(got, Some(0));
    }

    #[test]
    fn never_picks_ineligible_or_excluded_workers() {
        let cheap = candidate(1000);
        let pricey = candidate(6000); // 200 tokens at 6 nanotons each = 1200 > 1000
        let small = Candidate { context_length: 150, ..candidate(1) };
        let tried = candidate(1);
        let all = [cheap.clone(), pricey, small, tried.clone()];
        assert_eq!(tally(&all, &[tried.peer], 1), vec![2000, 0, 0, 0]);
        assert_eq!(select(&all, &NEED, &[cheap.peer, tried.peer], &mut StdRng::seed_from_u64(2)), None);
    }

    #[test]
    fn prefers_fast_reliable_idle_workers_but_spreads_load() {
        let mut fast = candidate(100);
        fast.observed.latency_ms = Some(20.0);
        let mut slow = candidate(100);
        slow.observed.latency_ms = Some(900.0);
        let mut failing = candidate(100);
        failing.observed.failures = 3;
        let mut busy = candidate(100);
        busy.observed.busy = 4;
        let counts = tally(&[fast, slow, failing, busy], &[], 3);
        assert!(counts[0] > counts[1] && counts[0] > counts[2] && counts[0] > counts[3], "{counts:?}");
        // With equals, everyone gets a share.
        let counts = tally(&[candidate(100), candidate(100), candidate(100)], &[], 4);
        assert!(counts.iter().all(|&c| c > 450), "{counts:?}");
    }

    #[test]
    fn same_seed_same_choices() {
        let cands: Vec<_> = (0..5).map(|i| candidate(100 + i)).collect();
        assert_eq!(tally(&cands, &[], 7), tally(&cands, &[], 7));
    }
}
