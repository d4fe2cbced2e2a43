//! NVIDIA's reference integrity manifests (RIMs): the golden measurements of a driver and of a
//! VBIOS, against which a verified report's measurements are compared. Optional and off by
//! default (see [`super::ocsp::GpuServicesConfig`]): offline verification never needs them.
//!
//! - [`rim_ids`]: the two RIM ids a report names, as NVIDIA's verifier derives them
//!   (`NV_GPU_DRIVER_GH100_<driver>`, `NV_GPU_VBIOS_<project>_<sku>_<chip sku>_<vbios>`).
//! - [`Rim::parse`]: a RIM (a TCG SWID tag, XML) read and its XML signature checked: the
//!   enveloped XML-DSig (inclusive C14N 1.1, ECDSA P-384/SHA-384) by the first certificate of its
//!   `KeyInfo`, that certificate chained to NVIDIA's pinned RIM root, valid at `now`.
//! - [`compare`]: every active golden measurement of the driver and VBIOS RIMs (none at the same
//!   index in both) equals one of its alternatives in the report (RIM index `i` is report
//!   block `i + 1`).
//! - [`GpuRims`]: fetches RIMs from NVIDIA's RIM service (JSON `{"rim": base64}`) and keeps
//!   verified ones in memory.
//!
//! Not checked: OCSP of the RIM signing chain (NVIDIA's verifier does), and XML features NVIDIA's
//! RIMs do not use (comments, processing instructions, `xml:` attributes, DTDs): a RIM with them
//! is refused rather than canonicalised approximately.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sha2::{Digest, Sha384};
use xml::attribute::OwnedAttribute;
use xml::name::OwnedName;
use xml::reader::{EventReader, ParserConfig, XmlEvent};

use super::cert::Cert;
use super::ocsp::GpuServicesConfig;
use super::{GpuArchitecture, GpuReport, VerifiedGpu};

/// NVIDIA's RIM signing root (`CN=NVIDIA CoRIM signing Root CA, O=NVIDIA, C=US`, P-384, valid
/// 2023-03-16 to 2053-03-08), `verifier_RIM_root.pem` of `nv-local-gpu-verifier` 2.7.3.
pub const NVIDIA_RIM_ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICKTCCAbCgAwIBAgIQRdrjoA5QN73fh1N17LXicDAKBggqhkjOPQQDAzBFMQsw
CQYDVQQGEwJVUzEPMA0GA1UECgwGTlZJRElBMSUwIwYDVQQDDBxOVklESUEgQ29S
SU0gc2lnbmluZyBSb290IENBMCAXDTIzMDMxNjE1MzczNFoYDzIwNTMwMzA4MTUz
NzM0WjBFMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGTlZJRElBMSUwIwYDVQQDDBxO
VklESUEgQ29SSU0gc2lnbmluZyBSb290IENBMHYwEAYHKoZIzj0CAQYFK4EEACID
YgAEuECyi9vNM+Iw2lfUzyBldHAwaC1HF7TCgp12QcEyUTm3Tagxwr48d55+K2VI
lWYIDk7NlAIQdcV/Ff7euGLI+Qauj93HsSI4WX298PpW54RTgz9tC+Q684caR/BX
WEeZo2MwYTAdBgNVHQ4EFgQUpaXrOPK4ZDAk08DBskn594zeZjAwHwYDVR0jBBgw
FoAUpaXrOPK4ZDAk08DBskn594zeZjAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwCgYIKoZIzj0EAwMDZwAwZAIwHGDyscDP6ihHqRvZlI3eqZ4YkvjE
1duaN84tAHRVgxVMvNrp5Tnom3idHYGW/dskAjATvjIx6VzHm/4e2GiZAyZEIUBD
OKPzp5ei/A0iUZpdvngenDwV8Qa/wGdiTmJ7Bp4=
-----END CERTIFICATE-----";

