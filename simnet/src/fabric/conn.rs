//! A simulated connection: a [`StreamMuxer`] whose substreams are pairs of delayed pipes, so no
//! framing, encryption or keep-alive traffic costs CPU, while latency, jitter, bandwidth,
//! retransmissions and stream resets follow the link model.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, Future};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, Sleep};

use super::Counters;
use super::pipe::{Broken, Pipe};

/// How one connection behaves (derived from the regions of its two ends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkParams {
    pub one_way: Duration,
    /// Each write's delay varies by up to ± this share of `one_way`.
    pub jitter: f64,
    /// Probability that a write needs a retransmission (costs one extra round trip).
    pub loss: f64,
    /// Probability that a new substream is reset at once.
    pub stream_loss: f64,
    /// Seconds per byte on the wire in each direction (0: unlimited).
    pub secs_per_byte: f64,
}

#[derive(Debug)]
struct End {
    inbound: VecDeque<(Instant, SimStream)>,
    inbound_waker: Option<Waker>,
    conn_waker: Option<Waker>,
    /// When this end's outgoing direction is free again (bandwidth).
    free_at: Instant,
    /// Latest delivery time scheduled in this direction (keeps the connection in order).
    last_at: Instant,
}

/// State shared by both ends of a connection.
#[derive(Debug)]
pub(crate) struct Link {
    params: LinkParams,
    closed: AtomicBool,
    ends: [Mutex<End>; 2],
    pipes: Mutex<Vec<Weak<Pipe>>>,
    rng: Mutex<StdRng>,
    counters: Arc<Counters>,
}

