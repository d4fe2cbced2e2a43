//! The plan of a run, derived from the scenario and its seed alone: every node's key, kind,
//! region, port and start time, the lookups, each client's requests, the churn schedule and the
//! partition. Same scenario and seed → same plan, byte for byte (its digest says so).

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::scenario::Scenario;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Bootstrap node.
    Bootstrap,
    /// Honest worker.
    Worker,
    /// Client.
    Client,
    /// Attested worker that drops every stream.
    Sybil,
    /// Node publishing forged attestation records.
    Forger,
    /// Malicious client (a real client node whose streams misbehave).
    BadClient(ClientMischief),
    /// Malicious worker (a real worker node with a genuine record whose streams misbehave).
    BadWorker(WorkerMischief),
}

/// What a malicious client does on each attempt (`run/strangers/clients.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMischief {
    /// Ask for a long answer, read its first frame, never read again.
    StopReading,
    /// Open streams and never start the handshake.
    Silent,
    /// A request frame that does not decode, inside a valid session.
    Malformed,
    /// A request naming a channel that was never deployed.
    FakeChannel,
}

/// What a malicious worker does with each request (`run/strangers/workers.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMischief {
    /// Refuse everything (while advertising a huge capacity at half the price).
    Refuse,
    /// Stream text for ever.
    Endless,
    /// Answer, then invoice a prompt far larger than the one sent.
    Inflate,
}

impl Kind {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bootstrap => "bootstrap",
            Kind::Worker => "worker",
            Kind::Client => "client",
            Kind::Sybil => "sybil",
            Kind::Forger => "forger",
            Kind::BadClient(ClientMischief::StopReading) => "stop_reading_client",
            Kind::BadClient(ClientMischief::Silent) => "silent_client",
            Kind::BadClient(ClientMischief::Malformed) => "malformed_client",
            Kind::BadClient(ClientMischief::FakeChannel) => "fake_channel_client",
            Kind::BadWorker(WorkerMischief::Refuse) => "refusing_worker",
            Kind::BadWorker(WorkerMischief::Endless) => "endless_worker",
            Kind::BadWorker(WorkerMischief::Inflate) => "inflating_worker",
        }
    }

    /// Whether it behaves as the protocol says.
    pub fn honest(self) -> bool {
        !matches!(self, Kind::Sybil | Kind::Forger | Kind::BadClient(_) | Kind::BadWorker(_))
    }

    /// Whether it publishes an attestation record.
    pub fn attests(self) -> bool {
        matches!(self, Kind::Worker | Kind::Sybil | Kind::BadWorker(_))
    }
}

/// The strangers of `s` in a fixed order (shuffled by the plan).
fn stranger_kinds(s: &Scenario) -> Vec<Kind> {
    let a = &s.attack;
    let mut kinds = Vec::new();
    for (n, kind) in [
        (a.stop_reading_clients, Kind::BadClient(ClientMischief::StopReading)),
        (a.silent_clients, Kind::BadClient(ClientMischief::Silent)),
        (a.malformed_clients, Kind::BadClient(ClientMischief::Malformed)),
        (a.fake_channel_clients, Kind::BadClient(ClientMischief::FakeChannel)),
        (a.refusing_workers, Kind::BadWorker(WorkerMischief::Refuse)),
        (a.endless_workers, Kind::BadWorker(WorkerMischief::Endless)),
        (a.inflating_workers, Kind::BadWorker(WorkerMischief::Inflate)),
    ] {
        kinds.extend(std::iter::repeat_n(kind, n));
    }
    kinds
}

/// One node of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct NodePlan {
    /// Index in the plan.
    pub index: usize,
    /// Kind.
    pub kind: Kind,
    /// Secret key bytes (ed25519).
    #[serde(skip)]
    pub secret: [u8; 32],
    /// Its peer id (text).
    pub peer_id: String,
    /// Region index.
    pub region: usize,
    /// `/memory/<port>` it listens on (kept across restarts).
    pub port: u64,
    /// Start, ms after the run began.
    pub start_ms: u64,
}

impl NodePlan {
    /// The node's key.
    pub fn keypair(&self) -> Keypair {
        let mut secret = self.secret;
        Keypair::ed25519_from_bytes(&mut secret)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid ed25519 secret"))
    }

    /// The node's peer id.
    pub fn peer(&self) -> PeerId {
        self.keypair().public().to_peer_id()
    }
}

/// One planned request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestPlan {
    /// Client node index.
    pub client: usize,
    /// Send time, ms after the load began.
    pub at_ms: u64,
    /// Prompt words.
    pub prompt_words: u32,
}

