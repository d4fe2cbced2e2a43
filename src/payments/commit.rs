//! Group commit of the worker's vouchers. Streams announce their voucher, verify its signature
//! themselves (in parallel, outside any lock) and hand it to one committer thread. The committer
//! takes every voucher queued, and waits for those announced and still being verified (asleep, for
//! at most [`MAX_LINGER`]: the last one handed over wakes it; up to [`MAX_BATCH`] in all); it
//! checks each against its channel in arrival order and holds the ones that pass as their channel's
//! pending voucher (so the next voucher on a channel follows it), appends them all with their
//! channels' records to the voucher log and syncs it once, and only then makes them the channels'
//! best vouchers and acknowledges them. Vouchers arriving while a batch syncs wait for the next
//! one: the more streams pay at once, the more vouchers share a sync. Between batches, a log grown
//! to [`FOLD_BYTES`] is folded into the store (and at the end, when the last handle is dropped).
//!
//! A failed write or sync refuses the whole batch ("cannot store"); its vouchers stay pending
//! (each is still the client's valid signature, and the client has signed it, so the next voucher
//! on the channel must follow it) and are written again with the next batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cocoon_protocol::payments::ledger::VoucherRejection;
use cocoon_protocol::payments::voucher::{SignedVoucher, VerifiedVoucher};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Mutex, mpsc, oneshot};
use tycho_types::models::StdAddr;

use crate::clock::unix_now;
use crate::store::voucher_log::{FOLD_BYTES, VoucherLog};
use crate::store::{PaymentBook, StoredChannel, VoucherWrite};

/// Vouchers one batch takes at most (a bound on the transaction's size; 64 concurrent streams
/// fill a fraction of it).
pub const MAX_BATCH: usize = 1024;
/// Vouchers waiting for the committer: every one belongs to a stream the worker admitted, which
/// its stream limits bound, and a full queue makes a stream wait, never drops its voucher.
const QUEUE: usize = 4096;

/// The channels the worker knows, shared by admission, settlement and the committer.
pub type Channels = Arc<Mutex<HashMap<StdAddr, StoredChannel>>>;

/// What became of one voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Stored durably: the channel's cumulative amount and seqno now.
    Stored { cumulative: u64, seqno: u64 },
    /// Refused by the channel's rules; what the worker holds on the channel.
    Rejected { rejection: VoucherRejection, cumulative: u64, seqno: u64 },
    /// The store failed; what the worker holds on the channel (durably or not).
    StoreFailed { cumulative: u64, seqno: u64 },
    /// The channel is not known (any more).
    UnknownChannel,
}

struct Job {
    channel: StdAddr,
    voucher: VerifiedVoucher,
    invoiced: u64,
    reply: oneshot::Sender<Committed>,
}

/// The longest a batch waits for vouchers that streams are verifying right now (see
/// [`Committer::arriving`]): a lone voucher never waits, and a batch never waits for more than
/// this whatever a stream does.
const MAX_LINGER: Duration = Duration::from_millis(2);

/// The committer's handle: cheap to clone; the thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
    /// Vouchers on their way, shared with the committer thread.
    arriving: Arc<Announced>,
}

/// Vouchers being verified now, on their way to the committer: a batch waits for them (up to
/// [`MAX_LINGER`]) so that they share its sync instead of each starting another. The committer
/// sleeps while it waits and the last voucher handed over wakes it: no polling, so on one core
/// the streams verify without the committer taking turns with them.
#[derive(Debug, Default)]
struct Announced {
    count: AtomicUsize,
    /// Set while the committer sleeps waiting for `count` to reach zero.
    lingering: AtomicBool,
    /// The committer thread (set when it starts), woken when `count` reaches zero.
    committer: OnceLock<std::thread::Thread>,
}

/// A voucher on its way to the committer, counted in [`Announced::count`] until it is handed
/// over or dropped.
#[derive(Debug)]
pub struct Arriving {
    arriving: Arc<Announced>,
}

