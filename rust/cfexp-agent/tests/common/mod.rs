//! Test support: a scripted loopback HTTP server (std threads, one per
//! connection), temporary data dirs and specs, running an agent binary.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfexp_agent::clock::monotonic_ns;
use serde_json::{Value, json};

/// The repository's root (the crate is `rust/cfexp-agent`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/fixtures/<sub>` of the repository.
pub fn fixtures(sub: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(sub)
}

/// The `*.json` files of a fixture folder, sorted; panics if there are none,
/// so a missing fixture set cannot pass silently.
pub fn fixture_files(sub: &str) -> Vec<PathBuf> {
    let dir = fixtures(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json fixtures in {}", dir.display());
    files
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cfexp-rust-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------ server

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub t_received_ns: u64,
    /// Which connection it came on: 1, 2, … in the order they were accepted.
    pub connection: usize,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Status, then the body in pieces (each after its delay), chunked.
    Reply {
        status: u16,
        pieces: Vec<(Duration, Vec<u8>)>,
    },
    /// Say nothing for this long, then close.
    Stall(Duration),
    /// Close the connection without a response.
    HangUp,
    /// A whole 200 reply as [`Behavior::Reply`], then wait for the client's
    /// next request on this connection and close it unanswered:
    /// llama-server closes the connection after every stream while
    /// announcing keep-alive, and its close can meet the next request; this
    /// makes that race happen every time.
    ReplyThenClose { pieces: Vec<(Duration, Vec<u8>)> },
    /// A whole 200 reply, then close at once (a server ending keep-alive
    /// between two calls).
    ReplyThenHangUp { pieces: Vec<(Duration, Vec<u8>)> },
    /// Write these bytes (say, half a status line), then close.
    RawThenClose(Vec<u8>),
}

impl Behavior {
    /// A 200 whose body arrives in `pieces`, `gap` apart.
    pub fn stream(pieces: Vec<String>, gap: Duration) -> Self {
        Behavior::Reply {
            status: 200,
            pieces: pieces.into_iter().map(|p| (gap, p.into_bytes())).collect(),
        }
    }

    /// A `status` reply with a whole body.
    pub fn status(status: u16, body: &str) -> Self {
        Behavior::Reply {
            status,
            pieces: vec![(Duration::ZERO, body.as_bytes().to_vec())],
        }
    }

    /// [`Behavior::stream`], then the close that meets the next request.
    pub fn stream_then_close(pieces: Vec<String>, gap: Duration) -> Self {
        Behavior::ReplyThenClose {
            pieces: pieces.into_iter().map(|p| (gap, p.into_bytes())).collect(),
        }
    }
}

type Handler = dyn Fn(&Captured) -> Behavior + Send + Sync;

/// A loopback HTTP/1.1 server with keep-alive (a connection serves request
/// after request until a behaviour closes it); lives until the test process
/// ends.
pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(handler: impl Fn(&Captured) -> Behavior + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let max_active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (reqs, act, max, acc) = (
            requests.clone(),
            active.clone(),
            max_active.clone(),
            accepted.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let number = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let (handler, reqs, act, max) =
                    (handler.clone(), reqs.clone(), act.clone(), max.clone());
                std::thread::spawn(move || {
                    let now = act.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    let _ = serve(conn, number, &*handler, &reqs);
                    act.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            addr,
            requests,
            active,
            max_active,
            accepted,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    /// Most connections served at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.max_active.load(Ordering::SeqCst)
    }
}

/// Serves the requests of one connection, one after another, until the
/// client closes it or a behaviour does.
fn serve(
    conn: TcpStream,
    number: usize,
    handler: &Handler,
    reqs: &Mutex<Vec<Captured>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed its kept-alive connection
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let captured = Captured {
            method,
            path,
            headers,
            body,
            t_received_ns: monotonic_ns(),
            connection: number,
        };
        reqs.lock().unwrap().push(captured.clone());
        match handler(&captured) {
            Behavior::HangUp => return Ok(()),
            Behavior::Stall(d) => {
                std::thread::sleep(d);
                return Ok(());
            }
            Behavior::RawThenClose(bytes) => {
                conn.write_all(&bytes)?;
                conn.flush()?;
                return conn.shutdown(std::net::Shutdown::Both);
            }
            Behavior::Reply { status, pieces } => write_reply(&mut conn, status, pieces)?,
            Behavior::ReplyThenHangUp { pieces } => {
                write_reply(&mut conn, 200, pieces)?;
                return conn.shutdown(std::net::Shutdown::Both);
            }
            Behavior::ReplyThenClose { pieces } => {
                write_reply(&mut conn, 200, pieces)?;
                // The next request's first bytes have arrived (or the client left).
                reader.fill_buf()?;
                return conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn write_reply(
    conn: &mut TcpStream,
    status: u16,
    pieces: Vec<(Duration, Vec<u8>)>,
) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )?;
    conn.flush()?;
    for (delay, piece) in pieces {
        std::thread::sleep(delay);
        if piece.is_empty() {
            continue;
        }
        write!(conn, "{:x}\r\n", piece.len())?;
        conn.write_all(&piece)?;
        conn.write_all(b"\r\n")?;
        conn.flush()?;
    }
    conn.write_all(b"0\r\n\r\n")?;
    conn.flush()
}

// ------------------------------------------------------- stream bodies

/// Ollama NDJSON lines for `pieces`, then the final object.
pub fn ollama_lines(pieces: &[&str], eval_count: i64) -> Vec<String> {
    let mut lines: Vec<String> = pieces
        .iter()
        .map(|p| {
            json!({"model": "m", "message": {"role": "assistant", "content": p}, "done": false})
                .to_string()
                + "\n"
        })
        .collect();
    lines.push(
        json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "stop", "total_duration": 5000, "load_duration": 100,
               "prompt_eval_count": 12, "prompt_eval_duration": 200,
               "eval_count": eval_count, "eval_duration": 3000})
        .to_string()
            + "\n",
    );
    lines
}

/// OpenAI SSE events for `pieces`, a usage event (with llama-server's
/// `timings`), then `[DONE]`.
pub fn openai_events(pieces: &[&str], completion_tokens: i64) -> Vec<String> {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            )
        })
        .collect();
    events.push(format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    events.push(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": completion_tokens,
                         "prompt_tokens_details": {"cached_tokens": 2}},
               "timings": {"cache_n": 2, "prompt_n": 7, "prompt_ms": 3.5,
                           "predicted_n": completion_tokens, "predicted_ms": 40}})
    ));
    events
}

