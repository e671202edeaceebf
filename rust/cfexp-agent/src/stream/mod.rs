//! Stream parsing: response body bytes in, the call's content and the
//! server's counters out. Pure and I/O-free: the caller feeds the body in
//! whatever pieces the network delivered, each with its arrival time, so the
//! golden fixtures (`tests/fixtures/streams/`) replay exact chunk boundaries.
//!
//! Both wire formats are line-based and share the rules of the Python agent
//! (`cfexp/agents/python_agent/stream.py`), which the shared fixtures pin:
//!
//! - lines end at `\n`; the body is split into lines *as bytes*, then each
//!   line is decoded (UTF-8) and stripped of ASCII white space
//!   (` \t\n\r\x0c`, so a CRLF's `\r` goes); blank lines are skipped;
//! - each line is one message: an NDJSON object for Ollama ([`ndjson`]), an
//!   SSE field line for OpenAI ([`sse`]: every `data:` line is one event);
//! - a newline-terminated line that is not UTF-8, not JSON, or JSON of the
//!   wrong shape is `malformed_stream`; the same for the unterminated last
//!   line of the body is `incomplete_stream` (a body cut short);
//! - an error object (or SSE `error:` field) is `stream_error`;
//! - parsing stops at the first failure or at the final message
//!   (`done: true` / `data: [DONE]`): nothing after it counts;
//! - a body that ends before the final message is `incomplete_stream`; a
//!   complete one without content is `empty_response`;
//! - a content piece's time is the arrival of the chunk that completed its
//!   line; counters are kept only when they are JSON integers (that fit an
//!   `i64`), millisecond readings when JSON numbers, reasons only when
//!   strings, and a later value replaces an earlier one;
//! - besides each API's own counters, both read llama.cpp's `timings` object
//!   and the extension field `prompt_truncated_tokens` (cfexp's servers) from
//!   their last message ([`extensions`]).

pub mod ndjson;
pub mod sse;

use crate::spec::Api;

/// Why a call failed: the contract's `error_kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made.
    Connect,
    /// `call_timeout_s` elapsed.
    Timeout,
    /// A non-2xx status.
    HttpStatus,
    /// A line/event that is not valid JSON, or JSON of the wrong shape.
    MalformedStream,
    /// The server sent an error object inside the stream.
    StreamError,
    /// The stream ended without its final object / `[DONE]`.
    IncompleteStream,
    /// The stream completed but carried no content.
    EmptyResponse,
}

impl FailureKind {
    /// Every kind, in the order of `cfexp.agents.records.ErrorKind`.
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::HttpStatus,
        FailureKind::MalformedStream,
        FailureKind::StreamError,
        FailureKind::IncompleteStream,
        FailureKind::EmptyResponse,
    ];

    /// The `error_kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::HttpStatus => "http_status",
            FailureKind::MalformedStream => "malformed_stream",
            FailureKind::StreamError => "stream_error",
            FailureKind::IncompleteStream => "incomplete_stream",
            FailureKind::EmptyResponse => "empty_response",
        }
    }
}

/// A failed call's kind and human-readable cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The `error_kind`.
    pub kind: FailureKind,
    /// The `error` text.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Everything a stream carried, as the call record needs it: the server's
/// raw readings, no derived metric (`output_tokens` is `cfexp.metrics`'s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamData {
    /// All content, concatenated.
    pub text: String,
    /// Arrival time of every chunk with non-empty content.
    pub chunk_times_ns: Vec<u64>,
    /// Ollama `load_duration`.
    pub server_load_duration_ns: Option<i64>,
    /// Ollama `prompt_eval_count`.
    pub server_prompt_eval_count: Option<i64>,
    /// Ollama `prompt_eval_duration`.
    pub server_prompt_eval_duration_ns: Option<i64>,
    /// Ollama `eval_count`.
    pub server_eval_count: Option<i64>,
    /// Ollama `eval_duration`.
    pub server_eval_duration_ns: Option<i64>,
    /// Ollama `total_duration`.
    pub server_total_duration_ns: Option<i64>,
    /// OpenAI `usage.prompt_tokens`.
    pub server_prompt_tokens: Option<i64>,
    /// OpenAI `usage.completion_tokens`.
    pub server_completion_tokens: Option<i64>,
    /// OpenAI `usage.prompt_tokens_details.cached_tokens`.
    pub server_cached_tokens: Option<i64>,
    /// llama.cpp `timings.prompt_n`.
    pub server_timings_prompt_n: Option<i64>,
    /// llama.cpp `timings.cache_n`.
    pub server_timings_cache_n: Option<i64>,
    /// llama.cpp `timings.prompt_ms`.
    pub server_timings_prompt_ms: Option<f64>,
    /// llama.cpp `timings.predicted_n`.
    pub server_timings_predicted_n: Option<i64>,
    /// llama.cpp `timings.predicted_ms`.
    pub server_timings_predicted_ms: Option<f64>,
    /// The extension field `prompt_truncated_tokens`.
    pub server_prompt_truncated_tokens: Option<i64>,
    /// Ollama `done_reason`, OpenAI `finish_reason`.
    pub finish_reason: Option<String>,
}

