//! The bodies of the cargo-fuzz targets, one `pub fn NAME(data: &[u8])` per decoder a peer or a
//! user reaches, each panicking when a property fails (round trips, agreement with a reference,
//! limits). The fuzz crate builds this module as its library and every `fuzz_targets/NAME.rs` is
//! a one-line call into it (written by `tests/fuzz/new-target.sh`); `tests/fuzz_corpora.rs`
//! includes the same module to replay the committed corpora on the stable toolchain.
//!
//! - [`protocol`]: `cocoon-protocol`'s wire formats (frames, vouchers, envelopes, records).
//! - [`node`]: the session reader, quotes, the record exchange, OpenAI bodies, TON Center, `sendBoc`.
//! - [`store`]: the store's record codecs.
//! - [`seeds`]: the hand-made seed inputs of each target.

pub mod input;
pub mod node;
pub mod protocol;
pub mod seeds;
pub mod store;

pub use node::{
    chain_send_boc, openai_chat, openai_completion, quote, record_exchange, session, toncenter_answer,
    toncenter_stack,
};
pub use protocol::{
    attestation_record, channel_params, client_frame, close_proposal, envelope, receipt, request,
    server_frame, signed_record, signed_voucher,
};
pub use store::{store_caches, store_payments};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (the name of its `fuzz_targets/NAME.rs` and of its corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("request", request),
    ("server_frame", server_frame),
    ("client_frame", client_frame),
    ("signed_voucher", signed_voucher),
    ("channel_params", channel_params),
    ("close_proposal", close_proposal),
    ("envelope", envelope),
    ("receipt", receipt),
    ("signed_record", signed_record),
    ("attestation_record", attestation_record),
    ("session", session),
    ("quote", quote),
    ("record_exchange", record_exchange),
    ("openai_chat", openai_chat),
    ("openai_completion", openai_completion),
    ("toncenter_answer", toncenter_answer),
    ("toncenter_stack", toncenter_stack),
    ("chain_send_boc", chain_send_boc),
    ("store_payments", store_payments),
    ("store_caches", store_caches),
];
