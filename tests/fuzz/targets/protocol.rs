//! Targets for the wire formats of `cocoon-protocol`: inference frames, vouchers, channel
//! parameters, envelopes, receipts and attestation records. Every encoding these decoders read
//! is canonical, so each target checks that whatever decodes encodes back to the same bytes, and
//! that signed things stay verifiable after the round trip.

use cocoon_protocol::attestation::binding::expected_report_data;
use cocoon_protocol::attestation::gpu_policy::GpuClaims;
use cocoon_protocol::attestation::policy::{self, AttestationPolicy, EvidenceClaims};
use cocoon_protocol::attestation::record::{AttestationRecord, GpuEvidence, TeeEvidence};
use cocoon_protocol::attestation::signed::{RECORD_DOMAIN, SignedRecord};
use cocoon_protocol::codec::Reader;
use cocoon_protocol::envelope::Envelope;
use cocoon_protocol::inference::messages::{ClientFrame, Request, ServerFrame};
use cocoon_protocol::inference::receipt::{RECEIPT_DOMAIN, Receipt};
use cocoon_protocol::payments::channel::{ChannelParams, ChannelState, CodeVersion};
use cocoon_protocol::payments::close::{CloseAnswer, CloseProposal};
use cocoon_protocol::payments::ledger::{ClientChannel, WorkerChannel};
use cocoon_protocol::payments::voucher::{SignedVoucher, Voucher};
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

use super::input::{Input, ed25519_key, identity};

/// What the fixed test channel holds, nanotons.
pub const DEPOSIT: u64 = 10_000_000_000;
/// "Now" for record checks.
pub const NOW: u64 = 1_750_000_100;

/// The channel the voucher target's worker holds: client key 0, worker key 1.
pub fn channel() -> ChannelParams {
    ChannelParams {
        client_key: ed25519_key(0).public().to_bytes(),
        worker_key: ed25519_key(1).public().to_bytes(),
        client: StdAddr::new(0, HashBytes([3; 32])),
        worker: StdAddr::new(0, HashBytes([4; 32])),
        dispute_window: 3600,
        seed: 5,
    }
}

/// A policy that accepts simulated evidence (so records get past the evidence checks).
pub fn permissive_policy() -> AttestationPolicy {
    AttestationPolicy { allow_simulated: true, ..AttestationPolicy::default() }
}

/// `Request::decode`: canonical (decode → encode gives the input back).
pub fn request(data: &[u8]) {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data, "a request decoded from bytes it does not encode to");
    }
}

/// `ServerFrame::decode`: canonical.
pub fn server_frame(data: &[u8]) {
    if let Ok(f) = ServerFrame::decode(data) {
        assert_eq!(f.encode(), data, "a server frame decoded from bytes it does not encode to");
    }
}

/// `ClientFrame::decode`: canonical; a voucher inside goes through the voucher target.
pub fn client_frame(data: &[u8]) {
    if let Ok(f) = ClientFrame::decode(data) {
        assert_eq!(f.encode(), data, "a client frame decoded from bytes it does not encode to");
        if let ClientFrame::Voucher(v) = f
            && !v.is_empty()
        {
            signed_voucher(&v);
        }
    }
}

/// `SignedVoucher::from_bytes`: canonical, its cell builds, and the worker's check of it against
/// the fixed channel agrees with the signature and the rules.
pub fn signed_voucher(data: &[u8]) {
    let Ok(v) = SignedVoucher::from_bytes(data) else { return };
    assert_eq!(v.to_bytes(), data, "a voucher decoded from bytes it does not encode to");
    assert!(v.voucher.cell().is_ok(), "a decoded voucher has no cell: {v:?}");
    let mut worker =
        WorkerChannel::new(channel(), ChannelState { deposited: DEPOSIT, ..ChannelState::default() })
            .expect("the fixed channel");
    // Invoice exactly what the voucher says: only the channel, signature, seqno and deposit decide.
    let verdict = worker.check(&v, v.voucher.cumulative);
    let signed = v.verify(&worker.params.client_key).is_ok();
    let acceptable = v.voucher.channel == worker.address
        && signed
        && v.voucher.seqno > 0
        && v.voucher.cumulative <= DEPOSIT;
    assert_eq!(verdict.is_ok(), acceptable, "check said {verdict:?} for {v:?}");
    if verdict.is_ok() {
        worker.accept(v.clone());
        assert_eq!((worker.cumulative(), worker.seqno()), (v.voucher.cumulative, v.voucher.seqno));
        assert!(worker.check(&v, 0).is_err(), "the same voucher accepted twice");
    }
}

