//! Cooperative closes over `/cocoon/channel-close/1`: the worker's side answers a client's signed
//! proposal with its own signature when the ledger's rules allow it ([`WorkerPayments::co_sign`],
//! the channel marked durably as closing first), and the client's side asks ([`ask`]).
//!
//! Every peer is a stranger here: a stream carries one message of at most
//! [`close::MAX_MESSAGE`] bytes each way and must finish within [`EXCHANGE_DEADLINE`]; streams
//! beyond [`CLOSE_STREAMS`] at once, or beyond a peer's budget ([`CLOSES_PER_PEER`]), are reset
//! before anything is read. A proposal costs the worker one signature check, and one flush when it
//! is signed; a refused one changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_protocol::budget::{Budgets, Quota};
use cocoon_protocol::payments::close::{self, CloseAnswer, CloseProposal};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::ed25519;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::worker::WorkerPayments;
use crate::network::NetworkHandle;

/// Longest a whole exchange (proposal in, answer out) may take on either side.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// Close streams served at once: a client closes a channel once, so a handful covers every honest
/// use; beyond it streams are reset (each held one costs a task and a few hundred bytes).
const CLOSE_STREAMS: usize = 16;

/// Close proposals one peer may make: 4 at once, then one every 20 s (an honest client sends one
/// per channel, and again only when an answer was lost).
const CLOSES_PER_PEER: Quota = Quota::new(4, 0.05);
/// All peers together: 32, then 2 a second.
const CLOSES_SHARED: Quota = Quota::new(32, 2.0);
/// Peers whose budget is remembered (see `Budgets`): a few hundred KiB at most.
const CLOSE_BUDGET_PEERS: usize = 4096;

/// What the worker tells a peer when its store fails (details stay in the log).
const STORE_FAILED: &str = "the worker cannot store the close now; try again later";

/// Why a close exchange failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// No stream, or it broke.
    #[error("cannot reach the worker: {0}")]
    Unreachable(String),
    /// The worker did not answer in time.
    #[error("the worker did not answer within {0:?}")]
    Timeout(Duration),
    /// The worker's answer does not decode.
    #[error("the worker's answer does not decode: {0}")]
    Malformed(String),
    /// The worker refused.
    #[error("the worker refused: {0}")]
    Refused(String),
}

impl WorkerPayments {
    /// Co-sign `proposal` with `identity` (this worker's channel key) if the channel's rules allow
    /// it; the channel is stored as closing (it admits nothing more) before the signature is
    /// returned, so a restart cannot serve on a channel whose close is out.
    pub async fn co_sign(&self, proposal: &CloseProposal, identity: &ed25519::Keypair) -> CloseAnswer {
        let address = &proposal.close.channel;
        let (record, was_signed) = {
            let mut channels = self.channels.lock().await;
            let Some(entry) = channels.get_mut(address) else {
                return self.refused("this worker holds no channel at that address".into());
            };
            let was_signed = entry.channel.co_signed;
            if let Err(e) = entry.channel.co_sign(&proposal.close, &proposal.client_signature) {
                return self.refused(e.to_string());
            }
            (entry.clone(), was_signed)
        };
        let book = self.book.clone();
        let stored =
            tokio::task::spawn_blocking(move || book.put_channel(&record).and_then(|()| book.flush()))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = stored {
            tracing::error!(channel = %address, error = %e, "cannot store a co-signed close");
            if let Some(entry) = self.channels.lock().await.get_mut(address) {
                entry.channel.co_signed = was_signed;
            }
            return self.refused(STORE_FAILED.into());
        }
        match proposal.close.sign(identity) {
            Ok(signature) => {
                tracing::info!(channel = %address, cumulative = proposal.close.cumulative, "co-signed a cooperative close");
                self.metrics.close("signed");
                CloseAnswer::Signed(signature)
            }
            Err(e) => self.refused(format!("cannot sign: {e}")),
        }
    }

