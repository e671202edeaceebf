//! End to end, for every runtime binary: a loopback HTTP server per test
//! serves scripted NDJSON/SSE bodies (or fails on purpose), the agent binary
//! runs a spec against it, and the records file and exit status are checked.
//!
//! Each runtime gets the same cases (the `runtime_tests!` modules at the
//! end); a runtime's cases exist only when its feature is enabled:
//! `cargo test --all-features` runs them all.

mod common;

use std::time::Duration;

use cfexp_agent::spec::nonce_text;
use common::{
    Behavior, CALL_FIELDS, Run, Server, TempDir, agent, keys_in_order, make_data_dir, ollama_lines,
    openai_events, run_agent, run_args, run_single, spec,
};
use serde_json::{Value, json};

const GAP: Duration = Duration::from_millis(5);

/// The checks every complete run passes: `ready` first, `done` last, one
/// each, every record tagged with schema version and run id.
fn assert_well_formed(run: &Run, runtime: &str) {
    let kinds = run.kinds();
    assert_eq!(kinds.first(), Some(&"ready"), "{kinds:?}\n{}", run.stderr);
    assert_eq!(kinds.last(), Some(&"done"), "{kinds:?}\n{}", run.stderr);
    assert_eq!(run.of_kind("ready").len(), 1);
    assert_eq!(run.of_kind("done").len(), 1);
    for r in &run.records {
        assert_eq!(r["schema_version"], 3);
        assert_eq!(r["run_id"], "run-test");
    }
    // Every call record lists every field, in the documented order.
    for (line, record) in run.raw_records.lines().zip(&run.records) {
        let keys = keys_in_order(line);
        assert_eq!(keys[..3], ["schema_version", "kind", "run_id"]);
        if record["kind"] == "call" {
            assert_eq!(keys[3..], CALL_FIELDS, "{line}");
        }
    }
    let ready = run.of_kind("ready")[0];
    assert_eq!(ready["language"], "rust");
    assert_eq!(ready["runtime"], runtime);
    assert_eq!(ready["agent_version"], env!("CARGO_PKG_VERSION"));
    // Every call's clock readings are ordered: start ≤ connect start <
    // connect end ≤ send (the request is written on an established
    // connection) ≤ first byte ≤ … ≤ end.
    for c in run.of_kind("call") {
        let t = |k: &str| c[k].as_u64();
        let start = t("t_start_ns").unwrap();
        let end = t("t_end_ns").unwrap();
        assert!(start >= ready["t_ready_ns"].as_u64().unwrap());
        assert!(start <= end);
        // An agent's first call connects; a later one reuses the agent's
        // kept-alive connection (no connect readings at all) or connects.
        if t("t_connect_start_ns").is_none() {
            assert_ne!(c["call_index"], 0, "first call without a connect in {c}");
            assert!(t("t_connect_end_ns").is_none(), "half a connect in {c}");
        } else if t("t_send_ns").is_some() {
            assert!(
                t("t_connect_end_ns").is_some(),
                "sent without a connection in {c}"
            );
        }
        let mut last = start;
        for k in [
            "t_connect_start_ns",
            "t_connect_end_ns",
            "t_send_ns",
            "t_first_byte_ns",
            "t_first_token_ns",
            "t_last_token_ns",
        ] {
            if let Some(v) = t(k) {
                assert!(v >= last && v <= end, "{k} out of order in {c}");
                last = v;
            }
        }
        assert_eq!(
            c["content_chunks"],
            json!(c["chunk_times_ns"].as_array().unwrap().len())
        );
    }
}

fn failed_call(run: &Run, kind: &str) -> Value {
    assert_eq!(run.code, Some(1), "exit status; stderr:\n{}", run.stderr);
    let calls = run.of_kind("call");
    assert_eq!(
        calls.len(),
        1,
        "the workflow stops at its first failed call"
    );
    let call = calls[0].clone();
    assert_eq!(call["success"], false);
    assert_eq!(call["error_kind"], kind, "{call}");
    let agent = run.of_kind("agent")[0];
    assert_eq!(agent["success"], false);
    assert_eq!(agent["error_kind"], kind);
    assert_eq!(agent["calls"], 1);
    assert_eq!(run.of_kind("done")[0]["success"], false);
    call
}

