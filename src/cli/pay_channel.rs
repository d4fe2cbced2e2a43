//! `cocoon channel ...`: list the node's payment channels and the clients that owe it, show one's
//! on-chain state, and open, top up, claim on and close channels from the node's wallet. Every
//! operation waits (up to `payments.confirm_timeout_secs`) until the channel shows its effect, or
//! reports the contract's refusal.

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use cocoon_protocol::payments::channel::{ChannelParams, exit};
use cocoon_protocol::payments::ledger::ClientChannel;
use cocoon_protocol::payments::voucher::SignedVoucher;
use rand::RngCore;
use tycho_types::models::StdAddr;

use super::{NodeArgs, PayArgs, address_arg, open_book, row, ton, ton_arg, try_open_book, when};
use crate::chain::friendly;
use crate::clock::unix_now;
use crate::payments::contract;
use crate::store::{ClaimEntry, StoreError};

/// `cocoon channel ...`
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List every channel in the node's store (worker and client side) and the clients that owe
    /// it. While a running node holds the store locked, ask that node instead (its admin endpoint,
    /// at the address it recorded in its data directory, else `admin.listen`); an error if no
    /// endpoint answers there.
    List(NodeArgs),
    /// Show a channel's on-chain state and what the node's store knows about it.
    Status(AddressArgs),
    /// Deploy a new channel to a worker from the node's wallet, with a first deposit.
    Open(OpenArgs),
    /// Deposit more into a channel from the node's wallet.
    Topup(TopupArgs),
    /// (Worker) claim what the best stored voucher of a channel has not been paid yet.
    Claim(AddressArgs),
    /// (Client) close a channel. With a node running on the data directory, that node closes it
    /// cooperatively when the worker co-signs (one transaction, the deposit minus what was paid
    /// back at once) and otherwise starts the unilateral close; with none, the unilateral close
    /// is started from the wallet. With `--finish`, finish a unilateral close whose dispute
    /// window has passed (the remaining balance returns to the client's wallet).
    Close(CloseArgs),
    /// (Worker) forgive a client's unpaid requests so it is served again (reads and writes the
    /// store, which a running node holds locked).
    Forgive(ForgiveArgs),
}

/// A channel and how to reach the chain.
#[derive(Debug, Args)]
pub struct AddressArgs {
    /// The channel's address (raw `0:…` or user-friendly).
    #[arg(value_name = "ADDRESS", value_parser = address_arg)]
    pub address: StdAddr,
    #[command(flatten)]
    pub pay: PayArgs,
}

/// `cocoon channel open`
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The worker's ed25519 identity key: 64 hex digits, or its peer id (`12D3KooW…`).
    #[arg(long, value_name = "HEX32", value_parser = key_arg)]
    pub worker_key: [u8; 32],
    /// The worker's payout address (raw `0:…` or user-friendly).
    #[arg(long, value_name = "ADDR", value_parser = address_arg)]
    pub worker: StdAddr,
    /// First deposit, TON (e.g. 2.5).
    #[arg(long, value_name = "TON", value_parser = ton_arg)]
    pub deposit: u64,
    /// Dispute window, seconds (default: `payments.dispute_window_secs`).
    #[arg(long, value_name = "SECS")]
    pub window: Option<u32>,
    #[command(flatten)]
    pub pay: PayArgs,
}

/// `cocoon channel topup`
#[derive(Debug, Args)]
pub struct TopupArgs {
    /// The channel's address.
    #[arg(value_name = "ADDRESS", value_parser = address_arg)]
    pub address: StdAddr,
    /// Amount to deposit, TON.
    #[arg(long, value_name = "TON", value_parser = ton_arg)]
    pub amount: u64,
    #[command(flatten)]
    pub pay: PayArgs,
}

/// `cocoon channel close`
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The channel's address.
    #[arg(value_name = "ADDRESS", value_parser = address_arg)]
    pub address: StdAddr,
    /// Finish a started close after its dispute window instead of starting one.
    #[arg(long)]
    pub finish: bool,
    #[command(flatten)]
    pub pay: PayArgs,
}

/// `cocoon channel forgive`
#[derive(Debug, Args)]
pub struct ForgiveArgs {
    /// The client's ed25519 identity key: 64 hex digits, or its peer id (`12D3KooW…`).
    #[arg(value_name = "CLIENT", value_parser = key_arg)]
    pub client: [u8; 32],
    #[command(flatten)]
    pub node: NodeArgs,
}

