//! Malicious clients: real client nodes (joined, holding verified records) whose own inference
//! streams misbehave, one attempt at each planned time against the planned honest worker: ask for
//! a long paid answer and never read past its first frame, hold streams without a handshake, send
//! a request that does not decode inside a valid Noise session, or name a channel that was never
//! deployed. Each attempt's answer is counted in the run's [`Tally`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cocoon::attestation::service::AttestationHandle;
use cocoon::chain::local::LocalChain;
use cocoon::chain::parse_address;
use cocoon::chain::wallet::Wallet;
use cocoon::inference::session::{self, Session};
use cocoon::network::NetworkHandle;
use cocoon::payments::{contract, peer_key};
use cocoon_protocol::attestation::signed::SignedRecord;
use cocoon_protocol::inference::messages::{
    MAX_SERVER_FRAME, PROTOCOL, Prompt, Request, Sampling, ServerFrame, Shape,
};
use cocoon_protocol::payments::channel::ChannelParams;
use futures::AsyncReadExt;
use libp2p::{PeerId, StreamProtocol};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::Tally;
use crate::plan::{ClientMischief, Kind};

/// Completion tokens a stop-reader asks for: most of the stand-in's 4,096-token context.
const LONG_ANSWER: u32 = 3_000;
/// Deposit of each channel a stop-reader deploys (1 TON: far above one answer's worst case).
const DEPOSIT: u64 = 1_000_000_000;
/// How long a stop-reader holds an answer it stopped reading (past the answer's own length at the
/// scenarios' 10 ms a token, and the worker's 10 s wait for a voucher).
const READER_HOLD: Duration = Duration::from_secs(45);
/// How long a silent stream is held without a handshake (past the worker's 10 s deadline).
const SILENT_HOLD: Duration = Duration::from_secs(20);
/// A stream closed sooner than this after it opened was refused before any handshake work.
const AT_ONCE: Duration = Duration::from_secs(1);
/// Opening a stream, the handshake, and the worker's first frame: each.
const STEP: Duration = Duration::from_secs(10);

/// One malicious client.
pub struct Rogue {
    /// What it does.
    pub mischief: ClientMischief,
    /// Its node's network.
    pub network: NetworkHandle,
    /// Its node's verified records.
    pub attestation: AttestationHandle,
    /// Its wallet and the chain, when the scenario pays.
    pub wallet: Option<(Wallet, Arc<LocalChain>)>,
    /// Its identity's ed25519 public key (names it in channels).
    pub key: [u8; 32],
    /// The model everyone serves.
    pub model: String,
    /// Streams per silent attempt.
    pub silent_streams: usize,
    /// Seeded choices (request ids, channel seeds, garbage).
    pub rng: StdRng,
    /// Where it counts.
    pub tally: Arc<Tally>,
}

impl Rogue {
    fn count(&self, what: &str, n: u64) {
        self.tally.add(Kind::BadClient(self.mischief).name(), what, n);
    }

    /// Make each attempt `(ms after t0, target)` in turn, then wait for what it still holds.
    pub async fn run(mut self, attempts: Vec<(u64, PeerId)>, t0: Instant) {
        let mut held = JoinSet::new();
        let mut channels = HashMap::new();
        for (at_ms, target) in attempts {
            tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
            self.count("attempts", 1);
            let answer = match self.attestation.record_of(&target) {
                None => "no record of the worker".to_owned(),
                Some(record) => self.attempt(target, &record, &mut channels, &mut held).await,
            };
            self.count(&answer, 1);
        }
        while held.join_next().await.is_some() {}
    }