/// One attempt of a malicious client.
#[derive(Debug, Clone, Serialize)]
pub struct AttackPlan {
    /// The malicious client's node index.
    pub node: usize,
    /// When, ms after the load began.
    pub at_ms: u64,
    /// The honest worker it goes after (node index).
    pub target: usize,
}

/// One departure and return.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnPlan {
    /// Node index.
    pub node: usize,
    /// Stop time, ms after churn began.
    pub down_ms: u64,
    /// Restart time, ms after churn began (`None`: stays down past the churn window).
    pub up_ms: Option<u64>,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Nodes in start order.
    pub nodes: Vec<NodePlan>,
    /// Lookups: `(querier index, key)`.
    pub lookups: Vec<(usize, [u8; 32])>,
    /// Requests, by time.
    pub requests: Vec<RequestPlan>,
    /// Churn events.
    pub churn: Vec<ChurnPlan>,
    /// Nodes on the minority side of the partition.
    pub minority: Vec<usize>,
    /// The malicious clients' attempts, by time (left out of the digest's JSON when empty, so
    /// plans without strangers keep their digests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attacks: Vec<AttackPlan>,
}

/// Seed offset of the strangers' part of the plan: drawn after everything else from a generator
/// of their own, so removing them leaves every honest choice as it was.
const STRANGERS_SEED: u64 = 0x5742_a4ce;

/// Node `index` of `kind`: its key, and its region drawn by `weights`.
fn node(rng: &mut StdRng, s: &Scenario, weights: &[f64], index: usize, kind: Kind) -> NodePlan {
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let secret: [u8; 32] = rng.r#gen();
    let mut pick = rng.gen_range(0.0..total);
    let mut region = weights.len() - 1;
    for (r, w) in weights.iter().enumerate() {
        if pick < *w {
            region = r;
            break;
        }
        pick -= w;
    }
    let mut node = NodePlan {
        index,
        kind,
        secret,
        peer_id: String::new(),
        region,
        port: index as u64 + 1,
        start_ms: index as u64 * s.join.interval_ms,
    };
    node.peer_id = node.peer().to_string();
    node
}

/// Append the strangers to `nodes` (they start after every honest node) and plan the malicious
/// clients' attempts: exponential gaps over the load's span, each at a random honest worker.
fn strangers(
    s: &Scenario,
    nodes: &mut Vec<NodePlan>,
    weights: &[f64],
    requests: &[RequestPlan],
) -> Vec<AttackPlan> {
    let mut rng = StdRng::seed_from_u64(s.seed ^ STRANGERS_SEED);
    let mut kinds = stranger_kinds(s);
    kinds.shuffle(&mut rng);
    for kind in kinds {
        let index = nodes.len();
        nodes.push(node(&mut rng, s, weights, index, kind));
    }
    let workers: Vec<usize> = nodes.iter().filter(|n| n.kind == Kind::Worker).map(|n| n.index).collect();
    let span = requests.iter().map(|r| r.at_ms).max().unwrap_or(0) as f64;
    let mut attacks = Vec::new();
    if workers.is_empty() {
        return attacks;
    }
    for n in nodes.iter().filter(|n| matches!(n.kind, Kind::BadClient(_))) {
        let mut t = exp(&mut rng, s.attack.mean_gap_ms as f64);
        while t <= span {
            let target = workers[rng.gen_range(0..workers.len())];
            attacks.push(AttackPlan { node: n.index, at_ms: t as u64, target });
            t += exp(&mut rng, s.attack.mean_gap_ms as f64);
        }
    }
    attacks.sort_by_key(|a| (a.at_ms, a.node));
    attacks
}

/// Exponential sample with the given mean.
fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

