//! The messages of `/cocoon/inference/2`, exchanged inside the Noise session (see
//! `docs/protocol.md`). Each is one application frame; the client sends a [`Request`], the worker
//! answers with [`ServerFrame`]s (typed [`Event`]s, then `Done` with the signed receipt, or an
//! `Error`), and the client pays with a [`ClientFrame::Voucher`], which the worker acknowledges
//! with [`ServerFrame::Paid`] once it is stored durably (or answers with [`ServerFrame::Unpaid`]).
//!
//! Version 2 replaced version 1's text chunks with typed events and added tools, response formats,
//! log-probabilities and penalties to the request. The two never meet: the libp2p protocol name
//! differs, so a peer of the other version fails stream negotiation, and a request whose version
//! byte differs is refused before anything else is read.

use crate::codec::{CodecError, Reader, Writer};

pub use super::answer::{AnswerDigest, Event, TokenLogprob, ToolCallDelta, TopLogprob};
pub use super::request::{
    ChatMessage, MAX_CALL_ID, MAX_EMBED_INPUTS, MAX_MESSAGES, MAX_MODEL_ID, MAX_STOP, MAX_STOP_LEN,
    MAX_TOOL_CALLS, MAX_TOOL_NAME, MAX_TOOLS, MAX_TOP_LOGPROBS, Prompt, Request, ResponseFormat, Role,
    Sampling, Shape, ToolCall, ToolChoice, ToolSpec,
};

/// Libp2p stream protocol.
pub const PROTOCOL: &str = "/cocoon/inference/2";
/// Version byte leading every request.
pub const VERSION: u8 = 2;
/// Largest request frame the worker accepts (prompt text included).
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest frame from the worker.
pub const MAX_SERVER_FRAME: usize = 64 * 1024;
/// Largest client frame after the request (a voucher).
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// Why a request ended without completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// All slots taken; try another worker.
    Busy = 1,
    /// The worker does not serve this model.
    UnknownModel = 2,
    /// Malformed or invalid request.
    InvalidRequest = 3,
    /// The prompt plus `max_tokens` exceeds the context length, or the request is too large.
    TooLarge = 4,
    /// The worst-case price exceeds `max_price`.
    PriceTooHigh = 5,
    /// The engine failed.
    Engine = 6,
    /// The request ran past the worker's time limit.
    Timeout = 7,
    /// The worker is shutting down.
    ShuttingDown = 8,
    /// No usable payment channel: none offered, not deployed, too little unspent deposit, closing,
    /// or the client left an earlier request unpaid.
    PaymentRequired = 9,
}

impl ErrorCode {
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            1 => Self::Busy,
            2 => Self::UnknownModel,
            3 => Self::InvalidRequest,
            4 => Self::TooLarge,
            5 => Self::PriceTooHigh,
            6 => Self::Engine,
            7 => Self::Timeout,
            8 => Self::ShuttingDown,
            9 => Self::PaymentRequired,
            other => return Err(CodecError::Unknown { field: "error code", value: other.into() }),
        })
    }

    /// Whether the client may retry on another worker (nothing was generated).
    pub fn retryable(self) -> bool {
        matches!(self, Self::Busy | Self::ShuttingDown | Self::Engine | Self::Timeout)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End of sequence or a stop sequence.
    Stop = 1,
    /// `max_tokens` or the context length reached.
    Length = 2,
    /// The client asked to stop (`ClientFrame::Cancel`); the receipt covers what was sent.
    Cancelled = 3,
    /// The model called one or more tools and stopped.
    ToolCalls = 4,
}