/// What one line carries, read in full before anything is applied (a line
/// of the wrong shape changes nothing).
#[derive(Debug, Default)]
struct LineEvent {
    content: Option<String>,
    counters: Vec<(Counter, i64)>,
    milliseconds: Vec<(Millis, f64)>,
    finish_reason: Option<String>,
    end: bool,
}

/// The server counters a line may set.
#[derive(Debug, Clone, Copy)]
enum Counter {
    LoadDuration,
    PromptEvalCount,
    PromptEvalDuration,
    EvalCount,
    EvalDuration,
    TotalDuration,
    PromptTokens,
    CompletionTokens,
    CachedTokens,
    TimingsPromptN,
    TimingsCacheN,
    TimingsPredictedN,
    PromptTruncatedTokens,
}

/// The server's millisecond readings a line may set.
#[derive(Debug, Clone, Copy)]
enum Millis {
    TimingsPrompt,
    TimingsPredicted,
}

impl StreamData {
    fn apply(&mut self, event: LineEvent, now_ns: u64) {
        if let Some(content) = event.content.filter(|c| !c.is_empty()) {
            self.text.push_str(&content);
            self.chunk_times_ns.push(now_ns);
        }
        for (counter, value) in event.counters {
            let slot = match counter {
                Counter::LoadDuration => &mut self.server_load_duration_ns,
                Counter::PromptEvalCount => &mut self.server_prompt_eval_count,
                Counter::PromptEvalDuration => &mut self.server_prompt_eval_duration_ns,
                Counter::EvalCount => &mut self.server_eval_count,
                Counter::EvalDuration => &mut self.server_eval_duration_ns,
                Counter::TotalDuration => &mut self.server_total_duration_ns,
                Counter::PromptTokens => &mut self.server_prompt_tokens,
                Counter::CompletionTokens => &mut self.server_completion_tokens,
                Counter::CachedTokens => &mut self.server_cached_tokens,
                Counter::TimingsPromptN => &mut self.server_timings_prompt_n,
                Counter::TimingsCacheN => &mut self.server_timings_cache_n,
                Counter::TimingsPredictedN => &mut self.server_timings_predicted_n,
                Counter::PromptTruncatedTokens => &mut self.server_prompt_truncated_tokens,
            };
            *slot = Some(value);
        }
        for (reading, value) in event.milliseconds {
            let slot = match reading {
                Millis::TimingsPrompt => &mut self.server_timings_prompt_ms,
                Millis::TimingsPredicted => &mut self.server_timings_predicted_ms,
            };
            *slot = Some(value);
        }
        if let Some(reason) = event.finish_reason {
            self.finish_reason = Some(reason);
        }
    }
}

/// Why a line could not be used.
#[derive(Debug)]
enum LineError {
    /// Not JSON, or JSON of the wrong shape: malformed (or, for the
    /// unterminated last line, incomplete).
    Bad(String),
    /// The server reported an error.
    Stream(String),
}

/// The result of a whole stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOutcome {
    /// What arrived (partial on failure).
    pub data: StreamData,
    /// `None` only for a complete stream with content.
    pub failure: Option<Failure>,
}

