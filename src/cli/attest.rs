//! `cocoon attest …`: produce and inspect TDX quotes from the command line.
//!
//! `verify` checks a quote with DCAP against collateral at a given time and, with `--policy`, the
//! policy's evidence rules (image, TCB status, simulated). Collateral comes from `--collateral
//! FILE` (fully offline) or is fetched from a PCCS (`--pccs URL`, Intel's PCS by default) and can
//! be saved with `--save-collateral FILE` for later offline runs. A bare quote has no record, so the key
//! binding and record freshness are not checked here; nodes check those on every record.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cocoon_protocol::attestation::policy::check_evidence;
use libp2p::identity::ed25519;

use crate::attestation::pccs::{INTEL_PCS_URL, PccsClient, Platform};
use crate::attestation::policy_file::load_policy;
use crate::attestation::provider::{ConfigfsTsm, TeeProvider};
use crate::attestation::tdx::{Collateral, parse_collateral, verify_quote};
use cocoon_protocol::attestation::record::{GpuEvidence, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;

/// `cocoon attest …`
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Generate a TDX quote through configfs-tsm (inside a TD; needs root).
    Quote(QuoteArgs),
    /// Verify a TDX quote with DCAP and print its measurements; exits 1 if it is refused.
    Verify(VerifyArgs),
    /// Print the attestation record this node publishes (worker role): the running node's, asked
    /// of its admin endpoint (`GET /attestation/record` at the address the node recorded in its
    /// data directory, else `admin.listen`); if none answers with one, a record built now with
    /// fresh evidence from this node's TEE.
    Show(super::NodeArgs),
}

/// `cocoon attest quote`
#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// Where to write the raw quote.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The 64 bytes of report data, as 128 hex digits (default: zeros).
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
    /// configfs-tsm report directory.
    #[arg(long, default_value = crate::attestation::provider::CONFIGFS_TSM_REPORT, value_name = "DIR")]
    pub configfs: PathBuf,
}

/// `cocoon attest verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The raw quote.
    #[arg(long, value_name = "FILE")]
    pub quote: PathBuf,
    /// Collateral JSON (Intel TCB info, QE identity, CRLs) for the quote's platform; verification
    /// then runs fully offline. Without it, collateral is fetched from `--pccs`.
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// PCCS (or Intel PCS) to fetch collateral from when `--collateral` is not given.
    #[arg(long, value_name = "URL", default_value = INTEL_PCS_URL, conflicts_with = "collateral")]
    pub pccs: String,
    /// Write the fetched collateral here (JSON, usable with `--collateral`).
    #[arg(long, value_name = "FILE", conflicts_with = "collateral")]
    pub save_collateral: Option<PathBuf>,
    /// Attestation policy (TOML) whose evidence rules to apply.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Require the policy to be signed by this governance key (64 hex digits, ed25519).
    #[arg(long, value_name = "HEX", requires = "policy")]
    pub governance_key: Option<String>,
    /// Verify as of this time (Unix seconds; default now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
}

/// Run an `attest` subcommand.
pub fn run(command: AttestCommand) -> anyhow::Result<()> {
    match command {
        AttestCommand::Quote(args) => quote(args),
        AttestCommand::Verify(args) => verify(args),
        AttestCommand::Show(args) => show(&args),
    }
}

fn quote(args: QuoteArgs) -> anyhow::Result<()> {
    let mut report_data = [0u8; 64];
    if let Some(hex_text) = &args.report_data {
        let bytes = hex::decode(hex_text.trim()).context("--report-data is not hex")?;
        if bytes.len() != 64 {
            bail!("--report-data must be 64 bytes (128 hex digits), got {}", bytes.len());
        }
        report_data.copy_from_slice(&bytes);
    }
    let TeeEvidence::Tdx { quote } = ConfigfsTsm::new(&args.configfs).evidence(&report_data)? else {
        bail!("configfs-tsm produced no TDX quote");
    };
    write_output(&args.out, &quote)?;
    println!("wrote a {}-byte TDX quote to {}", quote.len(), args.out.display());
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let quote =
        std::fs::read(&args.quote).with_context(|| format!("cannot read {}", args.quote.display()))?;
    let collateral = match &args.collateral {
        Some(path) => {
            let json = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            parse_collateral(&json)?
        }
        None => fetch_collateral(&quote, &args)?,
    };
    let now = match args.at {
        Some(at) => at,
        None => SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs(),
    };
    let claims = verify_quote(&quote, &collateral, now).context("verdict: REJECTED")?;
    println!("quote:        verifies (DCAP, Intel root CA) at {now}");
    println!("tcb status:   {}", claims.tcb_status);
    println!("mrtd:         {}", hex::encode(claims.mrtd));
    for (i, rtmr) in claims.rtmr.iter().enumerate() {
        println!("rtmr{i}:        {}", hex::encode(rtmr));
    }
    println!("image hash:   {}", hex::encode(claims.image_hash()));
    println!("report data:  {}", hex::encode(claims.report_data));
    let Some(policy_path) = &args.policy else {
        println!("verdict:      ACCEPTED (signature chain and collateral only; no --policy given)");
        return Ok(());
    };
    let governance = match &args.governance_key {
        None => None,
        Some(hex_key) => {
            let bytes = hex::decode(hex_key.trim()).context("--governance-key is not hex")?;
            Some(
                ed25519::PublicKey::try_from_bytes(&bytes)
                    .context("--governance-key is not an ed25519 key")?,
            )
        }
    };
    let policy = load_policy(policy_path, governance.as_ref())?;
    check_evidence(&policy, &claims).context("verdict: REJECTED by policy")?;
    println!("verdict:      ACCEPTED by policy {}", policy_path.display());
    Ok(())
}

