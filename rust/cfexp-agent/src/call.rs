//! One LLM call: request, stream, timing, and its `call` record. A failed
//! call never errors out of here: it is a record with an `error_kind`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::monotonic_ns;
use crate::http::{BodyStream, HttpClient, PostRequest, WireClock};
use crate::records::CallRecord;
use crate::request;
use crate::runtime::{Runtime, with_timeout};
use crate::spec::{AgentSpec, Endpoint};
use crate::stream::{Failure, FailureKind, Rebuffer, StreamData, StreamParser};
use crate::workflow::render::{Message, prompt_chars};

/// Most bytes of an error response body kept for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Characters of an error response body put in the record's `error`.
const ERROR_BODY_CHARS: usize = 500;

/// Everything one call needs.
#[derive(Debug)]
pub struct CallPlan<'a> {
    /// The calling agent.
    pub agent: &'a AgentSpec,
    /// Its parsed `base_url`.
    pub endpoint: &'a Endpoint,
    /// 0, 1, … within the agent.
    pub call_index: u32,
    /// `single_inference`, `analysis` or `report`.
    pub step: &'a str,
    /// The rendered messages (nonce included).
    pub messages: &'a [Message],
    /// The cache-defeating prefix that starts `messages[0]`, if any.
    pub prompt_nonce: Option<&'a str>,
    /// The generation cap.
    pub num_predict: u32,
    /// Connect + whole stream.
    pub timeout: Duration,
    /// Re-buffer the body into pieces of at least this many bytes.
    pub rebuffer_min_bytes: Option<usize>,
}

/// What an exchange left behind, also when it was cancelled by the timeout.
struct Exchange {
    http_status: Option<u16>,
    t_first_byte_ns: Option<u64>,
    parser: StreamParser,
    /// A failure outside the stream's content (connect, status, transport).
    failure: Option<Failure>,
}

/// Makes one call over the agent's `connection` and returns its record.
/// The connection is kept for the agent's next call only if this call
/// succeeded and read its body to the end.
pub async fn perform<C: HttpClient, R: Runtime>(
    client: &C,
    connection: &mut C::Connection,
    runtime: &R,
    plan: &CallPlan<'_>,
) -> CallRecord {
    let agent = plan.agent;
    let body = request::build(
        agent.api,
        &agent.model,
        plan.messages,
        agent.options.as_ref(),
        plan.num_predict,
    );
    let req = PostRequest {
        endpoint: plan.endpoint.clone(),
        headers: request::headers(agent.api, agent.api_key.as_ref().map(|k| k.expose())),
        body: Bytes::from(body.json),
    };
    let mut ex = Exchange {
        http_status: None,
        t_first_byte_ns: None,
        parser: StreamParser::new(agent.api),
        failure: None,
    };

    let clock = Arc::new(WireClock::default());
    let t_start_ns = monotonic_ns();
    let outcome = with_timeout(
        exchange(
            client,
            connection,
            &req,
            &clock,
            plan.rebuffer_min_bytes,
            &mut ex,
        ),
        runtime.sleep(plan.timeout),
    )
    .await;
    let t_end_ns = monotonic_ns();
    // A stream whose final message arrived is complete even if the timer
    // fired while the rest of its body was being drained: that only costs
    // the connection.
    let finished = outcome.is_some() || (ex.failure.is_none() && ex.parser.is_complete());
    let ended_body = outcome.flatten();

    let (data, failure) = if !finished {
        let msg = format!(
            "no complete response within <call_timeout_s={}>",
            plan.timeout.as_secs_f64()
        );
        (
            ex.parser.data().clone(),
            Some(Failure::new(FailureKind::Timeout, msg)),
        )
    } else if let Some(f) = ex.failure {
        (ex.parser.data().clone(), Some(f))
    } else {
        let outcome = ex.parser.finish();
        (outcome.data, outcome.failure)
    };
    if let (None, Some(body)) = (&failure, ended_body) {
        client.keep(connection, body);
    }
    record(
        plan,
        body.options_sent,
        ex.http_status,
        CallTimes {
            t_start_ns,
            t_connect_start_ns: clock.connect_start_ns(),
            t_connect_end_ns: clock.connect_end_ns(),
            t_send_ns: clock.send_ns(),
        },
        ex.t_first_byte_ns,
        t_end_ns,
        data,
        failure,
    )
}