/// `CloseProposal::decode` (what a client sends to have a close co-signed) and `CloseAnswer::decode`
/// (what a worker answers): canonical; the worker of the fixed channel, holding a voucher for
/// `DEPOSIT / 2`, co-signs exactly the closes of that channel signed by its client paying at
/// least that, and then admits nothing.
pub fn close_proposal(data: &[u8]) {
    if let Ok(a) = CloseAnswer::decode(data) {
        assert_eq!(a.encode(), data, "an answer decoded from bytes it does not encode to");
    }
    let Ok(p) = CloseProposal::decode(data) else { return };
    assert_eq!(p.encode(), data, "a proposal decoded from bytes it does not encode to");
    let mut worker =
        WorkerChannel::new(channel(), ChannelState { deposited: DEPOSIT, ..ChannelState::default() })
            .expect("the fixed channel");
    let held = Voucher { channel: worker.address.clone(), cumulative: DEPOSIT / 2, seqno: 1 }
        .sign(&ed25519_key(0))
        .expect("sign");
    worker.accept(held);
    let verdict = worker.co_sign(&p.close, &p.client_signature);
    let acceptable = p.close.channel == worker.address
        && p.close.verify(&worker.params.client_key, &p.client_signature).is_ok()
        && p.close.cumulative >= DEPOSIT / 2;
    assert_eq!(verdict.is_ok(), acceptable, "co_sign said {verdict:?} for {p:?}");
    assert_eq!(worker.co_signed, acceptable);
    assert_eq!(worker.admit(0).is_err(), acceptable, "a co-signed channel admitted a request");
}

/// `ChannelParams::decode` (as inside a request): canonical, and every decodable parameter set
/// has an address under both contract versions and makes a channel on both sides.
pub fn channel_params(data: &[u8]) {
    let mut r = Reader::new(data);
    let Ok(params) = ChannelParams::decode(&mut r) else { return };
    if r.finish().is_err() {
        return;
    }
    let mut w = cocoon_protocol::codec::Writer::new();
    params.encode(&mut w);
    assert_eq!(w.finish(), data, "channel parameters decoded from bytes they do not encode to");
    let v2 = params.address().expect("every decodable channel has an address");
    let v1 = params.address_of(CodeVersion::V1).expect("and one under version 1");
    assert_ne!(v1, v2, "both contract versions give one address");
    assert!(WorkerChannel::new(params.clone(), ChannelState::default()).is_ok());
    assert!(ClientChannel::new(params, 1).is_ok());
}

const ENVELOPE_DOMAIN: &[u8] = b"cocoon/fuzz/v1\0";
const ENVELOPE_MAX: usize = 4096;

/// `Envelope::open`. Even first byte: the rest is opened as received; what opens is canonical
/// (one signed body, one envelope: its key in no other protobuf encoding). Odd: the rest is a body
/// sealed with a fixed key, which must open under its domain and limit and nowhere else.
pub fn envelope(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let rest = input.rest();
    if mode % 2 == 0 {
        if let Ok(e) = Envelope::open(ENVELOPE_DOMAIN, rest, ENVELOPE_MAX) {
            assert_eq!(e.encode(), rest, "an envelope opened from bytes it does not encode to");
        }
        return;
    }
    let key = identity(mode >> 1 & 1);
    let sealed = Envelope::seal(ENVELOPE_DOMAIN, rest.to_vec(), &key).expect("sealing");
    let bytes = sealed.encode();
    let opened = Envelope::open(ENVELOPE_DOMAIN, &bytes, rest.len()).expect("a sealed envelope opens");
    assert_eq!((opened.body(), opened.signer()), (rest, key.public().to_peer_id()));
    assert_eq!(opened.encode(), bytes);
    assert!(Envelope::open(b"cocoon/other\0", &bytes, rest.len()).is_err(), "domain not checked");
    if !rest.is_empty() {
        assert!(Envelope::open(ENVELOPE_DOMAIN, &bytes, rest.len() - 1).is_err(), "body limit not checked");
    }
}

