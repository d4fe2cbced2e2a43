//! Starting and stopping the run's nodes: each is a full `cocoon::node::Node` (store, swarm,
//! attestation, worker or client, payments) on the simulated transport, configured from the
//! scenario; workers serve the labelled stand-in engine, sybils an engine that never serves, and
//! malicious workers publish their genuine record while `strangers::workers` serves their streams.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cocoon::chain::local::LocalChain;
use cocoon::chain::wallet::Wallet;
use cocoon::chain::{SharedChain, friendly};
use cocoon::config::{ChainKind, Config, Role, TeeKind};
use cocoon::inference::engine::{Engine, EngineError, EngineEvent, Generation, StandInEngine};
use cocoon::inference::worker::ServedModel;
use cocoon::network::TransportKind;
use cocoon::node::{Extras, Node};
use cocoon::store::{load_or_create_noise_key, load_or_create_wallet_seed};
use cocoon_protocol::attestation::record::ModelOffer;
use cocoon_protocol::inference::messages::{Prompt, Shape};
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc;

use super::strangers::Tally;
use super::strangers::workers::{self, BadWorker};
use crate::fabric::Fabric;
use crate::plan::{Kind, NodePlan, WorkerMischief};
use crate::scenario::{Scenario, TransportChoice};

/// Funds each node's wallet gets on the shared chain.
const WALLET_FUNDS: u64 = 1_000_000_000_000;
/// Context length of the stand-in model.
const CONTEXT: u32 = 4096;

/// What every node of a run shares.
#[derive(Debug, Clone)]
pub struct Env {
    pub fabric: Fabric,
    pub chain: Option<Arc<LocalChain>>,
    pub dir: PathBuf,
    pub scenario: Arc<Scenario>,
    pub bootstrap: Vec<Multiaddr>,
    /// What the malicious nodes did.
    pub tally: Arc<Tally>,
}

/// The model every worker offers (sybils too: that is their lure).
pub fn model_id(s: &Scenario) -> String {
    stand_in(&s.workers).model_id().to_owned()
}

fn stand_in(w: &crate::scenario::Workers) -> StandInEngine {
    StandInEngine::new(
        "sim",
        CONTEXT,
        Duration::from_millis(w.first_token_ms),
        Duration::from_millis(w.per_token_ms),
    )
}

/// An attested engine that accepts requests and never serves them (a sybil's): the stand-in's
/// model, context and token counts, but every stream ends before the first token, so the worker
/// reports an engine failure, as a node dropping streams would.
#[derive(Debug)]
struct NeverServes(StandInEngine);

impl Engine for NeverServes {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn engine_name(&self) -> &str {
        "STAND-IN sybil (never serves)"
    }
    fn context_length(&self) -> u32 {
        self.0.context_length()
    }
    fn max_token_bytes(&self) -> Option<u32> {
        self.0.max_token_bytes()
    }
    fn prompt_tokens<'a>(
        &'a self,
        prompt: &'a Prompt,
        shape: &'a Shape,
    ) -> BoxFuture<'a, Result<u32, EngineError>> {
        self.0.prompt_tokens(prompt, shape)
    }
    fn generate(&self, _generation: Generation) -> mpsc::Receiver<EngineEvent> {
        let (tx, rx) = mpsc::channel(1);
        drop(tx); // the stream ends without a token
        rx
    }
}

/// `/memory/<port>/p2p/<id>` of a planned node.
pub fn dial_addr(n: &NodePlan) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(n.port)).with(Protocol::P2p(n.peer()))
}

/// The configuration of node `n`.
pub fn config(env: &Env, n: &NodePlan) -> Config {
    let s = &env.scenario;
    let mut c = Config::default();
    c.node.roles = vec![match n.kind {
        Kind::Bootstrap => Role::Bootstrap,
        Kind::Worker | Kind::Sybil | Kind::BadWorker(_) => Role::Worker,
        Kind::Client | Kind::Forger | Kind::BadClient(_) => Role::Client,
    }];
    c.node.data_dir = env.dir.join(format!("n{}", n.index));
    c.network.listen = vec![Multiaddr::empty().with(Protocol::Memory(n.port))];
    c.network.target_connections = s.network.target_connections;
    c.network.max_connections = s.network.max_connections;
    c.network.gossip_heartbeat_ms = s.network.gossip_heartbeat_ms;
    c.network.ping_interval_secs = s.network.ping_interval_secs;
    c.network.routing_refresh_secs = s.network.routing_refresh_secs;
    // The fabric has no NATs: AutoNAT, the relay client and hole punching would only add
    // handlers to every connection.
    c.network.nat_traversal = false;
    c.admin.enabled = false;
    c.api.enabled = false;
    let own = dial_addr(n);
    c.bootstrap.peers = env.bootstrap.iter().filter(|a| **a != own).cloned().collect();
    c.bootstrap.retry_initial_secs = 1;
    c.attestation.allow_simulated = true;
    c.worker.tee = TeeKind::Simulated;
    c.worker.models.clear();
    c.worker.request_timeout_secs = s.load.as_ref().map_or(30, |l| l.timeout_secs);
    c.log.filter = "warn".into();
    c
}