/// Largest RIM read: NVIDIA's are 20 to 60 KB.
pub const MAX_RIM_BYTES: usize = 1024 * 1024;
/// Deepest element nesting accepted (a SWID tag is four deep, its signature six).
const MAX_DEPTH: usize = 32;
/// RIMs kept in memory: two per driver/VBIOS pair a node meets.
pub const CACHE_ENTRIES: usize = 256;

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const DIGEST_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
/// Namespace of the `Hash<i>` attributes of a measurement.
const HASH_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";

/// Why a RIM is refused or a report does not match it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RimError {
    /// The report lacks a field a RIM id is made of.
    #[error("the GPU report has no {0} to name its RIM by")]
    MissingField(&'static str),
    /// No RIM scheme is known for this architecture.
    #[error("no RIM ids are known for {0} GPUs")]
    Unsupported(GpuArchitecture),
    /// The RIM is not well-formed XML of the expected shape.
    #[error("malformed RIM: {0}")]
    Malformed(String),
    /// The RIM's signature or its chain does not verify.
    #[error("the RIM's signature does not verify: {0}")]
    Signature(&'static str),
    /// Driver and VBIOS RIMs both have an active measurement at `index`.
    #[error("the driver and VBIOS RIMs both measure index {0}")]
    Conflict(u32),
    /// The report has no measurement a RIM has a golden value for.
    #[error("the GPU report has no measurement {0} (0-based)")]
    MissingMeasurement(u32),
    /// A measurement is none of its golden values.
    #[error("GPU measurement {index} (0-based) is not the {rim} RIM's")]
    Mismatch {
        /// The RIM index (0-based).
        index: u32,
        /// "driver" or "VBIOS".
        rim: &'static str,
    },
    /// The RIM service could not be reached or answered with an error.
    #[error("RIM request to {url}: {reason}")]
    Request {
        /// The RIM's URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

fn malformed(reason: impl Into<String>) -> RimError {
    RimError::Malformed(reason.into())
}

/// The ids of the RIMs a report is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimIds {
    /// The driver RIM (`NV_GPU_DRIVER_GH100_550.90.07`).
    pub driver: String,
    /// The VBIOS RIM (`NV_GPU_VBIOS_1010_0200_882_96009F0001`).
    pub vbios: String,
}

/// Opaque data types the VBIOS RIM id is made of.
const OPAQUE_CHIP_SKU: u16 = 15;
const OPAQUE_PROJECT: u16 = 17;
const OPAQUE_PROJECT_SKU: u16 = 18;

/// The RIM ids of a report of `architecture`, as NVIDIA's verifier derives them.
pub fn rim_ids(report: &GpuReport, architecture: GpuArchitecture) -> Result<RimIds, RimError> {
    if architecture != GpuArchitecture::Hopper {
        return Err(RimError::Unsupported(architecture));
    }
    let text = |kind: u16, what: &'static str| -> Result<String, RimError> {
        let raw = report.opaque(kind).ok_or(RimError::MissingField(what))?;
        let text = std::str::from_utf8(raw).map_err(|_| RimError::MissingField(what))?;
        let text = text.trim().trim_matches('\0').trim().to_ascii_uppercase();
        let ok =
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if ok { Ok(text) } else { Err(RimError::MissingField(what)) }
    };
    let driver = report.driver_version().ok_or(RimError::MissingField("driver version"))?;
    if !driver.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err(RimError::MissingField("driver version"));
    }
    let vbios = report.vbios_version().ok_or(RimError::MissingField("VBIOS version"))?;
    let (project, sku, chip) = (
        text(OPAQUE_PROJECT, "project")?,
        text(OPAQUE_PROJECT_SKU, "project SKU")?,
        text(OPAQUE_CHIP_SKU, "chip SKU")?,
    );
    Ok(RimIds {
        driver: format!("NV_GPU_DRIVER_GH100_{driver}"),
        vbios: format!("NV_GPU_VBIOS_{project}_{sku}_{chip}_{}", vbios.replace('.', "").to_ascii_uppercase()),
    })
}

/// One golden measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Golden {
    /// Whether it is compared at all.
    pub active: bool,
    /// The measurement's length in bytes.
    pub size: usize,
    /// The values accepted.
    pub alternatives: Vec<Vec<u8>>,
}