// ------------------------------------------------------------ data, spec

/// A small data dir: prompts that show their placeholders, two personas,
/// a three-file corpus.
pub fn make_data_dir(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("corpus/sub")).unwrap();
    std::fs::write(
        data.join("prompts.json"),
        json!({
            "single_inference": {"system": null, "user": "Say hi."},
            "analysis": {"system": "SYS {{persona_instructions}}", "user": "DATA\n{{data_summary}}"},
            "report": {"system": null, "user": "F\n{{findings}}\nR\n{{recommendations}}"}
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        data.join("personas.json"),
        json!({
            "default": {"role": "expert", "instructions": "Be brief."},
            "InsightAgent": {"role": "InsightAgent", "instructions": "Give insight."}
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(data.join("corpus/2025-01-01_a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(data.join("corpus/2025-01-02_b.json"), "{}").unwrap();
    std::fs::write(data.join("corpus/sub/2025-01-03_c.md"), "# c\n").unwrap();
    data
}

/// One agent entry of a spec.
pub fn agent(i: usize, base_url: &str, api: &str) -> Value {
    json!({
        "name": format!("agent_{i}"),
        "persona": "default",
        "base_url": base_url,
        "api": api,
        "model": "test-model",
        "options": {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1},
        "instance": i,
        "api_key": null
    })
}

/// A spec for `scenario` with `agents`.
pub fn spec(scenario: &str, data_dir: &Path, agents: Vec<Value>) -> Value {
    json!({
        "schema_version": 3,
        "run_id": "run-test",
        "scenario": scenario,
        "data_dir": data_dir,
        "num_predict": 32,
        "call_timeout_s": 10.0,
        "cache_nonce": null,
        "agents": agents
    })
}

// ------------------------------------------------------------- running

/// What a finished agent process left.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stderr: String,
    pub records: Vec<Value>,
    pub raw_records: String,
    pub out_exists: bool,
}

impl Run {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["kind"] == kind).collect()
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.records
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect()
    }

    pub fn call(&self, i: usize) -> &Value {
        self.of_kind("call")[i]
    }
}

/// The call record's fields, in the order every agent writes them
/// (docs/record-schema.md, section 3), after `schema_version`, `kind`, `run_id`.
pub const CALL_FIELDS: [&str; 41] = [
    "agent",
    "call_index",
    "step",
    "api",
    "base_url",
    "instance",
    "model",
    "options",
    "prompt_chars",
    "prompt_nonce",
    "success",
    "error_kind",
    "error",
    "http_status",
    "t_start_ns",
    "t_connect_start_ns",
    "t_connect_end_ns",
    "t_send_ns",
    "t_first_byte_ns",
    "t_first_token_ns",
    "t_last_token_ns",
    "t_end_ns",
    "chunk_times_ns",
    "content_chunks",
    "server_load_duration_ns",
    "server_prompt_eval_count",
    "server_prompt_eval_duration_ns",
    "server_eval_count",
    "server_eval_duration_ns",
    "server_total_duration_ns",
    "server_prompt_tokens",
    "server_completion_tokens",
    "server_cached_tokens",
    "server_timings_prompt_n",
    "server_timings_cache_n",
    "server_timings_prompt_ms",
    "server_timings_predicted_n",
    "server_timings_predicted_ms",
    "server_prompt_truncated_tokens",
    "finish_reason",
    "text",
];

/// The top-level keys of one JSON object line, in the order written.
pub fn keys_in_order(line: &str) -> Vec<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(line)
        .deserialize_map(Keys)
        .expect("a JSON object line")
}

/// Runs `bin` on `spec` (written into `dir`); kills it after 60 s.
/// One agent, one scenario, in a fresh temporary folder with the test data:
/// the set-up most end-to-end cases share.
pub fn run_single(bin: &str, tag: &str, scenario: &str, base_url: &str, api: &str) -> Run {
    let dir = TempDir::new(tag);
    let data = make_data_dir(dir.path());
    run_agent(
        bin,
        dir.path(),
        &spec(scenario, &data, vec![agent(0, base_url, api)]),
    )
}

pub fn run_agent(bin: &str, dir: &Path, spec: &Value) -> Run {
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    run_args(
        bin,
        dir,
        &[
            "--spec",
            spec_path.to_str().unwrap(),
            "--out",
            dir.join("records.jsonl").to_str().unwrap(),
        ],
    )
}

/// Runs `bin` with `args`; reads `dir/records.jsonl`.
pub fn run_args(bin: &str, dir: &Path, args: &[&str]) -> Run {
    let out = dir.join("records.jsonl");
    let _ = std::fs::remove_file(&out);
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{bin} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let raw_records = std::fs::read_to_string(&out).unwrap_or_default();
    let records = raw_records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record line {l:?}: {e}")))
        .collect();
    Run {
        code: status.code(),
        stderr,
        records,
        raw_records,
        out_exists: out.exists(),
    }
}
