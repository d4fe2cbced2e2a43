//! The attestation policy file (TOML) and its optional governance signature.
//!
//! ```toml
//! allow_simulated = false              # SIMULATED evidence (development only)
//! accepted_tcb_statuses = ["UpToDate"]
//! max_record_age_secs = 86400
//! max_validity_secs = 86400
//! clock_skew_secs = 60
//!
//! [[images]]
//! name = "cocoon-worker 0.1.0"
//! mrtd = "91eb2b44…"                   # 96 hex digits
//! rtmr = ["…", "…", "…", "…"]          # optional: RTMR0–3, 96 hex digits each
//!
//! [[images]]                           # or: the whole image by one hash
//! name = "cocoon-worker 0.1.1"
//! image_hash = "…"                     # SHA-384(MRTD ‖ RTMR0‖…‖RTMR3), 96 hex digits
//!
//! [snp]                                # AMD SEV-SNP workers (none accepted without a measurement)
//! allowed_measurements = ["…"]         # launch measurements, 96 hex digits each
//! allowed_products = ["milan", "genoa", "turin"]   # default: all three
//! allowed_vmpls = [0]                  # default [0]
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }   # default all 0 (fmc: Turin)
//!
//! [gpu]
//! require = "none"                     # "none", "any" (a GPU) or "cc" (every GPU confidential)
//! allowed_architectures = []           # e.g. ["hopper"]; empty: any this build verifies
//! allowed_driver_versions = []         # e.g. ["550", "560.35.03"]; whole components; empty: any
//! ```
//!
//! A node configured with a governance key requires `FILE.sig` next to the policy: the hex
//! ed25519 signature of `POLICY_DOMAIN ‖ file bytes` by that key. Unsigned or wrongly signed
//! policies are refused.

use std::path::{Path, PathBuf};

use cocoon_protocol::attestation::gpu_policy::{GpuPolicy, GpuRequirement};
use cocoon_protocol::attestation::policy::{AllowedImage, AllowedImageHash, AttestationPolicy};
use cocoon_protocol::attestation::record::{GpuArchitecture, Measurement};

use super::snp::{SnpPolicy, SnpProduct, SnpTcb};
use libp2p::identity::ed25519;
use serde::Deserialize;