/// A RIM whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    /// Its `colloquialVersion` ("550.90.07", "96.00.9F.00.01").
    pub version: String,
    /// Golden measurements by 0-based index.
    pub measurements: BTreeMap<u32, Golden>,
}

/// An XML element, its namespace context and children.
#[derive(Debug, Clone)]
struct Element {
    name: OwnedName,
    attributes: Vec<OwnedAttribute>,
    /// Prefix → URI in scope (xml-rs's, with its `xml`/`xmlns` entries).
    namespaces: BTreeMap<String, String>,
    children: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    fn is(&self, namespace: &str, local: &str) -> bool {
        self.name.local_name == local && self.name.namespace.as_deref() == Some(namespace)
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    fn child(&self, namespace: &str, local: &str) -> Result<&Element, RimError> {
        self.elements().find(|e| e.is(namespace, local)).ok_or_else(|| malformed(format!("no {local}")))
    }

    fn attribute(&self, namespace: Option<&str>, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name.local_name == local && a.name.namespace.as_deref() == namespace)
            .map(|a| a.value.as_str())
    }

    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }
}

/// Parse `xml` into its root element, refusing what the canonicalisation below does not cover.
fn parse_xml(xml: &str) -> Result<Element, RimError> {
    if xml.len() > MAX_RIM_BYTES {
        return Err(malformed("too large"));
    }
    // The parser reads a DTD silently (entities included): none is canonicalised here.
    if xml.contains("<!DOCTYPE") {
        return Err(malformed("a DTD"));
    }
    let config = ParserConfig::new()
        .trim_whitespace(false)
        .whitespace_to_characters(true)
        .cdata_to_characters(true)
        .ignore_comments(false)
        .coalesce_characters(true)
        .ignore_root_level_whitespace(true);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    for event in EventReader::new_with_config(xml.as_bytes(), config) {
        match event.map_err(|e| malformed(e.to_string()))? {
            XmlEvent::StartDocument { .. } | XmlEvent::EndDocument => {}
            XmlEvent::StartElement { name, attributes, namespace } => {
                if stack.len() >= MAX_DEPTH || root.is_some() {
                    return Err(malformed("too deep, or a second root"));
                }
                if attributes.iter().any(|a| a.name.prefix.as_deref() == Some("xml")) {
                    return Err(malformed("xml: attributes"));
                }
                // xml-rs does not normalise whitespace in attribute values as XML requires, so a
                // literal tab and `&#9;` would read alike: neither occurs in NVIDIA's RIMs.
                if attributes.iter().any(|a| a.value.contains(['\t', '\n', '\r'])) {
                    return Err(malformed("tabs or line breaks in an attribute"));
                }
                stack.push(Element { name, attributes, namespaces: namespace.0, children: Vec::new() });
            }
            XmlEvent::EndElement { .. } => {
                let done = stack.pop().ok_or_else(|| malformed("unbalanced"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(done)),
                    None => root = Some(done),
                }
            }
            XmlEvent::Characters(text) | XmlEvent::Whitespace(text) | XmlEvent::CData(text) => {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Text(text)),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root")),
                }
            }
            XmlEvent::Comment(_) | XmlEvent::ProcessingInstruction { .. } => {
                return Err(malformed("comments, processing instructions or a DTD"));
            }
        }
    }
    root.ok_or_else(|| malformed("no root element"))
}

/// The namespaces an element declares for canonical output: its in-scope ones, without xml-rs's
/// built-in `xml`/`xmlns` prefixes; an empty default namespace is no namespace.
fn visible(namespaces: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    namespaces
        .iter()
        .filter(|(prefix, uri)| prefix.as_str() != "xml" && prefix.as_str() != "xmlns" && !uri.is_empty())
        .map(|(p, u)| (p.as_str(), u.as_str()))
        .collect()
}

fn qualified(name: &OwnedName) -> String {
    match &name.prefix {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}:{}", name.local_name),
        _ => name.local_name.clone(),
    }
}

