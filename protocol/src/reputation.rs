//! Peer reputation: graded penalties, a per-peer score that decays over time, and when a peer is
//! blocked.
//!
//! Every penalty a node hands out is one of four [`Tolerance`] levels, graded here and nowhere
//! else. Only what is provably the peer's own fault is penalised (a record it signed that is
//! invalid, bytes it sent that do not decode); a verdict that depends on the verifier's
//! collateral, policy or version is an Ignore, never a penalty.
//!
//! A penalty adds [`Tolerance::points`] to the peer's score. The score halves every
//! [`HALF_LIFE_MS`]; when it reaches [`BLOCK_THRESHOLD`] the peer is blocked for [`BLOCK_MS`]
//! and its score starts again from zero when the block ends. The table holds at most its
//! capacity ([`DEFAULT_CAPACITY`]); the eviction rule is on [`Reputation::penalize`].
//!
//! Time is an argument (milliseconds on any monotonic clock the caller chooses), so the node and
//! tests drive the same logic.

use std::collections::BTreeMap;

/// How many offences of one kind block a peer ([`Tolerance::offences`]).
///
/// The counts hold for offences close together (`n` in quick succession block, `n - 1` do not);
/// spread out, the score decays between them (see [`HALF_LIFE_MS`]) and a peer can commit a
/// `High` offence now and then forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tolerance {
    /// One offence blocks: something an honest peer never does, such as a record it signed that
    /// fails verification.
    Fatal,
    /// Four offences block: malformed bytes on a stream that do not decode.
    Low,
    /// Ten offences block: a gossip message our validator rejects, a request beyond its budget.
    Mid,
    /// Fifty offences block: faults an honest peer may commit now and then under load (a stream
    /// cut short, a deadline missed on an answer it owed).
    High,
}

impl Tolerance {
    /// Every level, most severe first.
    pub const ALL: [Tolerance; 4] = [Tolerance::Fatal, Tolerance::Low, Tolerance::Mid, Tolerance::High];

    /// Offences in quick succession that block a peer.
    pub const fn offences(self) -> u32 {
        match self {
            Tolerance::Fatal => 1,
            Tolerance::Low => 4,
            Tolerance::Mid => 10,
            Tolerance::High => 50,
        }
    }

    /// Points one offence adds to the peer's score: `BLOCK_THRESHOLD / (offences - 0.5)`, so the
    /// `offences`-th crosses the threshold with half an offence to spare (the little decay
    /// between offences a few milliseconds apart cannot save the peer) and one fewer stays below
    /// it by half an offence.
    pub fn points(self) -> f64 {
        BLOCK_THRESHOLD / (f64::from(self.offences()) - 0.5)
    }

    /// Lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tolerance::Fatal => "fatal",
            Tolerance::Low => "low",
            Tolerance::Mid => "mid",
            Tolerance::High => "high",
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A score at or above this blocks the peer.
pub const BLOCK_THRESHOLD: f64 = 100.0;
/// The score halves every 10 minutes: an honest peer's occasional `High` offences (steady state
/// below 30 points at one a minute) never add up to a block, while a burst does.
pub const HALF_LIFE_MS: u64 = 10 * 60 * 1000;
/// A block lasts an hour: long enough that a misbehaving peer costs us nothing for a while, short
/// enough that the blocklist stays bounded by the rate of offences rather than by history (a
/// peer id is free, so a longer block buys little against a determined attacker).
pub const BLOCK_MS: u64 = 60 * 60 * 1000;
/// A score decayed below this (and no block in force) is forgotten when room is needed.
pub const FORGET_BELOW: f64 = 1.0;
/// Peers tracked at once. Entries cost ~100 bytes, so 4096 stay under half a MiB; an honest
/// network penalises a handful of peers at a time, and when the table is full the eviction rule
/// on [`Reputation::penalize`] applies.
pub const DEFAULT_CAPACITY: usize = 4096;

/// What a penalty did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Counted; the peer's score is now `score`.
    Counted {
        /// The decayed score including this penalty.
        score: f64,
    },
    /// The peer crossed [`BLOCK_THRESHOLD`] and is blocked until `until_ms`.
    Blocked {
        /// End of the block.
        until_ms: u64,
    },
    /// The peer was blocked already (until `until_ms`); nothing changed.
    AlreadyBlocked {
        /// End of the block.
        until_ms: u64,
    },
    /// The table is full of blocked peers and this penalty would not block: it was dropped
    /// rather than lift someone else's block early.
    Dropped,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Score at `at_ms`.
    score: f64,
    at_ms: u64,
    /// `(since, until)` of the block in force, if any.
    blocked: Option<(u64, u64)>,
}

