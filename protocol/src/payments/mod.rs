//! Payments: the one-way channel contract's interface (code, cells, messages, addresses), signed
//! vouchers and close requests, the rules each side applies off chain, the contract's own rules as
//! a pure model, the worker's exposure caps and the lazy settlement policy. Chain access lives in the node (`src/chain/`); everything here is pure.

pub mod amount;
pub mod channel;
pub mod close;
pub mod exposure;
pub mod ledger;
pub mod model;
pub mod prepared;
pub mod settlement;
pub mod voucher;

/// Errors building or checking payment cells.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A cell could not be built or parsed.
    #[error("cell: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// The committed contract code does not decode.
    #[error("contract code: {0}")]
    Code(String),
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
}
