//! Entry points for the fuzz targets (`tests/fuzz`, replayed by `tests/fuzz_corpora.rs`) into
//! decoders that are private to this crate: the session frame reader driven by a scripted peer,
//! TON Center answer parsing, `chain serve`'s `sendBoc`, and the store's record codecs. Thin
//! wrappers only, hidden from the docs; not an API for anything else.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use cocoon_protocol::payments::ledger::ClientChannel;
use futures::{AsyncRead, AsyncWrite};
use serde_json::Value;

use crate::attestation::tdx::Collateral;
use crate::chain::local::{Clock, LocalChain};
use crate::chain::{AccountInfo, ChainError, GetMethodResult, StackValue, TxSummary, serve, toncenter};
use crate::inference::session::{self, SessionError};
use crate::store::{ClaimEntry, KnownPeer, NOISE_PARAMS, StoreError, StoredChannel};

// ---------------------------------------------------------------------------------------------
// The session frame reader.

/// How the worker's side of a fuzzed session went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRun {
    /// Whether the handshake completed.
    pub handshake: bool,
    /// The frames [`session::Reader::recv`] returned, in order.
    pub frames: Vec<Vec<u8>>,
    /// Why it stopped.
    pub end: SessionEnd,
}

/// Why a fuzzed session stopped returning frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The stream ended at a message boundary.
    Closed,
    /// A frame announced more than the maximum.
    TooLarge {
        /// Announced length.
        len: usize,
    },
    /// A message did not decrypt (or the handshake failed).
    Noise,
    /// The stream ended inside a message.
    Io,
    /// Any other error.
    Other(String),
}

fn end_of(e: SessionError) -> SessionEnd {
    match e {
        SessionError::Closed => SessionEnd::Closed,
        SessionError::FrameTooLarge { len, .. } => SessionEnd::TooLarge { len },
        SessionError::Noise(_) => SessionEnd::Noise,
        SessionError::Io(_) => SessionEnd::Io,
        // Errors of the sending half, which a reader never returns (present or not, by version).
        #[allow(unreachable_patterns)]
        other => SessionEnd::Other(other.to_string()),
    }
}

/// The worker's private and public key and the client's private key, the same for a whole process.
struct SessionKeys {
    worker_private: [u8; 32],
    worker_public: [u8; 32],
    client_private: [u8; 32],
}

fn session_keys() -> Option<&'static SessionKeys> {
    static KEYS: OnceLock<Option<SessionKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (worker_private, worker_public) = session::generate_keypair().ok()?;
        let (client_private, _) = session::generate_keypair().ok()?;
        Some(SessionKeys { worker_private, worker_public, client_private })
    })
    .as_ref()
}

/// The client half, still waiting for the worker's handshake reply.
struct PendingClient {
    handshake: snow::HandshakeState,
    transport: Vec<Vec<u8>>,
    tamper: Option<(usize, usize)>,
}

/// A peer whose bytes are scripted: it hands the worker `wire` and, once the worker has written
/// its handshake reply, the client's transport messages. Reads after the end see end of stream.
struct ScriptedPeer {
    wire: Vec<u8>,
    read: usize,
    written: Vec<u8>,
    client: Option<PendingClient>,
}

fn push_message(wire: &mut Vec<u8>, message: &[u8]) {
    wire.extend_from_slice(&(message.len() as u16).to_be_bytes());
    wire.extend_from_slice(message);
}

fn flip(message: &mut [u8], tamper: Option<(usize, usize)>, index: usize) {
    if let Some((i, at)) = tamper
        && i == index
        && !message.is_empty()
    {
        let at = at % message.len();
        message[at] ^= 0x01;
    }
}

impl ScriptedPeer {
    /// The worker wrote its reply: finish the client's handshake and queue its messages.
    fn continue_client(&mut self) {
        let Some(mut client) = self.client.take() else { return };
        let Some(len) = self.written.first_chunk::<2>().map(|l| usize::from(u16::from_be_bytes(*l))) else {
            return;
        };
        let Some(reply) = self.written.get(2..2 + len) else { return };
        let mut buf = vec![0u8; session::MAX_NOISE_MESSAGE];
        if client.handshake.read_message(reply, &mut buf).is_err() {
            return;
        }
        let Ok(mut transport) = client.handshake.into_transport_mode() else { return };
        for (i, payload) in client.transport.iter().enumerate() {
            let Ok(n) = transport.write_message(payload, &mut buf) else { return };
            flip(&mut buf[..n], client.tamper, i + 1);
            push_message(&mut self.wire, &buf[..n]);
        }
    }
}

