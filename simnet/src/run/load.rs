//! Request load through the clients' real inference path (worker selection, Noise sessions,
//! failover, vouchers), and the payments reconciliation at the end: every worker claims its best
//! voucher on the shared chain, and invoiced = vouchered + owed (debts) with vouchered = claimed
//! must hold exactly.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cocoon::chain::local::LocalChain;
use cocoon::chain::wallet::Wallet;
use cocoon::inference::client::{Delivery, Delta, InferenceClient, InferenceError, Payment};
use cocoon::node::Node;
use cocoon::payments::contract;
use cocoon::store::load_or_create_wallet_seed;
use cocoon_protocol::inference::messages::{Prompt, Request, Sampling, Shape};
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::plan::RequestPlan;
use crate::report::{Dist, PaymentStats, RequestStats};
use crate::run::measure::{self, thin};

/// Most a simulated client pays for one request, nanotons.
const MAX_PRICE: u64 = 1_000_000_000_000;

/// How long past the scenario's timeout simnet still waits for a request before it drops it. The
/// client's own limits (open, first token, idle, acknowledgement) end every request well before.
const ABANDON_AFTER: Duration = Duration::from_secs(600);

/// The inference client's counter of DHT lookups of workers (see `docs/operator.md`).
const WORKER_LOOKUPS: &str = "cocoon_inference_client_worker_lookups_total";

/// How one request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent_ms: f64,
    /// The completion, or why it failed: `(reason, the error's text)`.
    pub result: Result<Done, (String, String)>,
    /// A completion that came after the scenario's timeout (`result` is then the `late` failure):
    /// the worker served it and the client paid for it, so its receipt is an invoice.
    pub late: Option<Done>,
    /// The client left (churn) while it ran: not counted either way.
    pub client_left: bool,
    /// The worker that served it, or the last one its error names.
    pub last_worker: Option<PeerId>,
    /// Whether its client knew a verified honest worker for the model when it sent it (set by
    /// the caller; `true` unless told otherwise).
    pub honest_worker_known: bool,
}

/// A completed request.
#[derive(Debug, Clone)]
pub struct Done {
    pub worker: PeerId,
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub failovers: u32,
    pub amount: u64,
    pub paid: Option<bool>,
}

impl Outcome {
    /// The completion, in time or late.
    pub fn served(&self) -> Option<&Done> {
        self.result.as_ref().ok().or(self.late.as_ref())
    }
}

/// The worker an error names, if any.
fn named_worker(e: &InferenceError) -> Option<PeerId> {
    match e {
        InferenceError::WorkerFailed { worker, .. }
        | InferenceError::BadReceipt { worker, .. }
        | InferenceError::Timeout(worker) => worker.parse().ok(),
        _ => None,
    }
}

fn reason(e: &InferenceError) -> String {
    let text = match e {
        InferenceError::UnknownModel(_) => "unknown_model",
        InferenceError::NoEligibleWorker(_) | InferenceError::NoGpuWorker { .. } => "no_worker",
        InferenceError::Busy(_) => "busy",
        InferenceError::Refused { .. } => "refused",
        InferenceError::Cancelled => "cancelled",
        InferenceError::Timeout(_) => "timeout",
        _ => "failed",
    };
    text.to_owned()
}

/// What every planned request asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub model_id: String,
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Streamed (shown as it arrives) or kept until complete (a broken answer replaced).
    pub delivery: Delivery,
}

