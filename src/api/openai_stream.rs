//! Streamed (SSE) answers of the OpenAI API: the events of the request's `n` answers, each chunk
//! naming its answer's index, as they arrive.
//!
//! Nothing is sent before the first event of any answer, so failures before it (no worker, all
//! busy, a worker failing before its first token) get a proper status code; a failure after it
//! ends that answer with an `error` event. A caller that disconnects drops the stream, and with
//! it every answer's receiver: the client cancels those requests and the workers stop.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use cocoon_protocol::inference::messages::Event;

use super::openai::{Answer, ApiError, flatten, with_worker};
use super::openai_render::{Gathered, Meta, summed_usage};
use crate::inference::client::{Completion, Delta};

/// An event of one of the answers, tagged with its index.
type Tagged = (usize, Delta);

/// Forward every answer's deltas into one channel; it closes when all answers ended.
fn merge(answers: &mut [Answer]) -> mpsc::Receiver<Tagged> {
    let (tx, rx) = mpsc::channel(32);
    for (i, answer) in answers.iter_mut().enumerate() {
        let (_, mut own) = mpsc::channel(1);
        std::mem::swap(&mut own, &mut answer.rx);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(delta) = own.recv().await {
                if tx.send((i, delta)).await.is_err() {
                    return; // the caller went away: dropping `own` cancels this answer
                }
            }
        });
    }
    rx
}

/// The response to a streamed request.
pub(super) async fn respond(mut answers: Vec<Answer>, include_usage: bool) -> Response {
    let mut merged = merge(&mut answers);
    let Some(first) = merged.recv().await else {
        return without_events(answers, include_usage).await;
    };
    let metas: Vec<Meta> = answers.iter().map(|a| a.meta.clone()).collect();
    let mut opening: VecDeque<Bytes> = VecDeque::new();
    if metas.first().is_some_and(|m| m.kind == super::openai_render::Kind::Chat) {
        opening.extend(metas.iter().map(Meta::opening));
    }
    let state = Streaming {
        metas,
        offsets: vec![0; answers.len()],
        merged,
        tasks: answers.into_iter().map(|a| a.task).collect(),
        include_usage,
        pending: opening,
        first: Some(first),
        closed: false,
    };
    let events = futures::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    // The workers are known only at the end: they are in the final chunks' `cocoon` objects.
    sse(events, None)
}

/// Every answer ended before its first event: an error has its status; answers that completed
/// empty are streamed as such.
async fn without_events(answers: Vec<Answer>, include_usage: bool) -> Response {
    let mut completions = Vec::with_capacity(answers.len());
    let mut metas = Vec::with_capacity(answers.len());
    for answer in answers {
        match flatten(answer.task.await) {
            Ok(c) => completions.push(c),
            Err(e) => return e.into_response(),
        }
        metas.push(answer.meta);
    }
    let mut events: Vec<Bytes> = metas.iter().map(Meta::opening).collect();
    events.extend(closing(&metas, completions.iter().map(|c| Ok(c.clone())).collect(), include_usage));
    let first = completions.first().cloned();
    sse(futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>)), first.as_ref())
}