/// Parses one response body, fed in pieces as they arrive.
#[derive(Debug)]
pub struct StreamParser {
    api: Api,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` known to hold no `\n`.
    scanned: usize,
    last_feed_ns: u64,
    data: StreamData,
    complete: bool,
    failure: Option<Failure>,
}

impl StreamParser {
    /// A parser for `api`'s streaming format.
    pub fn new(api: Api) -> Self {
        StreamParser {
            api,
            buf: Vec::new(),
            scanned: 0,
            last_feed_ns: 0,
            data: StreamData::default(),
            complete: false,
            failure: None,
        }
    }

    /// True once the final message or a failure has been seen: stop
    /// reading, nothing more counts.
    pub fn stopped(&self) -> bool {
        self.complete || self.failure.is_some()
    }

    /// True once the final object / `[DONE]` has arrived.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// What has arrived so far.
    pub fn data(&self) -> &StreamData {
        &self.data
    }

    /// Feeds body bytes that arrived at `now_ns`.
    pub fn feed(&mut self, bytes: &[u8], now_ns: u64) {
        if self.stopped() {
            return;
        }
        self.last_feed_ns = now_ns;
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(pos) = self.buf[from..].iter().position(|&b| b == b'\n') {
            let end = from + pos;
            let line = self.buf[start..end].to_vec();
            start = end + 1;
            from = start;
            self.line(&line, true, now_ns);
            if self.stopped() {
                self.buf.clear();
                self.scanned = 0;
                return;
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
    }

    /// Ends the stream and says how it went. An unterminated last line is
    /// parsed with the time of the last chunk (which brought it).
    pub fn finish(mut self) -> StreamOutcome {
        if !self.stopped() && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest, false, self.last_feed_ns);
        }
        let failure = match self.failure {
            Some(f) => Some(f),
            None if !self.complete => Some(Failure::new(
                FailureKind::IncompleteStream,
                match self.api {
                    Api::Ollama => "the stream ended without its final object (done: true)",
                    Api::Openai => "the stream ended without data: [DONE]",
                },
            )),
            None if self.data.chunk_times_ns.is_empty() => Some(Failure::new(
                FailureKind::EmptyResponse,
                "the stream completed without any content",
            )),
            None => None,
        };
        StreamOutcome {
            data: self.data,
            failure,
        }
    }

    fn line(&mut self, raw: &[u8], terminated: bool, now_ns: u64) {
        let line = match std::str::from_utf8(raw) {
            Ok(text) => text.trim_ascii(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(raw);
                self.bad_line(lossy.trim_ascii(), terminated, "not UTF-8".to_owned());
                return;
            }
        };
        if line.is_empty() {
            return;
        }
        let parsed = match self.api {
            Api::Ollama => ndjson::parse_line(line),
            Api::Openai => sse::parse_line(line),
        };
        match parsed {
            Ok(event) => {
                let end = event.end;
                self.data.apply(event, now_ns);
                self.complete = end;
            }
            Err(LineError::Stream(message)) => {
                self.failure = Some(Failure::new(FailureKind::StreamError, message));
            }
            Err(LineError::Bad(why)) => self.bad_line(line, terminated, why),
        }
    }

    fn bad_line(&mut self, line: &str, terminated: bool, why: String) {
        // An unterminated, unusable last line is a body cut short, not garbage.
        self.failure = Some(if terminated {
            Failure::new(
                FailureKind::MalformedStream,
                format!("bad line ({why}): {}", quote(line)),
            )
        } else {
            Failure::new(
                FailureKind::IncompleteStream,
                format!("stream cut mid-line: {}", quote(line)),
            )
        });
    }
}

/// Re-buffers a body into pieces of at least `min_bytes` (the last may be
/// shorter) — the original study's `smol-1kb` variant.
#[derive(Debug)]
pub struct Rebuffer {
    min_bytes: usize,
    buf: Vec<u8>,
}

impl Rebuffer {
    /// A re-buffer that releases pieces of at least `min_bytes`.
    pub fn new(min_bytes: usize) -> Self {
        Rebuffer {
            min_bytes,
            buf: Vec::with_capacity(min_bytes * 2),
        }
    }

    /// Adds received bytes; returns a piece once `min_bytes` are held.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        (self.buf.len() >= self.min_bytes).then(|| std::mem::take(&mut self.buf))
    }

    /// The shorter last piece, at the end of the body.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

// Helpers for the line parsers of both formats.

use serde_json::{Map, Value};

/// A line shown in an error message, cut to 200 characters.
fn quote(line: &str) -> String {
    let cut: String = line.chars().take(200).collect();
    format!("{cut:?}")
}

/// Parses a JSON payload (`Bad` when it is not JSON).
fn parse_json(payload: &str) -> Result<Value, LineError> {
    serde_json::from_str(payload).map_err(|e| LineError::Bad(format!("not JSON: {e}")))
}

/// The message of an error value: a string, `{"message": "…"}`, or its JSON.
fn error_message(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
    }
}

/// A field present and not null.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A content field: absent/null is no content, a string is content, anything
/// else is the wrong shape.
fn content_of(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, LineError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LineError::Bad("content is not a string".to_owned())),
    }
}

/// A counter: kept only when it is a JSON integer that fits an `i64`.
fn int_of(obj: &Map<String, Value>, key: &str) -> Option<i64> {
    obj.get(key).and_then(Value::as_i64)
}

/// A millisecond reading: any JSON number, as a float.
fn number_of(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

/// `obj[key]` when it is an object; `None` when absent or null; the wrong
/// shape otherwise.
fn object_of<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, LineError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(LineError::Bad(format!("'{key}' is not an object"))),
    }
}

/// llama.cpp's `timings` fields that are counters, and what each sets.
const TIMINGS_COUNTERS: [(&str, Counter); 3] = [
    ("prompt_n", Counter::TimingsPromptN),
    ("cache_n", Counter::TimingsCacheN),
    ("predicted_n", Counter::TimingsPredictedN),
];

/// llama.cpp's `timings` fields in milliseconds, and what each sets.
const TIMINGS_MILLISECONDS: [(&str, Millis); 2] = [
    ("prompt_ms", Millis::TimingsPrompt),
    ("predicted_ms", Millis::TimingsPredicted),
];

/// The fields both APIs may carry in their last message: llama.cpp's
/// `timings` object (llama-server, cfexp's own servers) and the extension
/// field `prompt_truncated_tokens` (cfexp's own servers).
fn extensions(obj: &Map<String, Value>, event: &mut LineEvent) -> Result<(), LineError> {
    if let Some(timings) = object_of(obj, "timings")? {
        for (wire, counter) in TIMINGS_COUNTERS {
            if let Some(value) = int_of(timings, wire) {
                event.counters.push((counter, value));
            }
        }
        for (wire, reading) in TIMINGS_MILLISECONDS {
            if let Some(value) = number_of(timings, wire) {
                event.milliseconds.push((reading, value));
            }
        }
    }
    if let Some(value) = int_of(obj, "prompt_truncated_tokens") {
        event.counters.push((Counter::PromptTruncatedTokens, value));
    }
    Ok(())
}

/// A reason: kept only when it is a string.
fn str_of(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuffer_releases_pieces_of_at_least_min_bytes() {
        let mut r = Rebuffer::new(4);
        assert_eq!(r.push(b"ab"), None);
        assert_eq!(r.push(b"cde").as_deref(), Some(&b"abcde"[..]));
        assert_eq!(r.push(b"f"), None);
        assert_eq!(r.finish().as_deref(), Some(&b"f"[..]));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn lines_are_split_as_bytes_across_chunks() {
        // "é" split between two chunks, CRLF split too.
        let mut p = StreamParser::new(Api::Ollama);
        p.feed(b"{\"response\":\"caf\xc3", 1);
        p.feed(b"\xa9\"}\r", 2);
        p.feed(b"\n{\"done\":true}", 3);
        let out = p.finish();
        assert_eq!(out.failure, None);
        assert_eq!(out.data.text, "café");
        assert_eq!(out.data.chunk_times_ns, [3]);
    }

    #[test]
    fn a_bad_last_line_is_incomplete_a_bad_middle_line_malformed() {
        let kind = |body: &[u8]| {
            let mut p = StreamParser::new(Api::Ollama);
            p.feed(body, 0);
            p.finish().failure.map(|f| f.kind)
        };
        assert_eq!(
            kind(b"{\"response\":\"a\"}\n{\"resp"),
            Some(FailureKind::IncompleteStream)
        );
        assert_eq!(
            kind(b"{\"resp\n{\"done\":true}\n"),
            Some(FailureKind::MalformedStream)
        );
        assert_eq!(kind(b"\xff\xfe\n"), Some(FailureKind::MalformedStream));
        assert_eq!(kind(b""), Some(FailureKind::IncompleteStream));
    }
}