/// Canonical XML 1.1 (without comments) of `element` whose output parent had `parent`
/// namespaces in scope (empty for the apex of a subset), leaving out elements `skip` names.
fn canonical(
    element: &Element,
    parent: &BTreeMap<&str, &str>,
    skip: &dyn Fn(&Element) -> bool,
    out: &mut String,
) {
    let scope = visible(&element.namespaces);
    out.push('<');
    out.push_str(&qualified(&element.name));
    if parent.contains_key("") && !scope.contains_key("") {
        out.push_str(" xmlns=\"\"");
    }
    for (prefix, uri) in &scope {
        if parent.get(prefix) != Some(uri) {
            out.push_str(if prefix.is_empty() { " xmlns" } else { " xmlns:" });
            out.push_str(prefix);
            out.push_str("=\"");
            escape_attribute(uri, out);
            out.push('"');
        }
    }
    let mut attributes: Vec<&OwnedAttribute> = element.attributes.iter().collect();
    attributes.sort_by(|a, b| {
        (a.name.namespace.as_deref().unwrap_or(""), &a.name.local_name)
            .cmp(&(b.name.namespace.as_deref().unwrap_or(""), &b.name.local_name))
    });
    for attribute in attributes {
        out.push(' ');
        out.push_str(&qualified(&attribute.name));
        out.push_str("=\"");
        escape_attribute(&attribute.value, out);
        out.push('"');
    }
    out.push('>');
    for child in &element.children {
        match child {
            Node::Text(text) => escape_text(text, out),
            Node::Element(e) if skip(e) => {}
            Node::Element(e) => canonical(e, &scope, skip, out),
        }
    }
    out.push_str("</");
    out.push_str(&qualified(&element.name));
    out.push('>');
}

fn escape_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn algorithm(element: &Element, local: &str, expected: &'static str) -> Result<(), RimError> {
    let found = element.child(DSIG, local)?.attribute(None, "Algorithm");
    if found == Some(expected) { Ok(()) } else { Err(RimError::Signature(expected)) }
}

fn base64(text: &str) -> Result<Vec<u8>, RimError> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).map_err(|_| malformed("bad base64"))
}

/// The signature element's checks: the one form NVIDIA's RIMs use, the document's digest, the
/// chain of its `KeyInfo` to `root`, and the signature over the canonical `SignedInfo`.
fn check_signature(root_element: &Element, root: &[u8], now: u64) -> Result<(), RimError> {
    let is_signature = |e: &Element| e.is(DSIG, "Signature");
    let signatures: Vec<&Element> = root_element.elements().filter(|e| is_signature(e)).collect();
    let [signature] = signatures.as_slice() else {
        return Err(RimError::Signature("not exactly one enveloped signature"));
    };
    let info = signature.child(DSIG, "SignedInfo")?;
    algorithm(info, "CanonicalizationMethod", C14N11)?;
    algorithm(info, "SignatureMethod", ECDSA_SHA384)?;
    let references: Vec<&Element> = info.elements().filter(|e| e.is(DSIG, "Reference")).collect();
    let [reference] = references.as_slice() else {
        return Err(RimError::Signature("not exactly one reference"));
    };
    if reference.attribute(None, "URI") != Some("") {
        return Err(RimError::Signature("the reference is not the whole document"));
    }
    let transforms: Vec<Option<&str>> =
        reference.child(DSIG, "Transforms")?.elements().map(|t| t.attribute(None, "Algorithm")).collect();
    if transforms != [Some(ENVELOPED), Some(C14N11)] {
        return Err(RimError::Signature("transforms other than enveloped-signature, C14N 1.1"));
    }
    algorithm(reference, "DigestMethod", DIGEST_SHA384)?;
    // Only this signature element is left out (enveloped-signature): any other stays signed.
    let mut document = String::new();
    canonical(root_element, &BTreeMap::new(), &|e| std::ptr::eq(e, *signature), &mut document);
    let digest = base64(&reference.child(DSIG, "DigestValue")?.text())?;
    if digest != Sha384::digest(document.as_bytes()).as_slice() {
        return Err(RimError::Signature("the document's digest differs"));
    }
    let signer = check_chain(signature, root, now)?;
    let mut signed = String::new();
    canonical(info, &BTreeMap::new(), &|_| false, &mut signed);
    let value = base64(&signature.child(DSIG, "SignatureValue")?.text())?;
    let key = Cert::parse(&signer).map_err(RimError::Signature)?.key.to_vec();
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
        .verify(signed.as_bytes(), &value)
        .map_err(|_| RimError::Signature("the signature value"))
}

