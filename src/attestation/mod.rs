//! Attestation in the node: turning TEE evidence into [`EvidenceClaims`] that the pure policy in
//! `cocoon_protocol::attestation::policy` judges.
//!
//! - [`collateral`]: collateral for TDX quotes from memory, the store or a PCCS ([`pccs`]).
//! - [`gpu`]: verification of one NVIDIA Hopper GPU's evidence (SPDM attestation report and
//!   certificate chain) against NVIDIA's pinned device root, offline at a given time.
//! - [`judge`]: the verdict (accept, ignore, reject) on a record received from a peer.
//! - [`intel_pki`]: Intel's certificates, CRLs and signatures checked up to its pinned root, with
//!   no collateral or clock (what makes a quote or collateral forged rather than stale).
//! - [`known`]: the verified records held, newest per worker.
//! - [`service`]: gossip validation of records and publication of the worker's own.
//! - [`policy_file`]: the policy TOML file and its optional governance signature.
//! - [`provider`]: producing evidence: configfs-tsm TDX quotes, or labelled simulated evidence.
//! - [`snp`]: verification of AMD SEV-SNP reports: the VCEK chain up to AMD's pinned roots at a
//!   given time, the report's signature over its raw bytes, the VCEK's chip and TCB, the expected
//!   report data and an SNP policy (not yet wired into records or the node).
//! - [`snp_provider`]: producing SEV-SNP reports through configfs-tsm, with the host's
//!   certificate table (VCEK, ASK, ARK) when it supplies one.
//! - [`kds`]: VCEKs for SEV-SNP reports from memory, the store or AMD's KDS, rate-limited.
//! - [`tsm`]: one configfs-tsm report, whatever the TEE (used by both providers).
//! - [`tdx`]: verification of Intel TDX quotes: first what the quote's bytes alone decide (the
//!   sender's fault when it fails), then `dcap-qvl` against collateral (Intel's signed TCB info,
//!   QE identity and CRLs) at a given time, so verification is reproducible offline.
//! - [`verifier`]: evidence claims plus policy, with results cached by quote hash.
//!
//! [`EvidenceClaims`]: cocoon_protocol::attestation::policy::EvidenceClaims

pub mod collateral;
pub mod gpu;
pub mod gpu_online;
pub mod gpu_provider;
pub mod intel_pki;
pub mod judge;
pub mod kds;
pub mod known;
pub mod pccs;
pub mod policy_file;
pub mod provider;
pub mod service;
pub mod setup;
#[cfg(test)]
pub(crate) mod sev_samples;
pub mod snp;
pub mod snp_provider;
pub mod tdx;
pub mod tee_claims;
pub mod tsm;
pub mod verifier;
