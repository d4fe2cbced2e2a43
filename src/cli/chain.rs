//! `cocoon chain ...`: run an embedded TON chain (`LocalChain`) behind TON Center's HTTP API v2
//! (the REST routes cocoon uses, and JSON-RPC at `/api/v2/jsonRPC` for the official TON SDKs), for
//! devnets, tests and tools that want the chain in a process of its own.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use tycho_types::models::StdAddr;

use crate::chain::local::{Clock, LocalChain};
use crate::chain::{friendly, parse_address};

/// `cocoon chain ...`
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Serve an embedded chain kept in a state file over the Toncenter HTTP API v2 until SIGINT
    /// or SIGTERM; prints `chain listening on http://ADDR/api/v2` once it accepts requests.
    Serve(ServeArgs),
}

/// `cocoon chain serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The chain's state file (created, with its directory, if absent; every change is written
    /// back).
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// Address to listen on; port 0 lets the OS choose (the printed line tells which).
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Require this key from clients (`X-API-Key` header or `api_key` query parameter).
    #[arg(long, env = "COCOON_CHAIN_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Credit an address with TON out of thin air at start-up (repeatable), e.g.
    /// `0:ab..=1000` or `EQ...=2.5`. Credited again on every start.
    #[arg(long = "fund", value_name = "ADDR=TON", value_parser = parse_funding)]
    pub fund: Vec<Funding>,
    /// Freeze the chain's clock at this unix time instead of following the wall clock.
    #[arg(long, value_name = "UNIX")]
    pub manual_clock: Option<u32>,
}

/// One `--fund ADDR=TON`.
#[derive(Debug, Clone)]
pub struct Funding {
    /// Who.
    pub address: StdAddr,
    /// How much, nanotons.
    pub amount: u64,
}

fn parse_funding(text: &str) -> Result<Funding, String> {
    let (addr, amount) = text.rsplit_once('=').ok_or_else(|| format!("{text:?} is not ADDR=TON"))?;
    let address = parse_address(addr).map_err(|e| e.to_string())?;
    let amount = cocoon_protocol::payments::amount::parse_ton(amount).map_err(|e| e.to_string())?;
    Ok(Funding { address, amount })
}

/// Run a `cocoon chain` subcommand.
pub async fn run(cmd: ChainCommand) -> anyhow::Result<()> {
    match cmd {
        ChainCommand::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock = args.manual_clock.map_or(Clock::Wall { offset: 0 }, Clock::Manual);
    let chain = LocalChain::open(&args.state, clock)
        .with_context(|| format!("cannot open the chain state {}", args.state.display()))?;
    for f in &args.fund {
        chain.fund(&f.address, f.amount).with_context(|| format!("cannot fund {}", f.address))?;
        tracing::info!(address = %friendly(&f.address, false), nanotons = f.amount, "funded");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("listening socket has no address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "chain listening on http://{addr}/api/v2").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    crate::chain::serve::serve(Arc::new(chain), listener, args.api_key, crate::node::wait_for_signal())
        .await
        .context("chain API server failed")
}
