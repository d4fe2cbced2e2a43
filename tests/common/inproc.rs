//! Helpers for in-process tests: full `Node`s on libp2p's memory transport.

use std::path::Path;
use std::time::{Duration, Instant};

use cocoon::config::{Config, KadMode, Role};
use cocoon::network::TransportKind;
use cocoon::node::Node;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// A node configuration on the memory transport, admin endpoint and API off, fast gossip
/// heartbeat.
pub fn config(dir: &Path, role: Role, bootstrap: Option<&Multiaddr>) -> Config {
    let mut c = Config::default();
    c.node.roles = vec![role];
    c.node.data_dir = dir.to_owned();
    c.network.listen = vec!["/memory/0".parse().expect("memory addr")];
    c.network.gossip_heartbeat_ms = 200;
    c.network.conn_manager_interval_secs = 1;
    c.admin.enabled = false;
    c.api.enabled = false;
    c.bootstrap.peers = bootstrap.cloned().into_iter().collect();
    c
}

/// Start a node from `c` on the memory transport.
pub async fn start(c: Config) -> Node {
    Node::start(c, TransportKind::Memory, None).await.expect("node starts")
}

/// `<listen addr>/p2p/<id>` of `node`.
pub fn dial_addr(node: &Node) -> Multiaddr {
    node.listen_addrs()[0].clone().with(Protocol::P2p(node.peer_id()))
}

/// A bootstrap node plus `n - 1` nodes joining through it; `tweak` adjusts every config.
pub async fn start_network(dir: &Path, n: usize, tweak: impl Fn(&mut Config)) -> Vec<Node> {
    let mut boot_config = config(&dir.join("boot"), Role::Bootstrap, None);
    tweak(&mut boot_config);
    let boot = start(boot_config).await;
    let boot_addr = dial_addr(&boot);
    let mut nodes = vec![boot];
    for i in 1..n {
        let mut c = config(&dir.join(format!("n{i}")), Role::Client, Some(&boot_addr));
        tweak(&mut c);
        nodes.push(start(c).await);
    }
    nodes
}

/// A Kademlia client-mode config: such a node is never handed out in lookups, so tests can build
/// exact topologies (a client connects only to the peers it is told about).
pub fn client_only(c: &mut Config) {
    c.network.kad_mode = KadMode::Client;
}

/// Poll `check` every 50 ms until it holds or `limit` passes; returns the last result.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}
