//! HTTP endpoints of the node: the admin endpoint ([`admin`], its `/payments` in
//! [`admin_payments`], its token-guarded operations in [`admin_control`]) and, on client nodes, the
//! OpenAI-compatible API ([`openai`], with OpenAI's Responses API in [`responses`] and Anthropic's
//! Messages API in [`anthropic`]; requests parsed by [`openai_request`] and
//! [`openai_tools`], answers rendered by
//! [`openai_render`] and streamed by [`openai_stream`]).

pub mod admin;
pub mod admin_control;
pub mod admin_page;
pub mod admin_payments;
pub mod anthropic;
pub mod embeddings;
pub mod openai;
pub mod openai_render;
pub mod openai_request;
pub mod openai_stream;
pub mod openai_tools;
pub mod responses;
