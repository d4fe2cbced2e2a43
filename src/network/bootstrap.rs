//! Bootstrap lists: where a node finds its first peers.
//!
//! A list file has one multiaddr per line, each ending in `/p2p/<peer id>` (a node must know whom
//! it is dialling, or anyone on that address could pose as the bootstrap node). `#` starts a
//! comment, to the end of the line; blank lines are ignored. DNS multiaddrs (`/dns4/...`) are
//! allowed. A bad line is an error naming the file and line number. The format is documented for
//! operators in `bootstrap/README.md`.

use std::path::{Path, PathBuf};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// One bootstrap peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    /// Who it is.
    pub peer_id: PeerId,
    /// Where to dial it (ends in `/p2p/<peer_id>`).
    pub addr: Multiaddr,
}

/// Why a bootstrap entry is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The list file could not be read.
    #[error("cannot read bootstrap list {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a list file is not a valid entry.
    #[error("{path}:{line}: {problem}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A multiaddr given directly (flag or config) is not a valid entry.
    #[error("bootstrap peer {entry}: {problem}")]
    BadEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The peer id at the end of `addr` (`/p2p/<id>`), if any.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Check one entry: it must name its peer.
pub fn entry(addr: Multiaddr) -> Result<BootstrapPeer, String> {
    match peer_id_of(&addr) {
        Some(peer_id) => Ok(BootstrapPeer { peer_id, addr }),
        None => Err(format!("`{addr}` does not end in /p2p/<peer id>")),
    }
}

/// Parse the text of a list file; `path` is only used in error messages.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<BootstrapPeer>, BootstrapError> {
    let mut peers = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |problem: String| BootstrapError::BadLine { path: path.to_owned(), line: index + 1, problem };
        let addr: Multiaddr = line.parse().map_err(|e| bad(format!("invalid multiaddr `{line}`: {e}")))?;
        peers.push(entry(addr).map_err(bad)?);
    }
    Ok(peers)
}

/// Read and parse a list file.
pub fn read_list(path: &Path) -> Result<Vec<BootstrapPeer>, BootstrapError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| BootstrapError::Read { path: path.to_owned(), source })?;
    parse_list(path, &text)
}

/// All bootstrap peers from direct entries and list files, without duplicates, in order.
pub fn collect(addrs: &[Multiaddr], files: &[PathBuf]) -> Result<Vec<BootstrapPeer>, BootstrapError> {
    let mut peers = Vec::new();
    for addr in addrs {
        let peer = entry(addr.clone())
            .map_err(|problem| BootstrapError::BadEntry { entry: addr.to_string(), problem })?;
        peers.push(peer);
    }
    for file in files {
        peers.extend(read_list(file)?);
    }
    let mut seen = std::collections::HashSet::new();
    peers.retain(|p| seen.insert(p.addr.clone()));
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    #[test]
    fn parses_entries_comments_and_blank_lines() {
        let text = format!(
            "# local\n\n/ip4/127.0.0.1/tcp/4001/p2p/{ID}  # main\n   \n/dns4/boot.example/udp/4001/quic-v1/p2p/{ID}\n"
        );
        let peers = parse_list(Path::new("x.txt"), &text).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].peer_id.to_string(), ID);
        assert!(peers[1].addr.to_string().starts_with("/dns4/boot.example"));
    }

    #[test]
    fn bad_lines_are_named_by_file_and_number() {
        let text = format!("# ok\n/ip4/127.0.0.1/tcp/4001/p2p/{ID}\n/ip4/999.0.0.1/tcp/1/p2p/{ID}\n");
        let err = parse_list(Path::new("list.txt"), &text).unwrap_err().to_string();
        assert!(err.starts_with("list.txt:3: invalid multiaddr `/ip4/999.0.0.1"), "{err}");

        let err = parse_list(Path::new("l.txt"), "/ip4/127.0.0.1/tcp/4001\n").unwrap_err().to_string();
        assert!(err.contains("l.txt:1") && err.contains("/p2p/<peer id>"), "{err}");
    }

    #[test]
    fn collect_dedupes_and_rejects_anonymous_direct_entries() {
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{ID}").parse().unwrap();
        assert_eq!(collect(&[a.clone(), a.clone()], &[]).unwrap().len(), 1);
        let anon: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(matches!(collect(&[anon], &[]), Err(BootstrapError::BadEntry { .. })));
        let missing = collect(&[], &[PathBuf::from("/nonexistent/list.txt")]).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/list.txt"), "{missing}");
    }
}
