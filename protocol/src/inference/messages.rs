//! The messages of `/cocoon/inference/1`, exchanged inside the Noise session (see
//! `docs/protocol.md`). Each is one application frame; the client sends a [`Request`], the worker
//! answers with [`ServerFrame`]s (chunks, then `Done` with the signed receipt, or an `Error`), and
//! the client pays with a [`ClientFrame::Voucher`], which the worker acknowledges with
//! [`ServerFrame::Paid`] once it is stored durably (or answers with [`ServerFrame::Unpaid`]).

use crate::codec::{CodecError, Reader, Writer};
use crate::payments::channel::ChannelParams;

/// Libp2p stream protocol.
pub const PROTOCOL: &str = "/cocoon/inference/1";
/// Version byte leading every message.
pub const VERSION: u8 = 1;
/// Longest model id.
pub const MAX_MODEL_ID: usize = 256;
/// Most chat messages in one request.
pub const MAX_MESSAGES: usize = 1024;
/// Most stop sequences.
pub const MAX_STOP: usize = 4;
/// Longest stop sequence, bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Largest request frame the worker accepts (prompt text included).
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest frame from the worker.
pub const MAX_SERVER_FRAME: usize = 64 * 1024;
/// Largest client frame after the request (a voucher).
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who.
    pub role: Role,
    /// What.
    pub content: String,
}

/// What to complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, completed as is.
    Text(String),
}

/// Sampling parameters; `None` means the engine's default (temperature 1, as OpenAI's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// Temperature (0 = greedy; default 1).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling.
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

/// An inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Client-chosen id, echoed in the receipt.
    pub request_id: [u8; 16],
    /// `name@sha256:<hex>` of the model to run.
    pub model_id: String,
    /// What to complete.
    pub prompt: Prompt,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: Sampling,
    /// Most the client will pay for this request, nanotons.
    pub max_price: u64,
    /// The payment channel the client will pay on (`None`: the client offers no payment, which
    /// only a worker with payments off accepts).
    pub channel: Option<ChannelParams>,
}

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
}

/// Worker → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Generated text, in order.
    Chunk(String),
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

fn role_byte(role: Role) -> u8 {
    match role {
        Role::System => 0,
        Role::User => 1,
        Role::Assistant => 2,
    }
}

fn opt_f32(w: &mut Writer, v: Option<f32>) {
    match v {
        Some(v) => w.u8(1).u32(v.to_bits()),
        None => w.u8(0),
    };
}

fn read_opt_f32(r: &mut Reader<'_>, field: &'static str) -> Result<Option<f32>, CodecError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => {
            let v = f32::from_bits(r.u32(field)?);
            if v.is_finite() {
                Ok(Some(v))
            } else {
                Err(CodecError::Invalid { field, reason: "not finite".into() })
            }
        }
        other => Err(CodecError::Unknown { field, value: other.into() }),
    }
}