/// The `KeyInfo` certificates (signer first; the last, a copy of the root, replaced by `root`)
/// chain to `root` at `now`; the signer's DER.
fn check_chain(signature: &Element, root: &[u8], now: u64) -> Result<Vec<u8>, RimError> {
    let data = signature.child(DSIG, "KeyInfo")?.child(DSIG, "X509Data")?;
    let mut ders = data
        .elements()
        .filter(|e| e.is(DSIG, "X509Certificate"))
        .map(|e| base64(&e.text()))
        .collect::<Result<Vec<_>, _>>()?;
    if ders.len() < 2 || ders.len() > 5 {
        return Err(RimError::Signature("not 2 to 5 certificates"));
    }
    if let Some(last) = ders.last_mut() {
        *last = root.to_vec();
    }
    let certs =
        ders.iter().map(|d| Cert::parse(d)).collect::<Result<Vec<_>, _>>().map_err(RimError::Signature)?;
    for pair in certs.windows(2) {
        let [cert, issuer] = pair else { continue };
        if cert.issuer != issuer.subject || !issuer.is_ca || !cert.signed_by(issuer.key) {
            return Err(RimError::Signature("the certificate chain to NVIDIA's RIM root"));
        }
    }
    if certs.iter().any(|c| now < c.not_before || now > c.not_after) {
        return Err(RimError::Signature("a certificate is not valid now"));
    }
    Ok(ders.swap_remove(0))
}

impl Rim {
    /// Read `xml` and verify its signature up to `root` (DER, see [`nvidia_rim_root`]) at `now`.
    pub fn parse(xml: &str, root: &[u8], now: u64) -> Result<Self, RimError> {
        let document = parse_xml(xml)?;
        check_signature(&document, root, now)?;
        Self::read(&document)
    }

    /// Read `xml` without any signature check: for tests and for RIMs pinned by hash elsewhere.
    pub fn parse_unsigned(xml: &str) -> Result<Self, RimError> {
        Self::read(&parse_xml(xml)?)
    }

