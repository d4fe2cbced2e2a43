//! `cocoon status`: what a running node is and what it earned and spent, in TON, read from its
//! admin endpoint (`GET /health`, `GET /payments`) at the address the node recorded in its data
//! directory (`crate::dirs::ADMIN_ADDR_FILE`); `--json` prints the endpoint's answers as they
//! came (amounts in nanotons), for scripts. `cocoon channel list` reaches a running node the same
//! way and prints its channels with [`print_channels`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::NodeArgs;
use super::pay::{row, ton};
use crate::chain::{friendly, parse_address};
use crate::config::Config;

/// How long a command waits for the local node's admin endpoint (it answers from memory; a hung
/// endpoint must not hang the command).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `cocoon status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print the admin endpoint's answers as JSON (amounts in nanotons) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Where the node running on `config`'s data directory serves its admin endpoint: the address it
/// recorded there, else the configured `admin.listen`.
pub(crate) fn admin_address(config: &Config) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = crate::dirs::recorded_admin_addr(&config.node.data_dir) {
        return Ok(addr);
    }
    if !config.admin.enabled {
        bail!(
            "no node running on {} recorded an admin endpoint, and admin.enabled is false",
            config.node.data_dir.display()
        );
    }
    Ok(config.admin.listen)
}

/// `GET path` from the admin endpoint at `addr`: the status and the JSON body.
pub(crate) async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let url = format!("http://{addr}{path}");
    let client = reqwest::Client::builder().timeout(ADMIN_TIMEOUT).build()?;
    let response = client.get(&url).send().await.with_context(|| format!("no node answers at {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await.with_context(|| format!("{url}: reading the answer"))?;
    let body = serde_json::from_slice(&bytes).with_context(|| format!("{url}: the answer is not JSON"))?;
    Ok((status, body))
}

/// Run `cocoon status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.node.resolve()?;
    let addr = admin_address(&config)?;
    let dir = config.node.data_dir.display();
    let (status, health) =
        admin_get(addr, "/health").await.with_context(|| format!("is a node running on {dir}?"))?;
    if !status.is_success() {
        bail!("the admin endpoint at {addr} answered {status}: {health}");
    }
    // 404: payments are off on this node.
    let (status, payments) = admin_get(addr, "/payments").await?;
    let payments = status.is_success().then_some(payments);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"admin": addr, "health": health, "payments": payments}))?
        );
        return Ok(());
    }
    print_node(addr, &health);
    match &payments {
        Some(report) => print_money(report),
        None => row("payments", "off on this node"),
    }
    Ok(())
}

fn print_node(addr: SocketAddr, health: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let roles: Vec<String> = health["roles"].as_array().into_iter().flatten().map(text).collect();
    row("node", text(&health["peer_id"]));
    row("roles", roles.join(", "));
    row(
        "network",
        format!(
            "{} ({} peers connected, {} verified workers)",
            text(&health["status"]),
            health["connected_peers"].as_u64().unwrap_or(0),
            health["verified_workers"].as_u64().unwrap_or(0)
        ),
    );
    let up = health["uptime_secs"].as_u64().unwrap_or(0);
    row("uptime", format!("{}h {}m {}s", up / 3_600, up / 60 % 60, up % 60));
    row("admin", format!("http://{addr}"));
}

fn nanotons(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn sum(items: &[Value], field: &str) -> u64 {
    items.iter().map(|c| nanotons(&c[field])).fold(0, u64::saturating_add)
}

/// Earnings (worker side) and spending (client side), in TON.
fn print_money(report: &Value) {
    let (earning, spending) = (list(&report["worker_channels"]), list(&report["client_channels"]));
    let debts = list(&report["debts"]);
    if !earning.is_empty() || !debts.is_empty() {
        let open = earning.iter().filter(|c| c["closing"] != Value::Bool(true)).count();
        println!("earnings (as a worker)");
        row("  earned", ton(sum(earning, "voucher_cumulative_nanotons")));
        row("  claimed", ton(nanotons(&report["totals"]["claimed_nanotons"])));
        row("  unclaimed", ton(nanotons(&report["totals"]["unclaimed_nanotons"])));
        row("  channels", format!("{open} open, {} closing", earning.len() - open));
        row(
            "  deposits",
            format!("{} (clients' money locked in them)", ton(sum(earning, "deposited_nanotons"))),
        );
        row(
            "  unpaid",
            format!("{} by {} clients", ton(nanotons(&report["totals"]["owed_nanotons"])), debts.len()),
        );
    }
    if !spending.is_empty() {
        let retired = spending.iter().filter(|c| c["retired"] == Value::Bool(true)).count();
        println!("spending (as a client)");
        row("  locked", format!("{} in deposits", ton(sum(spending, "deposited_nanotons"))));
        row("  paid", ton(sum(spending, "signed_cumulative_nanotons")));
        row("  remaining", ton(sum(spending, "remaining_nanotons")));
        row("  channels", format!("{} open, {retired} closing", spending.len() - retired));
    }
    if earning.is_empty() && spending.is_empty() && debts.is_empty() {
        row("payments", "no channels yet");
    }
}

/// Every channel and debt of a `GET /payments` report, one block each, in TON.
pub(crate) fn print_channels(report: &Value) {
    let address = |v: &Value| {
        let raw = v.as_str().unwrap_or("?");
        parse_address(raw).map_or_else(|_| raw.to_owned(), |a| friendly(&a, true))
    };
    for c in list(&report["worker_channels"]) {
        println!("worker channel {}", address(&c["address"]));
        row("  deposited", ton(nanotons(&c["deposited_nanotons"])));
        let seqno = nanotons(&c["voucher_seqno"]);
        row("  vouchers", format!("{} (seqno {seqno})", ton(nanotons(&c["voucher_cumulative_nanotons"]))));
        row("  claimed", ton(nanotons(&c["claimed_nanotons"])));
        row("  unclaimed", ton(nanotons(&c["unclaimed_nanotons"])));
        if c["closing"] == Value::Bool(true) {
            row("  closing", format!("final at unix {}", nanotons(&c["closes_at"])));
        }
    }
    for c in list(&report["client_channels"]) {
        let tag = if c["retired"] == Value::Bool(true) { " (retired: closing)" } else { "" };
        println!("client channel {}{tag}", address(&c["address"]));
        row("  worker", address(&c["worker_payout"]));
        row("  deposited", ton(nanotons(&c["deposited_nanotons"])));
        row(
            "  paid",
            format!("{} (seqno {})", ton(nanotons(&c["signed_cumulative_nanotons"])), nanotons(&c["seqno"])),
        );
        row("  remaining", ton(nanotons(&c["remaining_nanotons"])));
    }
    for d in list(&report["debts"]) {
        println!("unpaid by client {}", d["client_key"].as_str().unwrap_or("?"));
        row("  owed", ton(nanotons(&d["owed_nanotons"])));
    }
}
