//! Where cocoon keeps files by default, and how it makes the directories it writes into.
//!
//! A new user's machine has none of them: no data directory, no devnet directory, no model cache.
//! Everything that writes a file under a path the user did not create goes through
//! [`create_dir`] or [`create_parent`], which create missing directories (and their missing
//! parents) readable by their owner only, as the XDG base-directory specification asks, and
//! leave the permissions of directories that already exist alone (`--out /tmp/quote.bin` must not
//! change `/tmp`).
//!
//! | directory | default |
//! |---|---|
//! | data (keys, store, devnet state) | `$XDG_DATA_HOME/cocoon`, else `$HOME/.local/share/cocoon`, else `./cocoon-data` |
//! | cache (downloaded models) | `$XDG_CACHE_HOME/cocoon`, else `$HOME/.cache/cocoon`, else `./cocoon-cache` |

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default data directory, from the process environment.
pub fn data_dir() -> PathBuf {
    data_dir_from(env("XDG_DATA_HOME"), env("HOME"))
}

/// The default cache directory, from the process environment.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(env("XDG_CACHE_HOME"), env("HOME"))
}

/// The data directory given `XDG_DATA_HOME` and `HOME`.
pub fn data_dir_from(xdg_data_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    base_dir(xdg_data_home, home, ".local/share").unwrap_or_else(|| PathBuf::from("cocoon-data"))
}

/// The cache directory given `XDG_CACHE_HOME` and `HOME`.
pub fn cache_dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    base_dir(xdg_cache_home, home, ".cache").unwrap_or_else(|| PathBuf::from("cocoon-cache"))
}

/// `<xdg>/cocoon` when the XDG variable is an absolute path (the specification says to ignore a
/// relative one), else `<home>/<under_home>/cocoon`.
fn base_dir(xdg: Option<OsString>, home: Option<OsString>, under_home: &str) -> Option<PathBuf> {
    let xdg = xdg.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = xdg.or_else(|| home.map(|h| PathBuf::from(h).join(under_home)))?;
    Some(base.join("cocoon"))
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Create `dir` and any missing parents; each directory created is owner-only (0700). Existing
/// directories are left as they are.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Create the directory that will hold the file `path` (see [`create_dir`]).
pub fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => create_dir(parent),
        None => Ok(()),
    }
}

/// Write `bytes` to `path`, creating its directory first.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_parent(path)?;
    std::fs::write(path, bytes)
}

/// The file in a data directory where a running node records its admin endpoint's address (one
/// line, `IP:PORT`), so commands find the node from its data directory alone; removed when the
/// node stops.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Record `addr` as the admin endpoint of the node running on `data_dir`.
pub fn record_admin_addr(data_dir: &Path, addr: SocketAddr) -> io::Result<()> {
    std::fs::write(data_dir.join(ADMIN_ADDR_FILE), format!("{addr}\n"))
}

/// The admin endpoint recorded in `data_dir`, if any (a node that crashed leaves a stale one:
/// whoever uses it says so when nothing answers there).
pub fn recorded_admin_addr(data_dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(data_dir.join(ADMIN_ADDR_FILE)).ok()?.trim().parse().ok()
}

/// Remove the record of `addr` from `data_dir` (a node stopping; another address is left alone).
pub fn forget_admin_addr(data_dir: &Path, addr: SocketAddr) {
    if recorded_admin_addr(data_dir) == Some(addr) {
        let _ = std::fs::remove_file(data_dir.join(ADMIN_ADDR_FILE));
    }
}

/// The file in a data directory holding the running node's admin token (owner-only): the
/// admin endpoint's few operations that change something (closing a channel) need it, so only
/// who can read the data directory may ask for them. Removed when the node stops.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Record `token` as the admin token of the node running on `data_dir` (mode 0600).
pub fn record_admin_token(data_dir: &Path, token: &str) -> io::Result<()> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let _ = std::fs::remove_file(&path); // a stale file keeps its mode; start afresh
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    io::Write::write_all(&mut options.open(path)?, format!("{token}\n").as_bytes())
}

/// The admin token recorded in `data_dir`, if any.
pub fn recorded_admin_token(data_dir: &Path) -> Option<String> {
    let token = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE)).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Remove the admin token `token` from `data_dir` (another node's is left alone).
pub fn forget_admin_token(data_dir: &Path, token: &str) {
    if recorded_admin_token(data_dir).as_deref() == Some(token) {
        let _ = std::fs::remove_file(data_dir.join(ADMIN_TOKEN_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn xdg_variables_win_over_home_and_relative_ones_are_ignored() {
        assert_eq!(data_dir_from(os("/x/data"), os("/home/u")), PathBuf::from("/x/data/cocoon"));
        assert_eq!(data_dir_from(None, os("/home/u")), PathBuf::from("/home/u/.local/share/cocoon"));
        assert_eq!(data_dir_from(os("rel"), os("/home/u")), PathBuf::from("/home/u/.local/share/cocoon"));
        assert_eq!(data_dir_from(None, None), PathBuf::from("cocoon-data"));
        assert_eq!(cache_dir_from(os("/x/cache"), os("/home/u")), PathBuf::from("/x/cache/cocoon"));
        assert_eq!(cache_dir_from(None, os("/home/u")), PathBuf::from("/home/u/.cache/cocoon"));
        assert_eq!(cache_dir_from(None, None), PathBuf::from("cocoon-cache"));
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn missing_directories_are_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a/b/c/file.json");
        write_file(&file, b"{}").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");
        #[cfg(unix)]
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(dir)), 0o700, "{dir}");
        }
        // Again, now that everything exists.
        write_file(&file, b"[]").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"[]");
    }

    #[cfg(unix)]
    #[test]
    fn existing_directories_keep_their_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        write_file(&tmp.path().join("quote.bin"), b"q").unwrap();
        create_dir(tmp.path()).unwrap();
        assert_eq!(mode(tmp.path()), 0o755);
    }

    #[test]
    fn the_admin_token_is_owner_only_and_only_its_own_node_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        record_admin_token(tmp.path(), "old").unwrap();
        record_admin_token(tmp.path(), "abc").unwrap();
        assert_eq!(recorded_admin_token(tmp.path()).as_deref(), Some("abc"));
        #[cfg(unix)]
        assert_eq!(mode(&tmp.path().join(ADMIN_TOKEN_FILE)), 0o600);
        forget_admin_token(tmp.path(), "old");
        assert!(recorded_admin_token(tmp.path()).is_some(), "another node's token stays");
        forget_admin_token(tmp.path(), "abc");
        assert_eq!(recorded_admin_token(tmp.path()), None);
    }

    #[test]
    fn a_bare_file_name_needs_no_directory() {
        create_parent(Path::new("file.bin")).unwrap();
        create_dir(Path::new("")).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        assert!(write_file(&tmp.path().join("f/inner.json"), b"{}").is_err());
    }
}
