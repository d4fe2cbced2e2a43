//! The answer of `/cocoon/inference/2` as typed events: text (with its token's log-probabilities
//! when asked for) and tool-call deltas, in the order generated. The receipt's response hash is
//! the SHA-256 of the events' encodings one after another ([`AnswerDigest`]), so it covers the
//! whole structured answer (text, tool names and arguments, log-probabilities), not only text.

use sha2::{Digest, Sha256};

use super::messages::FinishReason;
use super::request::{MAX_CALL_ID, MAX_TOOL_NAME, Request, ToolChoice};
use crate::codec::{CodecError, Reader, Writer};

/// Lowest log-probability on the wire (OpenAI's stand-in for "practically impossible"): an
/// engine's `-inf` is sent as this, so every value is finite.
pub const MIN_LOGPROB: f32 = -9999.0;
/// Longest token text in a log-probability entry.
pub const MAX_TOKEN_TEXT: usize = 256;
/// Longest piece of text or arguments in one event.
pub const MAX_EVENT_TEXT: usize = 32 * 1024;
/// Most dimensions of an embedding (a frame holds 64 KiB).
pub const MAX_DIMENSIONS: usize = 8192;

/// A token's log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability (from [`MIN_LOGPROB`] to 0).
    pub logprob: f32,
}

/// The generated token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The generated token and its log-probability.
    pub chosen: TopLogprob,
    /// The alternatives, most likely first (as many as the request asked for).
    pub top: Vec<TopLogprob>,
}

/// A piece of a tool call: the first piece of a call carries its id and name, later ones only
/// more of its arguments (JSON text), as OpenAI streams them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, … in order of appearance).
    pub index: u32,
    /// The call's id (first piece only, else empty).
    pub id: String,
    /// The function (first piece only, else empty).
    pub name: String,
    /// More of the arguments.
    pub arguments: String,
}

/// One event of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Generated text (one decoding step), with its log-probability if the request asked.
    Text {
        /// The text.
        text: String,
        /// The token's log-probabilities.
        logprob: Option<TokenLogprob>,
    },
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// The embedding of input `index` of an embedding request (finite values).
    Embedding {
        /// Which input.
        index: u32,
        /// The vector.
        vector: Vec<f32>,
    },
}

fn encode_logprob(w: &mut Writer, l: &TopLogprob) {
    w.str(&l.token).u32(l.logprob.to_bits());
}

fn decode_logprob(r: &mut Reader<'_>) -> Result<TopLogprob, CodecError> {
    let token = r.str("token", MAX_TOKEN_TEXT)?.to_owned();
    let logprob = f32::from_bits(r.u32("logprob")?);
    if !(MIN_LOGPROB..=0.0).contains(&logprob) {
        return Err(CodecError::Invalid {
            field: "logprob",
            reason: format!("{logprob} is not from -9999 to 0"),
        });
    }
    Ok(TopLogprob { token, logprob })
}

impl Event {
    /// Append this event's canonical encoding.
    pub fn encode_into(&self, w: &mut Writer) {
        match self {
            Self::Text { text, logprob } => {
                w.u8(1).str(text);
                match logprob {
                    None => {
                        w.u8(0);
                    }
                    Some(l) => {
                        w.u8(1);
                        encode_logprob(w, &l.chosen);
                        w.u8(l.top.len() as u8);
                        for t in &l.top {
                            encode_logprob(w, t);
                        }
                    }
                }
            }
            Self::ToolCall(d) => {
                w.u8(2).u32(d.index).str(&d.id).str(&d.name).str(&d.arguments);
            }
            Self::Embedding { index, vector } => {
                w.u8(3).u32(*index).u32(vector.len() as u32);
                for v in vector {
                    w.u32(v.to_bits());
                }
            }
        }
    }

