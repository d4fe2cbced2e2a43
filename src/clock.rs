//! Wall-clock time for the I/O shell. Protocol code never reads the clock: it is handed `now`.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds on a monotonic clock that starts near zero when the process first asks (for
/// budgets and other rates that must not jump with the wall clock). Follows tokio's clock, so
/// tests with paused time control it.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| tokio::time::Instant::now().into_std());
    let now = tokio::time::Instant::now().into_std();
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}
