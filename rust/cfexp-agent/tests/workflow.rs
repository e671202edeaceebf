//! The shared workflow fixtures (`tests/fixtures/workflow/`): the data
//! summary of the shipped corpus, analysis parsing, prompt rendering and
//! request bodies — the same expected outputs the Python agent is checked
//! against.

mod common;

use cfexp_agent::request;
use cfexp_agent::spec::{Api, nonce_text};
use cfexp_agent::workflow::data::{Data, PromptTemplate};
use cfexp_agent::workflow::ingest::{ingest, summary};
use cfexp_agent::workflow::parse::{format_items, parse_analysis};
use cfexp_agent::workflow::render::{Message, messages, prompt_chars};
use serde_json::{Map, Value, json};

fn cases(name: &str) -> Vec<Value> {
    let path = common::fixtures("workflow").join(name);
    let text =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Value> = serde_json::from_slice(&text).unwrap();
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    cases
}

#[test]
fn data_summary_of_the_shipped_corpus() {
    let expected =
        std::fs::read_to_string(common::fixtures("workflow").join("data_summary.txt")).unwrap();
    let data_dir = common::repo_root().join("cfexp/data");
    let data = Data::load(&data_dir).unwrap();
    let corpus = ingest(&data.corpus_dir).unwrap();
    assert_eq!(summary(&corpus), expected);
}

#[test]
fn shipped_data_files_load() {
    let data = Data::load(&common::repo_root().join("cfexp/data")).unwrap();
    for persona in ["default", "DataCollector", "InsightAgent"] {
        data.persona(persona).unwrap();
    }
}

#[test]
fn parse_cases() {
    for case in cases("parse_cases.json") {
        let got = parse_analysis(case["text"].as_str().unwrap());
        let what = case["description"].as_str().unwrap_or("?");
        assert_eq!(json!(got.findings), case["findings"], "findings: {what}");
        assert_eq!(
            json!(got.recommendations),
            case["recommendations"],
            "recommendations: {what}"
        );
    }
}

#[test]
fn render_cases() {
    for case in cases("render_cases.json") {
        let what = case["description"].as_str().unwrap_or("?");
        let prompt: PromptTemplate = serde_json::from_value(case["prompt"].clone()).unwrap();
        // Lists (findings, recommendations) render as their `- item` lines.
        let values: Vec<(String, String)> = case["values"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .map(|i| i.as_str().unwrap().to_owned())
                            .collect();
                        format_items(&items)
                    }
                    other => panic!("{what}: bad value {other}"),
                };
                (k.clone(), text)
            })
            .collect();
        let vars: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let nonce = match &case["nonce"] {
            Value::Null => None,
            n => Some(nonce_text(
                n["salt"].as_str().unwrap(),
                n["agent"].as_str().unwrap(),
                n["call_index"].as_u64().unwrap() as u32,
            )),
        };
        let msgs = messages(&prompt, &vars, nonce.as_deref());
        let got: Vec<Value> = msgs
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        assert_eq!(Value::Array(got), case["expected_messages"], "{what}");
        assert_eq!(
            json!(prompt_chars(&msgs)),
            case["expected_prompt_chars"],
            "{what}"
        );
    }
}

#[test]
fn request_cases() {
    for case in cases("request_cases.json") {
        let what = case["description"].as_str().unwrap_or("?");
        let api = match case["api"].as_str().unwrap() {
            "ollama" => Api::Ollama,
            "openai" => Api::Openai,
            other => panic!("{what}: bad api {other}"),
        };
        let msgs: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message {
                role: if m["role"] == "system" {
                    "system"
                } else {
                    "user"
                },
                content: m["content"].as_str().unwrap().to_owned(),
            })
            .collect();
        let options: Option<Map<String, Value>> = case["options"].as_object().cloned();
        let body = request::build(
            api,
            case["model"].as_str().unwrap(),
            &msgs,
            options.as_ref(),
            case["num_predict"].as_u64().unwrap() as u32,
        );
        let sent: Value = serde_json::from_slice(&body.json).unwrap();
        assert_eq!(sent, case["expected_body"], "body: {what}");
        assert_eq!(
            Value::Object(body.options_sent),
            case["expected_options_recorded"],
            "options: {what}"
        );
        assert_eq!(json!(api.path()), case["expected_path"], "path: {what}");
        let auth = request::authorization(api, case["api_key"].as_str());
        assert_eq!(
            json!(auth),
            case["expected_authorization"],
            "authorization: {what}"
        );
    }
}
