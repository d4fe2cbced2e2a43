//! Malicious workers: real worker nodes whose genuine record and offers are published as usual,
//! but whose `/cocoon/inference/2` streams are served here (`Extras::streams_served_by_process`):
//! refuse every request, stream text for ever, or answer and then invoice a prompt far larger
//! than the one sent. Each counts what it got and did in the run's [`Tally`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon::inference::engine::STAND_IN_ENGINE;
use cocoon::inference::session::{self, Session};
use cocoon::node::Node;
use cocoon_protocol::inference::messages::{
    AnswerDigest, ClientFrame, ErrorCode, Event, FinishReason, MAX_CLIENT_FRAME, MAX_REQUEST, PROTOCOL,
    Request, ServerFrame,
};
use cocoon_protocol::inference::pricing::amount_due;
use cocoon_protocol::inference::receipt::{Receipt, Usage, sha256};
use futures::StreamExt;
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;

use super::Tally;

/// A text event without log-probabilities.
fn text(t: &str) -> Event {
    Event::Text { text: t.into(), logprob: None }
}
use crate::plan::{Kind, WorkerMischief};

/// Prompt tokens an inflating worker invoices, whatever the prompt was.
const INFLATED_PROMPT: u32 = 1_000_000;
/// Chunks an inflating worker sends before its receipt (at most the request's `max_tokens`).
const INFLATED_CHUNKS: u32 = 4;
/// The handshake and request, as the honest worker's limit.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a malicious worker waits for the client's closing frame after its receipt.
const VOUCHER_WAIT: Duration = Duration::from_secs(10);
/// Longest an endless worker streams one answer (an honest client cuts it off far sooner).
const ENDLESS_FOR: Duration = Duration::from_secs(120);

/// What a malicious worker serves with.
#[derive(Debug, Clone)]
pub struct BadWorker {
    /// What it does with each request.
    pub mischief: WorkerMischief,
    /// Its identity (signs receipts).
    pub identity: Keypair,
    /// Its attested Noise private key.
    pub noise: [u8; 32],
    /// The attested price per 1,000 tokens (receipts must charge it to get past the price check).
    pub price: u64,
    /// Gap between chunks.
    pub pace: Duration,
    /// Where it counts.
    pub tally: Arc<Tally>,
}

/// Serve `node`'s inference streams with `worker`'s mischief until the node stops.
pub fn serve(node: &Node, worker: BadWorker) -> Result<(), String> {
    let mut incoming = node
        .network()
        .streams()
        .accept(StreamProtocol::new(PROTOCOL))
        .map_err(|e| format!("{PROTOCOL}: {e:?}"))?;
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            let worker = worker.clone();
            tokio::spawn(async move { worker.one(stream).await });
        }
    });
    Ok(())
}

impl BadWorker {
    fn count(&self, what: &str, n: u64) {
        self.tally.add(Kind::BadWorker(self.mischief).name(), what, n);
    }

    async fn one(&self, stream: libp2p::Stream) {
        let opened = tokio::time::timeout(HANDSHAKE, async {
            let mut s = session::respond(stream, &self.noise).await.ok()?;
            let bytes = s.recv(MAX_REQUEST).await.ok()?;
            Some((s, bytes))
        })
        .await;
        let Ok(Some((mut s, bytes))) = opened else { return self.count("sessions failed", 1) };
        let Ok(request) = Request::decode(&bytes) else { return self.count("undecodable requests", 1) };
        self.count("requests", 1);
        match self.mischief {
            WorkerMischief::Refuse => {
                let no =
                    ServerFrame::Error { code: ErrorCode::UnknownModel, message: "not served here".into() };
                if s.send(&no.encode()).await.is_ok() {
                    self.count("refused", 1);
                }
                let _ = s.close().await;
            }
            WorkerMischief::Endless => self.endless(&mut s).await,
            WorkerMischief::Inflate => self.inflate(&mut s, &request, &bytes).await,
        }
    }

    /// Chunks at the engine's pace, the first at once (it looks fast), until a send fails.
    async fn endless(&self, s: &mut Session<libp2p::Stream>) {
        let until = Instant::now() + ENDLESS_FOR;
        let mut sent = 0;
        let cut = loop {
            if Instant::now() >= until {
                break false;
            }
            if s.send(&ServerFrame::Event(text("more ")).encode()).await.is_err() {
                break true;
            }
            sent += 1;
            tokio::time::sleep(self.pace).await;
        };
        self.count("chunks sent", sent);
        self.count(if cut { "answers cut off by the client" } else { "answers given up" }, 1);
    }

    /// A short answer, then a receipt for a prompt of a million tokens at the attested price.
    async fn inflate(&self, s: &mut Session<libp2p::Stream>, request: &Request, request_bytes: &[u8]) {
        let mut response = AnswerDigest::default();
        let chunks = request.max_tokens.clamp(1, INFLATED_CHUNKS);
        for _ in 0..chunks {
            let event = text("fine ");
            response.update(&event);
            if s.send(&ServerFrame::Event(event).encode()).await.is_err() {
                return self.count("answers cut off by the client", 1);
            }
            tokio::time::sleep(self.pace).await;
        }
        let usage = Usage { prompt_tokens: INFLATED_PROMPT, completion_tokens: chunks };
        let receipt = Receipt {
            worker: self.identity.public().to_peer_id(),
            model_id: request.model_id.clone(),
            engine: STAND_IN_ENGINE.into(),
            request_id: request.request_id,
            request_hash: sha256(request_bytes),
            response_hash: response.finish(),
            usage,
            price_prompt_per_1k: self.price,
            price_completion_per_1k: self.price,
            amount: amount_due(self.price, self.price, usage),
            issued_at: cocoon::clock::unix_now(),
        };
        let Ok(signed) = receipt.sign(&self.identity) else { return self.count("receipts not signed", 1) };
        let done = ServerFrame::Done { finish_reason: FinishReason::Length, receipt: signed };
        if s.send(&done.encode()).await.is_err() {
            return self.count("receipts not delivered", 1);
        }
        self.count("inflated receipts sent", 1);
        let closing = tokio::time::timeout(VOUCHER_WAIT, s.recv(MAX_CLIENT_FRAME)).await;
        let what = match closing.map(|r| r.map(|b| ClientFrame::decode(&b))) {
            Ok(Ok(Ok(ClientFrame::Voucher(v)))) if !v.is_empty() => "vouchers received",
            Ok(Ok(_)) => "closing frames without a voucher",
            Ok(Err(_)) => "sessions closed without a voucher",
            Err(_) => "no closing frame",
        };
        self.count(what, 1);
    }
}
