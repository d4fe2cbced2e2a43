//! Joining the network and staying joined.
//!
//! While the node has no connection at all, it dials every bootstrap peer and every peer it
//! remembers (peer book), at once. If none answers it says so plainly and tries again after an
//! exponential backoff (`cocoon_protocol::backoff`). Once connected it looks up its own id
//! (Kademlia's join step) so the routing table fills with its neighbourhood, and repeats that with
//! the same backoff until some peer answers (a bootstrap node at its connection limit accepts the
//! dial and then closes it). libp2p refreshes the farther buckets by itself: peers added while the
//! table holds fewer than K start its automatic bootstrap (see [`NetworkHandle::join_lookup`]).
//! Then the task only watches: Kademlia refreshes the table periodically, and if the node ever
//! loses every connection the cycle starts again.

use std::time::Duration;

use cocoon_protocol::backoff::Backoff;
use futures::future::join_all;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use rand::Rng;
use tokio::sync::watch;

use super::bootstrap::BootstrapPeer;
use super::{NetworkError, NetworkHandle};
use crate::store::KnownPeer;

/// Inputs of the join task.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Configured bootstrap peers.
    pub bootstrap: Vec<BootstrapPeer>,
    /// Peers remembered from earlier runs.
    pub known: Vec<KnownPeer>,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Per-dial timeout.
    pub dial_timeout: Duration,
    /// How often a joined node checks that it still has connections.
    pub check_interval: Duration,
}

/// Spawn the join task; it ends when `shutdown` becomes true or the network stops.
pub fn spawn_join_task(
    handle: NetworkHandle,
    config: JoinConfig,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let targets = dial_targets(&config);
        let mut routes: Vec<_> = config.bootstrap.iter().map(|b| (b.peer_id, b.addr.clone())).collect();
        for known in &config.known {
            routes.extend(known.addrs.iter().map(|a| (known.peer_id, a.clone())));
        }
        for (peer, addr) in routes {
            if handle.add_address(peer, addr).await.is_err() {
                return;
            }
        }
        let mut backoff = Backoff::new(config.retry_initial, config.retry_max, 0.2);
        if targets.is_empty() {
            tracing::info!(
                "no bootstrap peers configured and no known peers: waiting for other nodes to connect \
                 (pass --bootstrap to join an existing network)"
            );
        }
        // Set once connected, until a join lookup got an answer.
        let mut unlooked = false;
        loop {
            let Ok(status) = handle.status().await else { return };
            let mut wait = config.check_interval;
            let connected = if status.connected.is_empty() && !targets.is_empty() {
                let reached = dial_all(&handle, &targets, config.dial_timeout).await;
                if reached == 0 {
                    wait = backoff.next_delay(rand::thread_rng().r#gen());
                    tracing::warn!(
                        tried = targets.len(),
                        attempt = backoff.attempts(),
                        retry_in_secs = wait.as_secs_f32(),
                        "no bootstrap peer reachable; retrying"
                    );
                } else {
                    tracing::info!(reached, tried = targets.len(), "joined the network");
                    backoff.reset();
                    unlooked = true;
                }
                reached > 0
            } else {
                !status.connected.is_empty()
            };
            if unlooked && connected {
                match handle.join_lookup().await {
                    Ok(()) => {
                        unlooked = false;
                        backoff.reset();
                    }
                    Err(NetworkError::Stopped) => return,
                    Err(e) => {
                        // Connected, but nobody answered (a bootstrap node at its connection limit
                        // closes newcomers): the routing table stays empty until we ask again.
                        wait = backoff.next_delay(rand::thread_rng().r#gen());
                        tracing::warn!(error = %e, retry_in_secs = wait.as_secs_f32(),
                            "kademlia join lookup failed; retrying");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    })
}

/// Every address to try: bootstrap entries first, then remembered peers (with `/p2p/<id>`).
fn dial_targets(config: &JoinConfig) -> Vec<Multiaddr> {
    let mut targets: Vec<Multiaddr> = config.bootstrap.iter().map(|b| b.addr.clone()).collect();
    for known in &config.known {
        for addr in &known.addrs {
            let mut addr = addr.clone();
            if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                addr.push(Protocol::P2p(known.peer_id));
            }
            if !targets.contains(&addr) {
                targets.push(addr);
            }
        }
    }
    targets
}

/// Dial all `targets` concurrently; returns how many connected within `timeout`.
async fn dial_all(handle: &NetworkHandle, targets: &[Multiaddr], timeout: Duration) -> usize {
    let attempts = targets.iter().map(|addr| async move {
        match tokio::time::timeout(timeout, handle.dial(addr.clone())).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
                false
            }
            Err(_) => {
                tracing::debug!(%addr, "bootstrap dial timed out");
                false
            }
        }
    });
    join_all(attempts).await.into_iter().filter(|ok| *ok).count()
}
