//! Durable payment state. A worker keeps every channel it was paid on (`pay-channels/v1`: address →
//! parameters, last known on-chain state, best voucher, when it last got one, whether it co-signed
//! a cooperative close), every voucher it
//! acknowledged (`pay-vouchers/v1`: address ‖ seqno → signed voucher, or a run of consecutive
//! vouchers keyed by the first, as a fold of the voucher log writes them), unpaid requests per client
//! key (`pay-debts/v1`) and its settlement journal (`pay-journal/v1`: address → the claim in
//! progress). A client keeps its channel per worker (`pay-client/v1`: worker key → parameters,
//! deposit, last signed voucher, what its verified receipts add up to, contract version; a deposit
//! of 0 marks a channel whose deploy may not have landed yet) and the channels it retired and is
//! winding down (`pay-client-retired/v1`: address → the same record). Vouchers the worker
//! acknowledges are first appended to the voucher log (`voucher_log.rs`) and folded into the first
//! two trees later; the readers here read through the log. Records written
//! before contract version 2 carry no version and are read as version 1.

use std::collections::BTreeMap;

use cocoon_protocol::codec::{CodecError, Reader, Writer};
use cocoon_protocol::payments::channel::{ChannelParams, ChannelState, CodeVersion, write_addr};
use cocoon_protocol::payments::ledger::{ClientChannel, WorkerChannel};
use cocoon_protocol::payments::voucher::SignedVoucher;
use sled::Transactional;
use tycho_types::models::StdAddr;

use super::StoreError;

/// Tree names.
pub const CHANNELS_TREE: &str = "pay-channels/v1";
/// Acknowledged vouchers.
pub const VOUCHERS_TREE: &str = "pay-vouchers/v1";
/// Unpaid requests.
pub const DEBTS_TREE: &str = "pay-debts/v1";
/// Settlement journal.
pub const JOURNAL_TREE: &str = "pay-journal/v1";
/// Client-side channels.
pub const CLIENT_TREE: &str = "pay-client/v1";
/// Client-side channels being closed.
pub const RETIRED_TREE: &str = "pay-client-retired/v1";

/// A worker's channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChannel {
    /// The channel's rules and state.
    pub channel: WorkerChannel,
    /// When the last voucher arrived (unix seconds).
    pub last_voucher_at: u64,
}

/// One voucher and its channel's record, encoded for [`PaymentBook::accept_vouchers`] and the
/// voucher log.
#[derive(Debug, Clone)]
pub struct VoucherWrite {
    channel_key: Vec<u8>,
    record: Vec<u8>,
    voucher_key: Vec<u8>,
    voucher: Vec<u8>,
    signed: SignedVoucher,
    /// When the voucher arrived (the record's `last_voucher_at`).
    at: u64,
}

impl VoucherWrite {
    /// `v` accepted on `c` (whose record names `v` or a later voucher).
    pub fn new(c: &StoredChannel, v: &SignedVoucher) -> Self {
        Self::with_record(encode_channel(c), v.clone(), c.last_voucher_at)
    }

    fn with_record(record: Vec<u8>, signed: SignedVoucher, at: u64) -> Self {
        Self {
            channel_key: key(&signed.voucher.channel),
            record,
            voucher_key: voucher_key(&signed),
            voucher: signed.to_bytes(),
            signed,
            at,
        }
    }

    /// Rebuild one from its encoded record, voucher and arrival time (as the voucher log keeps
    /// them).
    pub(crate) fn from_parts(record: Vec<u8>, voucher: &[u8], at: u64) -> Result<Self, StoreError> {
        let signed = SignedVoucher::from_bytes(voucher).map_err(codec)?;
        Ok(Self::with_record(record, signed, at))
    }

    pub(crate) fn at(&self) -> u64 {
        self.at
    }

    pub(crate) fn record(&self) -> &[u8] {
        &self.record
    }

    pub(crate) fn voucher(&self) -> &[u8] {
        &self.voucher
    }

    pub(crate) fn signed(&self) -> &SignedVoucher {
        &self.signed
    }

    pub(crate) fn seqno(&self) -> u64 {
        self.signed.voucher.seqno
    }

    pub(crate) fn channel_key(&self) -> &[u8] {
        &self.channel_key
    }

