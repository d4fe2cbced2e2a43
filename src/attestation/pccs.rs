//! Fetching TDX collateral over HTTPS from a PCCS (a caching service run by a cloud provider or
//! an operator) or from Intel's PCS itself, using the PCS v4 API.
//!
//! Collateral is per *platform* (TEE type, FMSPC, PCK CA), not per quote: one fetch serves every
//! worker on the same CPU family for weeks. Four documents are fetched: the PCK CRL, the TCB info,
//! the QE identity (each with its issuer chain in a URL-encoded header) and the root CA CRL. Only
//! quotes that embed their PCK certificate chain (certification data type 5, what TDX guests
//! produce) are supported; the PCK chain comes from the quote at verification time.
//!
//! The signed JSON documents are kept byte for byte as served, because Intel's signature covers
//! those exact bytes. Bodies are capped at [`MAX_BODY`].

use crate::http::describe;
use std::time::Duration;

use dcap_qvl::quote::Quote;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::tdx::Collateral;

/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// Where Intel publishes the CRL of its SGX/TDX root CA (the PCS has no endpoint for it).
pub const INTEL_ROOT_CA_CRL_URL: &str = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";
/// Largest response body accepted (real ones are a few KiB to ~100 KiB).
pub const MAX_BODY: usize = 1 << 20;
/// Certification data type of a PCK certificate chain embedded in the quote.
const PCK_CERT_CHAIN: u16 = 5;

/// Why collateral could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PccsError {
    /// The quote cannot say which platform it comes from.
    #[error("quote does not identify its platform: {0}")]
    Quote(String),
    /// The configured URL is not usable.
    #[error("invalid PCCS URL {0:?}")]
    Url(String),
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A required header is missing or not decodable.
    #[error("GET {url}: missing or malformed header {header}")]
    Header {
        /// The URL.
        url: String,
        /// The header.
        header: &'static str,
    },
    /// The body is too large or malformed.
    #[error("GET {url}: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The platform a quote comes from: what collateral is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Platform {
    /// TDX (true) or SGX quote.
    pub tdx: bool,
    /// Family-Model-Stepping-Platform-CustomSKU of the CPU.
    pub fmspc: [u8; 6],
    /// Issuing PCK CA: `"processor"` or `"platform"`.
    pub ca: &'static str,
}

impl Platform {
    /// The platform of `quote`, read from the PCK leaf certificate it embeds.
    pub fn of_quote(quote: &[u8]) -> Result<Self, PccsError> {
        let parsed = Quote::parse(quote).map_err(|e| PccsError::Quote(format!("{e:#}")))?;
        if parsed.inner_cert_type() != PCK_CERT_CHAIN {
            return Err(PccsError::Quote(format!(
                "certification data type {} (only embedded PCK chains, type 5, are supported)",
                parsed.inner_cert_type()
            )));
        }
        let fmspc = dcap_qvl::intel::quote_fmspc(&parsed).map_err(|e| PccsError::Quote(format!("{e:#}")))?;
        let ca = dcap_qvl::intel::quote_ca(&parsed).map_err(|e| PccsError::Quote(format!("{e:#}")))?;
        Ok(Self { tdx: !parsed.header.is_sgx(), fmspc, ca: ca.as_id_str() })
    }

    /// Stable key for caches: `tdx/processor/00806F050000`.
    pub fn key(&self) -> String {
        let tee = if self.tdx { "tdx" } else { "sgx" };
        format!("{tee}/{}/{}", self.ca, hex::encode_upper(self.fmspc))
    }
}

#[derive(Deserialize)]
struct TcbInfoResponse<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct QeIdentityResponse<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

struct Response {
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, names: &[&'static str]) -> Result<String, PccsError> {
        let header = names[0];
        let value = names
            .iter()
            .find_map(|n| self.headers.get(*n))
            .ok_or_else(|| PccsError::Header { url: self.url.clone(), header })?;
        let value = value.to_str().map_err(|_| PccsError::Header { url: self.url.clone(), header })?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| PccsError::Header { url: self.url.clone(), header })
    }

    fn body_error(&self, reason: impl Into<String>) -> PccsError {
        PccsError::Body { url: self.url.clone(), reason: reason.into() }
    }
}

/// A client of one PCCS (or Intel's PCS).
#[derive(Debug, Clone)]
pub struct PccsClient {
    http: reqwest::Client,
    base: String,
}

