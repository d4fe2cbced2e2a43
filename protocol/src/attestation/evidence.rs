//! The TEE evidence a record carries: one CPU evidence (a TDX quote, an AMD SEV-SNP report, or
//! simulated) and zero or more GPU evidences, each binding the record's keys (see `binding`).
//!
//! ```text
//! CPU evidence: u8 kind
//!   1 TDX:        bytes quote (≤ 16 KiB)
//!   2 simulated:  [48] MRTD, 4 × [48] RTMR, [64] report data, [32] signer key, [64] signature
//!   3 SEV-SNP:    bytes report (≤ 4 KiB; 1,184 today), bytes VCEK (DER, ≤ 4 KiB; empty when the
//!                 host supplied none: verifiers fetch it from AMD's key distribution service)
//! GPU evidence (record version 3 only): u8 count (≤ 8), then per GPU: u8 kind
//!   1 NVIDIA:     u8 architecture (1 Hopper, 2 Blackwell), bytes report (SPDM GET_MEASUREMENTS
//!                 request ‖ response, ≤ 16 KiB), u8 certificates (1..=6), each bytes DER (≤ 4 KiB),
//!                 leaf first
//!   2 simulated:  u8 architecture, [32] device id, [32] nonce, [32] signer key, [64] signature
//!   3 unattested: str name (≤ 64): a GPU that is not in confidential-computing mode (its memory
//!                 and PCIe traffic are readable by the host), declared by the worker
//! ```
//!
//! Kinds 2 are SIMULATED: fake evidence for development, refused unless the verifier's policy
//! allows simulated evidence.

use crate::codec::{CodecError, Reader, Writer};

/// Largest TDX quote (v4/v5 quotes with certification data are about 5 KiB).
pub const MAX_QUOTE: usize = 16 * 1024;
/// Largest SEV-SNP report field (the report is 1,184 bytes; room for a longer future version).
pub const MAX_SNP_REPORT: usize = 4 * 1024;
/// Largest certificate (AMD's VCEK is about 1.4 KiB, NVIDIA's about 1 KiB).
pub const MAX_CERTIFICATE: usize = 4 * 1024;
/// Most GPUs in one record (an HGX board has eight).
pub const MAX_GPUS: usize = 8;
/// Largest GPU attestation report (a Hopper report is about 4 KiB).
pub const MAX_GPU_REPORT: usize = 16 * 1024;
/// Most certificates in a GPU's chain (Hopper sends five, root included).
pub const MAX_GPU_CHAIN: usize = 6;
/// Longest name of an unattested GPU.
pub const MAX_GPU_NAME: usize = 64;

/// A 48-byte measurement (SHA-384).
pub type Measurement = [u8; 48];

/// Evidence that the record's keys live in an approved CPU TEE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeeEvidence {
    /// An Intel TDX quote whose report data binds the record (see `binding`).
    Tdx {
        /// The raw quote as produced by the quoting enclave.
        quote: Vec<u8>,
    },
    /// SIMULATED evidence for development: fake measurements signed by a local key. It proves
    /// nothing and is refused unless the verifier's policy sets `allow_simulated`.
    Simulated(Box<SimulatedEvidence>),
    /// An AMD SEV-SNP attestation report whose report data binds the record.
    SevSnp(Box<SnpEvidence>),
}

/// The body of simulated evidence (see [`TeeEvidence::Simulated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedEvidence {
    /// Fake MRTD.
    pub mrtd: Measurement,
    /// Fake RTMR0–3.
    pub rtmr: [Measurement; 4],
    /// Report data, computed exactly as for a real quote.
    pub report_data: [u8; 64],
    /// ed25519 public key of the simulator that signed it.
    pub signer: [u8; 32],
    /// ed25519 signature over the domain tag, measurements and report data.
    pub signature: [u8; 64],
}

/// An SEV-SNP report as the guest's firmware produced it, with the chip's VCEK when the host
/// supplied one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The raw report (signed bytes and signature), verified as received.
    pub report: Vec<u8>,
    /// The VCEK certificate (DER) from the host's certificate table; empty when there was none.
    pub vcek: Vec<u8>,
}

/// A GPU family whose confidential-computing evidence this protocol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GpuArchitecture {
    /// NVIDIA Hopper (H100, H200, GH200).
    Hopper,
    /// NVIDIA Blackwell (B200, GB200).
    Blackwell,
}

impl GpuArchitecture {
    /// Every architecture, in code order.
    pub const ALL: [GpuArchitecture; 2] = [GpuArchitecture::Hopper, GpuArchitecture::Blackwell];

