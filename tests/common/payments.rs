//! Helpers for payment tests with in-process nodes: a shared `LocalChain`, nodes configured to
//! pay or be paid on it with funded wallets, and reading channels back.

use std::sync::Arc;

use cocoon::chain::SharedChain;
use cocoon::chain::local::{Clock, LocalChain};
use cocoon::chain::wallet::Wallet;
use cocoon::config::{ChainKind, Config, Role};
use cocoon::inference::session::{self, Session};
use cocoon::network::TransportKind;
use cocoon::node::{Extras, Node};
use cocoon::store::load_or_create_wallet_seed;
use cocoon_protocol::inference::messages::{MAX_SERVER_FRAME, PROTOCOL, Request, ServerFrame};
use libp2p::StreamProtocol;

pub const TON: u64 = 1_000_000_000;

pub fn chain() -> Arc<LocalChain> {
    Arc::new(LocalChain::new(Clock::Manual(1_800_000_000)).unwrap())
}

/// Turn payments on in `c` against the shared local chain, fund the node's wallet with `funds`,
/// and (for a worker) pay out to that wallet. Returns the wallet.
pub fn paying(c: &mut Config, chain: &LocalChain, funds: u64) -> Wallet {
    c.payments.chain = ChainKind::Local;
    c.payments.settle_interval_secs = 1;
    c.payments.confirm_timeout_secs = 5;
    let seed = load_or_create_wallet_seed(&c.node.data_dir).unwrap();
    let wallet = Wallet::from_seed(&seed).unwrap();
    chain.fund(wallet.address(), funds).unwrap();
    if c.node.roles.contains(&Role::Worker) {
        c.worker.payout_address = cocoon::chain::friendly(wallet.address(), false);
    }
    wallet
}

/// Start `c` on the memory transport with `chain` shared.
pub async fn start_on(c: Config, chain: &Arc<LocalChain>) -> Node {
    let shared: SharedChain = chain.clone();
    let extras = Extras { chain: Some(shared), ..Extras::default() };
    Node::start_with(c, TransportKind::Memory, None, extras).await.expect("node starts")
}

/// Open an inference session from `client` to `worker` carrying `request`, as a raw client would
/// (no payment logic); the session and the worker's first frame.
pub async fn open(client: &Node, worker: &Node, request: &Request) -> (Session<libp2p::Stream>, ServerFrame) {
    let record = client.attestation().record_of(&worker.peer_id()).unwrap();
    let stream = client
        .network()
        .streams()
        .open_stream(worker.peer_id(), StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    let mut s = session::initiate(stream, &record.record().noise_static, &request.encode()).await.unwrap();
    let first = ServerFrame::decode(&s.recv(MAX_SERVER_FRAME).await.unwrap()).unwrap();
    (s, first)
}
