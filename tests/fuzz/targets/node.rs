//! Targets for what reaches the node from outside: the session frame reader (a peer's bytes
//! after and instead of an honest handshake), TDX quotes, the record-exchange codec, OpenAI
//! request bodies, TON Center answers and stacks, and BOCs sent to `chain serve`'s `sendBoc`.

use cocoon::api::openai_request::{self, Parsed, RequestLimits};
use cocoon::attestation::pccs::Platform;
use cocoon::fuzzing::{self, SessionEnd, SessionRun};
use cocoon::network::record_exchange::{MAX_RECORD, PROTOCOL, RecordCodec};
use cocoon_protocol::inference::messages::{MAX_MESSAGES, MAX_MODEL_ID, MAX_REQUEST, MAX_STOP, MAX_STOP_LEN};
use cocoon_protocol::inference::messages::{Prompt, Request};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use serde_json::Value;
use tycho_types::boc::Boc;

use super::input::{Input, base64};

/// What the worker's reader must return for the plaintext stream `plain`, with frames of at most
/// `max` bytes; `cut`: the stream stops at a message that does not decrypt.
fn expected_frames(plain: &[u8], max: usize, cut: bool) -> (Vec<Vec<u8>>, SessionEnd) {
    let mut frames = Vec::new();
    let mut rest = plain;
    while let Some(len) = rest.first_chunk::<4>().map(|l| u32::from_be_bytes(*l) as usize) {
        if len > max {
            return (frames, SessionEnd::TooLarge { len });
        }
        let Some(frame) = rest.get(4..4 + len) else { break };
        frames.push(frame.to_vec());
        rest = &rest[4 + len..];
    }
    (frames, if cut { SessionEnd::Noise } else { SessionEnd::Closed })
}

/// The session frame reader. Odd first byte: the rest is raw bytes from a stranger, which must
/// never complete a handshake. Even: an honest client's handshake and transport messages carry
/// fuzzer-chosen plaintext (any frame lengths, split anywhere), optionally with one ciphertext
/// bit flipped; the worker must return exactly the frames of that stream up to the first frame
/// over its maximum, the tampered message, or the end.
pub fn session(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let max = usize::from(input.u8()) * 8;
    if mode % 2 == 1 {
        let run = fuzzing::session_raw(input.rest(), max).expect("session keys");
        assert!(!run.handshake && run.frames.is_empty(), "a stranger's bytes opened a session: {run:?}");
        return;
    }
    let tamper = match input.u8() {
        t if t >= 0x80 => Some((usize::from(t & 0x0f), usize::from(input.u16()))),
        _ => None,
    };
    let count = usize::from(input.u8() % 32);
    let first = input.piece();
    let transport: Vec<Vec<u8>> = (0..count).map(|_| input.piece().to_vec()).collect();
    let run = fuzzing::session_messages(first, &transport, tamper, max).expect("short payloads fit");
    if tamper.is_some_and(|(m, _)| m == 0) {
        assert_eq!(run, SessionRun { handshake: false, frames: Vec::new(), end: SessionEnd::Noise });
        return;
    }
    let delivered = tamper.map_or(count, |(m, _)| (m - 1).min(count));
    let mut plain = first.to_vec();
    transport[..delivered].iter().for_each(|t| plain.extend_from_slice(t));
    let (frames, end) = expected_frames(&plain, max, delivered < count);
    assert!(run.handshake, "an honest handshake failed: {run:?}");
    assert_eq!((run.frames, run.end), (frames, end));
}

/// `Platform::of_quote`: a quote's platform (TDX or SGX, issuing CA, FMSPC) and its cache key.
pub fn quote(data: &[u8]) {
    let Ok(platform) = Platform::of_quote(data) else { return };
    let key = platform.key();
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 3, "cache key {key}");
    assert_eq!(parts[0], if platform.tdx { "tdx" } else { "sgx" });
    assert!(matches!(parts[1], "processor" | "platform"), "issuing CA {}", parts[1]);
    assert!(
        parts[2].len() == 12 && parts[2].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    );
}

