//! The report of one run: every measured number with the scenario and seed (JSON), and a
//! Markdown summary of the headline numbers.
//!
//! Times are milliseconds since the run started unless a field says otherwise. Distributions carry
//! their samples (so plots and comparisons need nothing else) and their percentiles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Percentiles of a sample set (nearest-rank; all 0 when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    /// Sample count.
    pub count: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Dist {
    /// Percentiles of `samples` (order does not matter; NaNs are dropped).
    pub fn of(samples: &[f64]) -> Self {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if s.is_empty() {
            return Self::default();
        }
        s.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
            s[i]
        };
        Self {
            count: s.len(),
            min: s[0],
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        }
    }
}

/// A value sampled over the run: `(ms since start, value)`.
pub type Series = Vec<(f64, f64)>;

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The scenario file's text, verbatim (so a report says exactly what ran).
    pub scenario_text: String,
    /// Seed of every random choice in the plan.
    pub seed: u64,
    /// SHA-256 of the plan (keys, roles, regions, schedules): equal seeds give equal digests.
    pub plan_digest: String,
    /// `cocoon-simnet` version and build profile.
    pub build: String,
    /// Nodes by role (`bootstrap`, `worker`, `client`, `sybil`, `forger`).
    pub nodes: BTreeMap<String, usize>,
    /// Resources used.
    pub resources: Resources,
    /// Network formation.
    pub join: JoinStats,
    /// Routing-table health.
    pub routing: RoutingStats,
    /// Kademlia lookups against the true closest set.
    pub lookup: LookupStats,
    /// Attestation record propagation.
    pub gossip: GossipStats,
    /// Inference requests.
    pub requests: RequestStats,
    /// Payments, when the scenario pays.
    pub payments: Option<PaymentStats>,
    /// Adversaries and what they achieved.
    pub attacks: AttackStats,
    /// Partition and healing, when the scenario splits the network.
    pub partition: Option<PartitionStats>,
    /// Churn, when nodes leave and come back.
    pub churn: Option<ChurnStats>,
    /// Malicious clients and workers, when the scenario has them.
    #[serde(default)]
    pub strangers: Option<StrangerStats>,
    /// The attack-free twin's own report (written beside this one, not inside it).
    #[serde(skip)]
    pub twin: Option<Box<Report>>,
    /// What the simulated network carried.
    pub fabric: FabricStats,
    /// Things the reader must know to interpret the numbers (residual nondeterminism, caveats).
    pub notes: Vec<String>,
}

/// Process resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Wall-clock seconds of the whole run (start-up included).
    pub wall_secs: f64,
    /// CPU seconds (user + system) of the process over the run.
    pub cpu_secs: f64,
    /// Resident memory before the first node started, bytes.
    pub rss_start_bytes: u64,
    /// Highest resident memory seen, bytes.
    pub rss_peak_bytes: u64,
    /// `(rss_peak - rss_start) / nodes`, bytes.
    pub memory_per_node_bytes: u64,
    /// Resident memory over time, MiB.
    pub rss_mib: Series,
    /// CPU cores busy over time (CPU seconds per wall second between samples).
    pub cpu_cores: Series,
}

/// Network formation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JoinStats {
    /// Nodes started.
    pub started: usize,
    /// Nodes whose routing table reached `min(20, N-1)` peers.
    pub joined: usize,
    /// Per node: ms from its start until its routing table held `min(20, N-1)` peers.
    pub times_ms: Vec<f64>,
    /// Percentiles of `times_ms`.
    pub time: Dist,
    /// ms from the first start until the last node joined.
    pub formation_ms: f64,
    /// Nodes that had not joined when the settle time was over.
    #[serde(default)]
    pub unjoined: Vec<Unjoined>,
}

/// A node whose routing table stayed short of `min(20, N-1)` peers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unjoined {
    /// Plan index.
    pub node: usize,
    /// Its kind (`client`, `worker`, ...).
    pub kind: String,
    /// Peers in its routing table when the settle time was over.
    pub routing_table: usize,
    /// Peers it was connected to then.
    pub connected: usize,
}

/// Routing-table health: does each node know the 20 peers closest to itself?
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoutingStats {
    /// Share of live nodes whose table holds all of their true 20 closest live peers (end).
    pub healthy_share: f64,
    /// Mean share of the true 20 closest each node's table holds (end).
    pub closest_known_mean: f64,
    /// Mean routing-table size (end).
    pub table_size_mean: f64,
    /// `healthy_share` over time.
    pub healthy_over_time: Series,
}