    pub(crate) fn voucher_key(&self) -> &[u8] {
        &self.voucher_key
    }
}

/// A claim the worker decided to make and may not have seen land yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimEntry {
    /// Cumulative amount of the voucher claimed with.
    pub cumulative: u64,
    /// Its seqno.
    pub seqno: u64,
    /// The wallet seqno the claim was sent with (0 before it was sent).
    pub wallet_seqno: u32,
    /// When it was sent (unix seconds; 0 before).
    pub sent_at: u64,
}

fn key(addr: &StdAddr) -> Vec<u8> {
    let mut w = Writer::new();
    write_addr(&mut w, addr);
    w.finish()
}

/// A voucher's key in `pay-vouchers/v1`: its channel's key, then its seqno (big-endian: in order).
fn voucher_key(v: &SignedVoucher) -> Vec<u8> {
    let mut k = key(&v.voucher.channel);
    k.extend_from_slice(&v.voucher.seqno.to_be_bytes());
    k
}

fn codec(e: CodecError) -> StoreError {
    StoreError::Encode(e.to_string())
}

pub(crate) fn encode_channel(c: &StoredChannel) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(c.channel.code.as_u8());
    c.channel.params.encode(&mut w);
    let s = &c.channel.chain;
    w.u64(s.deposited).u64(s.claimed).u64(s.last_seqno).u32(s.close_started_at).u32(s.dispute_window);
    // The latest voucher, even one still being stored: it is the client's valid signature, and a
    // record written meanwhile (a chain refresh) must never name an older one than a batch that
    // lands before it.
    match c.channel.latest() {
        Some(v) => {
            w.u8(1);
            v.encode(&mut w);
        }
        None => {
            w.u8(0);
        }
    }
    w.u64(c.last_voucher_at);
    w.u8(u8::from(c.channel.co_signed));
    w.finish()
}

/// A channel record split into its fields, as [`encode_channel`] lays them out.
struct RecordParts<'a> {
    code: CodeVersion,
    params: ChannelParams,
    chain: ChannelState,
    /// The bytes before the latest voucher (version, parameters, chain state).
    head: &'a [u8],
    best: Option<SignedVoucher>,
    last_voucher_at: u64,
    /// The bytes after `last_voucher_at` (the co-signed flag; nothing in older records).
    tail: &'a [u8],
}

fn read_record(bytes: &[u8]) -> Result<RecordParts<'_>, StoreError> {
    let mut r = Reader::new(bytes);
    // The record's version byte is the contract version (1 before version 2 existed).
    let code = CodeVersion::from_u8(r.u8("version").map_err(codec)?)
        .ok_or_else(|| StoreError::Encode("unknown channel record version".into()))?;
    let params = ChannelParams::decode(&mut r).map_err(codec)?;
    let chain = ChannelState {
        deposited: r.u64("deposited").map_err(codec)?,
        claimed: r.u64("claimed").map_err(codec)?,
        last_seqno: r.u64("last seqno").map_err(codec)?,
        close_started_at: r.u32("close started").map_err(codec)?,
        dispute_window: r.u32("window").map_err(codec)?,
    };
    let head = bytes.get(..bytes.len().saturating_sub(r.rest().len())).unwrap_or_default();
    let best = match r.u8("best").map_err(codec)? {
        0 => None,
        _ => Some(SignedVoucher::decode(&mut r).map_err(codec)?),
    };
    let last_voucher_at = r.u64("last voucher at").map_err(codec)?;
    Ok(RecordParts { code, params, chain, head, best, last_voucher_at, tail: r.rest() })
}

/// `record` (an encoded channel) naming `voucher`, received at `at`, as its latest voucher;
/// `None` if it names the same or a newer one already. Only the voucher and its time change, and
/// the record is not decoded whole (that would derive the channel's address).
pub(crate) fn advance_record(
    record: &[u8],
    voucher: &SignedVoucher,
    at: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let parts = read_record(record)?;
    if parts.best.is_some_and(|b| b.voucher.seqno >= voucher.voucher.seqno) {
        return Ok(None);
    }
    let mut w = Writer::new();
    w.fixed(parts.head).u8(1);
    voucher.encode(&mut w);
    w.u64(parts.last_voucher_at.max(at)).fixed(parts.tail);
    Ok(Some(w.finish()))
}

