//! HTTP endpoints of the node: the admin endpoint ([`admin`]) and, on client nodes, the
//! OpenAI-compatible API ([`openai`], requests parsed by [`openai_request`]).

pub mod admin;
pub mod openai;
pub mod openai_request;
