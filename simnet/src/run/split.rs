//! Request load with churn (nodes stop and restart with the same key and data directory while
//! requests run), and partitions (a seeded minority cut off, then healed).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon::inference::client::{Delivery, InferenceClient};
use libp2p::PeerId;
use tokio::task::JoinSet;

use super::load::{self, Outcome};
use super::{Fleet, RunError, nodes};
use crate::fabric::Fabric;
use crate::plan::Kind;
use crate::report::{ChurnStats, PartitionStats, Report};
use crate::scenario::Scenario;

/// Lookups run while split and after healing.
const PARTITION_LOOKUPS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Down,
    Up,
}

type Clients = Arc<Mutex<Vec<Option<(InferenceClient, Arc<AtomicBool>)>>>>;

fn client_of(fleet: &Fleet, i: usize) -> Option<(InferenceClient, Arc<AtomicBool>)> {
    let client = fleet.nodes[i].as_ref()?.inference_client()?.clone();
    Some((client, Arc::new(AtomicBool::new(false))))
}

/// What the load phase leaves for the report.
#[derive(Debug, Default)]
pub(crate) struct LoadRun {
    /// Every request's outcome.
    pub outcomes: Vec<Outcome>,
    /// Worker lookups (found, not found) counted by client instances that departed: their
    /// counters end with them.
    pub departed_lookups: (u64, u64),
}

/// Run the planned requests and churn together.
pub(crate) async fn load_and_churn(
    env: &nodes::Env,
    fleet: &mut Fleet,
    report: &mut Report,
    run_started: Instant,
) -> Result<LoadRun, RunError> {
    let s = env.scenario.clone();
    if s.load.is_none() && s.churn.is_none() {
        return Ok(LoadRun::default());
    }
    let t0 = tokio::time::Instant::now();
    let clients: Clients =
        Arc::new(Mutex::new((0..fleet.nodes.len()).map(|i| client_of(fleet, i)).collect()));
    let mut tasks = JoinSet::new();
    if let Some(l) = &s.load {
        let model = nodes::model_id(&s);
        let honest = Arc::new(fleet.peers_of(Kind::Worker));
        for plan in fleet.plan.requests.clone() {
            let (clients, honest) = (clients.clone(), honest.clone());
            let ask = load::Ask {
                model_id: model.clone(),
                max_tokens: l.max_tokens,
                timeout: Duration::from_secs(l.timeout_secs),
                delivery: if l.stream { Delivery::Shown } else { Delivery::Replaceable },
            };
            tasks.spawn(async move {
                tokio::time::sleep_until(t0 + Duration::from_millis(plan.at_ms)).await;
                let current = clients.lock().ok().and_then(|c| c.get(plan.client).cloned().flatten());
                let (client, left) = current?;
                let known = knows_honest_worker(&client, &ask.model_id, &honest);
                let mut outcome = load::one(client, plan, ask, run_started, left).await;
                outcome.honest_worker_known = known;
                Some(outcome)
            });
        }
    }
    let mut timeline: Vec<(u64, usize, Event)> = Vec::new();
    for c in &fleet.plan.churn {
        timeline.push((c.down_ms, c.node, Event::Down));
        if let Some(up) = c.up_ms {
            timeline.push((up, c.node, Event::Up));
        }
    }
    timeline.sort_by_key(|(t, n, e)| (*t, *n, *e == Event::Up));
    let mut churn = ChurnStats::default();
    let mut down: HashSet<usize> = HashSet::new();
    let mut departed_lookups = (0, 0);
    let live_point =
        |fleet: &Fleet| (run_started.elapsed().as_secs_f64() * 1000.0, fleet.live().len() as f64);
    churn.live_over_time.push(live_point(fleet));
    for (at, i, event) in timeline {
        tokio::time::sleep_until(t0 + Duration::from_millis(at)).await;
        match event {
            Event::Down => {
                let Some(node) = fleet.nodes[i].take() else { continue };
                if let Ok(mut c) = clients.lock()
                    && let Some((_, left)) = c[i].take()
                {
                    left.store(true, Ordering::Release);
                }
                load::add_worker_lookups(&mut departed_lookups, &node);
                let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
                down.insert(i);
                churn.departures += 1;
            }
            Event::Up => {
                if restart(env, fleet, &clients, i).await {
                    down.remove(&i);
                    churn.returns += 1;
                }
            }
        }
        churn.live_over_time.push(live_point(fleet));
    }
    // Everyone comes back before the end (workers must be up to claim what they earned).
    for i in down.drain() {
        if restart(env, fleet, &clients, i).await {
            churn.returns += 1;
        }
    }
    churn.live_over_time.push(live_point(fleet));
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(outcome)) = done {
            outcomes.push(outcome);
        }
    }
    if s.churn.is_some() {
        report.churn = Some(churn);
    }
    Ok(LoadRun { outcomes, departed_lookups })
}