pub(crate) fn decode_channel(bytes: &[u8]) -> Result<StoredChannel, StoreError> {
    let RecordParts { code, params, chain, best, last_voucher_at, tail, .. } = read_record(bytes)?;
    // Records written before cooperative closes end before the co-signed flag.
    let mut r = Reader::new(tail);
    let co_signed = !r.is_empty() && r.u8("co-signed").map_err(codec)? != 0;
    r.finish().map_err(codec)?;
    let mut channel =
        WorkerChannel::with_code(params, chain, code).map_err(|e| StoreError::Encode(e.to_string()))?;
    channel.best = best;
    channel.co_signed = co_signed;
    Ok(StoredChannel { channel, last_voucher_at })
}

/// Payment trees of one node.
#[derive(Debug, Clone)]
pub struct PaymentBook {
    db: sled::Db,
    /// The data directory (where the voucher log lives).
    dir: std::path::PathBuf,
    pub(super) channels: sled::Tree,
    pub(super) vouchers: sled::Tree,
    debts: sled::Tree,
    journal: sled::Tree,
    client: sled::Tree,
    retired: sled::Tree,
}

impl PaymentBook {
    pub(super) fn new(db: sled::Db, dir: std::path::PathBuf) -> Result<Self, StoreError> {
        Ok(Self {
            dir,
            channels: db.open_tree(CHANNELS_TREE)?,
            vouchers: db.open_tree(VOUCHERS_TREE)?,
            debts: db.open_tree(DEBTS_TREE)?,
            journal: db.open_tree(JOURNAL_TREE)?,
            client: db.open_tree(CLIENT_TREE)?,
            retired: db.open_tree(RETIRED_TREE)?,
            db,
        })
    }

    /// The data directory this book's store lives in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A worker's channel, with what the voucher log holds for it (see [`Self::channels`]).
    pub fn channel(&self, addr: &StdAddr) -> Result<Option<StoredChannel>, StoreError> {
        let logged = super::voucher_log::logged(&self.dir)?;
        let key = key(addr);
        let mut records = BTreeMap::new();
        if let Some(record) = self.channels.get(&key)? {
            records.insert(key.clone(), record.to_vec());
        }
        super::voucher_log::overlay(&mut records, logged.iter().filter(|w| w.channel_key() == key));
        records.values().next().map(|v| decode_channel(v)).transpose()
    }

    /// Every channel the worker knows, as durably stored: the trees with the vouchers of the log
    /// not folded into them yet (read first: a fold in between then shows in the trees).
    pub fn channels(&self) -> Result<Vec<StoredChannel>, StoreError> {
        let logged = super::voucher_log::logged(&self.dir)?;
        let mut records = BTreeMap::new();
        for entry in self.channels.iter() {
            let (k, v) = entry?;
            records.insert(k.to_vec(), v.to_vec());
        }
        super::voucher_log::overlay(&mut records, &logged);
        records.values().map(|v| decode_channel(v)).collect()
    }

    /// Record a channel (its on-chain state changed); not flushed (nothing is acknowledged).
    pub fn put_channel(&self, c: &StoredChannel) -> Result<(), StoreError> {
        self.channels.insert(key(&c.channel.address), encode_channel(c))?;
        Ok(())
    }

    /// Store an accepted voucher with its channel in one transaction and flush: once this
    /// returns, the voucher survives a crash.
    pub fn accept_voucher(&self, c: &StoredChannel, v: &SignedVoucher) -> Result<(), StoreError> {
        self.accept_vouchers(&[VoucherWrite::new(c, v)])
    }

