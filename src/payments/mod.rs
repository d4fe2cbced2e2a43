//! Payments in the node: driving the channel contract through the node's wallet
//! ([`contract`]), the worker's admission, voucher book and metrics ([`worker`]), the group commit
//! of its vouchers ([`commit`]) and settlement
//! loop ([`settle`]), the client's channels and vouchers ([`client`]), and the node's wiring
//! ([`setup`]).

pub mod client;
pub mod close;
pub mod commit;
pub mod contract;
pub mod keys;
pub mod settle;
pub mod setup;
pub mod worker;

/// The ed25519 key inside a peer id, if it inlines one: channel keys are the parties' identity
/// keys, so a worker's key is known from its peer id.
pub fn peer_key(peer: &libp2p::PeerId) -> Option<[u8; 32]> {
    let public = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    Some(public.try_into_ed25519().ok()?.to_bytes())
}

/// Run `pass` every `interval` until `shutdown` (a pass that overruns delays the next tick rather
/// than bunching them): the worker's settlement loop and the client's wind-down of retired
/// channels.
pub(crate) fn every<F, Fut>(
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut pass: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            pass().await;
        }
    })
}
