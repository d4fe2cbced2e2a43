//! Strict parsing of an NVIDIA Hopper attestation report: the SPDM 1.1 GET_MEASUREMENTS request
//! (37 bytes, carrying the verifier's nonce) followed by the signed MEASUREMENTS response.
//!
//! Layout (offsets from the start of the response, which begins at byte 37):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | version 0x11, code 0x60, param1, param2 |
//! | 4 | 1 | number of measurement blocks |
//! | 5 | 3 | measurement record length L1 (little-endian) |
//! | 8 | L1 | blocks: index, spec 1, size u16, value type, value size u16, value |
//! | 8+L1 | 32 | responder nonce (the GPU's own random) |
//! | 40+L1 | 2 | opaque data length L2 |
//! | 42+L1 | L2 | opaque data: `type u16, length u16, value` entries |
//! | 42+L1+L2 | 96 | ECDSA P-384 signature `r ‖ s` over every byte before it |
//!
//! Every length must agree with the bytes present: nothing may be missing or left over.

/// Length of the GET_MEASUREMENTS request that starts a report.
pub const REQUEST_LEN: usize = 37;
/// Length of the raw `r ‖ s` signature that ends a report.
pub const SIGNATURE_LEN: usize = 96;
/// Length of a nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an FWID (a SHA-384 digest of the GPU's firmware).
pub const FWID_LEN: usize = 48;

/// Opaque data type of the driver version (NUL-terminated text).
pub const OPAQUE_DRIVER_VERSION: u16 = 3;
/// Opaque data type of the VBIOS version (8 raw bytes).
pub const OPAQUE_VBIOS_VERSION: u16 = 6;
/// Opaque data type of the FWID.
pub const OPAQUE_FWID: u16 = 20;

const SPDM_1_1: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xe0;
const MEASUREMENTS: u8 = 0x60;
/// Param1 bit asking the responder to sign.
const SIGNATURE_REQUESTED: u8 = 0x01;
/// MeasurementSpecification of DMTF measurement blocks, the only kind defined.
const DMTF_SPECIFICATION: u8 = 1;

/// Why report bytes do not parse as a Hopper attestation report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The bytes end inside a field.
    #[error("report ends inside {0}")]
    Truncated(&'static str),
    /// A version other than SPDM 1.1 (later versions sign differently).
    #[error("SPDM version {0:#04x} is not 1.1")]
    Version(u8),
    /// The request is not GET_MEASUREMENTS, or does not ask for a signature.
    #[error("request code {code:#04x}, param1 {param1:#04x} is not a signed GET_MEASUREMENTS")]
    Request {
        /// Its request code.
        code: u8,
        /// Its first parameter.
        param1: u8,
    },
    /// The response is not MEASUREMENTS.
    #[error("response code {0:#04x} is not MEASUREMENTS")]
    Response(u8),
    /// A measurement block is inconsistent.
    #[error("measurement block {block}: {reason}")]
    Block {
        /// Its position in the record.
        block: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The opaque data is inconsistent.
    #[error("opaque data: {0}")]
    Opaque(&'static str),
    /// Bytes are left after the signature.
    #[error("{0} bytes follow the signature")]
    Trailing(usize),
}

/// One measurement block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Its index (1-based on Hopper; NVIDIA's golden values use `index - 1`).
    pub index: u8,
    /// DMTF value type (1: a digest of immutable firmware … see DSP0274).
    pub value_type: u8,
    /// The value: a SHA-384 digest on Hopper.
    pub value: Vec<u8>,
}

/// A parsed report. Nothing in it is verified by parsing alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReport {
    /// The nonce the verifier sent in the request.
    pub nonce: [u8; NONCE_LEN],
    /// The responder's own nonce (random, covered by the signature).
    pub responder_nonce: [u8; NONCE_LEN],
    /// The measurement blocks in report order.
    pub measurements: Vec<Measurement>,
    /// Every opaque data entry (type, value), unknown types included.
    pub opaque: Vec<(u16, Vec<u8>)>,
    /// Bytes covered by the signature: the whole report less its last 96 bytes.
    pub signed_len: usize,
    /// The raw `r ‖ s` signature.
    pub signature: [u8; SIGNATURE_LEN],
}

impl GpuReport {
    /// The value of the opaque entry of type `kind`, if present.
    pub fn opaque(&self, kind: u16) -> Option<&[u8]> {
        self.opaque.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
    }

    /// The driver version ("550.90.07"), if present and text.
    pub fn driver_version(&self) -> Option<String> {
        let raw = self.opaque(OPAQUE_DRIVER_VERSION)?;
        let text = std::str::from_utf8(raw).ok()?.trim_end_matches('\0');
        (!text.is_empty() && !text.contains('\0')).then(|| text.to_owned())
    }

    /// The VBIOS version as NVIDIA prints it ("96.00.9f.00.01"), if present.
    pub fn vbios_version(&self) -> Option<String> {
        let raw = self.opaque(OPAQUE_VBIOS_VERSION)?;
        let b = raw.get(..5)?;
        Some(format!("{:02x}.{:02x}.{:02x}.{:02x}.{:02x}", b[3], b[2], b[1], b[0], b[4]))
    }