    /// Store a batch of accepted vouchers with their channels' records in one transaction and one
    /// flush (a group commit): once this returns, every one survives a crash. Writes apply in
    /// order, so a channel's last record in the batch is the one kept.
    pub fn accept_vouchers<'a>(
        &self,
        batch: impl IntoIterator<Item = &'a VoucherWrite>,
    ) -> Result<(), StoreError> {
        let mut channels = sled::Batch::default();
        let mut vouchers = sled::Batch::default();
        for w in batch {
            vouchers.insert(w.voucher_key.as_slice(), w.voucher.as_slice());
            channels.insert(w.channel_key.as_slice(), w.record.as_slice());
        }
        (&self.channels, &self.vouchers)
            .transaction(|(c, v)| {
                v.apply_batch(&vouchers)?;
                c.apply_batch(&channels)?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Encode(format!("voucher transaction: {e:?}")))?;
        self.flush()
    }

    /// Every voucher acknowledged on `addr`, by seqno (those still in the voucher log too).
    pub fn vouchers(&self, addr: &StdAddr) -> Result<Vec<SignedVoucher>, StoreError> {
        let logged = super::voucher_log::logged(&self.dir)?;
        let mut all = BTreeMap::new();
        for entry in self.vouchers.scan_prefix(key(addr)).values() {
            // An entry holds one voucher or, written by a fold, a run of them.
            let entry = entry?;
            let mut r = Reader::new(&entry);
            while !r.is_empty() {
                let v = SignedVoucher::decode(&mut r).map_err(codec)?;
                all.insert(v.voucher.seqno, v);
            }
        }
        for w in logged.iter().filter(|w| &w.signed().voucher.channel == addr) {
            all.insert(w.seqno(), w.signed().clone());
        }
        Ok(all.into_values().collect())
    }

    /// Record that the client with `client_key` left `amount` unpaid (flushed).
    pub fn add_debt(&self, client_key: &[u8; 32], amount: u64) -> Result<(), StoreError> {
        let owed = self.debt(client_key)?.saturating_add(amount);
        self.debts.insert(client_key, &owed.to_be_bytes())?;
        self.flush()
    }

    /// What the client owes (0 if nothing).
    pub fn debt(&self, client_key: &[u8; 32]) -> Result<u64, StoreError> {
        Ok(self.debts.get(client_key)?.and_then(|v| v.as_ref().try_into().ok()).map_or(0, u64::from_be_bytes))
    }

    /// Every client that owes something, with what it owes, by client key.
    pub fn debts(&self) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        let mut all = Vec::new();
        for entry in self.debts.iter() {
            let (k, v) = entry?;
            all.push(decode_debt(&k, &v)?);
        }
        Ok(all)
    }

    /// Forgive a client's debt (operator action).
    pub fn clear_debt(&self, client_key: &[u8; 32]) -> Result<(), StoreError> {
        self.debts.remove(client_key)?;
        self.flush()
    }

    /// The claim in progress on `addr`.
    pub fn claim(&self, addr: &StdAddr) -> Result<Option<ClaimEntry>, StoreError> {
        self.journal.get(key(addr))?.map(|v| decode_claim(&v)).transpose()
    }

    /// Record a claim decision or its sending (flushed before the chain is touched).
    pub fn put_claim(&self, addr: &StdAddr, e: &ClaimEntry) -> Result<(), StoreError> {
        self.journal.insert(key(addr), encode_claim(e))?;
        self.flush()
    }

    /// Record the decision to claim with `voucher` (flushed before the chain is touched), with
    /// the voucher itself in `pay-vouchers/v1`: it may still be only in the voucher log, and a
    /// claim sent again later must find exactly this voucher even after better ones arrived.
    pub fn decide_claim(&self, e: &ClaimEntry, voucher: &SignedVoucher) -> Result<(), StoreError> {
        let addr = &voucher.voucher.channel;
        // Only where nothing is: an entry at this key starts with this very voucher (a fold's
        // run of vouchers is keyed by its first), and must not be cut down to it.
        let absent: Option<&[u8]> = None;
        let _ = self.vouchers.compare_and_swap(voucher_key(voucher), absent, Some(voucher.to_bytes()))?;
        self.put_claim(addr, e)
    }

    /// The claim landed (or is moot): forget it.
    pub fn finish_claim(&self, addr: &StdAddr) -> Result<(), StoreError> {
        self.journal.remove(key(addr))?;
        self.flush()
    }

    /// The client's channel with the worker whose key is `worker_key`.
    pub fn client_channel(&self, worker_key: &[u8; 32]) -> Result<Option<ClientChannel>, StoreError> {
        self.client.get(worker_key)?.map(|v| decode_client(&v)).transpose()
    }

    /// Every client-side channel in use.
    pub fn client_channels(&self) -> Result<Vec<ClientChannel>, StoreError> {
        self.client.iter().values().map(|v| decode_client(&v?)).collect()
    }

    /// Record the client's channel (flushed: a signed voucher must never be forgotten).
    pub fn put_client_channel(&self, c: &ClientChannel) -> Result<(), StoreError> {
        self.client.insert(c.params.worker_key, encode_client(c))?;
        self.flush()
    }

    /// Move the client's channel with a worker to the retired channels (one transaction, flushed).
    pub fn retire_client_channel(&self, c: &ClientChannel) -> Result<(), StoreError> {
        (&self.client, &self.retired)
            .transaction(|(client, retired)| {
                client.remove(&c.params.worker_key[..])?;
                retired.insert(key(&c.address), encode_client(c))?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Encode(format!("retiring a channel: {e:?}")))?;
        self.flush()
    }

    /// Channels the client retired and has not seen closed yet.
    pub fn retired_channels(&self) -> Result<Vec<ClientChannel>, StoreError> {
        self.retired.iter().values().map(|v| decode_client(&v?)).collect()
    }

    /// A retired channel is gone from the chain: forget it.
    pub fn forget_retired(&self, addr: &StdAddr) -> Result<(), StoreError> {
        self.retired.remove(key(addr))?;
        self.flush()
    }
}

