//! Helpers for tests that run the real `cocoon` binary: spawn a node, read its `ready` line, query
//! its admin endpoint, signal it, and wait for conditions against a deadline (never a fixed sleep).
#![allow(dead_code)]

pub mod adversary;
pub mod chain;
pub mod dcap_samples;
pub mod differential;
pub mod gpu_samples;
pub mod inference;
pub mod inproc;
pub mod npm;
pub mod payments;
pub mod sev_samples;
pub mod tiny_gguf;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use cocoon::node::Ready;

/// The first line `child` prints on its (piped) stdout, or "" if none comes within `limit`.
pub fn first_line(child: &mut Child, limit: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).unwrap_or_default()
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cocoon")
}

/// A `cocoon` command with a quiet, plain log setup, and client nodes' OpenAI API on an
/// OS-chosen port (tests run in parallel; the default port 8080 would collide).
pub fn cocoon() -> Command {
    let mut cmd = Command::new(bin());
    cmd.env("RUST_LOG", "info,libp2p=warn")
        .env_remove("COCOON_CONFIG")
        .env("COCOON_API_LISTEN", "127.0.0.1:0");
    cmd
}

/// A node process; killed when dropped.
pub struct NodeProc {
    pub child: Child,
    pub ready: Ready,
    pub data_dir: PathBuf,
    stderr: PathBuf,
}

impl NodeProc {
    /// Start `cocoon node` with loopback ports chosen by the OS, plus `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProc {
        let stderr = data_dir.with_extension("log");
        let mut cmd = cocoon();
        cmd.args(["node", "--admin-listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        cmd.args(extra).stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr).expect("log file"));
        let mut child = cmd.spawn().expect("spawn cocoon node");
        let line = first_line(&mut child, Duration::from_secs(30));
        let ready: Ready = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "node did not print a ready line ({e}): {line:?}\nlog:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        NodeProc { child, ready, data_dir: data_dir.to_owned(), stderr }
    }

    pub fn peer_id(&self) -> String {
        self.ready.peer_id.clone()
    }

    /// `<first listen addr>/p2p/<peer id>`
    pub fn dial_addr(&self) -> String {
        format!("{}/p2p/{}", self.ready.listen[0], self.ready.peer_id)
    }

    pub fn admin(&self) -> SocketAddr {
        self.ready.admin.expect("admin endpoint enabled")
    }

    /// `(connected, routing table)` peer ids from `/peers`.
    fn peers(&self) -> (HashSet<String>, HashSet<String>) {
        let (_, body) = http_get(self.admin(), "/peers");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let ids = |key: &str| -> HashSet<String> {
            v[key].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect()
        };
        (ids("connected"), ids("routing_table"))
    }

    /// Peers this node knows: connected or in its routing table.
    pub fn known_peers(&self) -> HashSet<String> {
        let (connected, routing) = self.peers();
        connected.union(&routing).cloned().collect()
    }

    pub fn connected(&self) -> HashSet<String> {
        self.peers().0
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit, up to `limit`; returns the status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0; returns status code and body (0 and empty on connection failure).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let response = String::from_utf8_lossy(&bytes);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Poll `check` every 100 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Write a bootstrap list file with a comment and the given entries.
pub fn write_list(path: &Path, entries: &[String]) {
    let mut text = String::from("# written by the test\n\n");
    for e in entries {
        text.push_str(e);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write list");
}

/// Run `cocoon` with `args` to completion; returns (success, stdout, stderr).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = cocoon();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cocoon");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
