//! Tests of the voucher log: what it holds survives a reopen, a torn tail is dropped, and folding
//! never moves a record backwards.

use cocoon_protocol::payments::voucher::{SignedVoucher, Voucher};
use libp2p::identity::ed25519;

use super::*;
use crate::store::{Store, StoredChannel};

fn channel(key: &ed25519::Keypair, seed: u64) -> StoredChannel {
    crate::store::payments::test_channel(key.public().to_bytes(), seed, 1_000_000)
}

/// `c` after accepting a voucher of `cumulative` at `seqno` (at time `at`), and its write.
fn pay(key: &ed25519::Keypair, c: &mut StoredChannel, cumulative: u64, seqno: u64, at: u64) -> VoucherWrite {
    let v = Voucher { channel: c.channel.address.clone(), cumulative, seqno }.sign(key).unwrap();
    c.channel.accept(v.clone());
    c.last_voucher_at = at;
    VoucherWrite::new(c, &v)
}

fn seqnos(vouchers: &[SignedVoucher]) -> Vec<u64> {
    vouchers.iter().map(|v| v.voucher.seqno).collect()
}

/// Vouchers appended and synced are in the store after it is reopened (the node was killed before
/// it folded them): every voucher in the history, each channel's newest in its record, the record
/// created from the log where the store had none, and the log emptied.
#[test]
fn a_reopened_store_holds_every_logged_voucher() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519::Keypair::generate();
    let (mut a, mut b) = (channel(&key, 1), channel(&key, 2));
    {
        let store = Store::open(dir.path()).unwrap();
        store.payments().unwrap().put_channel(&a).unwrap();
        store.flush().unwrap();
        let mut log = VoucherLog::open(dir.path()).unwrap();
        log.append(&[pay(&key, &mut a, 10, 1, 100), pay(&key, &mut b, 5, 1, 101)]).unwrap();
        log.append(&[pay(&key, &mut a, 30, 2, 102)]).unwrap();
        assert!(!log.is_empty());
    }
    let store = Store::open(dir.path()).unwrap();
    let book = store.payments().unwrap();
    let held = book.channel(&a.channel.address).unwrap().unwrap();
    assert_eq!((held.channel.cumulative(), held.channel.seqno(), held.last_voucher_at), (30, 2, 102));
    assert_eq!(seqnos(&book.vouchers(&a.channel.address).unwrap()), vec![1, 2]);
    let created = book.channel(&b.channel.address).unwrap().unwrap();
    assert_eq!(created, b);
    assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), 0);
}

/// A frame cut short (the sync of its batch never finished) or damaged ends the log: the frames
/// before it are folded, nothing after it is.
#[test]
fn a_torn_tail_is_dropped_and_the_rest_folded() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519::Keypair::generate();
    let mut a = channel(&key, 1);
    let writes = [pay(&key, &mut a, 10, 1, 1), pay(&key, &mut a, 20, 2, 2), pay(&key, &mut a, 30, 3, 3)];
    let mut bytes = Vec::new();
    for w in &writes {
        frame(w, &mut bytes);
    }
    let (whole, used) = parse(&bytes);
    assert_eq!((whole.len(), used), (3, bytes.len()));
    let one = bytes.len() / 3;
    for cut in [bytes.len() - 1, 2 * one + 5, 2 * one + 2] {
        let (kept, used) = parse(&bytes[..cut]);
        assert_eq!((kept.len(), used), (2, 2 * one), "cut at {cut}");
    }
    let mut damaged = bytes.clone();
    damaged[one + 20] ^= 1;
    let (kept, used) = parse(&damaged);
    assert_eq!((kept.len(), used), (1, one));

    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join(FILE), &bytes[..bytes.len() - 7]).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = store.payments().unwrap().channel(&a.channel.address).unwrap().unwrap();
    assert_eq!((held.channel.cumulative(), held.channel.seqno()), (20, 2));
}

