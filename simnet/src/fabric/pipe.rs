//! One direction of a simulated byte stream: written bytes become readable at a delivery time set
//! by the link model (latency, jitter, bandwidth, retransmissions), in order, with a bounded window
//! so a fast writer waits for a slow reader as it would on a real flow-controlled stream.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// Bytes a writer may have in flight before it waits (yamux's default window is 256 KiB).
pub(crate) const WINDOW: usize = 256 * 1024;

/// Why a pipe cannot carry data any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// The substream was reset (loss model, or the reader went away).
    Reset,
    /// The connection under it closed (peer stopped, partition).
    ConnectionClosed,
}

impl Broken {
    pub(crate) fn io(self) -> io::Error {
        match self {
            Broken::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "simulated stream reset"),
            Broken::ConnectionClosed => {
                io::Error::new(io::ErrorKind::BrokenPipe, "simulated connection closed")
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of the head chunk already read.
    offset: usize,
    buffered: usize,
    /// The writer closed its side: EOF after the last chunk.
    finished: bool,
    broken: Option<Broken>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// A one-way pipe shared by its writer and reader.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    state: Mutex<State>,
}

impl Pipe {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Queue `data` for delivery at `at(bytes accepted)`; `Pending` while the window is full.
    pub(crate) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        at: impl FnOnce(usize) -> Instant,
    ) -> Poll<io::Result<usize>> {
        let Ok(mut s) = self.state.lock() else { return Poll::Ready(Err(Broken::Reset.io())) };
        if let Some(b) = s.broken {
            return Poll::Ready(Err(b.io()));
        }
        if s.finished {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after close")));
        }
        let room = WINDOW.saturating_sub(s.buffered);
        if room == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(room);
        s.chunks.push_back((at(n), data[..n].to_vec()));
        s.buffered += n;
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    /// Read what is due; arms `sleep` for the next chunk when nothing is due yet.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        sleep: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let Ok(mut s) = self.state.lock() else { return Poll::Ready(Err(Broken::Reset.io())) };
            if let Some(b) = s.broken {
                return Poll::Ready(Err(b.io()));
            }
            let now = Instant::now();
            let Some((due, _)) = s.chunks.front() else {
                if s.finished {
                    return Poll::Ready(Ok(0));
                }
                s.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let due = *due;
            if due <= now {
                let mut copied = 0;
                while copied < buf.len() {
                    let Some((at, chunk)) = s.chunks.front() else { break };
                    if *at > now {
                        break;
                    }
                    let available = chunk.len() - s.offset;
                    let n = available.min(buf.len() - copied);
                    buf[copied..copied + n].copy_from_slice(&chunk[s.offset..s.offset + n]);
                    copied += n;
                    if n == available {
                        s.chunks.pop_front();
                        s.offset = 0;
                    } else {
                        s.offset += n;
                    }
                }
                s.buffered -= copied;
                if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
                return Poll::Ready(Ok(copied));
            }
            // Not due yet: wait for the head chunk (new writes only ever come later).
            s.read_waker = Some(cx.waker().clone());
            drop(s);
            match sleep {
                Some(t) if t.deadline() == due => {}
                Some(t) => t.as_mut().reset(due),
                None => *sleep = Some(Box::pin(tokio::time::sleep_until(due))),
            }
            if let Some(t) = sleep
                && t.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
        }
    }

    /// The writer closed its side.
    pub(crate) fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.finished = true;
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
        }
    }

    /// Nothing more flows; both sides see `why`.
    pub(crate) fn break_with(&self, why: Broken) {
        if let Ok(mut s) = self.state.lock() {
            if s.broken.is_none() {
                s.broken = Some(why);
            }
            s.chunks.clear();
            s.buffered = 0;
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
    }

    /// Whether the reader has seen everything (finished and drained) or the pipe broke.
    pub(crate) fn done(&self) -> bool {
        self.state.lock().map(|s| s.broken.is_some() || (s.finished && s.chunks.is_empty())).unwrap_or(true)
    }
}
