//! Running a scenario: start the planned nodes (staggered), wait for formation, then measure in
//! phases — routing health and lookups, record propagation, forgery, request load with churn and
//! payments, partition and healing — and assemble the report.
//!
//! Submodules: `nodes` (configuring and starting a node), `measure` (routing, lookups, series,
//! process resources), `load` (requests and payments), `adversity` (forgers), `phases` (join and
//! propagation watchers), `split` (partition and churn), `strangers` (malicious clients and
//! workers, and the attack-free twin's comparison).

mod adversity;
mod load;
pub mod measure;
mod nodes;
mod phases;
mod replay;
mod split;
mod strangers;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon::chain::local::{Clock, LocalChain};
use cocoon::network::NetworkStatus;
use cocoon::node::Node;
use futures::StreamExt;
use libp2p::PeerId;
use tokio::sync::watch;

use crate::fabric::{Fabric, LinkModel};
use crate::plan::{Kind, Plan};
use crate::report::{Report, Resources};
use crate::scenario::Scenario;
pub use nodes::Env;

/// Why a run failed (as opposed to measuring something bad, which the report shows).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node could not start.
    #[error("cannot start {0}")]
    Start(String),
    /// The data directory could not be created.
    #[error("cannot create the data directory: {0}")]
    Dir(std::io::Error),
    /// The shared chain could not be set up or reconciled.
    #[error("chain: {0}")]
    Chain(String),
}

/// The run's nodes: `None` while a node is down (churn) or not started yet.
pub(crate) struct Fleet {
    pub plan: Plan,
    pub nodes: Vec<Option<Node>>,
    pub started_at: Vec<Option<Instant>>,
    pub peers: Vec<PeerId>,
}

impl Fleet {
    /// Live nodes with their plan index.
    pub fn live(&self) -> Vec<(usize, &Node)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n))).collect()
    }

    /// Network status of the nodes at `indices`, in that order (`None` for a node not running or
    /// not answering), asked concurrently ([`measure::statuses`]).
    pub async fn statuses(&self, indices: &[usize]) -> Vec<Option<NetworkStatus>> {
        let running: Vec<&Node> = indices.iter().filter_map(|i| self.nodes[*i].as_ref()).collect();
        let mut answers = measure::statuses(&running).await.into_iter();
        indices.iter().map(|i| self.nodes[*i].as_ref().and_then(|_| answers.next().flatten())).collect()
    }

    /// Peer ids of live nodes.
    pub fn live_peers(&self) -> Vec<PeerId> {
        self.live().into_iter().map(|(i, _)| self.peers[i]).collect()
    }

    /// Live nodes of the given kinds.
    pub fn live_of(&self, kinds: &[Kind]) -> Vec<(usize, &Node)> {
        self.live().into_iter().filter(|(i, _)| kinds.contains(&self.plan.nodes[*i].kind)).collect()
    }

    /// Live nodes of the given kinds, without their indices.
    pub fn nodes_of(&self, kinds: &[Kind]) -> Vec<&Node> {
        self.live_of(kinds).into_iter().map(|(_, n)| n).collect()
    }

    /// Every live node, without its index.
    pub fn live_nodes(&self) -> Vec<&Node> {
        self.nodes.iter().flatten().collect()
    }

    /// Run the planned `lookups` from those queriers still live, `parallel` at a time, scored
    /// against the live set and replayed over the routing tables as they are now.
    pub async fn lookups<'a>(
        &self,
        lookups: impl Iterator<Item = &'a (usize, [u8; 32])>,
        fabric: &Fabric,
        parallel: usize,
    ) -> crate::report::LookupStats {
        let queries = lookups
            .filter_map(|(i, key)| self.nodes[*i].as_ref().map(|n| (n.network().clone(), *key)))
            .collect();
        let tables = measure::tables(&self.live_nodes()).await;
        measure::lookups(queries, &self.live_peers(), &tables, fabric, parallel).await
    }

    /// Peer ids of every planned node of `kind`.
    pub fn peers_of(&self, kind: Kind) -> HashSet<PeerId> {
        self.plan.of(kind).into_iter().map(|i| self.peers[i]).collect()
    }
}

fn link_model(s: &Scenario) -> LinkModel {
    LinkModel {
        latency_ms: s.network.latency_ms.clone(),
        jitter: s.network.jitter,
        loss: s.network.loss,
        stream_loss: s.network.stream_loss,
        bandwidth_bytes_per_sec: s.network.bandwidth_mbps * 1_000_000.0 / 8.0,
    }
}

/// Samples process memory and CPU until `stop`.
fn spawn_sampler(
    period: Duration,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Resources> {
    tokio::spawn(async move {
        let mut r = Resources { rss_start_bytes: measure::rss_bytes(), ..Resources::default() };
        let (mut last_t, mut last_cpu) = (Instant::now(), measure::cpu_secs());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => break,
            }
            let (now, cpu, rss) = (Instant::now(), measure::cpu_secs(), measure::rss_bytes());
            let t = now.duration_since(started).as_secs_f64() * 1000.0;
            r.rss_peak_bytes = r.rss_peak_bytes.max(rss);
            r.rss_mib.push((t, rss as f64 / (1024.0 * 1024.0)));
            let dt = now.duration_since(last_t).as_secs_f64();
            if dt > 0.0 {
                r.cpu_cores.push((t, (cpu - last_cpu) / dt));
            }
            (last_t, last_cpu) = (now, cpu);
        }
        r
    })
}

