//! Attestation in the node: turning TEE evidence into [`EvidenceClaims`] that the pure policy in
//! `cocoon_protocol::attestation::policy` judges.
//!
//! - [`tdx`]: verification of Intel TDX quotes with `dcap-qvl` against collateral (Intel's signed
//!   TCB info, QE identity and CRLs) at a given time, so verification is reproducible offline.
//!
//! [`EvidenceClaims`]: cocoon_protocol::attestation::policy::EvidenceClaims

pub mod tdx;
