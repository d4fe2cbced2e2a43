//! Which worker a client sends a request to: a pure function of the verified offers, the price
//! cap, what the client observed of each worker (latency, `Busy` answers, failures, requests in
//! flight) and an injected random number generator.
//!
//! Eligible workers offer the model, fit the prompt plus `max_tokens` in their context, would cost
//! at most the price cap in the worst case, and are not excluded (already tried for this request).
//! Among them the choice is "power of two choices with memory": one candidate drawn uniformly
//! against the best-scored worker this client has measured (before it measured any, a second
//! distinct draw), the better-scored one wins, a tie going to the draw. The draws come from one
//! random number per selection that orders the candidates by a hash of it and their ids, so
//! adding or removing a candidate does not change the order of the others. Clients' first choices
//! are random, which spreads load across workers; after that a client keeps to a worker that
//! served it well, because trying a new one costs a channel (a deployment, a deposit locked) and
//! risks a stranger that takes the request and breaks it, and moves on when that worker slows
//! down, fails, answers `Busy` or fills up with this client's requests. A paying client weighs
//! the channel explicitly: a worker it has no channel with scores [`NEW_CHANNEL_FACTOR`] times
//! worse, and one it could not open a channel with (its caps reached) is not eligible.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

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
    /// The worker's queue as its last answer reported it (`ServerFrame::Queued`: requests
    /// waiting for a slot of the model, this client's included; 0 when it answered at once).
    pub queued: u32,
}

/// What paying a worker needs before its first request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Channel {
    /// Nothing: the offer is free, or this client does not pay.
    #[default]
    Free,
    /// The client has a channel with the worker already.
    Open,
    /// A new channel: a deploy (fees), a deposit locked for as long as the channel lives and a
    /// wait for the chain before the first token, then a claim and a close later on.
    New,
    /// A new channel the client may not open: its cap on channels or on deposits is reached.
    Capped,
    /// A channel the worker's published payment terms refuse (another network, a deposit or
    /// dispute window below its minimum, another contract version).
    Refused,
}

/// How many times better a worker the client has no channel with must score to be chosen over
/// one it has: a new channel costs a deploy and, later, a close (two chain transactions and their
/// fees), locks a deposit and waits for the chain, which one request's better latency or price
/// rarely repays. The factor equals what three recent failures or the client filling the worker
/// twice over cost a score, so a client moves to a new worker when its own ones fail or fill up,
/// not for a small gain.
pub const NEW_CHANNEL_FACTOR: f64 = 4.0;

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
    /// What paying it needs first.
    pub channel: Channel,
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

/// Whether `c` can serve `need` at all (a worker that would need a channel the client may not
/// open cannot).
pub fn eligible(c: &Candidate, need: &Need) -> bool {
    fits_context(c, need) && within_price(c, need) && !matches!(c.channel, Channel::Capped | Channel::Refused)
}

/// The most concurrent requests an offer is believed to serve when weighing load: the figure is
/// the worker's own claim, and a stranger claiming thousands would otherwise look idle however
/// many requests it already holds.
pub const MAX_CREDIBLE_CONCURRENCY: u32 = 64;

/// What an unknown worker's latency counts as before this client measured any worker, ms.
pub const UNKNOWN_LATENCY_MS: f64 = 200.0;

/// What an unknown worker's latency counts as among `pool`, ms: half again the mean this client
/// measured there (so a worker that served it well is preferred to one never tried), or
/// [`UNKNOWN_LATENCY_MS`] before it measured any.
pub fn unknown_latency_ms(pool: &[&Candidate]) -> f64 {
    let measured: Vec<f64> = pool.iter().filter_map(|c| c.observed.latency_ms).map(|l| l.max(0.0)).collect();
    if measured.is_empty() {
        return UNKNOWN_LATENCY_MS;
    }
    1.5 * measured.iter().sum::<f64>() / measured.len() as f64
}

/// Higher is better: fast, reliable, idle, cheap and already paid through a channel; a worker
/// never measured counts as `unknown_ms` fast.
pub fn score(c: &Candidate, need: &Need, unknown_ms: f64) -> f64 {
    let o = &c.observed;
    let latency = 1.0 + o.latency_ms.unwrap_or(unknown_ms).max(0.0) / 100.0;
    let failures = 2f64.powi(o.failures.min(30) as i32);
    let busy = 1.5f64.powi(o.busy.min(30) as i32);
    let waiting = f64::from(o.in_flight) + f64::from(o.queued.min(MAX_CREDIBLE_CONCURRENCY));
    let load = 1.0 + waiting / f64::from(c.max_concurrent.clamp(1, MAX_CREDIBLE_CONCURRENCY));
    let price = 1.0
        + worst_case(c.price_prompt_per_1k, c.price_completion_per_1k, need.prompt_tokens, need.max_tokens)
            as f64
            / need.max_price.max(1) as f64;
    let channel = if c.channel == Channel::New { NEW_CHANNEL_FACTOR } else { 1.0 };
    1.0 / (latency * failures * busy * load * price * channel)
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
    if pool.len() <= 1 {
        return pool.first().map(|c| c.peer);
    }
    let unknown = unknown_latency_ms(&pool);
    let score = |c: &Candidate| score(c, need, unknown);
    // One draw per selection puts the pool in a random order: the first is drawn, and so is the
    // second where the client has measured no worker better than the first.
    let draw = rng.next_u64();
    let mut order: Vec<(u64, &Candidate)> = pool.iter().map(|c| (rank(draw, &c.peer), *c)).collect();
    order.sort_unstable_by_key(|(r, _)| std::cmp::Reverse(*r));
    let drawn = order[0].1;
    // The best this client knows: measured, or paid through a channel it has (a client that
    // restarted has its channels before it measured anyone again).
    let best = pool
        .iter()
        .copied()
        .filter(|c| c.observed.latency_ms.is_some() || c.channel == Channel::Open)
        .max_by(|x, y| score(x).total_cmp(&score(y)));
    let other = match best {
        Some(best) if best.peer != drawn.peer => best,
        _ => order[1].1,
    };
    Some(if score(other) > score(drawn) { other.peer } else { drawn.peer })
}