fn forgive(args: &ForgiveArgs) -> anyhow::Result<()> {
    let config = args.node.resolve()?;
    let book = open_book(&config)?;
    let owed = book.debt(&args.client).context("cannot read the debt")?;
    if owed == 0 {
        println!("client {} owes nothing", hex::encode(args.client));
        return Ok(());
    }
    book.clear_debt(&args.client).context("cannot clear the debt")?;
    println!("forgave {} owed by client {}", ton(owed), hex::encode(args.client));
    Ok(())
}

fn key_arg(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if let Ok(peer) = text.parse::<libp2p::PeerId>() {
        return crate::payments::peer_key(&peer).ok_or_else(|| "peer id has no ed25519 key".into());
    }
    let bytes = hex::decode(text).map_err(|e| format!("not 64 hex digits nor a peer id: {e}"))?;
    <[u8; 32]>::try_from(bytes).map_err(|b| format!("{} bytes, an ed25519 key has 32", b.len()))
}

/// Run a `cocoon channel` subcommand.
pub async fn run_channel(cmd: ChannelCommand) -> anyhow::Result<()> {
    match cmd {
        ChannelCommand::List(node) => list(&node).await,
        ChannelCommand::Status(args) => status(args).await,
        ChannelCommand::Open(args) => open(args).await,
        ChannelCommand::Topup(args) => topup(args).await,
        ChannelCommand::Claim(args) => claim(args).await,
        ChannelCommand::Close(args) => close(args).await,
        ChannelCommand::Forgive(args) => forgive(&args),
    }
}

async fn list(node: &NodeArgs) -> anyhow::Result<()> {
    let config = node.resolve()?;
    let Some(book) = try_open_book(&config)? else {
        // A running node holds the store: ask its admin endpoint (the address it recorded in its
        // data directory) instead.
        let locked = || open_book(&config).err().unwrap_or_else(|| anyhow!("the store is locked"));
        let addr =
            crate::cli::status::admin_address(&config).map_err(|e| locked().context(format!("{e:#}")))?;
        let (status, report) = crate::cli::status::admin_get(addr, "/payments")
            .await
            .map_err(|e| locked().context(format!("{e:#}")))?;
        if !status.is_success() {
            bail!("the admin endpoint at {addr} answered {status}: {report}");
        }
        println!("(from the running node's admin endpoint http://{addr}; `cocoon status` sums it up)");
        crate::cli::status::print_channels(&report);
        return Ok(());
    };
    let worker = book.channels().context("cannot read the worker-side channels")?;
    let client = book.client_channels().context("cannot read the client-side channels")?;
    let retired = book.retired_channels().context("cannot read the retired channels")?;
    let debts = book.debts().context("cannot read the debts")?;
    if worker.is_empty() && client.is_empty() && retired.is_empty() && debts.is_empty() {
        println!("no payment channels in {}", config.node.data_dir.display());
        return Ok(());
    }
    for stored in &worker {
        let c = &stored.channel;
        println!("worker channel {}", friendly(&c.address, true));
        row("  client key", format!("{}…", &hex::encode(c.params.client_key)[..16]));
        row("  deposited", ton(c.chain.deposited));
        row("  vouchers", format!("{} (seqno {})", ton(c.cumulative()), c.seqno()));
        row("  claimed", ton(c.chain.claimed));
        row("  unclaimed", ton(c.unclaimed()));
        if let Some(at) = c.chain.closes_at() {
            row("  closing", format!("since unix {}, final at unix {at}", c.chain.close_started_at));
        }
        if let Some(p) = book.claim(&c.address).context("cannot read the settlement journal")? {
            let sent =
                if p.sent_at == 0 { "not sent yet".into() } else { format!("sent at unix {}", p.sent_at) };
            row("  pending claim", format!("{} (voucher seqno {}, {sent})", ton(p.cumulative), p.seqno));
        }
    }
    let tagged = client.iter().map(|c| (c, "")).chain(retired.iter().map(|c| (c, " (retired: closing)")));
    for (c, tag) in tagged {
        println!("client channel {}{tag}", friendly(&c.address, true));
        row("  worker", friendly(&c.params.worker, false));
        row("  contract", format!("version {}", c.code.as_u8()));
        row("  deposited", ton(c.deposited));
        row("  owed", ton(c.owed));
        row("  signed", format!("{} (seqno {})", ton(c.cumulative), c.seqno));
        row("  remaining", ton(c.remaining()));
    }
    for (client, owed) in &debts {
        // The full key: it is what `cocoon channel forgive` takes.
        println!("unpaid by client {}", hex::encode(client));
        row("  owed", ton(*owed));
    }
    Ok(())
}