// ------------------------------------------------------------------ cases

pub fn single_inference_ollama(bin: &str, runtime: &str) {
    let server =
        Server::start(|_| Behavior::stream(ollama_lines(&["Hel", "", "lo", " world"], 4), GAP));
    let run = run_single(bin, "si", "single_inference", &server.base_url(), "ollama");
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    assert_eq!(run.kinds(), ["ready", "call", "agent", "done"]);
    let call = run.call(0);
    assert_eq!(call["success"], true);
    assert_eq!(call["error_kind"], Value::Null);
    assert_eq!(call["step"], "single_inference");
    assert_eq!(call["http_status"], 200);
    assert_eq!(call["text"], "Hello world");
    assert_eq!(call["content_chunks"], 3);
    assert_eq!(call["server_eval_count"], 4);
    assert_eq!(call["prompt_nonce"], Value::Null);
    // A real Ollama sends neither llama.cpp's timings nor truncation.
    for field in [
        "server_timings_prompt_n",
        "server_timings_prompt_ms",
        "server_prompt_truncated_tokens",
    ] {
        assert_eq!(call[field], Value::Null, "{field}");
    }
    assert_eq!(call["server_load_duration_ns"], 100);
    assert_eq!(call["finish_reason"], "stop");
    assert_eq!(call["prompt_chars"], "Say hi.".len());
    assert_eq!(
        call["options"],
        json!({"num_gpu": 80, "num_ctx": 512, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1, "num_predict": 32})
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/chat")
    );
    // The send is read before the request's first byte leaves and after the
    // connection was made: the server had the whole request after it.
    let send = call["t_send_ns"].as_u64().unwrap();
    assert!(call["t_connect_end_ns"].as_u64().unwrap() <= send);
    assert!(send <= req.t_received_ns, "sent after the server had it");
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("host"), Some(server.addr.to_string().as_str()));
    let body = req.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["options"], call["options"]);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Say hi."}])
    );
    let agent = run.of_kind("agent")[0];
    assert_eq!(
        (agent["success"].clone(), agent["calls"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(run.of_kind("done")[0]["success"], true);
}

pub fn single_agent_openai(bin: &str, runtime: &str) {
    let analysis = "## Key Findings\n- Latency is high\n## Recommendations\n1. Cache prompts\n";
    let pieces: Vec<String> = analysis.split_inclusive('\n').map(str::to_owned).collect();
    let server = Server::start(move |req| {
        let body = req.json();
        let text = body["messages"].to_string();
        if text.contains("DATA") {
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            Behavior::stream(openai_events(&refs, 11), GAP)
        } else {
            Behavior::stream(openai_events(&["# Report", "\nDone."], 5), GAP)
        }
    });
    let dir = TempDir::new("sa");
    let data = make_data_dir(dir.path());
    let mut a = agent(0, &server.base_url(), "openai");
    a["api_key"] = json!("sk-secret-key");
    let mut s = spec("single_agent", &data, vec![a]);
    s["cache_nonce"] = json!("f00d1e");
    let run = run_agent(bin, dir.path(), &s);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    assert_eq!(
        run.kinds(),
        ["ready", "ingest", "call", "call", "agent", "done"]
    );
    assert!(
        !run.raw_records.contains("sk-secret"),
        "the API key leaked into the records"
    );
    assert!(
        !run.stderr.contains("sk-secret"),
        "the API key leaked into stderr"
    );

    let ingest = run.of_kind("ingest")[0];
    assert_eq!(ingest["files"], 3);
    assert_eq!(ingest["bytes"], 8 + 2 + 4);
    assert_eq!(
        ingest["files_by_type"],
        json!({"csv": 1, "json": 1, "md": 1})
    );
    let (c0, c1) = (run.call(0), run.call(1));
    assert_eq!(
        (c0["step"].as_str(), c0["call_index"].as_u64()),
        (Some("analysis"), Some(0))
    );
    assert_eq!(
        (c1["step"].as_str(), c1["call_index"].as_u64()),
        (Some("report"), Some(1))
    );
    assert_eq!(c0["text"], analysis);
    assert_eq!(c0["server_completion_tokens"], 11);
    assert_eq!(c0["server_prompt_tokens"], 9);
    assert_eq!(c0["server_cached_tokens"], 2);
    assert_eq!(
        (
            c0["server_timings_prompt_n"].clone(),
            c0["server_timings_cache_n"].clone()
        ),
        (json!(7), json!(2))
    );
    assert_eq!(c0["server_timings_predicted_n"], 11);
    assert_eq!(
        (
            c0["server_timings_prompt_ms"].as_f64(),
            c0["server_timings_predicted_ms"].as_f64()
        ),
        (Some(3.5), Some(40.0))
    );
    // Milliseconds are floats, written as Python writes them.
    assert!(
        run.raw_records
            .contains("\"server_timings_predicted_ms\":40.0,")
    );
    assert_eq!(c0["server_prompt_truncated_tokens"], Value::Null);
    assert_eq!(c0["prompt_nonce"], nonce_text("f00d1e", "agent_0", 0));
    assert_eq!(c1["prompt_nonce"], nonce_text("f00d1e", "agent_0", 1));
    assert_eq!(c0["finish_reason"], "stop");
    assert_eq!(c1["text"], "# Report\nDone.");
    assert_eq!(c0["options"]["max_tokens"], 32);
    assert!(c0["options"].get("num_gpu").is_none());
    let agent = run.of_kind("agent")[0];
    assert_eq!(agent["findings"], json!(["Latency is high"]));
    assert_eq!(agent["recommendations"], json!(["Cache prompts"]));
    assert_eq!(agent["calls"], 2);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-secret-key"));
        let body = r.json();
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["max_tokens"], 32);
    }
    let first = reqs[0].json();
    let sys = first["messages"][0]["content"].as_str().unwrap();
    assert_eq!(
        sys,
        format!("{}SYS Be brief.", nonce_text("f00d1e", "agent_0", 0))
    );
    let user = first["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("DATA\nFiles analyzed: 3 (1 CSV, 1 JSON, 1 Markdown), 14 bytes."),
        "{user}"
    );
    let report = reqs[1].json();
    assert_eq!(
        report["messages"][0]["content"],
        format!(
            "{}F\n- Latency is high\nR\n- Cache prompts",
            nonce_text("f00d1e", "agent_0", 1)
        )
    );
    let sent: usize = (report["messages"].as_array().unwrap().iter())
        .map(|m| m["content"].as_str().unwrap().chars().count())
        .sum();
    assert_eq!(c1["prompt_chars"], sent);
}