impl Link {
    pub(crate) fn new(params: LinkParams, seed: u64, counters: Arc<Counters>) -> Arc<Self> {
        let now = Instant::now();
        let end = || {
            Mutex::new(End {
                inbound: VecDeque::new(),
                inbound_waker: None,
                conn_waker: None,
                free_at: now,
                last_at: now,
            })
        };
        Arc::new(Self {
            params,
            closed: AtomicBool::new(false),
            ends: [end(), end()],
            pipes: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counters,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// When `bytes` written now from `side` arrive at the other side.
    fn schedule(&self, side: usize, bytes: usize) -> Instant {
        let p = &self.params;
        let (jitter, lost) = match self.rng.lock() {
            Ok(mut rng) => {
                let j = if p.jitter > 0.0 { rng.gen_range(-p.jitter..=p.jitter) } else { 0.0 };
                (j, p.loss > 0.0 && rng.gen_bool(p.loss.min(1.0)))
            }
            Err(_) => (0.0, false),
        };
        let mut delay = p.one_way.mul_f64((1.0 + jitter).max(0.0));
        if lost {
            self.counters.retransmissions.inc();
            delay += p.one_way * 2;
        }
        let now = Instant::now();
        let Ok(mut end) = self.ends[side].lock() else { return now + delay };
        let start = end.free_at.max(now);
        end.free_at = start + Duration::from_secs_f64(p.secs_per_byte * bytes as f64);
        let at = (end.free_at + delay).max(end.last_at);
        end.last_at = at;
        at
    }

    /// Close the connection: every stream breaks, both muxers learn it.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let pipes = self.pipes.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        for pipe in pipes.iter().filter_map(Weak::upgrade) {
            pipe.break_with(Broken::ConnectionClosed);
        }
        for end in &self.ends {
            let dropped = match end.lock() {
                Ok(mut e) => {
                    if let Some(w) = e.inbound_waker.take() {
                        w.wake();
                    }
                    if let Some(w) = e.conn_waker.take() {
                        w.wake();
                    }
                    std::mem::take(&mut e.inbound)
                }
                Err(_) => VecDeque::new(),
            };
            drop(dropped); // outside the lock: dropping a stream touches its pipes
        }
    }

    fn closed_error() -> io::Error {
        Broken::ConnectionClosed.io()
    }
}

/// One end of a simulated connection.
#[derive(Debug)]
pub struct SimConnection {
    link: Arc<Link>,
    side: usize,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl SimConnection {
    pub(crate) fn pair(link: &Arc<Link>) -> (Self, Self) {
        (Self { link: link.clone(), side: 0, sleep: None }, Self { link: link.clone(), side: 1, sleep: None })
    }
}

impl Drop for SimConnection {
    fn drop(&mut self) {
        self.link.close();
    }
}

impl StreamMuxer for SimConnection {
    type Substream = SimStream;
    type Error = io::Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<SimStream, io::Error>> {
        loop {
            if self.link.is_closed() {
                return Poll::Ready(Err(Link::closed_error()));
            }
            let due = {
                let Ok(mut end) = self.link.ends[self.side].lock() else {
                    return Poll::Ready(Err(Link::closed_error()));
                };
                match end.inbound.front().map(|(at, _)| *at) {
                    Some(at) if at <= Instant::now() => {
                        if let Some((_, stream)) = end.inbound.pop_front() {
                            return Poll::Ready(Ok(stream));
                        }
                        continue;
                    }
                    other => {
                        end.inbound_waker = Some(cx.waker().clone());
                        other
                    }
                }
            };
            let Some(due) = due else { return Poll::Pending };
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if sleep.deadline() != due {
                sleep.as_mut().reset(due);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn poll_outbound(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<SimStream, io::Error>> {
        let link = &self.link;
        if link.is_closed() {
            return Poll::Ready(Err(Link::closed_error()));
        }
        let other = 1 - self.side;
        let (there, back) = (Pipe::new(), Pipe::new());
        if let Ok(mut pipes) = link.pipes.lock() {
            if pipes.len() >= 64 {
                pipes.retain(|p| p.strong_count() > 0);
            }
            pipes.push(Arc::downgrade(&there));
            pipes.push(Arc::downgrade(&back));
        }
        link.counters.streams.inc();
        let mine = SimStream::new(link.clone(), self.side, there.clone(), back.clone());
        let lost = link.params.stream_loss > 0.0
            && link.rng.lock().map(|mut r| r.gen_bool(link.params.stream_loss.min(1.0))).unwrap_or(false);
        if lost {
            link.counters.streams_lost.inc();
            there.break_with(Broken::Reset);
            back.break_with(Broken::Reset);
            return Poll::Ready(Ok(mine));
        }
        let theirs = SimStream::new(link.clone(), other, back, there);
        let at = link.schedule(self.side, 0);
        if let Ok(mut end) = link.ends[other].lock() {
            end.inbound.push_back((at, theirs));
            if let Some(w) = end.inbound_waker.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(mine))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.link.close();
        Poll::Ready(Ok(()))
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, io::Error>> {
        if self.link.is_closed() {
            return Poll::Ready(Err(Link::closed_error()));
        }
        if let Ok(mut end) = self.link.ends[self.side].lock() {
            end.conn_waker = Some(cx.waker().clone());
        }
        if self.link.is_closed() {
            return Poll::Ready(Err(Link::closed_error()));
        }
        Poll::Pending
    }
}

/// A substream: writes go out through one pipe, reads come from the other.
#[derive(Debug)]
pub struct SimStream {
    link: Arc<Link>,
    side: usize,
    out: Arc<Pipe>,
    inp: Arc<Pipe>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl SimStream {
    fn new(link: Arc<Link>, side: usize, out: Arc<Pipe>, inp: Arc<Pipe>) -> Self {
        Self { link, side, out, inp, sleep: None }
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        self.out.finish();
        if !self.inp.done() {
            // Unread data or an open writer on the other side: that side sees a reset.
            self.inp.break_with(Broken::Reset);
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        this.inp.poll_read(cx, buf, &mut this.sleep)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.link.is_closed() {
            return Poll::Ready(Err(Link::closed_error()));
        }
        let poll = self.out.poll_write(cx, buf, |n| self.link.schedule(self.side, n));
        if let Poll::Ready(Ok(n)) = poll {
            self.link.counters.bytes.inc_by(n as u64);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.finish();
        Poll::Ready(Ok(()))
    }
}
