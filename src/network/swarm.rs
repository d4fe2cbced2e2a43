//! Building the swarm and binding its listeners.
//!
//! Both transport stacks produce the same `Swarm<Behaviour>`: the real one (TCP with Noise and
//! Yamux, QUIC, DNS resolution, circuit relay client) and the in-memory one used by in-process
//! tests (memory transport with Noise and Yamux, circuit relay client), and one the process
//! builds (simnet's simulated network, which authenticates and multiplexes by itself).

use std::time::Duration;

use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{ListenerId, MemoryTransport, Transport, upgrade::Version};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use prometheus_client::registry::Registry;

use super::behaviour::Behaviour;
use super::metrics::NetMetrics;
use super::{BoxedTransport, NetworkConfig, NetworkError, TransportKind};

/// How long binding the listeners may take before start-up fails.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(
    config: &NetworkConfig,
    keypair: Keypair,
    registry: &mut Registry,
    metrics: &NetMetrics,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let terr = |e: &dyn std::fmt::Display| NetworkError::Transport(e.to_string());
    let make_behaviour = |key: &Keypair, relay_client| {
        Behaviour::new(key, relay_client, config, registry, metrics)
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
    };
    let idle = config.idle_connection_timeout;
    let swarm = match &config.transport {
        TransportKind::Tcp => SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| terr(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| terr(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| terr(&e))?
            .with_behaviour(make_behaviour)
            .map_err(|e| terr(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        TransportKind::Memory | TransportKind::Custom(_) => SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| in_process(&config.transport, key))
            .map_err(|e| terr(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| terr(&e))?
            .with_behaviour(make_behaviour)
            .map_err(|e| terr(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    let mut swarm = swarm;
    for addr in &config.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    Ok(swarm)
}

/// The transport of an in-process node: libp2p's memory transport with Noise and Yamux, or the
/// one the process builds.
fn in_process(
    kind: &TransportKind,
    key: &Keypair,
) -> Result<BoxedTransport, Box<dyn std::error::Error + Send + Sync>> {
    match kind {
        TransportKind::Custom(custom) => Ok((custom.0)(key)),
        _ => Ok(MemoryTransport::default()
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed()),
    }
}

/// Bind every address in `listen` and wait until each listener reports its address, so that
/// callers see real ports (for port 0) and errors such as "address already in use" at start-up.
/// With `announce`, each bound address also becomes an external address (local networks).
pub(crate) async fn listen_all(
    swarm: &mut Swarm<Behaviour>,
    listen: &[Multiaddr],
    announce: bool,
) -> Result<(), NetworkError> {
    let mut waiting: Vec<(ListenerId, Multiaddr)> = Vec::new();
    for addr in listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Listen { addr: addr.clone(), reason: describe_listen_error(&e) })?;
        waiting.push((id, addr.clone()));
    }
    let wait = async {
        while !waiting.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    tracing::info!(%address, "listening");
                    if announce {
                        swarm.add_external_address(address);
                    }
                    waiting.retain(|(id, _)| *id != listener_id);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some((_, addr)) = waiting.iter().find(|(id, _)| *id == listener_id) {
                        let reason = match reason {
                            Ok(()) => "listener closed".to_owned(),
                            Err(e) => e.to_string(),
                        };
                        return Err(NetworkError::Listen { addr: addr.clone(), reason });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some((_, addr)) = waiting.iter().find(|(id, _)| *id == listener_id) {
                        return Err(NetworkError::Listen { addr: addr.clone(), reason: error.to_string() });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    match tokio::time::timeout(LISTEN_TIMEOUT, wait).await {
        Ok(result) => result,
        Err(_) => Err(NetworkError::Listen {
            addr: listen.first().cloned().unwrap_or_else(Multiaddr::empty),
            reason: "timed out waiting for the listener".into(),
        }),
    }
}

/// Turn libp2p's nested transport error into one readable reason ("Address already in use").
fn describe_listen_error<E: std::error::Error>(err: &libp2p::TransportError<E>) -> String {
    match err {
        libp2p::TransportError::MultiaddrNotSupported(addr) => {
            format!("address {addr} is not supported by this transport")
        }
        libp2p::TransportError::Other(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message = s.to_string();
                source = s.source();
            }
            message
        }
    }
}
