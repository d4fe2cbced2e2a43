//! Logging set-up: `tracing` to stderr, as text or JSON lines.
//!
//! stdout is reserved for machine-readable output (`cocoon id`, `config dump`, the node's one
//! `ready` line), so scripts and tests can read it without parsing logs.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init(log: &LogSection) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