/// Domain tag of policy signatures.
pub const POLICY_DOMAIN: &[u8] = b"cocoon/attestation-policy/v1\0";

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// Not readable.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML for the schema, or a bad measurement.
    #[error("invalid policy {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A governance key is required but there is no signature file.
    #[error("policy {0} is not signed: {0}.sig is missing and a governance signature is required")]
    Unsigned(PathBuf),
    /// The signature does not verify under the governance key.
    #[error("policy {0} has an invalid governance signature")]
    BadSignature(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    allow_simulated: bool,
    #[serde(default = "default_tcb")]
    accepted_tcb_statuses: Vec<String>,
    #[serde(default = "day")]
    max_record_age_secs: u64,
    #[serde(default = "day")]
    max_validity_secs: u64,
    #[serde(default = "skew")]
    clock_skew_secs: u64,
    #[serde(default)]
    images: Vec<ImageToml>,
    #[serde(default)]
    snp: SnpToml,
    #[serde(default)]
    gpu: GpuToml,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnpToml {
    #[serde(default)]
    allowed_measurements: Vec<String>,
    allowed_products: Option<Vec<String>>,
    allowed_vmpls: Option<Vec<u32>>,
    #[serde(default)]
    min_tcb: TcbToml,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TcbToml {
    #[serde(default)]
    fmc: u8,
    #[serde(default)]
    bootloader: u8,
    #[serde(default)]
    tee: u8,
    #[serde(default)]
    snp: u8,
    #[serde(default)]
    microcode: u8,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GpuToml {
    #[serde(default)]
    require: Option<String>,
    #[serde(default)]
    allowed_architectures: Vec<String>,
    #[serde(default)]
    allowed_driver_versions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageToml {
    name: String,
    mrtd: Option<String>,
    rtmr: Option<[String; 4]>,
    image_hash: Option<String>,
}

fn default_tcb() -> Vec<String> {
    AttestationPolicy::default().accepted_tcb_statuses
}
fn day() -> u64 {
    24 * 3600
}
fn skew() -> u64 {
    60
}

fn measurement(what: &str, text: &str) -> Result<Measurement, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("{what}: not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("{what}: {} bytes, expected 48 (96 hex digits)", b.len()))
}

/// Parse policy TOML text (its SEV-SNP part: [`parse_policies`]).
pub fn parse_policy(text: &str) -> Result<AttestationPolicy, String> {
    parse_policies(text).map(|(policy, _)| policy)
}

/// Parse policy TOML text: the attestation policy and the SEV-SNP policy.
pub fn parse_policies(text: &str) -> Result<(AttestationPolicy, SnpPolicy), String> {
    let raw: PolicyToml = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let snp = snp_policy(raw.snp)?;
    let gpu = gpu_policy(raw.gpu)?;
    let (mut images, mut hashes) = (Vec::new(), Vec::new());
    for image in raw.images {
        let mrtd = match (&image.mrtd, &image.image_hash) {
            (None, Some(hash)) if image.rtmr.is_none() => {
                let hash = measurement(&format!("image {:?} image_hash", image.name), hash)?;
                hashes.push(AllowedImageHash { name: image.name, hash });
                continue;
            }
            (Some(mrtd), None) => measurement(&format!("image {:?} mrtd", image.name), mrtd)?,
            _ => {
                return Err(format!(
                    "image {:?}: give either mrtd (and optionally rtmr) or image_hash",
                    image.name
                ));
            }
        };
        let rtmr = match image.rtmr {
            None => None,
            Some(r) => {
                let m = |i: usize| measurement(&format!("image {:?} rtmr[{i}]", image.name), &r[i]);
                Some([m(0)?, m(1)?, m(2)?, m(3)?])
            }
        };
        images.push(AllowedImage { name: image.name, mrtd, rtmr });
    }
    let policy = AttestationPolicy {
        allowed_images: images,
        allowed_image_hashes: hashes,
        accepted_tcb_statuses: raw.accepted_tcb_statuses,
        max_record_age_secs: raw.max_record_age_secs,
        max_validity_secs: raw.max_validity_secs,
        clock_skew_secs: raw.clock_skew_secs,
        allow_simulated: raw.allow_simulated,
        gpu,
    };
    Ok((policy, snp))
}

fn snp_policy(raw: SnpToml) -> Result<SnpPolicy, String> {
    let defaults = SnpPolicy::default();
    let allowed_measurements = raw
        .allowed_measurements
        .iter()
        .enumerate()
        .map(|(i, m)| measurement(&format!("snp.allowed_measurements[{i}]"), m))
        .collect::<Result<_, _>>()?;
    let allowed_products = match raw.allowed_products {
        None => defaults.allowed_products,
        Some(names) => names
            .iter()
            .map(|n| {
                SnpProduct::from_name(n).ok_or_else(|| format!("snp.allowed_products: unknown product {n:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let t = raw.min_tcb;
    Ok(SnpPolicy {
        min_tcb: SnpTcb {
            fmc: t.fmc,
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        },
        allowed_vmpls: raw.allowed_vmpls.unwrap_or(defaults.allowed_vmpls),
        allow_debug: false,
        allowed_measurements,
        allowed_products,
    })
}

fn gpu_policy(raw: GpuToml) -> Result<GpuPolicy, String> {
    let require = match raw.require.as_deref() {
        None => GpuRequirement::None,
        Some(name) => GpuRequirement::from_name(name)
            .ok_or_else(|| format!("gpu.require: {name:?} is not \"none\", \"any\" or \"cc\""))?,
    };
    let allowed_architectures = raw
        .allowed_architectures
        .iter()
        .map(|n| {
            GpuArchitecture::from_name(n).ok_or_else(|| format!("gpu.allowed_architectures: unknown {n:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(GpuPolicy { require, allowed_architectures, allowed_driver_versions: raw.allowed_driver_versions })
}

/// Load a policy file; with `governance`, require a valid `FILE.sig` by that key.
pub fn load_policy(
    path: &Path,
    governance: Option<&ed25519::PublicKey>,
) -> Result<AttestationPolicy, PolicyFileError> {
    load_policies(path, governance).map(|(policy, _)| policy)
}

/// [`load_policy`], with the file's SEV-SNP policy.
pub fn load_policies(
    path: &Path,
    governance: Option<&ed25519::PublicKey>,
) -> Result<(AttestationPolicy, SnpPolicy), PolicyFileError> {
    let bytes =
        std::fs::read(path).map_err(|source| PolicyFileError::Read { path: path.to_owned(), source })?;
    if let Some(key) = governance {
        let sig_path = PathBuf::from(format!("{}.sig", path.display()));
        let sig_text =
            std::fs::read_to_string(&sig_path).map_err(|_| PolicyFileError::Unsigned(path.to_owned()))?;
        let signature =
            hex::decode(sig_text.trim()).map_err(|_| PolicyFileError::BadSignature(path.to_owned()))?;
        if !key.verify(&signing_input(&bytes), &signature) {
            return Err(PolicyFileError::BadSignature(path.to_owned()));
        }
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| PolicyFileError::Parse { path: path.to_owned(), message: "not UTF-8".into() })?;
    parse_policies(&text).map_err(|message| PolicyFileError::Parse { path: path.to_owned(), message })
}

/// The bytes a governance key signs for a policy file's contents.
pub fn signing_input(policy_bytes: &[u8]) -> Vec<u8> {
    [POLICY_DOMAIN, policy_bytes].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
allow_simulated = true
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]

[[images]]
name = "sample"
mrtd = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
"#;

    #[test]
    fn parses_images_and_defaults() {
        let p = parse_policy(POLICY).unwrap();
        assert!(p.allow_simulated);
        assert_eq!(p.allowed_images.len(), 1);
        assert_eq!(hex::encode(p.allowed_images[0].mrtd)[..8], *"91eb2b44");
        assert_eq!(p.max_record_age_secs, 86_400);
        assert!(parse_policy("").unwrap().allowed_images.is_empty());
        assert!(!parse_policy("").unwrap().allow_simulated);
    }

    #[test]
    fn bad_measurements_and_unknown_keys_are_named() {
        let err = parse_policy("[[images]]\nname = \"x\"\nmrtd = \"abcd\"\n").unwrap_err();
        assert!(err.contains("image \"x\" mrtd") && err.contains("2 bytes"), "{err}");
        let err = parse_policy("allow_simulatd = true\n").unwrap_err();
        assert!(err.contains("allow_simulatd"), "{err}");
        let both =
            format!("[[images]]\nname = \"y\"\nmrtd = \"{0}\"\nimage_hash = \"{0}\"\n", "ab".repeat(48));
        assert!(parse_policy(&both).unwrap_err().contains("either mrtd"));
        assert!(parse_policy("[[images]]\nname = \"z\"\n").unwrap_err().contains("either mrtd"));
    }

    #[test]
    fn sev_snp_and_gpu_sections() {
        let text = format!(
            "[snp]\nallowed_measurements = [\"{}\"]\nallowed_products = [\"Genoa\"]\n\
             min_tcb = {{ snp = 8, microcode = 115 }}\n[gpu]\nrequire = \"cc\"\n\
             allowed_architectures = [\"hopper\"]\nallowed_driver_versions = [\"550\"]\n",
            "ab".repeat(48)
        );
        let (policy, snp) = parse_policies(&text).unwrap();
        assert_eq!(snp.allowed_measurements, vec![[0xAB; 48]]);
        assert_eq!(snp.allowed_products, vec![SnpProduct::Genoa]);
        assert_eq!((snp.min_tcb.snp, snp.min_tcb.microcode, snp.min_tcb.bootloader), (8, 115, 0));
        assert_eq!(snp.allowed_vmpls, vec![0]);
        assert_eq!(policy.gpu.require, GpuRequirement::Cc);
        assert_eq!(policy.gpu.allowed_architectures, vec![GpuArchitecture::Hopper]);
        assert_eq!(policy.gpu.allowed_driver_versions, vec!["550".to_owned()]);
        let (default, default_snp) = parse_policies("").unwrap();
        assert_eq!(default.gpu, GpuPolicy::default());
        assert!(default_snp.allowed_measurements.is_empty(), "no SEV-SNP image accepted by default");
        assert!(parse_policies("[gpu]\nrequire = \"always\"\n").unwrap_err().contains("gpu.require"));
        assert!(parse_policies("[snp]\nallowed_products = [\"naples\"]\n").unwrap_err().contains("naples"));
    }

    #[test]
    fn images_may_be_given_by_hash() {
        let p = parse_policy(&format!("[[images]]\nname = \"h\"\nimage_hash = \"{}\"\n", "cd".repeat(48)))
            .unwrap();
        assert!(p.allowed_images.is_empty());
        assert_eq!(p.allowed_image_hashes, vec![AllowedImageHash { name: "h".into(), hash: [0xCD; 48] }]);
    }

    #[test]
    fn governance_signature_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, POLICY).unwrap();
        let governance = ed25519::Keypair::generate();
        let key = governance.public();
        assert!(load_policy(&path, None).is_ok(), "no governance key: unsigned is fine");
        assert!(matches!(load_policy(&path, Some(&key)), Err(PolicyFileError::Unsigned(_))));

        let sig_path = dir.path().join("policy.toml.sig");
        std::fs::write(&sig_path, hex::encode(governance.sign(&signing_input(POLICY.as_bytes())))).unwrap();
        assert!(load_policy(&path, Some(&key)).unwrap().allow_simulated);

        let other = ed25519::Keypair::generate();
        std::fs::write(&sig_path, hex::encode(other.sign(&signing_input(POLICY.as_bytes())))).unwrap();
        assert!(matches!(load_policy(&path, Some(&key)), Err(PolicyFileError::BadSignature(_))));

        // A valid signature over other contents does not cover an edited file.
        std::fs::write(&sig_path, hex::encode(governance.sign(&signing_input(POLICY.as_bytes())))).unwrap();
        std::fs::write(&path, POLICY.replace("allow_simulated = true", "allow_simulated = false")).unwrap();
        assert!(matches!(load_policy(&path, Some(&key)), Err(PolicyFileError::BadSignature(_))));
    }
}
