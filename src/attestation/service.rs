//! The attestation service: judges every record gossiped on [`ATTESTATION_TOPIC`] before gossipsub
//! may forward it, keeps the verified ones, and on workers publishes the node's own record and
//! re-publishes it at half-life.
//!
//! Records are judged by [`super::judge`]: accepted ones are kept (memory and store) and
//! forwarded, ignored ones dropped (no penalty), and the peer that sent a rejected one is
//! penalised at [`Tolerance::Fatal`], which blocks it. TDX quotes
//! get their collateral from a [`CollateralSource`] (cache or PCCS) before they are verified.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_protocol::attestation::binding::{expected_report_data, gpu_nonce};
use cocoon_protocol::attestation::record::{AttestationRecord, ModelOffer, PaymentTerms, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::collateral::CollateralSource;
use super::gpu_provider::GpuProvider;
use super::judge::{Judgement, judge, judge_cached};
use super::known::{Insertion, KnownWorkers};
use super::provider::{ProviderError, TeeProvider};
use super::verifier::Verifier;
use crate::clock::unix_now;
use crate::network::{GossipMessage, NetworkError, NetworkHandle, Tolerance, Validation};
use crate::store::RecordCache;

/// Gossip topic of attestation records.
pub const ATTESTATION_TOPIC: &str = "/cocoon/attestations/1";
/// Records waiting for a verdict (beyond it gossipsub's messages are ignored, not queued).
const QUEUE: usize = 256;
/// Most workers remembered.
const KNOWN_CAPACITY: usize = 10_000;
/// How often expired records are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(15);
/// Provider key under which every worker announces itself in the DHT (besides its model ids).
pub const WORKERS_KEY: &[u8] = b"/cocoon/workers/1";
/// How often a joined node looks for workers it has no record of (provider records + direct
/// fetch). Gossip brings every record published while the node is online, and workers republish
/// every half validity, so this only catches what gossip missed; every look is a DHT lookup toward
/// the same key, which the nodes closest to it answer for the whole network.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);
/// The first wait after joining; it doubles while below [`DISCOVERY_RAMP_END`]. A node's first
/// look comes before its routing table has filled, and a record published just before the node
/// joined reaches it only this way. (A single early second look was tried: simnet's `ci` scenario
/// then had a node still missing a record after 60 s.)
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(5);
/// The ramp's last wait (looks 5, 10, 20, 40 s after joining, then every [`DISCOVERY_INTERVAL`]).
const DISCOVERY_RAMP_END: Duration = Duration::from_secs(40);
/// Delay between attempts to publish while no peer listens.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// How a peer that sent a rejected record is penalised: one offence blocks. A rejected record is
/// provably its sender's fault under any collateral and verifier version (`judge::verdict`): an
/// honest author never signs one, and an honest relay validates before forwarding.
const REJECTED_RECORD: Tolerance = Tolerance::Fatal;

/// What a worker attests about itself.
#[derive(Debug, Clone)]
pub struct OwnRecord {
    /// The node's identity (signs the record).
    pub identity: Keypair,
    /// Public half of the node's Noise static key.
    pub noise_public: [u8; 32],
    /// TON payout address.
    pub payout_address: String,
    /// What the worker accepts as payment.
    pub terms: PaymentTerms,
    /// Models served.
    pub offers: Vec<ModelOffer>,
    /// Evidence source.
    pub tee: Arc<dyn TeeProvider>,
    /// GPU evidence source.
    pub gpus: Arc<dyn GpuProvider>,
    /// Lifetime of each published record.
    pub validity: Duration,
}

impl OwnRecord {
    /// Build and sign a fresh record issued at `now` (asks the TEE for evidence: blocking I/O).
    pub fn build(&self, now: u64) -> Result<SignedRecord, ServiceError> {
        let mut record = AttestationRecord {
            peer_id: self.identity.public().to_peer_id(),
            noise_static: self.noise_public,
            payout_address: self.payout_address.clone(),
            terms: self.terms.clone(),
            offers: self.offers.clone(),
            evidence: TeeEvidence::Tdx { quote: Vec::new() },
            gpus: Vec::new(),
            issued_at: now,
            expires_at: now + self.validity.as_secs(),
        };
        let report_data = expected_report_data(&record);
        record.evidence = self.tee.evidence(&report_data)?;
        record.gpus = self.gpus.evidence(&gpu_nonce(&report_data))?;
        SignedRecord::sign(record, &self.identity).map_err(|e| ServiceError::Sign(e.to_string()))
    }
}

/// Why the service could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The TEE could not produce evidence.
    #[error("cannot produce attestation evidence: {0}")]
    Evidence(#[from] ProviderError),
    /// Signing failed.
    #[error("cannot sign attestation record: {0}")]
    Sign(String),
    /// The network refused the subscription.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    verdicts: Family<Vec<(String, String)>, Counter>,
    fetched: Counter,
    published: Counter,
    rejected_relayed: Counter,
}

impl Metrics {
    fn verdict(&self, class: &str) -> Counter {
        self.verdicts.get_or_create(&vec![("verdict".to_owned(), class.to_owned())]).clone()
    }
}

/// Read access to what the service knows.
#[derive(Debug, Clone)]
pub struct AttestationHandle {
    known: Arc<Mutex<KnownWorkers>>,
    /// When each known worker's first record was accepted here (simnet's propagation
    /// measurements); forgotten with the worker's record.
    first_seen: Arc<Mutex<HashMap<PeerId, Instant>>>,
    /// When this worker first published its own record.
    first_published: Arc<Mutex<Option<Instant>>>,
    cache: Option<RecordCache>,
    own: Arc<Mutex<Option<SignedRecord>>>,
    metrics: Metrics,
    /// Whether the operator has been told that SIMULATED workers are refused (said once: any peer
    /// can send such records, and the log must not repeat itself for each).
    told_simulated: Arc<AtomicBool>,
}

/// How many gossiped records this node accepted, ignored and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VerdictCounts {
    /// Valid and new: kept and forwarded.
    pub accepted: u64,
    /// Dropped without penalty (replays, refused by this node's policy, expired).
    pub ignored: u64,
    /// Invalid: dropped and the sender blocked.
    pub rejected: u64,
    /// Accepted records that were fetched directly (discovery) rather than gossiped.
    pub fetched: u64,
    /// Rejected records that reached this node through a peer other than their author: an
    /// invalid record travelled more than one hop (validate-then-forward should make this 0).
    #[serde(default)]
    pub rejected_relayed: u64,
}