    fn refused(&self, reason: String) -> CloseAnswer {
        tracing::debug!(%reason, "refused to co-sign a close");
        self.metrics.close("refused");
        CloseAnswer::Refused(reason)
    }
}

/// Serve close proposals for `payments`, signing with `identity`, until `shutdown`.
pub fn serve(
    network: NetworkHandle,
    payments: Arc<WorkerPayments>,
    identity: ed25519::Keypair,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let protocol = StreamProtocol::new(close::PROTOCOL);
    let mut incoming =
        network.streams().accept(protocol).map_err(|e| format!("{}: {e:?}", close::PROTOCOL))?;
    let slots = Arc::new(Semaphore::new(CLOSE_STREAMS));
    let budgets = Mutex::new(Budgets::new(
        CLOSES_PER_PEER,
        CLOSES_SHARED,
        CLOSE_BUDGET_PEERS,
        crate::clock::monotonic_ms(),
    ));
    let identity = Arc::new(identity);
    Ok(tokio::spawn(async move {
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => return },
                _ = shutdown.changed() => return,
            };
            let within =
                budgets.lock().is_ok_and(|mut b| b.take(&peer, crate::clock::monotonic_ms()).is_ok());
            let Some(slot) = within.then(|| slots.clone().try_acquire_owned().ok()).flatten() else {
                tracing::debug!(%peer, "close stream refused: budget or slots used up");
                continue; // dropping the stream resets it
            };
            let (payments, identity) = (payments.clone(), identity.clone());
            tokio::spawn(async move {
                let answered =
                    tokio::time::timeout(EXCHANGE_DEADLINE, answer(stream, &payments, &identity)).await;
                if !matches!(answered, Ok(Ok(()))) {
                    tracing::debug!(%peer, "a close exchange failed or timed out");
                }
                drop(slot);
            });
        }
    }))
}

/// Read one proposal, write one answer.
async fn answer(
    mut stream: libp2p::Stream,
    payments: &WorkerPayments,
    identity: &ed25519::Keypair,
) -> std::io::Result<()> {
    let bytes = read_message(&mut stream).await?;
    let reply = match CloseProposal::decode(&bytes) {
        Ok(proposal) => payments.co_sign(&proposal, identity).await,
        Err(e) => payments.refused(format!("the proposal does not decode: {e}")),
    };
    write_message(&mut stream, &reply.encode()).await?;
    stream.close().await
}

/// Ask `worker` to co-sign `proposal`; its signature, unchecked (the caller verifies it against
/// the channel's worker key).
pub async fn ask(
    network: &NetworkHandle,
    worker: PeerId,
    proposal: &CloseProposal,
) -> Result<[u8; 64], CloseError> {
    let exchange = async {
        let mut stream = network
            .streams()
            .open_stream(worker, StreamProtocol::new(close::PROTOCOL))
            .await
            .map_err(|e| CloseError::Unreachable(e.to_string()))?;
        write_message(&mut stream, &proposal.encode())
            .await
            .map_err(|e| CloseError::Unreachable(e.to_string()))?;
        let bytes = read_message(&mut stream).await.map_err(|e| CloseError::Unreachable(e.to_string()))?;
        match CloseAnswer::decode(&bytes).map_err(|e| CloseError::Malformed(e.to_string()))? {
            CloseAnswer::Signed(signature) => Ok(signature),
            CloseAnswer::Refused(reason) => Err(CloseError::Refused(reason)),
        }
    };
    tokio::time::timeout(EXCHANGE_DEADLINE, exchange)
        .await
        .map_err(|_| CloseError::Timeout(EXCHANGE_DEADLINE))?
}

/// One message with a 2-byte length prefix, at most [`close::MAX_MESSAGE`] bytes.
async fn read_message(stream: &mut libp2p::Stream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > close::MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a {len}-byte message")));
    }
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_message(stream: &mut libp2p::Stream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(message).await?;
    stream.flush().await
}