/// The node's wallet; a worker is paid out to it.
fn wallet(c: &mut Config) -> Result<Wallet, String> {
    let seed = load_or_create_wallet_seed(&c.node.data_dir).map_err(|e| e.to_string())?;
    let wallet = Wallet::from_seed(&seed).map_err(|e| e.to_string())?;
    if c.node.roles.contains(&Role::Worker) {
        c.worker.payout_address = friendly(wallet.address(), false);
    }
    Ok(wallet)
}

/// Turn payments on for `c` against `chain`, funding the node's wallet.
fn pay(c: &mut Config, chain: &LocalChain, wallet: &Wallet) -> Result<(), String> {
    c.payments.chain = ChainKind::Local;
    // The run claims at the end itself; the settlement loop only watches.
    c.payments.settle_interval_secs = 3600;
    c.payments.confirm_timeout_secs = 30;
    chain.fund(wallet.address(), WALLET_FUNDS).map_err(|e| e.to_string())
}

/// Start node `n` (its first start or a restart with the same key and data directory).
pub async fn start(env: &Env, n: &NodePlan) -> Result<Node, String> {
    let s = &env.scenario;
    let mut c = config(env, n);
    let paying = s.workers.price_per_1k > 0 && n.kind != Kind::Bootstrap && n.kind != Kind::Forger;
    let mut extras = Extras::default();
    // Workers need a payout address even when nothing is paid; other nodes only when paying.
    let wallet = if n.kind.attests() || paying { Some(wallet(&mut c)?) } else { None };
    if let (true, Some(chain), Some(wallet)) = (paying, &env.chain, &wallet) {
        pay(&mut c, chain, wallet)?;
        let shared: SharedChain = chain.clone();
        extras.chain = Some(shared);
    }
    if n.kind.attests() {
        extras.served.push(served(s, n.kind));
        extras.streams_served_by_process = matches!(n.kind, Kind::BadWorker(_));
    }
    env.fabric.place(n.peer(), n.region);
    let transport = match s.network.transport {
        TransportChoice::Simulated => env.fabric.transport(),
        TransportChoice::Memory => TransportKind::Memory,
    };
    let node = Node::start_with(c, transport, Some(n.keypair()), extras)
        .await
        .map_err(|e| format!("node {} ({}): {e}", n.index, n.kind.name()))?;
    if let Kind::BadWorker(mischief) = n.kind {
        let noise = load_or_create_noise_key(node.store().dir()).map_err(|e| e.to_string())?;
        let bad = BadWorker {
            mischief,
            identity: n.keypair(),
            noise: noise.private,
            price: offer_price(s, n.kind),
            pace: Duration::from_millis(s.workers.per_token_ms),
            tally: env.tally.clone(),
        };
        workers::serve(&node, bad)?;
    }
    Ok(node)
}

/// A refusing worker's lure: half the honest price (at least 1 when paying).
fn offer_price(s: &Scenario, kind: Kind) -> u64 {
    match kind {
        Kind::BadWorker(WorkerMischief::Refuse) if s.workers.price_per_1k > 0 => {
            (s.workers.price_per_1k / 2).max(1)
        }
        _ => s.workers.price_per_1k,
    }
}

/// The model and offer an attesting node of `kind` publishes. A refusing worker claims a huge
/// capacity at half the price, so that selection likes it.
fn served(s: &Scenario, kind: Kind) -> ServedModel {
    let engine = stand_in(&s.workers);
    let offer = ModelOffer {
        model_id: engine.model_id().to_owned(),
        price_prompt_per_1k: offer_price(s, kind),
        price_completion_per_1k: offer_price(s, kind),
        context_length: CONTEXT,
        max_concurrent: match kind {
            Kind::BadWorker(WorkerMischief::Refuse) => 100_000,
            _ => s.workers.max_concurrent,
        },
    };
    let engine: Arc<dyn Engine> =
        if kind == Kind::Sybil { Arc::new(NeverServes(engine)) } else { Arc::new(engine) };
    ServedModel { engine, offer }
}