    /// This event's canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    /// Decode one event from `r`.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.u8("event kind")? {
            1 => {
                let text = r.str("text", MAX_EVENT_TEXT)?.to_owned();
                let logprob = match r.u8("logprob")? {
                    0 => None,
                    1 => {
                        let chosen = decode_logprob(r)?;
                        let n = r.u8("top logprobs")?;
                        if n > super::request::MAX_TOP_LOGPROBS {
                            return Err(CodecError::TooLong {
                                field: "top logprobs",
                                len: n.into(),
                                max: super::request::MAX_TOP_LOGPROBS.into(),
                            });
                        }
                        let top = (0..n).map(|_| decode_logprob(r)).collect::<Result<_, _>>()?;
                        Some(TokenLogprob { chosen, top })
                    }
                    other => return Err(CodecError::Unknown { field: "logprob", value: other.into() }),
                };
                Self::Text { text, logprob }
            }
            2 => Self::ToolCall(ToolCallDelta {
                index: r.u32("tool call index")?,
                id: r.str("tool call id", MAX_CALL_ID)?.to_owned(),
                name: r.str("tool name", MAX_TOOL_NAME)?.to_owned(),
                arguments: r.str("tool arguments", MAX_EVENT_TEXT)?.to_owned(),
            }),
            3 => {
                let index = r.u32("embedding index")?;
                let n = r.u32("dimensions")? as usize;
                if n > MAX_DIMENSIONS {
                    return Err(CodecError::TooLong { field: "dimensions", len: n, max: MAX_DIMENSIONS });
                }
                let mut vector = Vec::with_capacity(n);
                for _ in 0..n {
                    let v = f32::from_bits(r.u32("embedding value")?);
                    if !v.is_finite() {
                        return Err(CodecError::Invalid {
                            field: "embedding value",
                            reason: "not finite".into(),
                        });
                    }
                    vector.push(v);
                }
                Self::Embedding { index, vector }
            }
            other => return Err(CodecError::Unknown { field: "event kind", value: other.into() }),
        })
    }

    /// Bytes of text or arguments this event adds to the answer.
    pub fn text_len(&self) -> usize {
        match self {
            Self::Text { text, .. } => text.len(),
            Self::ToolCall(d) => d.id.len() + d.name.len() + d.arguments.len(),
            Self::Embedding { vector, .. } => vector.len() * 4,
        }
    }
}

/// The response hash of an answer: SHA-256 over its events' encodings in order. Each encoding is
/// self-delimiting (a kind byte, then length-prefixed fields), so two different event sequences
/// never hash the same bytes.
#[derive(Debug, Clone, Default)]
pub struct AnswerDigest(Sha256);

impl AnswerDigest {
    /// Add the next event.
    pub fn update(&mut self, event: &Event) {
        self.0.update(event.encode());
    }

    /// The response hash.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// What a client checks of each event against its request: a worker is a stranger and may send
/// tool calls nobody asked for, call undeclared functions, or attach log-probabilities that were
/// not requested. Byte and count caps are the client's own (they bound memory, not meaning).
#[derive(Debug, Clone)]
pub struct AnswerCheck {
    /// Inputs of an embedding request (`None`: a generation).
    inputs: Option<usize>,
    /// Embeddings received so far, and their length.
    embedded: usize,
    dimensions: Option<usize>,
    tools: Vec<String>,
    choice: ToolChoice,
    logprobs: Option<u8>,
    /// Tool calls started so far (a delta continues one of them or starts the next).
    calls: u32,
}

impl AnswerCheck {
    /// The checks for an answer to `request`.
    pub fn new(request: &Request) -> Self {
        let inputs = match &request.prompt {
            super::request::Prompt::Embed(inputs) => Some(inputs.len()),
            _ => None,
        };
        Self {
            inputs,
            embedded: 0,
            dimensions: None,
            tools: request.shape.tools.iter().map(|t| t.name.clone()).collect(),
            choice: request.shape.tool_choice.clone(),
            logprobs: request.shape.logprobs,
            calls: 0,
        }
    }

    /// Whether `event` may come next.
    pub fn event(&mut self, event: &Event) -> Result<(), String> {
        match (event, self.inputs) {
            (Event::Embedding { index, vector }, Some(inputs)) => {
                return self.embedding(*index, vector.len(), inputs);
            }
            (Event::Embedding { .. }, None) => return Err("an embedding for a generation".into()),
            (_, Some(_)) => return Err("text or a tool call for an embedding request".into()),
            (_, None) => {}
        }
        match event {
            Event::Text { logprob, .. } => match (logprob, self.logprobs) {
                (None, _) => Ok(()),
                (Some(_), None) => Err("log-probabilities nobody asked for".into()),
                (Some(l), Some(top)) if l.top.len() > usize::from(top) => {
                    Err(format!("{} alternatives per token, {top} asked for", l.top.len()))
                }
                (Some(_), Some(_)) => Ok(()),
            },
            Event::ToolCall(d) => self.call(d),
            Event::Embedding { .. } => Ok(()),
        }
    }

