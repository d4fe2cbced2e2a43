//! Strangers: malicious clients and workers mixed into an honest network, and what the honest
//! side keeps. While the load runs, each malicious client makes its planned attempts
//! (`clients`), malicious workers serve the requests they draw (`workers`), and every honest
//! node's blocklist is swept for honest peers. The summary gives honest request success (counted
//! only for requests whose client knew an honest worker for the model), honest time to first
//! token against the attack-free twin, honest peers blocked, what each stranger achieved, money
//! per party, and the scenario's pass/fail checks.

pub mod clients;
mod summary;
pub mod workers;

pub(crate) use summary::{judge, money, summarise};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon::chain::wallet::Wallet;
use cocoon::network::NetworkHandle;
use cocoon::node::Node;
use cocoon::payments::peer_key;
use cocoon::store::load_or_create_wallet_seed;
use futures::StreamExt;
use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{Fleet, nodes};
use crate::plan::Kind;

/// Honest requests that must succeed (of those whose client knew an honest worker).
pub const SUCCESS_TARGET: f64 = 0.99;
/// Most honest TTFT p50 may grow over the attack-free twin's.
pub const TTFT_RATIO_TARGET: f64 = 1.20;
/// How often honest nodes' blocklists are swept during the load.
const BLOCK_SWEEP: Duration = Duration::from_secs(5);
/// Longest the malicious clients get to finish (and release what they hold) after the load.
const ROGUES_FINISH: Duration = Duration::from_secs(90);
/// Seed offset of the malicious clients' own choices.
const ROGUE_SEED: u64 = 0x0b5e_55ed;

/// Counts by stranger kind and event, shared by every malicious node of a run.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    /// Count `n` of `what` for `who`.
    pub fn add(&self, who: &str, what: &str, n: u64) {
        if let Ok(mut all) = self.0.lock() {
            *all.entry(who.to_owned()).or_default().entry(what.to_owned()).or_default() += n;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The sum of `what` over every kind.
    fn total(&self, what: &str) -> u64 {
        self.snapshot().values().filter_map(|m| m.get(what)).sum()
    }
}

/// Blocks seen on honest nodes' blocklists.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    /// (honest node index, blocked peer).
    seen: BTreeSet<(usize, PeerId)>,
    /// Most blocks, over the sweeps, beyond what the nodes' status samples named.
    unseen: usize,
}

/// The strangers' side of a run while the load goes on.
pub(crate) struct Running {
    rogues: JoinSet<()>,
    stop: watch::Sender<bool>,
    blocks: JoinHandle<Blocks>,
}

/// Start the malicious clients' attempts (times relative to now, as the load's) and the sweeps
/// of honest blocklists.
pub(crate) fn begin(env: &nodes::Env, fleet: &Fleet) -> Running {
    let s = &env.scenario;
    let honest: Vec<(usize, NetworkHandle)> = fleet
        .live()
        .into_iter()
        .filter(|(i, _)| fleet.plan.nodes[*i].kind.honest())
        .map(|(i, n)| (i, n.network().clone()))
        .collect();
    let (stop, stopped) = watch::channel(false);
    let blocks = tokio::spawn(watch_blocks(honest, stopped));
    let t0 = tokio::time::Instant::now();
    let mut rogues = JoinSet::new();
    for (i, node) in fleet.live() {
        let Kind::BadClient(mischief) = fleet.plan.nodes[i].kind else { continue };
        let attempts = fleet.plan.attacks.iter().filter(|a| a.node == i);
        let attempts: Vec<(u64, PeerId)> = attempts.map(|a| (a.at_ms, fleet.peers[a.target])).collect();
        let rogue = clients::Rogue {
            mischief,
            network: node.network().clone(),
            attestation: node.attestation().clone(),
            wallet: wallet_of(env, node),
            key: peer_key(&fleet.peers[i]).unwrap_or_default(),
            model: nodes::model_id(s),
            silent_streams: s.attack.silent_streams,
            rng: StdRng::seed_from_u64(s.seed ^ ROGUE_SEED ^ i as u64),
            tally: env.tally.clone(),
        };
        rogues.spawn(rogue.run(attempts, t0));
    }
    Running { rogues, stop, blocks }
}

fn wallet_of(env: &nodes::Env, node: &Node) -> Option<(Wallet, Arc<cocoon::chain::local::LocalChain>)> {
    let chain = env.chain.clone()?;
    let seed = load_or_create_wallet_seed(node.store().dir()).ok()?;
    Some((Wallet::from_seed(&seed).ok()?, chain))
}

impl Running {
    /// Let the malicious clients finish, then take the last sweep.
    pub(crate) async fn end(mut self) -> Blocks {
        let rogues = &mut self.rogues;
        let _ =
            tokio::time::timeout(ROGUES_FINISH, async { while rogues.join_next().await.is_some() {} }).await;
        self.rogues.abort_all();
        let _ = self.stop.send(true);
        self.blocks.await.unwrap_or_default()
    }
}

async fn watch_blocks(nodes: Vec<(usize, NetworkHandle)>, mut stop: watch::Receiver<bool>) -> Blocks {
    let mut blocks = Blocks::default();
    loop {
        sweep(&nodes, &mut blocks).await;
        tokio::select! {
            _ = tokio::time::sleep(BLOCK_SWEEP) => {}
            _ = stop.changed() => break,
        }
    }
    sweep(&nodes, &mut blocks).await;
    blocks
}

async fn sweep(nodes: &[(usize, NetworkHandle)], blocks: &mut Blocks) {
    let statuses: Vec<(usize, Option<cocoon::network::NetworkStatus>)> =
        futures::stream::iter(nodes.iter().cloned().map(|(i, n)| async move { (i, n.status().await.ok()) }))
            .buffered(64)
            .collect()
            .await;
    let mut unseen = 0;
    for (i, status) in statuses {
        let Some(status) = status else { continue };
        unseen += status.blocked_count.saturating_sub(status.blocked_peers.len());
        blocks.seen.extend(status.blocked_peers.into_iter().map(|p| (i, p)));
    }
    blocks.unseen = blocks.unseen.max(unseen);
}
