//! `cocoon`: the peer node of a peer-to-peer network for confidential AI inference.
//!
//! This crate is the I/O shell around the pure logic in `cocoon-protocol`: it owns sockets,
//! timers, the store and the command line. The `cocoon` binary (`main.rs`) only calls
//! [`cli::main`].
//!
//! # Layout
//!
//! - [`cli`]: command line (`node`, `id`, `config dump`, `devnet`).
//! - [`attestation`]: TDX quote verification (DCAP) feeding the protocol's attestation policy.
//! - [`chain`]: TON chain backends (embedded `LocalChain`, Toncenter) and the node's wallet.
//! - [`clock`]: wall-clock time (only the shell reads it).
//! - [`config`]: TOML configuration with documented defaults and override precedence.
//! - [`payments`]: channel operations, the worker's voucher book and settlement, client channels.
//! - [`node`]: wiring of a running node, start-up checks and graceful shutdown.
//! - [`network`]: the libp2p overlay: swarm event loop, handle, joining, connection manager.
//! - [`store`]: sled store, identity key, peer book.
//! - [`api`]: HTTP endpoints (admin: `/health`, `/peers`, `/metrics`).
//! - [`telemetry`]: logging set-up.
//! - [`devnet`]: a local network in one process.
//! - [`dirs`]: default data and cache directories; creating the directories files go into.

pub mod api;
pub mod attestation;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod devnet;
pub mod dirs;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod inference;
pub mod network;
pub mod node;
pub mod payments;
pub mod store;
pub mod telemetry;