/// Run `scenario` (whose file text is `text`); node data lives under `data_dir` (a temporary
/// directory when `None`). Progress goes to the log. With `attack.twin`, the attack-free twin
/// (the same plan without any attacker) runs first, and the report carries it and the checks.
pub async fn run(scenario: Scenario, text: String, data_dir: Option<PathBuf>) -> Result<Report, RunError> {
    let a = &scenario.attack;
    let attacked = a.strangers() + a.sybil_workers + a.forgers > 0;
    let twin = if a.twin && attacked {
        let mut calm = scenario.clone();
        calm.attack = calm.attack.without_attackers();
        tracing::info!("running the attack-free twin first");
        let dir = data_dir.as_ref().map(|d| d.join("twin"));
        let mut twin = run_once(calm, text.clone(), dir, true).await?;
        twin.notes.push(
            "This is the attack-free twin: the same scenario, seed and honest plan with every attacker removed."
                .into(),
        );
        Some(Box::new(twin))
    } else {
        None
    };
    let watch = a.strangers() > 0 || twin.is_some();
    let mut report = run_once(scenario, text, data_dir, watch).await?;
    report.twin = twin;
    strangers::judge(&mut report);
    Ok(report)
}

/// One run; `watch` adds the strangers' part (malicious clients' attempts, blocklist sweeps, the
/// strangers section of the report).
async fn run_once(
    scenario: Scenario,
    text: String,
    data_dir: Option<PathBuf>,
    watch: bool,
) -> Result<Report, RunError> {
    let started = Instant::now();
    let cpu_start = measure::cpu_secs();
    let s = Arc::new(scenario);
    let plan = Plan::new(&s);
    let digest = plan.digest();
    let tmp;
    let dir = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(RunError::Dir)?;
            d
        }
        None => {
            tmp = tempfile::tempdir().map_err(RunError::Dir)?;
            tmp.path().to_owned()
        }
    };
    let chain = if s.workers.price_per_1k > 0 {
        Some(Arc::new(
            LocalChain::new(Clock::Wall { offset: 0 }).map_err(|e| RunError::Chain(e.to_string()))?,
        ))
    } else {
        None
    };
    let fabric = Fabric::new(link_model(&s), s.seed ^ 0x5eed_f00d);
    let bootstrap = plan.of(Kind::Bootstrap).iter().map(|i| nodes::dial_addr(&plan.nodes[*i])).collect();
    let tally = Arc::new(strangers::Tally::default());
    let env =
        Env { fabric: fabric.clone(), chain: chain.clone(), dir, scenario: s.clone(), bootstrap, tally };
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = spawn_sampler(Duration::from_millis(s.measure.sample_ms.max(100)), started, stop_rx);

    let peers = plan.nodes.iter().map(|n| n.peer()).collect();
    let n = plan.nodes.len();
    let mut fleet = Fleet { plan, nodes: (0..n).map(|_| None).collect(), started_at: vec![None; n], peers };
    let mut report = Report {
        scenario: s.name.clone(),
        scenario_text: text,
        seed: s.seed,
        plan_digest: digest,
        build: format!(
            "cocoon-simnet {} ({})",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) { "debug" } else { "release" }
        ),
        ..Report::default()
    };
    let mut by_kind = BTreeMap::new();
    for node in &fleet.plan.nodes {
        *by_kind.entry(node.kind.name().to_owned()).or_insert(0) += 1;
    }
    report.nodes = by_kind;

    // Formation (workers possibly deferred), then record propagation.
    let routing_series = Arc::new(Mutex::new(Vec::new()));
    report.join = phases::form(&env, &mut fleet, started, routing_series.clone()).await?;
    report.routing = measure::routing(&fleet.live_nodes(), &fleet.live_peers()).await;
    report.routing.healthy_over_time = routing_series.lock().map(|s| s.clone()).unwrap_or_default();
    report.gossip = phases::propagation(&s, &fleet).await;
    let quiet_wait =
        measure::quiet(&fleet.live_nodes(), Duration::from_secs(s.measure.quiet_wait_secs)).await;
    report.lookup = fleet.lookups(fleet.plan.lookups.iter(), &fabric, s.measure.lookup_parallel).await;
    report.lookup.quiet_wait_ms = quiet_wait.as_secs_f64() * 1000.0;
    tracing::info!(recall = report.lookup.recall_mean, "lookups measured");

    if s.attack.forgers > 0 {
        report.attacks = phases::forgery(&s, &fleet).await;
    }
    report.attacks.sybils = s.attack.sybil_workers;

    load_phase(&env, &mut fleet, &mut report, started, watch).await?;
    if s.partition.is_some() {
        report.partition = Some(split::partition(&s, &fleet, &fabric, started).await);
    }

    report.fabric = fabric.stats();
    let _ = stop_tx.send(true);
    let mut resources = sampler.await.unwrap_or_default();
    resources.wall_secs = started.elapsed().as_secs_f64();
    resources.cpu_secs = measure::cpu_secs() - cpu_start;
    resources.rss_peak_bytes = resources.rss_peak_bytes.max(measure::rss_bytes());
    resources.memory_per_node_bytes =
        resources.rss_peak_bytes.saturating_sub(resources.rss_start_bytes) / n.max(1) as u64;
    report.resources = resources;
    report.notes = notes(&s);
    shutdown(fleet).await;
    Ok(report)
}

