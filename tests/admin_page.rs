//! The admin endpoint's web page in a real browser: a client node pays a worker for a few requests
//! on a shared `LocalChain` and the worker claims part of it; then headless Chromium (Debian's
//! `chromium`, driven by the `playwright-core` pinned in tests/admin/package.json) loads each
//! node's page (tests/admin/page.mjs), which prints the figures it shows and saves a screenshot in
//! the test's temporary directory. The figures must be `GET /payments` in TON exactly as
//! `cocoon status` prints them, the request counts those of `GET /metrics`, and the chart drawn.
//!
//! Needs `node`, `npm` and Chromium (`/usr/bin/chromium`, or the path in `COCOON_CHROMIUM`):
//! without them it fails and says so. It runs `npm ci` in tests/admin when its node_modules is
//! missing (`.ci/run` does it beforehand). `COCOON_KEEP_SCREENSHOTS=DIR` copies the screenshots
//! there.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cocoon::chain::local::LocalChain;
use cocoon::config::Role;
use cocoon::node::Node;
use cocoon_protocol::payments::amount::format_ton;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use common::inference::{boot, client, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::{config, eventually};
use common::payments::{TON, chain, paying, start_on};
use serde_json::{Value, json};

/// How long the browser script may take (it starts Chromium and waits for two refreshes).
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// Paid requests sent before the worker's claims are waited for.
const REQUESTS: u64 = 5;
/// Claims start at this much unclaimed (a request costs tens of thousands of nanotons here).
const CLAIM_AT: u64 = 100_000;

fn admin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admin")
}

/// The browser: `COCOON_CHROMIUM`, else Debian's package.
fn chromium() -> PathBuf {
    let path =
        std::env::var_os("COCOON_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.is_file(),
        "no Chromium at {}: this test drives headless Chromium (`apt-get install chromium`, as .ci/run \
         does, or set COCOON_CHROMIUM)",
        path.display()
    );
    path
}

/// Load `admin`'s page (refreshing every second) and save a screenshot to `shot`: what it showed.
async fn load_page(browser: &Path, admin: SocketAddr, shot: &Path) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("page.mjs").arg(format!("http://{admin}/?every=1")).arg(shot);
    cmd.env("CHROMIUM", browser).current_dir(admin_dir()).kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_LIMIT, cmd.output()).await.expect("page.mjs timed out").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "page.mjs failed ({}):\n{stdout}\n{stderr}", out.status);
    let line = stdout.lines().last().unwrap_or_default();
    let seen: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("page.mjs printed {line:?}: {e}"));
    assert_eq!(seen["state"], "ready", "{seen}");
    assert_eq!(seen["problems"], json!([]), "the page logged problems: {seen}");
    assert_eq!(seen["forms"], 0, "the page is read-only");
    let csp = cocoon::api::admin_page::CONTENT_SECURITY_POLICY;
    assert_eq!(seen["headers"]["content-security-policy"], csp, "{seen}");
    seen
}

/// `GET path` from a node's admin endpoint.
async fn admin_get(node: &Node, path: &'static str) -> (u16, String) {
    let addr = node.admin_addr().expect("admin endpoint on");
    tokio::task::spawn_blocking(move || common::http_get(addr, path)).await.unwrap()
}

