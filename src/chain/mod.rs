//! TON chain access behind one trait: [`local::LocalChain`] (an embedded chain executing real
//! contract code with tycho-executor: the default for devnet, simnet and tests) and
//! [`toncenter::Toncenter`] (HTTP API v2 for testnet and mainnet). [`wallet::Wallet`] signs wallet
//! v5r1 transfers with tonlib-core; [`serve`] exposes a `LocalChain` over the same HTTP API, in
//! its REST form and in the JSON-RPC form the official TON SDKs use.

pub mod local;
pub mod serve;
pub mod toncenter;
pub mod tx;
pub mod wallet;

use std::sync::Arc;

use futures::future::BoxFuture;
use num_bigint::BigInt;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

pub use tx::{MsgSummary, TxFees, TxSummary};

/// Why a chain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The backend could not be reached or answered with a server error (retry later).
    #[error("chain backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the request (bad message, rejected external message, ...).
    #[error("chain rejected the request: {0}")]
    Rejected(String),
    /// A get-method failed or returned something unexpected.
    #[error("get-method {method} failed: {reason}")]
    GetMethod {
        /// The method.
        method: String,
        /// Exit code or shape problem.
        reason: String,
    },
    /// Cells, BOCs or JSON that do not parse.
    #[error("malformed chain data: {0}")]
    Malformed(String),
    /// The embedded chain's state file could not be read or written.
    #[error("local chain storage: {0}")]
    Storage(String),
}

impl From<tycho_types::error::Error> for ChainError {
    fn from(e: tycho_types::error::Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl From<cocoon_protocol::payments::PaymentError> for ChainError {
    fn from(e: cocoon_protocol::payments::PaymentError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Whether an account exists and has code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// Never seen or deleted.
    Nonexistent,
    /// Has a balance but no code yet.
    Uninit,
    /// Deployed.
    Active,
    /// Frozen for unpaid storage.
    Frozen,
}

/// An account's state as far as cocoon needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Status.
    pub status: AccountStatus,
    /// Balance, nanotons.
    pub balance: u64,
    /// Logical time of its last transaction.
    pub last_lt: u64,
}

/// A get-method's stack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackValue {
    /// An integer.
    Int(BigInt),
    /// A cell.
    Cell(Cell),
    /// A slice (given as the cell it spans).
    Slice(Cell),
    /// Null.
    Null,
    /// Anything else (tuples, builders, continuations).
    Other,
}

/// What a get-method returned.
#[derive(Debug, Clone)]
pub struct GetMethodResult {
    /// TVM exit code (0 or 1 on success).
    pub exit_code: i32,
    /// Gas the method used (0 where the backend does not say).
    pub gas_used: u64,
    /// The stack, bottom first.
    pub stack: Vec<StackValue>,
}

impl GetMethodResult {
    /// Integer at `index`, which must fit a `u64`.
    pub fn u64_at(&self, index: usize) -> Option<u64> {
        match self.stack.get(index)? {
            StackValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// A TON chain: read accounts, run get-methods, send external messages, list transactions.
pub trait Chain: std::fmt::Debug + Send + Sync + 'static {
    /// Which backend (for logs and `cocoon channel status`).
    fn name(&self) -> &'static str;
    /// State of `address`.
    fn account(&self, address: &StdAddr) -> BoxFuture<'_, Result<AccountInfo, ChainError>>;
    /// Run a get-method without arguments.
    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
    ) -> BoxFuture<'a, Result<GetMethodResult, ChainError>>;
    /// Send an external message (its BOC).
    fn send_external(&self, message: Cell) -> BoxFuture<'_, Result<(), ChainError>>;
    /// The newest `limit` transactions of `address`, newest first.
    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TxSummary>, ChainError>>;
    /// The chain's current time (unix seconds).
    fn now(&self) -> BoxFuture<'_, Result<u64, ChainError>>;
}

/// A shared chain handle.
pub type SharedChain = Arc<dyn Chain>;

/// Format an address the way people paste it (bounceable base64url).
pub fn friendly(address: &StdAddr, bounceable: bool) -> String {
    address.display_base64_url(bounceable).to_string()
}

/// Parse raw (`0:hex`) or user-friendly base64 addresses.
pub fn parse_address(text: &str) -> Result<StdAddr, ChainError> {
    StdAddr::from_str_ext(text.trim(), tycho_types::models::StdAddrFormat::any())
        .map(|(addr, _)| addr)
        .map_err(|e| ChainError::Malformed(format!("address {text:?}: {e}")))
}