impl Entry {
    /// The decayed score; zero once a block has ended (an ended block leaves a clean slate).
    fn score_at(&self, now_ms: u64) -> f64 {
        match self.blocked {
            Some((_, until)) if until <= now_ms => 0.0,
            _ => decay(self.score, now_ms.saturating_sub(self.at_ms)),
        }
    }

    fn blocked_until(&self, now_ms: u64) -> Option<u64> {
        self.blocked.and_then(|(_, until)| (until > now_ms).then_some(until))
    }

    /// Worth keeping when room is needed: a block in force or a score not yet decayed away.
    fn live(&self, now_ms: u64) -> bool {
        self.blocked_until(now_ms).is_some() || self.score_at(now_ms) >= FORGET_BELOW
    }
}

/// `score` after `elapsed_ms` of exponential decay with half-life [`HALF_LIFE_MS`].
pub fn decay(score: f64, elapsed_ms: u64) -> f64 {
    score * 0.5f64.powf(elapsed_ms as f64 / HALF_LIFE_MS as f64)
}

/// Scores and blocks of at most `capacity` peers, keyed by any ordered key (a `PeerId` in the
/// node).
#[derive(Debug, Clone)]
pub struct Reputation<K> {
    entries: BTreeMap<K, Entry>,
    capacity: usize,
}

