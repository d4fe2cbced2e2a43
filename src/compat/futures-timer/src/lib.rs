//! futures-timer 3.0's `Delay` on Tokio's timer (see this package's manifest for why).
//!
//! A `Delay` made inside a Tokio runtime is driven by that runtime's timer (the runtime must have
//! time enabled); one made outside any runtime is driven by a small runtime of this crate's own
//! (one thread, started on first use), as futures-timer's own helper thread did.

#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::time::{Instant, Sleep};

/// A future that completes once, after a given duration (futures-timer's API).
pub struct Delay {
    sleep: Pin<Box<Sleep>>,
}

impl Delay {
    /// A delay that completes `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        // Inside a runtime (every libp2p timer in cocoon) `sleep` binds to its timer directly;
        // only outside one is this crate's own runtime entered first.
        let sleep = match Handle::try_current() {
            Ok(_) => tokio::time::sleep(dur),
            Err(_) => {
                let _entered = fallback().enter();
                tokio::time::sleep(dur)
            }
        };
        Delay { sleep: Box::pin(sleep) }
    }

    /// Make the delay complete `dur` from now instead, whether or not it already completed.
    pub fn reset(&mut self, dur: Duration) {
        self.sleep.as_mut().reset(deadline(dur));
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.sleep.as_mut().poll(cx)
    }
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delay").field("deadline", &self.sleep.deadline()).finish()
    }
}

/// `now + dur`, or about 30 years from now where that overflows (as Tokio's own `sleep` does).
fn deadline(dur: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(dur).unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// The runtime behind delays made outside any runtime. A runtime built without time enabled makes
/// Tokio panic in `Delay::new`, saying so; every runtime in cocoon enables it.
fn fallback() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("futures-timer")
            .enable_time()
            .build()
            // futures-timer itself panics when it cannot start its helper thread.
            .expect("futures-timer shim: cannot start its timer thread")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn completes_after_its_duration_and_again_after_a_reset() {
        let start = Instant::now();
        let mut delay = Delay::new(Duration::from_secs(5));
        (&mut delay).await;
        assert!(start.elapsed() >= Duration::from_secs(5));

        delay.reset(Duration::from_secs(3));
        let before = Instant::now();
        (&mut delay).await;
        assert!(before.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_to_an_overflowing_duration_never_completes_instead_of_panicking() {
        let mut delay = Delay::new(Duration::ZERO);
        delay.reset(Duration::MAX);
        let raced = tokio::time::timeout(Duration::from_secs(3600), &mut delay).await;
        assert!(raced.is_err(), "a Duration::MAX delay completed");
    }

    #[test]
    fn works_outside_any_runtime_on_its_own_timer_thread() {
        assert!(Handle::try_current().is_err());
        let delay = Delay::new(Duration::from_millis(1));
        futures::executor::block_on(delay);
    }
}