/// The first byte, and the bytes to open: the rest as is (even first byte) or the rest sealed in
/// `domain` by the fixed key 1 (odd), so that a body decoder is reached whatever the signature.
fn raw_or_sealed(data: &[u8], domain: &[u8]) -> (u8, Vec<u8>) {
    let mut input = Input(data);
    let mode = input.u8();
    let rest = input.rest();
    if mode % 2 == 0 {
        return (mode, rest.to_vec());
    }
    (mode, Envelope::seal(domain, rest.to_vec(), &identity(1)).expect("sealing").encode())
}

/// `Receipt::open`. Even first byte: the rest is a signed receipt as a client receives it. Odd:
/// the rest is a receipt body, sealed by the fixed worker key (so the body decoder is reached
/// whatever the signature). A receipt of the fixed worker that opens is canonical: signing it
/// again gives the same bytes.
pub fn receipt(data: &[u8]) {
    let (_, bytes) = raw_or_sealed(data, RECEIPT_DOMAIN);
    let bytes = &bytes[..];
    let Ok(r) = Receipt::open(bytes) else { return };
    if r.worker == identity(1).public().to_peer_id() {
        let resigned = r.sign(&identity(1)).expect("signing");
        assert_eq!(resigned, bytes, "a receipt opened from bytes that are not its canonical envelope");
    }
    let reopened = Receipt::open(bytes).expect("the same bytes open twice");
    assert_eq!(reopened, r);
}

/// `SignedRecord::open` and the node's cheap and evidence checks (`judge::admit`, `assess`). Even
/// first byte: the rest is a signed record as gossiped. Odd: the rest is a record body sealed by
/// the fixed key 1 (so the record decoder is reached). What opens is canonical, envelope and body.
pub fn signed_record(data: &[u8]) {
    let (mode, bytes) = raw_or_sealed(data, RECORD_DOMAIN);
    let bytes = &bytes[..];
    let Ok(signed) = SignedRecord::open(bytes) else { return };
    assert_eq!(signed.encode(), bytes, "a record opened from bytes that are not its envelope's encoding");
    if mode % 2 == 1 {
        assert_eq!(
            signed.record().encode().as_deref(),
            Ok(data.get(1..).unwrap_or_default()),
            "record body is not canonical"
        );
        let resigned = SignedRecord::sign(signed.record().clone(), &identity(1)).expect("signing");
        assert_eq!(resigned.encode(), bytes);
    }
    attestation_record_checks(signed.record());
    let known = std::sync::Mutex::new(cocoon::attestation::known::KnownWorkers::new(4));
    let peer = signed.record().peer_id;
    let admitted =
        cocoon::attestation::judge::admit(bytes, Some(peer), &known).expect("a valid record is admitted");
    let verifier = cocoon::attestation::verifier::Verifier::new(permissive_policy(), 4);
    let _ = cocoon::attestation::judge::assess(admitted, &verifier, None, NOW);
}

/// `AttestationRecord::decode`: canonical, and the evidence and policy checks run on it.
pub fn attestation_record(data: &[u8]) {
    let Ok(record) = AttestationRecord::decode(data) else { return };
    assert_eq!(record.encode().as_deref(), Ok(data), "a record decoded from bytes it does not encode to");
    attestation_record_checks(&record);
}

fn attestation_record_checks(record: &AttestationRecord) {
    let report_data = expected_report_data(record);
    let policy = permissive_policy();
    let _ = policy::check_freshness(&policy, record, NOW);
    if let TeeEvidence::Simulated(sim) = &record.evidence
        && let Ok(claims) = EvidenceClaims::from_simulated(sim)
    {
        // GPU claims where they need no vendor verification (simulated and unattested GPUs).
        let gpus: Vec<GpuClaims> = record
            .gpus
            .iter()
            .filter_map(|g| match g {
                GpuEvidence::Simulated(sim) => GpuClaims::from_simulated(sim).ok(),
                GpuEvidence::Unattested { .. } => Some(GpuClaims::unattested()),
                GpuEvidence::Nvidia(_) => None,
            })
            .collect();
        if gpus.len() != record.gpus.len() {
            return;
        }
        let verdict = policy::check(&policy, record, &claims, &gpus, NOW);
        if claims.report_data != report_data {
            assert!(verdict.is_err(), "report data that does not bind the record was accepted");
        }
    }
}
