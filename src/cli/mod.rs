//! The `cocoon` command line (clap). `main.rs` only calls [`main`].
//!
//! `attest` and `model` live in their own submodules.
//!
//! Every node flag can also be given as a `COCOON_*` environment variable (shown in `--help`);
//! flags win over variables, which win over the config file, which wins over defaults.

pub mod attest;
pub mod chain;
pub mod model;
pub mod pay;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::config::{Config, KadMode, LogFormat, Overrides, Role};
use crate::network::TransportKind;
use crate::node::{self, Node};

/// cocoon: a peer-to-peer network for confidential AI inference.
#[derive(Debug, Parser)]
#[command(name = "cocoon", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a peer node until SIGINT or SIGTERM, then shut down gracefully.
    Node(NodeArgs),
    /// Print this node's peer id (creating the identity if absent).
    Id(IdArgs),
    /// Inspect the configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Produce or verify TDX attestation evidence.
    Attest {
        /// What to do.
        #[command(subcommand)]
        command: attest::AttestCommand,
    },
    /// Get the development model, compute model ids.
    Model {
        /// What to do.
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Run an embedded TON chain behind the Toncenter HTTP API v2 (for devnets and tests).
    Chain {
        /// What to do.
        #[command(subcommand)]
        command: chain::ChainCommand,
    },
    /// The node's TON wallet: its address and balance.
    Wallet {
        /// What to do.
        #[command(subcommand)]
        command: pay::WalletCommand,
    },
    /// The node's payment channels: list, status, open, top up, claim, close, forgive.
    Channel {
        /// What to do.
        #[command(subcommand)]
        command: pay::ChannelCommand,
    },
    /// What a running node is and what it earned and spent, in TON (its admin endpoint, found
    /// from its data directory); `--json` for scripts.
    Status(status::StatusArgs),
    /// Run a local network on loopback in one process: a bootstrap node with a well-known
    /// development key at 127.0.0.1:<port> (listed in bootstrap/local.txt) and a few peer nodes.
    Devnet(crate::devnet::DevnetArgs),
}

/// `cocoon config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < file < COCOON_* env < flags) as TOML.
    Dump(NodeArgs),
}

/// Options shared by everything that needs a node configuration.
#[derive(Debug, Args, Clone, Default)]
pub struct NodeArgs {
    /// TOML configuration file (see docs/operator.md for every key and its default).
    #[arg(long, env = "COCOON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Roles of this node, comma-separated.
    #[arg(long = "role", env = "COCOON_ROLE", value_delimiter = ',', value_name = "ROLE")]
    pub roles: Vec<Role>,
    /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1.
    #[arg(long, env = "COCOON_LISTEN", value_delimiter = ',', value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peer: a multiaddr ending in /p2p/<peer id>, or a path to a bootstrap list file
    /// (repeatable). Replaces the config file's bootstrap peers and files.
    #[arg(long, env = "COCOON_BOOTSTRAP", value_delimiter = ',', value_name = "MULTIADDR|FILE")]
    pub bootstrap: Vec<String>,
    /// Directory for the identity key and the store.
    #[arg(long, env = "COCOON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the admin endpoint (/health, /peers, /metrics, /attestation/record, /payments);
    /// keep it on loopback. `channel list` and `attest show` ask a running node there.
    #[arg(long, env = "COCOON_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Address of the OpenAI-compatible API (client role); keep it on loopback.
    #[arg(long, env = "COCOON_API_LISTEN", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Kademlia mode: auto, server or client.
    #[arg(long, env = "COCOON_KAD_MODE", value_name = "MODE")]
    pub kad_mode: Option<KadMode>,
    /// Log format: text or json.
    #[arg(long, env = "COCOON_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Accept workers whose attestation evidence is SIMULATED (no TEE; such a worker proves
    /// nothing): for development networks such as `cocoon devnet` only. Sets
    /// attestation.allow_simulated.
    #[arg(long, env = "COCOON_ALLOW_SIMULATED")]
    pub allow_simulated: bool,
}

/// `cocoon id`
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Directory for the identity key and the store.
    #[arg(long, env = "COCOON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (only `node.data_dir` is used).
    #[arg(long, env = "COCOON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl NodeArgs {
    /// The effective configuration: defaults < file < environment < flags.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        let mut overrides = Overrides {
            roles: self.roles.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            admin_listen: self.admin_listen,
            api_listen: self.api_listen,
            kad_mode: self.kad_mode,
            log_format: self.log_format,
            allow_simulated: self.allow_simulated,
            ..Overrides::default()
        };
        for entry in &self.bootstrap {
            if entry.starts_with('/') && !std::path::Path::new(entry).exists() {
                let addr: Multiaddr = entry.parse().with_context(|| {
                    format!("--bootstrap {entry}: not a valid multiaddr (and no such file)")
                })?;
                overrides.bootstrap_peers.push(addr);
            } else {
                overrides.bootstrap_files.push(PathBuf::from(entry));
            }
        }
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }
}

/// Entry point of the binary: parse arguments, run, map errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes (many error
/// types embed their source in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id(args) => {
            let mut config = Config::load(args.config.as_deref())?;
            if let Some(dir) = args.data_dir {
                config.node.data_dir = dir;
            }
            let key = crate::store::load_or_create_identity(&config.node.data_dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::Chain { command } => runtime()?.block_on(chain::run(command)),
        Command::Wallet { command } => runtime()?.block_on(pay::run_wallet(command)),
        Command::Channel { command } => runtime()?.block_on(pay::run_channel(command)),
        Command::Config { command: ConfigCommand::Dump(args) } => {
            print!("{}", args.resolve()?.to_toml()?);
            Ok(())
        }
        Command::Node(args) => {
            let config = args.resolve()?;
            crate::telemetry::init(&config.log);
            runtime()?.block_on(run_node(config))
        }
        Command::Attest { command } => attest::run(command),
        Command::Model { command } => model::run(command),
        Command::Devnet(args) => runtime()?.block_on(crate::devnet::run(args)),
        Command::Status(args) => runtime()?.block_on(status::run(args)),
    }
}

/// A start-up error, with the flag that moves an endpoint whose port is taken (a plain node is a
/// client whose API wants the port a running devnet already serves on, 8080).
fn explain_start(e: node::NodeError) -> anyhow::Error {
    let flag = match e.taken_endpoint() {
        Some(node::Endpoint::Api) => "--api-listen 127.0.0.1:PORT (or COCOON_API_LISTEN)",
        Some(node::Endpoint::Admin) => "--admin-listen 127.0.0.1:PORT (or COCOON_ADMIN_LISTEN)",
        None => return e.into(),
    };
    anyhow::anyhow!(
        "{e} (another process, perhaps another cocoon node or a running `cocoon devnet`, has it: choose \
         another address with {flag}; port 0 picks a free one)"
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

async fn run_node(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config, TransportKind::Tcp, None).await.map_err(explain_start)?;
    println!("{}", serde_json::to_string(&node.ready())?);
    node::wait_for_signal().await;
    node.shutdown().await?;
    Ok(())
}