    fn embedding(&mut self, index: u32, dimensions: usize, inputs: usize) -> Result<(), String> {
        if index as usize != self.embedded || self.embedded >= inputs {
            return Err(format!("embedding {index} where {} of {inputs} was next", self.embedded));
        }
        if dimensions == 0 || self.dimensions.is_some_and(|d| d != dimensions) {
            return Err(format!(
                "an embedding of {dimensions} dimensions among others of {:?}",
                self.dimensions
            ));
        }
        self.dimensions = Some(dimensions);
        self.embedded += 1;
        Ok(())
    }

    fn call(&mut self, d: &ToolCallDelta) -> Result<(), String> {
        if self.tools.is_empty() || self.choice == ToolChoice::None {
            return Err("a tool call the request did not allow".into());
        }
        if d.index < self.calls {
            return if d.name.is_empty() && d.id.is_empty() {
                Ok(())
            } else {
                Err(format!("tool call {} started twice", d.index))
            };
        }
        if d.index > self.calls || d.name.is_empty() || d.id.is_empty() {
            return Err(format!("tool call {} continues a call that never started", d.index));
        }
        if !self.tools.contains(&d.name) {
            return Err(format!("a call of {:?}, which the request did not declare", d.name));
        }
        if let ToolChoice::Named(named) = &self.choice
            && named != &d.name
        {
            return Err(format!("a call of {:?} where {named:?} was required", d.name));
        }
        self.calls += 1;
        Ok(())
    }