pub fn http_500(bin: &str, _runtime: &str) {
    let server = Server::start(|_| Behavior::status(500, "{\"error\":\"boom\"}"));
    let run = run_single(bin, "500", "single_agent", &server.base_url(), "ollama");
    assert_well_formed(&run, _runtime);
    let call = failed_call(&run, "http_status");
    assert_eq!(call["http_status"], 500);
    assert_eq!(call["error"], "{\"error\":\"boom\"}");
    assert_eq!(call["text"], "");
}

pub fn connection_refused(bin: &str, runtime: &str) {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = run_single(bin, "refused", "single_inference", &url, "openai");
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "connect");
    assert_eq!(call["http_status"], Value::Null);
    assert_eq!(call["t_first_byte_ns"], Value::Null);
    // The connect was tried, never made; nothing was written.
    assert!(call["t_connect_start_ns"].as_u64().is_some());
    assert_eq!(call["t_connect_end_ns"], Value::Null);
    assert_eq!(call["t_send_ns"], Value::Null);
}

pub fn server_hangs_up(bin: &str, runtime: &str) {
    let server = Server::start(|_| Behavior::HangUp);
    let run = run_single(
        bin,
        "hangup",
        "single_inference",
        &server.base_url(),
        "ollama",
    );
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "connect");
    assert_eq!(call["http_status"], Value::Null);
}

