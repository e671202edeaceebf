//! The agent contract's output: the records the agent writes, one JSON
//! object per line (docs/record-schema.md, sections 2–3). The mirror of
//! `cfexp/agents/records.py`: the same fields in the same order, and the
//! same bytes — numbers included: floats are written in Python's notation
//! ([`python_float`]), map keys in sorted order, so a Python and a Rust agent
//! that saw the same things write the same line (checked by the shared
//! fixture `tests/fixtures/records/records.jsonl`). Raw facts only: every
//! metric is derived from them by `cfexp.metrics`.
//!
//! [`RecordWriter`] writes each line with a single `write` and no user-space
//! buffer, so a crash keeps every record written before it. Concurrent agents
//! share it; its lock is held only around that one write, never across a
//! request.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Kind, Result};
use crate::spec::SCHEMA_VERSION;

/// `ready`: written once, first.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyRecord {
    /// Always `rust`.
    pub language: &'static str,
    /// The runtime variant, e.g. `tokio` or `smol_1kb`.
    pub runtime: &'static str,
    /// This crate's version.
    pub agent_version: &'static str,
    /// When spec, data and client were ready.
    pub t_ready_ns: u64,
}

/// Files per type found by the ingest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesByType {
    /// `.csv` files.
    pub csv: u64,
    /// `.json` files.
    pub json: u64,
    /// `.md` files.
    pub md: u64,
}

/// `ingest`: one per agent workflow that reads the corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRecord {
    /// Agent name.
    pub agent: String,
    /// Files ingested.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Files per type.
    pub files_by_type: FilesByType,
    /// Ingest start.
    pub t_start_ns: u64,
    /// Ingest end.
    pub t_end_ns: u64,
}

/// `call`: one per LLM call, successful or not (docs/record-schema.md,
/// section 3; `cfexp.agents.records.CallRecord`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRecord {
    /// Agent name.
    pub agent: String,
    /// 0, 1, … within the agent.
    pub call_index: u32,
    /// `single_inference`, `analysis` or `report`.
    pub step: String,
    /// `ollama` or `openai`.
    pub api: String,
    /// As in the spec.
    pub base_url: String,
    /// As in the spec.
    pub instance: i64,
    /// As in the spec.
    pub model: String,
    /// Exactly what was sent as model options (keys in sorted order).
    #[serde(serialize_with = "python_options")]
    pub options: Option<Map<String, Value>>,
    /// Characters of all messages sent, nonce included.
    pub prompt_chars: u64,
    /// The cache-defeating prefix put before the first message; `None` = none.
    pub prompt_nonce: Option<String>,
    /// A complete stream with content.
    pub success: bool,
    /// One of the contract's error kinds.
    pub error_kind: Option<String>,
    /// Human-readable cause.
    pub error: Option<String>,
    /// Null when no response arrived.
    pub http_status: Option<u16>,
    /// The call began (request built, handed to the HTTP client); the
    /// timeout runs from here.
    pub t_start_ns: u64,
    /// The TCP connect this call made began; null when the call reused its
    /// agent's kept-alive connection. For a resent request, the new
    /// connection's.
    pub t_connect_start_ns: Option<u64>,
    /// That connection was established; null on a reused connection or when
    /// the connect failed.
    pub t_connect_end_ns: Option<u64>,
    /// Just before the request's first byte was written on the established
    /// connection; null when it never was.
    pub t_send_ns: Option<u64>,
    /// First response body bytes received.
    pub t_first_byte_ns: Option<u64>,
    /// First chunk with non-empty content.
    pub t_first_token_ns: Option<u64>,
    /// Last chunk with non-empty content.
    pub t_last_token_ns: Option<u64>,
    /// Stream closed, or the call failed.
    pub t_end_ns: u64,
    /// Arrival of every content-bearing chunk.
    pub chunk_times_ns: Vec<u64>,
    /// `len(chunk_times_ns)`.
    pub content_chunks: u64,
    /// Ollama `load_duration`.
    pub server_load_duration_ns: Option<i64>,
    /// Ollama `prompt_eval_count`: prompt tokens, cached and new.
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
    /// llama.cpp `timings.prompt_n`: prompt tokens really evaluated.
    pub server_timings_prompt_n: Option<i64>,
    /// llama.cpp `timings.cache_n`: prompt tokens taken from the cache.
    pub server_timings_cache_n: Option<i64>,
    /// llama.cpp `timings.prompt_ms`.
    #[serde(serialize_with = "python_float_opt")]
    pub server_timings_prompt_ms: Option<f64>,
    /// llama.cpp `timings.predicted_n`.
    pub server_timings_predicted_n: Option<i64>,
    /// llama.cpp `timings.predicted_ms`.
    #[serde(serialize_with = "python_float_opt")]
    pub server_timings_predicted_ms: Option<f64>,
    /// The extension field `prompt_truncated_tokens` of the final message.
    pub server_prompt_truncated_tokens: Option<i64>,
    /// Ollama `done_reason`, OpenAI `finish_reason`.
    pub finish_reason: Option<String>,
    /// All content received (partial on failure).
    pub text: String,
}