/// Requests (with churn and, when `watch`, the strangers), then the payments reconciliation.
async fn load_phase(
    env: &Env,
    fleet: &mut Fleet,
    report: &mut Report,
    started: Instant,
    watch: bool,
) -> Result<(), RunError> {
    let (s, chain) = (&env.scenario, &env.chain);
    let tx_before = chain.as_ref().map_or(0, |c| c.transaction_count());
    let rogues = watch.then(|| strangers::begin(env, fleet));
    let split::LoadRun { outcomes, departed_lookups } =
        split::load_and_churn(env, fleet, report, started).await?;
    let blocks = match rogues {
        Some(rogues) => Some(rogues.end().await),
        None => None,
    };
    let clients = fleet.nodes_of(&[Kind::Client]);
    if let Some(load) = &s.load {
        let sybils = fleet.peers_of(Kind::Sybil);
        let mut lookups = departed_lookups;
        for node in &clients {
            load::add_worker_lookups(&mut lookups, node);
        }
        report.requests = load::summarise(&outcomes, &sybils, 10_000.0, lookups);
        if let Some(blocks) = &blocks {
            let mut stats = strangers::summarise(fleet, &outcomes, &env.tally, blocks);
            stats.ttft_ms = report.requests.ttft_ms.clone();
            report.strangers = Some(stats);
        }
        tracing::info!(
            success = report.requests.success_rate,
            sent = report.requests.sent,
            max_tokens = load.max_tokens,
            "load finished"
        );
    }
    if let Some(chain) = &chain {
        let tx_during = chain.transaction_count() - tx_before;
        let workers = fleet.nodes_of(&[Kind::Worker, Kind::Sybil]);
        let bad_clients = fleet
            .plan
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::BadClient(_)))
            .filter_map(|n| cocoon::payments::peer_key(&fleet.peers[n.index]))
            .collect();
        let stats = load::reconcile(chain, &workers, &clients, &bad_clients, &outcomes, tx_during)
            .await
            .map_err(RunError::Chain)?;
        if let Some(st) = report.strangers.as_mut() {
            st.money = Some(strangers::money(fleet, &stats, &env.tally).map_err(RunError::Chain)?);
        }
        report.payments = Some(stats);
    }
    Ok(())
}

fn notes(s: &Scenario) -> Vec<String> {
    let mut notes = vec![
        "Nodes run the real cocoon node code (swarm, Kademlia, gossipsub, attestation, inference client and worker, payments) on a simulated transport: connections are in-process pipes with the scenario's latency, jitter, loss and bandwidth, without Noise encryption or Yamux framing; the fabric vouches for peer ids.".to_owned(),
        "Time is the wall clock: the plan (keys, roles, regions, schedules) is exactly reproducible from the seed, while timings and the numbers derived from them vary between runs with the machine's load (libp2p's timers and the Tokio scheduler are not simulated).".to_owned(),
        "Lookup hops are replayed: each lookup's iterative procedure (α = 3, K = 20) rerun in synchronous rounds over a snapshot of every node's real routing table, counting the rounds until the key's closest peer is known. libp2p does not report hops; the JSON's `rounds` (lookup duration / mean round trip) is a timing estimate, not a hop count.".to_owned(),
    ];
    if s.attack.sybil_workers > 0 || s.nodes.workers > 0 {
        notes.push("Workers run the labelled STAND-IN engine (fixed first-token delay and per-token pace, no model) and simulated TEE evidence, which every node is configured to accept.".to_owned());
    }
    if s.attack.strangers() > 0 {
        notes.push("Malicious clients and workers are real nodes (joined, attested, holding verified records) whose inference streams are driven by simnet (`run/strangers/`): they start after the honest nodes and act on a seeded schedule while the load runs. Honest success counts only requests whose client knew a verified honest worker for the model when it sent them.".to_owned());
    }
    if s.workers.price_per_1k > 0 {
        notes.push("Payments run the real payment-channel contract on one shared LocalChain (tycho-executor); at the end every worker claims its best voucher.".to_owned());
    }
    notes
}

async fn shutdown(fleet: Fleet) {
    let stops = fleet.nodes.into_iter().flatten().map(|node| async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
    });
    futures::stream::iter(stops).buffer_unordered(64).collect::<Vec<_>>().await;
}