    fn read(document: &Element) -> Result<Self, RimError> {
        let swid = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
        if !document.is(swid, "SoftwareIdentity") {
            return Err(malformed("not a SWID tag"));
        }
        let version =
            document.child(swid, "Meta")?.attribute(None, "colloquialVersion").unwrap_or("").to_owned();
        let mut measurements = BTreeMap::new();
        for resource in document.child(swid, "Payload")?.elements() {
            let number = |name: &str| -> Result<usize, RimError> {
                let text = resource.attribute(None, name).ok_or_else(|| malformed(format!("no {name}")))?;
                text.parse().map_err(|_| malformed(format!("a bad {name}")))
            };
            let index = u32::try_from(number("index")?).map_err(|_| malformed("a bad index"))?;
            let (count, size) = (number("alternatives")?, number("size")?);
            let active = resource.attribute(None, "active") != Some("False");
            let alternatives = (0..count.min(64))
                .map(|i| {
                    let value = resource
                        .attribute(Some(HASH_NS), &format!("Hash{i}"))
                        .ok_or_else(|| malformed(format!("no Hash{i} at index {index}")))?;
                    hex::decode(value).map_err(|_| malformed(format!("a bad Hash{i} at index {index}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if measurements.insert(index, Golden { active, size, alternatives }).is_some() {
                return Err(malformed(format!("index {index} twice")));
            }
        }
        if measurements.is_empty() {
            return Err(malformed("no measurements"));
        }
        Ok(Self { version, measurements })
    }
}

/// The pinned RIM root's DER.
pub fn nvidia_rim_root() -> Result<Vec<u8>, RimError> {
    let mut certs =
        super::chain_from_pem(NVIDIA_RIM_ROOT_PEM).map_err(|_| malformed("the pinned RIM root"))?;
    if certs.len() == 1 { Ok(certs.remove(0)) } else { Err(malformed("the pinned RIM root")) }
}

/// Compare `report`'s measurements with the active golden values of `driver` and `vbios`.
pub fn compare(report: &GpuReport, driver: &Rim, vbios: &Rim) -> Result<(), RimError> {
    let mut golden: BTreeMap<u32, (&Golden, &'static str)> = BTreeMap::new();
    for (index, g) in driver.measurements.iter().filter(|(_, g)| g.active) {
        golden.insert(*index, (g, "driver"));
    }
    for (index, g) in vbios.measurements.iter().filter(|(_, g)| g.active) {
        if golden.insert(*index, (g, "VBIOS")).is_some() {
            return Err(RimError::Conflict(*index));
        }
    }
    for (index, (g, source)) in golden {
        let block = u8::try_from(index + 1).map_err(|_| RimError::MissingMeasurement(index))?;
        let value = &report.measurement(block).ok_or(RimError::MissingMeasurement(index))?.value;
        if value.len() != g.size || !g.alternatives.iter().any(|a| a == value) {
            return Err(RimError::Mismatch { index, rim: source });
        }
    }
    Ok(())
}

/// A client of NVIDIA's RIM service keeping verified RIMs in memory.
#[derive(Debug)]
pub struct GpuRims {
    http: reqwest::Client,
    base: String,
    cache_secs: u64,
    root: Vec<u8>,
    /// RIM id → the RIM and until when it is reused (Unix seconds).
    cache: Mutex<HashMap<String, (Rim, u64)>>,
}

/// The RIM service's answer.
#[derive(serde::Deserialize)]
struct RimResponse {
    rim: String,
}

impl GpuRims {
    /// A client of `config`'s RIM service, checking RIM signatures up to NVIDIA's pinned root.
    pub fn new(config: &GpuServicesConfig) -> Result<Self, RimError> {
        Self::with_root(config, nvidia_rim_root()?)
    }

    /// [`GpuRims::new`] with another trusted root (tests).
    pub fn with_root(config: &GpuServicesConfig, root: Vec<u8>) -> Result<Self, RimError> {
        let base = config.rim_url.clone();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(RimError::Request { url: base, reason: "not an http(s) URL".into() });
        }
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = crate::attestation::pccs::http_client(timeout)
            .map_err(|e| RimError::Request { url: base.clone(), reason: e.to_string() })?;
        Ok(Self { http, base, cache_secs: config.cache_secs, root, cache: Mutex::new(HashMap::new()) })
    }

    /// Check a verified GPU's measurements against its driver and VBIOS RIMs at `now`.
    pub async fn check(&self, gpu: &VerifiedGpu, now: u64) -> Result<(), RimError> {
        let ids = rim_ids(&gpu.report, gpu.architecture)?;
        let driver = self.rim(&ids.driver, now).await?;
        let vbios = self.rim(&ids.vbios, now).await?;
        compare(&gpu.report, &driver, &vbios)
    }

    /// The verified RIM `id`, from memory or fetched.
    pub async fn rim(&self, id: &str, now: u64) -> Result<Rim, RimError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((rim, until)) = cache.get(id)
                && now <= *until
            {
                return Ok(rim.clone());
            }
        }
        let xml = self.fetch(id).await?;
        let rim = Rim::parse(&xml, &self.root, now)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until >= now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(id.to_owned(), (rim.clone(), now.saturating_add(self.cache_secs)));
        Ok(rim)
    }

    async fn fetch(&self, id: &str) -> Result<String, RimError> {
        let url = format!("{}{id}", self.base);
        let failed = |reason: String| RimError::Request { url: url.clone(), reason };
        let mut response = self.http.get(&url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + chunk.len() > 2 * MAX_RIM_BYTES {
                return Err(failed("too large a response".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: RimResponse = serde_json::from_slice(&body).map_err(|e| failed(format!("JSON: {e}")))?;
        let xml = base64(&parsed.rim)?;
        String::from_utf8(xml).map_err(|_| malformed("not UTF-8"))
    }
}

#[cfg(test)]
#[path = "gpu_rim_tests.rs"]
mod tests;