/// `agent`: one per agent workflow, when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    /// Agent name.
    pub agent: String,
    /// Persona key.
    pub persona: String,
    /// Server instance index.
    pub instance: i64,
    /// Every call succeeded.
    pub success: bool,
    /// The failed call's error kind.
    pub error_kind: Option<String>,
    /// The failed call's error.
    pub error: Option<String>,
    /// Workflow start.
    pub t_start_ns: u64,
    /// Workflow end.
    pub t_end_ns: u64,
    /// Parsed from the analysis.
    pub findings: Vec<String>,
    /// Parsed from the analysis.
    pub recommendations: Vec<String>,
    /// Calls made.
    pub calls: u32,
}

/// `done`: written once, last.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoneRecord {
    /// All agents succeeded.
    pub success: bool,
    /// When the agent process finished its work.
    pub t_end_ns: u64,
}

/// Any record; the variant is its `kind`.
// Each record is built, written once and dropped: boxing the large `call`
// variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Record {
    /// See [`ReadyRecord`].
    Ready(ReadyRecord),
    /// See [`IngestRecord`].
    Ingest(IngestRecord),
    /// See [`CallRecord`].
    Call(CallRecord),
    /// See [`AgentRecord`].
    Agent(AgentRecord),
    /// See [`DoneRecord`].
    Done(DoneRecord),
}

impl Record {
    /// The record's `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Ready(_) => "ready",
            Record::Ingest(_) => "ingest",
            Record::Call(_) => "call",
            Record::Agent(_) => "agent",
            Record::Done(_) => "done",
        }
    }

    fn body(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Record::Ready(r) => serde_json::to_vec(r),
            Record::Ingest(r) => serde_json::to_vec(r),
            Record::Call(r) => serde_json::to_vec(r),
            Record::Agent(r) => serde_json::to_vec(r),
            Record::Done(r) => serde_json::to_vec(r),
        }
    }
}

// ------------------------------------------------- numbers as Python writes them

