//! The command line: identity, configuration precedence and dump, and bad input that must exit
//! non-zero with a message naming the problem.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use cocoon::config::{Config, KadMode, Role};
use common::{NodeProc, run};

const ID: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

fn assert_fails_with(args: &[&str], needles: &[&str]) {
    let (ok, _, stderr) = run(args, &[]);
    assert!(!ok, "cocoon {args:?} should fail");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr of {args:?} lacks {needle:?}:\n{stderr}");
    }
}

#[test]
fn id_is_created_once_and_printed_stably() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok1, first, _) = run(&["id", "--data-dir", d], &[]);
    let (ok2, second, _) = run(&["id", "--data-dir", d], &[]);
    assert!(ok1 && ok2);
    assert!(first.trim().starts_with("12D3KooW"), "{first}");
    assert_eq!(first, second);
}

#[test]
fn config_dump_applies_file_then_env_then_flags_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cocoon.toml");
    std::fs::write(
        &file,
        "[node]\nroles = [\"worker\"]\ndata_dir = \"/from/file\"\n[network]\ntarget_connections = 7\nkad_mode = \"client\"\n[worker]\npayout_address = \"UQ-test\"\ntee = \"simulated\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(
        &["config", "dump", "--config", file.to_str().unwrap(), "--data-dir", "/from/flag"],
        &[("COCOON_DATA_DIR", "/from/env"), ("COCOON_KAD_MODE", "server")],
    );
    assert!(ok, "{err}");
    let config = Config::parse(&out).expect("dump parses back");
    assert_eq!(config.node.roles, vec![Role::Worker], "file value kept");
    assert_eq!(config.network.target_connections, 7, "file value kept");
    assert_eq!(config.network.kad_mode, KadMode::Server, "env beats file");
    assert_eq!(config.node.data_dir.to_str(), Some("/from/flag"), "flag beats env");
    // And dumping the dump gives the same text.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let (_, out2, _) = run(&["config", "dump", "--config", again.to_str().unwrap()], &[]);
    assert_eq!(Config::parse(&out2).unwrap(), config);
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[network]\nlisten_adress = []\n").unwrap();
    assert_fails_with(
        &["node", "--config", file.to_str().unwrap()],
        &["bad.toml", "unknown field `listen_adress`"],
    );
    assert_fails_with(&["config", "dump", "--config", file.to_str().unwrap()], &["listen_adress"]);
}

#[test]
fn malformed_multiaddr_in_bootstrap_file_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("# peers\n/ip4/127.0.0.1/tcp/4001/p2p/{ID}\n/ip4/127.0.0.1/tcp/notaport/p2p/{ID}\n"),
    )
    .unwrap();
    let data = dir.path().join("d");
    assert_fails_with(
        &["node", "--data-dir", data.to_str().unwrap(), "--bootstrap", list.to_str().unwrap()],
        &["list.txt:3", "invalid multiaddr", "notaport"],
    );
    assert_fails_with(
        &["node", "--data-dir", data.to_str().unwrap(), "--bootstrap", "/ip4/127.0.0.1/tcp/4001"],
        &["/ip4/127.0.0.1/tcp/4001", "/p2p/<peer id>"],
    );
}

#[test]
fn occupied_listen_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    assert_fails_with(
        &[
            "node",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            &listen,
        ],
        &[&format!("cannot listen on {listen}"), "in use"],
    );
    let admin = format!("127.0.0.1:{port}");
    assert_fails_with(
        &[
            "node",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--admin-listen",
            &admin,
        ],
        &[&format!("admin endpoint on {admin}"), "in use", "--admin-listen 127.0.0.1:PORT"],
    );
    // A client node's OpenAI API on a taken port (a running devnet's 8080, say): the message names
    // the flag that moves it.
    assert_fails_with(
        &[
            "node",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--admin-listen",
            "127.0.0.1:0",
            "--api-listen",
            &admin,
        ],
        &[&format!("cannot listen for the API on {admin}"), "in use", "--api-listen 127.0.0.1:PORT"],
    );
}

#[test]
fn locked_data_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shared");
    let mut first = NodeProc::start(&data, &[]);
    assert_fails_with(
        &[
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &["is locked", "another cocoon process"],
    );
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(5)).is_some_and(|(s, _)| s.success()));
}

#[test]
fn worker_misconfiguration_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("w");
    let d = data.to_str().unwrap();
    let base = [
        "node",
        "--role",
        "worker",
        "--data-dir",
        d,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    assert_fails_with(&base, &["worker.payout_address"]);

    // A TDX worker outside a TD must say what is missing rather than start without evidence.
    // (Inside a real TD the node would start and run, so that half only runs elsewhere.)
    if std::path::Path::new(cocoon::attestation::provider::CONFIGFS_TSM_REPORT).exists() {
        eprintln!("configfs-tsm present: skipping the outside-a-TD check");
        return;
    }
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, "[worker]\npayout_address = \"UQ-test\"\ntee = \"tdx\"\n").unwrap();
    let with_config = [&base[..], &["--config", config.to_str().unwrap()]].concat();
    assert_fails_with(
        &with_config,
        &["cannot produce attestation evidence", "configfs-tsm is not available"],
    );
}

#[test]
fn attest_show_asks_the_running_worker_for_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("w");
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "[node]\nroles = [\"worker\"]\n[worker]\npayout_address = \"UQ-test\"\ntee = \"simulated\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let mut worker = common::NodeProc::start(&data, &["--config", c]);
    let admin = worker.admin();
    assert!(common::wait_until(Duration::from_secs(20), || {
        common::http_get(admin, "/attestation/record").0 == 200
    }));
    let d = data.to_str().unwrap();
    let a = admin.to_string();
    let (ok, out, err) =
        common::run(&["attest", "show", "--config", c, "--data-dir", d, "--admin-listen", &a], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("source:         the running node"), "{out}");
    assert!(out.contains(&format!("peer id:        {}", worker.peer_id())), "{out}");
    assert!(out.contains("evidence:       SIMULATED"), "{out}");

    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(5)).is_some_and(|(s, _)| s.success()));
    let (ok, out, err) =
        common::run(&["attest", "show", "--config", c, "--data-dir", d, "--admin-listen", &a], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("source:         built now") && out.contains(&worker.peer_id()), "{out}");
}

#[test]
fn a_node_pointed_at_the_devnet_without_allow_simulated_is_told_why_it_lists_no_worker() {
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/bootstrap/local.txt");
    let hint = "pass --allow-simulated";
    let dir = tempfile::tempdir().unwrap();
    let strict = NodeProc::start(&dir.path().join("strict"), &["--bootstrap", list]);
    let log = strict.log();
    assert!(log.contains("joins `cocoon devnet`") && log.contains(hint), "{log}");
    // A log written to a file carries no colour codes.
    assert!(!log.contains('\u{1b}'), "{log}");
    let open = NodeProc::start(&dir.path().join("open"), &["--bootstrap", list, "--allow-simulated"]);
    let log = open.log();
    assert!(log.contains("accepts SIMULATED attestation evidence") && !log.contains(hint), "{log}");
}
