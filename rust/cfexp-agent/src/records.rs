//! The records the agent writes: one JSON object per line
//! (docs/record-schema.md, sections 2–3), field names and order as documented.
//!
//! [`RecordWriter`] writes each line with a single `write` and no user-space
//! buffer, so a crash keeps every record written before it. Concurrent agents
//! share it; its lock is held only around that one write, never across a
//! request.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesByType {
    /// `.csv` files.
    pub csv: u64,
    /// `.json` files.
    pub json: u64,
    /// `.md` files.
    pub md: u64,
}

/// `ingest`: one per agent workflow that reads the corpus.
#[derive(Debug, Clone, Serialize)]
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

/// `call`: one per LLM call, successful or not.
#[derive(Debug, Clone, Serialize)]
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
    /// Exactly what was sent as model options.
    pub options: Option<Map<String, Value>>,
    /// Characters of all messages sent.
    pub prompt_chars: u64,
    /// A complete stream with content.
    pub success: bool,
    /// One of the contract's error kinds.
    pub error_kind: Option<String>,
    /// Human-readable cause.
    pub error: Option<String>,
    /// Null when no response arrived.
    pub http_status: Option<u16>,
    /// Just before the request (connect included) starts.
    pub t_send_ns: u64,
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
    /// Tokens generated, as counted by the server.
    pub output_tokens: Option<i64>,
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
    /// Ollama `done_reason`, OpenAI `finish_reason`.
    pub finish_reason: Option<String>,
    /// All content received (partial on failure).
    pub text: String,
}

/// `agent`: one per agent workflow, when it ends.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
            "{\"schema_version\":1,\"kind\":\"done\",\"run_id\":\"run-1\",\"success\":true,\"t_end_ns\":7}\n"
        );
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
