//! Logging set-up: `tracing` to stderr, as text or JSON lines.
//!
//! stdout is reserved for machine-readable output (`cocoon id`, `config dump`, the node's one
//! `ready` line), so scripts and tests can read it without parsing logs. Text logs are coloured
//! only when stderr is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>), so
//! `cocoon devnet 2> log` writes plain lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LogSection};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init(log: &LogSection) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_colour());
    let quiet = filter_fn(|meta| !is_cpu_paged_attention_warning(meta));
    let _ = match log.format {
        LogFormat::Text => builder.finish().with(quiet).try_init(),
        LogFormat::Json => builder.json().finish().with(quiet).try_init(),
    };
}

/// mistral.rs 0.8.1's GGUF loader warns "Device mapping contains a mix of GPU and CPU. There is no
/// CPU support for PagedAttention" whenever a model is mapped to the CPU, even on a machine with no
/// GPU and with PagedAttention never asked for (its check is not gated on a PagedAttention config;
/// no builder setting avoids it). A new user reads it as a problem with their machine, so it is
/// dropped: the only warnings of that module are this one and one about adapter models, which
/// cocoon does not load. The engine's device is logged with "model loaded in mistral.rs".
fn is_cpu_paged_attention_warning(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "mistralrs_core::pipeline::gguf" && *meta.level() == tracing::Level::WARN
}

/// Whether logs written to stderr may be coloured (for every binary of the workspace that logs
/// there: the node and simnet).
pub fn stderr_colour() -> bool {
    use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"))
}

/// Whether log lines carry ANSI colour codes: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string.
fn use_colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some("".into())));
    }
}