impl AttestationHandle {
    /// Workers with a verified, unexpired record.
    pub fn verified_workers(&self) -> usize {
        self.known.lock().map(|k| k.len()).unwrap_or(0)
    }

    /// Models offered by verified workers.
    pub fn models(&self) -> Vec<String> {
        self.known.lock().map(|k| k.models().into_iter().collect()).unwrap_or_default()
    }

    /// Verified records of the workers offering `model_id`.
    pub fn offering(&self, model_id: &str) -> Vec<SignedRecord> {
        self.known.lock().map(|k| k.offering(model_id)).unwrap_or_default()
    }

    /// Every verified worker record.
    pub fn records(&self) -> Vec<SignedRecord> {
        self.known.lock().map(|k| k.records()).unwrap_or_default()
    }

    /// The verified record of `peer`, if any.
    pub fn record_of(&self, peer: &PeerId) -> Option<SignedRecord> {
        self.known.lock().ok()?.get(peer).cloned()
    }

    /// A record with SIMULATED evidence was refused by this node's policy: the first time, tell
    /// the operator why such workers are never listed and how a development node accepts them.
    fn refused_simulated(&self, worker: Option<PeerId>) {
        if self.told_simulated.swap(true, Ordering::Relaxed) {
            tracing::debug!(?worker, "attestation record with SIMULATED evidence ignored");
            return;
        }
        tracing::warn!(
            ?worker,
            "a worker offers SIMULATED attestation evidence, which this node refuses, so its models are not \
             listed; a node joining a development network such as `cocoon devnet` accepts it with \
             --allow-simulated (COCOON_ALLOW_SIMULATED=true, or attestation.allow_simulated = true)"
        );
    }