async fn status(args: AddressArgs) -> anyhow::Result<()> {
    let ctx = args.pay.connect()?;
    let addr = &args.address;
    let account = ctx.chain.account(addr).await.with_context(|| format!("cannot read {addr}"))?;
    row("channel", friendly(addr, true));
    row("raw", addr);
    row("chain", &ctx.source);
    match ctx.state(addr).await? {
        None => row("state", format!("not deployed ({:?}: never opened, or closed)", account.status)),
        Some(s) => {
            let now = ctx.now().await?;
            match s.closes_at() {
                None => row("state", "open"),
                Some(at) => row("state", format!("closing; can be finished {}", when(at, now))),
            }
            row("deposited", ton(s.deposited));
            row("claimed", ton(s.claimed));
            row("available", ton(s.available()));
            row("last seqno", s.last_seqno);
            row("window", format!("{}s", s.dispute_window));
            row("balance", ton(account.balance));
        }
    }
    let book = match open_book(&ctx.config) {
        Ok(book) => book,
        Err(e) => {
            row("store", format!("not read: {e:#}"));
            return Ok(());
        }
    };
    let mut known = false;
    if let Some(stored) = book.channel(addr).context("cannot read the channel record")? {
        known = true;
        let c = &stored.channel;
        row("store", format!("worker side, client key {}…", &hex::encode(c.params.client_key)[..16]));
        row("  vouchers", format!("{} (seqno {})", ton(c.cumulative()), c.seqno()));
        if let Some(p) = book.claim(addr).context("cannot read the settlement journal")? {
            row("  pending claim", format!("{} (voucher seqno {})", ton(p.cumulative), p.seqno));
        }
    }
    let clients = book.client_channels().context("cannot read the client-side channels")?;
    if let Some(c) = clients.iter().find(|c| &c.address == addr) {
        known = true;
        row("store", format!("client side, worker {}", friendly(&c.params.worker, false)));
        row("  deposited", ton(c.deposited));
        row("  signed", format!("{} (seqno {})", ton(c.cumulative), c.seqno));
        row("  remaining", ton(c.remaining()));
    }
    if !known {
        row("store", "no record of this channel");
    }
    Ok(())
}

async fn open(args: OpenArgs) -> anyhow::Result<()> {
    if args.deposit == 0 {
        bail!("--deposit must be more than 0 TON");
    }
    let ctx = args.pay.connect()?;
    let data_dir = &ctx.config.node.data_dir;
    let identity = crate::store::load_or_create_identity(data_dir)
        .context("cannot load the node's identity key")?
        .try_into_ed25519()
        .map_err(|_| anyhow!("the node's identity key is not ed25519"))?;
    // The store is opened before any money moves: a locked store fails here.
    let book = open_book(&ctx.config)?;
    if let Some(existing) = book.client_channel(&args.worker_key).context("cannot read the store")?
        && ctx.state(&existing.address).await?.is_some_and(|s| s.closes_at().is_none())
    {
        bail!(
            "this node already has an open channel {} with that worker: top it up with `cocoon channel \
             topup` or close it first",
            friendly(&existing.address, true)
        );
    }
    let params = ChannelParams {
        client_key: identity.public().to_bytes(),
        worker_key: args.worker_key,
        client: ctx.wallet.address().clone(),
        worker: args.worker,
        dispute_window: args.window.unwrap_or(ctx.config.payments.dispute_window_secs),
        seed: rand::thread_rng().next_u64(),
    };
    let address = params.address().context("cannot derive the channel's address")?;
    let query_id = rand::random();
    let deposit = args.deposit;
    let transfer = contract::deploy(&params, deposit, query_id).context("cannot build the deploy")?;
    ctx.send(transfer, "channel deploy").await?;
    let seen = ctx
        .await_channel(&address, query_id, "channel deploy", |s| s.is_some_and(|s| s.deposited >= deposit))
        .await?;
    let deposited = seen.map_or(deposit, |s| s.deposited);
    let window = params.dispute_window;
    let channel = ClientChannel::new(params, deposited).context("cannot record the channel")?;
    book.put_client_channel(&channel).context("the channel is open but could not be recorded")?;
    println!("{}", friendly(&address, true));
    eprintln!("opened channel with a deposit of {} (dispute window {window}s)", ton(deposited));
    Ok(())
}

