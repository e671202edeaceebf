//! The shared record fixture (`tests/fixtures/records/records.jsonl`): each
//! line, read into its record type and written again, gives the same bytes —
//! the same line the Python agent writes for the same values (field order,
//! floats in Python's notation, sorted option keys, the same escapes).

mod common;

use cfexp_agent::records::{
    AgentRecord, CallRecord, DoneRecord, IngestRecord, ReadyRecord, Record, to_line,
};
use serde_json::Value;

/// A record of the fixture: its `run_id` and the record without the common
/// fields.
fn record_of(line: &str) -> (String, Record) {
    let Value::Object(mut obj) = serde_json::from_str(line).expect("a JSON line") else {
        panic!("not an object: {line}");
    };
    assert_eq!(obj.remove("schema_version"), Some(Value::from(3)));
    let kind = obj.remove("kind").expect("kind");
    let run_id = obj.remove("run_id").expect("run_id");
    let body = Value::Object(obj);
    let record = match kind.as_str().expect("kind is a string") {
        // `ready` holds static strings (the agent's own constants).
        "ready" => {
            let leak = |v: &Value| -> &'static str {
                Box::leak(v.as_str().expect("a string").to_owned().into_boxed_str())
            };
            Record::Ready(ReadyRecord {
                language: leak(&body["language"]),
                runtime: leak(&body["runtime"]),
                agent_version: leak(&body["agent_version"]),
                t_ready_ns: body["t_ready_ns"].as_u64().expect("t_ready_ns"),
            })
        }
        "ingest" => Record::Ingest(serde_json::from_value::<IngestRecord>(body).unwrap()),
        "call" => Record::Call(serde_json::from_value::<CallRecord>(body).unwrap()),
        "agent" => Record::Agent(serde_json::from_value::<AgentRecord>(body).unwrap()),
        "done" => Record::Done(serde_json::from_value::<DoneRecord>(body).unwrap()),
        other => panic!("unknown kind {other}"),
    };
    (run_id.as_str().unwrap().to_owned(), record)
}

#[test]
fn records_are_written_byte_for_byte_as_the_fixture() {
    let path = common::fixtures("records").join("records.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kinds = Vec::new();
    for line in text.lines() {
        let (run_id, record) = record_of(line);
        kinds.push(record.kind());
        let written = String::from_utf8(to_line(&run_id, &record)).unwrap();
        assert_eq!(written, format!("{line}\n"));
    }
    for kind in ["ready", "ingest", "call", "agent", "done"] {
        assert!(kinds.contains(&kind), "the fixture has no {kind} record");
    }
}

#[test]
fn call_record_fields_are_in_the_documented_order() {
    let path = common::fixtures("records").join("records.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let call = text
        .lines()
        .find(|l| l.contains("\"kind\":\"call\""))
        .unwrap();
    let keys = common::keys_in_order(call);
    assert_eq!(keys[..3], ["schema_version", "kind", "run_id"]);
    assert_eq!(keys[3..], common::CALL_FIELDS);
}
