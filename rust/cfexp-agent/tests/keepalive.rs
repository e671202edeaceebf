//! Keep-alive at the level of one agent's calls: `call::perform` with the
//! real hyper client (on async-std, whose runtime needs no setup), call
//! after call over one `HyperConnection`, against the scripted server.
//! Which calls hand their connection on to the next is checked through the
//! server's connection numbers; e2e.rs covers whole runs on every runtime.

#![cfg(feature = "async_std")]

mod common;

use std::time::Duration;

use cfexp_agent::call::{self, CallPlan};
use cfexp_agent::hyper_client::{HyperClient, HyperConnection};
use cfexp_agent::records::CallRecord;
use cfexp_agent::rt::async_std_rt::AsyncStdRuntime;
use cfexp_agent::spec::{AgentSpec, Api, Endpoint};
use cfexp_agent::workflow::render::Message;
use common::{Behavior, Server, ollama_lines};
use serde_json::json;

const GAP: Duration = Duration::from_millis(2);

/// One call per behaviour, in order, over one agent's connection.
fn calls(behaviors: Vec<Behavior>, timeout: Duration) -> (Vec<CallRecord>, Server) {
    let count = behaviors.len() as u32;
    let queue = std::sync::Mutex::new(behaviors.into_iter());
    let server = Server::start(move |_| queue.lock().unwrap().next().expect("a behaviour"));
    let agent: AgentSpec = serde_json::from_value(json!({
        "name": "agent_0", "persona": "default", "base_url": server.base_url(),
        "api": "ollama", "model": "m", "options": null, "instance": 0,
    }))
    .unwrap();
    let endpoint = Endpoint::parse(&agent.base_url, Api::Ollama).unwrap();
    let messages = [Message {
        role: "user",
        content: "hi".to_owned(),
    }];
    let client = HyperClient::new(AsyncStdRuntime, "async_std");
    let mut connection = HyperConnection::default();
    let records = async_std::task::block_on(async {
        let mut records = Vec::new();
        for call_index in 0..count {
            let plan = CallPlan {
                agent: &agent,
                endpoint: &endpoint,
                call_index,
                step: "single_inference",
                messages: &messages,
                prompt_nonce: None,
                num_predict: 8,
                timeout,
                rebuffer_min_bytes: None,
            };
            records.push(call::perform(&client, &mut connection, &AsyncStdRuntime, &plan).await);
        }
        records
    });
    (records, server)
}

fn ok() -> Behavior {
    Behavior::stream(ollama_lines(&["fine"], 1), GAP)
}

fn connections(server: &Server) -> Vec<usize> {
    server.requests().iter().map(|r| r.connection).collect()
}

#[test]
fn a_successful_call_hands_its_connection_to_the_next() {
    let (records, server) = calls(vec![ok(), ok()], Duration::from_secs(10));
    assert!(records.iter().all(|r| r.success), "{records:?}");
    assert_eq!(connections(&server), [1, 1]);
    assert!(records[0].t_connect_start_ns.is_some());
    assert_eq!(records[1].t_connect_start_ns, None);
    assert_eq!(records[1].t_connect_end_ns, None);
}

#[test]
fn a_failed_calls_connection_is_not_reused() {
    let cut = Behavior::Reply {
        status: 200,
        pieces: vec![(
            GAP,
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n".to_vec(),
        )],
    };
    let failures = [
        ("error status", Behavior::status(503, "busy"), "http_status"),
        ("no final message", cut, "incomplete_stream"),
    ];
    for (case, failure, kind) in failures {
        let (records, server) = calls(vec![failure, ok()], Duration::from_secs(10));
        assert_eq!(records[0].error_kind.as_deref(), Some(kind), "{case}");
        assert!(records[1].success, "{case}: {:?}", records[1]);
        assert_eq!(connections(&server), [1, 2], "{case}");
        assert!(records[1].t_connect_start_ns.is_some(), "{case}");
    }
}

#[test]
fn a_timed_out_calls_connection_is_not_reused() {
    let slow = Behavior::stream(
        ollama_lines(&["a", "b", "c"], 3),
        Duration::from_millis(400),
    );
    let (records, server) = calls(vec![slow, ok()], Duration::from_millis(300));
    assert_eq!(records[0].error_kind.as_deref(), Some("timeout"));
    assert!(records[1].success, "{:?}", records[1]);
    assert_eq!(connections(&server), [1, 2]);
}
