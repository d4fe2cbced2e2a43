//! The adversary kit: real malicious peers built from the project's own types (real nodes, real
//! libp2p streams, real Noise sessions, real signed receipts), each a small configurable
//! behaviour. Tests run honest traffic beside them and assert what the honest side keeps.
//!
//! Malicious clients use a real client node's network to open raw sessions: they stop reading
//! mid-answer, hold streams without a handshake, name channels that do not exist, or send bytes
//! that do not decode. Malicious workers are real worker nodes whose record is published as usual
//! but whose `/cocoon/inference/1` streams are served here (`Extras::streams_served_by_process`):
//! they stream for ever, stall the voucher exchange, refuse everything, or inflate receipts.

use std::path::Path;
use std::time::Duration;

use cocoon::inference::session::{self, Session};
use cocoon::node::Node;
use cocoon::store::{load_or_create_identity, load_or_create_noise_key};
use cocoon_protocol::inference::messages::{
    ErrorCode, FinishReason, MAX_CLIENT_FRAME, MAX_REQUEST, PROTOCOL, Request, ServerFrame,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};
use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// A raw inference stream from `client` to `worker`, before any handshake.
pub async fn raw_stream(client: &Node, worker: PeerId) -> libp2p::Stream {
    client.network().streams().open_stream(worker, StreamProtocol::new(PROTOCOL)).await.expect("stream opens")
}

/// Open a Noise session from `client` to `worker` carrying `request` (as bytes), as a raw client
/// would.
pub async fn session_with(client: &Node, worker: &Node, request: &[u8]) -> Session<libp2p::Stream> {
    let record = client.attestation().record_of(&worker.peer_id()).expect("worker's record");
    let stream = raw_stream(client, worker.peer_id()).await;
    session::initiate(stream, &record.record().noise_static, request).await.expect("handshake")
}

/// A client that asks for a long answer, reads its first frame, and then never reads again: the
/// worker's sends block once the transport's flow-control window is full. Holding the returned
/// session keeps the stream open.
pub async fn stop_reading(client: &Node, worker: &Node, request: &Request) -> Session<libp2p::Stream> {
    let mut s = session_with(client, worker, &request.encode()).await;
    let first = s.recv(MAX_REQUEST).await.expect("a first frame");
    assert!(matches!(ServerFrame::decode(&first), Ok(ServerFrame::Chunk(_))), "the answer started");
    s
}

/// A client that opens `n` streams and never starts a handshake on any of them.
pub async fn silent_streams(client: &Node, worker: PeerId, n: usize) -> Vec<libp2p::Stream> {
    let mut held = Vec::new();
    for _ in 0..n {
        match client.network().streams().open_stream(worker, StreamProtocol::new(PROTOCOL)).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    held
}

/// What a malicious worker does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mischief {
    /// Stream text for ever (until the client stops it).
    StreamForever,
    /// Answer and invoice correctly, then never acknowledge the voucher.
    StallVoucher,
    /// Refuse every request (as if the attested model were not served).
    RefuseEverything,
    /// Answer, then invoice a prompt far larger than the one sent.
    InflateReceipt,
}

/// Serve `worker`'s inference streams with `mischief` (the node must have been started with
/// `Extras::streams_served_by_process`), pricing receipts at `price` per 1,000 tokens.
pub fn misbehave(worker: &Node, data_dir: &Path, mischief: Mischief, price: u64) -> JoinHandle<()> {
    let noise = load_or_create_noise_key(data_dir).expect("noise key");
    let identity = load_or_create_identity(data_dir).expect("identity");
    let mut incoming =
        worker.network().streams().accept(StreamProtocol::new(PROTOCOL)).expect("accept inference streams");
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            let (noise, identity) = (noise.private, identity.clone());
            tokio::spawn(async move {
                let Ok(mut s) = session::respond(stream, &noise).await else { return };
                let Ok(bytes) = s.recv(MAX_REQUEST).await else { return };
                let Ok(request) = Request::decode(&bytes) else { return };
                serve(&mut s, &identity, &request, &bytes, mischief, price).await;
            });
        }
    })
}

async fn serve(
    s: &mut Session<libp2p::Stream>,
    identity: &libp2p::identity::Keypair,
    request: &Request,
    request_bytes: &[u8],
    mischief: Mischief,
    price: u64,
) {
    if mischief == Mischief::RefuseEverything {
        let refusal = ServerFrame::Error { code: ErrorCode::UnknownModel, message: "not here".into() };
        let _ = s.send(&refusal.encode()).await;
        return;
    }
    let mut response = Sha256::new();
    let mut sent = 0u32;
    loop {
        let text = "spam ".to_owned();
        response.update(text.as_bytes());
        if s.send(&ServerFrame::Chunk(text).encode()).await.is_err() {
            return;
        }
        sent += 1;
        if mischief != Mischief::StreamForever && sent == request.max_tokens.min(3) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let prompt_tokens = if mischief == Mischief::InflateReceipt { 1_000_000 } else { 8 };
    let usage = Usage { prompt_tokens, completion_tokens: sent };
    let receipt = Receipt {
        worker: identity.public().to_peer_id(),
        model_id: request.model_id.clone(),
        engine: "ADVERSARY".into(),
        request_id: request.request_id,
        request_hash: sha256(request_bytes),
        response_hash: response.finalize().into(),
        usage,
        price_prompt_per_1k: price,
        price_completion_per_1k: price,
        amount: amount_due(price, price, usage),
        issued_at: cocoon::clock::unix_now(),
    };
    let done =
        ServerFrame::Done { finish_reason: FinishReason::Length, receipt: receipt.sign(identity).unwrap() };
    if s.send(&done.encode()).await.is_err() {
        return;
    }
    // The voucher arrives; a staller holds the session without a word.
    let _ = s.recv(MAX_CLIENT_FRAME).await;
    if mischief == Mischief::StallVoucher {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