/// The record-exchange codec. Even first byte: the rest is a request (which must be empty).
/// Odd: a response, which decodes only from the exact bytes `write_response` makes of it.
pub fn record_exchange(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let rest = input.rest();
    let protocol = StreamProtocol::new(PROTOCOL);
    let mut cursor = futures::io::Cursor::new(rest.to_vec());
    if mode % 2 == 0 {
        let read = futures::executor::block_on(RecordCodec.read_request(&protocol, &mut cursor));
        assert_eq!(read.is_ok(), rest.is_empty(), "request of {} bytes: {read:?}", rest.len());
        return;
    }
    let Ok(response) = futures::executor::block_on(RecordCodec.read_response(&protocol, &mut cursor)) else {
        return;
    };
    assert!(response.as_ref().is_none_or(|r| !r.is_empty() && r.len() <= MAX_RECORD));
    let mut written = futures::io::Cursor::new(Vec::new());
    futures::executor::block_on(RecordCodec.write_response(&protocol, &mut written, response))
        .expect("writing to memory");
    assert_eq!(written.into_inner(), rest, "a response read from bytes it is not written as");
}

const LIMITS: RequestLimits = RequestLimits { max_tokens: 4096, default_max_tokens: 256 };

/// What every request the OpenAI API accepts satisfies, and that the wire carries it unchanged.
fn accepted(p: &Parsed) {
    assert!(!p.model.is_empty() && p.model.trim() == p.model, "model {:?}", p.model);
    assert!((1..=LIMITS.max_tokens).contains(&p.max_tokens), "max_tokens {}", p.max_tokens);
    let s = &p.sampling;
    assert!(s.stop.len() <= MAX_STOP && s.stop.iter().all(|x| !x.is_empty() && x.len() <= MAX_STOP_LEN));
    assert!(s.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)), "temperature {:?}", s.temperature);
    assert!(s.top_p.is_none_or(|t| (0.0..=1.0).contains(&t)), "top_p {:?}", s.top_p);
    let request = Request {
        request_id: [7; 16],
        model_id: p.model.clone(),
        prompt: p.prompt.clone(),
        max_tokens: p.max_tokens,
        sampling: s.clone(),
        shape: p.shape.clone(),
        max_price: p.max_price.unwrap_or(0),
        channel: None,
    };
    let messages = match &p.prompt {
        Prompt::Chat(m) => m.len(),
        Prompt::Text(_) => 0,
        Prompt::Embed(inputs) => inputs.len(),
    };
    let bytes = request.encode();
    if p.model.len() <= MAX_MODEL_ID && messages <= MAX_MESSAGES && bytes.len() <= MAX_REQUEST {
        assert_eq!(Request::decode(&bytes), Ok(request), "an accepted request does not survive the wire");
    }
}

/// `POST /v1/chat/completions` bodies.
pub fn openai_chat(data: &[u8]) {
    if let Ok(p) = openai_request::chat(data, &LIMITS) {
        assert!(matches!(&p.prompt, Prompt::Chat(m) if !m.is_empty()));
        accepted(&p);
    }
}

/// `POST /v1/completions` bodies.
pub fn openai_completion(data: &[u8]) {
    if let Ok(p) = openai_request::completion(data, &LIMITS) {
        assert!(matches!(&p.prompt, Prompt::Text(t) if !t.is_empty()));
        accepted(&p);
    }
}

/// A cell survives its BOC: encoding and decoding again gives the same cell.
fn boc_round_trip(cell: &tycho_types::cell::Cell) {
    let again = Boc::decode(Boc::encode(cell)).expect("a re-encoded BOC decodes");
    assert_eq!(again.repr_hash(), cell.repr_hash());
}

