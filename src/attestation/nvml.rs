//! Collecting the local NVIDIA GPUs' confidential-computing evidence through NVML: for each
//! GPU its CC state, an attestation report answering the caller's nonce, and the attestation
//! certificate chain, ready for [`super::verify_evidence`] (here or on a peer).
//!
//! NVML (`libnvidia-ml.so.1`) is opened at run time by `nvml-wrapper`, so a node without an
//! NVIDIA driver builds and runs; [`collect`] then answers [`NvmlError::NoDriver`].

use std::ffi::OsStr;

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError as Raw;

use super::{NONCE_LEN, chain_from_pem};

/// One GPU's evidence as NVML gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedGpu {
    /// NVML's index of the device on this host.
    pub index: u32,
    /// NVML's product name ("NVIDIA H100 80GB HBM3").
    pub name: String,
    /// The attestation report (SPDM request ‖ signed response), exactly as long as NVML says.
    pub report: Vec<u8>,
    /// The attestation certificate chain, DER, leaf first, as the GPU sent it.
    pub chain_der: Vec<Vec<u8>>,
    /// Whether the system runs confidential computing in production mode: the CC feature on and
    /// developer-tools mode (which lets debuggers read GPU memory) off.
    pub cc_enabled: bool,
}

/// Why evidence could not be collected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmlError {
    /// NVML cannot be loaded or started: no NVIDIA driver on this host.
    #[error("no NVIDIA driver: NVML (libnvidia-ml) cannot be loaded: {0}")]
    NoDriver(String),
    /// The driver's NVML lacks a confidential-computing function: too old a driver.
    #[error("the NVIDIA driver is too old for confidential computing: {0}")]
    DriverTooOld(String),
    /// The driver sees no GPU.
    #[error("NVML sees no NVIDIA GPU")]
    NoGpu,
    /// Confidential computing is off on this system (or the GPU cannot do it).
    #[error("confidential computing is not enabled on the NVIDIA GPUs ({0})")]
    CcOff(String),
    /// NVML refused a query on one GPU.
    #[error("GPU {index}: {what}: {message}")]
    Device {
        /// The GPU's index.
        index: u32,
        /// What was asked.
        what: &'static str,
        /// NVML's answer.
        message: String,
    },
    /// The certificate chain NVML returned does not decode.
    #[error("GPU {index}: the attestation certificate chain does not decode")]
    Chain {
        /// The GPU's index.
        index: u32,
    },
}

/// Collect every local GPU's evidence for `nonce`, with the system's NVML.
pub fn collect(nonce: &[u8; NONCE_LEN]) -> Result<Vec<CollectedGpu>, NvmlError> {
    collect_with(Nvml::init(), nonce)
}

/// [`collect`] with NVML loaded from `library` (a path to `libnvidia-ml.so.1`).
pub fn collect_from(library: &OsStr, nonce: &[u8; NONCE_LEN]) -> Result<Vec<CollectedGpu>, NvmlError> {
    collect_with(Nvml::builder().lib_path(library).init(), nonce)
}

fn collect_with(nvml: Result<Nvml, Raw>, nonce: &[u8; NONCE_LEN]) -> Result<Vec<CollectedGpu>, NvmlError> {
    let nvml = nvml.map_err(|e| match e {
        Raw::FailedToLoadSymbol(_) => NvmlError::DriverTooOld(e.to_string()),
        _ => NvmlError::NoDriver(e.to_string()),
    })?;
    let count = nvml.device_count().map_err(|e| system_error(e, "counting GPUs"))?;
    if count == 0 {
        return Err(NvmlError::NoGpu);
    }
    (0..count).map(|index| collect_one(&nvml, index, nonce)).collect()
}

fn collect_one(nvml: &Nvml, index: u32, nonce: &[u8; NONCE_LEN]) -> Result<CollectedGpu, NvmlError> {
    let device = nvml.device_by_index(index).map_err(|e| device_error(index, "opening it", e))?;
    let name = device.name().map_err(|e| device_error(index, "reading its name", e))?;
    // System-wide settings, read through a device in nvml-wrapper's API.
    let cc_on = device.is_cc_enabled().map_err(|e| system_error(e, "reading the CC settings"))?;
    if !cc_on {
        return Err(NvmlError::CcOff("the CC feature is off".into()));
    }
    let dev_tools =
        device.is_cc_dev_mode_enabled().map_err(|e| system_error(e, "reading the CC settings"))?;
    let report = device
        .confidential_compute_gpu_attestation_report(*nonce)
        .map_err(|e| device_error(index, "getting an attestation report", e))?;
    let size = usize::try_from(report.attestation_report_size).unwrap_or(usize::MAX);
    // nvml-wrapper before 0.12 returned the whole zero-padded buffer: keep only what NVML filled.
    let report = report.attestation_report.get(..size).unwrap_or(&report.attestation_report).to_vec();
    let certificate = device
        .confidential_compute_gpu_certificate()
        .map_err(|e| device_error(index, "getting its certificates", e))?;
    let size = usize::try_from(certificate.attestation_cert_chain_size).unwrap_or(usize::MAX);
    let pem = certificate.attestation_cert_chain.get(..size).unwrap_or(&certificate.attestation_cert_chain);
    let pem = std::str::from_utf8(pem).map_err(|_| NvmlError::Chain { index })?;
    let chain_der = chain_from_pem(pem.trim_end_matches('\0')).map_err(|_| NvmlError::Chain { index })?;
    Ok(CollectedGpu { index, name, report, chain_der, cc_enabled: !dev_tools })
}

/// A failed system-wide query: "not supported" there means no CC on this system.
fn system_error(e: Raw, what: &'static str) -> NvmlError {
    match e {
        Raw::NotSupported => NvmlError::CcOff(format!("{what}: not supported")),
        Raw::FailedToLoadSymbol(_) => NvmlError::DriverTooOld(e.to_string()),
        _ => NvmlError::Device { index: 0, what, message: e.to_string() },
    }
}

/// A failed query on GPU `index`.
fn device_error(index: u32, what: &'static str, e: Raw) -> NvmlError {
    match e {
        Raw::NotSupported => NvmlError::CcOff(format!("GPU {index}, {what}: not supported")),
        Raw::FailedToLoadSymbol(_) => NvmlError::DriverTooOld(e.to_string()),
        _ => NvmlError::Device { index, what, message: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_error_says_so() {
        let missing = OsStr::new("/nonexistent/libnvidia-ml.so.1");
        let err = collect_from(missing, &[0; NONCE_LEN]).unwrap_err();
        assert!(matches!(err, NvmlError::NoDriver(_)), "{err:?}");
        assert!(err.to_string().starts_with("no NVIDIA driver"), "{err}");
    }

    #[test]
    fn the_system_library_is_absent_here_or_answers() {
        // On a machine without the driver (CI, this one) the default path gives the same error;
        // with a driver any typed answer is fine.
        match collect(&[0; NONCE_LEN]) {
            Err(NvmlError::NoDriver(_)) | Err(NvmlError::CcOff(_)) | Err(NvmlError::NoGpu) | Ok(_) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }

    #[test]
    fn nvml_errors_map_to_reasons() {
        assert!(matches!(device_error(1, "x", Raw::NotSupported), NvmlError::CcOff(_)));
        assert!(matches!(system_error(Raw::FailedToLoadSymbol("f".into()), "x"), NvmlError::DriverTooOld(_)));
        assert_eq!(
            device_error(2, "getting an attestation report", Raw::NoPermission),
            NvmlError::Device {
                index: 2,
                what: "getting an attestation report",
                message: Raw::NoPermission.to_string()
            }
        );
    }
}
