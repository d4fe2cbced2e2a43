//! Lazy settlement: when a worker claims on chain and when a client tops up. Pure functions of
//! the channel's state and the current time, so the node, simnet and tests apply the same policy.
//!
//! A worker claims when what it holds unclaimed passes a threshold, when the channel's deposit is
//! nearly promised away, when the client has started closing (the dispute window is running), or
//! when the channel has been idle for a while; apart from a close, never for less than
//! `min_claim`. Every claim therefore moves at least `min_claim`, which bounds the number of
//! claims by the amount paid, not by the number of requests ([`SettlementPolicy::claim_bound`]).

use serde::{Deserialize, Serialize};

/// Nanotons in one TON.
pub const NANOTONS_PER_TON: u64 = 1_000_000_000;

/// The knobs (all amounts in nanotons, times in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementPolicy {
    /// Claim once this much is unclaimed.
    pub claim_threshold: u64,
    /// Claim when the unclaimed vouchers reach this share of what the contract still holds
    /// (deposited − claimed), per mille: the client is about to run dry.
    pub near_deposit_permille: u32,
    /// Claim when no voucher arrived for this long.
    pub idle_after_secs: u64,
    /// Never claim less than this, except while the channel is closing.
    pub min_claim: u64,
    /// A client tops up when its unspent deposit falls below this share of its target (per mille).
    pub topup_below_permille: u32,
}

impl Default for SettlementPolicy {
    fn default() -> Self {
        Self {
            claim_threshold: NANOTONS_PER_TON,
            near_deposit_permille: 900,
            idle_after_secs: 6 * 3600,
            min_claim: NANOTONS_PER_TON / 10,
            topup_below_permille: 250,
        }
    }
}

/// What the worker knows about one channel when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClaimView {
    /// On-chain deposit.
    pub deposited: u64,
    /// Cumulative amount of the best voucher held.
    pub cumulative: u64,
    /// Already paid out on chain.
    pub claimed: u64,
    /// When the last voucher arrived (unix seconds).
    pub last_voucher_at: u64,
    /// Whether the client started closing.
    pub closing: bool,
}

impl ClaimView {
    /// Held but not yet claimed.
    pub fn unclaimed(&self) -> u64 {
        self.cumulative.saturating_sub(self.claimed)
    }
}

/// Why a claim is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimReason {
    /// The client is closing: claim before the window ends.
    Closing,
    /// Unclaimed passed the threshold.
    Threshold,
    /// The vouchers nearly exhaust the deposit.
    NearDeposit,
    /// No voucher for a while.
    Idle,
}

impl ClaimReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closing => "closing",
            Self::Threshold => "threshold",
            Self::NearDeposit => "near_deposit",
            Self::Idle => "idle",
        }
    }
}

impl SettlementPolicy {
    /// Whether the worker should claim now, and why.
    pub fn claim_due(&self, v: &ClaimView, now: u64) -> Option<ClaimReason> {
        let unclaimed = v.unclaimed();
        if unclaimed == 0 {
            return None;
        }
        if v.closing {
            return Some(ClaimReason::Closing);
        }
        if unclaimed >= self.claim_threshold.max(self.min_claim) {
            return Some(ClaimReason::Threshold);
        }
        if unclaimed < self.min_claim {
            return None;
        }
        let held = v.deposited.saturating_sub(v.claimed);
        if u128::from(unclaimed) * 1000 >= u128::from(held) * u128::from(self.near_deposit_permille) {
            return Some(ClaimReason::NearDeposit);
        }
        if now.saturating_sub(v.last_voucher_at) >= self.idle_after_secs {
            return Some(ClaimReason::Idle);
        }
        None
    }

    /// How much a client should deposit now, given its target deposit and what is left unspent.
    /// `None` while enough is left.
    pub fn topup_due(&self, target: u64, unspent: u64) -> Option<u64> {
        let floor = u128::from(target) * u128::from(self.topup_below_permille) / 1000;
        (u128::from(unspent) < floor).then(|| target.saturating_sub(unspent)).filter(|a| *a > 0)
    }