    /// Keep an accepted record (memory and, when persistent, the store).
    fn keep(&self, signed: SignedRecord) -> Insertion {
        let (peer, bytes) = (signed.record().peer_id, signed.encode());
        let insertion = self.known.lock().map(|mut k| k.insert(signed)).unwrap_or(Insertion::Full);
        if insertion == Insertion::New
            && let Ok(mut seen) = self.first_seen.lock()
        {
            seen.entry(peer).or_insert_with(Instant::now);
        }
        if matches!(insertion, Insertion::New | Insertion::Updated)
            && let Some(cache) = &self.cache
            && let Err(e) = cache.put(&peer, &bytes)
        {
            tracing::warn!(%peer, error = %e, "cannot persist attestation record");
        }
        insertion
    }

    /// Drop expired records from memory and the store.
    fn prune(&self, now: u64) -> usize {
        let expired = self.known.lock().map(|mut k| k.prune(now)).unwrap_or_default();
        if let Ok(mut seen) = self.first_seen.lock() {
            for peer in &expired {
                seen.remove(peer);
            }
        }
        for peer in &expired {
            if let Some(cache) = &self.cache
                && let Err(e) = cache.remove(peer)
            {
                tracing::warn!(%peer, error = %e, "cannot remove expired attestation record");
            }
        }
        expired.len()
    }

    /// Re-judge persisted records (policy and time may have changed) and keep the valid ones.
    fn restore(&self, verifier: &Verifier, collateral: &CollateralSource, now: u64) {
        let Some(cache) = &self.cache else { return };
        let stored = match cache.all() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read persisted attestation records");
                return;
            }
        };
        let mut restored = 0;
        for (peer, bytes) in stored {
            match judge_cached(&bytes, Some(peer), &self.known, verifier, collateral, now) {
                Judgement::Accept(signed) => {
                    if let Ok(mut known) = self.known.lock() {
                        known.insert(*signed);
                        restored += 1;
                    }
                }
                Judgement::IgnoreSimulated => {
                    tracing::debug!(%peer, "dropping persisted SIMULATED attestation record");
                    let _ = cache.remove(&peer);
                }
                Judgement::Ignore(reason) | Judgement::Reject(reason) => {
                    tracing::debug!(%peer, %reason, "dropping persisted attestation record");
                    let _ = cache.remove(&peer);
                }
            }
        }
        if restored > 0 {
            tracing::info!(restored, "attestation records restored from the store");
        }
    }

    /// Verdicts given so far.
    pub fn verdicts(&self) -> VerdictCounts {
        VerdictCounts {
            accepted: self.metrics.verdict("accept").get(),
            ignored: self.metrics.verdict("ignore").get(),
            rejected: self.metrics.verdict("reject").get(),
            fetched: self.metrics.fetched.get(),
            rejected_relayed: self.metrics.rejected_relayed.get(),
        }
    }

    /// When this worker first published its own record on the gossip topic, if ever.
    pub fn first_published(&self) -> Option<Instant> {
        self.first_published.lock().ok().and_then(|f| *f)
    }

    /// When the first record of `worker` was accepted by this node, if ever.
    pub fn first_seen(&self, worker: &PeerId) -> Option<Instant> {
        self.first_seen.lock().ok()?.get(worker).copied()
    }

    /// This node's own current record (workers).
    pub fn own_record(&self) -> Option<SignedRecord> {
        self.own.lock().ok()?.clone()
    }
}

