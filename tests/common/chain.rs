//! A `LocalChain` with funded wallets and the channel's parties, for payment tests: sends wallet
//! transfers synchronously and returns every transaction they set off.

use cocoon::chain::TxSummary;
use cocoon::chain::local::{Clock, LocalChain};
use cocoon::chain::wallet::{Transfer, Wallet};
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::{ChannelParams, ChannelState};
use libp2p::identity::ed25519;
use tycho_types::models::StdAddr;

pub const TON: u64 = 1_000_000_000;
pub const START: u32 = 1_800_000_000;

pub fn keypair(seed: u8) -> ed25519::Keypair {
    let secret = ed25519::SecretKey::try_from_bytes(&mut [seed; 32]).unwrap();
    ed25519::Keypair::from(secret)
}

pub struct Party {
    pub wallet: Wallet,
    pub key: ed25519::Keypair,
}

impl Party {
    pub fn new(seed: u8) -> Self {
        Self { wallet: Wallet::from_seed(&[seed; 32]).unwrap(), key: keypair(seed.wrapping_add(100)) }
    }

    pub fn addr(&self) -> StdAddr {
        self.wallet.address().clone()
    }
}

/// A channel from `client` to `worker` with a one-hour dispute window.
pub fn params_between(client: &Party, worker: &Party, seed: u64) -> ChannelParams {
    ChannelParams {
        client_key: client.key.public().to_bytes(),
        worker_key: worker.key.public().to_bytes(),
        client: client.addr(),
        worker: worker.addr(),
        dispute_window: 3600,
        seed,
    }
}

pub struct Bench {
    pub chain: LocalChain,
    pub client: Party,
    pub worker: Party,
    pub other: Party,
}

impl Bench {
    pub fn new() -> Self {
        let chain = LocalChain::new(Clock::Manual(START)).unwrap();
        let (client, worker, other) = (Party::new(1), Party::new(2), Party::new(3));
        for p in [&client, &worker, &other] {
            chain.fund(&p.addr(), 1_000 * TON).unwrap();
        }
        Self { chain, client, worker, other }
    }

    pub fn params(&self, seed: u64) -> ChannelParams {
        params_between(&self.client, &self.worker, seed)
    }

    /// Send `transfer` from `wallet`; every transaction of the cascade.
    pub async fn send(&self, wallet: &Wallet, transfer: Transfer) -> Vec<TxSummary> {
        let (seqno, deploy) = wallet.seqno(&self.chain).await.unwrap();
        let msg = wallet.transfer_message(seqno, deploy, self.chain.now_secs() + 60, &[transfer]).unwrap();
        self.chain.execute(msg).unwrap()
    }

    /// Send and return the channel's own transaction in the cascade.
    pub async fn on_channel(&self, wallet: &Wallet, transfer: Transfer) -> (TxSummary, Vec<TxSummary>) {
        let channel = transfer.to.clone();
        let txs = self.send(wallet, transfer).await;
        let tx = txs
            .iter()
            .find(|t| t.account == channel.address && t.in_msg.as_ref().is_some_and(|m| !m.bounced))
            .cloned()
            .unwrap_or_else(|| panic!("no transaction on the channel in {txs:?}"));
        (tx, txs)
    }

    pub async fn state(&self, channel: &StdAddr) -> Option<ChannelState> {
        contract::state(&self.chain, channel).await.unwrap()
    }

    pub fn balance(&self, addr: &StdAddr) -> u64 {
        self.chain.balance(addr).unwrap()
    }
}

/// A `LocalChain` served over the Toncenter API (`cocoon chain serve`'s router) on loopback,
/// until dropped.
pub struct Served {
    pub chain: std::sync::Arc<LocalChain>,
    /// `http://ADDR/api/v2`.
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serve a new chain running on `clock`, requiring `api_key` if given.
pub async fn serve_chain(clock: Clock, api_key: Option<&str>) -> Served {
    let chain = std::sync::Arc::new(LocalChain::new(clock).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v2", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(cocoon::chain::serve::serve(chain.clone(), listener, api_key.map(str::to_owned), shutdown));
    Served { chain, url, _stop: stop }
}
