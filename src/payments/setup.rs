//! Wiring payments into a node from its configuration: the chain backend, the wallet, and the
//! worker's or client's payment state with its tasks ([`start_worker`], [`start_client`]).

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use prometheus_client::registry::Registry;

use super::client::{ClientPayments, ClientTerms};
use super::worker::{PaymentMetrics, WorkerPayments, WorkerTerms};
use crate::chain::local::{Clock, LocalChain};
use crate::chain::toncenter::Toncenter;
use crate::chain::wallet::Wallet;
use crate::chain::{SharedChain, parse_address};
use crate::config::{ChainKind, Config};
use crate::store::{self, Store};

/// The chain file of a node running `chain = "local"` on its own.
pub const LOCAL_CHAIN_FILE: &str = "chain.json";

/// The chain backend `config` asks for (`injected` wins for `local`: devnet and tests share one).
pub fn open_chain(config: &Config, injected: Option<SharedChain>) -> Result<Option<SharedChain>, String> {
    let p = &config.payments;
    Ok(match p.chain {
        ChainKind::Off => None,
        ChainKind::Local => match injected {
            Some(chain) => Some(chain),
            None => {
                let path = config.node.data_dir.join(LOCAL_CHAIN_FILE);
                let chain = LocalChain::open(&path, Clock::Wall { offset: 0 }).map_err(|e| e.to_string())?;
                Some(Arc::new(chain))
            }
        },
        ChainKind::Toncenter => {
            let key = (!p.toncenter_api_key.is_empty()).then(|| p.toncenter_api_key.clone());
            let chain = Toncenter::new(&p.toncenter_url, key, Duration::from_secs(p.toncenter_timeout_secs))
                .map_err(|e| e.to_string())?;
            Some(Arc::new(chain))
        }
    })
}

/// The node's wallet (its seed in `<data-dir>/wallet.key`).
pub fn wallet(config: &Config) -> Result<Wallet, String> {
    let seed = store::load_or_create_wallet_seed(&config.node.data_dir).map_err(|e| e.to_string())?;
    Wallet::from_seed(&seed).map_err(|e| e.to_string())
}

fn ed25519(identity: &Keypair) -> Result<libp2p::identity::ed25519::Keypair, String> {
    identity.clone().try_into_ed25519().map_err(|_| "payments need an ed25519 identity key".to_owned())
}

/// A worker's payment state.
pub fn worker(
    config: &Config,
    store: &Store,
    chain: SharedChain,
    identity: &Keypair,
    registry: &mut Registry,
) -> Result<Arc<WorkerPayments>, String> {
    let terms = WorkerTerms {
        worker_key: ed25519(identity)?.public().to_bytes(),
        payout: parse_address(&config.worker.payout_address).map_err(|e| e.to_string())?,
        min_dispute_window: config.payments.min_dispute_window_secs,
        min_deposit: config.payments.min_deposit_nanotons,
        exposure: config.payments.exposure,
    };
    let metrics = PaymentMetrics::default();
    metrics.register(registry);
    let book = store.payments().map_err(|e| e.to_string())?;
    Ok(Arc::new(WorkerPayments::new(book, chain, terms, metrics).map_err(|e| e.to_string())?))
}

/// A client's payment state.
pub fn client(
    config: &Config,
    store: &Store,
    chain: SharedChain,
    identity: &Keypair,
) -> Result<Arc<ClientPayments>, String> {
    let p = &config.payments;
    let terms = ClientTerms {
        deposit: p.deposit_nanotons,
        dispute_window: p.dispute_window_secs,
        confirm_timeout: Duration::from_secs(p.confirm_timeout_secs),
        max_channels: p.max_channels,
        max_total_deposit: p.max_total_deposit_nanotons,
        idle_close: (p.idle_close_secs > 0).then(|| Duration::from_secs(p.idle_close_secs)),
        network: p.network_name(),
    };
    let book = store.payments().map_err(|e| e.to_string())?;
    Ok(Arc::new(ClientPayments::new(book, chain, wallet(config)?, ed25519(identity)?, terms, p.settlement)))
}

/// Where the payment tasks of a running node go: the network they use, the shutdown they stop on
/// and the node's task list.
#[derive(Debug)]
pub struct Running<'a> {
    /// The node's network.
    pub network: &'a crate::network::NetworkHandle,
    /// Becomes true at shutdown.
    pub shutdown: &'a tokio::sync::watch::Receiver<bool>,
    /// The node's tasks (joined at shutdown).
    pub tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
}

/// A worker's payment state, with its settlement loop and its cooperative-close server running.
pub fn start_worker(
    config: &Config,
    store: &Store,
    chain: SharedChain,
    identity: &Keypair,
    registry: &mut Registry,
    run: Running<'_>,
) -> Result<Arc<WorkerPayments>, String> {
    let p = worker(config, store, chain, identity, registry)?;
    let every = Duration::from_secs(config.payments.settle_interval_secs);
    let settle = super::settle::start(
        p.clone(),
        wallet(config)?,
        config.payments.settlement,
        every,
        run.shutdown.clone(),
    );
    run.tasks.push(settle);
    let closes =
        super::close::serve(run.network.clone(), p.clone(), ed25519(identity)?, run.shutdown.clone())?;
    run.tasks.push(closes);
    Ok(p)
}

/// A client's payment state, asking workers to co-sign closes through the node's network, with
/// its pass over idle and retired channels running.
pub fn start_client(
    config: &Config,
    store: &Store,
    chain: SharedChain,
    identity: &Keypair,
    run: Running<'_>,
) -> Result<Arc<ClientPayments>, String> {
    let p = client(config, store, chain, identity)?;
    p.reach_workers(run.network.clone());
    let every = Duration::from_secs(config.payments.settle_interval_secs.max(1));
    run.tasks.push(super::client::start_wind_down(p.clone(), every, run.shutdown.clone()));
    Ok(p)
}
