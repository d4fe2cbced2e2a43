//! The formation and propagation phases: staggered starts with join-time tracking and routing
//! health sampled over time; attestation record propagation to every honest node; forgers'
//! floods.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon::node::Node;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::measure::{self, K};
use super::{Fleet, RunError, adversity, nodes};
use crate::plan::Kind;
use crate::report::{AttackStats, Dist, GossipStats, JoinStats, Series, Unjoined};
use crate::scenario::Scenario;

/// How often unjoined nodes are polled.
const JOIN_POLL: Duration = Duration::from_millis(250);
/// How often routing health is sampled during formation.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// Nodes sampled for the routing-health series.
const HEALTH_SAMPLE: usize = 200;

/// Start every planned node, staggered (workers last when the scenario defers them), and wait
/// for their routing tables to fill.
pub(crate) async fn form(
    env: &nodes::Env,
    fleet: &mut Fleet,
    started: Instant,
    series: Arc<Mutex<Series>>,
) -> Result<JoinStats, RunError> {
    let s = &env.scenario;
    let defer = s.join.workers_after_formation;
    let (later, first): (Vec<usize>, Vec<usize>) =
        (0..fleet.plan.nodes.len()).partition(|i| defer && fleet.plan.nodes[*i].kind.attests());
    let mut join_ms = vec![None; fleet.plan.nodes.len()];
    let mut unjoined = start_batch(env, fleet, &first, started, &mut join_ms, &series).await?;
    if !later.is_empty() {
        unjoined.extend(start_batch(env, fleet, &later, started, &mut join_ms, &series).await?);
    }
    observe(fleet, started, s, &series).await;
    // Nodes of the first batch may have joined while the second one started.
    unjoined.retain(|u| join_ms[u.node].is_none());
    let times: Vec<f64> = join_ms.iter().flatten().copied().collect();
    let formation_ms = fleet
        .started_at
        .iter()
        .zip(&join_ms)
        .filter_map(|(s, j)| Some(s.as_ref()?.duration_since(started).as_secs_f64() * 1000.0 + (*j)?))
        .fold(0.0, f64::max);
    Ok(JoinStats {
        started: fleet.started_at.iter().flatten().count(),
        joined: times.len(),
        time: Dist::of(&times),
        times_ms: times,
        formation_ms,
        unjoined,
    })
}

async fn start_batch(
    env: &nodes::Env,
    fleet: &mut Fleet,
    batch: &[usize],
    run_started: Instant,
    join_ms: &mut [Option<f64>],
    series: &Arc<Mutex<Series>>,
) -> Result<Vec<Unjoined>, RunError> {
    let s = &env.scenario;
    let interval = Duration::from_millis(s.join.interval_ms);
    let t0 = Instant::now();
    let mut next = 0;
    let mut pending: Vec<usize> = Vec::new();
    let mut last_health = Instant::now();
    let mut last_start = Instant::now();
    let mut rng = StdRng::seed_from_u64(s.seed);
    loop {
        // Starts that fall behind schedule (a saturated machine) must not hold back the polls
        // below, or join times would count the wait for the last start (seen at 1,000 nodes).
        let polled = Instant::now();
        while next < batch.len()
            && t0 + interval * next as u32 <= Instant::now()
            && polled.elapsed() < JOIN_POLL
        {
            let i = batch[next];
            let node = nodes::start(env, &fleet.plan.nodes[i]).await.map_err(RunError::Start)?;
            fleet.nodes[i] = Some(node);
            fleet.started_at[i] = Some(Instant::now());
            pending.push(i);
            next += 1;
            last_start = Instant::now();
            if next % 100 == 0 {
                tracing::info!(started = next, of = batch.len(), "starting nodes");
            }
        }
        let live = fleet.live().len();
        let need = K.min(live.saturating_sub(1));
        pending.retain(|i| fleet.nodes[*i].is_some());
        let sizes = fleet.statuses(&pending).await;
        let mut still = Vec::with_capacity(pending.len());
        for (i, status) in pending.drain(..).zip(sizes) {
            let size = status.map_or(0, |st| st.routing_table.len());
            if size >= need {
                let since = fleet.started_at[i].map_or(Duration::ZERO, |t| t.elapsed());
                join_ms[i] = Some(since.as_secs_f64() * 1000.0);
            } else {
                still.push(i);
            }
        }
        pending = still;
        if last_health.elapsed() >= HEALTH_EVERY {
            last_health = Instant::now();
            sample_health(fleet, run_started, &mut rng, series).await;
        }
        let all_started = next == batch.len();
        if all_started
            && (pending.is_empty() || last_start.elapsed() >= Duration::from_secs(s.join.settle_secs))
        {
            let mut unjoined = Vec::with_capacity(pending.len());
            for (i, status) in pending.iter().copied().zip(fleet.statuses(&pending).await) {
                let u = Unjoined {
                    node: i,
                    kind: fleet.plan.nodes[i].kind.name().to_owned(),
                    routing_table: status.as_ref().map_or(0, |st| st.routing_table.len()),
                    connected: status.as_ref().map_or(0, |st| st.connected.len()),
                };
                tracing::warn!(node = u.node, kind = %u.kind, routing_table = u.routing_table,
                    connected = u.connected, "settle time over; routing table not full");
                unjoined.push(u);
            }
            return Ok(unjoined);
        }
        let wait = if all_started { JOIN_POLL } else { interval.min(JOIN_POLL) };
        tokio::time::sleep(wait).await;
    }
}

