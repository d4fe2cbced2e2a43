//! Payments in the node: driving the channel contract through the node's wallet, the worker's
//! durable voucher book and settlement loop, and the client's channels and vouchers.

pub mod contract;