impl Drop for Arriving {
    fn drop(&mut self) {
        let a = &self.arriving;
        if a.count.fetch_sub(1, Ordering::SeqCst) == 1
            && a.lingering.load(Ordering::SeqCst)
            && let Some(committer) = a.committer.get()
        {
            committer.unpark();
        }
    }
}

impl Committer {
    /// Start the committer thread over `channels`, writing to `book` and counting its batches
    /// (one append and sync of the voucher log each) in `flushes`.
    pub fn start(book: PaymentBook, channels: Channels, flushes: Counter) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let arriving = Arc::new(Announced::default());
        let incoming = Incoming { rx, arriving: arriving.clone() };
        let log = VoucherLog::open(book.dir())?;
        std::thread::Builder::new().name("voucher-commit".into()).spawn(move || {
            let _ = incoming.arriving.committer.set(std::thread::current());
            run(incoming, log, &book, &channels, &flushes);
        })?;
        Ok(Self { jobs, arriving })
    }

    /// Announce a voucher before verifying it, so that a batch being gathered waits for it.
    pub fn arriving(&self) -> Arriving {
        self.arriving.count.fetch_add(1, Ordering::SeqCst);
        Arriving { arriving: self.arriving.clone() }
    }

    /// Check `voucher` (paying `invoiced`) on `channel` and store it with the next batch; `ticket`
    /// is its announcement, handed over with it.
    pub async fn commit(
        &self,
        ticket: Arriving,
        channel: StdAddr,
        voucher: VerifiedVoucher,
        invoiced: u64,
    ) -> Committed {
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.send(Job { channel, voucher, invoiced, reply }).await;
        drop(ticket); // in the queue now (or refused): no batch waits for it any more
        if sent.is_err() {
            return Committed::StoreFailed { cumulative: 0, seqno: 0 };
        }
        answer.await.unwrap_or(Committed::StoreFailed { cumulative: 0, seqno: 0 })
    }
}

/// The committer's side of the queue.
struct Incoming {
    rx: mpsc::Receiver<Job>,
    arriving: Arc<Announced>,
}

impl Incoming {
    /// The next batch: blocks for its first voucher, then takes what is queued and what is still
    /// arriving (for at most [`MAX_LINGER`]), up to [`MAX_BATCH`]. `None` once every handle is gone.
    fn batch(&mut self) -> Option<Vec<Job>> {
        let mut jobs = vec![self.rx.blocking_recv()?];
        let deadline = Instant::now() + MAX_LINGER;
        loop {
            self.take_queued(&mut jobs);
            if jobs.len() >= MAX_BATCH {
                return Some(jobs);
            }
            // Say so before looking: a stream handing its voucher over after the look wakes us.
            self.arriving.lingering.store(true, Ordering::SeqCst);
            let waiting = self.arriving.count.load(Ordering::SeqCst) > 0;
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting && !left.is_zero() {
                std::thread::park_timeout(left);
            }
            self.arriving.lingering.store(false, Ordering::SeqCst);
            if !waiting || left.is_zero() {
                self.take_queued(&mut jobs);
                return Some(jobs);
            }
        }
    }

    fn take_queued(&mut self, jobs: &mut Vec<Job>) {
        while jobs.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }
}

/// A voucher that passed the rules, waiting for its batch's flush.
struct Held {
    channel: StdAddr,
    voucher: SignedVoucher,
    write: VoucherWrite,
    /// `None` for a voucher carried over from a failed batch (its stream was answered already).
    reply: Option<oneshot::Sender<Committed>>,
}

fn run(
    mut incoming: Incoming,
    mut log: VoucherLog,
    book: &PaymentBook,
    channels: &Mutex<HashMap<StdAddr, StoredChannel>>,
    flushes: &Counter,
) {
    let mut carried: Vec<Held> = Vec::new();
    while let Some(jobs) = incoming.batch() {
        let mut held = std::mem::take(&mut carried);
        held.extend(check(channels, jobs));
        if held.is_empty() {
            continue; // every voucher was refused: nothing to write
        }
        flushes.inc();
        match log.append(held.iter().map(|h| &h.write)) {
            Ok(()) => stored(channels, held),
            Err(e) => {
                tracing::error!(error = %e, vouchers = held.len(), "cannot store a batch of vouchers");
                carried = failed(channels, held);
            }
        }
        if log.len() >= FOLD_BYTES {
            fold(&mut log, book);
        }
    }
    fold(&mut log, book);
}