/// One lookup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupSample {
    /// Share of the true 20 closest live peers the lookup returned.
    pub recall: f64,
    /// `FIND_NODE` requests sent.
    pub requests: u32,
    /// Sequential rounds, estimated as duration / mean round trip between the querier and the
    /// peers it can reach (libp2p does not report hops).
    pub rounds: f64,
    /// Wall time of the lookup, ms.
    pub latency_ms: f64,
    /// Replayed over the routing-table snapshot: the round in which the closest peer to the key
    /// became known (`None`: never).
    #[serde(default)]
    pub hops: Option<u32>,
    /// Replayed: rounds until the lookup stops.
    #[serde(default)]
    pub replay_rounds: u32,
}

/// Kademlia lookups for random keys from random live nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupStats {
    /// Lookups run.
    pub queries: usize,
    /// Lookups that failed outright.
    pub failed: usize,
    /// Mean recall.
    pub recall_mean: f64,
    /// Recall percentiles.
    pub recall: Dist,
    /// Requests per lookup.
    pub requests: Dist,
    /// Rounds per lookup, estimated from timing (duration / mean round trip; not hops).
    pub rounds: Dist,
    /// Lookup latency, ms.
    pub latency_ms: Dist,
    /// Every lookup.
    pub samples: Vec<LookupSample>,
    /// How long the run waited for the connection managers to go quiet before the lookups, ms.
    #[serde(default)]
    pub quiet_wait_ms: f64,
    /// Hops to the key's closest peer, replayed over the nodes' real routing tables (see
    /// `run/replay.rs`; comparable with DHT hop counts).
    #[serde(default)]
    pub hops: Dist,
    /// Replayed lookups that never learned of the key's closest peer.
    #[serde(default)]
    pub hops_unreached: usize,
    /// Replayed rounds until the lookup stops (α = 3).
    #[serde(default)]
    pub replay_rounds: Dist,
}

/// Propagation of workers' attestation records to honest nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GossipStats {
    /// Workers whose records were followed (honest and sybil workers; all attest validly).
    pub records: usize,
    /// Honest non-worker nodes that should receive them.
    pub receivers: usize,
    /// Share of (receiver, record) pairs delivered by the end.
    pub coverage: f64,
    /// Receivers that got every record.
    pub receivers_complete: usize,
    /// Share of pairs delivered over time (ms since the record's first publication).
    pub coverage_over_time: Series,
    /// Per delivered pair: ms from the worker publishing to the receiver accepting it.
    pub latency_ms: Dist,
    /// Latency samples (capped at 20,000, evenly thinned).
    pub latency_samples: Vec<f64>,
    /// ms after publication by which 99 % of pairs were delivered (`None` if never).
    pub p99_coverage_ms: Option<f64>,
    /// Gossipsub messages received on the attestation topic, duplicates included.
    pub messages_received: u64,
    /// Of those, first receptions.
    pub messages_unique: u64,
    /// `messages_received / messages_unique`: transmissions per delivery.
    pub transmissions_per_delivery: f64,
    /// Records fetched directly (discovery) rather than gossiped.
    pub fetched: u64,
}

/// Inference requests from clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestStats {
    /// Requests sent.
    pub sent: usize,
    /// Requests that completed.
    pub succeeded: usize,
    /// `succeeded / sent` (1.0 when none were sent).
    pub success_rate: f64,
    /// Failures by reason.
    pub failures: BTreeMap<String, usize>,
    /// The first error text seen for each failure reason.
    #[serde(default)]
    pub failure_examples: BTreeMap<String, String>,
    /// Time to first token, ms.
    pub ttft_ms: Dist,
    /// TTFT samples (capped at 20,000).
    pub ttft_samples: Vec<f64>,
    /// Whole request, ms.
    pub total_ms: Dist,
    /// Failovers (moves to another worker before the first token) over all requests.
    pub failovers: u64,
    /// Requests by failover count: index = failovers.
    pub failover_histogram: Vec<usize>,
    /// DHT lookups clients made of a worker they could not open a stream to (no address known,
    /// typically after a restart): `(found, not found)`, summed over every client instance,
    /// departed ones included.
    #[serde(default)]
    pub worker_lookups: (u64, u64),
    /// Requests that completed on a sybil worker (should be 0: sybils never finish).
    pub served_by_sybil: usize,
    /// Success rate per 10 s window: `(window end ms, rate)`.
    pub success_over_time: Series,
}

