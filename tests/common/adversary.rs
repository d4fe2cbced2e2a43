//! The adversary kit: real malicious peers built from the project's own types (real nodes, real
//! libp2p streams, real Noise sessions, real signed receipts), each a small configurable
//! behaviour. Tests run honest traffic beside them and assert what the honest side keeps.
//!
//! Malicious clients use a real client node's network to open raw sessions: they stop reading
//! mid-answer, hold streams without a handshake, name channels that do not exist, or send bytes
//! that do not decode. Malicious workers are real worker nodes whose record is published as usual
//! but whose `/cocoon/inference/2` streams are served here (`Extras::streams_served_by_process`):
//! they stream for ever, stall the voucher exchange, refuse everything, inflate receipts, or reset
//! streams before the handshake.

use std::path::Path;
use std::time::Duration;

use cocoon::inference::session::{self, Session};
use cocoon::node::Node;
use cocoon::store::{load_or_create_identity, load_or_create_noise_key};
use cocoon_protocol::inference::messages::{
    AnswerDigest, ErrorCode, Event, FinishReason, MAX_CLIENT_FRAME, MAX_REQUEST, PROTOCOL, Request,
    ServerFrame, ToolCallDelta,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};
use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
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
    assert!(matches!(ServerFrame::decode(&first), Ok(ServerFrame::Event(_))), "the answer started");
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
    /// Call the request's first tool, sign the receipt over the real arguments, and send them
    /// with one byte changed.
    FlipToolArguments,
    /// Reset this many streams before the handshake (as libp2p-stream does with streams that
    /// arrive while its accept channel is full), then answer like `StallVoucher` without the stall.
    ResetFirst(u32),
}

/// Serve `worker`'s inference streams with `mischief` (the node must have been started with
/// `Extras::streams_served_by_process`), pricing receipts at `price` per 1,000 tokens.
pub fn misbehave(worker: &Node, data_dir: &Path, mischief: Mischief, price: u64) -> JoinHandle<()> {
    let noise = load_or_create_noise_key(data_dir).expect("noise key");
    let identity = load_or_create_identity(data_dir).expect("identity");
    let mut incoming =
        worker.network().streams().accept(StreamProtocol::new(PROTOCOL)).expect("accept inference streams");
    let mut resets = match mischief {
        Mischief::ResetFirst(n) => n,
        _ => 0,
    };
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            if resets > 0 {
                resets -= 1;
                drop(stream);
                continue;
            }
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

/// Call the request's first tool: the digest covers the real arguments, the wire carries them with
/// one byte changed. Returns the events sent.
async fn flipped_call(
    s: &mut Session<libp2p::Stream>,
    request: &Request,
    response: &mut AnswerDigest,
) -> u32 {
    let name = request.shape.tools.first().map(|t| t.name.clone()).unwrap_or_default();
    let signed =
        ToolCallDelta { index: 0, id: "call_0".into(), name, arguments: r#"{"city":"Oslo"}"#.into() };
    response.update(&Event::ToolCall(signed.clone()));
    // One byte changed: the last letter of the city, o (0x6f) to n (0x6e).
    let sent_instead = ToolCallDelta { arguments: r#"{"city":"Osln"}"#.into(), ..signed };
    let _ = s.send(&ServerFrame::Event(Event::ToolCall(sent_instead)).encode()).await;
    1
}

/// Text until `max_tokens` (at most 3), or for ever; `None` when the client went away.
async fn spam(
    s: &mut Session<libp2p::Stream>,
    request: &Request,
    mischief: Mischief,
    response: &mut AnswerDigest,
) -> Option<u32> {
    let mut sent = 0u32;
    loop {
        let event = Event::Text { text: "spam ".to_owned(), logprob: None };
        response.update(&event);
        s.send(&ServerFrame::Event(event).encode()).await.ok()?;
        sent += 1;
        if mischief != Mischief::StreamForever && sent == request.max_tokens.min(3) {
            return Some(sent);
        }
        tokio::task::yield_now().await;
    }
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
    let mut response = AnswerDigest::default();
    let sent = if mischief == Mischief::FlipToolArguments {
        flipped_call(s, request, &mut response).await
    } else {
        match spam(s, request, mischief, &mut response).await {
            Some(sent) => sent,
            None => return,
        }
    };
    let prompt_tokens = if mischief == Mischief::InflateReceipt { 1_000_000 } else { 8 };
    let usage = Usage { prompt_tokens, completion_tokens: sent };
    let receipt = Receipt {
        worker: identity.public().to_peer_id(),
        model_id: request.model_id.clone(),
        engine: "ADVERSARY".into(),
        request_id: request.request_id,
        request_hash: sha256(request_bytes),
        response_hash: response.finish(),
        usage,
        price_prompt_per_1k: price,
        price_completion_per_1k: price,
        amount: amount_due(price, price, usage),
        issued_at: cocoon::clock::unix_now(),
    };
    let finish_reason =
        if mischief == Mischief::FlipToolArguments { FinishReason::ToolCalls } else { FinishReason::Length };
    let done = ServerFrame::Done { finish_reason, receipt: receipt.sign(identity).unwrap() };
    if s.send(&done.encode()).await.is_err() {
        return;
    }
    // The voucher arrives; a staller holds the session without a word.
    let _ = s.recv(MAX_CLIENT_FRAME).await;
    if mischief == Mischief::StallVoucher {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
