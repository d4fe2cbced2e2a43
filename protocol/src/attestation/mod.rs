//! Worker attestation: the signed record a worker publishes and the rules for accepting it.
//!
//! - [`record`]: the record and its canonical encoding;
//! - [`evidence`]: the CPU and GPU evidence a record carries, and their encoding;
//! - [`signed`]: the envelope signed with the worker's libp2p identity key;
//! - [`binding`]: the report data that ties TEE evidence to the record's keys;
//! - [`simulated`]: clearly labelled fake evidence for development;
//! - [`gpu_policy`]: what a node or a request requires of a worker's GPUs;
//! - [`policy`]: which evidence, measurements, TCB statuses and ages a node accepts.
//!
//! Verifying a TDX quote's signature chain and collateral needs Intel's certificates and is done
//! by the node (`dcap-qvl`); it produces the [`policy::EvidenceClaims`] that [`policy::check`]
//! judges.

pub mod binding;
pub mod evidence;
pub mod gpu_policy;
pub mod policy;
pub mod record;
pub mod signed;
pub mod simulated;