/// Whether `client` holds a verified record of an honest worker offering `model`.
fn knows_honest_worker(client: &InferenceClient, model: &str, honest: &HashSet<PeerId>) -> bool {
    client.models().iter().any(|(m, offers)| m == model && offers.iter().any(|(p, _)| honest.contains(p)))
}

async fn restart(env: &nodes::Env, fleet: &mut Fleet, clients: &Clients, i: usize) -> bool {
    // The stopped node's listener may take a moment to be released.
    for _ in 0..20 {
        match nodes::start(env, &fleet.plan.nodes[i]).await {
            Ok(node) => {
                fleet.nodes[i] = Some(node);
                if let Ok(mut c) = clients.lock() {
                    c[i] = client_of(fleet, i);
                }
                return true;
            }
            Err(e) => {
                tracing::debug!(node = i, error = %e, "restart failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    tracing::warn!(node = i, "node could not restart");
    false
}

async fn recall(fleet: &Fleet, fabric: &Fabric, offset: usize) -> f64 {
    let lookups = fleet.plan.lookups.iter().cycle().skip(offset).take(PARTITION_LOOKUPS);
    fleet.lookups(lookups, fabric, 8).await.recall_mean
}

pub(crate) async fn partition(
    s: &Scenario,
    fleet: &Fleet,
    fabric: &Fabric,
    run_started: Instant,
) -> PartitionStats {
    let Some(p) = &s.partition else { return PartitionStats::default() };
    let minority: HashSet<usize> = fleet.plan.minority.iter().copied().collect();
    let sides: HashMap<PeerId, u8> =
        fleet.peers.iter().enumerate().map(|(i, p)| (*p, u8::from(minority.contains(&i)))).collect();
    let t0 = Instant::now();
    let cut = fabric.split(sides);
    tracing::info!(cut, minority = minority.len(), "network split");
    let half = Duration::from_secs(p.duration_secs) / 2;
    tokio::time::sleep(half).await;
    let recall_during = recall(fleet, fabric, 0).await;
    tokio::time::sleep_until((t0 + Duration::from_secs(p.duration_secs)).into()).await;
    fabric.heal();
    let healed = Instant::now();
    let majority: HashSet<PeerId> =
        fleet.peers.iter().enumerate().filter(|(i, _)| !minority.contains(i)).map(|(_, p)| *p).collect();
    let settle = Duration::from_secs(p.settle_secs);
    let mut reconnect_ms = None;
    while healed.elapsed() < settle {
        let mut all = true;
        for (_, node) in fleet.live().into_iter().filter(|(i, _)| minority.contains(i)) {
            let across = node
                .network()
                .status()
                .await
                .is_ok_and(|st| st.connected.iter().any(|c| majority.contains(c)));
            if !across {
                all = false;
                break;
            }
        }
        if all {
            reconnect_ms = Some(healed.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep_until((healed + settle).into()).await;
    let recall_after = recall(fleet, fabric, PARTITION_LOOKUPS).await;
    let mut cross = 0usize;
    let mut counted = 0usize;
    let live: Vec<usize> = fleet.live().into_iter().map(|(i, _)| i).collect();
    for (i, st) in live.iter().zip(fleet.statuses(&live).await) {
        let Some(st) = st else { continue };
        counted += 1;
        let mine = minority.contains(i);
        if st.routing_table.iter().any(|p| majority.contains(p) == mine) {
            cross += 1;
        }
    }
    PartitionStats {
        split_at_ms: t0.duration_since(run_started).as_secs_f64() * 1000.0,
        healed_at_ms: healed.duration_since(run_started).as_secs_f64() * 1000.0,
        minority_share: minority.len() as f64 / fleet.peers.len().max(1) as f64,
        connections_cut: cut,
        recall_during,
        recall_after,
        cross_known_after: cross as f64 / counted.max(1) as f64,
        reconnect_ms,
    }
}
