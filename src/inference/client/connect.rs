//! Reaching a worker: open an inference stream (looking the worker up on the DHT when no address
//! is known for it) and run the Noise handshake against its attested key, opening a fresh stream
//! when the first one is reset before the worker's handshake reply.
//!
//! Why a reset stream is tried again: the worker's stream library (libp2p-stream) hands inbound
//! streams to the worker through a channel that holds one, and drops a stream that arrives while
//! it is full. Several requests from one client arriving together (a burst of parallel calls) can
//! therefore be reset before the worker ever saw them, which says nothing about the worker. A
//! worker that resets on purpose (its per-peer stream share or budget, or malice) costs the
//! client [`REOPENS`] more streams and a few tens of milliseconds before it counts as a failure.

use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};

use super::{Attempt, InferenceClient, InferenceError, count};
use crate::inference::session::{self, Session, SessionError};
use cocoon_protocol::inference::messages::PROTOCOL;

/// Fresh streams opened after a stream reset before the worker's reply, before that counts as
/// the worker's failure.
pub(super) const REOPENS: u32 = 2;

/// The pause before the first reopen, doubled before each next one: enough for the worker's
/// accept task to take the streams that arrived together.
const REOPEN_PAUSE: Duration = Duration::from_millis(20);

impl InferenceClient {
    /// A session with `worker` whose handshake carried `request_bytes`. The handshake (with any
    /// reopens) must finish by `deadline`; opening each stream has the client's `open` limit.
    pub(super) async fn connect(
        &self,
        worker: PeerId,
        noise_static: &[u8; 32],
        request_bytes: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Session<libp2p::Stream>, Attempt> {
        let failed = |reason: String| InferenceError::WorkerFailed { worker: worker.to_string(), reason };
        let mut reopened = 0;
        loop {
            let stream = tokio::time::timeout(self.limits.open, self.open_stream(worker))
                .await
                .map_err(|_| Attempt::Retry(failed("opening a stream timed out".into())))?
                .map_err(|e| Attempt::Retry(failed(e)))?;
            let shaken =
                tokio::time::timeout_at(deadline, session::initiate(stream, noise_static, request_bytes));
            match shaken.await {
                Err(_) => return Err(Attempt::Retry(InferenceError::Timeout(worker.to_string()))),
                Ok(Ok(session)) => return Ok(session),
                Ok(Err(e @ (SessionError::Io(_) | SessionError::Closed))) if reopened < REOPENS => {
                    let what = "stream reset before the handshake reply; opening another";
                    tracing::debug!(%worker, error = %e, reopened, "{what}");
                    self.metrics.reopened.inc();
                    let pause = REOPEN_PAUSE.saturating_mul(1 << reopened);
                    reopened += 1;
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
                }
                Ok(Err(e)) => return Err(Attempt::Retry(failed(e.to_string()))),
            }
        }
    }

    /// Open an inference stream to `worker`; when that fails (typically: no address known for
    /// it), find the worker through the DHT and try once more.
    async fn open_stream(&self, worker: PeerId) -> Result<libp2p::Stream, String> {
        let mut control = self.network.streams();
        let first = match control.open_stream(worker, StreamProtocol::new(PROTOCOL)).await {
            Ok(stream) => return Ok(stream),
            // Connected, but the worker does not speak this version: no lookup can change that.
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                return Err(format!("the worker does not speak {PROTOCOL} (another protocol version)"));
            }
            Err(e) => e.to_string(),
        };
        tracing::debug!(%worker, error = %first, "cannot open a stream; looking the worker up");
        let located = self.network.locate(worker).await;
        let outcome = if located.is_ok() { "found" } else { "not_found" };
        count(&self.metrics.worker_lookups, outcome);
        located.map_err(|e| format!("{first}; then {e}"))?;
        control.open_stream(worker, StreamProtocol::new(PROTOCOL)).await.map_err(|e| e.to_string())
    }
}
