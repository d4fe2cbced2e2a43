//! `cocoon-protocol`: the pure core of cocoon.
//!
//! Wire types, codecs, signed records and the state machines that decide what a node does. Nothing
//! here performs I/O, reads a clock or draws randomness on its own: time and random numbers are
//! arguments, so the node binary and `cocoon-simnet` drive exactly the same logic and tests are
//! deterministic.
//!
//! # Layout
//!
//! - [`attestation`]: worker attestation records, their signatures, key binding and policy.
//! - [`backoff`]: exponential retry backoff with injected jitter (joining, redials).
//! - [`budget`]: per-peer token buckets in a capped table (stream, lookup and request budgets).
//! - [`codec`]: the canonical binary encoding of signed records.
//! - [`connmgr`]: which connections to close when a node holds more than its target.
//! - [`envelope`]: a body signed by a libp2p identity key under a domain tag.
//! - [`inference`]: inference messages, receipts, pricing and worker selection.
//! - [`payments`]: the channel contract's cells and messages, vouchers, off-chain rules and the
//!   lazy settlement policy.
//! - [`reputation`]: graded penalties (tolerance levels), decaying peer scores and blocks.

pub mod attestation;
pub mod backoff;
pub mod budget;
pub mod codec;
pub mod connmgr;
pub mod envelope;
pub mod inference;
pub mod payments;
pub mod reputation;
