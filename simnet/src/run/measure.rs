//! Measurements over live nodes: routing-table health against the true closest peers, lookups
//! with recall, attestation record propagation, gossipsub transmission counts, and the process's
//! memory and CPU.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cocoon::network::{NetworkHandle, NetworkStatus};
use cocoon::node::Node;
use futures::StreamExt;
use libp2p::PeerId;
use libp2p::kad::KBucketKey;

use super::replay::replay;
use crate::fabric::Fabric;
use crate::report::{Dist, LookupSample, LookupStats, RoutingStats};

/// Kademlia's K: the closest-set size lookups aim for.
pub const K: usize = 20;
/// How long no connection may have been trimmed for the network to count as quiet.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// The `k` peers of `pool` closest to `target` (XOR metric), excluding `skip`.
pub fn closest(
    pool: &[PeerId],
    target: &KBucketKey<Vec<u8>>,
    skip: Option<&PeerId>,
    k: usize,
) -> Vec<PeerId> {
    let mut by: Vec<(libp2p::kad::KBucketDistance, PeerId)> = pool
        .iter()
        .filter(|p| Some(*p) != skip)
        .map(|p| (target.distance(&KBucketKey::from(*p)), *p))
        .collect();
    if by.len() > k {
        by.select_nth_unstable_by(k - 1, |a, b| a.0.cmp(&b.0));
        by.truncate(k);
    }
    by.sort_by_key(|a| a.0);
    by.into_iter().map(|(_, p)| p).collect()
}

/// Status queries in flight at once in [`statuses`].
const STATUS_PARALLEL: usize = 64;

/// Each node's network status (`None` where it has stopped), in `nodes`' order. The queries run
/// concurrently: on a saturated machine each waits for its node's task to be scheduled, and
/// asked one after another they held the driver for seconds per sweep (so starts fell behind).
pub async fn statuses(nodes: &[&Node]) -> Vec<Option<NetworkStatus>> {
    futures::stream::iter(nodes.iter().map(|n| n.network().clone()))
        .map(|network| async move { network.status().await.ok() })
        .buffered(STATUS_PARALLEL)
        .collect()
        .await
}

/// Routing health of `nodes` against the live set `pool`.
pub async fn routing(nodes: &[&Node], pool: &[PeerId]) -> RoutingStats {
    let mut healthy = 0usize;
    let mut known_share = 0.0;
    let mut sizes = 0usize;
    let mut counted = 0usize;
    for (node, status) in nodes.iter().zip(statuses(nodes).await) {
        let Some(status) = status else { continue };
        let me = node.peer_id();
        // The routing table is keyed by the peer id's multihash bytes, as `KBucketKey::from(PeerId)`.
        let target = KBucketKey::new(me.to_bytes());
        let truth = closest(pool, &target, Some(&me), K);
        let table: HashSet<PeerId> = status.routing_table.iter().copied().collect();
        let hits = truth.iter().filter(|p| table.contains(p)).count();
        if hits == truth.len() {
            healthy += 1;
        }
        known_share += if truth.is_empty() { 1.0 } else { hits as f64 / truth.len() as f64 };
        sizes += table.len();
        counted += 1;
    }
    let n = counted.max(1) as f64;
    RoutingStats {
        healthy_share: healthy as f64 / n,
        closest_known_mean: known_share / n,
        table_size_mean: sizes as f64 / n,
        healthy_over_time: Vec::new(),
    }
}

/// Every node's routing table now.
pub async fn tables(nodes: &[&Node]) -> HashMap<PeerId, Vec<PeerId>> {
    let mut tables = HashMap::with_capacity(nodes.len());
    for (node, status) in nodes.iter().zip(statuses(nodes).await) {
        if let Some(status) = status {
            tables.insert(node.peer_id(), status.routing_table);
        }
    }
    tables
}