/// Fold the voucher log into the store (between batches: streams wait meanwhile).
fn fold(log: &mut VoucherLog, book: &PaymentBook) {
    if log.is_empty() {
        return;
    }
    if let Err(e) = log.fold_into(book) {
        tracing::error!(error = %e, bytes = log.len(), "cannot fold the voucher log into the store");
    }
}

/// Check each job against its channel in order, answering the refused ones; hold the rest.
fn check(channels: &Mutex<HashMap<StdAddr, StoredChannel>>, jobs: Vec<Job>) -> Vec<Held> {
    let mut held = Vec::with_capacity(jobs.len());
    let mut all = channels.blocking_lock();
    let now = unix_now();
    for Job { channel, voucher, invoiced, reply } in jobs {
        let Some(entry) = all.get_mut(&channel) else {
            let _ = reply.send(Committed::UnknownChannel);
            continue;
        };
        if let Err(rejection) = entry.channel.check_verified(&voucher, invoiced) {
            let (cumulative, seqno) = (entry.channel.cumulative(), entry.channel.seqno());
            let _ = reply.send(Committed::Rejected { rejection, cumulative, seqno });
            continue;
        }
        let signed = voucher.signed().clone();
        entry.channel.hold(signed.clone());
        entry.last_voucher_at = now;
        let write = VoucherWrite::new(entry, &signed);
        held.push(Held { channel, voucher: signed, write, reply: Some(reply) });
    }
    held
}

/// The batch is durable: each voucher becomes its channel's best, then its stream hears so.
fn stored(channels: &Mutex<HashMap<StdAddr, StoredChannel>>, held: Vec<Held>) {
    let mut all = channels.blocking_lock();
    for h in held {
        let (cumulative, seqno) = (h.voucher.voucher.cumulative, h.voucher.voucher.seqno);
        if let Some(entry) = all.get_mut(&h.channel) {
            entry.channel.accept(h.voucher);
        }
        if let Some(reply) = h.reply {
            let _ = reply.send(Committed::Stored { cumulative, seqno });
        }
    }
}