    /// Whether the answer may end with `reason`.
    pub fn finish(&self, reason: FinishReason) -> Result<(), String> {
        if let Some(inputs) = self.inputs
            && self.embedded != inputs
        {
            return Err(format!("{} embeddings for {inputs} inputs", self.embedded));
        }
        if reason == FinishReason::ToolCalls && self.calls == 0 {
            return Err("finished for tool calls without calling any".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(token: &str, logprob: f32) -> TopLogprob {
        TopLogprob { token: token.into(), logprob }
    }

    #[test]
    fn events_round_trip_and_refuse_what_no_worker_can_send() {
        let events = [
            Event::Text { text: "hé".into(), logprob: None },
            Event::Text {
                text: "x".into(),
                logprob: Some(TokenLogprob {
                    chosen: lp("x", -0.5),
                    top: vec![lp("x", -0.5), lp("y", -1.5)],
                }),
            },
            Event::ToolCall(ToolCallDelta {
                index: 1,
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":".into(),
            }),
        ];
        for e in &events {
            let bytes = e.encode();
            let mut r = Reader::new(&bytes);
            assert_eq!(&Event::decode_from(&mut r).unwrap(), e);
            r.finish().unwrap();
        }
        let positive = Event::Text {
            text: "x".into(),
            logprob: Some(TokenLogprob { chosen: lp("x", 0.5), top: vec![] }),
        };
        assert!(matches!(
            Event::decode_from(&mut Reader::new(&positive.encode())),
            Err(CodecError::Invalid { .. })
        ));
        let nan = Event::Text {
            text: "x".into(),
            logprob: Some(TokenLogprob { chosen: lp("x", f32::NAN), top: vec![] }),
        };
        assert!(Event::decode_from(&mut Reader::new(&nan.encode())).is_err());
    }

    fn call(index: u32, id: &str, name: &str) -> Event {
        Event::ToolCall(ToolCallDelta { index, id: id.into(), name: name.into(), arguments: "{".into() })
    }

    fn request(shape: super::super::request::Shape) -> Request {
        Request {
            request_id: [0; 16],
            model_id: "m".into(),
            prompt: super::super::request::Prompt::Text("x".into()),
            max_tokens: 8,
            sampling: Default::default(),
            shape,
            max_price: 0,
            channel: None,
        }
    }

    #[test]
    fn a_worker_cannot_call_what_the_request_did_not_allow() {
        use super::super::request::{Shape, ToolSpec};
        let tools = vec![
            ToolSpec { name: "a".into(), ..Default::default() },
            ToolSpec { name: "b".into(), ..Default::default() },
        ];
        let mut auto = AnswerCheck::new(&request(Shape { tools: tools.clone(), ..Shape::default() }));
        assert!(auto.event(&call(0, "c0", "a")).is_ok());
        assert!(auto.event(&call(0, "", "")).is_ok(), "more arguments of call 0");
        assert!(auto.event(&call(0, "c0", "a")).is_err(), "call 0 again");
        assert!(auto.event(&call(2, "c2", "b")).is_err(), "call 1 skipped");
        assert!(auto.event(&call(1, "c1", "zz")).is_err(), "undeclared function");
        assert!(auto.event(&call(1, "", "")).is_err(), "a continuation of a call never started");
        assert!(auto.event(&call(1, "c1", "b")).is_ok());
        assert!(auto.finish(FinishReason::ToolCalls).is_ok());

        let named =
            Shape { tools: tools.clone(), tool_choice: ToolChoice::Named("b".into()), ..Shape::default() };
        assert!(AnswerCheck::new(&request(named)).event(&call(0, "c", "a")).is_err());
        let none = Shape { tools, tool_choice: ToolChoice::None, ..Shape::default() };
        assert!(AnswerCheck::new(&request(none)).event(&call(0, "c", "a")).is_err());
        let plain = AnswerCheck::new(&request(Shape::default()));
        assert!(plain.clone().event(&call(0, "c", "a")).is_err());
        assert!(plain.finish(FinishReason::ToolCalls).is_err());
    }

    #[test]
    fn logprobs_come_only_when_asked_and_no_more_alternatives_than_asked() {
        use super::super::request::Shape;
        let with = |top: usize| Event::Text {
            text: "x".into(),
            logprob: Some(TokenLogprob { chosen: lp("x", -0.1), top: vec![lp("x", -0.1); top] }),
        };
        assert!(AnswerCheck::new(&request(Shape::default())).event(&with(0)).is_err());
        let mut two = AnswerCheck::new(&request(Shape { logprobs: Some(2), ..Shape::default() }));
        assert!(two.event(&with(2)).is_ok());
        assert!(two.event(&with(3)).is_err());
    }

    #[test]
    fn embeddings_come_in_order_one_per_input_all_of_one_length() {
        use super::super::request::{Prompt, Shape};
        let embed =
            |n: usize| Request { prompt: Prompt::Embed(vec!["x".into(); n]), ..request(Shape::default()) };
        let vector = |index: u32, dims: usize| Event::Embedding { index, vector: vec![0.5; dims] };
        let mut two = AnswerCheck::new(&embed(2));
        assert!(two.event(&vector(1, 4)).is_err(), "out of order");
        assert!(two.event(&vector(0, 4)).is_ok());
        assert!(two.finish(FinishReason::Stop).is_err(), "one vector for two inputs");
        assert!(two.event(&vector(1, 3)).is_err(), "another length");
        assert!(two.event(&Event::Text { text: "x".into(), logprob: None }).is_err());
        assert!(two.event(&vector(1, 4)).is_ok());
        assert!(two.event(&vector(2, 4)).is_err(), "more vectors than inputs");
        assert!(two.finish(FinishReason::Stop).is_ok());
        assert!(
            AnswerCheck::new(&request(Shape::default())).event(&vector(0, 4)).is_err(),
            "a vector for a generation"
        );
        // The wire refuses values that are not finite and over-long vectors.
        let nan = Event::Embedding { index: 0, vector: vec![f32::NAN] };
        assert!(Event::decode_from(&mut Reader::new(&nan.encode())).is_err());
        let long = vector(0, MAX_DIMENSIONS + 1);
        assert!(matches!(
            Event::decode_from(&mut Reader::new(&long.encode())),
            Err(CodecError::TooLong { .. })
        ));
        let fine = vector(3, 8);
        assert_eq!(Event::decode_from(&mut Reader::new(&fine.encode())).unwrap(), fine);
    }

    #[test]
    fn the_digest_covers_tool_arguments_and_logprobs_not_only_text() {
        let digest = |events: &[Event]| {
            let mut d = AnswerDigest::default();
            events.iter().for_each(|e| d.update(e));
            d.finish()
        };
        let call = |args: &str| {
            Event::ToolCall(ToolCallDelta {
                index: 0,
                id: "c".into(),
                name: "f".into(),
                arguments: args.into(),
            })
        };
        assert_ne!(digest(&[call("{\"a\":1}")]), digest(&[call("{\"a\":2}")]));
        let text = |l: f32| Event::Text {
            text: "x".into(),
            logprob: Some(TokenLogprob { chosen: lp("x", l), top: vec![] }),
        };
        assert_ne!(digest(&[text(-0.1)]), digest(&[text(-0.2)]));
        // The same text split differently is a different answer (each event is one step).
        let plain = |t: &str| Event::Text { text: t.into(), logprob: None };
        assert_ne!(digest(&[plain("ab")]), digest(&[plain("a"), plain("b")]));
    }
}
