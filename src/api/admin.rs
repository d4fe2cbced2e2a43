//! The local admin endpoint: `GET /health` (JSON summary), `GET /peers` (peer lists),
//! `GET /metrics` (Prometheus/OpenMetrics text), `GET /attestation/record` (a worker's signed
//! record), `GET /payments` (payment channels, see `admin_payments.rs`) and `GET /`, a read-only
//! web page of the same figures for operators (see `admin_page.rs`).
//!
//! `POST /payments/close` closes a client's channel, behind the node's admin token
//! (`admin_control.rs`). Everything else only reads, and the endpoint binds to loopback by
//! default because reading is not authenticated. The registry is built once at
//! start-up and passed in; metrics themselves are atomics, so serving them takes no lock. It is
//! served by [`crate::http::serve`] under the `[http]` limits (connection cap, read deadlines).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::attestation::service::AttestationHandle;
use crate::config::Role;
use crate::network::NetworkHandle;

/// What the admin endpoint serves from.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The network layer.
    pub network: NetworkHandle,
    /// Verified workers' records.
    pub attestation: AttestationHandle,
    /// All metrics of the node.
    pub registry: Arc<Registry>,
    /// Roles of the node.
    pub roles: Vec<Role>,
    /// Start time, for uptime.
    pub started: Instant,
    /// The payment trees, when payments are on (`GET /payments`).
    pub payments: Option<crate::store::PaymentBook>,
    /// The operations behind the admin token (`POST /payments/close`), if any.
    pub control: Option<super::admin_control::AdminControl>,
}

/// `GET /health` body.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Health {
    /// `ok` when connected to at least one peer, `isolated` otherwise.
    pub status: String,
    /// This node.
    pub peer_id: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Addresses the node listens on.
    pub listen_addresses: Vec<String>,
    /// Addresses confirmed reachable from outside.
    pub external_addresses: Vec<String>,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table.
    pub routing_table_size: usize,
    /// Distinct gossipsub mesh peers.
    pub gossip_mesh_peers: usize,
    /// Kademlia mode (`server` or `client`).
    pub kad_mode: String,
    /// Connections closed by the connection manager since start.
    pub trimmed_connections: u64,
    /// Peers blocked now for misbehaviour (blocks expire).
    pub blocked_peers: usize,
    /// Workers with a verified, unexpired attestation record.
    pub verified_workers: usize,
    /// Models offered by verified workers.
    pub models: Vec<String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// cocoon version.
    pub version: String,
}

/// `GET /peers` body.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Peers {
    /// Peers with an open connection.
    pub connected: Vec<String>,
    /// Peers in the Kademlia routing table.
    pub routing_table: Vec<String>,
}

/// Bind the admin endpoint (errors such as "address in use" surface here, at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve under `limits` until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    limits: crate::http::ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/peers", get(peers))
        .route("/metrics", get(metrics))
        .route("/attestation/record", get(own_record))
        .route("/payments", get(super::admin_payments::payments))
        .route("/payments/close", axum::routing::post(super::admin_control::close))
        .merge(super::admin_page::routes())
        .with_state(state);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    crate::http::serve(listener, app, limits, stop).await;
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "stopping", "error": e.to_string() })),
    )
        .into_response()
}

async fn health(State(state): State<AdminState>) -> Response {
    match state.network.status().await {
        Ok(s) => Json(Health {
            status: if s.connected.is_empty() { "isolated" } else { "ok" }.into(),
            peer_id: s.peer_id.to_string(),
            roles: state.roles.clone(),
            listen_addresses: s.listen_addrs.iter().map(ToString::to_string).collect(),
            external_addresses: s.external_addrs.iter().map(ToString::to_string).collect(),
            connected_peers: s.connected.len(),
            routing_table_size: s.routing_table.len(),
            gossip_mesh_peers: s.mesh_peers,
            kad_mode: s.kad_mode,
            trimmed_connections: s.trimmed_connections,
            blocked_peers: s.blocked_count,
            verified_workers: state.attestation.verified_workers(),
            models: state.attestation.models(),
            uptime_secs: state.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .into_response(),
        Err(e) => unavailable(e),
    }
}

/// The signed attestation record this worker currently publishes (binary envelope), 404 if none.
async fn own_record(State(state): State<AdminState>) -> Response {
    match state.attestation.own_record() {
        Some(signed) => ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], signed.encode())
            .into_response(),
        None => (StatusCode::NOT_FOUND, "this node publishes no attestation record").into_response(),
    }
}

async fn peers(State(state): State<AdminState>) -> Response {
    match state.network.status().await {
        Ok(s) => Json(Peers {
            connected: s.connected.iter().map(ToString::to_string).collect(),
            routing_table: s.routing_table.iter().map(ToString::to_string).collect(),
        })
        .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