pub fn timeout(bin: &str, runtime: &str) {
    let server = Server::start(|_| Behavior::Stall(Duration::from_secs(5)));
    let dir = TempDir::new("timeout");
    let data = make_data_dir(dir.path());
    let mut s = spec(
        "single_inference",
        &data,
        vec![agent(0, &server.base_url(), "ollama")],
    );
    s["call_timeout_s"] = json!(0.3);
    let started = std::time::Instant::now();
    let run = run_agent(bin, dir.path(), &s);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the agent waited for the stalled server"
    );
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "timeout");
    let took = call["t_end_ns"].as_u64().unwrap() - call["t_start_ns"].as_u64().unwrap();
    assert!(
        (300_000_000..3_000_000_000).contains(&took),
        "timeout after {took} ns"
    );
}

pub fn timeout_mid_stream_keeps_partial_text(bin: &str, runtime: &str) {
    let server = Server::start(|_| {
        let mut lines = ollama_lines(&["partial"], 1);
        lines.truncate(1);
        let mut pieces: Vec<(Duration, Vec<u8>)> = lines
            .into_iter()
            .map(|l| (Duration::ZERO, l.into_bytes()))
            .collect();
        pieces.push((Duration::from_secs(5), b"{}\n".to_vec()));
        Behavior::Reply {
            status: 200,
            pieces,
        }
    });
    let dir = TempDir::new("timeout2");
    let data = make_data_dir(dir.path());
    let mut s = spec(
        "single_inference",
        &data,
        vec![agent(0, &server.base_url(), "ollama")],
    );
    s["call_timeout_s"] = json!(0.5);
    let run = run_agent(bin, dir.path(), &s);
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "timeout");
    assert_eq!(call["http_status"], 200);
    assert!(call["t_first_byte_ns"].is_u64());
    if runtime == "smol_1kb" {
        // The re-buffer still holds the short first piece: the parser never
        // saw it (what the variant means).
        assert_eq!(call["text"], "");
        assert_eq!(call["content_chunks"], 0);
    } else {
        assert_eq!(call["text"], "partial");
        assert_eq!(call["content_chunks"], 1);
    }
}

pub fn malformed_stream(bin: &str, runtime: &str) {
    let server = Server::start(|_| {
        let mut lines = ollama_lines(&["ok"], 1);
        lines.insert(1, "this is not json\n".to_owned());
        Behavior::stream(lines, GAP)
    });
    let run = run_single(
        bin,
        "malformed",
        "single_agent",
        &server.base_url(),
        "ollama",
    );
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "malformed_stream");
    assert_eq!(call["text"], "ok");
}

pub fn incomplete_and_empty_streams(bin: &str, runtime: &str) {
    let dir = TempDir::new("incomplete");
    let data = make_data_dir(dir.path());
    // No [DONE].
    let server = Server::start(|_| {
        let mut events = openai_events(&["a"], 1);
        events.pop();
        Behavior::stream(events, GAP)
    });
    let run = run_agent(
        bin,
        dir.path(),
        &spec(
            "single_inference",
            &data,
            vec![agent(0, &server.base_url(), "openai")],
        ),
    );
    assert_well_formed(&run, runtime);
    assert_eq!(failed_call(&run, "incomplete_stream")["text"], "a");
    // Complete, no content.
    let server = Server::start(|_| Behavior::stream(ollama_lines(&[], 0), GAP));
    let run = run_agent(
        bin,
        dir.path(),
        &spec(
            "single_inference",
            &data,
            vec![agent(0, &server.base_url(), "ollama")],
        ),
    );
    assert_well_formed(&run, runtime);
    let call = failed_call(&run, "empty_response");
    assert_eq!(call["server_eval_count"], 0);
}

