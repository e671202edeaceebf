//! OpenAI's stream: server-sent events, one `data:` line per event (as LLM
//! servers send them), each a JSON chunk, ended by `data: [DONE]`.
//!
//! `:` comments and the `event`, `id`, `retry` fields are ignored; an
//! `error:` field (llama.cpp) is a stream error; any other line — such as a
//! bare JSON error body sent with status 200 — is malformed. Besides
//! `usage`, an event may carry llama.cpp's `timings` and cfexp's
//! `prompt_truncated_tokens` at its top level (llama-server puts `timings`
//! in its last event): read wherever they come, the last one wins.

use serde_json::Value;

use super::{
    Counter, LineError, LineEvent, content_of, error_message, extensions, int_of, object_of,
    parse_json, present, str_of,
};

/// Reads one (stripped, non-blank) SSE line.
pub(super) fn parse_line(line: &str) -> Result<LineEvent, LineError> {
    if line.starts_with(':') {
        return Ok(LineEvent::default()); // a comment
    }
    let (name, value) = line.split_once(':').unwrap_or((line, ""));
    let value = value.strip_prefix(' ').unwrap_or(value);
    match name {
        "event" | "id" | "retry" => return Ok(LineEvent::default()),
        "error" => return Err(LineError::Stream(value.to_owned())),
        "data" => {}
        _ => return Err(LineError::Bad("not an SSE field line".to_owned())),
    }
    let payload = value.trim_ascii();
    if payload.is_empty() {
        return Ok(LineEvent::default());
    }
    if payload == "[DONE]" {
        return Ok(LineEvent {
            end: true,
            ..LineEvent::default()
        });
    }
    let Value::Object(obj) = parse_json(payload)? else {
        return Err(LineError::Bad("event data is not a JSON object".to_owned()));
    };
    if let Some(error) = present(&obj, "error") {
        return Err(LineError::Stream(error_message(error)));
    }
    let mut event = LineEvent::default();
    match present(&obj, "choices") {
        None => {}
        Some(Value::Array(choices)) => match choices.first() {
            None => {}
            Some(Value::Object(first)) => {
                // Chat completions stream `delta.content`, completions `text`.
                event.content = match present(first, "delta") {
                    Some(Value::Object(delta)) => content_of(delta, "content")?,
                    Some(_) => return Err(LineError::Bad("'delta' is not an object".to_owned())),
                    None => content_of(first, "text")?,
                };
                event.finish_reason = str_of(first, "finish_reason");
            }
            Some(_) => return Err(LineError::Bad("'choices[0]' is not an object".to_owned())),
        },
        Some(_) => return Err(LineError::Bad("'choices' is not a list".to_owned())),
    }
    if let Some(usage) = object_of(&obj, "usage")? {
        if let Some(prompt) = int_of(usage, "prompt_tokens") {
            event.counters.push((Counter::PromptTokens, prompt));
        }
        if let Some(completion) = int_of(usage, "completion_tokens") {
            event.counters.push((Counter::CompletionTokens, completion));
        }
        if let Some(details) = object_of(usage, "prompt_tokens_details")? {
            if let Some(cached) = int_of(details, "cached_tokens") {
                event.counters.push((Counter::CachedTokens, cached));
            }
        }
    }
    extensions(&obj, &mut event)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::super::{FailureKind, StreamOutcome, StreamParser};
    use crate::spec::Api;

    fn parse(chunks: &[&str]) -> StreamOutcome {
        let mut p = StreamParser::new(Api::Openai);
        for (i, c) in chunks.iter().enumerate() {
            p.feed(c.as_bytes(), i as u64 * 10);
        }
        p.finish()
    }

    fn chunk(content: &str) -> String {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    #[test]
    fn a_complete_stream_with_usage() {
        let out = parse(&[
            &format!("{}{}", chunk("Hel"), chunk("")),
            &chunk("lo"),
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\r\n\r\n: ping\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(out.failure, None);
        assert_eq!(out.data.text, "Hello");
        assert_eq!(out.data.chunk_times_ns, [0, 10]);
        assert_eq!(out.data.server_completion_tokens, Some(2));
        assert_eq!(out.data.server_prompt_tokens, Some(7));
        assert_eq!(out.data.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn error_kinds() {
        let kind = |chunks: &[&str]| parse(chunks).failure.map(|f| f.kind);
        assert_eq!(kind(&[&chunk("a")]), Some(FailureKind::IncompleteStream));
        assert_eq!(
            kind(&["data: [DONE]\n\n"]),
            Some(FailureKind::EmptyResponse)
        );
        assert_eq!(
            kind(&[
                &chunk("a"),
                "data: {\"error\":{\"message\":\"overloaded\"}}\n\n"
            ]),
            Some(FailureKind::StreamError)
        );
        assert_eq!(kind(&["error: boom\n"]), Some(FailureKind::StreamError));
        assert_eq!(
            kind(&["data: {oops\n\n"]),
            Some(FailureKind::MalformedStream)
        );
        assert_eq!(
            kind(&["data: {\"choices\":{}}\n\n"]),
            Some(FailureKind::MalformedStream)
        );
        assert_eq!(
            kind(&["{\"choices\":[]}\n"]),
            Some(FailureKind::MalformedStream)
        );
        let out = parse(&[
            &chunk("a"),
            "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        ]);
        assert_eq!(out.failure.unwrap().message, "overloaded");
        assert_eq!(out.data.text, "a");
        assert_eq!(
            kind(&["data: {\"choices\":[],\"usage\":{\"prompt_tokens_details\":3}}\n\n"]),
            Some(FailureKind::MalformedStream)
        );
    }

    #[test]
    fn llama_server_timings_and_cached_tokens() {
        let out = parse(&[
            &chunk("a"),
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":8}},\"timings\":{\"cache_n\":8,\"prompt_n\":4,\"prompt_ms\":2.25,\"predicted_n\":1,\"predicted_ms\":0.001}}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(out.failure, None);
        let d = &out.data;
        assert_eq!(
            (d.server_prompt_tokens, d.server_cached_tokens),
            (Some(12), Some(8))
        );
        assert_eq!(
            (d.server_timings_prompt_n, d.server_timings_cache_n),
            (Some(4), Some(8))
        );
        assert_eq!(d.server_timings_prompt_ms, Some(2.25));
        assert_eq!(d.server_timings_predicted_ms, Some(0.001));
        assert_eq!(d.server_prompt_truncated_tokens, None);
    }
}