/// Worker → client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// The next event of the answer, in order.
    Event(Event),
    /// Generation finished; `receipt` is a signed receipt envelope (see `receipt`).
    Done {
        /// Why it stopped.
        finish_reason: FinishReason,
        /// The worker's signed receipt.
        receipt: Vec<u8>,
    },
    /// The request failed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// The voucher is stored durably: the request is paid.
    Paid {
        /// The channel's cumulative amount now.
        cumulative: u64,
        /// The voucher's seqno.
        seqno: u64,
    },
    /// Every slot of the model is taken: the request waits in the worker's queue, `depth`
    /// requests long (this one included). At most once, before the first event.
    Queued {
        /// Requests waiting for a slot of the model.
        depth: u32,
    },
    /// The voucher was refused. The worker states what it holds, so a client whose voucher got
    /// lost (worker crashed before storing it) can sign the amount the worker expects; the
    /// worker waits for one corrected voucher, then counts the request as unpaid.
    Unpaid {
        /// Cumulative amount of the best voucher the worker holds.
        cumulative: u64,
        /// Its seqno.
        seqno: u64,
        /// Why.
        message: String,
    },
}

/// Client → worker, after the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The client's payment for the receipt just received: an encoded
    /// [`crate::payments::voucher::SignedVoucher`] (empty when the request named no channel).
    Voucher(Vec<u8>),
    /// Before the receipt: stop generating and send the receipt for what was sent so far (the
    /// client then pays it like any other). A client that just goes away instead owes that amount
    /// as a debt.
    Cancel,
}

impl ServerFrame {
    /// Frame bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Event(event) => {
                w.u8(1);
                event.encode_into(&mut w);
                &mut w
            }
            Self::Done { finish_reason, receipt } => w.u8(2).u8(*finish_reason as u8).bytes(receipt),
            Self::Error { code, message } => w.u8(3).u8(*code as u8).str(message),
            Self::Paid { cumulative, seqno } => w.u8(4).u64(*cumulative).u64(*seqno),
            Self::Unpaid { cumulative, seqno, message } => w.u8(5).u64(*cumulative).u64(*seqno).str(message),
            Self::Queued { depth } => w.u8(6).u32(*depth),
        };
        w.finish()
    }

    /// Decode a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let frame = match r.u8("frame kind")? {
            1 => Self::Event(Event::decode_from(&mut r)?),
            2 => {
                let finish_reason = match r.u8("finish reason")? {
                    1 => FinishReason::Stop,
                    2 => FinishReason::Length,
                    3 => FinishReason::Cancelled,
                    4 => FinishReason::ToolCalls,
                    other => return Err(CodecError::Unknown { field: "finish reason", value: other.into() }),
                };
                Self::Done { finish_reason, receipt: r.bytes("receipt", MAX_SERVER_FRAME)?.to_vec() }
            }
            3 => {
                let code = ErrorCode::from_u8(r.u8("error code")?)?;
                Self::Error { code, message: r.str("message", MAX_SERVER_FRAME)?.to_owned() }
            }
            4 => Self::Paid { cumulative: r.u64("cumulative")?, seqno: r.u64("seqno")? },
            5 => Self::Unpaid {
                cumulative: r.u64("cumulative")?,
                seqno: r.u64("seqno")?,
                message: r.str("message", MAX_SERVER_FRAME)?.to_owned(),
            },
            6 => Self::Queued { depth: r.u32("queue depth")? },
            other => return Err(CodecError::Unknown { field: "frame kind", value: other.into() }),
        };
        r.finish()?;
        Ok(frame)
    }
}