pub fn multi_agent_overlap(bin: &str, runtime: &str) {
    // Each call streams for ~0.3 s; two agents that really run at once
    // overlap in time, both in their records and at the server.
    let server = Server::start(|req| {
        let n = req.json()["messages"].to_string().len() % 3; // vary a little
        let pieces: Vec<String> = (0..6).map(|i| format!("w{i}{n} ")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Behavior::stream(ollama_lines(&refs, 6), Duration::from_millis(50))
    });
    let dir = TempDir::new("multi");
    let data = make_data_dir(dir.path());
    let mut a1 = agent(1, &server.base_url(), "ollama");
    a1["persona"] = json!("InsightAgent");
    let run = run_agent(
        bin,
        dir.path(),
        &spec(
            "multi_agent",
            &data,
            vec![agent(0, &server.base_url(), "ollama"), a1],
        ),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    assert_eq!(run.of_kind("ingest").len(), 2);
    assert_eq!(run.of_kind("call").len(), 4);
    let agents = run.of_kind("agent");
    assert_eq!(agents.len(), 2);
    assert!(
        agents
            .iter()
            .all(|a| a["success"] == true && a["calls"] == 2)
    );
    let personas: Vec<&str> = agents
        .iter()
        .map(|a| a["persona"].as_str().unwrap())
        .collect();
    assert!(personas.contains(&"default") && personas.contains(&"InsightAgent"));
    // The first call of each agent: their [t_start, t_end] intervals overlap.
    let first = |name: &str| {
        run.of_kind("call")
            .into_iter()
            .find(|c| c["agent"] == name && c["call_index"] == 0)
            .map(|c| {
                (
                    c["t_start_ns"].as_u64().unwrap(),
                    c["t_end_ns"].as_u64().unwrap(),
                )
            })
            .unwrap()
    };
    let (a, b) = (first("agent_0"), first("agent_1"));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "agent calls did not overlap: {a:?} {b:?}"
    );
    assert!(
        server.max_concurrent() >= 2,
        "the server never saw two requests at once"
    );
    // Each agent's whole workflow overlaps the other's.
    let span = |a: &Value| {
        (
            a["t_start_ns"].as_u64().unwrap(),
            a["t_end_ns"].as_u64().unwrap(),
        )
    };
    let (x, y) = (span(agents[0]), span(agents[1]));
    assert!(x.0 < y.1 && y.0 < x.1);
    // Each agent kept its own connection: two connections, two requests each.
    assert_eq!(server.connections(), 2);
    for number in [1, 2] {
        let carried = (server.requests().iter())
            .filter(|r| r.connection == number)
            .count();
        assert_eq!(carried, 2, "connection {number}");
    }
    // Concurrency, not serialization: wall time well under the sum.
    let wall = x.1.max(y.1) - x.0.min(y.0);
    let sum = (x.1 - x.0) + (y.1 - y.0);
    assert!(
        wall * 10 < sum * 8,
        "wall {wall} ns vs sum {sum} ns: agents were serialized"
    );
}

pub fn one_failing_agent_does_not_stop_the_other(bin: &str, runtime: &str) {
    let good = Server::start(|_| Behavior::stream(ollama_lines(&["fine"], 1), GAP));
    let bad = Server::start(|_| Behavior::status(503, "busy"));
    let dir = TempDir::new("mixed");
    let data = make_data_dir(dir.path());
    let run = run_agent(
        bin,
        dir.path(),
        &spec(
            "multi_agent",
            &data,
            vec![
                agent(0, &good.base_url(), "ollama"),
                agent(1, &bad.base_url(), "ollama"),
            ],
        ),
    );
    assert_eq!(run.code, Some(1));
    assert_well_formed(&run, runtime);
    let agents = run.of_kind("agent");
    let by = |n: &str| agents.iter().find(|a| a["agent"] == n).unwrap();
    assert_eq!(by("agent_0")["success"], true);
    assert_eq!(by("agent_0")["calls"], 2);
    assert_eq!(by("agent_1")["success"], false);
    assert_eq!(by("agent_1")["error_kind"], "http_status");
    assert_eq!(run.of_kind("done")[0]["success"], false);
}

pub fn bad_spec_exits_2(bin: &str, _runtime: &str) {
    let dir = TempDir::new("badspec");
    let data = make_data_dir(dir.path());
    let mut s = spec(
        "single_inference",
        &data,
        vec![agent(0, "http://127.0.0.1:9", "ollama")],
    );
    s["schema_version"] = json!(99);
    let run = run_agent(bin, dir.path(), &s);
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(!run.out_exists, "no records for a bad spec");
    assert!(run.stderr.contains("schema_version"), "{}", run.stderr);
    // Unknown persona, unknown option, missing data dir, bad arguments.
    let mut s = spec(
        "single_inference",
        &data,
        vec![agent(0, "http://127.0.0.1:9", "ollama")],
    );
    s["agents"][0]["persona"] = json!("Nobody");
    assert_eq!(run_agent(bin, dir.path(), &s).code, Some(2));
    let mut s = spec(
        "single_inference",
        &data,
        vec![agent(0, "http://127.0.0.1:9", "ollama")],
    );
    s["agents"][0]["options"]["num_gpuu"] = json!(1);
    assert_eq!(run_agent(bin, dir.path(), &s).code, Some(2));
    let s = spec(
        "single_agent",
        &dir.path().join("nope"),
        vec![agent(0, "http://127.0.0.1:9", "ollama")],
    );
    assert_eq!(run_agent(bin, dir.path(), &s).code, Some(2));
    assert_eq!(run_args(bin, dir.path(), &["--spec"]).code, Some(2));
    assert_eq!(run_args(bin, dir.path(), &["--version"]).code, Some(0));
}

pub fn unwritable_records_exit_3(bin: &str, _runtime: &str) {
    // /dev/full opens, but every write fails (ENOSPC): an internal failure
    // after the spec was accepted, so no `done` and exit 3.
    let dir = TempDir::new("full");
    let data = make_data_dir(dir.path());
    let s = spec(
        "single_inference",
        &data,
        vec![agent(0, "http://127.0.0.1:9", "ollama")],
    );
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, s.to_string()).unwrap();
    let run = run_args(
        bin,
        dir.path(),
        &["--spec", spec_path.to_str().unwrap(), "--out", "/dev/full"],
    );
    assert_eq!(run.code, Some(3), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("cannot write a record"),
        "{}",
        run.stderr
    );
}