/// `x` as Python's `repr(float)` (and so `json.dumps`) writes it: the
/// shortest digits that read back as `x` (the nearest of them, ties to
/// even), in fixed notation with at least one decimal (`12.0`, `0.0001`)
/// when the decimal exponent is in −4..16, else scientific with a signed,
/// two-digit-minimum exponent (`1e-05`, `1.5e+16`). `x` must be finite (the
/// stream parser reads no other: JSON has no NaN or infinity).
pub fn python_float(x: f64) -> String {
    debug_assert!(x.is_finite());
    // Rust's `{:e}` gives the shortest round-trip digits, but breaks a tie
    // between two shortest candidates upwards; the exact rounding to as many
    // digits breaks it to even, as Python does, whenever it still reads back.
    let shortest = format!("{x:e}");
    let digits = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    let exact = format!("{x:.prec$e}", prec = digits.saturating_sub(1));
    let sci = if exact
        .parse::<f64>()
        .is_ok_and(|y| y.to_bits() == x.to_bits())
    {
        exact
    } else {
        shortest
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            let zeros = "0".repeat((-exponent - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = exponent as usize + 1;
            if digits.len() <= point {
                let zeros = "0".repeat(point - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.to_owned()
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

/// A float, written as [`python_float`] spells it.
fn raw_python_float(x: f64) -> Box<RawValue> {
    RawValue::from_string(python_float(x)).expect("a Python float literal is JSON")
}

fn python_float_opt<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(x) => raw_python_float(*x).serialize(s),
        None => s.serialize_none(),
    }
}

/// A JSON value whose floats are written as Python writes them.
struct PythonValue<'a>(&'a Value);

impl Serialize for PythonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(x) => raw_python_float(x).serialize(s),
                None => n.serialize(s),
            },
            Value::Array(items) => s.collect_seq(items.iter().map(PythonValue)),
            Value::Object(map) => {
                let mut out = s.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &PythonValue(value))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

fn python_options<S: Serializer>(
    options: &Option<Map<String, Value>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match options {
        Some(map) => {
            let mut out = s.serialize_map(Some(map.len()))?;
            for (key, value) in map {
                out.serialize_entry(key, &PythonValue(value))?;
            }
            out.end()
        }
        None => s.serialize_none(),
    }
}

/// Serializes one record as a JSON line (with its trailing `\n`): the common
/// fields `schema_version`, `kind`, `run_id` first, then the kind's own
/// fields in the documented order.
pub fn to_line(run_id: &str, record: &Record) -> Vec<u8> {
    let body = record
        .body()
        .expect("records contain only JSON-representable values");
    let head = format!(
        "{{\"schema_version\":{SCHEMA_VERSION},\"kind\":\"{}\",\"run_id\":{},",
        record.kind(),
        serde_json::Value::from(run_id)
    );
    // Every record struct has at least one field, so `body` is `{…}` with
    // something inside: splice it after the common fields.
    debug_assert!(body.len() > 2 && body[0] == b'{');
    let mut line = Vec::with_capacity(head.len() + body.len());
    line.extend_from_slice(head.as_bytes());
    line.extend_from_slice(&body[1..]);
    line.push(b'\n');
    line
}

/// Appends records to the records file, one flushed line at a time.
#[derive(Debug)]
pub struct RecordWriter {
    run_id: String,
    file: Mutex<File>,
}

impl RecordWriter {
    /// Creates (or truncates) the records file.
    pub fn create(path: &Path, run_id: &str) -> Result<Self> {
        let file = File::create(path).map_err(|e| {
            // A bad --out is a bad invocation: exit 2, nothing was sent.
            Error::with_source(
                Kind::Usage,
                format!("cannot create the records file <out={}>", path.display()),
                e,
            )
        })?;
        Ok(RecordWriter {
            run_id: run_id.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Writes one record as one line, with one `write` call.
    pub fn write(&self, record: &Record) -> Result<()> {
        let line = to_line(&self.run_id, record);
        // Poisoning cannot leave a half-written line (write_all is the only
        // thing done under the lock), so a poisoned lock is still usable.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
            .map_err(|e| Error::with_source(Kind::Output, "cannot write a record", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_schema_version_and_kind() {
        let rec = Record::Done(DoneRecord {
            success: true,
            t_end_ns: 7,
        });
        let line = String::from_utf8(to_line("run-1", &rec)).unwrap();
        assert_eq!(
            line,
            "{\"schema_version\":3,\"kind\":\"done\",\"run_id\":\"run-1\",\"success\":true,\"t_end_ns\":7}\n"
        );
    }

    #[test]
    // The two tie cases are exact binary values (a quarter and an eighth
    // above an integer), written out in full on purpose.
    #[allow(clippy::excessive_precision)]
    fn floats_are_written_as_python_writes_them() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (12.0, "12.0"),
            (0.8, "0.8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123456789.12345679, "123456789.12345679"),
            // A tie between two shortest candidates goes to the even digit.
            (1113178120592002.25, "1113178120592002.2"),
            (111659285584252.125, "111659285584252.12"),
        ];
        for (x, python) in cases {
            assert_eq!(python_float(x), python, "{x:e}");
        }
    }

    #[test]
    fn writer_writes_complete_lines() {
        let dir = std::env::temp_dir().join(format!("cfexp-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let w = RecordWriter::create(&path, "r").unwrap();
        let ready = Record::Ready(ReadyRecord {
            language: "rust",
            runtime: "tokio",
            agent_version: "0.1.0",
            t_ready_ns: 1,
        });
        w.write(&ready).unwrap();
        w.write(&Record::Done(DoneRecord {
            success: false,
            t_end_ns: 2,
        }))
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, ["ready", "done"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