/// The end of a stream: each answer's final chunk (or its error), the usage of all, `[DONE]`.
fn closing(metas: &[Meta], results: Vec<Result<Completion, ApiError>>, include_usage: bool) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut done = Vec::new();
    for (meta, result) in metas.iter().zip(results) {
        match result {
            Ok(c) => {
                out.push(meta.closing(&c));
                done.push(c);
            }
            Err(e) => out.push(Bytes::from(format!("data: {}\n\n", e.body()))),
        }
    }
    if include_usage && let Some(meta) = metas.first() {
        out.push(meta.usage_chunk(summed_usage(&done.iter().collect::<Vec<_>>())));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

struct Streaming {
    metas: Vec<Meta>,
    /// Text bytes of each answer so far (the legacy logprobs' `text_offset`).
    offsets: Vec<usize>,
    merged: mpsc::Receiver<Tagged>,
    tasks: Vec<tokio::task::JoinHandle<Result<Completion, crate::inference::client::InferenceError>>>,
    include_usage: bool,
    pending: VecDeque<Bytes>,
    first: Option<Tagged>,
    closed: bool,
}

impl Streaming {
    /// The next SSE event, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            let next = match self.first.take() {
                Some(first) => Some(first),
                None => self.merged.recv().await,
            };
            match next {
                // A shown answer is never asked to discard what it showed.
                Some((_, Delta::Discard)) => {}
                Some((i, Delta::Answer(event))) => {
                    let (Some(meta), Some(offset)) = (self.metas.get(i), self.offsets.get_mut(i)) else {
                        continue;
                    };
                    let bytes = meta.event(&event, *offset);
                    *offset += event.text_len();
                    return Some(bytes);
                }
                None => {
                    let mut results = Vec::with_capacity(self.tasks.len());
                    for task in &mut self.tasks {
                        results.push(flatten(task.await));
                    }
                    self.pending.extend(closing(&self.metas, results, self.include_usage));
                    self.closed = true;
                }
            }
        }
    }
}

/// A `text/event-stream` response of `events`.
fn sse<S>(events: S, c: Option<&Completion>) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(events));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_worker(response, c)
}

/// How another API (Anthropic's, Responses) streams one answer: its opening events, each event
/// of the answer, and its end.
pub(super) trait Dialect: Send + 'static {
    /// Events before the first piece of the answer.
    fn opening(&mut self) -> Vec<Bytes>;
    /// The events of one piece.
    fn event(&mut self, event: Event) -> Vec<Bytes>;
    /// The closing events: the completion, or the error that ended the answer.
    fn end(&mut self, result: Result<Completion, ApiError>) -> Vec<Bytes>;
}

/// A whole answer: its events gathered (a broken answer's discarded) and its completion.
pub(super) async fn gather(mut answer: Answer) -> Result<(Gathered, Completion), ApiError> {
    let mut gathered = Gathered::default();
    while let Some(delta) = answer.rx.recv().await {
        match delta {
            Delta::Answer(event) => gathered.add(event),
            Delta::Discard => gathered = Gathered::default(),
        }
    }
    Ok((gathered, flatten(answer.task.await)?))
}

/// An answer that ended before its first event: an error keeps its status; a completion is
/// streamed with no piece.
fn without_any_event<D: Dialect>(
    result: Result<Completion, ApiError>,
    mut dialect: D,
    refuse: fn(ApiError) -> Response,
) -> Response {
    match result {
        Ok(c) => {
            let mut events = dialect.opening();
            events.extend(dialect.end(Ok(c.clone())));
            sse(futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>)), Some(&c))
        }
        Err(e) => refuse(e),
    }
}

/// Stream one answer in `dialect`. Nothing is sent before its first event, so an error before it
/// is answered by `refuse` with its status.
pub(super) async fn stream_one<D: Dialect>(
    mut answer: Answer,
    mut dialect: D,
    refuse: fn(ApiError) -> Response,
) -> Response {
    let first = tokio::select! {
        d = answer.rx.recv() => d,
        r = &mut answer.task => return without_any_event(flatten(r), dialect, refuse),
    };
    let Some(first) = first else {
        return without_any_event(flatten(answer.task.await), dialect, refuse);
    };
    let mut pending: VecDeque<Bytes> = dialect.opening().into();
    if let Delta::Answer(event) = first {
        pending.extend(dialect.event(event));
    }
    let state = (answer, dialect, pending, false);
    let events =
        futures::stream::unfold(state, |(mut answer, mut dialect, mut pending, mut ended)| async move {
            loop {
                if let Some(bytes) = pending.pop_front() {
                    return Some((Ok::<_, Infallible>(bytes), (answer, dialect, pending, ended)));
                }
                if ended {
                    return None;
                }
                match answer.rx.recv().await {
                    Some(Delta::Answer(event)) => pending.extend(dialect.event(event)),
                    Some(Delta::Discard) => {}
                    None => {
                        let result = flatten((&mut answer.task).await);
                        pending.extend(dialect.end(result));
                        ended = true;
                    }
                }
            }
        });
    sse(events, None)
}