/// Folding only ever names a newer voucher in a record: a record the node wrote after the log
/// (a newer voucher, a co-signed close, the chain's state) is left as it is, and folding the same
/// log twice changes nothing.
#[test]
fn folding_never_moves_a_record_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519::Keypair::generate();
    let mut a = channel(&key, 1);
    let store = Store::open(dir.path()).unwrap();
    let book = store.payments().unwrap();
    let old = [pay(&key, &mut a, 10, 1, 1), pay(&key, &mut a, 20, 2, 2)];
    pay(&key, &mut a, 30, 3, 3);
    a.channel.co_signed = true;
    a.channel.chain.claimed = 7;
    book.put_channel(&a).unwrap();
    let mut log = VoucherLog::open(dir.path()).unwrap();
    log.append(&old).unwrap();
    assert_eq!(log.fold_into(&book).unwrap(), 2);
    assert_eq!(book.channel(&a.channel.address).unwrap().unwrap(), a);
    assert_eq!(seqnos(&book.vouchers(&a.channel.address).unwrap()), vec![1, 2]);

    let mut b = channel(&key, 2);
    let newer = pay(&key, &mut b, 40, 4, 9);
    let mut stale = b.clone();
    stale.channel.best = None;
    stale.channel.chain.claimed = 3;
    book.put_channel(&stale).unwrap();
    log.append(std::slice::from_ref(&newer)).unwrap();
    log.fold_into(&book).unwrap();
    log.append(std::slice::from_ref(&newer)).unwrap();
    log.fold_into(&book).unwrap();
    let held = book.channel(&b.channel.address).unwrap().unwrap();
    assert_eq!((held.channel.seqno(), held.last_voucher_at, held.channel.chain.claimed), (4, 9, 3));
    assert!(log.is_empty());
}

/// While the node runs, the log is not folded yet: the book's readers (the admin report, the
/// operator's status) see its vouchers all the same.
#[test]
fn the_book_reads_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519::Keypair::generate();
    let (mut a, mut b) = (channel(&key, 1), channel(&key, 2));
    let store = Store::open(dir.path()).unwrap();
    let book = store.payments().unwrap();
    book.put_channel(&a).unwrap();
    let mut log = VoucherLog::open(dir.path()).unwrap();
    log.append(&[pay(&key, &mut a, 10, 1, 5), pay(&key, &mut b, 7, 1, 6)]).unwrap();
    let mut all = book.channels().unwrap();
    all.sort_by_key(|c| c.channel.params.seed);
    assert_eq!(all, vec![a.clone(), b.clone()]);
    assert_eq!(book.channel(&a.channel.address).unwrap(), Some(a.clone()));
    assert_eq!(book.channel(&b.channel.address).unwrap(), Some(b));
    assert_eq!(seqnos(&book.vouchers(&a.channel.address).unwrap()), vec![1]);
    log.fold_into(&book).unwrap();
    assert_eq!(book.channel(&a.channel.address).unwrap(), Some(a));
}

/// A claim decided with a voucher that a fold already wrote as the start of a run leaves the run
/// whole; one decided with a voucher still in the log stores it, and the fold keeps both.
#[test]
fn a_claimed_voucher_never_cuts_the_history_short() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519::Keypair::generate();
    let mut a = channel(&key, 1);
    let store = Store::open(dir.path()).unwrap();
    let book = store.payments().unwrap();
    let mut log = VoucherLog::open(dir.path()).unwrap();
    let first = [pay(&key, &mut a, 10, 1, 1), pay(&key, &mut a, 20, 2, 2)];
    log.append(&first).unwrap();
    log.fold_into(&book).unwrap();
    let claim = crate::store::ClaimEntry { cumulative: 10, seqno: 1, wallet_seqno: 0, sent_at: 0 };
    book.decide_claim(&claim, first[0].signed()).unwrap();
    assert_eq!(seqnos(&book.vouchers(&a.channel.address).unwrap()), vec![1, 2]);
    let third = pay(&key, &mut a, 30, 3, 3);
    log.append(std::slice::from_ref(&third)).unwrap();
    book.decide_claim(&claim, third.signed()).unwrap();
    log.append(&[pay(&key, &mut a, 40, 4, 4)]).unwrap();
    log.fold_into(&book).unwrap();
    assert_eq!(seqnos(&book.vouchers(&a.channel.address).unwrap()), vec![1, 2, 3, 4]);
}