    /// Lower-case name (`hopper`, `blackwell`), as configuration and `/v1/models` spell it.
    pub fn name(self) -> &'static str {
        match self {
            GpuArchitecture::Hopper => "hopper",
            GpuArchitecture::Blackwell => "blackwell",
        }
    }

    /// The architecture named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn code(self) -> u8 {
        match self {
            GpuArchitecture::Hopper => 1,
            GpuArchitecture::Blackwell => 2,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("GPU architecture")? {
            1 => Ok(GpuArchitecture::Hopper),
            2 => Ok(GpuArchitecture::Blackwell),
            other => Err(CodecError::Unknown { field: "GPU architecture", value: other.into() }),
        }
    }
}

impl std::fmt::Display for GpuArchitecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Evidence about one GPU the worker serves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuEvidence {
    /// An NVIDIA GPU in confidential-computing mode: its signed attestation report for the
    /// record's GPU nonce, with its certificate chain.
    Nvidia(Box<NvidiaGpuEvidence>),
    /// SIMULATED GPU evidence for development (see [`TeeEvidence::Simulated`]).
    Simulated(Box<SimulatedGpuEvidence>),
    /// A GPU that is not in confidential-computing mode: declared, proves nothing, and a
    /// client that requires confidential GPUs never picks a worker listing one.
    Unattested {
        /// What the driver calls it ("NVIDIA L40S").
        name: String,
    },
}

/// An NVIDIA GPU's attestation report and certificate chain, as NVML returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaGpuEvidence {
    /// The architecture the worker states (checked against the chain by verifiers).
    pub architecture: GpuArchitecture,
    /// SPDM GET_MEASUREMENTS request ‖ signed response.
    pub report: Vec<u8>,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// The body of simulated GPU evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedGpuEvidence {
    /// The architecture it pretends to be.
    pub architecture: GpuArchitecture,
    /// A fake device identity (distinct GPUs of one record must differ).
    pub device: [u8; 32],
    /// The GPU nonce, computed exactly as for a real GPU.
    pub nonce: [u8; 32],
    /// ed25519 public key of the simulator that signed it.
    pub signer: [u8; 32],
    /// ed25519 signature over the domain tag, architecture, device and nonce.
    pub signature: [u8; 64],
}

impl SimulatedGpuEvidence {
    /// The architecture's wire code (for the simulator's signed bytes).
    pub fn architecture_code(&self) -> u8 {
        self.architecture.code()
    }
}

fn limit(field: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max { Err(CodecError::TooLong { field, len, max }) } else { Ok(()) }
}

impl TeeEvidence {
    /// The TEE's name, as `/v1/models` and logs show it: `tdx`, `sev-snp` or `simulated`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            TeeEvidence::Tdx { .. } => "tdx",
            TeeEvidence::SevSnp(_) => "sev-snp",
            TeeEvidence::Simulated(_) => "simulated",
        }
    }

    /// Whether a record carrying it needs version 3 (SEV-SNP is new in it).
    pub(crate) fn needs_v3(&self) -> bool {
        matches!(self, TeeEvidence::SevSnp(_))
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), CodecError> {
        match self {
            TeeEvidence::Tdx { quote } => {
                limit("quote", quote.len(), MAX_QUOTE)?;
                w.u8(1).bytes(quote);
            }
            TeeEvidence::Simulated(sim) => {
                w.u8(2).fixed(&sim.mrtd);
                for r in &sim.rtmr {
                    w.fixed(r);
                }
                w.fixed(&sim.report_data).fixed(&sim.signer).fixed(&sim.signature);
            }
            TeeEvidence::SevSnp(snp) => {
                limit("SEV-SNP report", snp.report.len(), MAX_SNP_REPORT)?;
                limit("VCEK", snp.vcek.len(), MAX_CERTIFICATE)?;
                w.u8(3).bytes(&snp.report).bytes(&snp.vcek);
            }
        }
        Ok(())
    }

    /// Decode CPU evidence; SEV-SNP only where `v3`.
    pub(crate) fn decode(r: &mut Reader<'_>, v3: bool) -> Result<Self, CodecError> {
        Ok(match r.u8("evidence kind")? {
            1 => TeeEvidence::Tdx { quote: r.bytes("quote", MAX_QUOTE)?.to_vec() },
            2 => TeeEvidence::Simulated(Box::new(SimulatedEvidence {
                mrtd: r.array("mrtd")?,
                rtmr: [r.array("rtmr0")?, r.array("rtmr1")?, r.array("rtmr2")?, r.array("rtmr3")?],
                report_data: r.array("report data")?,
                signer: r.array("simulator key")?,
                signature: r.array("simulator signature")?,
            })),
            3 if v3 => TeeEvidence::SevSnp(Box::new(SnpEvidence {
                report: r.bytes("SEV-SNP report", MAX_SNP_REPORT)?.to_vec(),
                vcek: r.bytes("VCEK", MAX_CERTIFICATE)?.to_vec(),
            })),
            other => return Err(CodecError::Unknown { field: "evidence kind", value: other.into() }),
        })
    }
}