/// A candidate's place in one selection's random order: a hash of the selection's random `draw`
/// and the candidate's id. Each place depends only on the draw and that candidate, so workers
/// joining or leaving the candidates do not reorder the rest: with the same random numbers, two
/// runs that differ by some workers (simnet's attack-free twin) choose alike among the others.
fn rank(draw: u64, peer: &PeerId) -> u64 {
    let digest = Sha256::new().chain_update(draw.to_le_bytes()).chain_update(peer.to_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
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
            channel: Channel::Free,
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
    fn keeps_to_a_worker_that_served_it_until_it_fills_up_or_fails() {
        let mut known = candidate(100);
        known.observed.latency_ms = Some(400.0);
        let mut cands: Vec<Candidate> = (0..9).map(|_| candidate(100)).collect();
        cands.insert(0, known.clone());
        // Slower than the unknown default, yet preferred to nine workers never tried.
        assert_eq!(tally(&cands, &[], 5)[0], 2000);
        // Full of this client's requests, or failing: the others get the requests.
        for worse in [
            Observed { in_flight: 4, ..known.observed },
            Observed { failures: 1, ..known.observed },
            Observed { queued: 8, ..known.observed },
        ] {
            cands[0].observed = worse;
            let counts = tally(&cands, &[], 6);
            assert!(counts[0] < 300 && counts[1..].iter().all(|&c| c > 100), "{counts:?}");
        }
        // Of two measured, the faster wins.
        let mut faster = candidate(100);
        faster.observed.latency_ms = Some(100.0);
        cands[0] = known;
        cands[1] = faster;
        let counts = tally(&cands, &[], 7);
        assert!(counts[1] > 1900, "{counts:?}");
    }

    #[test]
    fn a_paying_client_keeps_to_its_channels_until_they_fail_or_fill_up() {
        let mut cands: Vec<Candidate> =
            (0..10).map(|_| Candidate { channel: Channel::New, ..candidate(100) }).collect();
        // Never measured (a restarted client), yet the one it has a channel with wins every time.
        cands[0].channel = Channel::Open;
        assert_eq!(tally(&cands, &[], 11)[0], 2000);
        // Measured and somewhat slower than the unknown default: still kept.
        cands[0].observed.latency_ms = Some(900.0);
        assert_eq!(tally(&cands, &[], 12)[0], 2000);
        // Failing, or full of this client's requests and answering Busy: the others get requests.
        for worse in [
            Observed { failures: 3, ..cands[0].observed },
            Observed { in_flight: 8, busy: 2, ..cands[0].observed },
        ] {
            cands[0].observed = worse;
            let counts = tally(&cands, &[], 13);
            assert!(counts[0] < 1000 && counts[1..].iter().all(|&c| c > 50), "{counts:?}");
        }
        // Of two it has channels with, the faster wins; a new worker twice as fast does not.
        let mut open: Vec<Candidate> =
            (0..2).map(|_| Candidate { channel: Channel::Open, ..candidate(100) }).collect();
        open[0].observed.latency_ms = Some(300.0);
        open[1].observed.latency_ms = Some(200.0);
        let mut twice = Candidate { channel: Channel::New, ..candidate(100) };
        twice.observed.latency_ms = Some(100.0);
        open.push(twice);
        assert_eq!(tally(&open, &[], 14), vec![0, 2000, 0]);
    }

    #[test]
    fn capped_or_refused_channels_make_a_worker_ineligible_and_free_offers_need_none() {
        let capped = Candidate { channel: Channel::Capped, ..candidate(1) };
        let refused = Candidate { channel: Channel::Refused, ..candidate(1) };
        let free = candidate(1);
        assert_eq!(tally(&[capped.clone(), refused.clone(), free], &[], 15), vec![0, 0, 2000]);
        assert_eq!(select(&[capped, refused], &NEED, &[], &mut StdRng::seed_from_u64(16)), None);
        // Without channels in play the factor changes nothing: equal workers share the load.
        let counts = tally(&[candidate(100), candidate(100)], &[], 17);
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn other_candidates_do_not_change_the_choice_among_the_rest() {
        let honest: Vec<Candidate> = (0..8).map(|_| candidate(100)).collect();
        let mut more = honest.clone();
        more.extend((0..4).map(|_| candidate(100)));
        let (mut a, mut b) = (StdRng::seed_from_u64(9), StdRng::seed_from_u64(9));
        let mut same = 0;
        for _ in 0..1000 {
            let few = select(&honest, &NEED, &[], &mut a).unwrap();
            let many = select(&more, &NEED, &[], &mut b).unwrap();
            same += usize::from(few == many);
            // Whenever the larger pool chose one of the eight, it is the one the eight chose.
            if honest.iter().any(|c| c.peer == many) {
                assert_eq!(few, many);
            }
        }
        // Equal scores: the first draw wins, and it is one of the eight 8/12 of the time.
        assert!(same > 600, "{same}");
    }

    #[test]
    fn same_seed_same_choices() {
        let cands: Vec<_> = (0..5).map(|i| candidate(100 + i)).collect();
        assert_eq!(tally(&cands, &[], 7), tally(&cands, &[], 7));
    }
}