/// Subscribe to the topic and start the validator (and, with `own`, the publisher). A worker's
/// first record is built here, so a missing TEE is reported at start-up.
pub async fn start(
    network: NetworkHandle,
    verifier: Arc<Verifier>,
    collateral: Arc<CollateralSource>,
    own: Option<OwnRecord>,
    cache: Option<RecordCache>,
    registry: &mut Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<(AttestationHandle, Vec<JoinHandle<()>>), ServiceError> {
    let metrics = Metrics::default();
    let r = registry.sub_registry_with_prefix("cocoon_attestation");
    r.register(
        "verdicts",
        "Gossiped attestation records by verdict and reason class",
        metrics.verdicts.clone(),
    );
    r.register("fetched", "Attestation records accepted after a direct fetch", metrics.fetched.clone());
    r.register("published", "Own attestation records published", metrics.published.clone());
    r.register(
        "rejected_relayed",
        "Invalid records received from a peer other than their author (should stay 0)",
        metrics.rejected_relayed.clone(),
    );

    let handle = AttestationHandle {
        known: Arc::new(Mutex::new(KnownWorkers::new(KNOWN_CAPACITY))),
        first_seen: Arc::default(),
        first_published: Arc::default(),
        cache,
        own: Arc::new(Mutex::new(None)),
        metrics,
        told_simulated: Arc::default(),
    };
    handle.restore(&verifier, &collateral, unix_now());
    let first = match &own {
        Some(own) => {
            let own = own.clone();
            let built = tokio::task::spawn_blocking(move || own.build(unix_now()))
                .await
                .map_err(|e| ServiceError::Sign(e.to_string()))??;
            Some(built)
        }
        None => None,
    };
    let rx = network.subscribe(ATTESTATION_TOPIC, QUEUE).await?;
    let mut tasks = vec![
        tokio::spawn(validate_loop(
            network.clone(),
            rx,
            handle.clone(),
            (verifier.clone(), collateral.clone()),
            shutdown.clone(),
        )),
        tokio::spawn(discover_loop(
            network.clone(),
            handle.clone(),
            (verifier, collateral),
            shutdown.clone(),
        )),
    ];
    if let (Some(own), Some(first)) = (own, first) {
        tasks.push(tokio::spawn(publish_loop(network, own, first, handle.clone(), shutdown)));
    }
    Ok((handle, tasks))
}

async fn validate_loop(
    network: NetworkHandle,
    mut rx: tokio::sync::mpsc::Receiver<GossipMessage>,
    handle: AttestationHandle,
    (verifier, collateral): (Arc<Verifier>, Arc<CollateralSource>),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = prune.tick() => {
                let dropped = handle.prune(unix_now());
                if dropped > 0 {
                    tracing::info!(dropped, "expired attestation records dropped");
                }
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let judgement =
            judge(&message.data, message.author, &handle.known, &verifier, &collateral, unix_now()).await;
        let (verdict, class) = match judgement {
            Judgement::Accept(signed) => {
                let worker = signed.record().peer_id;
                let insertion = handle.keep(*signed);
                tracing::info!(%worker, ?insertion, "verified attestation record");
                (Validation::Accept, "accept")
            }
            Judgement::Ignore(reason) => {
                tracing::debug!(source = %message.propagation_source, %reason, "attestation record ignored");
                (Validation::Ignore, "ignore")
            }
            Judgement::IgnoreSimulated => {
                handle.refused_simulated(message.author);
                (Validation::Ignore, "ignore")
            }
            Judgement::Reject(reason) => {
                tracing::warn!(source = %message.propagation_source, %reason, "invalid attestation record");
                if message.author != Some(message.propagation_source) {
                    handle.metrics.rejected_relayed.inc();
                }
                let _ = network
                    .penalize(
                        message.propagation_source,
                        REJECTED_RECORD,
                        format!("invalid attestation record: {reason}"),
                    )
                    .await;
                (Validation::Reject, "reject")
            }
        };
        handle.metrics.verdict(class).inc();
        if network.validate(&message, verdict).await.is_err() {
            return;
        }
    }
}

async fn publish_loop(
    network: NetworkHandle,
    own: OwnRecord,
    first: SignedRecord,
    handle: AttestationHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = Some(first);
    loop {
        let signed = match next.take() {
            Some(s) => s,
            None => {
                let own = own.clone();
                match tokio::task::spawn_blocking(move || own.build(unix_now())).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot renew the attestation record; retrying");
                        if sleep_or_stop(PUBLISH_RETRY * 20, &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                }
            }
        };
        if let Ok(mut slot) = handle.own.lock() {
            *slot = Some(signed.clone());
        }
        let bytes = signed.encode();
        if network.serve_record(Some(bytes.clone())).await.is_err() {
            return;
        }
        // Publish as soon as someone listens (gossipsub refuses while no peer is subscribed).
        loop {
            let listening = network.status().await.map(|s| s.mesh_peers > 0).unwrap_or(false);
            if listening && network.publish(ATTESTATION_TOPIC, bytes.clone()).await.is_ok() {
                handle.metrics.published.inc();
                if let Ok(mut first) = handle.first_published.lock() {
                    first.get_or_insert_with(Instant::now);
                }
                tracing::info!(expires_at = signed.record().expires_at, "published attestation record");
                announce(&network, &signed).await;
                break;
            }
            if sleep_or_stop(PUBLISH_RETRY, &mut shutdown).await {
                return;
            }
        }
        if sleep_or_stop(own.validity / 2, &mut shutdown).await {
            return;
        }
    }
}

/// Announce this worker in the DHT under [`WORKERS_KEY`] and each offered model id.
async fn announce(network: &NetworkHandle, signed: &SignedRecord) {
    let keys = std::iter::once(WORKERS_KEY.to_vec())
        .chain(signed.record().offers.iter().map(|o| o.model_id.as_bytes().to_vec()));
    for key in keys {
        if let Err(e) = network.start_providing(key).await {
            tracing::debug!(error = %e, "provider announcement incomplete");
        }
    }
}

/// Find workers through their provider records and fetch the records of those not known yet.
async fn discover_loop(
    network: NetworkHandle,
    handle: AttestationHandle,
    (verifier, collateral): (Arc<Verifier>, Arc<CollateralSource>),
    mut shutdown: watch::Receiver<bool>,
) {
    let me = network.peer_id();
    let mut wait = FIRST_DISCOVERY_WAIT;
    loop {
        let connected = network.status().await.map(|s| !s.connected.is_empty()).unwrap_or(false);
        if !connected {
            wait = FIRST_DISCOVERY_WAIT; // a node that rejoins catches up quickly again
            if sleep_or_stop(PUBLISH_RETRY, &mut shutdown).await {
                return;
            }
            continue;
        }
        let providers = network.get_providers(WORKERS_KEY.to_vec()).await.unwrap_or_default();
        for peer in providers.into_iter().filter(|p| *p != me) {
            if handle.record_of(&peer).is_some() {
                continue;
            }
            let Ok(Some(bytes)) = network.fetch_record(peer).await else { continue };
            match judge(&bytes, Some(peer), &handle.known, &verifier, &collateral, unix_now()).await {
                Judgement::Accept(signed) => {
                    handle.keep(*signed);
                    handle.metrics.fetched.inc();
                    tracing::info!(worker = %peer, "verified attestation record fetched directly");
                }
                Judgement::Ignore(reason) => {
                    tracing::debug!(worker = %peer, %reason, "fetched record ignored")
                }
                Judgement::IgnoreSimulated => handle.refused_simulated(Some(peer)),
                Judgement::Reject(reason) => {
                    tracing::warn!(worker = %peer, %reason, "fetched attestation record is invalid");
                    let reason = format!("invalid attestation record: {reason}");
                    let _ = network.penalize(peer, REJECTED_RECORD, reason).await;
                }
            }
        }
        if sleep_or_stop(wait, &mut shutdown).await {
            return;
        }
        wait = if wait < DISCOVERY_RAMP_END { wait * 2 } else { DISCOVERY_INTERVAL };
    }
}

/// Sleep for `d`; true if shutdown was requested meanwhile.
async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

#[cfg(test)]
impl OwnRecord {
    /// A worker with a simulated TEE offering one model, for unit tests.
    pub(crate) fn for_tests(identity: &Keypair) -> Self {
        Self {
            identity: identity.clone(),
            noise_public: [4; 32],
            payout_address: "UQ-worker".into(),
            terms: PaymentTerms::Free,
            offers: vec![cocoon_protocol::attestation::record::ModelOffer {
                model_id: "m@sha256:00".into(),
                price_prompt_per_1k: 1,
                price_completion_per_1k: 2,
                context_length: 512,
                max_concurrent: 1,
            }],
            tee: Arc::new(super::provider::SimulatedTee::new(libp2p::identity::ed25519::Keypair::generate())),
            gpus: Arc::new(super::gpu_provider::NoGpus),
            validity: Duration::from_secs(600),
        }
    }
}