/// Send one planned request from `client` and time it. Time to first token is that of the
/// answer the caller kept: a discarded answer's first token does not count.
pub async fn one(
    client: InferenceClient,
    plan: RequestPlan,
    ask: Ask,
    started: Instant,
    left: Arc<AtomicBool>,
) -> Outcome {
    let sent = Instant::now();
    let sent_ms = sent.duration_since(started).as_secs_f64() * 1000.0;
    let words: Vec<String> = (0..plan.prompt_words).map(|i| format!("w{i}")).collect();
    let mut request_id = [0u8; 16];
    request_id[..8].copy_from_slice(&(plan.client as u64).to_le_bytes());
    request_id[8..].copy_from_slice(&plan.at_ms.to_le_bytes());
    let Ask { model_id, max_tokens, timeout, delivery } = ask;
    let request = Request {
        request_id,
        model_id,
        prompt: Prompt::Text(words.join(" ")),
        max_tokens,
        sampling: Sampling::default(),
        shape: Shape::default(),
        max_price: MAX_PRICE,
        channel: None,
    };
    let (tx, mut rx) = mpsc::channel::<Delta>(64);
    let first = tokio::spawn(async move {
        let mut got = None;
        while let Some(delta) = rx.recv().await {
            match delta {
                Delta::Answer(_) => got = got.or_else(|| Some(Instant::now())),
                Delta::Discard => got = None,
            }
        }
        got
    });
    // Not cut off at `timeout`: a request dropped there may already have been served and paid
    // for, and its voucher would then be missing from the invoices.
    let result = tokio::time::timeout(timeout + ABANDON_AFTER, client.complete(request, tx, delivery)).await;
    let ttft = first.await.ok().flatten();
    let elapsed = sent.elapsed();
    let total_ms = elapsed.as_secs_f64() * 1000.0;
    let client_left = left.load(Ordering::Acquire);
    let mut last_worker = None;
    let (result, late) = match result {
        Err(_) => {
            let text = format!("no outcome within {:?}", timeout + ABANDON_AFTER);
            (Err(("abandoned".to_owned(), text)), None)
        }
        Ok(Err(e)) => {
            tracing::warn!(client = plan.client, at_ms = plan.at_ms, error = %e, "request failed");
            last_worker = named_worker(&e);
            (Err((reason(&e), e.to_string())), None)
        }
        Ok(Ok(c)) => {
            last_worker = Some(c.worker);
            let done = Done {
                worker: c.worker,
                ttft_ms: ttft.map_or(total_ms, |t| t.duration_since(sent).as_secs_f64() * 1000.0),
                total_ms,
                failovers: c.failovers,
                amount: c.receipt.amount,
                paid: match c.payment {
                    Payment::None => None,
                    Payment::Paid { .. } => Some(true),
                    Payment::Failed(_) => Some(false),
                },
            };
            if elapsed > timeout {
                let text =
                    format!("completed after {:.1} s, over the {timeout:?} limit", elapsed.as_secs_f64());
                (Err(("late".to_owned(), text)), Some(done))
            } else {
                (Ok(done), None)
            }
        }
    };
    Outcome { sent_ms, result, late, client_left, last_worker, honest_worker_known: true }
}

/// Summarise the outcomes; `sybils` are the sybil workers' peer ids.
pub fn summarise(
    outcomes: &[Outcome],
    sybils: &HashSet<PeerId>,
    window_ms: f64,
    worker_lookups: (u64, u64),
) -> RequestStats {
    let counted: Vec<&Outcome> = outcomes.iter().filter(|o| !o.client_left).collect();
    let done: Vec<&Done> = counted.iter().filter_map(|o| o.result.as_ref().ok()).collect();
    let mut failures = BTreeMap::new();
    let mut failure_examples = BTreeMap::new();
    for o in &counted {
        if let Err((reason, text)) = &o.result {
            *failures.entry(reason.clone()).or_insert(0) += 1;
            failure_examples.entry(reason.clone()).or_insert_with(|| text.clone());
        }
    }
    let mut histogram = Vec::new();
    for d in &done {
        let i = d.failovers as usize;
        if histogram.len() <= i {
            histogram.resize(i + 1, 0);
        }
        histogram[i] += 1;
    }
    let mut success_over_time = Vec::new();
    let last = counted.iter().map(|o| o.sent_ms).fold(0.0, f64::max);
    let mut start = 0.0;
    while start <= last && window_ms > 0.0 {
        let window: Vec<&&Outcome> =
            counted.iter().filter(|o| o.sent_ms >= start && o.sent_ms < start + window_ms).collect();
        if !window.is_empty() {
            let ok = window.iter().filter(|o| o.result.is_ok()).count();
            success_over_time.push((start + window_ms, ok as f64 / window.len() as f64));
        }
        start += window_ms;
    }
    let ttft: Vec<f64> = done.iter().map(|d| d.ttft_ms).collect();
    RequestStats {
        sent: counted.len(),
        succeeded: done.len(),
        success_rate: if counted.is_empty() { 1.0 } else { done.len() as f64 / counted.len() as f64 },
        failures,
        failure_examples,
        ttft_ms: Dist::of(&ttft),
        ttft_samples: thin(ttft, 20_000),
        total_ms: Dist::of(&done.iter().map(|d| d.total_ms).collect::<Vec<_>>()),
        failovers: done.iter().map(|d| u64::from(d.failovers)).sum(),
        failover_histogram: histogram,
        worker_lookups,
        served_by_sybil: done.iter().filter(|d| sybils.contains(&d.worker)).count(),
        success_over_time,
    }
}

/// Add the DHT lookups of workers `node`'s inference client made to `total` (found, not found).
pub fn add_worker_lookups(total: &mut (u64, u64), node: &Node) {
    let text = node.metrics_text();
    let count = |outcome: &str| measure::counter(&text, WORKER_LOOKUPS, &format!("outcome=\"{outcome}\""));
    total.0 += count("found");
    total.1 += count("not_found");
}