impl<K: Ord + Clone> Reputation<K> {
    /// An empty table holding at most `capacity` peers (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { entries: BTreeMap::new(), capacity: capacity.max(1) }
    }

    /// Count one offence of `level` by `key` at `now_ms`.
    ///
    /// Eviction when the table is full and `key` is new: first every entry with no block in force
    /// and a score decayed below [`FORGET_BELOW`] is dropped; if none was, the unblocked entry
    /// with the lowest score goes; if every entry is a block in force, a penalty that blocks
    /// replaces the block that ends soonest, and one that does not is [`Verdict::Dropped`].
    pub fn penalize(&mut self, key: K, level: Tolerance, now_ms: u64) -> Verdict {
        if let Some(until_ms) = self.entries.get(&key).and_then(|e| e.blocked_until(now_ms)) {
            return Verdict::AlreadyBlocked { until_ms };
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let blocks = level.points() >= BLOCK_THRESHOLD;
            if !self.make_room(now_ms, blocks) {
                return Verdict::Dropped;
            }
        }
        let entry = self.entries.entry(key).or_insert(Entry { score: 0.0, at_ms: now_ms, blocked: None });
        let score = entry.score_at(now_ms) + level.points();
        *entry = Entry { score, at_ms: now_ms, blocked: None };
        if score >= BLOCK_THRESHOLD {
            let until_ms = now_ms.saturating_add(BLOCK_MS);
            entry.blocked = Some((now_ms, until_ms));
            Verdict::Blocked { until_ms }
        } else {
            Verdict::Counted { score }
        }
    }

    /// Free one slot; false if the only way would be to lift a block for a penalty that does not
    /// block.
    fn make_room(&mut self, now_ms: u64, for_a_block: bool) -> bool {
        if self.prune(now_ms) > 0 {
            return true;
        }
        let unblocked = self
            .entries
            .iter()
            .filter(|(_, e)| e.blocked_until(now_ms).is_none())
            .min_by(|a, b| a.1.score_at(now_ms).total_cmp(&b.1.score_at(now_ms)))
            .map(|(k, _)| k.clone());
        let victim = match unblocked {
            Some(key) => key,
            None if for_a_block => {
                match self.entries.iter().min_by_key(|(_, e)| e.blocked.map_or(0, |(_, until)| until)) {
                    Some((key, _)) => key.clone(),
                    None => return true,
                }
            }
            None => return false,
        };
        self.entries.remove(&victim);
        true
    }

    /// Block `key` at once (a [`Tolerance::Fatal`] offence).
    pub fn block(&mut self, key: K, now_ms: u64) -> Verdict {
        self.penalize(key, Tolerance::Fatal, now_ms)
    }

    /// Whether `key` is blocked at `now_ms`.
    pub fn is_blocked(&self, key: &K, now_ms: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.blocked_until(now_ms).is_some())
    }

    /// `key`'s decayed score at `now_ms` (zero if unknown or its block has ended).
    pub fn score(&self, key: &K, now_ms: u64) -> f64 {
        self.entries.get(key).map_or(0.0, |e| e.score_at(now_ms))
    }

    /// Number of peers blocked at `now_ms`.
    pub fn blocked_count(&self, now_ms: u64) -> usize {
        self.entries.values().filter(|e| e.blocked_until(now_ms).is_some()).count()
    }

    /// At most `max` blocked peers, most recently blocked first (ties by key).
    pub fn blocked_sample(&self, now_ms: u64, max: usize) -> Vec<K> {
        let mut blocked: Vec<(u64, &K)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.blocked_until(now_ms).and(e.blocked).map(|(since, _)| (since, k)))
            .collect();
        blocked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        blocked.into_iter().take(max).map(|(_, k)| k.clone()).collect()
    }

    /// Forget every entry with no block in force and a score decayed below [`FORGET_BELOW`];
    /// returns how many went.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.live(now_ms));
        before - self.entries.len()
    }

    /// Peers tracked (penalised recently or blocked).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most peers tracked at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60 * 1000;

    /// Offences of `level` one `gap_ms` apart until the peer is blocked; how many it took.
    fn offences_to_block(level: Tolerance, gap_ms: u64) -> Option<usize> {
        let mut table = Reputation::new(8);
        for n in 1..=1000 {
            if let Verdict::Blocked { .. } = table.penalize(1u32, level, n as u64 * gap_ms) {
                return Some(n);
            }
        }
        None
    }

    #[test]
    fn levels_block_after_the_documented_number_of_offences() {
        assert_eq!(offences_to_block(Tolerance::Fatal, 0), Some(1));
        assert_eq!(offences_to_block(Tolerance::Low, 0), Some(4));
        assert_eq!(offences_to_block(Tolerance::Mid, 0), Some(10));
        assert_eq!(offences_to_block(Tolerance::High, 0), Some(50));
        // A few milliseconds between offences (a real node) change nothing.
        for level in Tolerance::ALL {
            assert_eq!(offences_to_block(level, 5), Some(level.offences() as usize), "{level}");
        }
        let mut ordered = Tolerance::ALL.map(Tolerance::points).to_vec();
        ordered.dedup();
        assert!(ordered.windows(2).all(|w| w[0] > w[1]), "levels must get milder in order");
    }

    #[test]
    fn spread_out_offences_decay_and_never_block() {
        // One `High` offence a minute settles near 30 points; one `Mid` every ten minutes near 21.
        assert_eq!(offences_to_block(Tolerance::High, MINUTE), None);
        assert_eq!(offences_to_block(Tolerance::Mid, 10 * MINUTE), None);
        // But a `High` offence every five seconds is a burst.
        assert!(offences_to_block(Tolerance::High, 5_000).is_some());
    }

    #[test]
    fn the_score_halves_every_half_life() {
        let mut table = Reputation::new(8);
        table.penalize("p", Tolerance::Low, 0);
        let points = Tolerance::Low.points();
        assert!((table.score(&"p", HALF_LIFE_MS) - points / 2.0).abs() < 1e-9);
        assert!((table.score(&"p", 2 * HALF_LIFE_MS) - points / 4.0).abs() < 1e-9);
        assert_eq!(table.score(&"unknown", 0), 0.0);
    }

    #[test]
    fn a_block_expires_and_leaves_a_clean_slate() {
        let mut table = Reputation::new(8);
        assert_eq!(table.block(7u8, 1_000), Verdict::Blocked { until_ms: 1_000 + BLOCK_MS });
        assert!(table.is_blocked(&7, 1_000 + BLOCK_MS - 1));
        assert_eq!(
            table.penalize(7, Tolerance::High, 2_000),
            Verdict::AlreadyBlocked { until_ms: 1_000 + BLOCK_MS }
        );
        assert!(!table.is_blocked(&7, 1_000 + BLOCK_MS));
        assert_eq!(table.score(&7, 1_000 + BLOCK_MS), 0.0);
        let points = Tolerance::Low.points();
        assert_eq!(table.penalize(7, Tolerance::Low, 1_000 + BLOCK_MS), Verdict::Counted { score: points });
        assert_eq!(table.prune(1_000 + BLOCK_MS), 0, "a live score stays");
    }

    #[test]
    fn the_table_never_exceeds_its_capacity() {
        let mut table = Reputation::new(16);
        for key in 0..10_000u32 {
            table.penalize(key, Tolerance::High, u64::from(key));
            assert!(table.len() <= 16);
        }
        for key in 0..10_000u32 {
            table.block(key, 20_000 + u64::from(key));
            assert!(table.len() <= 16);
        }
        assert_eq!(table.blocked_count(30_000), 16);
    }

    #[test]
    fn eviction_takes_the_mildest_unblocked_peer_before_any_block() {
        let mut table = Reputation::new(3);
        table.block("blocked", 0);
        table.penalize("bad", Tolerance::Low, 0);
        table.penalize("mild", Tolerance::High, 0);
        table.penalize("new", Tolerance::Mid, 1);
        assert!(table.is_blocked(&"blocked", 1));
        assert!(table.score(&"bad", 1) > 20.0);
        assert_eq!(table.score(&"mild", 1), 0.0, "the mildest peer made room");
        assert!(table.score(&"new", 1) > 9.0);
    }

    #[test]
    fn a_full_table_of_blocks_drops_mild_penalties_and_replaces_the_soonest_block() {
        let mut table = Reputation::new(2);
        table.block("first", 0);
        table.block("second", 10);
        assert_eq!(table.penalize("mild", Tolerance::Mid, 20), Verdict::Dropped);
        assert!(table.is_blocked(&"first", 20) && table.is_blocked(&"second", 20));
        assert!(matches!(table.block("third", 30), Verdict::Blocked { .. }));
        assert!(!table.is_blocked(&"first", 30), "the block ending soonest made room");
        assert!(table.is_blocked(&"second", 30) && table.is_blocked(&"third", 30));
    }

    #[test]
    fn forgotten_scores_are_pruned_and_the_sample_is_bounded_and_newest_first() {
        let mut table = Reputation::new(100);
        table.penalize("old", Tolerance::Mid, 0);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            table.block(key, i as u64);
        }
        // 10.5 points fall below 1 after about 3.4 half-lives; the blocks are still in force.
        assert_eq!(table.prune(4 * HALF_LIFE_MS), 1);
        assert_eq!(table.blocked_count(4 * HALF_LIFE_MS), 4);
        assert_eq!(table.blocked_sample(4 * HALF_LIFE_MS, 2), vec!["d", "c"]);
        assert_eq!(table.prune(BLOCK_MS + 10), 4, "ended blocks with no score are forgotten");
        assert!(table.is_empty());
    }
}