impl AsyncRead for ScriptedPeer {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.read == this.wire.len() {
            this.continue_client();
        }
        let n = buf.len().min(this.wire.len() - this.read);
        buf[..n].copy_from_slice(&this.wire[this.read..this.read + n]);
        this.read += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ScriptedPeer {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn run_worker(peer: ScriptedPeer, worker_private: &[u8; 32], max: usize) -> SessionRun {
    futures::executor::block_on(async {
        let mut s = match session::respond(peer, worker_private).await {
            Ok(s) => s,
            Err(e) => return SessionRun { handshake: false, frames: Vec::new(), end: end_of(e) },
        };
        let mut frames = Vec::new();
        loop {
            match s.recv(max).await {
                Ok(frame) => frames.push(frame),
                Err(e) => return SessionRun { handshake: true, frames, end: end_of(e) },
            }
        }
    })
}

/// An honest client's handshake carrying `first` (plaintext of the application byte stream),
/// then one transport message per entry of `transport`, all read by the worker with frames of
/// at most `max` bytes. `tamper` = (message, byte) flips one ciphertext bit: message 0 is the
/// handshake message, `i + 1` the transport message `i`. `None` if a payload is too long for
/// one Noise message.
pub fn session_messages(
    first: &[u8],
    transport: &[Vec<u8>],
    tamper: Option<(usize, usize)>,
    max: usize,
) -> Option<SessionRun> {
    let keys = session_keys()?;
    let params = NOISE_PARAMS.parse().ok()?;
    let mut handshake = snow::Builder::new(params)
        .local_private_key(&keys.client_private)
        .ok()?
        .remote_public_key(&keys.worker_public)
        .ok()?
        .build_initiator()
        .ok()?;
    let mut buf = vec![0u8; session::MAX_NOISE_MESSAGE];
    let n = handshake.write_message(first, &mut buf).ok()?;
    if transport.iter().any(|t| t.len() > session::MAX_NOISE_MESSAGE - 16) {
        return None;
    }
    flip(&mut buf[..n], tamper, 0);
    let mut wire = Vec::new();
    push_message(&mut wire, &buf[..n]);
    let client = PendingClient { handshake, transport: transport.to_vec(), tamper };
    let peer = ScriptedPeer { wire, read: 0, written: Vec::new(), client: Some(client) };
    Some(run_worker(peer, &keys.worker_private, max))
}

/// Raw bytes from a stranger, read by a worker as a session with frames of at most `max` bytes.
pub fn session_raw(wire: &[u8], max: usize) -> Option<SessionRun> {
    let keys = session_keys()?;
    let peer = ScriptedPeer { wire: wire.to_vec(), read: 0, written: Vec::new(), client: None };
    Some(run_worker(peer, &keys.worker_private, max))
}

// ---------------------------------------------------------------------------------------------
// TON Center answers and `chain serve`.

/// How the Toncenter client takes an answer: `None` means it would retry, otherwise the
/// envelope's result or a final error.
pub fn toncenter_classify(status: u16, body: &[u8]) -> Option<Result<Value, ChainError>> {
    let status = reqwest::StatusCode::from_u16(status).ok()?;
    match toncenter::classify(status, Some(Duration::from_secs(1)), body) {
        toncenter::Attempt::Done(result) => Some(result),
        toncenter::Attempt::Retry { .. } => None,
    }
}

/// `getAddressInformation`'s result as the Toncenter client reads it.
pub fn toncenter_account(result: &Value) -> Result<AccountInfo, ChainError> {
    toncenter::account_info(result)
}

/// `runGetMethod`'s result as the Toncenter client reads it.
pub fn toncenter_get_method(result: &Value) -> Result<GetMethodResult, ChainError> {
    toncenter::get_method_result("fuzzed", result)
}

/// One `getTransactions` entry as the Toncenter client reads it.
pub fn toncenter_transaction(entry: &Value) -> Result<(TxSummary, Option<(String, String)>), ChainError> {
    toncenter::transaction_entry(entry)
}

/// The block query the Toncenter client builds from `getMasterchainInfo`'s result.
pub fn toncenter_last_block(info: &Value) -> Result<Vec<String>, ChainError> {
    Ok(toncenter::last_block(info)?.into_iter().map(|(_, v)| v).collect())
}

/// A non-negative number field as the Toncenter client reads it.
pub fn toncenter_number(v: &Value) -> Result<u64, ChainError> {
    toncenter::number(v, "fuzzed")
}

/// One get-method stack entry as the Toncenter client reads it.
pub fn toncenter_stack_value(entry: &Value) -> Result<StackValue, ChainError> {
    toncenter::stack_value(entry)
}

/// One get-method stack entry as `chain serve` writes it.
pub fn serve_stack_entry(v: &StackValue) -> Value {
    serve::stack_entry(v)
}

/// `chain serve`'s `POST /api/v2/sendBoc` with request body `body`, on an empty chain kept for
/// the whole process: the HTTP status and the answer's body.
pub fn chain_send_boc(body: &[u8]) -> Option<(u16, Vec<u8>)> {
    static CHAIN: OnceLock<Option<(tokio::runtime::Runtime, Arc<LocalChain>)>> = OnceLock::new();
    let (runtime, chain) = CHAIN
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().build().ok()?;
            let chain = LocalChain::new(Clock::Manual(1_750_000_000)).ok()?;
            Some((runtime, Arc::new(chain)))
        })
        .as_ref()?;
    runtime.block_on(async {
        let response = serve::send_boc_body(chain.clone(), body).await;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.ok()?;
        Some((status, bytes.to_vec()))
    })
}