    async fn attempt(
        &mut self,
        target: PeerId,
        record: &SignedRecord,
        channels: &mut HashMap<PeerId, ChannelParams>,
        held: &mut JoinSet<()>,
    ) -> String {
        match self.mischief {
            ClientMischief::Silent => self.silent(target, held).await,
            ClientMischief::Malformed => {
                // A version byte no decoder accepts, then noise.
                let mut garbage = vec![0xff];
                garbage.extend((0..63).map(|_| self.rng.r#gen::<u8>()));
                self.first_answer(target, record, &garbage).await.1
            }
            ClientMischief::FakeChannel => {
                let params = match self.params(target, record) {
                    Ok(p) => p,
                    Err(e) => return e,
                };
                let request = self.request(4, Some(params));
                self.first_answer(target, record, &request.encode()).await.1
            }
            ClientMischief::StopReading => {
                let channel = match self.channel(target, record, channels).await {
                    Ok(c) => c,
                    Err(e) => return e,
                };
                let request = self.request(LONG_ANSWER, channel);
                let (session, answer) = self.first_answer(target, record, &request.encode()).await;
                if let Some(session) = session {
                    held.spawn(async move {
                        tokio::time::sleep(READER_HOLD).await;
                        drop(session);
                    });
                }
                answer
            }
        }
    }

    fn request(&mut self, max_tokens: u32, channel: Option<ChannelParams>) -> Request {
        Request {
            request_id: self.rng.r#gen(),
            model_id: self.model.clone(),
            prompt: Prompt::Text("tell me everything".into()),
            max_tokens,
            sampling: Sampling::default(),
            shape: Shape::default(),
            max_price: u64::MAX,
            channel,
        }
    }

    /// Channel terms with `target` that name this client; not deployed.
    fn params(&mut self, target: PeerId, record: &SignedRecord) -> Result<ChannelParams, String> {
        let Some((wallet, _)) = &self.wallet else { return Err("no wallet (payments off)".into()) };
        Ok(ChannelParams {
            client_key: self.key,
            worker_key: peer_key(&target).ok_or("worker id without an ed25519 key")?,
            client: wallet.address().clone(),
            worker: parse_address(&record.record().payout_address).map_err(|_| "bad payout address")?,
            dispute_window: 86_400,
            seed: self.rng.r#gen(),
        })
    }

    /// The deployed channel with `target` (deployed on first use); `None` when nothing is paid.
    async fn channel(
        &mut self,
        target: PeerId,
        record: &SignedRecord,
        channels: &mut HashMap<PeerId, ChannelParams>,
    ) -> Result<Option<ChannelParams>, String> {
        if self.wallet.is_none() {
            return Ok(None);
        }
        if let Some(params) = channels.get(&target) {
            return Ok(Some(params.clone()));
        }
        let params = self.params(target, record)?;
        let Some((wallet, chain)) = &self.wallet else { return Ok(None) };
        let deploy = contract::deploy(&params, DEPOSIT, 0).map_err(|e| format!("no channel: {e}"))?;
        wallet.send(chain.as_ref(), &[deploy]).await.map_err(|_| "channel not deployed".to_owned())?;
        self.count("channels deployed", 1);
        self.count("deposited (nanotons)", DEPOSIT);
        channels.insert(target, params.clone());
        Ok(Some(params))
    }

    /// Open a session carrying `first` and read the worker's first frame: the session (when the
    /// answer started) and how the worker answered.
    async fn first_answer(
        &self,
        target: PeerId,
        record: &SignedRecord,
        first: &[u8],
    ) -> (Option<Session<libp2p::Stream>>, String) {
        let mut control = self.network.streams();
        let opened = timeout(STEP, control.open_stream(target, StreamProtocol::new(PROTOCOL))).await;
        let stream = match opened {
            Err(_) => return (None, "stream open timed out".into()),
            Ok(Err(_)) => return (None, "no stream (refused or blocked)".into()),
            Ok(Ok(s)) => s,
        };
        let mut s = match timeout(STEP, session::initiate(stream, &record.record().noise_static, first)).await
        {
            Err(_) => return (None, "handshake timed out".into()),
            Ok(Err(_)) => return (None, "stream closed during the handshake".into()),
            Ok(Ok(s)) => s,
        };
        let frame = match timeout(STEP, s.recv(MAX_SERVER_FRAME)).await {
            Err(_) => return (None, "no answer in time".into()),
            Ok(Err(_)) => return (None, "closed without an answer".into()),
            Ok(Ok(f)) => f,
        };
        match ServerFrame::decode(&frame) {
            Ok(ServerFrame::Event(_)) => (Some(s), "answer started (then never read)".into()),
            Ok(ServerFrame::Error { code, .. }) => (None, format!("refused: {code:?}")),
            Ok(_) => (None, "other first frame".into()),
            Err(_) => (None, "undecodable answer".into()),
        }
    }

    /// Open up to `silent_streams` streams to `target` and hold each without a handshake.
    async fn silent(&self, target: PeerId, held: &mut JoinSet<()>) -> String {
        let mut opened = 0;
        let mut control = self.network.streams();
        for _ in 0..self.silent_streams {
            let open = timeout(STEP, control.open_stream(target, StreamProtocol::new(PROTOCOL)));
            let Ok(Ok(stream)) = open.await else { break };
            opened += 1;
            let tally = self.tally.clone();
            held.spawn(hold_silent(stream, tally));
        }
        self.count("streams opened", opened);
        if opened == 0 { "no stream (refused or blocked)".into() } else { "streams held".into() }
    }
}

/// Hold `stream` without a word and count how it ended.
async fn hold_silent(mut stream: libp2p::Stream, tally: Arc<Tally>) {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let what = match timeout(SILENT_HOLD, stream.read(&mut byte)).await {
        Err(_) => "streams still open after 20 s",
        Ok(_) if started.elapsed() < AT_ONCE => "streams reset at once (refused before any handshake)",
        Ok(_) => "streams closed by the worker's handshake deadline",
    };
    tally.add(Kind::BadClient(ClientMischief::Silent).name(), what, 1);
}
