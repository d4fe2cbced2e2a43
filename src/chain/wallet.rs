//! A node's TON wallet: the standard wallet v5r1 contract, its address and its signed transfers
//! built with tonlib-core (the wallet code and message layout are tonlib-core's; cells cross over
//! to tycho-types as BOC bytes). The same ed25519 seed is kept in the node's store.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonlib_core::cell::BagOfCells;
use tonlib_core::wallet::mnemonic::KeyPair;
use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::wallet_version::WalletVersion;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes, Store};
use tycho_types::models::{StateInit, StdAddr};
use tycho_types::num::Tokens;

use super::{AccountStatus, Chain, ChainError};

/// How long a signed transfer stays valid.
const VALID_FOR_SECS: u64 = 120;

/// One outgoing transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Recipient.
    pub to: StdAddr,
    /// Value, nanotons.
    pub value: u64,
    /// Bounce back if the recipient fails.
    pub bounce: bool,
    /// Code and data to deploy at the recipient.
    pub state_init: Option<StateInit>,
    /// Message body.
    pub body: Cell,
}

/// A wallet v5r1 controlled by this node.
#[derive(Debug, Clone)]
pub struct Wallet {
    inner: TonWallet,
    address: StdAddr,
}

fn to_tonlib(cell: &Cell) -> Result<tonlib_core::cell::ArcCell, ChainError> {
    let bytes = Boc::encode(cell);
    BagOfCells::parse(&bytes)
        .and_then(|b| b.single_root())
        .map_err(|e| ChainError::Malformed(format!("cell conversion: {e}")))
}

fn from_tonlib(cell: &tonlib_core::cell::Cell) -> Result<Cell, ChainError> {
    let bytes = BagOfCells::from_root(cell.clone())
        .serialize(false)
        .map_err(|e| ChainError::Malformed(format!("cell conversion: {e}")))?;
    Boc::decode(bytes).map_err(|e| ChainError::Malformed(format!("cell conversion: {e}")))
}

/// An internal message as a wallet sends it: source left empty for the wallet to fill in.
pub fn internal_message(t: &Transfer) -> Result<Cell, ChainError> {
    let ctx = Cell::empty_context();
    let mut b = CellBuilder::new();
    b.store_bit_zero()?; // int_msg_info$0
    b.store_bit_one()?; // ihr_disabled
    b.store_bit(t.bounce)?;
    b.store_bit_zero()?; // bounced
    b.store_zeros(2)?; // src: addr_none
    t.to.store_into(&mut b, ctx)?;
    Tokens::new(t.value.into()).store_into(&mut b, ctx)?;
    b.store_bit_zero()?; // no extra currencies
    Tokens::ZERO.store_into(&mut b, ctx)?; // ihr_fee
    Tokens::ZERO.store_into(&mut b, ctx)?; // fwd_fee
    b.store_u64(0)?; // created_lt
    b.store_u32(0)?; // created_at
    match &t.state_init {
        Some(init) => {
            b.store_bit_one()?;
            b.store_bit_one()?; // in a reference
            b.store_reference(CellBuilder::build_from(init)?)?;
        }
        None => b.store_bit_zero()?,
    }
    b.store_bit_one()?; // body in a reference
    b.store_reference(t.body.clone())?;
    Ok(b.build()?)
}

impl Wallet {
    /// The wallet of an ed25519 seed (basechain, default v5r1 wallet id).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, ChainError> {
        let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut seed.to_owned())
            .map_err(|e| ChainError::Malformed(format!("wallet key: {e}")))?;
        let keypair = libp2p::identity::ed25519::Keypair::from(secret);
        let public = keypair.public().to_bytes();
        let mut secret_key = seed.to_vec();
        secret_key.extend_from_slice(&public);
        let pair = KeyPair { public_key: public.to_vec(), secret_key };
        let inner = TonWallet::new(WalletVersion::V5R1, pair)
            .map_err(|e| ChainError::Malformed(format!("wallet: {e}")))?;
        let address = StdAddr::new(
            inner.address.workchain as i8,
            HashBytes(<[u8; 32]>::from(inner.address.hash_part.clone())),
        );
        Ok(Self { inner, address })
    }

    /// The wallet's address.
    pub fn address(&self) -> &StdAddr {
        &self.address
    }

    /// The signed external message carrying `transfers` (at most 255).
    pub fn transfer_message(
        &self,
        seqno: u32,
        deploy: bool,
        expire_at: u32,
        transfers: &[Transfer],
    ) -> Result<Cell, ChainError> {
        let msgs = transfers
            .iter()
            .map(|t| internal_message(t).and_then(|c| to_tonlib(&c)))
            .collect::<Result<Vec<_>, _>>()?;
        let ext = self
            .inner
            .create_external_msg(expire_at, seqno, deploy, msgs)
            .map_err(|e| ChainError::Malformed(format!("wallet message: {e}")))?;
        from_tonlib(&ext)
    }

    /// Current seqno (0 and "needs deploying" while the wallet has no code yet).
    pub async fn seqno(&self, chain: &dyn Chain) -> Result<(u32, bool), ChainError> {
        let account = chain.account(&self.address).await?;
        if account.status != AccountStatus::Active {
            return Ok((0, true));
        }
        let r = chain.run_get_method(&self.address, "seqno").await?;
        let seqno = r.u64_at(0).and_then(|s| u32::try_from(s).ok()).ok_or_else(|| ChainError::GetMethod {
            method: "seqno".into(),
            reason: "not an integer".into(),
        })?;
        Ok((seqno, false))
    }

    /// Sign and send `transfers` (deploying the wallet on first use), then wait until the
    /// wallet's seqno moves past the one used. Sends from one wallet are serialised within the
    /// process, so two tasks never sign with the same seqno. Returns the seqno used.
    pub async fn send(&self, chain: &dyn Chain, transfers: &[Transfer]) -> Result<u32, ChainError> {
        let lock = send_lock(&self.address);
        let _serialised = lock.lock().await;
        let (seqno, deploy) = self.seqno(chain).await?;
        let now = chain.now().await?;
        let expire_at = u32::try_from(now + VALID_FOR_SECS).unwrap_or(u32::MAX);
        let msg = self.transfer_message(seqno, deploy, expire_at, transfers)?;
        chain.send_external(msg).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(VALID_FOR_SECS);
        let mut wait = Duration::from_millis(20);
        loop {
            if self.seqno(chain).await?.0 > seqno {
                return Ok(seqno);
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(ChainError::Unavailable(format!(
                    "wallet transfer with seqno {seqno} not seen on chain within {VALID_FOR_SECS} s"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

/// One lock per wallet address in this process.
fn send_lock(address: &StdAddr) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<std::sync::Mutex<HashMap<StdAddr, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(address.clone()).or_default().clone()
}