/// Sample the routing health of up to [`HEALTH_SAMPLE`] random live nodes into `series`.
async fn sample_health(fleet: &Fleet, run_started: Instant, rng: &mut StdRng, series: &Arc<Mutex<Series>>) {
    let mut live = fleet.live();
    live.shuffle(rng);
    live.truncate(HEALTH_SAMPLE);
    let nodes: Vec<&Node> = live.iter().map(|(_, n)| *n).collect();
    let health = measure::routing(&nodes, &fleet.live_peers()).await;
    let t = run_started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(mut series) = series.lock() {
        series.push((t, health.healthy_share));
    }
}

/// The scenario's observation time after formation: routing health keeps being sampled.
async fn observe(fleet: &Fleet, run_started: Instant, s: &Scenario, series: &Arc<Mutex<Series>>) {
    let until = Instant::now() + Duration::from_secs(s.join.observe_secs);
    let mut rng = StdRng::seed_from_u64(s.seed ^ 0x0b5e);
    while Instant::now() < until {
        tokio::time::sleep(HEALTH_EVERY.min(until.saturating_duration_since(Instant::now()))).await;
        sample_health(fleet, run_started, &mut rng, series).await;
    }
}

/// Wait until every honest node holds every attesting worker's record (or the wait is over),
/// then measure when each arrived.
pub(crate) async fn propagation(s: &Scenario, fleet: &Fleet) -> GossipStats {
    let workers: Vec<(usize, &Node)> =
        fleet.live().into_iter().filter(|(i, _)| fleet.plan.nodes[*i].kind.attests()).collect();
    let receivers = fleet.live_of(&[Kind::Bootstrap, Kind::Worker, Kind::Client]);
    let pairs = |r: usize| workers.iter().filter(move |(w, _)| *w != r);
    let deadline = Instant::now() + Duration::from_secs(s.measure.gossip_wait_secs);
    loop {
        let missing = receivers
            .iter()
            .map(|(r, node)| {
                pairs(*r).filter(|(w, _)| node.attestation().first_seen(&fleet.peers[*w]).is_none()).count()
            })
            .sum::<usize>();
        if missing == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(s.measure.sample_ms.max(50))).await;
    }
    let mut latencies = Vec::new();
    let mut complete = 0;
    let (mut received, mut unique, mut fetched) = (0, 0, 0);
    for (r, node) in &receivers {
        let mut all = true;
        let joined = fleet.started_at[*r];
        for (w, worker) in pairs(*r) {
            let published = worker.attestation().first_published();
            let seen = node.attestation().first_seen(&fleet.peers[*w]);
            let latency = match (published, seen) {
                (Some(p), Some(seen)) => {
                    let from = joined.map_or(p, |j| j.max(p));
                    Some(seen.saturating_duration_since(from).as_secs_f64() * 1000.0)
                }
                _ => None,
            };
            all &= latency.is_some();
            latencies.push(latency);
        }
        if all {
            complete += 1;
        }
        let text = node.metrics_text();
        received +=
            measure::counter(&text, "gossipsub_topic_msg_recv_counts_unfiltered_total", "attestations");
        unique += measure::counter(&text, "gossipsub_topic_msg_recv_counts_total", "attestations");
        fetched += node.attestation().verdicts().fetched;
    }
    let delivered: Vec<f64> = latencies.iter().flatten().copied().collect();
    GossipStats {
        records: workers.len(),
        receivers: receivers.len(),
        coverage: delivered.len() as f64 / latencies.len().max(1) as f64,
        receivers_complete: complete,
        coverage_over_time: measure::coverage_series(&latencies, 100),
        latency_ms: Dist::of(&delivered),
        latency_samples: measure::thin(delivered, 20_000),
        p99_coverage_ms: measure::time_to_cover(&latencies, 0.99),
        messages_received: received,
        messages_unique: unique,
        transmissions_per_delivery: received as f64 / unique.max(1) as f64,
        fetched,
    }
}

/// Every forger floods forged records; then see what reached whom.
pub(crate) async fn forgery(s: &Scenario, fleet: &Fleet) -> AttackStats {
    let forgers = fleet.live_of(&[Kind::Forger]);
    let floods = forgers.iter().map(|(i, node)| {
        adversity::flood(node, s.attack.forged_per_forger, Duration::from_millis(50), s.seed ^ *i as u64)
    });
    let published: u64 = futures::future::join_all(floods).await.into_iter().sum();
    // Let the last floods be judged and (not) forwarded: a few heartbeats.
    tokio::time::sleep(Duration::from_millis(s.network.gossip_heartbeat_ms * 3 + 1000)).await;
    let honest = fleet.nodes_of(&[Kind::Bootstrap, Kind::Worker, Kind::Client]);
    adversity::assess(&honest, &fleet.peers_of(Kind::Forger), published).await
}
