//! Each model's bounded queue beyond its running slots: a request that finds every slot taken
//! waits for one, first come first served (tokio's semaphore is fair), while fewer than
//! `worker.queue_length` requests of the model are waiting, and for at most
//! `worker.queue_wait_secs`; otherwise it is answered `Busy` at once, and the client tries another
//! worker. The queue's depth and each request's wait are metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cocoon_protocol::inference::messages::ErrorCode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admit::Refused;

/// The queue metrics of every model.
#[derive(Debug, Clone)]
pub(super) struct QueueMetrics {
    depth: Family<Vec<(String, String)>, Gauge>,
    waited: Histogram,
}

impl QueueMetrics {
    /// Register under `registry` (already prefixed `cocoon_inference_worker`).
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            depth: Family::default(),
            // 10 ms … about 80 s.
            waited: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        };
        registry.register(
            "queue_depth",
            "Requests waiting for a model slot, by model",
            metrics.depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long requests that found every slot taken waited for one (served or not)",
            metrics.waited.clone(),
        );
        metrics
    }
}

/// One model's slots and queue.
#[derive(Debug)]
pub(super) struct Queue {
    slots: Arc<Semaphore>,
    running: usize,
    length: usize,
    wait: Duration,
    waiting: AtomicUsize,
    depth: Gauge,
    waited: Histogram,
}

/// A place in the queue; leaving it (served, timed out, or the request went away) frees it.
pub(super) struct Place<'a> {
    queue: &'a Queue,
    depth: usize,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
        self.queue.depth.dec();
    }
}

impl Place<'_> {
    /// Requests waiting when this one joined, itself included.
    pub(super) fn depth(&self) -> usize {
        self.depth
    }

    /// Wait for a slot, at most the queue's wait.
    pub(super) async fn wait(self) -> Result<OwnedSemaphorePermit, Refused> {
        let started = Instant::now();
        let got = tokio::time::timeout(self.queue.wait, self.queue.slots.clone().acquire_owned()).await;
        self.queue.waited.observe(started.elapsed().as_secs_f64());
        match got {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err((ErrorCode::ShuttingDown, "the worker is shutting down".into())),
            Err(_) => {
                let message = format!("no slot freed within {} s in the queue", self.queue.wait.as_secs());
                Err((ErrorCode::Busy, message))
            }
        }
    }
}

/// A slot at once, or a place in the queue.
pub(super) enum Slot<'a> {
    /// A slot was free.
    Now(OwnedSemaphorePermit),
    /// Every slot is taken: wait in this place.
    Queued(Place<'a>),
}

impl Queue {
    /// `running` slots for `model`, at most `length` waiting, each at most `wait`.
    pub(super) fn new(
        model: &str,
        running: usize,
        length: usize,
        wait: Duration,
        metrics: &QueueMetrics,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(running.max(1))),
            running: running.max(1),
            length,
            wait,
            waiting: AtomicUsize::new(0),
            depth: metrics.depth.get_or_create(&vec![("model".to_owned(), model.to_owned())]).clone(),
            waited: metrics.waited.clone(),
        }
    }

    /// A free slot, or a place in the queue, or `Busy` when the queue is full too.
    pub(super) fn take(&self) -> Result<Slot<'_>, Refused> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot::Now(permit));
        }
        let joined = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.length).then_some(n + 1));
        let Ok(before) = joined else {
            let message = format!("all {} slots and the queue of {} are taken", self.running, self.length);
            return Err((ErrorCode::Busy, message));
        };
        self.depth.inc();
        Ok(Slot::Queued(Place { queue: self, depth: before + 1 }))
    }

    /// A slot now, or after waiting in the queue, or `Busy`.
    #[cfg(test)]
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Refused> {
        match self.take()? {
            Slot::Now(permit) => Ok(permit),
            Slot::Queued(place) => place.wait().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_model_queues_in_order_up_to_its_length_and_its_wait() {
        let metrics = QueueMetrics::register(&mut Registry::default());
        let queue = Arc::new(Queue::new("m", 1, 2, Duration::from_secs(5), &metrics));
        let running = queue.slot().await.unwrap();
        let (a, b) = (queue.clone(), queue.clone());
        let first = tokio::spawn(async move { a.slot().await.map(|_| Instant::now()) });
        tokio::task::yield_now().await;
        let second = tokio::spawn(async move { b.slot().await.map(|_| Instant::now()) });
        tokio::task::yield_now().await;
        assert_eq!(queue.depth.get(), 2);
        // The queue is full: a third is refused at once.
        assert_eq!(queue.slot().await.unwrap_err().0, ErrorCode::Busy);
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(running);
        // Each waiter gets the one slot in arrival order (each drops it as soon as it has it).
        let served = first.await.unwrap().unwrap();
        let second = second.await.unwrap().unwrap();
        assert!(second >= served, "served in arrival order");
        assert_eq!(queue.depth.get(), 0);
    }

    #[test]
    fn a_place_knows_the_queue_it_joined() {
        let metrics = QueueMetrics::register(&mut Registry::default());
        let queue = Queue::new("m", 1, 2, Duration::from_secs(5), &metrics);
        let Ok(Slot::Now(_running)) = queue.take() else { panic!("a free slot") };
        let Ok(Slot::Queued(first)) = queue.take() else { panic!("queued") };
        let Ok(Slot::Queued(second)) = queue.take() else { panic!("queued") };
        assert_eq!((first.depth(), second.depth()), (1, 2));
        assert!(queue.take().is_err(), "the queue is full");
        drop(first);
        let Ok(Slot::Queued(third)) = queue.take() else { panic!("a place freed") };
        assert_eq!(third.depth(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_is_busy_and_leaves_the_queue() {
        let metrics = QueueMetrics::register(&mut Registry::default());
        let queue = Queue::new("m", 1, 4, Duration::from_secs(5), &metrics);
        let _running = queue.slot().await.unwrap();
        let refused = queue.slot().await.unwrap_err();
        assert_eq!(refused.0, ErrorCode::Busy);
        assert!(refused.1.contains("within 5 s"), "{}", refused.1);
        assert_eq!((queue.depth.get(), queue.waiting.load(Ordering::SeqCst)), (0, 0));
    }
}
