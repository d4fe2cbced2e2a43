//! A running cocoon node: store, identity, network, join task and admin endpoint, wired together.
//!
//! [`Node::start`] checks everything that can be wrong with the configuration before it touches
//! the network (bootstrap entries, data directory lock, listen ports, admin port), so that each
//! problem is reported at once with a message naming it. [`Node::shutdown`] stops the tasks,
//! closes every connection and flushes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admin::{self, AdminState};
use crate::api::admin_control::AdminControl;
use crate::api::openai::{self, ApiState};
use crate::attestation::pccs::PccsError;
use crate::attestation::policy_file::PolicyFileError;
use crate::attestation::service::{self, AttestationHandle, ServiceError};
use crate::attestation::setup::{attestation_policy, collateral_source, own_record, tee_verifier};
use crate::chain::SharedChain;
use crate::config::{Config, ConfigError, Role};
use crate::inference::client::InferenceClient;
use crate::inference::setup::{self, SetupError};
use crate::inference::worker;
use crate::network::bootstrap::{self, BootstrapError};
use crate::network::{self, JoinConfig, NetworkConfig, NetworkError, NetworkHandle, TransportKind};
use crate::payments;
use crate::store::{self, Store, StoreError};

/// Peers remembered from earlier runs that a starting node dials.
const KNOWN_PEERS_TO_DIAL: usize = 32;
/// Size the peer book is pruned to on shutdown.
const PEER_BOOK_CAPACITY: usize = 1024;
/// How often the peer book is made durable while running.
const PEER_BOOK_FLUSH_INTERVAL: Duration = Duration::from_secs(30);
/// How often a joined node checks it still has connections.
const JOIN_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Quote verification results kept (by quote hash).
pub(crate) const VERIFIER_CACHE: usize = 4096;
/// Longest the network may take to close its connections on shutdown.
const NETWORK_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad bootstrap entry or list.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// Data directory problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Network start-up problem.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The attestation policy file was refused.
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
    /// The attestation service could not start (e.g. no TEE on a worker).
    #[error(transparent)]
    Attestation(#[from] ServiceError),
    /// The PCCS client could not be built.
    #[error(transparent)]
    Pccs(#[from] PccsError),
    /// The worker's models cannot be served.
    #[error(transparent)]
    Models(#[from] SetupError),
    /// The inference worker could not start.
    #[error("cannot serve inference: {0}")]
    Worker(String),
    /// The API endpoint could not bind.
    #[error("cannot listen for the API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Payments could not be set up (chain backend, wallet, store).
    #[error("cannot set up payments: {0}")]
    Payments(String),
    /// The admin endpoint could not bind.
    #[error("cannot listen for the admin endpoint on {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a process hands a node besides its configuration (devnet, tests, simnet).
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// A chain shared between the nodes of one process, used when `payments.chain = "local"`.
    pub chain: Option<SharedChain>,
    /// Models served by engines the process built itself (simnet's labelled stand-in engine), in
    /// addition to `worker.models`; ignored unless the node has the worker role.
    pub served: Vec<worker::ServedModel>,
    /// The process accepts `/cocoon/inference/2` streams itself (the adversarial workers of tests
    /// and simnet): the node publishes its record and offers, but runs no inference server.
    pub streams_served_by_process: bool,
}

/// Printed once on stdout when the node is up (one JSON line), for scripts and tests.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Ready {
    /// Always `ready`.
    pub event: String,
    /// This node.
    pub peer_id: String,
    /// Bound listen addresses (real ports when 0 was asked for).
    pub listen: Vec<Multiaddr>,
    /// Admin endpoint address, when enabled.
    pub admin: Option<SocketAddr>,
    /// OpenAI-compatible API address (client nodes), when enabled.
    #[serde(default)]
    pub api: Option<SocketAddr>,
}

/// A started node.
#[derive(Debug)]
pub struct Node {
    network: NetworkHandle,
    attestation: AttestationHandle,
    store: Store,
    admin_addr: Option<SocketAddr>,
    /// Guards the admin endpoint's operations (recorded in the data directory).
    admin_token: String,
    api_addr: Option<SocketAddr>,
    client: Option<InferenceClient>,
    registry: Arc<Registry>,
    listen: Vec<Multiaddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    network_task: JoinHandle<()>,
}

/// One of the node's HTTP endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The OpenAI-compatible API (client role).
    Api,
    /// The admin endpoint.
    Admin,
}

impl NodeError {
    /// The endpoint whose address another process already holds, if that is what went wrong
    /// (the caller names the flag that moves it: `cocoon node` and `cocoon devnet` differ).
    pub fn taken_endpoint(&self) -> Option<Endpoint> {
        let in_use = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
        match self {
            Self::Api { source, .. } if in_use(source) => Some(Endpoint::Api),
            Self::Admin { source, .. } if in_use(source) => Some(Endpoint::Admin),
            _ => None,
        }
    }
}

