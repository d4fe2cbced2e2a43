//! Scenario files (TOML): how many nodes of each kind, how they join, how the network behaves,
//! what load, churn, attacks and partitions happen, and what is measured. Every field but `name`
//! has a documented default (`docs/simnet.md`); unknown fields are refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML for a scenario.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Parsed, but inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (used for report files).
    pub name: String,
    /// One line on what it shows.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice in the plan.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Node counts.
    #[serde(default)]
    pub nodes: Nodes,
    /// Link model.
    #[serde(default)]
    pub network: Network,
    /// How nodes join.
    #[serde(default)]
    pub join: Join,
    /// The workers' stand-in engine and offer.
    #[serde(default)]
    pub workers: Workers,
    /// Measurements after formation.
    #[serde(default)]
    pub measure: Measure,
    /// Inference requests.
    pub load: Option<Load>,
    /// Nodes leaving and returning.
    pub churn: Option<Churn>,
    /// Adversaries.
    #[serde(default)]
    pub attack: Attack,
    /// Split and heal.
    pub partition: Option<Partition>,
}

/// Node counts by role. Clients are ordinary peers with the client role (the DHT's bulk).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Bootstrap nodes (everyone joins through them).
    #[serde(default = "defaults::bootstrap")]
    pub bootstrap: usize,
    /// Honest workers.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Clients.
    #[serde(default = "defaults::clients")]
    pub clients: usize,
}

/// The link model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Region names; nodes are spread over them by `region_weights`.
    #[serde(default = "defaults::regions")]
    pub regions: Vec<String>,
    /// Share of nodes per region (normalised; default equal).
    #[serde(default)]
    pub region_weights: Vec<f64>,
    /// One-way latency between regions, ms (square, `regions.len()`).
    #[serde(default = "defaults::latency")]
    pub latency_ms: Vec<Vec<f64>>,
    /// Each write's delay varies by up to ± this share.
    #[serde(default = "defaults::jitter")]
    pub jitter: f64,
    /// Probability that a write needs a retransmission.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a new substream is reset at once.
    #[serde(default)]
    pub stream_loss: f64,
    /// Bandwidth per connection direction, Mbit/s (0: unlimited).
    #[serde(default = "defaults::bandwidth")]
    pub bandwidth_mbps: f64,
    /// Connection-manager target per node.
    #[serde(default = "defaults::target_connections")]
    pub target_connections: usize,
    /// Hard connection cap per node.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// Gossipsub heartbeat, ms.
    #[serde(default = "defaults::heartbeat")]
    pub gossip_heartbeat_ms: u64,
    /// `simulated` (the fabric: latency model, partitions) or `memory` (libp2p's in-process
    /// transport with Noise and Yamux, no latency model: a baseline for the fabric).
    #[serde(default)]
    pub transport: TransportChoice,
    /// Kademlia periodic refresh, s.
    #[serde(default = "defaults::routing_refresh")]
    pub routing_refresh_secs: u64,
    /// Ping period per connection, s (the node's round-trip-time metric).
    #[serde(default = "defaults::ping_interval")]
    pub ping_interval_secs: u64,
}

/// Which transport the nodes use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    /// The simulated fabric.
    #[default]
    Simulated,
    /// libp2p's memory transport with Noise and Yamux.
    Memory,
}

/// Joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// Delay between consecutive node starts, ms (bootstrap nodes start first, then workers and
    /// clients interleaved in a seeded order).
    #[serde(default = "defaults::join_interval")]
    pub interval_ms: u64,
    /// Start workers (honest and sybil) only once every other node joined, so their records
    /// spread through a formed network (pure gossip propagation).
    #[serde(default)]
    pub workers_after_formation: bool,
    /// Longest wait, after the last start, for every routing table to fill, s.
    #[serde(default = "defaults::settle")]
    pub settle_secs: u64,
    /// After formation, keep sampling routing health for this long before the headline routing
    /// health is taken, s: a table holds K peers soon after its node's own lookup, but the closest
    /// K arrive as later nodes look up and refresh. 0 measures right after formation.
    #[serde(default)]
    pub observe_secs: u64,
}