pub(crate) fn encode_claim(e: &ClaimEntry) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(e.cumulative).u64(e.seqno).u32(e.wallet_seqno).u64(e.sent_at);
    w.finish()
}

pub(crate) fn decode_claim(bytes: &[u8]) -> Result<ClaimEntry, StoreError> {
    let mut r = Reader::new(bytes);
    let entry = ClaimEntry {
        cumulative: r.u64("cumulative").map_err(codec)?,
        seqno: r.u64("seqno").map_err(codec)?,
        wallet_seqno: r.u32("wallet seqno").map_err(codec)?,
        sent_at: r.u64("sent at").map_err(codec)?,
    };
    r.finish().map_err(codec)?;
    Ok(entry)
}

/// A `pay-debts/v1` entry: client key → what it owes (u64).
pub(crate) fn decode_debt(key: &[u8], value: &[u8]) -> Result<([u8; 32], u64), StoreError> {
    let (Ok(client), Ok(owed)) = (<[u8; 32]>::try_from(key), <[u8; 8]>::try_from(value)) else {
        return Err(StoreError::Encode(format!("malformed debt entry ({} key bytes)", key.len())));
    };
    Ok((client, u64::from_be_bytes(owed)))
}

pub(crate) fn encode_client(c: &ClientChannel) -> Vec<u8> {
    let mut w = Writer::new();
    c.params.encode(&mut w);
    w.u64(c.deposited).u64(c.cumulative).u64(c.seqno).u8(c.code.as_u8()).u64(c.owed);
    w.finish()
}

pub(crate) fn decode_client(bytes: &[u8]) -> Result<ClientChannel, StoreError> {
    let mut r = Reader::new(bytes);
    let params = ChannelParams::decode(&mut r).map_err(codec)?;
    let deposited = r.u64("deposited").map_err(codec)?;
    let cumulative = r.u64("cumulative").map_err(codec)?;
    let seqno = r.u64("seqno").map_err(codec)?;
    // Records from before contract version 2 end here: version 1, owing what was signed.
    let (code, owed) = if r.is_empty() {
        (CodeVersion::V1, cumulative)
    } else {
        let code = CodeVersion::from_u8(r.u8("code version").map_err(codec)?)
            .ok_or_else(|| StoreError::Encode("unknown contract version".into()))?;
        (code, r.u64("owed").map_err(codec)?)
    };
    r.finish().map_err(codec)?;
    let mut c =
        ClientChannel::with_code(params, deposited, code).map_err(|e| StoreError::Encode(e.to_string()))?;
    (c.cumulative, c.seqno, c.owed) = (cumulative, seqno, owed);
    Ok(c)
}