impl Node {
    /// Start a node. `identity` overrides the key stored in the data directory (devnet's
    /// well-known bootstrap key); normally it is `None`.
    pub async fn start(
        config: Config,
        transport: TransportKind,
        identity: Option<Keypair>,
    ) -> Result<Self, NodeError> {
        Self::start_with(config, transport, identity, Extras::default()).await
    }

    /// [`Self::start`], with what the process hands the node besides its configuration.
    pub async fn start_with(
        config: Config,
        transport: TransportKind,
        identity: Option<Keypair>,
        extras: Extras,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let chain = payments::setup::open_chain(&config, extras.chain).map_err(NodeError::Payments)?;
        let bootstrap = bootstrap::collect(&config.bootstrap.peers, &config.bootstrap.files)?;
        // Opening sled is blocking file I/O and may wait out a lock held a moment longer by a
        // closed store (see `Store::open`): it runs off the async workers.
        let data_dir = config.node.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir)).await.map_err(|e| {
            StoreError::Dir { path: config.node.data_dir.clone(), source: std::io::Error::other(e) }
        })??;
        let keypair = match identity {
            Some(key) => key,
            None => store::load_or_create_identity(&config.node.data_dir)?,
        };
        let peer_id = keypair.public().to_peer_id();
        let keypair_for_payments = keypair.clone();
        let (policy, snp_policy) = attestation_policy(&config)?;
        crate::devnet::hint_strict_joiner(&bootstrap, policy.allow_simulated);
        let verifier = Arc::new(tee_verifier(&config, &store, policy, snp_policy)?);
        // Models are hashed and loaded before the node announces anything, so the record's offers
        // are exactly what this worker can serve.
        let mut offers = if config.has_role(Role::Worker) {
            setup::offers(&config, Some(&store.model_hashes()?))?
        } else {
            Vec::new()
        };
        let mut served = setup::load(&config, &offers).await?;
        if config.has_role(Role::Worker) {
            offers.extend(extras.served.iter().map(|m| m.offer.clone()));
            served.extend(extras.served);
        }
        let own = own_record(&config, &keypair, offers)?;
        let worker_keys = own.as_ref().map(|_| keypair.clone());
        let peer_book = store.peer_book()?;
        let known: Vec<_> =
            peer_book.recent(KNOWN_PEERS_TO_DIAL)?.into_iter().filter(|k| k.peer_id != peer_id).collect();

        let admin_listener = if config.admin.enabled {
            let addr = config.admin.listen;
            Some(admin::bind(addr).await.map_err(|source| NodeError::Admin { addr, source })?)
        } else {
            None
        };
        let api_listener = if config.api.enabled && config.has_role(Role::Client) {
            let addr = config.api.listen;
            Some(openai::bind(addr).await.map_err(|source| NodeError::Api { addr, source })?)
        } else {
            None
        };

        let mut registry = Registry::default();
        let protected: Vec<PeerId> = bootstrap.iter().map(|b| b.peer_id).collect();
        let net_config = NetworkConfig::from_config(&config, transport, protected);
        let (network, network_task) =
            network::start(net_config, keypair, Some(peer_book), &mut registry).await?;
        let status = network.status().await?;
        tracing::info!(
            peer_id = %peer_id,
            roles = ?config.node.roles,
            kad_mode = %status.kad_mode,
            bootstrap_peers = bootstrap.len(),
            known_peers = known.len(),
            "node started"
        );

        let (shutdown, shutdown_rx) = watch::channel(false);
        let collateral = Arc::new(collateral_source(&config, &store)?);
        collateral.register(&mut registry);
        let (attestation, mut tasks) = service::start(
            network.clone(),
            verifier.clone(),
            collateral,
            own,
            Some(store.record_cache()?),
            &mut registry,
            shutdown_rx.clone(),
        )
        .await?;
        let join = JoinConfig {
            bootstrap,
            known,
            retry_initial: Duration::from_secs(config.bootstrap.retry_initial_secs),
            retry_max: Duration::from_secs(
                config.bootstrap.retry_max_secs.max(config.bootstrap.retry_initial_secs),
            ),
            dial_timeout: Duration::from_secs(config.bootstrap.dial_timeout_secs),
            check_interval: JOIN_CHECK_INTERVAL,
        };
        tasks.push(network::spawn_join_task(network.clone(), join, shutdown_rx.clone()));
        tasks.push(spawn_flusher(store.clone(), shutdown_rx.clone()));
        if let Some(identity) = worker_keys.filter(|_| !extras.streams_served_by_process) {
            let noise = store::load_or_create_noise_key(&config.node.data_dir)?;
            let limits = setup::worker_limits(&config);
            let run =
                payments::setup::Running { network: &network, shutdown: &shutdown_rx, tasks: &mut tasks };
            let paying = chain
                .as_ref()
                .map(|c| {
                    payments::setup::start_worker(&config, &store, c.clone(), &identity, &mut registry, run)
                })
                .transpose()
                .map_err(NodeError::Payments)?;
            let setup = worker::WorkerSetup {
                identity,
                noise_private: noise.private,
                models: served,
                limits,
                payments: paying,
            };
            let task = worker::start(network.clone(), setup, &mut registry, shutdown_rx.clone())
                .map_err(NodeError::Worker)?;
            tasks.push(task);
        }
        let mut client_payments = None;
        let client = if config.has_role(Role::Client) {
            let run =
                payments::setup::Running { network: &network, shutdown: &shutdown_rx, tasks: &mut tasks };
            let paying = chain
                .as_ref()
                .map(|c| {
                    payments::setup::start_client(&config, &store, c.clone(), &keypair_for_payments, run)
                })
                .transpose()
                .map_err(NodeError::Payments)?;
            client_payments = paying.clone();
            Some(InferenceClient::new(
                network.clone(),
                attestation.clone(),
                verifier,
                setup::client_limits(&config),
                rand::random(),
                paying,
                &mut registry,
            ))
        } else {
            None
        };
        let registry = Arc::new(registry);
        let mut api_addr = None;
        if let (Some(listener), Some(client)) = (api_listener, &client) {
            api_addr = listener.local_addr().ok();
            let state = ApiState {
                client: client.clone(),
                limits: setup::request_limits(&config),
                max_price: config.api.max_price_nanotons,
                max_body: config.api.max_body_bytes,
            };
            let limits = crate::http::ServerLimits::from_config(&config.http);
            tasks.push(tokio::spawn(openai::serve(listener, state, limits, shutdown_rx.clone())));
            tracing::info!(addr = ?api_addr, "OpenAI-compatible API listening");
        }

        let mut admin_addr = None;
        let admin_token = hex::encode(rand::random::<[u8; 32]>());
        if let Some(listener) = admin_listener {
            admin_addr = listener.local_addr().ok();
            let state = AdminState {
                network: network.clone(),
                attestation: attestation.clone(),
                registry: registry.clone(),
                roles: config.node.roles.clone(),
                started: Instant::now(),
                payments: match &chain {
                    Some(_) => Some(store.payments()?),
                    None => None,
                },
                control: Some(AdminControl { token: admin_token.clone(), client: client_payments }),
            };
            let limits = crate::http::ServerLimits::from_config(&config.http);
            tasks.push(tokio::spawn(admin::serve(listener, state, limits, shutdown_rx)));
            tracing::info!(addr = ?admin_addr, "admin endpoint listening");
            if let Some(addr) = admin_addr
                && let Err(e) = crate::dirs::record_admin_addr(store.dir(), addr)
                    .and_then(|()| crate::dirs::record_admin_token(store.dir(), &admin_token))
            {
                tracing::warn!(error = %e, "cannot record the admin address and token in the data directory");
            }
        }
        Ok(Self {
            network,
            attestation,
            store,
            admin_addr,
            admin_token,
            api_addr,
            client,
            registry,
            listen: status.listen_addrs,
            shutdown,
            tasks,
            network_task,
        })
    }

    /// Handle to the network layer.
    pub fn network(&self) -> &NetworkHandle {
        &self.network
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.network.peer_id()
    }

    /// What the node knows about workers' attestation.
    pub fn attestation(&self) -> &AttestationHandle {
        &self.attestation
    }

    /// Bound listen addresses.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// Where the OpenAI-compatible API listens, when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Where the admin endpoint listens, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The inference client of a node with the client role (what its API serves requests with).
    pub fn inference_client(&self) -> Option<&InferenceClient> {
        self.client.as_ref()
    }

    /// Every metric of this node in the OpenMetrics text format (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    }

    /// The store (for inspection by tests and subsystems).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `ready` line describing this node.
    pub fn ready(&self) -> Ready {
        Ready {
            event: "ready".into(),
            peer_id: self.peer_id().to_string(),
            listen: self.listen.clone(),
            admin: self.admin_addr,
            api: self.api_addr,
        }
    }

    /// Stop gracefully: stop the tasks, close all connections, flush the store.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        tracing::info!("shutting down");
        let _ = self.shutdown.send(true);
        let network_task = self.network_task;
        if tokio::time::timeout(NETWORK_STOP_TIMEOUT, self.network.shutdown()).await.is_err() {
            tracing::warn!("network did not stop in time; aborting its task");
            network_task.abort();
        }
        let _ = network_task.await;
        // A task that does not stop in time is aborted and awaited, not left running: it may
        // hold the store, whose lock must be free once this returns (a restart reopens it).
        for mut task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                tracing::warn!("a background task did not stop in time; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        if let Some(addr) = self.admin_addr {
            crate::dirs::forget_admin_addr(self.store.dir(), addr);
            crate::dirs::forget_admin_token(self.store.dir(), &self.admin_token);
        }
        let book = self.store.peer_book()?;
        book.prune(PEER_BOOK_CAPACITY)?;
        let bytes = self.store.flush()?;
        tracing::info!(bytes, known_peers = book.len(), "store flushed");
        Ok(())
    }
}

fn spawn_flusher(store: Store, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PEER_BOOK_FLUSH_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || store.flush()).await {
                        Ok(Err(e)) => tracing::warn!(error = %e, "periodic store flush failed"),
                        Err(e) => tracing::warn!(error = %e, "periodic store flush task failed"),
                        Ok(Ok(_)) => {}
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    })
}

/// Wait for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
