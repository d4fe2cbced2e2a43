//! `cocoon wallet ...` and `cocoon channel ...` as real processes against `cocoon chain serve`
//! (a manual-clock `LocalChain` behind the Toncenter API, in a process of its own): the wallet's
//! address and balance, opening, topping up, listing, claiming on and closing a channel with nodes
//! whose configuration has payments off (`--chain-url` is enough), and bad input exiting non-zero
//! with a message naming the problem.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use cocoon::store::{Store, StoredChannel, load_or_create_identity};
use cocoon_protocol::payments::channel::ChannelState;
use cocoon_protocol::payments::ledger::WorkerChannel;
use cocoon_protocol::payments::voucher::Voucher;
use common::{cocoon, run};

/// `cocoon chain serve`; killed when dropped.
struct ChainServe {
    child: Child,
    url: String,
}

impl ChainServe {
    fn start(state: &Path, fund: &[&str]) -> Self {
        let mut cmd = cocoon();
        cmd.args(["chain", "serve", "--listen", "127.0.0.1:0", "--manual-clock", "1800000000", "--state"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for f in fund {
            cmd.args(["--fund", f]);
        }
        let mut child = cmd.spawn().unwrap();
        let line = common::first_line(&mut child, Duration::from_secs(30));
        let Some(url) = line.trim().strip_prefix("chain listening on ") else {
            let _ = child.kill();
            panic!("chain serve printed {line:?}");
        };
        Self { url: url.to_owned(), child }
    }
}

impl Drop for ChainServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cocoon args`, asserting success; returns stdout.
fn ok(args: &[&str]) -> String {
    let (success, out, err) = run(args, &[]);
    assert!(success, "cocoon {args:?} failed:\n{err}");
    out
}

/// Runs `cocoon args`, asserting failure with every needle in stderr.
fn fails(args: &[&str], needles: &[&str]) {
    let (success, out, err) = run(args, &[]);
    assert!(!success, "cocoon {args:?} should fail; printed:\n{out}");
    for needle in needles {
        assert!(err.contains(needle), "stderr of {args:?} lacks {needle:?}:\n{err}");
    }
}

#[test]
fn wallet_and_channel_commands_drive_a_served_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cocoon.toml");
    std::fs::write(&config, "[payments]\nchain = \"off\"\nconfirm_timeout_secs = 30\n").unwrap();
    let config = config.to_str().unwrap();
    let client_dir = tmp.path().join("client");
    let worker_dir = tmp.path().join("worker");
    let (cd, wd) = (client_dir.to_str().unwrap(), worker_dir.to_str().unwrap());
    // The wallet's address needs no chain; both forms parse to the same account.
    let out = ok(&["wallet", "address", "--config", config, "--data-dir", cd]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("UQ") && lines[1].starts_with("0:"), "{out}");
    assert_eq!(
        cocoon::chain::parse_address(lines[0]).unwrap(),
        cocoon::chain::parse_address(lines[1]).unwrap()
    );
    let client_wallet = lines[0].to_owned();
    let out = ok(&["wallet", "address", "--config", config, "--data-dir", wd]);
    let worker_wallet = out.lines().next().unwrap().to_owned();
    assert_ne!(client_wallet, worker_wallet);

    let chain = ChainServe::start(
        &tmp.path().join("chain.json"),
        &[&format!("{client_wallet}=50"), &format!("{worker_wallet}=5")],
    );
    let url = chain.url.as_str();
    let cmd = |args: &[&str], dir: &str| {
        let mut all = args.to_vec();
        all.extend(["--config", config, "--data-dir", dir, "--chain-url", url]);
        run(&all, &[])
    };
    let good = |args: &[&str], dir: &str| {
        let (success, out, err) = cmd(args, dir);
        assert!(success, "cocoon {args:?} failed:\n{err}");
        out
    };

    let balance = good(&["wallet", "balance"], cd);
    assert!(balance.contains("50.000000000 TON") && balance.contains(&client_wallet), "{balance}");

    // Open a channel to the worker (its identity key in hex, its wallet as payout address).
    let worker_id = load_or_create_identity(&worker_dir).unwrap().try_into_ed25519().unwrap();
    let worker_key = hex::encode(worker_id.public().to_bytes());
    let out = good(
        &["channel", "open", "--worker-key", &worker_key, "--worker", &worker_wallet, "--deposit", "2.5"],
        cd,
    );
    let channel = out.trim().to_owned();
    let channel_addr = cocoon::chain::parse_address(&channel).unwrap();
    let status = good(&["channel", "status", &channel], cd);
    assert!(status.contains("deposited     2.500000000 TON") && status.contains("open"), "{status}");
    assert!(status.contains("client side"), "the store's record is shown: {status}");

    let out = good(&["channel", "topup", &channel, "--amount", "1"], cd);
    assert!(out.contains("3.500000000 TON"), "{out}");
    let status = good(&["channel", "status", &channel], cd);
    assert!(status.contains("deposited     3.500000000 TON"), "{status}");
    let list = ok(&["channel", "list", "--config", config, "--data-dir", cd]);
    assert!(
        list.contains(&format!("client channel {channel}")) && list.contains("3.500000000 TON"),
        "{list}"
    );

    // While a node holds the store, the store cannot be read.
    {
        let _held = Store::open(&client_dir).unwrap();
        fails(&["channel", "list", "--data-dir", cd], &["locked", "stop the node"]);
    }

    // The worker's store gets a voucher for 1.2 TON signed by the client's identity key; the
    // worker claims it.
    let params = {
        let book = Store::open(&client_dir).unwrap().payments().unwrap();
        book.client_channels().unwrap().into_iter().find(|c| c.address == channel_addr).unwrap().params
    };
    {
        let client_id = load_or_create_identity(&client_dir).unwrap().try_into_ed25519().unwrap();
        let book = Store::open(&worker_dir).unwrap().payments().unwrap();
        let state = ChannelState { deposited: 3_500_000_000, dispute_window: 86_400, ..Default::default() };
        let mut wc = WorkerChannel::new(params, state).unwrap();
        let v = Voucher { channel: channel_addr.clone(), cumulative: 1_200_000_000, seqno: 1 };
        let v = v.sign(&client_id).unwrap();
        wc.accept(v.clone());
        book.accept_voucher(&StoredChannel { channel: wc, last_voucher_at: 1 }, &v).unwrap();
    }
    let list = ok(&["channel", "list", "--data-dir", wd]);
    assert!(
        list.contains(&format!("worker channel {channel}")) && list.contains("1.200000000 TON"),
        "{list}"
    );
    let out = good(&["channel", "claim", &channel], wd);
    assert!(out.contains("claimed 1.200000000 TON") && out.contains(&worker_wallet), "{out}");
    let status = good(&["channel", "status", &channel], cd);
    assert!(status.contains("claimed       1.200000000 TON"), "{status}");
    let (success, _, err) = cmd(&["channel", "claim", &channel], wd);
    assert!(!success && err.contains("nothing unclaimed"), "{err}");

    // An operator forgives a client that left a request unpaid.
    let client_key = hex::encode(
        load_or_create_identity(&client_dir).unwrap().try_into_ed25519().unwrap().public().to_bytes(),
    );
    Store::open(&worker_dir)
        .unwrap()
        .payments()
        .unwrap()
        .add_debt(&hex::decode(&client_key).unwrap().try_into().unwrap(), 77)
        .unwrap();
    let out = ok(&["channel", "list", "--data-dir", wd]);
    assert!(
        out.contains(&format!("unpaid by client {client_key}")) && out.contains("0.000000077 TON"),
        "{out}"
    );
    let out = ok(&["channel", "forgive", &client_key, "--data-dir", wd]);
    assert!(out.contains("forgave 0.000000077 TON"), "{out}");
    assert_eq!(
        Store::open(&worker_dir)
            .unwrap()
            .payments()
            .unwrap()
            .debt(&hex::decode(&client_key).unwrap().try_into().unwrap())
            .unwrap(),
        0
    );
    let out = ok(&["channel", "forgive", &client_key, "--data-dir", wd]);
    assert!(out.contains("owes nothing"), "{out}");
    let (success, _, err) = cmd(&["channel", "claim", &channel], cd);
    assert!(!success && err.contains("no voucher"), "{err}");

    // Close; finishing fails while the dispute window (a day, the default) is open.
    let out = good(&["channel", "close", &channel], cd);
    assert!(out.contains("closing"), "{out}");
    let status = good(&["channel", "status", &channel], cd);
    assert!(status.contains("closing; can be finished unix 1800086400"), "{status}");
    let (success, _, err) = cmd(&["channel", "close", &channel, "--finish"], cd);
    assert!(!success && err.contains("dispute window still open") && err.contains("1800086400"), "{err}");
    let (success, _, err) = cmd(&["channel", "topup", &channel, "--amount", "1"], cd);
    assert!(!success && err.contains("closing"), "{err}");

    // Bad input.
    let (success, _, err) = cmd(
        &["channel", "open", "--worker-key", &worker_key, "--worker", &worker_wallet, "--deposit", "abc"],
        cd,
    );
    assert!(!success && err.contains("--deposit") && err.contains("abc"), "{err}");
    let (success, _, err) = cmd(&["channel", "status", "not-an-address"], cd);
    assert!(!success && err.contains("not-an-address"), "{err}");
    let (success, _, err) =
        cmd(&["channel", "open", "--worker-key", "abcd", "--worker", &worker_wallet, "--deposit", "1"], cd);
    assert!(!success && err.contains("--worker-key"), "{err}");
    drop(chain);
}

#[test]
fn chain_commands_without_a_chain_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    fails(&["wallet", "balance", "--data-dir", d], &["payments are off", "--chain-url"]);
    fails(
        &[
            "channel",
            "status",
            "0:0000000000000000000000000000000000000000000000000000000000000000",
            "--data-dir",
            d,
        ],
        &["--chain-url"],
    );
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/api/v2");
    fails(
        &["wallet", "balance", "--data-dir", d, "--chain-url", &url],
        &["cannot read the wallet", "unavailable"],
    );
    fails(&["wallet", "balance", "--data-dir", d, "--chain-url", "ftp://x"], &["--chain-url", "not http"]);
    // An empty store lists nothing, successfully.
    let out = ok(&["channel", "list", "--data-dir", d]);
    assert!(out.contains("no payment channels"), "{out}");
}
