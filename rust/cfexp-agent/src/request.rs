//! The request body of one call, per API (docs/record-schema.md, section 1),
//! and the model options it sends — which the call record repeats exactly.

use serde_json::{Map, Value, json};

use crate::spec::Api;
use crate::workflow::render::Message;

/// Option keys that map to OpenAI body fields of the same name.
/// `num_gpu`/`num_ctx` are launch parameters there and are not sent.
const OPENAI_OPTIONS: [&str; 5] = ["temperature", "top_p", "top_k", "repeat_penalty", "seed"];

/// A serialized request body and the options it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBody {
    /// The JSON body.
    pub json: Vec<u8>,
    /// Exactly what was sent as model options: Ollama's `options` object, or
    /// the OpenAI option fields (`max_tokens` included).
    pub options_sent: Map<String, Value>,
}

/// Builds the body of a streaming chat request.
///
/// `num_predict` is sent with every call, even when `options` is `None`
/// (server defaults otherwise). Null-valued options are not sent.
pub fn build(
    api: Api,
    model: &str,
    messages: &[Message],
    options: Option<&Map<String, Value>>,
    num_predict: u32,
) -> RequestBody {
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect();
    let given = options.into_iter().flatten().filter(|(_, v)| !v.is_null());
    let (body, options_sent) = match api {
        Api::Ollama => {
            let mut sent: Map<String, Value> = given.map(|(k, v)| (k.clone(), v.clone())).collect();
            sent.insert("num_predict".into(), num_predict.into());
            let body = json!({
                "model": model,
                "messages": msgs,
                "stream": true,
                "options": sent,
            });
            (body, sent)
        }
        Api::Openai => {
            let mut sent: Map<String, Value> = given
                .filter(|(k, _)| OPENAI_OPTIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            sent.insert("max_tokens".into(), num_predict.into());
            let mut body = json!({
                "model": model,
                "messages": msgs,
                "stream": true,
                "stream_options": {"include_usage": true},
            });
            let obj = body.as_object_mut().expect("a JSON object literal");
            obj.extend(sent.clone());
            (body, sent)
        }
    };
    RequestBody {
        json: serde_json::to_vec(&body).expect("JSON values serialize"),
        options_sent,
    }
}

/// The `Authorization` header value: a bearer token for OpenAI-style
/// servers when the spec gives a key; Ollama never gets one.
pub fn authorization(api: Api, api_key: Option<&str>) -> Option<String> {
    match (api, api_key) {
        (Api::Openai, Some(key)) => Some(format!("Bearer {key}")),
        _ => None,
    }
}

/// The headers of a call besides `Host`, `Content-Type`, `User-Agent`.
pub fn headers(api: Api, api_key: Option<&str>) -> Vec<(&'static str, String)> {
    let accept = match api {
        Api::Ollama => "application/x-ndjson",
        Api::Openai => "text/event-stream",
    };
    let mut headers = vec![
        ("accept", accept.to_owned()),
        // Uncompressed, so a body byte's arrival is a network read.
        ("accept-encoding", "identity".to_owned()),
    ];
    if let Some(value) = authorization(api, api_key) {
        headers.push(("authorization", value));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Map<String, Value> {
        serde_json::from_str(
            r#"{"num_gpu":80,"num_ctx":1024,"temperature":0.8,"top_p":0.9,"top_k":40,"repeat_penalty":1.1}"#,
        )
        .unwrap()
    }

    fn msgs() -> Vec<Message> {
        vec![Message {
            role: "user",
            content: "hi".into(),
        }]
    }

    #[test]
    fn ollama_sends_options_with_num_predict() {
        let b = build(Api::Ollama, "gemma3", &msgs(), Some(&opts()), 64);
        let v: Value = serde_json::from_slice(&b.json).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["options"]["num_ctx"], 1024);
        assert_eq!(v["options"]["num_predict"], 64);
        assert_eq!(Value::Object(b.options_sent), v["options"]);
        let b = build(Api::Ollama, "gemma3", &msgs(), None, 64);
        let v: Value = serde_json::from_slice(&b.json).unwrap();
        assert_eq!(v["options"], json!({"num_predict": 64}));
    }

    #[test]
    fn openai_maps_options_to_body_fields() {
        let b = build(Api::Openai, "m", &msgs(), Some(&opts()), 32);
        let v: Value = serde_json::from_slice(&b.json).unwrap();
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["max_tokens"], 32);
        assert_eq!(v["top_k"], 40);
        assert!(
            v.get("num_gpu").is_none() && v.get("num_ctx").is_none() && v.get("options").is_none()
        );
        assert_eq!(
            Value::Object(b.options_sent),
            json!({"max_tokens": 32, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1})
        );
    }
}