/// Payments reconciliation: what was invoiced, signed, stored and claimed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PaymentStats {
    /// Paid requests: every receipt a client verified, late completions included.
    pub invoices: u64,
    /// Sum of invoiced amounts, nanotons: the receipts of every completed request, including
    /// those that completed after the scenario's timeout (counted as failed requests).
    pub invoiced_nanotons: u128,
    /// Sum over the clients' channels of the cumulative amount they signed, nanotons. Equals
    /// vouchered unless a signed voucher never reached its worker.
    #[serde(default)]
    pub signed_nanotons: u128,
    /// Sum over channels of the cumulative voucher the worker holds, nanotons.
    pub vouchered_nanotons: u128,
    /// Sum over the workers of the debts they recorded (invoices no valid voucher paid, e.g. the
    /// client left between the receipt and its voucher), nanotons; malicious clients' debts are
    /// in `owed_by_strangers_nanotons` instead.
    #[serde(default)]
    pub owed_nanotons: u128,
    /// Debts honest workers recorded against malicious clients (answers they never paid), nanotons:
    /// not invoiced by any honest request, so outside the reconciliation.
    #[serde(default)]
    pub owed_by_strangers_nanotons: u128,
    /// Sum over channels of what the chain paid the workers after the final claims, nanotons.
    pub claimed_nanotons: u128,
    /// Channels opened.
    pub channels: usize,
    /// Vouchers workers accepted (`Paid` frames).
    pub vouchers_accepted: u64,
    /// Completed requests whose voucher acknowledgement the client did not get.
    pub unpaid: u64,
    /// Chain transactions over the run (all accounts), including the final claims.
    pub chain_transactions: u64,
    /// Chain transactions during the load (before the final claims) per paid request.
    pub transactions_per_request: f64,
    /// Clients that opened at least one channel.
    #[serde(default)]
    pub paying_clients: usize,
    /// Channels those clients hold (in use or being closed), per paying client.
    #[serde(default)]
    pub channels_per_client: f64,
    /// Chain operations the clients sent (external messages from their wallets: deploys,
    /// top-ups, closes; each sets off a few transactions), per paid request.
    #[serde(default)]
    pub client_operations_per_request: f64,
    /// The same per paying client and per 10 minutes of the load (a load shorter than 10 minutes
    /// counts as 10).
    #[serde(default)]
    pub client_operations_per_client_per_10_min: f64,
    /// invoiced = vouchered + owed and vouchered = claimed, exactly: every invoice was either paid
    /// by a voucher the chain honoured or recorded as a debt by its worker.
    pub reconciled: bool,
}

/// Adversaries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackStats {
    /// Sybil workers (attested, but drop every stream they accept).
    pub sybils: usize,
    /// Forger nodes.
    pub forgers: usize,
    /// Forged records the forgers published.
    pub forged_published: u64,
    /// Forged records honest nodes rejected (first hop).
    pub forged_rejected: u64,
    /// Invalid records honest nodes received from someone other than their author (must be 0).
    pub rejected_relayed: u64,
    /// Honest nodes that blocked at least one forger.
    pub nodes_blocking_forgers: usize,
    /// Honest nodes connected to a forger at the end.
    pub nodes_connected_to_forgers: usize,
}

/// Split and heal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionStats {
    /// When the split started, ms.
    pub split_at_ms: f64,
    /// When it healed, ms.
    pub healed_at_ms: f64,
    /// Share of nodes on the minority side.
    pub minority_share: f64,
    /// Connections the split cut.
    pub connections_cut: u64,
    /// Lookup recall against the whole network while split (sides cannot see each other).
    pub recall_during: f64,
    /// Lookup recall after healing plus the settle time.
    pub recall_after: f64,
    /// Share of nodes whose routing table holds a peer from the other side (end).
    pub cross_known_after: f64,
    /// ms from healing until every node again had a connection across the former split.
    pub reconnect_ms: Option<f64>,
}

/// Nodes leaving and returning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnStats {
    /// Nodes stopped during the run.
    pub departures: usize,
    /// Nodes restarted (same key and data directory).
    pub returns: usize,
    /// Live nodes over time.
    pub live_over_time: Series,
}

/// What the simulated network carried.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FabricStats {
    /// Connections established.
    pub connections: u64,
    /// Dials refused (no listener, partition, node down).
    pub dials_refused: u64,
    /// Substreams opened.
    pub streams: u64,
    /// Substreams reset at open by the loss model.
    pub streams_lost: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Writes delayed by the loss model (a retransmission).
    pub retransmissions: u64,
}

