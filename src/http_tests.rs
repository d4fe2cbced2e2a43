//! Tests of [`super::serve`]'s limits, with raw TCP clients so that every byte's timing is ours.

use std::time::Instant;

use axum::body::Bytes;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn limits(max_connections: usize) -> ServerLimits {
    ServerLimits { max_connections, header_read_timeout: SECOND, body_read_timeout: SECOND }
}

/// A server with `/hello`, `/echo` (reads the body) and `/stream` (a chunk every 300 ms for
/// 3 s, longer than either read deadline).
async fn start(limits: ServerLimits) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let stream = || async {
        let chunks = futures::stream::unfold(0u32, |n| async move {
            if n == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some((Ok::<_, Infallible>(Bytes::from(format!("data: {n}\n\n"))), n + 1))
        });
        axum::body::Body::from_stream(chunks)
    };
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/stream", get(stream));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Read until the server closes the connection (or `limit` passes); what arrived.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await.is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn trickled_headers_are_cut_off_at_the_header_deadline() {
    let (addr, _stop) = start(limits(8)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut slow, 5 * SECOND).await;
    assert!(closed, "a connection that never finished its headers was held open");
    assert!(started.elapsed() < 3 * SECOND);
    // An idle kept-alive connection goes the same way.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (answer, closed) = read_to_close(&mut idle, 5 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");
    assert!(closed, "an idle kept-alive connection was held open");
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_answered_503_and_a_freed_slot_serves_again() {
    let (addr, _stop) = start(ServerLimits { header_read_timeout: 30 * SECOND, ..limits(2) }).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n").await.unwrap(); // headers unfinished
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let (answer, closed) = read_to_close(&mut third, 5 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(closed);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_to_close(&mut again, 5 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_not_finished_by_its_deadline_is_answered_408() {
    let (addr, _stop) = start(limits(8)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789").await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s, 5 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed && started.elapsed() < 3 * SECOND);
    let mut whole = TcpStream::connect(addr).await.unwrap();
    let request = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    whole.write_all(request).await.unwrap();
    let (answer, _) = read_to_close(&mut whole, 5 * SECOND).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn a_streamed_answer_longer_than_every_deadline_is_not_cut_off() {
    let (addr, _stop) = start(limits(8)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s, 10 * SECOND).await;
    assert!(closed && started.elapsed() >= 2 * SECOND);
    assert!(answer.contains("data: 0") && answer.contains("data: 9"), "stream cut short: {answer}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, limits(4), async move {
        let _ = stopped.await;
    }));
    let _ = stop.send(());
    tokio::time::timeout(5 * SECOND, server).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}
