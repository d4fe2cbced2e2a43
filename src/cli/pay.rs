//! `cocoon wallet ...` and `cocoon channel ...`: the node's TON wallet and its payment channels
//! from the command line.
//!
//! The chain is reached through `--chain-url` (a TON Center API v2 endpoint: toncenter.com, a
//! devnet, or `cocoon chain serve`), which overrides the configuration, or else through the
//! node's `[payments]` chain. Channel records come from the node's store, which a running node
//! holds locked, so commands that need the store ask for the node to be stopped (`channel list`
//! asks the running node's admin endpoint instead). Amounts are printed and parsed in TON with
//! nanoton precision (`1.500000000 TON`). The channel commands live in `pay_channel.rs`; this
//! file has the wallet commands and what both share: connecting, opening the store, sending from
//! the wallet and waiting for the channel to show the result.

#[path = "pay_channel.rs"]
mod channel;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use cocoon_protocol::payments::amount::{format_ton, parse_ton};
use cocoon_protocol::payments::channel::{ChannelState, body_op, exit};
use tycho_types::models::StdAddr;

pub use channel::{ChannelCommand, run_channel};

use super::NodeArgs;
use crate::chain::toncenter::Toncenter;
use crate::chain::wallet::{Transfer, Wallet};
use crate::chain::{AccountStatus, SharedChain, friendly, parse_address};
use crate::config::Config;
use crate::payments::{contract, setup};
use crate::store::{PaymentBook, Store, StoreError};

/// `cocoon wallet ...`
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Print the node's wallet address: user-friendly non-bounceable (`UQ…`), then raw (`0:…`).
    /// Creates the wallet key if absent; needs no chain.
    Address(NodeArgs),
    /// Print the wallet's status and balance on chain.
    Balance(PayArgs),
}

/// The node's configuration and where to reach the chain.
#[derive(Debug, Args, Clone)]
pub struct PayArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// TON Center API v2 base URL (e.g. http://127.0.0.1:8081/api/v2 from `cocoon chain serve`,
    /// or https://testnet.toncenter.com/api/v2); overrides the configuration's `payments.chain`.
    #[arg(long, value_name = "URL")]
    pub chain_url: Option<String>,
    /// API key sent with every `--chain-url` request (`X-API-Key`).
    #[arg(long, value_name = "KEY", requires = "chain_url")]
    pub chain_api_key: Option<String>,
}

/// Run a `cocoon wallet` subcommand.
pub async fn run_wallet(cmd: WalletCommand) -> anyhow::Result<()> {
    match cmd {
        WalletCommand::Address(node) => {
            let config = node.resolve()?;
            let wallet = load_wallet(&config)?;
            println!("{}", friendly(wallet.address(), false));
            println!("{}", wallet.address());
            Ok(())
        }
        WalletCommand::Balance(args) => {
            let ctx = args.connect()?;
            let account = ctx.wallet_account().await?;
            let status = match account.status {
                AccountStatus::Active => "active",
                AccountStatus::Uninit => "uninit (deployed by its first transfer)",
                AccountStatus::Nonexistent => "nonexistent (never funded)",
                AccountStatus::Frozen => "frozen",
            };
            row("wallet", friendly(ctx.wallet.address(), false));
            row("status", status);
            row("balance", ton(account.balance));
            row("chain", &ctx.source);
            Ok(())
        }
    }
}

/// A connected node: its configuration, the chain, its wallet.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub config: Config,
    pub chain: SharedChain,
    pub wallet: Wallet,
    /// Which chain, for messages.
    pub source: String,
}

impl PayArgs {
    /// Resolve the configuration and open the chain and the wallet.
    pub(crate) fn connect(&self) -> anyhow::Result<Ctx> {
        let config = self.node.resolve()?;
        let (chain, source): (SharedChain, String) = match &self.chain_url {
            Some(url) => {
                let timeout = Duration::from_secs(config.payments.toncenter_timeout_secs);
                let chain = Toncenter::new(url, self.chain_api_key.clone(), timeout)
                    .with_context(|| format!("--chain-url {url}"))?;
                (Arc::new(chain), format!("toncenter at {url}"))
            }
            None => {
                let chain = setup::open_chain(&config, None)
                    .map_err(|e| anyhow!("cannot open the configured chain: {e}"))?
                    .ok_or_else(|| {
                        anyhow!(
                            "payments are off in this node's configuration: pass --chain-url URL \
                             (a TON Center API v2 endpoint) or set payments.chain"
                        )
                    })?;
                let source = format!("{} ({:?} in the configuration)", chain.name(), config.payments.chain);
                (chain, source)
            }
        };
        let wallet = load_wallet(&config)?;
        Ok(Ctx { config, chain, wallet, source })
    }
}

impl Ctx {
    /// The wallet's account.
    pub async fn wallet_account(&self) -> anyhow::Result<crate::chain::AccountInfo> {
        self.chain
            .account(self.wallet.address())
            .await
            .with_context(|| format!("cannot read the wallet's account from the chain ({})", self.source))
    }