/// A channel paying worker `[2; 32]` from the client key `client`, for tests.
#[cfg(test)]
pub(crate) fn test_channel(client: [u8; 32], seed: u64, deposited: u64) -> StoredChannel {
    use tycho_types::cell::HashBytes;
    let params = ChannelParams {
        client_key: client,
        worker_key: [2; 32],
        client: StdAddr::new(0, HashBytes([3; 32])),
        worker: StdAddr::new(0, HashBytes([4; 32])),
        dispute_window: 60,
        seed,
    };
    let state = ChannelState { deposited, dispute_window: 60, ..Default::default() };
    #[allow(clippy::unwrap_used)] // a test's channel
    StoredChannel { channel: WorkerChannel::new(params, state).unwrap(), last_voucher_at: 0 }
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::payments::voucher::Voucher;
    use libp2p::identity::ed25519;
    use tycho_types::cell::HashBytes;

    use super::*;
    use crate::store::Store;

    #[test]
    fn vouchers_channels_debts_and_claims_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519::Keypair::generate();
        let mut stored = test_channel(key.public().to_bytes(), 9, 1_000);
        let params = stored.channel.params.clone();
        let v =
            Voucher { channel: stored.channel.address.clone(), cumulative: 40, seqno: 1 }.sign(&key).unwrap();
        stored.channel.accept(v.clone());
        stored.last_voucher_at = 77;
        {
            let book = Store::open(dir.path()).unwrap().payments().unwrap();
            book.accept_voucher(&stored, &v).unwrap();
            book.add_debt(&[5; 32], 12).unwrap();
            book.put_claim(
                &stored.channel.address,
                &ClaimEntry { cumulative: 40, seqno: 1, wallet_seqno: 3, sent_at: 5 },
            )
            .unwrap();
            let mut client = ClientChannel::new(params.clone(), 1_000).unwrap();
            client.pay(40).unwrap();
            book.put_client_channel(&client).unwrap();
            let mut gone =
                ClientChannel::new(ChannelParams { worker_key: [6; 32], ..params.clone() }, 5).unwrap();
            gone.pay(3).unwrap();
            book.put_client_channel(&gone).unwrap();
            book.retire_client_channel(&gone).unwrap();
        }
        let book = Store::open(dir.path()).unwrap().payments().unwrap();
        assert_eq!(book.channel(&stored.channel.address).unwrap(), Some(stored.clone()));
        assert_eq!(book.vouchers(&stored.channel.address).unwrap(), vec![v]);
        assert_eq!(book.debt(&[5; 32]).unwrap(), 12);
        assert_eq!(book.debts().unwrap(), vec![([5; 32], 12)]);
        assert_eq!(book.claim(&stored.channel.address).unwrap().unwrap().wallet_seqno, 3);
        let client = book.client_channel(&[2; 32]).unwrap().unwrap();
        assert_eq!((client.cumulative, client.seqno, client.deposited, client.owed), (40, 1, 1_000, 40));
        assert_eq!(client.code, CodeVersion::V2);
        assert_eq!(book.client_channels().unwrap().len(), 1, "the retired channel left the active ones");
        let retired = book.retired_channels().unwrap();
        assert_eq!((retired.len(), retired[0].owed), (1, 3));
        book.forget_retired(&retired[0].address).unwrap();
        assert!(book.retired_channels().unwrap().is_empty());
        book.finish_claim(&stored.channel.address).unwrap();
        assert_eq!(book.claim(&stored.channel.address).unwrap(), None);
    }

    #[test]
    fn records_written_before_contract_version_2_read_as_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChannelParams {
            client_key: [1; 32],
            worker_key: [2; 32],
            client: StdAddr::new(0, HashBytes([3; 32])),
            worker: StdAddr::new(0, HashBytes([4; 32])),
            dispute_window: 60,
            seed: 9,
        };
        let book = Store::open(dir.path()).unwrap().payments().unwrap();
        let mut w = Writer::new();
        params.encode(&mut w);
        w.u64(1_000).u64(40).u64(2);
        book.client.insert([2; 32], w.finish()).unwrap();
        let old = book.client_channel(&[2; 32]).unwrap().unwrap();
        assert_eq!((old.code, old.owed, old.cumulative), (CodeVersion::V1, 40, 40));
        assert_eq!(old.address, params.address_of(CodeVersion::V1).unwrap());
        assert_ne!(old.address, params.address().unwrap(), "the two versions live at different addresses");
        let state = ChannelState { deposited: 1_000, ..Default::default() };
        let worker = StoredChannel {
            channel: WorkerChannel::with_code(params, state, CodeVersion::V1).unwrap(),
            last_voucher_at: 1,
        };
        book.put_channel(&worker).unwrap();
        assert_eq!(book.channel(&worker.channel.address).unwrap().unwrap().channel.code, CodeVersion::V1);
    }
}