async fn payments(node: &Node) -> Value {
    let (status, body) = admin_get(node, "/payments").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Sum and `outcome n, …` of a counter family on a node's `/metrics`, as the page shows them.
async fn counted(node: &Node, family: &str) -> (String, String) {
    let (_, body) = admin_get(node, "/metrics").await;
    let mut outcomes = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with(&format!("{family}{{"))) {
        let outcome = line.split("outcome=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        *outcomes.entry(outcome.to_owned()).or_insert(0u64) +=
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    let text: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
    (outcomes.values().sum::<u64>().to_string(), text.join(", "))
}

/// `1.500000000 TON`, as `cocoon status` prints amounts.
fn ton(nanotons: u64) -> String {
    format!("{} TON", format_ton(nanotons))
}

fn sum(channels: &Value, field: &str) -> u64 {
    channels.as_array().unwrap().iter().map(|c| c[field].as_u64().unwrap()).sum()
}

/// What the page must show for `report`, as `cocoon status` computes it (src/cli/status.rs).
fn expected(report: &Value) -> BTreeMap<&'static str, String> {
    let (earning, spending, totals) =
        (&report["worker_channels"], &report["client_channels"], &report["totals"]);
    let count = |v: &Value, flag: &str| v.as_array().unwrap().iter().filter(|c| c[flag] == true).count();
    let n = |v: &Value| v.as_array().unwrap().len();
    let amount = |v: &Value| ton(v.as_u64().unwrap());
    BTreeMap::from([
        ("worker.earned", ton(sum(earning, "voucher_cumulative_nanotons"))),
        ("worker.claimed", amount(&totals["claimed_nanotons"])),
        ("worker.unclaimed", amount(&totals["unclaimed_nanotons"])),
        (
            "worker.channels",
            format!("{} open, {} closing", n(earning) - count(earning, "closing"), count(earning, "closing")),
        ),
        ("worker.deposits", ton(sum(earning, "deposited_nanotons"))),
        ("worker.unpaid", format!("{} by {} clients", amount(&totals["owed_nanotons"]), n(&report["debts"]))),
        ("client.locked", ton(sum(spending, "deposited_nanotons"))),
        ("client.paid", ton(sum(spending, "signed_cumulative_nanotons"))),
        ("client.remaining", ton(sum(spending, "remaining_nanotons"))),
        (
            "client.channels",
            format!(
                "{} open, {} closing",
                n(spending) - count(spending, "retired"),
                count(spending, "retired")
            ),
        ),
    ])
}

/// The page's figures with `prefix` are those of `report`; the other side's are hidden.
fn assert_money(seen: &Value, report: &Value, prefix: &str) {
    for (figure, want) in expected(report) {
        let shown = &seen["figures"][figure];
        if figure.starts_with(prefix) {
            assert_eq!(shown, &json!(want), "{figure} on the page; the report: {report}");
        } else {
            assert_eq!(shown, &Value::Null, "{figure} is shown on a node without that side: {seen}");
        }
    }
}

/// A PNG of some substance (a blank or failed capture is a few hundred bytes).
fn assert_screenshot(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    assert!(bytes.len() > 20_000, "{} has only {} bytes", path.display(), bytes.len());
    if let Some(keep) = std::env::var_os("COCOON_KEEP_SCREENSHOTS") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
    }
}

/// The worker has claimed, nothing is in flight, and less than a claim's worth is left.
async fn settled(worker: &Node) -> bool {
    let report = payments(worker).await;
    let claimed = report["totals"]["claimed_nanotons"].as_u64().unwrap_or(0);
    let unclaimed = report["totals"]["unclaimed_nanotons"].as_u64().unwrap_or(u64::MAX);
    let in_flight =
        report["worker_channels"].as_array().unwrap().iter().any(|c| !c["pending_claim"].is_null());
    claimed > 0 && unclaimed < CLAIM_AT && !in_flight
}