    /// The channel's on-chain state (`None`: not deployed).
    pub async fn state(&self, channel: &StdAddr) -> anyhow::Result<Option<ChannelState>> {
        contract::state(self.chain.as_ref(), channel)
            .await
            .with_context(|| format!("cannot read channel {} ({})", friendly(channel, true), self.source))
    }

    /// The chain's current time.
    pub async fn now(&self) -> anyhow::Result<u64> {
        self.chain.now().await.with_context(|| format!("cannot read the chain's time ({})", self.source))
    }

    /// Send `transfer` (the `what`) from the wallet, after checking the wallet can pay for it.
    pub async fn send(&self, transfer: Transfer, what: &str) -> anyhow::Result<()> {
        self.ensure_funds(&transfer, what).await?;
        self.wallet
            .send(self.chain.as_ref(), &[transfer])
            .await
            .with_context(|| format!("cannot send the {what} from the wallet ({})", self.source))?;
        Ok(())
    }

    /// Fail unless the wallet holds at least the value `transfer` (the `what`) attaches.
    pub async fn ensure_funds(&self, transfer: &Transfer, what: &str) -> anyhow::Result<()> {
        let account = self.wallet_account().await?;
        if account.balance < transfer.value {
            bail!(
                "the wallet {} holds {}; the {what} needs {} plus gas: fund the wallet first",
                friendly(self.wallet.address(), false),
                ton(account.balance),
                ton(transfer.value)
            );
        }
        Ok(())
    }

    /// Poll `channel` until `done` holds on its state (`None`: not deployed), the channel refuses
    /// the wallet's message with `query_id`, or `payments.confirm_timeout_secs` pass.
    pub async fn await_channel(
        &self,
        channel: &StdAddr,
        query_id: u64,
        what: &str,
        done: impl Fn(Option<&ChannelState>) -> bool,
    ) -> anyhow::Result<Option<ChannelState>> {
        let limit = Duration::from_secs(self.config.payments.confirm_timeout_secs);
        let deadline = tokio::time::Instant::now() + limit;
        let mut wait = Duration::from_millis(50);
        loop {
            let state = self.state(channel).await?;
            if done(state.as_ref()) {
                return Ok(state);
            }
            if let Some(code) = self.refusal(channel, query_id).await? {
                bail!("the channel contract refused the {what}: {} (exit code {code})", exit::name(code));
            }
            if tokio::time::Instant::now() + wait > deadline {
                bail!(
                    "the {what} did not show on channel {} within {}s (check `cocoon wallet balance`)",
                    friendly(channel, true),
                    limit.as_secs()
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// The exit code of a failed transaction of `channel` caused by the wallet's `query_id`.
    async fn refusal(&self, channel: &StdAddr, query_id: u64) -> anyhow::Result<Option<i32>> {
        let txs = self
            .chain
            .transactions(channel, 16)
            .await
            .with_context(|| format!("cannot read the channel's transactions ({})", self.source))?;
        Ok(txs.iter().find_map(|tx| {
            let msg = tx.in_msg.as_ref()?;
            let ours = msg.src.as_ref() == Some(self.wallet.address())
                && body_op(&msg.body).is_some_and(|(_, q)| q == query_id);
            (ours && !tx.success).then(|| tx.exit_code.unwrap_or(-1))
        }))
    }
}

/// The node's wallet (creating its key if absent).
fn load_wallet(config: &Config) -> anyhow::Result<Wallet> {
    setup::wallet(config).map_err(|e| anyhow!("cannot load the node's wallet key: {e}"))
}

/// The node's payment records; a clear error when a running node holds the store.
pub(crate) fn open_book(config: &Config) -> anyhow::Result<PaymentBook> {
    try_open_book(config)?.ok_or_else(|| {
        anyhow!(
            "the store in {} is locked by a running cocoon node: stop the node to read or change its \
             payment records from the command line",
            config.node.data_dir.display()
        )
    })
}

/// The node's payment records, or `None` while a running node holds the store.
pub(crate) fn try_open_book(config: &Config) -> anyhow::Result<Option<PaymentBook>> {
    match Store::open(&config.node.data_dir) {
        Ok(store) => Ok(Some(store.payments().context("cannot open the node's payment records")?)),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("cannot open the node's store")),
    }
}

/// `1.500000000 TON`.
pub(crate) fn ton(nanotons: u64) -> String {
    format!("{} TON", format_ton(nanotons))
}

/// One `label  value` line.
pub(crate) fn row(label: &str, value: impl std::fmt::Display) {
    println!("{label:<14}{value}");
}

/// `unix 1800000000 (in 1d 0h 0m 0s)`, relative to the chain's `now`.
pub(crate) fn when(at: u64, now: u64) -> String {
    if at <= now {
        return format!("unix {at} (passed)");
    }
    let s = at - now;
    format!("unix {at} (in {}d {}h {}m {}s)", s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60)
}

/// Clap parser of addresses.
pub(crate) fn address_arg(text: &str) -> Result<StdAddr, String> {
    parse_address(text).map_err(|e| e.to_string())
}

/// Clap parser of TON amounts.
pub(crate) fn ton_arg(text: &str) -> Result<u64, String> {
    parse_ton(text).map_err(|e| e.to_string())
}