pub fn rebuffering(bin: &str, runtime: &str) {
    // 12 content lines of ~100 bytes, 30 ms apart, then the final object.
    let server = Server::start(|_| {
        let word = "x".repeat(30);
        let pieces: Vec<String> = (0..12).map(|i| format!("{word}{i:02}")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Behavior::stream(ollama_lines(&refs, 12), Duration::from_millis(30))
    });
    let run = run_single(
        bin,
        "rebuffer",
        "single_inference",
        &server.base_url(),
        "ollama",
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    let call = run.call(0);
    assert_eq!(call["content_chunks"], 12);
    let mut times: Vec<u64> = call["chunk_times_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    times.dedup();
    if runtime == "smol_1kb" {
        // ~1.2 KB of body in pieces of >= 1024 bytes: at most two arrivals.
        assert!(times.len() <= 2, "{} distinct arrival times", times.len());
    } else {
        assert!(times.len() >= 3, "{} distinct arrival times", times.len());
    }
}

/// A `single_agent` run (two calls) whose server answers the analysis
/// with `first` and the report with `second`.
fn two_calls(bin: &str, tag: &str, first: Behavior, second: Behavior) -> (Run, Server) {
    let server = Server::start(move |req| {
        let analysis = req.json()["messages"].to_string().contains("DATA");
        if analysis {
            first.clone()
        } else {
            second.clone()
        }
    });
    let run = run_single(bin, tag, "single_agent", &server.base_url(), "ollama");
    (run, server)
}

fn analysis_reply() -> Vec<String> {
    ollama_lines(&["FINDINGS:\n- a\nRECOMMENDATIONS:\n- b\n"], 5)
}

pub fn keep_alive_reuses_one_connection(bin: &str, runtime: &str) {
    let (run, server) = two_calls(
        bin,
        "keepalive",
        Behavior::stream(analysis_reply(), GAP),
        Behavior::stream(ollama_lines(&["# Report"], 2), GAP),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    assert_eq!(server.connections(), 1);
    let reqs = server.requests();
    assert_eq!(
        reqs.iter().map(|r| r.connection).collect::<Vec<_>>(),
        [1, 1]
    );
    let (c0, c1) = (run.call(0), run.call(1));
    assert!(c0["t_connect_start_ns"].as_u64().is_some());
    assert!(c0["t_connect_end_ns"].as_u64().is_some());
    // The reused connection: no connect readings, and the send stamp is the
    // write of this call's own request.
    assert_eq!(c1["t_connect_start_ns"], Value::Null);
    assert_eq!(c1["t_connect_end_ns"], Value::Null);
    let send = c1["t_send_ns"].as_u64().unwrap();
    assert!(c0["t_end_ns"].as_u64().unwrap() <= send);
    assert!(c1["t_start_ns"].as_u64().unwrap() <= send);
    assert!(
        send <= reqs[1].t_received_ns,
        "sent after the server had it"
    );
    assert!(!run.stderr.contains("once more"), "{}", run.stderr);
}

pub fn closed_kept_alive_connection_is_resent_once(bin: &str, runtime: &str) {
    let (run, server) = two_calls(
        bin,
        "resend",
        Behavior::stream_then_close(analysis_reply(), GAP),
        Behavior::stream(ollama_lines(&["# Report"], 2), GAP),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    // The report's first attempt met connection 1 closing, unanswered (the
    // server never read it); it was sent once more, on connection 2.
    assert_eq!(server.connections(), 2);
    let reqs = server.requests();
    assert_eq!(
        reqs.iter().map(|r| r.connection).collect::<Vec<_>>(),
        [1, 2]
    );
    let c1 = run.call(1);
    assert_eq!(c1["success"], true);
    assert_eq!(c1["text"], "# Report");
    // The record is the resend's: its connect and its send.
    let connected = c1["t_connect_end_ns"].as_u64().unwrap();
    let send = c1["t_send_ns"].as_u64().unwrap();
    assert!(c1["t_connect_start_ns"].as_u64().unwrap() <= connected);
    assert!(connected <= send && send <= reqs[1].t_received_ns);
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("once more"),
        "{}",
        run.stderr
    );
}

pub fn kept_alive_connection_closed_between_calls(bin: &str, runtime: &str) {
    // Whether the agent sees the close before its next call or its request
    // meets it (then the one resend), the call succeeds on a new connection.
    let hang_up = |pieces: Vec<String>| Behavior::ReplyThenHangUp {
        pieces: pieces.into_iter().map(|p| (GAP, p.into_bytes())).collect(),
    };
    let (run, server) = two_calls(
        bin,
        "closed-between",
        hang_up(analysis_reply()),
        hang_up(ollama_lines(&["# Report"], 2)),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_well_formed(&run, runtime);
    assert_eq!(server.connections(), 2);
    let reqs = server.requests();
    assert_eq!(
        reqs.iter().map(|r| r.connection).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(run.call(1)["t_connect_end_ns"].as_u64().is_some());
}

pub fn no_resend_after_a_response_byte(bin: &str, runtime: &str) {
    for (tag, raw, kind) in [
        ("half-status", &b"HTTP/1.1 2"[..], "connect"),
        (
            "cut-body",
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mes"[..],
            "incomplete_stream",
        ),
    ] {
        let (run, server) = two_calls(
            bin,
            tag,
            Behavior::stream(analysis_reply(), GAP),
            Behavior::RawThenClose(raw.to_vec()),
        );
        assert_well_formed(&run, runtime);
        assert_eq!(run.call(1)["error_kind"], kind, "{tag}: {}", run.call(1));
        assert_eq!(server.requests().len(), 2, "{tag}: resent");
        assert_eq!(server.connections(), 1, "{tag}");
        assert!(!run.stderr.contains("once more"), "{tag}: {}", run.stderr);
    }
}

// ------------------------------------------------------- per runtime

macro_rules! runtime_tests {
    ($module:ident, $feature:literal, $runtime:literal, $bin:literal) => {
        #[cfg(feature = $feature)]
        mod $module {
            const BIN: &str = env!($bin);
            const RUNTIME: &str = $runtime;

            #[test]
            fn single_inference_ollama() {
                super::single_inference_ollama(BIN, RUNTIME);
            }
            #[test]
            fn single_agent_openai() {
                super::single_agent_openai(BIN, RUNTIME);
            }
            #[test]
            fn http_500() {
                super::http_500(BIN, RUNTIME);
            }
            #[test]
            fn connection_refused() {
                super::connection_refused(BIN, RUNTIME);
            }
            #[test]
            fn server_hangs_up() {
                super::server_hangs_up(BIN, RUNTIME);
            }
            #[test]
            fn timeout() {
                super::timeout(BIN, RUNTIME);
            }
            #[test]
            fn timeout_mid_stream_keeps_partial_text() {
                super::timeout_mid_stream_keeps_partial_text(BIN, RUNTIME);
            }
            #[test]
            fn malformed_stream() {
                super::malformed_stream(BIN, RUNTIME);
            }
            #[test]
            fn incomplete_and_empty_streams() {
                super::incomplete_and_empty_streams(BIN, RUNTIME);
            }
            #[test]
            fn multi_agent_overlap() {
                super::multi_agent_overlap(BIN, RUNTIME);
            }
            #[test]
            fn one_failing_agent_does_not_stop_the_other() {
                super::one_failing_agent_does_not_stop_the_other(BIN, RUNTIME);
            }
            #[test]
            fn bad_spec_exits_2() {
                super::bad_spec_exits_2(BIN, RUNTIME);
            }
            #[test]
            fn unwritable_records_exit_3() {
                super::unwritable_records_exit_3(BIN, RUNTIME);
            }
            #[test]
            fn rebuffering() {
                super::rebuffering(BIN, RUNTIME);
            }
            #[test]
            fn keep_alive_reuses_one_connection() {
                super::keep_alive_reuses_one_connection(BIN, RUNTIME);
            }
            #[test]
            fn closed_kept_alive_connection_is_resent_once() {
                super::closed_kept_alive_connection_is_resent_once(BIN, RUNTIME);
            }
            #[test]
            fn kept_alive_connection_closed_between_calls() {
                super::kept_alive_connection_closed_between_calls(BIN, RUNTIME);
            }
            #[test]
            fn no_resend_after_a_response_byte() {
                super::no_resend_after_a_response_byte(BIN, RUNTIME);
            }
        }
    };
}

runtime_tests!(tokio, "tokio", "tokio", "CARGO_BIN_EXE_cfexp-agent-tokio");
runtime_tests!(
    tokio_localset,
    "tokio_localset",
    "tokio_localset",
    "CARGO_BIN_EXE_cfexp-agent-tokio_localset"
);
runtime_tests!(smol, "smol", "smol", "CARGO_BIN_EXE_cfexp-agent-smol");
runtime_tests!(
    smol_1kb,
    "smol_1kb",
    "smol_1kb",
    "CARGO_BIN_EXE_cfexp-agent-smol_1kb"
);
runtime_tests!(
    async_std,
    "async_std",
    "async_std",
    "CARGO_BIN_EXE_cfexp-agent-async_std"
);