impl ClientFrame {
    /// Frame bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Voucher(v) => w.u8(1).bytes(v),
            Self::Cancel => w.u8(2),
        };
        w.finish()
    }

    /// Decode a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let frame = match r.u8("frame kind")? {
            1 => Self::Voucher(r.bytes("voucher", MAX_CLIENT_FRAME)?.to_vec()),
            2 => Self::Cancel,
            other => return Err(CodecError::Unknown { field: "client frame kind", value: other.into() }),
        };
        r.finish()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn request() -> Request {
        Request {
            request_id: [9; 16],
            model_id: "smollm2@sha256:00ff".into(),
            prompt: Prompt::Chat(vec![
                ChatMessage::text(Role::System, "be brief"),
                ChatMessage::text(Role::User, "héllo"),
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_0".into(),
                        name: "f".into(),
                        arguments: "{}".into(),
                    }],
                    tool_call_id: None,
                },
                ChatMessage { tool_call_id: Some("call_0".into()), ..ChatMessage::text(Role::Tool, "42") },
            ]),
            max_tokens: 32,
            sampling: Sampling {
                temperature: Some(0.5),
                top_k: Some(4),
                stop: vec!["\n".into()],
                presence_penalty: Some(0.5),
                repetition_penalty: Some(1.1),
                ..Sampling::default()
            },
            shape: Shape {
                tools: vec![ToolSpec {
                    name: "f".into(),
                    description: "does f".into(),
                    parameters: "{}".into(),
                }],
                tool_choice: ToolChoice::Named("f".into()),
                format: ResponseFormat::JsonSchema("{\"type\":\"object\"}".into()),
                logprobs: Some(3),
            },
            max_price: 1_000_000,
            channel: Some(crate::payments::channel::ChannelParams {
                client_key: [1; 32],
                worker_key: [2; 32],
                client: tycho_types::models::StdAddr::new(0, tycho_types::cell::HashBytes([3; 32])),
                worker: tycho_types::models::StdAddr::new(0, tycho_types::cell::HashBytes([4; 32])),
                dispute_window: 3600,
                seed: 5,
            }),
        }
    }

    #[test]
    fn frames_round_trip() {
        let r = request();
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let text = Request { prompt: Prompt::Text("once".into()), channel: None, ..r.clone() };
        assert_eq!(Request::decode(&text.encode()).unwrap(), text);
        let embed =
            Request { prompt: Prompt::Embed(vec!["a".into(), "bé".into()]), shape: Shape::default(), ..r };
        assert_eq!(Request::decode(&embed.encode()).unwrap(), embed);
        for f in [
            ServerFrame::Event(Event::Text { text: "tok".into(), logprob: None }),
            ServerFrame::Event(Event::ToolCall(ToolCallDelta {
                index: 0,
                id: "call_0".into(),
                name: "f".into(),
                arguments: "{".into(),
            })),
            ServerFrame::Done { finish_reason: FinishReason::ToolCalls, receipt: vec![4] },
            ServerFrame::Done { finish_reason: FinishReason::Length, receipt: vec![1, 2, 3] },
            ServerFrame::Error { code: ErrorCode::Busy, message: "full".into() },
            ServerFrame::Error { code: ErrorCode::PaymentRequired, message: "deposit".into() },
            ServerFrame::Paid { cumulative: 5, seqno: 2 },
            ServerFrame::Queued { depth: 3 },
            ServerFrame::Unpaid { cumulative: 4, seqno: 1, message: "wrong amount".into() },
        ] {
            assert_eq!(ServerFrame::decode(&f.encode()).unwrap(), f);
        }
        for v in [ClientFrame::Voucher(vec![7; 40]), ClientFrame::Cancel] {
            assert_eq!(ClientFrame::decode(&v.encode()).unwrap(), v);
        }
        let cancelled = ServerFrame::Done { finish_reason: FinishReason::Cancelled, receipt: vec![1] };
        assert_eq!(ServerFrame::decode(&cancelled.encode()).unwrap(), cancelled);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let bytes = request().encode();
        for cut in 0..bytes.len() {
            assert!(Request::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Request::decode(&extra), Err(CodecError::Trailing(1)));
        assert!(matches!(ServerFrame::decode(&[9]), Err(CodecError::Unknown { .. })));
        assert!(matches!(ServerFrame::decode(&[3, 99, 0, 0, 0, 0]), Err(CodecError::Unknown { .. })));
        let nan = Request {
            sampling: Sampling { temperature: Some(f32::NAN), ..Sampling::default() },
            ..request()
        };
        assert!(matches!(Request::decode(&nan.encode()), Err(CodecError::Invalid { .. })));
        let greedy_top = Request { shape: Shape { logprobs: Some(21), ..Shape::default() }, ..request() };
        assert!(matches!(Request::decode(&greedy_top.encode()), Err(CodecError::TooLong { .. })));
    }

    #[test]
    fn a_request_of_another_version_is_refused_by_its_first_byte() {
        let mut bytes = request().encode();
        bytes[0] = 1;
        assert_eq!(Request::decode(&bytes), Err(CodecError::Unknown { field: "request version", value: 1 }));
    }
}