impl PccsClient {
    /// A client of the service at `base_url` (with or without the `/sgx/certification/v4` suffix),
    /// giving up on each request after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, PccsError> {
        let base = base_url
            .trim_end_matches('/')
            .trim_end_matches("/sgx/certification/v4")
            .trim_end_matches("/tdx/certification/v4")
            .to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(PccsError::Url(base_url.to_owned()));
        }
        let http = http_client(timeout)
            .map_err(|e| PccsError::Request { url: base.clone(), reason: e.to_string() })?;
        Ok(Self { http, base })
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Fetch the collateral of `platform`. The result has no PCK chain: quotes carry their own.
    pub async fn fetch(&self, platform: &Platform) -> Result<Collateral, PccsError> {
        let tee = if platform.tdx { "tdx" } else { "sgx" };
        let fmspc = hex::encode_upper(platform.fmspc);

        let crl = self.get(&self.url("sgx", &format!("pckcrl?ca={}&encoding=der", platform.ca))).await?;
        let pck_crl_issuer_chain = crl.header(&["SGX-PCK-CRL-Issuer-Chain"])?;
        let pck_crl = der_or_hex(&crl.body);

        let tcb = self.get(&self.url(tee, &format!("tcb?fmspc={fmspc}"))).await?;
        let tcb_info_issuer_chain = tcb.header(&["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"])?;
        let parsed: TcbInfoResponse<'_> =
            serde_json::from_slice(&tcb.body).map_err(|e| tcb.body_error(format!("TCB info JSON: {e}")))?;
        let tcb_info_signature =
            hex::decode(&parsed.signature).map_err(|_| tcb.body_error("TCB info signature is not hex"))?;
        let tcb_info = parsed.tcb_info.get().to_owned();

        let qe = self.get(&self.url(tee, "qe/identity")).await?;
        let qe_identity_issuer_chain = qe.header(&["SGX-Enclave-Identity-Issuer-Chain"])?;
        let parsed: QeIdentityResponse<'_> =
            serde_json::from_slice(&qe.body).map_err(|e| qe.body_error(format!("QE identity JSON: {e}")))?;
        let qe_identity_signature =
            hex::decode(&parsed.signature).map_err(|_| qe.body_error("QE identity signature is not hex"))?;
        let qe_identity = parsed.enclave_identity.get().to_owned();

        let root_ca_crl = self.root_ca_crl().await?;
        Ok(Collateral {
            pck_crl_issuer_chain,
            root_ca_crl,
            pck_crl,
            tcb_info_issuer_chain,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    }

    /// A PCCS serves the root CA CRL itself (hex); Intel's PCS does not, so it comes from the URL
    /// in Intel's root certificate.
    async fn root_ca_crl(&self) -> Result<Vec<u8>, PccsError> {
        if self.base != INTEL_PCS_URL {
            match self.get(&self.url("sgx", "rootcacrl")).await {
                Ok(r) => return Ok(der_or_hex(&r.body)),
                Err(e) => tracing::debug!(error = %e, "PCCS has no root CA CRL; asking Intel"),
            }
        }
        Ok(der_or_hex(&self.get(INTEL_ROOT_CA_CRL_URL).await?.body))
    }

    fn url(&self, tee: &str, path: &str) -> String {
        format!("{}/{tee}/certification/v4/{path}", self.base)
    }

    async fn get(&self, url: &str) -> Result<Response, PccsError> {
        let failed = |e: reqwest::Error| PccsError::Request { url: url.to_owned(), reason: describe(&e) };
        let mut response = self.http.get(url).send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(PccsError::Status { url: url.to_owned(), status });
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PccsError::Body {
                    url: url.to_owned(),
                    reason: format!("larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { url: url.to_owned(), headers, body })
    }
}

/// CRLs come as DER, or hex-encoded DER from a PCCS.
fn der_or_hex(body: &[u8]) -> Vec<u8> {
    let text = body.trim_ascii();
    if !text.is_empty()
        && text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(decoded) = hex::decode(text)
    {
        return decoded;
    }
    body.to_vec()
}

/// The HTTP client of every attestation service this node asks (PCCS, AMD's KDS, NVIDIA's OCSP
/// and RIM services): `timeout` for connecting and for each whole request.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("cocoon/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crls_are_accepted_as_der_or_hex() {
        assert_eq!(der_or_hex(b"3082\n"), vec![0x30, 0x82]);
        assert_eq!(der_or_hex(&[0x30, 0x82, 0x01]), vec![0x30, 0x82, 0x01]);
    }

    #[test]
    fn base_urls_are_normalised_and_checked() {
        let c =
            PccsClient::new("https://pccs.example/sgx/certification/v4/", Duration::from_secs(1)).unwrap();
        assert_eq!(c.base_url(), "https://pccs.example");
        assert_eq!(c.url("tdx", "qe/identity"), "https://pccs.example/tdx/certification/v4/qe/identity");
        assert!(matches!(PccsClient::new("pccs.example", Duration::from_secs(1)), Err(PccsError::Url(_))));
    }
}