/// Claim every worker's best voucher and compare invoiced (receipts), signed (what `clients`
/// signed), vouchered (what workers hold), owed (the workers' recorded debts; those of the
/// `strangers`' client keys apart) and claimed (what the chain paid) amounts.
pub async fn reconcile(
    chain: &Arc<LocalChain>,
    workers: &[&Node],
    clients: &[&Node],
    strangers: &HashSet<[u8; 32]>,
    outcomes: &[Outcome],
    tx_before_claims: u64,
) -> Result<PaymentStats, String> {
    let done: Vec<&Done> = outcomes.iter().filter_map(Outcome::served).collect();
    // Every completed request's receipt is an invoice, acknowledged or not, late or not: a worker
    // that stored the voucher holds it even when its acknowledgement did not reach the client.
    let invoiced: u128 = done.iter().map(|d| u128::from(d.amount)).sum();
    let invoices = done.iter().filter(|d| d.amount > 0).count() as u64;
    let (mut vouchered, mut claimed, mut owed, mut channels) = (0u128, 0u128, 0u128, 0usize);
    let mut owed_by_strangers = 0u128;
    for node in workers {
        let book = node.store().payments().map_err(|e| e.to_string())?;
        for (client, amount) in book.debts().map_err(|e| e.to_string())? {
            match strangers.contains(&client) {
                true => owed_by_strangers += u128::from(amount),
                false => owed += u128::from(amount),
            }
        }
        let wallet = node_wallet(node)?;
        for stored in book.channels().map_err(|e| e.to_string())? {
            channels += 1;
            let addr = stored.channel.address.clone();
            let mut vouchers = book.vouchers(&addr).map_err(|e| e.to_string())?;
            vouchers.extend(stored.channel.best.clone());
            let Some(best) = vouchers.into_iter().max_by_key(|v| (v.voucher.cumulative, v.voucher.seqno))
            else {
                continue;
            };
            vouchered += u128::from(best.voucher.cumulative);
            let transfer = contract::claim(&best, rand::random()).map_err(|e| e.to_string())?;
            wallet.send(chain.as_ref(), &[transfer]).await.map_err(|e| format!("claim: {e}"))?;
            let state = contract::state(chain.as_ref(), &addr)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("channel {addr} vanished"))?;
            claimed += u128::from(state.claimed);
        }
    }
    let mut signed = 0u128;
    for node in clients {
        let book = node.store().payments().map_err(|e| e.to_string())?;
        signed += book
            .client_channels()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| u128::from(c.cumulative))
            .sum::<u128>();
    }
    let spending = client_spending(chain, clients)?;
    let total_tx = chain.transaction_count();
    Ok(PaymentStats {
        invoices,
        invoiced_nanotons: invoiced,
        signed_nanotons: signed,
        vouchered_nanotons: vouchered,
        owed_nanotons: owed,
        owed_by_strangers_nanotons: owed_by_strangers,
        claimed_nanotons: claimed,
        channels,
        vouchers_accepted: done.iter().filter(|d| d.paid == Some(true)).count() as u64,
        unpaid: done.iter().filter(|d| d.paid == Some(false)).count() as u64,
        chain_transactions: total_tx,
        transactions_per_request: tx_before_claims as f64 / invoices.max(1) as f64,
        paying_clients: spending.clients,
        channels_per_client: spending.channels as f64 / spending.clients.max(1) as f64,
        client_operations_per_request: spending.operations as f64 / invoices.max(1) as f64,
        client_operations_per_client_per_10_min: spending.operations as f64
            / spending.clients.max(1) as f64
            / (load_span_ms(outcomes) / 600_000.0).max(1.0),
        reconciled: invoiced == vouchered + owed && vouchered == claimed,
    })
}

/// What the paying clients did on chain.
struct Spending {
    /// Clients with at least one channel.
    clients: usize,
    /// Their channels, in use or being closed.
    channels: usize,
    /// External messages their wallets sent (each a deploy, top-up or close).
    operations: u64,
}

fn client_spending(chain: &LocalChain, clients: &[&Node]) -> Result<Spending, String> {
    let mut spending = Spending { clients: 0, channels: 0, operations: 0 };
    for node in clients {
        let book = node.store().payments().map_err(|e| e.to_string())?;
        let held = book.client_channels().map_err(|e| e.to_string())?.len()
            + book.retired_channels().map_err(|e| e.to_string())?.len();
        if held == 0 {
            continue;
        }
        spending.clients += 1;
        spending.channels += held;
        let wallet = node_wallet(node)?;
        let history = chain.history(wallet.address(), usize::MAX).map_err(|e| e.to_string())?;
        let sent = history.iter().filter(|t| t.in_msg.as_ref().is_some_and(|m| m.external)).count();
        spending.operations += sent as u64;
    }
    Ok(spending)
}

/// The wallet `node` pays and is paid with.
fn node_wallet(node: &Node) -> Result<Wallet, String> {
    let seed = load_or_create_wallet_seed(node.store().dir()).map_err(|e| e.to_string())?;
    Wallet::from_seed(&seed).map_err(|e| e.to_string())
}

/// From the first request sent to the last, ms.
fn load_span_ms(outcomes: &[Outcome]) -> f64 {
    let sent = outcomes.iter().map(|o| o.sent_ms);
    let (first, last) = sent.fold((f64::INFINITY, 0f64), |(lo, hi), t| (lo.min(t), hi.max(t)));
    if first.is_finite() { last - first } else { 0.0 }
}
