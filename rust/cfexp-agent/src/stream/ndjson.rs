//! Ollama's stream: one JSON object per line; the last has `done: true` and
//! the server's counters (and, from cfexp's own servers, llama.cpp's
//! `timings` and `prompt_truncated_tokens`; a real Ollama sends neither).

use serde_json::Value;

use super::{
    Counter, LineError, LineEvent, content_of, error_message, extensions, int_of, parse_json,
    present, str_of,
};

/// Ollama's final-object counters, by wire name.
const COUNTERS: [(&str, Counter); 6] = [
    ("load_duration", Counter::LoadDuration),
    ("prompt_eval_count", Counter::PromptEvalCount),
    ("prompt_eval_duration", Counter::PromptEvalDuration),
    ("eval_count", Counter::EvalCount),
    ("eval_duration", Counter::EvalDuration),
    ("total_duration", Counter::TotalDuration),
];

/// Reads one (stripped, non-blank) NDJSON line.
pub(super) fn parse_line(line: &str) -> Result<LineEvent, LineError> {
    let Value::Object(obj) = parse_json(line)? else {
        return Err(LineError::Bad("line is not a JSON object".to_owned()));
    };
    if let Some(error) = present(&obj, "error") {
        return Err(LineError::Stream(error_message(error)));
    }
    // `/api/chat` streams `message.content`, `/api/generate` streams `response`.
    let content = match present(&obj, "message") {
        Some(Value::Object(message)) => content_of(message, "content")?,
        Some(_) => return Err(LineError::Bad("'message' is not an object".to_owned())),
        None => content_of(&obj, "response")?,
    };
    let end = match obj.get("done") {
        None => false,
        Some(Value::Bool(done)) => *done,
        Some(_) => return Err(LineError::Bad("'done' is not a boolean".to_owned())),
    };
    let mut event = LineEvent {
        content,
        end,
        ..LineEvent::default()
    };
    if end {
        for (wire, counter) in COUNTERS {
            if let Some(value) = int_of(&obj, wire) {
                event.counters.push((counter, value));
            }
        }
        extensions(&obj, &mut event)?;
        event.finish_reason = str_of(&obj, "done_reason");
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::super::{FailureKind, StreamOutcome, StreamParser};
    use crate::spec::Api;

    fn parse(chunks: &[&str]) -> StreamOutcome {
        let mut p = StreamParser::new(Api::Ollama);
        for (i, c) in chunks.iter().enumerate() {
            p.feed(c.as_bytes(), i as u64 * 10);
        }
        p.finish()
    }

    const FINAL: &str = "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":9,\"load_duration\":1,\"prompt_eval_count\":3,\"prompt_eval_duration\":2,\"eval_count\":2,\"eval_duration\":5}\n";

    #[test]
    fn a_complete_stream() {
        let out = parse(&[
            "{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"message\":{\"content\":\"\"},\"done\":false}\n",
            "{\"message\":{\"content\":\"lo\"},\"done\":false}\n",
            FINAL,
        ]);
        assert_eq!(out.failure, None);
        assert_eq!(out.data.text, "Hello");
        assert_eq!(out.data.chunk_times_ns, [0, 10]);
        assert_eq!(out.data.server_eval_count, Some(2));
        assert_eq!(out.data.server_load_duration_ns, Some(1));
        assert_eq!(out.data.server_total_duration_ns, Some(9));
        assert_eq!(out.data.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn error_kinds() {
        let kind = |chunks: &[&str]| parse(chunks).failure.map(|f| f.kind);
        assert_eq!(
            kind(&["{\"message\":{\"content\":\"a\"},\"done\":false}\n"]),
            Some(FailureKind::IncompleteStream)
        );
        assert_eq!(kind(&[FINAL]), Some(FailureKind::EmptyResponse));
        assert_eq!(
            kind(&["{\"error\":\"model not found\"}\n"]),
            Some(FailureKind::StreamError)
        );
        assert_eq!(
            kind(&["{\"message\":{\"content\":\"a\"}}\nnot json\n", FINAL]),
            Some(FailureKind::MalformedStream)
        );
        assert_eq!(kind(&["[1,2]\n"]), Some(FailureKind::MalformedStream));
        assert_eq!(
            kind(&["{\"message\":{\"content\":5}}\n"]),
            Some(FailureKind::MalformedStream)
        );
        assert_eq!(
            kind(&["{\"response\":\"a\",\"done\":null}\n"]),
            Some(FailureKind::MalformedStream)
        );
    }

    #[test]
    fn non_integer_counters_are_ignored() {
        let out =
            parse(&["{\"response\":\"x\",\"done\":true,\"eval_count\":2.5,\"done_reason\":7}\n"]);
        assert_eq!(out.failure, None);
        assert_eq!(out.data.server_eval_count, None);
        assert_eq!(out.data.finish_reason, None);
    }

    #[test]
    fn timings_and_truncation_come_from_the_final_object_only() {
        let out = parse(&[
            "{\"response\":\"x\",\"done\":false,\"timings\":{\"prompt_n\":9},\"prompt_truncated_tokens\":4}\n",
            "{\"response\":\"\",\"done\":true,\"timings\":{\"prompt_n\":3,\"cache_n\":7,\"prompt_ms\":1.5,\"predicted_n\":2,\"predicted_ms\":4},\"prompt_truncated_tokens\":0}\n",
        ]);
        assert_eq!(out.failure, None);
        let d = &out.data;
        assert_eq!(
            (
                d.server_timings_prompt_n,
                d.server_timings_cache_n,
                d.server_timings_predicted_n
            ),
            (Some(3), Some(7), Some(2))
        );
        assert_eq!(d.server_timings_prompt_ms, Some(1.5));
        assert_eq!(d.server_timings_predicted_ms, Some(4.0));
        assert_eq!(d.server_prompt_truncated_tokens, Some(0));
        let bad = parse(&["{\"response\":\"x\",\"done\":true,\"timings\":[1]}\n"]);
        assert_eq!(
            bad.failure.map(|f| f.kind),
            Some(FailureKind::MalformedStream)
        );
    }
}