impl Plan {
    /// Derive the plan of `s`.
    pub fn new(s: &Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let mut kinds = Vec::new();
        kinds.extend(std::iter::repeat_n(Kind::Worker, s.nodes.workers));
        kinds.extend(std::iter::repeat_n(Kind::Client, s.nodes.clients));
        kinds.extend(std::iter::repeat_n(Kind::Sybil, s.attack.sybil_workers));
        kinds.extend(std::iter::repeat_n(Kind::Forger, s.attack.forgers));
        kinds.shuffle(&mut rng);
        let mut order = vec![Kind::Bootstrap; s.nodes.bootstrap];
        order.extend(kinds);

        let weights: Vec<f64> = if s.network.region_weights.is_empty() {
            vec![1.0; s.network.regions.len()]
        } else {
            s.network.region_weights.clone()
        };
        let mut nodes = order
            .into_iter()
            .enumerate()
            .map(|(index, kind)| node(&mut rng, s, &weights, index, kind))
            .collect::<Vec<_>>();

        let honest: Vec<usize> = nodes.iter().filter(|n| n.kind.honest()).map(|n| n.index).collect();
        let lookups =
            (0..s.measure.lookups).map(|_| (honest[rng.gen_range(0..honest.len())], rng.r#gen())).collect();

        let clients: Vec<usize> = nodes.iter().filter(|n| n.kind == Kind::Client).map(|n| n.index).collect();
        let mut requests = Vec::new();
        if let Some(load) = &s.load {
            for &c in &clients {
                if !rng.gen_bool(load.client_share.clamp(0.0, 1.0)) {
                    continue;
                }
                let mut t = exp(&mut rng, load.mean_gap_ms as f64);
                for _ in 0..load.requests_per_client {
                    requests.push(RequestPlan {
                        client: c,
                        at_ms: t as u64,
                        prompt_words: rng.gen_range(5..40),
                    });
                    t += exp(&mut rng, load.mean_gap_ms as f64);
                }
            }
            requests.sort_by_key(|r| (r.at_ms, r.client));
        }

        let mut churn = Vec::new();
        if let Some(c) = &s.churn {
            let window = c.duration_secs as f64 * 1000.0;
            for &node in &clients {
                if !rng.gen_bool(c.share.clamp(0.0, 1.0)) {
                    continue;
                }
                let mut t = exp(&mut rng, c.mean_session_secs * 1000.0);
                while t < window {
                    let back = t + exp(&mut rng, c.mean_downtime_secs * 1000.0);
                    let up = (back < window).then_some(back as u64);
                    churn.push(ChurnPlan { node, down_ms: t as u64, up_ms: up });
                    match up {
                        Some(_) => t = back + exp(&mut rng, c.mean_session_secs * 1000.0),
                        None => break,
                    }
                }
            }
            churn.sort_by_key(|e| (e.down_ms, e.node));
        }

        let mut minority = Vec::new();
        if let Some(p) = &s.partition {
            let mut candidates: Vec<usize> =
                nodes.iter().filter(|n| n.kind != Kind::Bootstrap).map(|n| n.index).collect();
            candidates.shuffle(&mut rng);
            let take = ((nodes.len() as f64 * p.minority_share).round() as usize).min(candidates.len());
            minority = candidates[..take].to_vec();
            minority.sort_unstable();
        }
        let attacks = strangers(s, &mut nodes, &weights, &requests);
        Self { nodes, lookups, requests, churn, minority, attacks }
    }

    /// SHA-256 of the plan (hex): keys, kinds, regions, schedules, lookups, partition.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for n in &self.nodes {
            h.update(n.secret);
        }
        h.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(h.finalize())
    }

    /// Node indices of `kind`.
    pub fn of(&self, kind: Kind) -> Vec<usize> {
        self.nodes.iter().filter(|n| n.kind == kind).map(|n| n.index).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"t\"\n[nodes]\nbootstrap = 1\nworkers = 3\nclients = 20\n\
        [load]\nrequests_per_client = 2\n[attack]\nsilent_clients = 2\nrefusing_workers = 1\n";

    #[test]
    fn strangers_leave_the_honest_plan_as_it_was() {
        let s = Scenario::parse(TEXT).unwrap();
        let mut calm = s.clone();
        calm.attack = calm.attack.without_attackers();
        let (with, without) = (Plan::new(&s), Plan::new(&calm));
        assert_eq!(with.nodes.len(), without.nodes.len() + 3);
        for (a, b) in without.nodes.iter().zip(&with.nodes) {
            assert_eq!((&a.peer_id, a.region, a.kind, a.port), (&b.peer_id, b.region, b.kind, b.port));
        }
        let requests =
            |p: &Plan| p.requests.iter().map(|r| (r.client, r.at_ms, r.prompt_words)).collect::<Vec<_>>();
        assert_eq!(requests(&with), requests(&without));
        assert_eq!(with.lookups, without.lookups);
        assert!(without.attacks.is_empty());
        let last = with.requests.iter().map(|r| r.at_ms).max().unwrap();
        assert!(!with.attacks.is_empty());
        for a in &with.attacks {
            assert_eq!(with.nodes[a.node].kind, Kind::BadClient(ClientMischief::Silent));
            assert_eq!(with.nodes[a.target].kind, Kind::Worker);
            assert!(a.at_ms <= last);
        }
        assert_eq!(with.digest(), Plan::new(&s).digest());
    }
}