impl GpuEvidence {
    /// Whether the GPU is in confidential-computing mode (its evidence, real or simulated, is
    /// verified before a record is kept).
    pub fn confidential(&self) -> bool {
        !matches!(self, GpuEvidence::Unattested { .. })
    }

    /// A short description: the architecture (`hopper`), `hopper (simulated)`, or the declared
    /// name of a GPU outside confidential computing.
    pub fn label(&self) -> String {
        match self {
            GpuEvidence::Nvidia(nv) => nv.architecture.name().to_owned(),
            GpuEvidence::Simulated(sim) => format!("{} (simulated)", sim.architecture.name()),
            GpuEvidence::Unattested { name } => name.clone(),
        }
    }

    /// Encode a GPU list.
    pub(crate) fn encode_list(gpus: &[GpuEvidence], w: &mut Writer) -> Result<(), CodecError> {
        limit("GPUs", gpus.len(), MAX_GPUS)?;
        w.u8(gpus.len() as u8);
        for gpu in gpus {
            gpu.encode(w)?;
        }
        Ok(())
    }

    fn encode(&self, w: &mut Writer) -> Result<(), CodecError> {
        match self {
            GpuEvidence::Nvidia(nv) => {
                limit("GPU report", nv.report.len(), MAX_GPU_REPORT)?;
                limit("GPU certificates", nv.chain.len(), MAX_GPU_CHAIN)?;
                if nv.chain.is_empty() {
                    return Err(CodecError::Invalid { field: "GPU certificates", reason: "none".into() });
                }
                w.u8(1).u8(nv.architecture.code()).bytes(&nv.report).u8(nv.chain.len() as u8);
                for cert in &nv.chain {
                    limit("GPU certificate", cert.len(), MAX_CERTIFICATE)?;
                    w.bytes(cert);
                }
            }
            GpuEvidence::Simulated(sim) => {
                w.u8(2).u8(sim.architecture.code()).fixed(&sim.device).fixed(&sim.nonce);
                w.fixed(&sim.signer).fixed(&sim.signature);
            }
            GpuEvidence::Unattested { name } => {
                limit("GPU name", name.len(), MAX_GPU_NAME)?;
                w.u8(3).str(name);
            }
        }
        Ok(())
    }

    /// Decode a GPU list.
    pub(crate) fn decode_list(r: &mut Reader<'_>) -> Result<Vec<GpuEvidence>, CodecError> {
        let count = r.u8("GPU count")? as usize;
        limit("GPUs", count, MAX_GPUS)?;
        (0..count).map(|_| Self::decode(r)).collect()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.u8("GPU evidence kind")? {
            1 => {
                let architecture = GpuArchitecture::decode(r)?;
                let report = r.bytes("GPU report", MAX_GPU_REPORT)?.to_vec();
                let count = r.u8("GPU certificates")? as usize;
                if count == 0 {
                    return Err(CodecError::Invalid { field: "GPU certificates", reason: "none".into() });
                }
                limit("GPU certificates", count, MAX_GPU_CHAIN)?;
                let chain = (0..count)
                    .map(|_| r.bytes("GPU certificate", MAX_CERTIFICATE).map(<[u8]>::to_vec))
                    .collect::<Result<_, _>>()?;
                GpuEvidence::Nvidia(Box::new(NvidiaGpuEvidence { architecture, report, chain }))
            }
            2 => GpuEvidence::Simulated(Box::new(SimulatedGpuEvidence {
                architecture: GpuArchitecture::decode(r)?,
                device: r.array("simulated GPU device")?,
                nonce: r.array("simulated GPU nonce")?,
                signer: r.array("GPU simulator key")?,
                signature: r.array("GPU simulator signature")?,
            })),
            3 => GpuEvidence::Unattested { name: r.str("GPU name", MAX_GPU_NAME)?.to_owned() },
            other => return Err(CodecError::Unknown { field: "GPU evidence kind", value: other.into() }),
        })
    }
}