/// Malicious clients and workers mixed into the honest network, and what the honest side kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StrangerStats {
    /// Malicious nodes by kind.
    pub strangers: BTreeMap<String, usize>,
    /// Honest requests counted: those whose client knew a verified honest worker for the model
    /// when it sent them.
    pub honest_requests: usize,
    /// Of those, completed within the scenario's timeout.
    pub honest_succeeded: usize,
    /// `honest_succeeded / honest_requests` (1.0 when none).
    pub honest_success_rate: f64,
    /// Honest requests left out: their client knew no honest worker for the model.
    pub honest_without_worker: usize,
    /// Failed honest requests by the kind of the last worker tried (`none`: the error names none).
    pub failures_by_worker: BTreeMap<String, usize>,
    /// Honest requests completed by a malicious worker (must be 0: none of them finishes well).
    pub served_by_strangers: usize,
    /// Honest time to first token in this run, ms.
    pub ttft_ms: Dist,
    /// Of honest requests served by the first worker they tried (no failover), ms: the time to
    /// first token without the detours a malicious worker causes.
    #[serde(default)]
    pub ttft_first_try_ms: Dist,
    /// Honest requests that completed after at least one failover.
    #[serde(default)]
    pub failed_over: usize,
    /// The attack-free twin (same plan without attackers), when it ran.
    pub twin: Option<TwinStats>,
    /// Honest TTFT p50 here over the twin's.
    pub ttft_p50_ratio: Option<f64>,
    /// Honest peers blocked by honest nodes, seen during and after the load (must be empty).
    pub honest_blocked: Vec<BlockedPair>,
    /// (honest node, malicious peer) blocks seen, by the malicious peer's kind.
    pub strangers_blocked: BTreeMap<String, usize>,
    /// Blocks no status sample named (a node blocking more peers than its status lists): 0 means
    /// `honest_blocked` is exact.
    pub blocks_unseen: usize,
    /// Each malicious client kind: what it tried and how it was answered (answer → count).
    pub clients: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each malicious worker kind: what it got and did (event → count).
    pub workers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Money per party, when the scenario pays.
    pub money: Option<MoneyStats>,
    /// The targets and whether this run met them.
    pub checks: Vec<Check>,
}

/// The honest requests of the attack-free twin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TwinStats {
    /// Honest requests sent.
    pub requests: usize,
    /// Completed in time.
    pub succeeded: usize,
    /// `succeeded / requests`.
    pub success_rate: f64,
    /// Time to first token, ms.
    pub ttft_ms: Dist,
    /// Of requests served by the first worker they tried, ms.
    #[serde(default)]
    pub ttft_first_try_ms: Dist,
    /// Requests that completed after at least one failover.
    #[serde(default)]
    pub failed_over: usize,
    /// TTFT samples (capped at 20,000).
    pub ttft_samples: Vec<f64>,
    /// Honest peers blocked by honest nodes at its end.
    pub honest_blocked: usize,
    /// Its wall time, s.
    pub wall_secs: f64,
}

/// An honest node that blocked an honest peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockedPair {
    /// The blocking node (plan index) and its kind.
    pub node: usize,
    /// Its kind.
    pub node_kind: String,
    /// The blocked peer (plan index).
    pub peer: usize,
    /// Its kind.
    pub peer_kind: String,
}

/// Money per party, nanotons, after the final claims.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MoneyStats {
    /// Honest clients: signed to honest workers.
    pub honest_clients_to_honest: u128,
    /// Honest clients: signed to malicious workers (must be 0: no malicious receipt verifies).
    pub honest_clients_to_strangers: u128,
    /// Channels honest clients opened with malicious workers (a refusal comes after the channel).
    pub honest_channels_with_strangers: usize,
    /// Their deposits: locked, not lost (the client winds such a channel down and gets it back).
    pub honest_deposits_with_strangers: u128,
    /// Honest workers: best vouchers of honest clients (claimed on chain at the end).
    pub honest_workers_vouchered: u128,
    /// Honest workers: what the chain paid them after the final claims.
    pub honest_workers_claimed: u128,
    /// Honest workers: debts of honest clients.
    pub honest_workers_owed_by_honest: u128,
    /// Honest workers: debts of malicious clients (answers never paid; such a client is refused
    /// from then on).
    pub honest_workers_owed_by_strangers: u128,
    /// Honest workers: vouchers of malicious clients.
    pub honest_workers_vouchered_by_strangers: u128,
    /// Malicious clients: channel deposits they made (stop-readers need a channel to be served).
    pub strangers_deposited: u128,
    /// Malicious workers: voucher frames honest clients sent them.
    pub strangers_vouchers: u64,
}

/// One target of a scenario and whether the run met it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The target.
    pub target: String,
    /// What was measured.
    pub value: String,
    /// Met.
    pub pass: bool,
}
