//! What the strangers' run comes to: honest success and TTFT, blocks, what each stranger got,
//! money per party, and the checks against the scenario's targets (with the attack-free twin).

use std::collections::{BTreeMap, HashMap, HashSet};

use cocoon::payments::peer_key;
use libp2p::PeerId;

use super::{Blocks, SUCCESS_TARGET, TTFT_RATIO_TARGET, Tally};
use crate::plan::Kind;
use crate::report::{BlockedPair, Check, Dist, MoneyStats, PaymentStats, Report, StrangerStats, TwinStats};
use crate::run::Fleet;
use crate::run::load::Outcome;

/// Plan index and kind of each planned peer.
fn kinds(fleet: &Fleet) -> HashMap<PeerId, (usize, Kind)> {
    fleet.peers.iter().enumerate().map(|(i, p)| (*p, (i, fleet.plan.nodes[i].kind))).collect()
}

/// The honest side's requests and blocks, and the strangers' tallies (money and checks later).
pub(crate) fn summarise(
    fleet: &Fleet,
    outcomes: &[Outcome],
    tally: &Tally,
    blocks: &Blocks,
) -> StrangerStats {
    let kinds = kinds(fleet);
    let kind_name =
        |p: &Option<PeerId>| p.and_then(|p| kinds.get(&p)).map_or("none", |(_, k)| k.name()).to_owned();
    let counted: Vec<&Outcome> = outcomes.iter().filter(|o| !o.client_left).collect();
    let known: Vec<&&Outcome> = counted.iter().filter(|o| o.honest_worker_known).collect();
    let succeeded = known.iter().filter(|o| o.result.is_ok()).count();
    let mut failures_by_worker = BTreeMap::new();
    for o in known.iter().filter(|o| o.result.is_err()) {
        *failures_by_worker.entry(kind_name(&o.last_worker)).or_insert(0) += 1;
    }
    let served_by_strangers = known
        .iter()
        .filter(|o| o.served().is_some())
        .filter(|o| o.last_worker.and_then(|p| kinds.get(&p)).is_some_and(|(_, k)| !k.honest()))
        .count();
    let done: Vec<_> = known.iter().filter_map(|o| o.result.as_ref().ok()).collect();
    let first_try: Vec<f64> = done.iter().filter(|d| d.failovers == 0).map(|d| d.ttft_ms).collect();
    let mut stats = StrangerStats {
        ttft_first_try_ms: Dist::of(&first_try),
        failed_over: done.len() - first_try.len(),
        honest_requests: known.len(),
        honest_succeeded: succeeded,
        honest_success_rate: if known.is_empty() { 1.0 } else { succeeded as f64 / known.len() as f64 },
        honest_without_worker: counted.len() - known.len(),
        failures_by_worker,
        served_by_strangers,
        blocks_unseen: blocks.unseen,
        ..StrangerStats::default()
    };
    for n in fleet.plan.nodes.iter().filter(|n| !n.kind.honest()) {
        *stats.strangers.entry(n.kind.name().to_owned()).or_insert(0) += 1;
    }
    for (node, peer) in &blocks.seen {
        let by = fleet.plan.nodes[*node].kind;
        match kinds.get(peer) {
            Some((i, k)) if k.honest() => stats.honest_blocked.push(BlockedPair {
                node: *node,
                node_kind: by.name().to_owned(),
                peer: *i,
                peer_kind: k.name().to_owned(),
            }),
            Some((_, k)) => *stats.strangers_blocked.entry(k.name().to_owned()).or_insert(0) += 1,
            None => *stats.strangers_blocked.entry("outside the plan".to_owned()).or_insert(0) += 1,
        }
    }
    for (who, events) in tally.snapshot() {
        let side = if who.ends_with("_worker") { &mut stats.workers } else { &mut stats.clients };
        side.insert(who, events);
    }
    stats
}