    /// The FWID the report carries, if present and 48 bytes long.
    pub fn fwid(&self) -> Option<[u8; FWID_LEN]> {
        self.opaque(OPAQUE_FWID)?.try_into().ok()
    }

    /// The measurement with `index`, if present.
    pub fn measurement(&self, index: u8) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.index == index)
    }
}

/// A bounds-checked cursor over report bytes.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ReportError> {
        let (head, rest) = self.rest.split_at_checked(n).ok_or(ReportError::Truncated(what))?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ReportError> {
        let bytes = self.take(N, what)?;
        bytes.try_into().map_err(|_| ReportError::Truncated(what))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ReportError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ReportError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, ReportError> {
        let [a, b, c] = self.array(what)?;
        Ok(usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16)
    }
}

/// Parse `bytes` strictly.
pub fn parse_report(bytes: &[u8]) -> Result<GpuReport, ReportError> {
    let mut cursor = Cursor { rest: bytes };
    let nonce = parse_request(&mut cursor)?;
    let [version, code, _param1, _param2] = cursor.array("the response header")?;
    check_version(version)?;
    if code != MEASUREMENTS {
        return Err(ReportError::Response(code));
    }
    let blocks = cursor.u8("the block count")?;
    let record_len = cursor.u24("the record length")?;
    let measurements = parse_blocks(cursor.take(record_len, "the measurement record")?, blocks)?;
    let responder_nonce = cursor.array("the responder nonce")?;
    let opaque_len = cursor.u16("the opaque data length")?;
    let opaque = parse_opaque(cursor.take(usize::from(opaque_len), "the opaque data")?)?;
    let signed_len = bytes.len() - cursor.rest.len();
    let signature = cursor.array("the signature")?;
    if !cursor.rest.is_empty() {
        return Err(ReportError::Trailing(cursor.rest.len()));
    }
    Ok(GpuReport { nonce, responder_nonce, measurements, opaque, signed_len, signature })
}

fn check_version(version: u8) -> Result<(), ReportError> {
    if version == SPDM_1_1 { Ok(()) } else { Err(ReportError::Version(version)) }
}

/// The request's nonce, after checking it is a signed GET_MEASUREMENTS.
fn parse_request(cursor: &mut Cursor<'_>) -> Result<[u8; NONCE_LEN], ReportError> {
    let [version, code, param1, _param2] = cursor.array("the request header")?;
    check_version(version)?;
    if code != GET_MEASUREMENTS || param1 & SIGNATURE_REQUESTED == 0 {
        return Err(ReportError::Request { code, param1 });
    }
    let nonce = cursor.array("the request nonce")?;
    let _slot = cursor.u8("the request slot")?;
    Ok(nonce)
}

/// Exactly `count` blocks filling `record`, with distinct indices.
fn parse_blocks(record: &[u8], count: u8) -> Result<Vec<Measurement>, ReportError> {
    let mut cursor = Cursor { rest: record };
    let mut seen = [false; 256];
    let mut out = Vec::with_capacity(usize::from(count));
    for block in 0..usize::from(count) {
        let measurement = parse_block(&mut cursor).map_err(|reason| ReportError::Block { block, reason })?;
        if std::mem::replace(&mut seen[usize::from(measurement.index)], true) {
            return Err(ReportError::Block { block, reason: "its index repeats an earlier block's" });
        }
        out.push(measurement);
    }
    if !cursor.rest.is_empty() {
        return Err(ReportError::Block { block: out.len(), reason: "bytes beyond the announced blocks" });
    }
    Ok(out)
}

/// One block; the error says what is wrong with it.
fn parse_block(cursor: &mut Cursor<'_>) -> Result<Measurement, &'static str> {
    let truncated = |_| "it is truncated";
    let index = cursor.u8("").map_err(truncated)?;
    let specification = cursor.u8("").map_err(truncated)?;
    let size = usize::from(cursor.u16("").map_err(truncated)?);
    let mut inner = Cursor { rest: cursor.take(size, "").map_err(truncated)? };
    if specification != DMTF_SPECIFICATION {
        return Err("not a DMTF measurement");
    }
    let value_type = inner.u8("").map_err(truncated)?;
    let value_size = usize::from(inner.u16("").map_err(truncated)?);
    let value = inner.take(value_size, "").map_err(|_| "its value size exceeds its size")?.to_vec();
    if !inner.rest.is_empty() {
        return Err("its size exceeds its value size");
    }
    Ok(Measurement { index, value_type, value })
}

/// `type u16, length u16, value` entries exactly filling `data`, each type once.
fn parse_opaque(data: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, ReportError> {
    let mut cursor = Cursor { rest: data };
    let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
    while !cursor.rest.is_empty() {
        let truncated = |_| ReportError::Opaque("an entry is truncated");
        let kind = cursor.u16("").map_err(truncated)?;
        let len = cursor.u16("").map_err(truncated)?;
        let value = cursor.take(usize::from(len), "").map_err(truncated)?;
        if out.iter().any(|(k, _)| *k == kind) {
            return Err(ReportError::Opaque("a type appears twice"));
        }
        out.push((kind, value.to_vec()));
    }
    Ok(out)
}
