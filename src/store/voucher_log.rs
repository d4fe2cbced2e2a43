//! The worker's voucher log (`<data-dir>/vouchers.log`): an append-only file where each group
//! commit writes its vouchers, each with its channel's record, and syncs them before any is
//! acknowledged. Appending a few hundred bytes per voucher and one `fdatasync` per batch is what
//! makes a voucher cheap to store; sled is not touched on that path.
//!
//! The log is folded into the payment trees (each voucher into `pay-vouchers/v1`, each channel's
//! newest voucher into its record in `pay-channels/v1`, then one flush) once it holds
//! [`FOLD_BYTES`], when the committer stops, and whenever the store is opened (a node that was
//! killed): only then is it emptied. Folding is idempotent: a record in the store that already
//! names the same or a newer voucher is left as it is, and everything else in it (the chain
//! state, a co-signed close) is never touched by a fold, so folding a log twice, or after the
//! node wrote newer records, changes nothing.
//!
//! Frame: `u32` payload length, `u32` CRC-32 of the payload, payload (`u64` arrival time, `u32`
//! record length, the channel record, the signed voucher), little-endian. A frame cut short or failing its checksum
//! ends the log: it can only be the tail of a batch whose sync never finished, and none of that
//! batch was acknowledged.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::payments::{PaymentBook, VoucherWrite, advance_record};

/// The log's file name in the data directory.
pub const FILE: &str = "vouchers.log";
/// The log is folded into the trees once it is this large (about 9,000 vouchers): a fold costs
/// sled work per voucher, done in bulk here instead of on the acknowledgement path, and this bounds
/// what a restart replays.
pub const FOLD_BYTES: u64 = 4 << 20;
/// The most the log may hold: if folding keeps failing (the disk is full), batches are refused
/// beyond this instead of growing the file without end.
pub const MAX_BYTES: u64 = 64 << 20;
/// One frame is a channel record and a voucher, a few hundred bytes: anything larger is damage.
const MAX_FRAME: usize = 64 * 1024;

/// The open log, appended to by the committer alone. There is one committer per open store, and
/// the store's lock keeps a reopened store out until the last committer has folded and closed.
#[derive(Debug)]
pub struct VoucherLog {
    file: File,
    path: PathBuf,
    len: u64,
    /// What the file holds, decoded (folded from memory; bounded by [`MAX_BYTES`] of file).
    logged: Vec<VoucherWrite>,
    /// A failed write could not be cut off: nothing more is appended until a fold empties the log.
    broken: bool,
}

impl VoucherLog {
    /// Open (or create, owner-only) the log in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let mut options = OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        let bytes = std::fs::read(&path)?;
        let (logged, used) = parse(&bytes);
        if used < bytes.len() {
            tracing::warn!(
                log = %path.display(),
                ignored = bytes.len() - used,
                "the voucher log ends in a damaged frame (a batch cut off by a crash, never acknowledged)"
            );
            // Appends go after whole frames only.
            file.set_len(used as u64)?;
        }
        Ok(Self { file, path, len: used as u64, logged, broken: false })
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `writes` and sync them: once this returns, every one survives a crash.
    pub fn append<'a>(&mut self, writes: impl IntoIterator<Item = &'a VoucherWrite>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for w in writes {
            frame(w, &mut buf);
            added.push(w.clone());
        }
        let grown = self.len.saturating_add(buf.len() as u64);
        if grown > MAX_BYTES {
            return Err(std::io::Error::other(format!(
                "the voucher log {} is full ({} bytes) and cannot be folded into the store",
                self.path.display(),
                self.len
            )));
        }
        if self.broken {
            return Err(std::io::Error::other("the voucher log could not be repaired after a failed write"));
        }
        let written = self.file.write_all(&buf).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut off what was written of this batch: a damaged frame would end the log there
            // and hide every batch appended after it.
            self.broken = self.file.set_len(self.len).and_then(|()| self.file.sync_all()).is_err();
            return Err(e);
        }
        self.len = grown;
        self.logged.append(&mut added);
        Ok(())
    }

    /// Fold everything logged into `book`'s trees, flush them, then empty the log. Returns the
    /// vouchers folded.
    pub fn fold_into(&mut self, book: &PaymentBook) -> Result<usize, StoreError> {
        fold(book, &self.logged)?;
        // Not synced: a truncation lost in a crash only makes the next open fold these again,
        // which changes nothing, and the next append's sync makes it durable anyway.
        self.file.set_len(0).map_err(|e| io(&self.path, e))?;
        self.len = 0;
        self.broken = false;
        Ok(std::mem::take(&mut self.logged).len())
    }
}