/// Run `queries` lookups (`(querier, key)`), `parallel` at a time, scoring each against the `K`
/// closest of `pool`, and replay each over `tables` for its hop count.
pub async fn lookups(
    queries: Vec<(NetworkHandle, [u8; 32])>,
    pool: &[PeerId],
    tables: &HashMap<PeerId, Vec<PeerId>>,
    fabric: &Fabric,
    parallel: usize,
) -> LookupStats {
    let results: Vec<Option<LookupSample>> = futures::stream::iter(queries)
        .map(|(handle, key)| async move {
            let me = handle.peer_id();
            let target = KBucketKey::new(key.to_vec());
            let truth = closest(pool, &target, Some(&me), K);
            let replayed = replay(tables, pool, me, &key, K);
            let started = Instant::now();
            let found = handle.lookup(key.to_vec()).await.ok()?;
            let latency = started.elapsed();
            let hits = truth.iter().filter(|p| found.peers.contains(p)).count();
            let rtts: Vec<Duration> = found.peers.iter().map(|p| fabric.rtt(&me, p)).collect();
            let mean_rtt = rtts.iter().sum::<Duration>().as_secs_f64() / rtts.len().max(1) as f64;
            let duration = found.duration.as_secs_f64();
            Some(LookupSample {
                recall: if truth.is_empty() { 1.0 } else { hits as f64 / truth.len() as f64 },
                requests: found.requests,
                rounds: if mean_rtt > 0.0 { duration / mean_rtt } else { 0.0 },
                latency_ms: latency.as_secs_f64() * 1000.0,
                hops: replayed.hops,
                replay_rounds: replayed.rounds,
            })
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let queries = results.len();
    let samples: Vec<LookupSample> = results.into_iter().flatten().collect();
    let recall: Vec<f64> = samples.iter().map(|s| s.recall).collect();
    LookupStats {
        queries,
        failed: queries - samples.len(),
        recall_mean: recall.iter().sum::<f64>() / recall.len().max(1) as f64,
        recall: Dist::of(&recall),
        requests: Dist::of(&samples.iter().map(|s| f64::from(s.requests)).collect::<Vec<_>>()),
        rounds: Dist::of(&samples.iter().map(|s| s.rounds).collect::<Vec<_>>()),
        latency_ms: Dist::of(&samples.iter().map(|s| s.latency_ms).collect::<Vec<_>>()),
        hops: Dist::of(&samples.iter().filter_map(|s| s.hops).map(f64::from).collect::<Vec<_>>()),
        hops_unreached: samples.iter().filter(|s| s.hops.is_none()).count(),
        replay_rounds: Dist::of(&samples.iter().map(|s| f64::from(s.replay_rounds)).collect::<Vec<_>>()),
        quiet_wait_ms: 0.0,
        samples,
    }
}

/// Wait until no connection manager has trimmed anything for [`QUIET_FOR`] (or `max` is over);
/// returns how long that took.
pub async fn quiet(nodes: &[&Node], max: Duration) -> Duration {
    let started = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    while started.elapsed() < max {
        let trimmed: u64 = statuses(nodes).await.iter().flatten().map(|s| s.trimmed_connections).sum();
        if trimmed != last.0 {
            last = (trimmed, Instant::now());
        } else if last.1.elapsed() >= QUIET_FOR {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    started.elapsed()
}

/// Sum of an OpenMetrics counter over the lines whose name is `name` and that mention `label`.
pub fn counter(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

/// CPU time (user + system) of this process, seconds.
pub fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Coverage over time from per-pair delivery latencies (`None`: never delivered): the share of
/// all pairs delivered by each time, at `points` evenly spaced times up to the last delivery.
pub fn coverage_series(latencies: &[Option<f64>], points: usize) -> Vec<(f64, f64)> {
    let total = latencies.len().max(1) as f64;
    let mut delivered: Vec<f64> = latencies.iter().flatten().copied().collect();
    delivered.sort_by(f64::total_cmp);
    let Some(last) = delivered.last().copied() else { return Vec::new() };
    let mut series = vec![(0.0, 0.0)];
    let mut i = 0;
    for step in 1..=points {
        let t = last * step as f64 / points as f64;
        while i < delivered.len() && delivered[i] <= t {
            i += 1;
        }
        series.push((t, i as f64 / total));
    }
    series
}

/// Time by which `share` of all pairs were delivered.
pub fn time_to_cover(latencies: &[Option<f64>], share: f64) -> Option<f64> {
    let need = (latencies.len() as f64 * share).ceil() as usize;
    let mut delivered: Vec<f64> = latencies.iter().flatten().copied().collect();
    if need == 0 || delivered.len() < need {
        return None;
    }
    delivered.sort_by(f64::total_cmp);
    Some(delivered[need - 1])
}

/// Keep at most `cap` samples, evenly thinned (order kept).
pub fn thin(samples: Vec<f64>, cap: usize) -> Vec<f64> {
    if samples.len() <= cap {
        return samples;
    }
    let step = samples.len() as f64 / cap as f64;
    (0..cap).filter_map(|i| samples.get((i as f64 * step) as usize).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_name_and_label() {
        let text = "# HELP x\nfoo_total{hash=\"/cocoon/attestations/1\"} 7\nfoo_total{hash=\"other\"} 5\nfoo_bar_total{hash=\"/cocoon/attestations/1\"} 9\n";
        assert_eq!(counter(text, "foo_total", "attestations"), 7);
    }

    #[test]
    fn coverage_counts_undelivered_pairs() {
        let lat = [Some(10.0), Some(20.0), None, Some(40.0)];
        let series = coverage_series(&lat, 4);
        assert_eq!(series.last().map(|p| p.1), Some(0.75));
        assert_eq!(time_to_cover(&lat, 0.5), Some(20.0));
        assert_eq!(time_to_cover(&lat, 0.99), None);
    }

    #[test]
    fn closest_matches_a_full_sort() {
        let pool: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
        let target = KBucketKey::new(vec![7u8; 32]);
        let mut sorted = pool.clone();
        sorted.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        assert_eq!(closest(&pool, &target, None, 20), sorted[..20].to_vec());
    }
}