async fn topup(args: TopupArgs) -> anyhow::Result<()> {
    if args.amount == 0 {
        bail!("--amount must be more than 0 TON");
    }
    let ctx = args.pay.connect()?;
    let addr = &args.address;
    let book = try_open_book(&ctx.config)?;
    if book.is_none() {
        eprintln!("note: a running node holds the store; it reads the new deposit from the chain itself");
    }
    let before = ctx.state(addr).await?.ok_or_else(|| not_deployed(addr))?;
    if before.closes_at().is_some() {
        bail!(
            "channel {} is closing: {} (exit code {})",
            friendly(addr, true),
            exit::name(exit::CLOSING),
            exit::CLOSING
        );
    }
    let want = before.deposited.saturating_add(args.amount);
    let query_id = rand::random();
    ctx.send(contract::top_up(addr, args.amount, query_id).context("cannot build the top-up")?, "top-up")
        .await?;
    let seen =
        ctx.await_channel(addr, query_id, "top-up", |s| s.is_some_and(|s| s.deposited >= want)).await?;
    let deposited = seen.map_or(want, |s| s.deposited);
    if let Some(book) = book {
        for mut c in book.client_channels().context("cannot read the client-side channels")? {
            if &c.address == addr {
                c.deposited = deposited;
                book.put_client_channel(&c).context("cannot update the channel record")?;
            }
        }
    }
    println!("deposited {} (was {})", ton(deposited), ton(before.deposited));
    Ok(())
}

async fn claim(args: AddressArgs) -> anyhow::Result<()> {
    let ctx = args.pay.connect()?;
    let addr = &args.address;
    let book = open_book(&ctx.config)?;
    let mut stored = book.channel(addr).context("cannot read the channel record")?;
    let mut vouchers: Vec<SignedVoucher> = book.vouchers(addr).context("cannot read the vouchers")?;
    vouchers.extend(stored.as_ref().and_then(|s| s.channel.best.clone()));
    let best = vouchers
        .into_iter()
        .max_by_key(|v| (v.voucher.cumulative, v.voucher.seqno))
        .ok_or_else(|| anyhow!("no voucher stored for channel {}: nothing to claim", friendly(addr, true)))?;
    let before = ctx.state(addr).await?.ok_or_else(|| not_deployed(addr))?;
    let payable = best.voucher.cumulative.min(before.deposited);
    if payable <= before.claimed {
        bail!(
            "nothing unclaimed on channel {}: its best voucher pays {} in all and {} is already claimed",
            friendly(addr, true),
            ton(best.voucher.cumulative),
            ton(before.claimed)
        );
    }
    let query_id = rand::random();
    let transfer = contract::claim(&best, query_id).context("cannot build the claim")?;
    ctx.ensure_funds(&transfer, "claim").await?;
    let store_err = |e: StoreError| anyhow::Error::new(e).context("cannot write the settlement journal");
    let (wallet_seqno, _) = ctx.wallet.seqno(ctx.chain.as_ref()).await.context("cannot read the wallet")?;
    let (cumulative, seqno) = (best.voucher.cumulative, best.voucher.seqno);
    let mut entry = ClaimEntry { cumulative, seqno, wallet_seqno, sent_at: 0 };
    book.put_claim(addr, &entry).map_err(store_err)?;
    // Journaled before it is sent, as the settlement loop does: a node started later sees it.
    ctx.send(transfer, "claim").await?;
    entry.sent_at = unix_now();
    book.put_claim(addr, &entry).map_err(store_err)?;
    let seen =
        ctx.await_channel(addr, query_id, "claim", |s| s.is_some_and(|s| s.claimed > before.claimed)).await?;
    let after = seen.ok_or_else(|| not_deployed(addr))?;
    book.finish_claim(addr).map_err(store_err)?;
    if let Some(s) = stored.as_mut() {
        s.channel.chain = after;
        book.put_channel(s).context("cannot update the channel record")?;
    }
    let to = stored.map_or_else(|| "the worker".into(), |s| friendly(&s.channel.params.worker, false));
    println!(
        "claimed {} (paid to {to}); {} claimed in all",
        ton(after.claimed - before.claimed),
        ton(after.claimed)
    );
    Ok(())
}