/// Fold the log in `store`'s data directory into its payment trees, if a run left one (a node
/// killed before it folded its log). Returns the vouchers folded.
pub fn recover(store: &super::Store) -> Result<usize, StoreError> {
    let path = store.dir().join(FILE);
    if std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
        return Ok(0);
    }
    let folded = VoucherLog::open(store.dir()).map_err(|e| io(&path, e))?.fold_into(&store.payments()?)?;
    tracing::info!(vouchers = folded, "folded the voucher log left by the last run into the store");
    Ok(folded)
}

/// What the log in `dir` holds now (nothing if there is none).
pub fn logged(dir: &Path) -> Result<Vec<VoucherWrite>, StoreError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(parse(&bytes).0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path, e)),
    }
}

/// Fold `writes` into `records` (channel key → encoded record) in memory, as [`VoucherLog::fold_into`]
/// folds them into the tree.
pub fn overlay<'a>(
    records: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    writes: impl IntoIterator<Item = &'a VoucherWrite>,
) {
    for w in writes {
        let merged = merge(records.get(w.channel_key()).map(Vec::as_slice), w);
        if let Some(merged) = merged {
            records.insert(w.channel_key().to_vec(), merged);
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Dir { path: path.to_owned(), source: e }
}

fn frame(w: &VoucherWrite, buf: &mut Vec<u8>) {
    let record = w.record();
    let voucher = w.voucher();
    let payload_len = 12 + record.len() + voucher.len();
    let mut payload = Vec::with_capacity(payload_len);
    payload.extend_from_slice(&w.at().to_le_bytes());
    payload.extend_from_slice(&u32::try_from(record.len()).unwrap_or(u32::MAX).to_le_bytes());
    payload.extend_from_slice(record);
    payload.extend_from_slice(voucher);
    buf.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// The whole frames at the start of `bytes` and how many bytes they use.
fn parse(bytes: &[u8]) -> (Vec<VoucherWrite>, usize) {
    let mut writes = Vec::new();
    let mut at = 0usize;
    while let Some((w, next)) = next_frame(bytes, at) {
        writes.push(w);
        at = next;
    }
    (writes, at)
}

fn next_frame(bytes: &[u8], at: usize) -> Option<(VoucherWrite, usize)> {
    let word = |i: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(i..i.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let len = word(at)?;
    if len > MAX_FRAME {
        return None;
    }
    let crc = word(at.checked_add(4)?)?;
    let start = at.checked_add(8)?;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if usize::try_from(crc32fast::hash(payload)).ok()? != crc {
        return None;
    }
    let at = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let record_len = usize::try_from(u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?)).ok()?;
    let record = payload.get(12..12usize.checked_add(record_len)?)?;
    let voucher = payload.get(12 + record_len..)?;
    let write = VoucherWrite::from_parts(record.to_vec(), voucher, at).ok()?;
    Some((write, start + len))
}

/// Write `writes` into the trees and flush: each channel's vouchers as one history entry (keyed
/// by its first seqno: one sled write per channel, not per voucher), and each channel's record
/// merged with its newest logged voucher.
fn fold(book: &PaymentBook, writes: &[VoucherWrite]) -> Result<(), StoreError> {
    let mut per_channel: BTreeMap<&[u8], BTreeMap<u64, &VoucherWrite>> = BTreeMap::new();
    for w in writes {
        per_channel.entry(w.channel_key()).or_default().insert(w.seqno(), w);
    }
    let mut history = sled::Batch::default();
    for vouchers in per_channel.values() {
        let Some(first) = vouchers.values().next() else { continue };
        let chunk: Vec<u8> = vouchers.values().flat_map(|w| w.voucher().iter().copied()).collect();
        history.insert(first.voucher_key(), chunk);
    }
    book.vouchers.apply_batch(history)?;
    for (key, vouchers) in &per_channel {
        if let Some(newest) = vouchers.values().next_back() {
            book.channels.fetch_and_update(key, |old| merge(old, newest))?;
        }
    }
    book.flush()
}

/// A channel's record with `w`'s voucher folded in: `w`'s whole record where the store has none,
/// else the stored record naming `w`'s voucher if it names an older one (nothing else changes).
fn merge(old: Option<&[u8]>, w: &VoucherWrite) -> Option<Vec<u8>> {
    let Some(old) = old else { return Some(w.record().to_vec()) };
    match advance_record(old, w.signed(), w.at()) {
        Ok(Some(advanced)) => Some(advanced),
        // Already as new, or unreadable: leave what is there (for the operator to see).
        Ok(None) | Err(_) => Some(old.to_vec()),
    }
}

#[cfg(test)]
#[path = "voucher_log_tests.rs"]
mod tests;