// ---------------------------------------------------------------------------------------------
// The store's record codecs (`store/*.rs`).

/// A `pay-channels/v1` value.
pub fn store_decode_channel(bytes: &[u8]) -> Result<StoredChannel, StoreError> {
    crate::store::payments::decode_channel(bytes)
}

/// What `pay-channels/v1` stores for `c`.
pub fn store_encode_channel(c: &StoredChannel) -> Vec<u8> {
    crate::store::payments::encode_channel(c)
}

/// A `pay-client/v1` or `pay-client-retired/v1` value.
pub fn store_decode_client(bytes: &[u8]) -> Result<ClientChannel, StoreError> {
    crate::store::payments::decode_client(bytes)
}

/// What `pay-client/v1` stores for `c`.
pub fn store_encode_client(c: &ClientChannel) -> Vec<u8> {
    crate::store::payments::encode_client(c)
}

/// A `pay-journal/v1` value.
pub fn store_decode_claim(bytes: &[u8]) -> Result<ClaimEntry, StoreError> {
    crate::store::payments::decode_claim(bytes)
}

/// What `pay-journal/v1` stores for `e`.
pub fn store_encode_claim(e: &ClaimEntry) -> Vec<u8> {
    crate::store::payments::encode_claim(e)
}

/// A `pay-debts/v1` entry.
pub fn store_decode_debt(key: &[u8], value: &[u8]) -> Result<([u8; 32], u64), StoreError> {
    crate::store::payments::decode_debt(key, value)
}

/// A `peers/v1` entry.
pub fn store_decode_peer(key: &[u8], value: &[u8]) -> Option<KnownPeer> {
    crate::store::peer_book::decode_entry(key, value)
}

/// What `peers/v1` stores for `peer`.
pub fn store_encode_peer(peer: &KnownPeer) -> Result<Vec<u8>, StoreError> {
    crate::store::peer_book::encode_peer(peer)
}

/// A `collateral/v1` value.
pub fn store_decode_collateral(value: &[u8]) -> Option<(Collateral, u64)> {
    crate::store::collateral::decode_value(value)
}

/// What `collateral/v1` stores.
pub fn store_encode_collateral(collateral: &Collateral, until: u64) -> Result<Vec<u8>, StoreError> {
    crate::store::collateral::encode_value(collateral, until)
}

/// A `models/v1` value, looked up for a file of `size` bytes modified at `mtime_ns`.
pub fn store_decode_model(value: &[u8], size: u64, mtime_ns: u64) -> Option<[u8; 32]> {
    crate::store::models::decode_value(value, size, mtime_ns)
}

/// What `models/v1` stores.
pub fn store_encode_model(size: u64, mtime_ns: u64, hash: &[u8; 32]) -> Vec<u8> {
    crate::store::models::encode_value(size, mtime_ns, hash)
}