/// The batch did not store: refuse its streams and carry each channel's last voucher to the next
/// batch (vouchers are cumulative: the last one covers the others, and carrying one per channel
/// bounds what a failing disk makes the committer keep).
fn failed(channels: &Mutex<HashMap<StdAddr, StoredChannel>>, held: Vec<Held>) -> Vec<Held> {
    let all = channels.blocking_lock();
    let mut last: HashMap<StdAddr, Held> = HashMap::new();
    for mut h in held {
        if let Some(reply) = h.reply.take() {
            let (cumulative, seqno) =
                all.get(&h.channel).map_or((0, 0), |e| (e.channel.cumulative(), e.channel.seqno()));
            let _ = reply.send(Committed::StoreFailed { cumulative, seqno });
        }
        last.insert(h.channel.clone(), h);
    }
    last.into_values().collect()
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::payments::voucher::Voucher;
    use libp2p::identity::ed25519;
    use tycho_types::cell::HashBytes;

    use super::*;
    use crate::store::Store;

    fn channel(key: &ed25519::Keypair, seed: u64) -> StoredChannel {
        crate::store::payments::test_channel(key.public().to_bytes(), seed, 1_000_000)
    }

    fn verified(key: &ed25519::Keypair, channel: &StdAddr, cumulative: u64, seqno: u64) -> VerifiedVoucher {
        let signed = Voucher { channel: channel.clone(), cumulative, seqno }.sign(key).unwrap();
        VerifiedVoucher::verify(signed, &key.public()).unwrap()
    }

    /// Many streams pay at once: every voucher is acknowledged after it is stored, in order per
    /// channel, and the store holds them all (and each channel's last) when reopened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_vouchers_are_all_stored_before_they_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (streams, each) = (16u64, 25u64);
        let parties: Vec<_> = (0..streams)
            .map(|i| {
                let key = ed25519::Keypair::generate();
                let c = channel(&key, i);
                (key, c)
            })
            .collect();
        let book = Store::open(dir.path()).unwrap().payments().unwrap();
        let all = parties.iter().map(|(_, c)| (c.channel.address.clone(), c.clone())).collect();
        let channels: Channels = Arc::new(Mutex::new(all));
        let committer = Committer::start(book.clone(), channels.clone(), Counter::default()).unwrap();
        let tasks: Vec<_> = parties
            .iter()
            .map(|(key, c)| {
                let (key, address, committer) = (key.clone(), c.channel.address.clone(), committer.clone());
                tokio::spawn(async move {
                    for n in 1..=each {
                        let v = verified(&key, &address, n * 10, n);
                        let done = committer.commit(committer.arriving(), address.clone(), v, 10).await;
                        assert_eq!(done, Committed::Stored { cumulative: n * 10, seqno: n });
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Every voucher is in the log; folded (the committer is idle), the store holds them all.
        let logged = VoucherLog::open(dir.path()).unwrap().fold_into(&book).unwrap();
        assert_eq!(logged, (streams * each) as usize);
        for (_, c) in &parties {
            let address = &c.channel.address;
            let held = channels.lock().await.get(address).unwrap().channel.clone();
            assert_eq!((held.best.unwrap().voucher.seqno, held.pending), (each, None));
            let stored = book.vouchers(address).unwrap();
            assert_eq!(
                stored.iter().map(|v| v.voucher.seqno).collect::<Vec<_>>(),
                (1..=each).collect::<Vec<_>>()
            );
            let record = book.channel(address).unwrap().unwrap();
            assert_eq!(record.channel.best.unwrap().voucher.cumulative, each * 10);
        }
    }

    /// A voucher that breaks the rules is refused with what the worker holds, and one signed by
    /// another key than the channel's is refused even though its signature verified.
    #[tokio::test]
    async fn refused_vouchers_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519::Keypair::generate();
        let c = channel(&key, 1);
        let address = c.channel.address.clone();
        let book = Store::open(dir.path()).unwrap().payments().unwrap();
        let channels: Channels = Arc::new(Mutex::new(HashMap::from([(address.clone(), c)])));
        let committer = Committer::start(book.clone(), channels.clone(), Counter::default()).unwrap();
        let first = committer
            .commit(committer.arriving(), address.clone(), verified(&key, &address, 10, 1), 10)
            .await;
        assert_eq!(first, Committed::Stored { cumulative: 10, seqno: 1 });
        let short = committer
            .commit(committer.arriving(), address.clone(), verified(&key, &address, 15, 2), 10)
            .await;
        assert!(
            matches!(
                &short,
                Committed::Rejected {
                    rejection: VoucherRejection::WrongAmount { .. },
                    cumulative: 10,
                    seqno: 1
                }
            ),
            "{short:?}"
        );
        let stranger = ed25519::Keypair::generate();
        let forged = committer
            .commit(committer.arriving(), address.clone(), verified(&stranger, &address, 20, 2), 10)
            .await;
        assert!(
            matches!(&forged, Committed::Rejected { rejection: VoucherRejection::BadSignature, .. }),
            "{forged:?}"
        );
        let elsewhere = StdAddr::new(0, HashBytes([7; 32]));
        let unknown = committer
            .commit(committer.arriving(), elsewhere.clone(), verified(&key, &elsewhere, 20, 2), 10)
            .await;
        assert_eq!(unknown, Committed::UnknownChannel);
        assert_eq!(VoucherLog::open(dir.path()).unwrap().fold_into(&book).unwrap(), 1);
        assert_eq!(book.vouchers(&address).unwrap().len(), 1);
        let held = channels.lock().await.get(&address).unwrap().channel.clone();
        assert_eq!((held.cumulative(), held.seqno(), held.pending), (10, 1, None));
    }
}