/// Workers' stand-in engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// Delay before the first token, ms.
    #[serde(default = "defaults::first_token")]
    pub first_token_ms: u64,
    /// Delay per further token, ms.
    #[serde(default = "defaults::per_token")]
    pub per_token_ms: u64,
    /// Concurrent requests per worker.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: u32,
    /// Price per 1,000 prompt or completion tokens, nanotons (0: free, no payments).
    #[serde(default)]
    pub price_per_1k: u64,
}

/// What is measured once the network formed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// Random-key lookups from random nodes.
    #[serde(default = "defaults::lookups")]
    pub lookups: usize,
    /// Lookups running at once.
    #[serde(default = "defaults::lookup_parallel")]
    pub lookup_parallel: usize,
    /// Longest wait for every honest node to hold every worker record, s.
    #[serde(default = "defaults::gossip_wait")]
    pub gossip_wait_secs: u64,
    /// Longest wait, before the lookups, for the connection managers to finish trimming the
    /// formation's surplus connections (no connection trimmed anywhere for 5 s), s.
    #[serde(default = "defaults::quiet_wait")]
    pub quiet_wait_secs: u64,
    /// Sampling period of the time series, ms.
    #[serde(default = "defaults::sample")]
    pub sample_ms: u64,
}

/// Request load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Share of clients that send requests.
    #[serde(default = "defaults::one")]
    pub client_share: f64,
    /// Requests per sending client.
    #[serde(default = "defaults::requests")]
    pub requests_per_client: usize,
    /// Mean gap between a client's requests, ms (exponential).
    #[serde(default = "defaults::request_gap")]
    pub mean_gap_ms: u64,
    /// Completion tokens per request.
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: u32,
    /// Longest a request may take, s.
    #[serde(default = "defaults::request_timeout")]
    pub timeout_secs: u64,
    /// Whether the callers show text as it arrives (a streamed API response: an answer a worker
    /// breaks after its first chunk fails the request) or keep it until the answer completes (a
    /// non-streamed one: such an answer is discarded and the request goes to another worker).
    #[serde(default = "defaults::yes")]
    pub stream: bool,
}

/// Churn: a share of clients leave and come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Share of clients that churn.
    #[serde(default = "defaults::churn_share")]
    pub share: f64,
    /// Mean session length (exponential), s.
    #[serde(default = "defaults::session")]
    pub mean_session_secs: f64,
    /// Mean time offline before returning (exponential), s.
    #[serde(default = "defaults::downtime")]
    pub mean_downtime_secs: f64,
    /// How long churn goes on, s.
    #[serde(default = "defaults::churn_duration")]
    pub duration_secs: u64,
}

/// Adversaries. The malicious clients and workers ("strangers") are planned after every honest
/// node with a seed of their own, so the same scenario without them has the same honest nodes,
/// keys and requests (the attack-free twin, see `twin`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    /// Workers that attest validly and advertise offers, but drop every stream they accept.
    #[serde(default)]
    pub sybil_workers: usize,
    /// Nodes that flood forged attestation records.
    #[serde(default)]
    pub forgers: usize,
    /// Forged records each forger publishes.
    #[serde(default = "defaults::forged")]
    pub forged_per_forger: usize,
    /// Clients that ask for a long (paid) answer, read its first frame and never read again.
    #[serde(default)]
    pub stop_reading_clients: usize,
    /// Clients that open `silent_streams` inference streams at a time and never start a handshake.
    #[serde(default)]
    pub silent_clients: usize,
    /// Clients whose request frame, inside a valid Noise session, does not decode.
    #[serde(default)]
    pub malformed_clients: usize,
    /// Clients whose requests name payment channels that were never deployed (needs payments).
    #[serde(default)]
    pub fake_channel_clients: usize,
    /// Workers that attest validly, advertise a huge `max_concurrent` at half the price, and
    /// refuse every request.
    #[serde(default)]
    pub refusing_workers: usize,
    /// Workers that answer with text for ever (until the client stops reading).
    #[serde(default)]
    pub endless_workers: usize,
    /// Workers that answer, then invoice a prompt far larger than the one sent.
    #[serde(default)]
    pub inflating_workers: usize,
    /// Mean gap between one malicious client's attempts while the load runs, ms (exponential).
    #[serde(default = "defaults::stranger_gap")]
    pub mean_gap_ms: u64,
    /// Streams a silent client opens per attempt (and holds, without a handshake).
    #[serde(default = "defaults::silent_streams")]
    pub silent_streams: usize,
    /// Run the attack-free twin first (the same plan without any attacker: sybils, forgers and
    /// strangers) and compare the honest requests of both runs.
    #[serde(default)]
    pub twin: bool,
}