/// Sends the request and reads the response into `ex`, until the body ends
/// or the stream fails. Returns the body if it was read to its end with a
/// 2xx status (its connection may then serve the next call), else `None`.
async fn exchange<C: HttpClient>(
    client: &C,
    connection: &mut C::Connection,
    req: &PostRequest,
    clock: &Arc<WireClock>,
    rebuffer_min_bytes: Option<usize>,
    ex: &mut Exchange,
) -> Option<C::Body> {
    let response = match client.post(connection, req, clock).await {
        Ok(r) => r,
        Err(e) => {
            // No status line: as far as the record goes, the connection
            // failed (`http_status` stays null), whether the TCP connect
            // failed or the server hung up before answering.
            ex.failure = Some(Failure::new(FailureKind::Connect, e.message));
            return None;
        }
    };
    ex.http_status = Some(response.status);
    let mut body = response.body;

    if !(200..300).contains(&response.status) {
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = body.next_chunk().await {
            ex.t_first_byte_ns.get_or_insert_with(monotonic_ns);
            text.extend_from_slice(&chunk);
            if text.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
        let text: String = String::from_utf8_lossy(&text)
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        let message = if text.is_empty() {
            format!("HTTP {} with an empty body", response.status)
        } else {
            text
        };
        ex.failure = Some(Failure::new(FailureKind::HttpStatus, message));
        return None;
    }

    let mut rebuffer = rebuffer_min_bytes.map(Rebuffer::new);
    while let Some(chunk) = body.next_chunk().await {
        let now = monotonic_ns();
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                if !ex.parser.is_complete() {
                    ex.failure = Some(Failure::new(FailureKind::IncompleteStream, e.message));
                }
                return None;
            }
        };
        if bytes.is_empty() {
            continue;
        }
        ex.t_first_byte_ns.get_or_insert(now);
        match &mut rebuffer {
            None => ex.parser.feed(&bytes, now),
            Some(r) => {
                if let Some(piece) = r.push(&bytes) {
                    ex.parser.feed(&piece, now);
                }
            }
        }
        if ex.parser.stopped() {
            // The final message or a failure: nothing after it counts. After
            // a failure the body is dropped, closing the connection; after
            // the final message the rest (normally just the body's end) is
            // read, so the connection can serve the agent's next call.
            if !ex.parser.is_complete() {
                return None;
            }
            return drain(body).await;
        }
    }
    if let Some(piece) = rebuffer.as_mut().and_then(Rebuffer::finish) {
        ex.parser.feed(&piece, monotonic_ns());
    }
    Some(body)
}

/// Reads the body to its end: the body, or `None` if it broke off.
async fn drain<B: BodyStream>(mut body: B) -> Option<B> {
    while let Some(chunk) = body.next_chunk().await {
        chunk.ok()?;
    }
    Some(body)
}

/// The clock readings before the response: the call's start, its connect,
/// its request's first write.
struct CallTimes {
    t_start_ns: u64,
    t_connect_start_ns: Option<u64>,
    t_connect_end_ns: Option<u64>,
    t_send_ns: Option<u64>,
}

#[allow(clippy::too_many_arguments)] // one record, assembled in one place
fn record(
    plan: &CallPlan<'_>,
    options_sent: serde_json::Map<String, serde_json::Value>,
    http_status: Option<u16>,
    times: CallTimes,
    t_first_byte_ns: Option<u64>,
    t_end_ns: u64,
    data: StreamData,
    failure: Option<Failure>,
) -> CallRecord {
    let agent = plan.agent;
    let (error_kind, error) = match failure {
        Some(f) => (Some(f.kind.as_str().to_owned()), Some(f.message)),
        None => (None, None),
    };
    CallRecord {
        agent: agent.name.clone(),
        call_index: plan.call_index,
        step: plan.step.to_owned(),
        api: agent.api.as_str().to_owned(),
        base_url: agent.base_url.clone(),
        instance: agent.instance,
        model: agent.model.clone(),
        options: Some(options_sent),
        prompt_chars: prompt_chars(plan.messages),
        prompt_nonce: plan.prompt_nonce.map(str::to_owned),
        success: error_kind.is_none(),
        error_kind,
        error,
        http_status,
        t_start_ns: times.t_start_ns,
        t_connect_start_ns: times.t_connect_start_ns,
        t_connect_end_ns: times.t_connect_end_ns,
        t_send_ns: times.t_send_ns,
        t_first_byte_ns,
        t_first_token_ns: data.chunk_times_ns.first().copied(),
        t_last_token_ns: data.chunk_times_ns.last().copied(),
        t_end_ns,
        content_chunks: data.chunk_times_ns.len() as u64,
        chunk_times_ns: data.chunk_times_ns,
        server_load_duration_ns: data.server_load_duration_ns,
        server_prompt_eval_count: data.server_prompt_eval_count,
        server_prompt_eval_duration_ns: data.server_prompt_eval_duration_ns,
        server_eval_count: data.server_eval_count,
        server_eval_duration_ns: data.server_eval_duration_ns,
        server_total_duration_ns: data.server_total_duration_ns,
        server_prompt_tokens: data.server_prompt_tokens,
        server_completion_tokens: data.server_completion_tokens,
        server_cached_tokens: data.server_cached_tokens,
        server_timings_prompt_n: data.server_timings_prompt_n,
        server_timings_cache_n: data.server_timings_cache_n,
        server_timings_prompt_ms: data.server_timings_prompt_ms,
        server_timings_predicted_n: data.server_timings_predicted_n,
        server_timings_predicted_ms: data.server_timings_predicted_ms,
        server_prompt_truncated_tokens: data.server_prompt_truncated_tokens,
        finish_reason: data.finish_reason,
        text: data.text,
    }
}
