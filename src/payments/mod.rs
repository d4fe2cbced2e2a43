//! Payments in the node: driving the channel contract through the node's wallet
//! ([`contract`]), the worker's admission, voucher book and metrics ([`worker`]) and settlement
//! loop ([`settle`]), the client's channels and vouchers ([`client`]), and the node's wiring
//! ([`setup`]).

pub mod client;
pub mod contract;
pub mod settle;
pub mod setup;
pub mod worker;