impl Attack {
    /// Malicious clients and workers (sybils and forgers not included).
    pub fn strangers(&self) -> usize {
        self.stop_reading_clients
            + self.silent_clients
            + self.malformed_clients
            + self.fake_channel_clients
            + self.refusing_workers
            + self.endless_workers
            + self.inflating_workers
    }

    /// The same settings with no attacker at all.
    pub fn without_attackers(&self) -> Self {
        Self {
            sybil_workers: 0,
            forgers: 0,
            stop_reading_clients: 0,
            silent_clients: 0,
            malformed_clients: 0,
            fake_channel_clients: 0,
            refusing_workers: 0,
            endless_workers: 0,
            inflating_workers: 0,
            twin: false,
            ..self.clone()
        }
    }
}

/// A split of the network and its healing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Share of nodes cut off (a seeded choice; bootstrap nodes stay on the majority side).
    #[serde(default = "defaults::minority")]
    pub minority_share: f64,
    /// How long the split lasts, s.
    #[serde(default = "defaults::split")]
    pub duration_secs: u64,
    /// Time after healing before measuring again, s.
    #[serde(default = "defaults::heal_settle")]
    pub settle_secs: u64,
}

mod defaults {
    pub fn seed() -> u64 {
        1
    }
    pub fn bootstrap() -> usize {
        2
    }
    pub fn workers() -> usize {
        4
    }
    pub fn clients() -> usize {
        94
    }
    pub fn regions() -> Vec<String> {
        vec!["eu".into(), "us".into(), "asia".into()]
    }
    pub fn latency() -> Vec<Vec<f64>> {
        vec![vec![5.0, 40.0, 110.0], vec![40.0, 5.0, 75.0], vec![110.0, 75.0, 5.0]]
    }
    pub fn jitter() -> f64 {
        0.1
    }
    pub fn bandwidth() -> f64 {
        100.0
    }
    // The node's own defaults: with a 20/30 cap, connection churn kept routing tables from
    // ever holding the closest peers (docs/simnet.md, "findings").
    pub fn target_connections() -> usize {
        50
    }
    pub fn max_connections() -> u32 {
        100
    }
    pub fn heartbeat() -> u64 {
        1000
    }
    pub fn routing_refresh() -> u64 {
        300
    }
    pub fn ping_interval() -> u64 {
        15
    }
    pub fn join_interval() -> u64 {
        100
    }
    pub fn settle() -> u64 {
        60
    }
    pub fn first_token() -> u64 {
        150
    }
    pub fn per_token() -> u64 {
        25
    }
    pub fn max_concurrent() -> u32 {
        8
    }
    pub fn lookups() -> usize {
        100
    }
    pub fn lookup_parallel() -> usize {
        8
    }
    pub fn gossip_wait() -> u64 {
        60
    }
    pub fn quiet_wait() -> u64 {
        30
    }
    pub fn sample() -> u64 {
        500
    }
    pub fn yes() -> bool {
        true
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn requests() -> usize {
        5
    }
    pub fn request_gap() -> u64 {
        2000
    }
    pub fn max_tokens() -> u32 {
        16
    }
    pub fn request_timeout() -> u64 {
        30
    }
    pub fn churn_share() -> f64 {
        0.3
    }
    pub fn session() -> f64 {
        20.0
    }
    pub fn downtime() -> f64 {
        5.0
    }
    pub fn churn_duration() -> u64 {
        60
    }
    pub fn forged() -> usize {
        20
    }
    pub fn stranger_gap() -> u64 {
        2000
    }
    // Beyond one worker's share of streams per peer (its slots + 4) at the simnet default of 8.
    pub fn silent_streams() -> usize {
        16
    }
    pub fn minority() -> f64 {
        0.3
    }
    pub fn split() -> u64 {
        15
    }
    pub fn heal_settle() -> u64 {
        20
    }
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // Every field has a serde default, so an empty table is the default value.
                toml::from_str("").unwrap_or_else(|e| unreachable!("empty {} table: {e}", stringify!($t)))
            }
        }
    )*};
}
default_from_serde!(Nodes, Network, Join, Workers, Measure, Attack);

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<(Self, String), ScenarioError> {
        let path_text = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path_text.clone(), source })?;
        let scenario = Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { message, .. } => ScenarioError::Parse { path: path_text, message },
            other => other,
        })?;
        Ok((scenario, text))
    }

    /// Parse and check scenario text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { path: "scenario".into(), message: e.to_string() })?;
        s.check()?;
        Ok(s)
    }

    /// Total nodes, adversaries included.
    pub fn total_nodes(&self) -> usize {
        self.nodes.bootstrap
            + self.nodes.workers
            + self.nodes.clients
            + self.attack.sybil_workers
            + self.attack.forgers
            + self.attack.strangers()
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        let n = &self.network;
        if self.nodes.bootstrap == 0 {
            return bad("nodes.bootstrap must be at least 1".into());
        }
        if n.regions.is_empty() {
            return bad("network.regions must name at least one region".into());
        }
        if n.latency_ms.len() != n.regions.len() || n.latency_ms.iter().any(|r| r.len() != n.regions.len()) {
            return bad(format!(
                "network.latency_ms must be a {0}×{0} matrix (one row and column per region)",
                n.regions.len()
            ));
        }
        if n.latency_ms.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
            return bad("network.latency_ms values must be finite and ≥ 0".into());
        }
        if !n.region_weights.is_empty()
            && (n.region_weights.len() != n.regions.len() || n.region_weights.iter().any(|w| *w < 0.0))
        {
            return bad("network.region_weights needs one non-negative weight per region".into());
        }
        for (name, p) in [("jitter", n.jitter), ("loss", n.loss), ("stream_loss", n.stream_loss)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("network.{name} must be within 0..=1, not {p}"));
            }
        }
        if n.max_connections < 4
            || n.target_connections == 0
            || n.target_connections > n.max_connections as usize
        {
            return bad(
                "network: need 0 < target_connections ≤ max_connections and max_connections ≥ 4".into()
            );
        }
        for (name, v) in [
            ("gossip_heartbeat_ms", n.gossip_heartbeat_ms),
            ("routing_refresh_secs", n.routing_refresh_secs),
            ("ping_interval_secs", n.ping_interval_secs),
        ] {
            if v == 0 {
                return bad(format!("network.{name} must be at least 1"));
            }
        }
        if self.load.is_some() && self.nodes.workers == 0 {
            return bad("[load] needs at least one honest worker".into());
        }
        self.check_attack()?;
        if let Some(c) = &self.churn
            && (!(0.0..=1.0).contains(&c.share) || c.mean_session_secs <= 0.0 || c.mean_downtime_secs <= 0.0)
        {
            return bad("churn: share within 0..=1 and positive mean times".into());
        }
        if let Some(p) = &self.partition
            && !(0.0 < p.minority_share && p.minority_share < 1.0)
        {
            return bad("partition.minority_share must be strictly between 0 and 1".into());
        }
        Ok(())
    }

    fn check_attack(&self) -> Result<(), ScenarioError> {
        let a = &self.attack;
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if a.strangers() > 0 && self.load.is_none() {
            return bad("malicious clients and workers act while the load runs: add [load]");
        }
        if a.fake_channel_clients > 0 && self.workers.price_per_1k == 0 {
            return bad("attack.fake_channel_clients needs payments (workers.price_per_1k > 0)");
        }
        if a.strangers() > 0 && a.mean_gap_ms == 0 {
            return bad("attack.mean_gap_ms must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_intervals_are_refused_and_omitted_ones_take_the_node_defaults() {
        let base = "name = \"t\"\n[nodes]\nbootstrap = 1\n";
        let s = Scenario::parse(base).expect("minimal scenario");
        assert_eq!((s.network.ping_interval_secs, s.network.gossip_heartbeat_ms), (15, 1000));
        for key in ["ping_interval_secs", "gossip_heartbeat_ms", "routing_refresh_secs"] {
            let text = format!("{base}[network]\n{key} = 0\n");
            let err = Scenario::parse(&text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