/// One paid chat completion from `client`.
async fn pay_request(client: &Node, model_id: &str, sent: &mut u64) {
    let content = format!("request {sent}");
    let body =
        json!({"model": model_id, "messages": [{"role": "user", "content": content}], "max_tokens": 8});
    let (status, answer) = post(client.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!((status, &answer["cocoon"]["payment"]["status"]), (200, &json!("paid")), "{answer}");
    *sent += 1;
}

async fn unclaimed(worker: &Node) -> u64 {
    payments(worker).await["totals"]["unclaimed_nanotons"].as_u64().unwrap()
}

/// Boot, a worker paid on `chain` that claims from `CLAIM_AT` on, and a client paying it.
async fn start_nodes(dir: &Path, chain: &Arc<LocalChain>) -> [Node; 3] {
    let model = tiny_model(dir);
    let (boot, boot_addr) = boot(dir).await;
    let mut wc =
        with_admin(worker(config(&dir.join("w"), Role::Worker, Some(&boot_addr)), &model, 1_000_000, 1));
    wc.payments.settlement = SettlementPolicy {
        claim_threshold: CLAIM_AT,
        min_claim: CLAIM_AT,
        idle_after_secs: u64::MAX / 2,
        ..SettlementPolicy::default()
    };
    paying(&mut wc, chain, 10 * TON);
    let worker = start_on(wc, chain).await;
    let mut cc = client(config(&dir.join("c"), Role::Client, Some(&boot_addr)));
    cc.payments.deposit_nanotons = TON;
    paying(&mut cc, chain, 100 * TON);
    let client = start_on(cc, chain).await;
    [boot, worker, client]
}

/// Pay `REQUESTS` requests and wait for the worker's claims; then pay more until a little is
/// left unclaimed, so that every figure is non-zero (the worker claims nothing below `CLAIM_AT`,
/// so its report stays as it is while the page reads it). How many requests were paid.
async fn earn(worker: &Node, client: &Node) -> u64 {
    let model_id = wait_for_workers(client, 1).await;
    let mut sent = 0;
    while sent < REQUESTS {
        pay_request(client, &model_id, &mut sent).await;
    }
    assert!(eventually(Duration::from_secs(60), || settled(worker)).await, "the worker did not claim");
    while unclaimed(worker).await == 0 && sent < 2 * REQUESTS {
        pay_request(client, &model_id, &mut sent).await;
        assert!(eventually(Duration::from_secs(60), || settled(worker)).await, "a claim did not land");
    }
    sent
}

/// The worker's page: its earnings, and the requests it served.
async fn check_worker_page(browser: &Path, worker: &Node, sent: u64, shot: &Path) {
    let before = payments(worker).await;
    let seen = load_page(browser, worker.admin_addr().unwrap(), shot).await;
    assert_eq!(payments(worker).await, before, "the report changed while the page was read");
    assert_money(&seen, &before, "worker.");
    for figure in ["worker.earned", "worker.claimed", "worker.unclaimed", "worker.deposits"] {
        assert_ne!(seen["figures"][figure], json!(ton(0)), "{figure}: {seen}");
    }
    let (served, by_outcome) = counted(worker, "cocoon_inference_worker_requests_total").await;
    assert_eq!((served.clone(), by_outcome.clone()), (sent.to_string(), format!("completed {sent}")));
    assert_eq!(seen["figures"]["requests.served"], json!(served), "{seen}");
    assert_eq!(seen["figures"]["requests.served_by_outcome"], json!(by_outcome), "{seen}");
    assert_eq!(seen["figures"]["requests.vouchers_accepted"], json!(sent.to_string()), "{seen}");
    assert_eq!(seen["figures"]["node.peer_id"], json!(worker.peer_id().to_string()));
    assert_eq!(seen["chart_series"], json!(["earned", "claimed"]), "{seen}");
    assert_screenshot(shot);
}

/// The client's page: its spending, and the requests it sent.
async fn check_client_page(browser: &Path, client: &Node, sent: u64, shot: &Path) {
    let report = payments(client).await;
    let seen = load_page(browser, client.admin_addr().unwrap(), shot).await;
    assert_eq!(payments(client).await, report, "the report changed while the page was read");
    assert_money(&seen, &report, "client.");
    assert_ne!(seen["figures"]["client.paid"], json!(ton(0)), "{seen}");
    let (counted_sent, by_outcome) = counted(client, "cocoon_inference_client_requests_total").await;
    assert_eq!((counted_sent.clone(), by_outcome.clone()), (sent.to_string(), format!("completed {sent}")));
    assert_eq!(seen["figures"]["requests.sent"], json!(counted_sent), "{seen}");
    assert_eq!(seen["figures"]["requests.sent_by_outcome"], json!(by_outcome), "{seen}");
    assert_eq!(seen["chart_series"], json!(["paid"]), "{seen}");
    assert_screenshot(shot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_what_cocoon_status_shows() {
    // Without the browser or its driver the test fails here, before any node starts.
    let (dir, browser) = (admin_dir(), chromium());
    common::npm::ensure_packages(&dir, "node_modules/playwright-core/package.json", "playwright-core");
    let tmp = tempfile::tempdir().unwrap();
    let chain = chain();
    let [boot, worker, client] = start_nodes(tmp.path(), &chain).await;
    let sent = earn(&worker, &client).await;
    check_worker_page(&browser, &worker, sent, &tmp.path().join("worker.png")).await;
    check_client_page(&browser, &client, sent, &tmp.path().join("client.png")).await;
    for node in [client, worker, boot] {
        node.shutdown().await.unwrap();
    }
}
