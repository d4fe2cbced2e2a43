//! HTTP endpoints of the node. For now the admin endpoint; the OpenAI-compatible API joins it.

pub mod admin;
