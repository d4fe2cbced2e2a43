//! Confidential inference: the messages of `/cocoon/inference/2` (the request, the answer's typed
//! events, the frames around them), the worker's signed receipt,
//! pricing, and the client's choice of worker. The Noise session that carries the messages lives
//! in the node (`src/inference/session.rs`); everything here is pure.

pub mod answer;
pub mod messages;
pub mod pricing;
pub mod receipt;
pub mod request;
pub mod selection;