impl Request {
    /// Canonical bytes (what the receipt's request hash covers).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION).fixed(&self.request_id).str(&self.model_id);
        match &self.prompt {
            Prompt::Chat(messages) => {
                w.u8(1).u32(messages.len() as u32);
                for m in messages {
                    w.u8(role_byte(m.role)).str(&m.content);
                }
            }
            Prompt::Text(text) => {
                w.u8(2).str(text);
            }
        }
        w.u32(self.max_tokens);
        opt_f32(&mut w, self.sampling.temperature);
        opt_f32(&mut w, self.sampling.top_p);
        match self.sampling.top_k {
            Some(k) => w.u8(1).u32(k),
            None => w.u8(0),
        };
        w.u8(self.sampling.stop.len() as u8);
        for s in &self.sampling.stop {
            w.str(s);
        }
        w.u64(self.max_price);
        match &self.channel {
            Some(params) => {
                w.u8(1);
                params.encode(&mut w);
            }
            None => {
                w.u8(0);
            }
        }
        w.finish()
    }

    /// Decode a request frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(CodecError::Unknown { field: "request version", value: version.into() });
        }
        let request_id = r.array("request id")?;
        let model_id = r.str("model id", MAX_MODEL_ID)?.to_owned();
        let prompt = match r.u8("prompt kind")? {
            1 => {
                let n = r.u32("message count")? as usize;
                if n > MAX_MESSAGES {
                    return Err(CodecError::TooLong { field: "messages", len: n, max: MAX_MESSAGES });
                }
                let mut messages = Vec::with_capacity(n);
                for _ in 0..n {
                    let role = match r.u8("role")? {
                        0 => Role::System,
                        1 => Role::User,
                        2 => Role::Assistant,
                        other => return Err(CodecError::Unknown { field: "role", value: other.into() }),
                    };
                    messages.push(ChatMessage { role, content: r.str("content", MAX_REQUEST)?.to_owned() });
                }
                Prompt::Chat(messages)
            }
            2 => Prompt::Text(r.str("prompt", MAX_REQUEST)?.to_owned()),
            other => return Err(CodecError::Unknown { field: "prompt kind", value: other.into() }),
        };
        let max_tokens = r.u32("max tokens")?;
        let temperature = read_opt_f32(&mut r, "temperature")?;
        let top_p = read_opt_f32(&mut r, "top p")?;
        let top_k = match r.u8("top k")? {
            0 => None,
            1 => Some(r.u32("top k")?),
            other => return Err(CodecError::Unknown { field: "top k", value: other.into() }),
        };
        let n = r.u8("stop count")? as usize;
        if n > MAX_STOP {
            return Err(CodecError::TooLong { field: "stop sequences", len: n, max: MAX_STOP });
        }
        let mut stop = Vec::with_capacity(n);
        for _ in 0..n {
            stop.push(r.str("stop", MAX_STOP_LEN)?.to_owned());
        }
        let max_price = r.u64("max price")?;
        let channel = match r.u8("channel")? {
            0 => None,
            1 => Some(ChannelParams::decode(&mut r)?),
            other => return Err(CodecError::Unknown { field: "channel", value: other.into() }),
        };
        r.finish()?;
        Ok(Self {
            request_id,
            model_id,
            prompt,
            max_tokens,
            sampling: Sampling { temperature, top_p, top_k, stop },
            max_price,
            channel,
        })
    }
}

impl ServerFrame {
    /// Frame bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Chunk(text) => w.u8(1).str(text),
            Self::Done { finish_reason, receipt } => w.u8(2).u8(*finish_reason as u8).bytes(receipt),
            Self::Error { code, message } => w.u8(3).u8(*code as u8).str(message),
            Self::Paid { cumulative, seqno } => w.u8(4).u64(*cumulative).u64(*seqno),
            Self::Unpaid { cumulative, seqno, message } => w.u8(5).u64(*cumulative).u64(*seqno).str(message),
        };
        w.finish()
    }

    /// Decode a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let frame = match r.u8("frame kind")? {
            1 => Self::Chunk(r.str("chunk", MAX_SERVER_FRAME)?.to_owned()),
            2 => {
                let finish_reason = match r.u8("finish reason")? {
                    1 => FinishReason::Stop,
                    2 => FinishReason::Length,
                    3 => FinishReason::Cancelled,
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
                ChatMessage { role: Role::System, content: "be brief".into() },
                ChatMessage { role: Role::User, content: "héllo".into() },
            ]),
            max_tokens: 32,
            sampling: Sampling {
                temperature: Some(0.5),
                top_p: None,
                top_k: Some(4),
                stop: vec!["\n".into()],
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
        let text = Request { prompt: Prompt::Text("once".into()), channel: None, ..r };
        assert_eq!(Request::decode(&text.encode()).unwrap(), text);
        for f in [
            ServerFrame::Chunk("tok".into()),
            ServerFrame::Done { finish_reason: FinishReason::Length, receipt: vec![1, 2, 3] },
            ServerFrame::Error { code: ErrorCode::Busy, message: "full".into() },
            ServerFrame::Error { code: ErrorCode::PaymentRequired, message: "deposit".into() },
            ServerFrame::Paid { cumulative: 5, seqno: 2 },
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
    }
}
