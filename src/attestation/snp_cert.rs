//! Reading AMD's certificates (ARK, ASK, VCEK): DER or PEM, the pinned root they lead to,
//! validity periods, and the VCEK's TCB and hwID extensions (AMD 57230).

use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, OctetStringRef};
use x509_cert::der::{Decode, DecodePem, Encode};

use super::{SnpError, SnpProduct, SnpTcb};

/// VCEK extensions (AMD 57230): TCB components as DER INTEGERs, hwID as raw bytes.
pub(super) const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
pub(super) const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
pub(super) const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
pub(super) const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
pub(super) const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
pub(super) const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// A certificate's validity period, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `ARK`, `ASK` or `VCEK`.
    pub certificate: &'static str,
    /// First valid second.
    pub not_before: u64,
    /// Last valid second.
    pub not_after: u64,
}

/// A certificate in DER or PEM.
pub(super) fn parse_certificate(input: &[u8], what: &str) -> Result<Certificate, SnpError> {
    let pem = input.trim_ascii_start().starts_with(b"-----BEGIN");
    let parsed = if pem { Certificate::from_pem(input) } else { Certificate::from_der(input) };
    parsed.map_err(|e| SnpError::Malformed(format!("{what}: {e}")))
}

/// The product whose pinned root `ark` is, byte for byte.
pub(super) fn pinned_product(ark: &Certificate) -> Result<SnpProduct, SnpError> {
    let der = ark.to_der().map_err(|e| SnpError::Malformed(format!("ARK: {e}")))?;
    for product in SnpProduct::ALL {
        let pinned = product.pinned_ark().and_then(|c| c.to_der());
        let pinned = pinned.map_err(|e| SnpError::Unsupported(format!("built-in {product:?} ARK: {e}")))?;
        if pinned == der {
            return Ok(product);
        }
    }
    Err(SnpError::UnpinnedRoot)
}

pub(super) fn validity(cert: &Certificate, certificate: &'static str) -> Result<Validity, SnpError> {
    let v = &cert.tbs_certificate.validity;
    Ok(Validity {
        certificate,
        not_before: v.not_before.to_unix_duration().as_secs(),
        not_after: v.not_after.to_unix_duration().as_secs(),
    })
}

/// The contents of `cert`'s extension `oid`.
pub(super) fn extension<'a>(cert: &'a Certificate, oid: &ObjectIdentifier) -> Option<&'a [u8]> {
    let extensions = cert.tbs_certificate.extensions.as_deref()?;
    extensions.iter().find(|e| e.extn_id == *oid).map(|e| e.extn_value.as_bytes())
}

/// The TCB a VCEK was issued for (Turin adds the FMC level).
pub(super) fn vcek_tcb(vcek: &Certificate, product: SnpProduct) -> Result<SnpTcb, SnpError> {
    let spl = |oid: &ObjectIdentifier, name: &str| {
        let value = extension(vcek, oid).ok_or_else(|| SnpError::Malformed(format!("VCEK has no {name}")))?;
        u8::from_der(value).map_err(|e| SnpError::Malformed(format!("VCEK {name}: {e}")))
    };
    let fmc = if product == SnpProduct::Turin { spl(&OID_FMC_SPL, "fmcSPL")? } else { 0 };
    Ok(SnpTcb {
        fmc,
        bootloader: spl(&OID_BL_SPL, "blSPL")?,
        tee: spl(&OID_TEE_SPL, "teeSPL")?,
        snp: spl(&OID_SNP_SPL, "snpSPL")?,
        microcode: spl(&OID_UCODE_SPL, "ucodeSPL")?,
    })
}

/// A VCEK's hwID: 64 raw bytes, or 8 on Turin (also read inside an OCTET STRING, as
/// go-sev-guest does, should AMD ever wrap it).
pub(super) fn vcek_hw_id(vcek: &Certificate) -> Result<Vec<u8>, SnpError> {
    let raw = extension(vcek, &OID_HW_ID).ok_or_else(|| SnpError::Malformed("VCEK has no hwID".into()))?;
    let valid = |id: &[u8]| matches!(id.len(), 8 | 64);
    if valid(raw) {
        return Ok(raw.to_vec());
    }
    match OctetStringRef::from_der(raw) {
        Ok(inner) if valid(inner.as_bytes()) => Ok(inner.as_bytes().to_vec()),
        _ => Err(SnpError::Malformed(format!("VCEK hwID of {} bytes", raw.len()))),
    }
}