/// The record the node running with this configuration publishes, from its admin endpoint.
fn running_record(admin: std::net::SocketAddr) -> Option<SignedRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let bytes = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let response = client.get(format!("http://{admin}/attestation/record")).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok()
    })?;
    SignedRecord::open(&bytes).ok()
}

fn fetch_collateral(quote: &[u8], args: &VerifyArgs) -> anyhow::Result<Collateral> {
    let platform = Platform::of_quote(quote)?;
    let client = PccsClient::new(&args.pccs, Duration::from_secs(30))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let collateral = runtime
        .block_on(client.fetch(&platform))
        .with_context(|| format!("cannot fetch collateral for {} from {}", platform.key(), args.pccs))?;
    println!("collateral:   {} from {}", platform.key(), client.base_url());
    if let Some(path) = &args.save_collateral {
        let json = serde_json::to_vec_pretty(&collateral)?;
        write_output(path, &json)?;
        println!("saved:        {}", path.display());
    }
    Ok(collateral)
}

/// Write a file the user named, creating its directory if it does not exist yet.
fn write_output(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::dirs::write_file(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn show(args: &super::NodeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    if !config.has_role(crate::config::Role::Worker) {
        bail!(
            "this node is not a worker (roles {:?}): it publishes no attestation record",
            config.node.roles
        );
    }
    let admin = super::status::admin_address(&config).ok();
    let signed = match admin.and_then(running_record) {
        Some(signed) => {
            let admin = admin.map(|a| a.to_string()).unwrap_or_default();
            println!("source:         the running node (admin endpoint {admin})");
            signed
        }
        None => {
            println!(
                "source:         built now (no running node answered; a running node publishes its own)"
            );
            let identity = crate::store::load_or_create_identity(&config.node.data_dir)?;
            let store = crate::store::Store::open(&config.node.data_dir).ok();
            let hashes = store.as_ref().and_then(|s| s.model_hashes().ok());
            let offers = crate::inference::setup::offers(&config, hashes.as_ref())?;
            let own = crate::attestation::setup::own_record(&config, &identity, offers)?
                .context("this node is not a worker: it publishes no attestation record")?;
            own.build(crate::clock::unix_now())?
        }
    };
    let r = signed.record();
    println!("peer id:        {}", r.peer_id);
    println!("noise key:      {}", hex::encode(r.noise_static));
    println!("payout address: {}", r.payout_address);
    println!("issued at:      {}", r.issued_at);
    println!("expires at:     {}", r.expires_at);
    for offer in &r.offers {
        println!(
            "offer:          {} ({} / {} nanotons per 1k prompt / completion tokens, context {}, {} at once)",
            offer.model_id,
            offer.price_prompt_per_1k,
            offer.price_completion_per_1k,
            offer.context_length,
            offer.max_concurrent
        );
    }
    if r.offers.is_empty() {
        println!("offers:         none");
    }
    match &r.evidence {
        TeeEvidence::Tdx { quote } => println!("evidence:       TDX quote, {} bytes", quote.len()),
        TeeEvidence::SevSnp(snp) => println!(
            "evidence:       SEV-SNP report, {} bytes{}",
            snp.report.len(),
            if snp.vcek.is_empty() {
                " (VCEK from AMD's key distribution service)"
            } else {
                ", with its VCEK"
            }
        ),
        TeeEvidence::Simulated(sim) => {
            println!("evidence:       SIMULATED (development only; strict nodes refuse it)");
            println!("simulator key:  {}", hex::encode(sim.signer));
        }
    }
    for (index, gpu) in r.gpus.iter().enumerate() {
        let kind = match gpu {
            GpuEvidence::Nvidia(nv) => {
                format!("NVIDIA confidential computing, report {} bytes", nv.report.len())
            }
            GpuEvidence::Simulated(_) => "SIMULATED (development only; strict nodes refuse it)".into(),
            GpuEvidence::Unattested { .. } => "not in confidential-computing mode (no evidence)".into(),
        };
        println!("gpu {index}:          {}: {kind}", gpu.label());
    }
    println!(
        "report data:    {}",
        hex::encode(cocoon_protocol::attestation::binding::expected_report_data(r))
    );
    println!("record size:    {} bytes signed", signed.encode().len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_and_collateral_files_go_into_directories_that_do_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/quotes/td.bin");
        write_output(&path, b"quote").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"quote");
        let err = write_output(&path.join("below-a-file"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
    }
}