async fn close(args: CloseArgs) -> anyhow::Result<()> {
    if !args.finish {
        let config = args.pay.node.resolve()?;
        match close_through_node(&config, &args.address).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => println!("the running node could not close it ({e:#}); starting the unilateral close"),
        }
    }
    let ctx = args.pay.connect()?;
    let addr = &args.address;
    let state = ctx.state(addr).await?.ok_or_else(|| not_deployed(addr))?;
    let now = ctx.now().await?;
    let query_id = rand::random();
    if !args.finish {
        if let Some(at) = state.closes_at() {
            println!("already closing; it can be finished {}", when(at, now));
            return Ok(());
        }
        ctx.send(contract::start_close(addr, query_id).context("cannot build the close")?, "close request")
            .await?;
        let seen = ctx
            .await_channel(addr, query_id, "close request", |s| s.is_some_and(|s| s.closes_at().is_some()))
            .await?;
        let at = seen.and_then(|s| s.closes_at()).unwrap_or(now);
        println!(
            "closing; the worker may claim until {}; then run `cocoon channel close --finish`",
            when(at, now)
        );
        return Ok(());
    }
    let Some(at) = state.closes_at() else {
        bail!(
            "channel {} is not closing: {} (run `cocoon channel close` without --finish first)",
            friendly(addr, true),
            exit::name(exit::NOT_CLOSING)
        );
    };
    if now < at {
        bail!(
            "cannot finish closing {} yet: {} (the contract refuses with exit code {}); it ends {}",
            friendly(addr, true),
            exit::name(exit::WINDOW_OPEN),
            exit::WINDOW_OPEN,
            when(at, now)
        );
    }
    ctx.send(contract::finish_close(addr, query_id).context("cannot build the close")?, "finish close")
        .await?;
    ctx.await_channel(addr, query_id, "finish close", |s| s.is_none()).await?;
    println!("closed; the remaining {} went back to the client's wallet", ton(state.available()));
    Ok(())
}

/// Ask the node running on `config`'s data directory to close `addr` (cooperatively if its worker
/// co-signs); `false` when no node runs there (no admin token recorded).
async fn close_through_node(config: &crate::config::Config, addr: &StdAddr) -> anyhow::Result<bool> {
    let dir = &config.node.data_dir;
    let (Some(admin), Some(token)) =
        (crate::dirs::recorded_admin_addr(dir), crate::dirs::recorded_admin_token(dir))
    else {
        return Ok(false);
    };
    let url = format!("http://{admin}/payments/close?channel={}", friendly(addr, true));
    // The node waits up to the close exchange and the chain's confirmation.
    let wait = std::time::Duration::from_secs(config.payments.confirm_timeout_secs.saturating_add(30));
    let response = reqwest::Client::builder()
        .timeout(wait)
        .build()?
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("no node answers at {admin}"))?;
    let status = response.status();
    let bytes = response.bytes().await.context("reading the node's answer")?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).context("the node's answer is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", body["error"].as_str().unwrap_or("no reason given"));
    }
    let amount = |field: &str| ton(body[field].as_u64().unwrap_or(0));
    match body["outcome"].as_str() {
        Some("cooperative") => println!(
            "closed cooperatively in one transaction: {} to the worker, {} back to the wallet",
            amount("paid_nanotons"),
            amount("refunded_nanotons")
        ),
        _ => println!(
            "the worker did not co-sign ({}); the unilateral close has started and the node finishes \
             it after the dispute window (see `cocoon channel status {}`)",
            body["reason"].as_str().unwrap_or("no reason given"),
            friendly(addr, true)
        ),
    }
    Ok(true)
}

fn not_deployed(addr: &StdAddr) -> anyhow::Error {
    anyhow!("channel {} is not deployed (never opened, or already closed)", friendly(addr, true))
}
