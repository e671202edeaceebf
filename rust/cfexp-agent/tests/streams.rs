//! The shared golden stream fixtures (`tests/fixtures/streams/*.json`):
//! every file's chunks, split exactly at their boundaries, through the Rust
//! parser, compared with the expected outcome the Python agent is checked
//! against too. Chunk `i` arrives at time `i`, so `content_chunk_indices`
//! is `chunk_times_ns`.

mod common;

use cfexp_agent::spec::Api;
use cfexp_agent::stream::{Rebuffer, StreamOutcome, StreamParser};
use serde_json::{Value, json};

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for group in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            acc |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

struct Fixture {
    name: String,
    api: Api,
    chunks: Vec<Vec<u8>>,
    expected: Value,
}

fn load() -> Vec<Fixture> {
    common::fixture_files("streams")
        .into_iter()
        .map(|path| {
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let api = match doc["api"].as_str() {
                Some("ollama") => Api::Ollama,
                Some("openai") => Api::Openai,
                other => panic!("{}: bad api {other:?}", path.display()),
            };
            let chunks = if let Some(b64) = doc.get("chunks_base64") {
                b64.as_array()
                    .unwrap()
                    .iter()
                    .map(|c| base64_decode(c.as_str().unwrap()))
                    .collect()
            } else {
                doc["chunks"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: no chunks", path.display()))
                    .iter()
                    .map(|c| c.as_str().unwrap().as_bytes().to_vec())
                    .collect()
            };
            Fixture {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                api,
                chunks,
                expected: doc["expected"].clone(),
            }
        })
        .collect()
}

fn parse(api: Api, chunks: &[Vec<u8>]) -> StreamOutcome {
    let mut parser = StreamParser::new(api);
    for (i, chunk) in chunks.iter().enumerate() {
        parser.feed(chunk, i as u64);
    }
    parser.finish()
}

/// The outcome as the fixture's `expected` object spells it.
fn as_expected(out: &StreamOutcome) -> Value {
    let d = &out.data;
    json!({
        "success": out.failure.is_none(),
        "error_kind": out.failure.as_ref().map(|f| f.kind.as_str()),
        "text": d.text,
        "content_chunks": d.chunk_times_ns.len(),
        "content_chunk_indices": d.chunk_times_ns,
        "finish_reason": d.finish_reason,
        "server_load_duration_ns": d.server_load_duration_ns,
        "server_prompt_eval_count": d.server_prompt_eval_count,
        "server_prompt_eval_duration_ns": d.server_prompt_eval_duration_ns,
        "server_eval_count": d.server_eval_count,
        "server_eval_duration_ns": d.server_eval_duration_ns,
        "server_total_duration_ns": d.server_total_duration_ns,
        "server_prompt_tokens": d.server_prompt_tokens,
        "server_completion_tokens": d.server_completion_tokens,
        "server_cached_tokens": d.server_cached_tokens,
        "server_timings_prompt_n": d.server_timings_prompt_n,
        "server_timings_cache_n": d.server_timings_cache_n,
        "server_timings_prompt_ms": d.server_timings_prompt_ms,
        "server_timings_predicted_n": d.server_timings_predicted_n,
        "server_timings_predicted_ms": d.server_timings_predicted_ms,
        "server_prompt_truncated_tokens": d.server_prompt_truncated_tokens,
    })
}

#[test]
fn golden_stream_fixtures() {
    let mut failures = Vec::new();
    let fixtures = load();
    for fx in &fixtures {
        let got = as_expected(&parse(fx.api, &fx.chunks));
        let expected = fx.expected.as_object().expect("expected is an object");
        // Every field is listed in every fixture, so none is checked by omission.
        let mut listed: Vec<&String> = expected.keys().collect();
        let mut compared: Vec<&String> = got.as_object().unwrap().keys().collect();
        listed.sort();
        compared.sort();
        assert_eq!(listed, compared, "{}: the fields listed", fx.name);
        for (key, want) in expected {
            let have = &got[key];
            // Milliseconds are floats: 12 and 12.0 are the same reading.
            let same = match (have.as_f64(), want.as_f64()) {
                (Some(h), Some(w)) if key.ends_with("_ms") => h == w,
                _ => have == want,
            };
            if !same {
                failures.push(format!("{}: {key}: expected {want}, got {have}", fx.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} stream fixtures checked", fixtures.len());
}

/// Any split of a fixture's body gives the same text, counters and outcome
/// (only the times may differ): one byte at a time, and all at once.
#[test]
fn fixtures_do_not_depend_on_chunk_boundaries() {
    for fx in load() {
        let whole: Vec<u8> = fx.chunks.concat();
        let reference = as_expected(&parse(fx.api, &fx.chunks));
        for split in [
            vec![whole.clone()],
            whole.iter().map(|&b| vec![b]).collect::<Vec<_>>(),
        ] {
            let mut got = as_expected(&parse(fx.api, &split));
            let mut want = reference.clone();
            for v in [&mut got, &mut want] {
                v.as_object_mut().unwrap().remove("content_chunk_indices");
            }
            assert_eq!(
                got, want,
                "{}: outcome depends on chunk boundaries",
                fx.name
            );
        }
    }
}

/// The smol_1kb variant's re-buffering changes only when content arrives,
/// never what the stream says.
#[test]
fn rebuffered_fixtures_parse_the_same() {
    for fx in load() {
        let mut rebuffer = Rebuffer::new(1024);
        let mut pieces: Vec<Vec<u8>> = fx.chunks.iter().filter_map(|c| rebuffer.push(c)).collect();
        pieces.extend(rebuffer.finish());
        assert!(
            pieces.iter().rev().skip(1).all(|p| p.len() >= 1024),
            "{}",
            fx.name
        );
        let mut got = as_expected(&parse(fx.api, &pieces));
        let mut want = as_expected(&parse(fx.api, &fx.chunks));
        for v in [&mut got, &mut want] {
            v.as_object_mut().unwrap().remove("content_chunk_indices");
        }
        assert_eq!(got, want, "{}", fx.name);
    }
}
