//! HTTP plumbing shared by the node: the error text of its HTTP clients (PCCS, TON Center), and
//! [`serve`], the connection loop of its HTTP servers (admin endpoint, OpenAI-compatible API)
//! with a connection cap and read deadlines.
//!
//! `axum::serve` accepts every connection and sets no timer, so hyper's header-read timeout never
//! runs: a client that opens connections and trickles headers (slowloris) or never finishes a
//! body holds them forever. [`serve`] runs hyper itself with [`ServerLimits`]: at most
//! `max_connections` connections (one more is answered `503` and closed), a deadline for the
//! request headers (which also closes idle kept-alive connections) and one for the request body
//! (`408`). Nothing bounds how long a response takes, so a long streamed answer (SSE) is never
//! cut off.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::config::HttpSection;

/// A reqwest error with its causes (connection refused, DNS failure, timeout, certificate
/// problem, …), each cause once.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// What one HTTP server allows its clients (from the `[http]` config section, whose field
/// documentation gives the defaults and their reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; one more is answered `503` and closed.
    pub max_connections: usize,
    /// Time to send a request's headers (and the longest a kept-alive connection idles).
    pub header_read_timeout: Duration,
    /// Time to send a request's body once its headers are in.
    pub body_read_timeout: Duration,
}

impl ServerLimits {
    /// The limits the `[http]` section configures.
    pub fn from_config(http: &HttpSection) -> Self {
        Self {
            max_connections: http.max_connections.max(1),
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(http.body_read_timeout_secs.max(1)),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self::from_config(&HttpSection::default())
    }
}

/// How long a refused connection gets to take its `503` before it is dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of file descriptors, say), so the loop gives connections
/// time to close instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);
const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

/// Serve `app` on `listener` under `limits` until `shutdown` resolves; then stop accepting, let
/// every connection finish its response, and return once they have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Refusals are bounded too: beyond this many in flight, a connection is simply dropped.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            let (app, stop) = (app.clone(), stop_rx.clone());
            connections.spawn(async move {
                connection(stream, app, limits, stop).await;
                drop(permit);
            });
        } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
            connections.spawn(async move {
                refuse(stream).await;
                drop(permit);
            });
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Answer `503` and close: the server holds its maximum of connections.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await
    })
    .await;
}

/// One HTTP/1.1 connection with the header deadline, until it closes or the server stops.
async fn connection(stream: TcpStream, app: Router, limits: ServerLimits, mut stop: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        respond(app.clone(), request, limits.body_read_timeout)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Run `app` on `request` with its body under the body deadline; a body cut off by it is
/// answered `408` and the connection is closed.
async fn respond(
    app: Router,
    request: Request<Incoming>,
    body_timeout: Duration,
) -> Result<Response, Infallible> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| DeadlineBody::new(body, body_timeout, timed_out.clone()));
    let response = app.oneshot(request).await?;
    if timed_out.load(Ordering::Relaxed) {
        let mut late = (StatusCode::REQUEST_TIMEOUT, "request body not received in time").into_response();
        late.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(late);
    }
    Ok(response)
}

/// The request body was not received before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTimedOut(Duration);

/// A request body that fails once `timeout` has passed since the request's headers were read.
struct DeadlineBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Self { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)), timed_out }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