/// A stack value survives `chain serve`'s writer and the Toncenter client's reader.
fn stack_round_trip(v: &cocoon::chain::StackValue) {
    let entry = fuzzing::serve_stack_entry(v);
    let back = fuzzing::toncenter_stack_value(&entry);
    assert_eq!(back.as_ref().ok(), Some(v), "{v:?} written as {entry} reads back as {back:?}");
}

/// A TON Center answer: first byte picks the method whose result is read, the second the HTTP
/// status (mostly 200), the rest is the body. Retries only on 429 and 5xx, results only on 2xx.
pub fn toncenter_answer(data: &[u8]) {
    let mut input = Input(data);
    let kind = input.u8() % 5;
    let status = match input.u8() {
        0..=191 => 200,
        b @ 192..=239 => [400, 401, 404, 429, 500, 502, 503, 504][usize::from(b % 8)],
        _ => 100 + input.u16() % 900,
    };
    let body = input.rest();
    let Some(answer) = fuzzing::toncenter_classify(status, body) else {
        assert!(status == 429 || (500..600).contains(&status), "retried HTTP {status}");
        return;
    };
    let Ok(result) = answer else { return };
    assert!((200..300).contains(&status), "a result from HTTP {status}");
    match kind {
        0 => {
            let _ = fuzzing::toncenter_account(&result);
        }
        1 => {
            if let Ok(r) = fuzzing::toncenter_get_method(&result) {
                assert!(r.exit_code == 0 || r.exit_code == 1, "exit code {}", r.exit_code);
                r.stack.iter().for_each(stack_round_trip);
            }
        }
        2 => {
            for entry in result.as_array().into_iter().flatten() {
                if let Ok((tx, _)) = fuzzing::toncenter_transaction(entry) {
                    assert_eq!(*tx.cell.repr_hash(), tx.hash);
                    boc_round_trip(&tx.cell);
                }
            }
        }
        3 => {
            let _ = fuzzing::toncenter_last_block(&result);
        }
        _ => {
            if let Ok(n) = fuzzing::toncenter_number(&result) {
                assert_eq!(fuzzing::toncenter_number(&Value::String(n.to_string())).ok(), Some(n));
            }
        }
    }
}

/// Get-method stack entries as TON Center writes them (`["num", "0x1a"]`, `["cell", {"bytes":
/// ...}]`, ...): the input is one entry or an array of them; every value read survives being
/// written back by `chain serve` and read again.
pub fn toncenter_stack(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Value>(data) else { return };
    let entries = match &json {
        Value::Array(items) if items.first().is_some_and(Value::is_array) => items.clone(),
        other => vec![other.clone()],
    };
    for entry in &entries {
        if let Ok(v) = fuzzing::toncenter_stack_value(entry) {
            stack_round_trip(&v);
            // Integers are bounded (257 bits): longer text is refused, not parsed in quadratic time.
            if let Some(text) = entry.get(1).and_then(Value::as_str) {
                assert!(
                    !matches!(v, cocoon::chain::StackValue::Int(_)) || text.trim().len() <= 83,
                    "{entry}"
                );
            }
        }
    }
}

/// `chain serve`'s `sendBoc`. Even first byte: the rest is a BOC, sent base64-encoded as
/// `{"boc": ...}`. Odd: the rest is the request body. The answer is always a Toncenter envelope,
/// 200 with `ok: true` or 400 with `ok: false`: never a server error (a panic in the executor
/// shows as one).
pub fn chain_send_boc(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let rest = input.rest();
    let body = if mode % 2 == 0 {
        if let Ok(cell) = Boc::decode(rest) {
            boc_round_trip(&cell);
        }
        serde_json::json!({ "boc": base64(rest) }).to_string().into_bytes()
    } else {
        rest.to_vec()
    };
    let (status, answer) = fuzzing::chain_send_boc(&body).expect("a local chain");
    let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert!(status == 200 || status == 400, "HTTP {status}: {answer}");
    assert_eq!(answer["ok"].as_bool(), Some(status == 200), "HTTP {status}: {answer}");
}