/// Money per party from the stores after the final claims; `paid` is the run's reconciliation.
pub(crate) fn money(fleet: &Fleet, paid: &PaymentStats, tally: &Tally) -> Result<MoneyStats, String> {
    let keys_of = |pick: fn(Kind) -> bool| -> HashSet<[u8; 32]> {
        fleet
            .plan
            .nodes
            .iter()
            .filter(|n| pick(n.kind))
            .filter_map(|n| peer_key(&fleet.peers[n.index]))
            .collect()
    };
    let bad_workers = keys_of(|k| matches!(k, Kind::BadWorker(_)));
    let bad_clients = keys_of(|k| matches!(k, Kind::BadClient(_)));
    let mut m = MoneyStats {
        honest_workers_claimed: paid.claimed_nanotons,
        honest_workers_owed_by_honest: paid.owed_nanotons,
        honest_workers_owed_by_strangers: paid.owed_by_strangers_nanotons,
        strangers_deposited: u128::from(tally.total("deposited (nanotons)")),
        strangers_vouchers: tally.total("vouchers received"),
        ..MoneyStats::default()
    };
    for node in fleet.nodes_of(&[Kind::Client]) {
        let book = node.store().payments().map_err(|e| e.to_string())?;
        for c in book.client_channels().map_err(|e| e.to_string())? {
            if bad_workers.contains(&c.params.worker_key) {
                m.honest_clients_to_strangers += u128::from(c.cumulative);
                m.honest_channels_with_strangers += 1;
                m.honest_deposits_with_strangers += u128::from(c.deposited);
            } else {
                m.honest_clients_to_honest += u128::from(c.cumulative);
            }
        }
    }
    for node in fleet.nodes_of(&[Kind::Worker]) {
        let book = node.store().payments().map_err(|e| e.to_string())?;
        for stored in book.channels().map_err(|e| e.to_string())? {
            let mut vouchers = book.vouchers(&stored.channel.address).map_err(|e| e.to_string())?;
            vouchers.extend(stored.channel.best.clone());
            let best = vouchers.iter().map(|v| u128::from(v.voucher.cumulative)).max().unwrap_or(0);
            match bad_clients.contains(&stored.channel.params.client_key) {
                true => m.honest_workers_vouchered_by_strangers += best,
                false => m.honest_workers_vouchered += best,
            }
        }
    }
    Ok(m)
}

/// Fill in the twin's numbers (when it ran) and the checks.
pub(crate) fn judge(report: &mut Report) {
    let twin = report.twin.as_deref().map(|t| {
        let s = t.strangers.clone().unwrap_or_default();
        TwinStats {
            requests: s.honest_requests,
            succeeded: s.honest_succeeded,
            success_rate: s.honest_success_rate,
            ttft_ms: t.requests.ttft_ms.clone(),
            ttft_first_try_ms: s.ttft_first_try_ms.clone(),
            failed_over: s.failed_over,
            ttft_samples: t.requests.ttft_samples.clone(),
            honest_blocked: s.honest_blocked.len(),
            wall_secs: t.resources.wall_secs,
        }
    });
    let ttft = report.requests.ttft_ms.clone();
    let Some(stats) = report.strangers.as_mut() else { return };
    stats.ttft_ms = ttft;
    stats.ttft_p50_ratio =
        twin.as_ref().filter(|t| t.ttft_ms.p50 > 0.0).map(|t| stats.ttft_ms.p50 / t.ttft_ms.p50);
    stats.twin = twin;
    stats.checks = checks(stats);
}

fn checks(s: &StrangerStats) -> Vec<Check> {
    let blocked = s.honest_blocked.len();
    let ratio = match (s.ttft_p50_ratio, &s.twin) {
        (Some(r), Some(t)) => {
            (format!("{r:.3} ({:.0} ms vs {:.0} ms)", s.ttft_ms.p50, t.ttft_ms.p50), r <= TTFT_RATIO_TARGET)
        }
        _ => ("no attack-free twin ran (attack.twin = true)".to_owned(), false),
    };
    vec![
        Check {
            name: "honest request success (an honest worker known)".into(),
            target: format!("≥ {SUCCESS_TARGET:.2}"),
            value: format!("{:.3} ({} of {})", s.honest_success_rate, s.honest_succeeded, s.honest_requests),
            pass: s.honest_success_rate >= SUCCESS_TARGET && s.honest_requests > 0,
        },
        Check {
            name: "honest peers blocked by honest nodes".into(),
            target: "0 (and every block named)".into(),
            value: format!("{blocked} ({} blocks unnamed)", s.blocks_unseen),
            pass: blocked == 0 && s.blocks_unseen == 0,
        },
        Check {
            name: "honest TTFT p50 over the attack-free twin's".into(),
            target: format!("≤ {TTFT_RATIO_TARGET:.2}"),
            value: ratio.0,
            pass: ratio.1,
        },
    ]
}