    /// Most claims this policy can make on a channel over which `paid` nanotons were vouched:
    /// every claim but one (during a close) moves at least `min_claim`.
    pub fn claim_bound(&self, paid: u64) -> u64 {
        paid / self.min_claim.max(1) + 1
    }

    /// Most top-ups a client makes while spending `spent` nanotons with the given target: each
    /// top-up restores the unspent deposit to the target, and the next is due only after at
    /// least `target · (1 − topup_below)` has been spent.
    pub fn topup_bound(&self, target: u64, spent: u64) -> u64 {
        let per = u128::from(target) * u128::from(1000 - self.topup_below_permille.min(1000)) / 1000;
        match u64::try_from(per).unwrap_or(u64::MAX) {
            0 => u64::MAX,
            per => spent / per + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SettlementPolicy {
        SettlementPolicy {
            claim_threshold: 1_000,
            near_deposit_permille: 900,
            idle_after_secs: 100,
            min_claim: 200,
            topup_below_permille: 250,
        }
    }

    #[test]
    fn claims_follow_the_rules_in_order() {
        let p = policy();
        let v = |cumulative, claimed, last, closing| ClaimView {
            deposited: 10_000,
            cumulative,
            claimed,
            last_voucher_at: last,
            closing,
        };
        assert_eq!(p.claim_due(&v(500, 500, 0, true), 1_000), None, "nothing unclaimed");
        assert_eq!(p.claim_due(&v(501, 500, 0, true), 1), Some(ClaimReason::Closing));
        assert_eq!(p.claim_due(&v(1_500, 500, 0, false), 1), Some(ClaimReason::Threshold));
        assert_eq!(p.claim_due(&v(999, 500, 0, false), 1), None, "below threshold, not idle");
        assert_eq!(p.claim_due(&v(600, 500, 0, false), 1_000), None, "idle but below min_claim");
        assert_eq!(p.claim_due(&v(999, 500, 0, false), 100), Some(ClaimReason::Idle));
        assert_eq!(p.claim_due(&v(9_900, 9_000, 50, false), 60), Some(ClaimReason::NearDeposit));
        assert_eq!(p.claim_due(&v(9_800, 9_000, 50, false), 60), None, "80 % of what is held");
    }

    #[test]
    fn topups_restore_the_target_only_when_low() {
        let p = policy();
        assert_eq!(p.topup_due(1_000, 300), None);
        assert_eq!(p.topup_due(1_000, 249), Some(751));
        assert_eq!(p.topup_due(0, 0), None);
    }

    /// The bound the node's tests assert: simulate many small requests against the policy and
    /// count claims and top-ups.
    #[test]
    fn simulated_traffic_stays_within_the_bounds() {
        let p = SettlementPolicy::default();
        let target = 5 * NANOTONS_PER_TON;
        let (mut deposited, mut cumulative, mut claimed) = (target, 0u64, 0u64);
        let (mut claims, mut topups) = (0u64, 0u64);
        for i in 0..10_000u64 {
            let amount = 1_000_000 + (i * 7_919) % 20_000_000; // 0.001–0.021 TON
            if let Some(top) = p.topup_due(target, deposited - cumulative) {
                deposited += top;
                topups += 1;
            }
            cumulative += amount;
            let view = ClaimView { deposited, cumulative, claimed, last_voucher_at: i, closing: false };
            if p.claim_due(&view, i).is_some() {
                claimed = cumulative;
                claims += 1;
            }
        }
        assert!(claims <= p.claim_bound(cumulative), "{claims} claims for {cumulative}");
        assert!(topups <= p.topup_bound(target, cumulative), "{topups} top-ups");
        assert!(claims + topups < 10_000 / 50, "{claims} claims + {topups} top-ups per 10,000 requests");
    }
}
