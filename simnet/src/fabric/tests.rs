//! The fabric on its own: latency lower bounds and in-order delivery, partitions that refuse dials
//! and cut links until healed, and the window that holds a writer back while nobody reads.
//!
//! Timings are only checked from below (data never arrives before its scheduled time), so a busy
//! machine cannot make these tests fail.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use libp2p::PeerId;
use libp2p::core::muxing::StreamMuxer;

use super::pipe::WINDOW;
use super::{Fabric, LinkModel, SimConnection, SimStream};

const ONE_WAY_MS: f64 = 40.0;

fn fabric(jitter: f64) -> Fabric {
    let model = LinkModel {
        latency_ms: vec![vec![1.0, ONE_WAY_MS], vec![ONE_WAY_MS, 1.0]],
        jitter,
        loss: 0.0,
        stream_loss: 0.0,
        bandwidth_bytes_per_sec: 0.0,
    };
    Fabric::new(model, 1)
}

/// Two nodes in different regions; `b` listens on port 2.
fn pair(f: &Fabric) -> (PeerId, PeerId, tokio::sync::mpsc::Receiver<super::transport::Incoming>) {
    let (a, b) = (PeerId::random(), PeerId::random());
    f.place(a, 0);
    f.place(b, 1);
    let (_, rx) = f.listen(b, 2).unwrap();
    (a, b, rx)
}

async fn outbound(conn: &mut SimConnection) -> SimStream {
    poll_fn(|cx| Pin::new(&mut *conn).poll_outbound(cx)).await.unwrap()
}

async fn inbound(conn: &mut SimConnection) -> SimStream {
    poll_fn(|cx| Pin::new(&mut *conn).poll_inbound(cx)).await.unwrap()
}

#[tokio::test]
async fn the_dial_takes_a_round_trip_and_data_one_way_in_order() {
    let f = fabric(0.5);
    let (a, b, mut listener) = pair(&f);
    let (remote, mut mine, handshake) = f.connect(a, 1, 2).unwrap();
    assert_eq!(remote, b, "the fabric vouches for the listener's id");
    assert_eq!(handshake, Duration::from_secs_f64(2.0 * ONE_WAY_MS / 1000.0));
    let incoming = listener.recv().await.unwrap();
    assert_eq!(incoming.dialer, a);
    let mut theirs = incoming.conn;

    let started = tokio::time::Instant::now();
    let mut out = outbound(&mut mine).await;
    let chunks: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    for chunk in &chunks {
        out.write_all(chunk).await.unwrap();
    }
    out.close().await.unwrap();
    let mut inp = inbound(&mut theirs).await;
    let mut got = Vec::new();
    inp.read_to_end(&mut got).await.unwrap();
    // With ±50 % jitter nothing arrives before half the one-way latency, and the bytes keep
    // their order although each write's delay differs.
    assert!(started.elapsed() >= Duration::from_secs_f64(ONE_WAY_MS * 0.5 / 1000.0));
    assert_eq!(got, chunks.concat());
    assert_eq!(f.stats().connections, 1);
    assert!(f.stats().bytes >= got.len() as u64);
}

#[tokio::test]
async fn a_partition_refuses_dials_and_cuts_links_until_healed() {
    let f = fabric(0.0);
    let (a, b, mut listener) = pair(&f);
    let (_, mut mine, _) = f.connect(a, 1, 2).unwrap();
    let mut theirs = listener.recv().await.unwrap().conn;
    let mut out = outbound(&mut mine).await;

    let cut = f.split(HashMap::from([(a, 0), (b, 1)]));
    assert_eq!(cut, 1);
    let refused = f.connect(a, 1, 2).err().unwrap();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(refused.to_string().contains("partition"), "{refused}");
    let broken = out.write_all(b"across").await.unwrap_err();
    assert!(broken.to_string().contains("connection closed"), "{broken}");
    assert!(poll_fn(|cx| Pin::new(&mut theirs).poll_inbound(cx)).await.is_err());

    f.heal();
    let (remote, _, _) = f.connect(a, 1, 2).unwrap();
    assert_eq!(remote, b);
    assert_eq!(f.stats().dials_refused, 1);
}

#[tokio::test]
async fn a_full_window_holds_the_writer_back_until_the_reader_reads() {
    let f = fabric(0.0);
    let (a, _, mut listener) = pair(&f);
    let (_, mut mine, _) = f.connect(a, 1, 2).unwrap();
    let mut theirs = listener.recv().await.unwrap().conn;
    let mut out = outbound(&mut mine).await;

    out.write_all(&vec![7u8; WINDOW]).await.unwrap();
    // The window is full: the next write cannot complete.
    let mut blocked = Box::pin(async { out.write_all(&[8u8; 1024]).await });
    assert!((&mut blocked).now_or_never().is_none(), "a writer ran past the window");

    let mut inp = inbound(&mut theirs).await;
    let mut first = vec![0u8; 64 * 1024];
    inp.read_exact(&mut first).await.unwrap();
    blocked.await.unwrap();
    assert!(first.iter().all(|b| *b == 7));
}
