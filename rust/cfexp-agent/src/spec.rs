//! The agent contract's input: the spec the harness writes
//! (docs/record-schema.md, section 1). The mirror of
//! `cfexp/agents/spec.py`: the same fields, the same checks, the same
//! [`SCHEMA_VERSION`] and the same [`nonce_text`].
//!
//! Parsing is two steps: serde reads the raw document, then [`Spec::validate`]
//! checks everything serde cannot (schema version, agent count, URLs, the
//! nonce salt), so a bad spec fails before anything is sent, with exit
//! status 2.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Kind, Result};

/// The version of the agent contract (spec and records) this agent implements.
pub const SCHEMA_VERSION: u32 = 3;

/// The Python agent's event loops: the only values `runtime` may take
/// (a Rust agent's runtime is its binary, so it ignores the field).
pub const PYTHON_RUNTIMES: [&str; 2] = ["asyncio", "uvloop"];

/// 64-bit FNV-1a, then MurmurHash3's fmix64 finaliser
/// (`cfexp.agents.spec.nonce_hash`).
pub fn nonce_hash(data: &[u8]) -> u64 {
    let mut value: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        value ^= u64::from(byte);
        value = value.wrapping_mul(0x0100_0000_01b3);
    }
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// The cache-defeating prefix of a call's first message
/// (docs/record-schema.md, section 5): unique per agent process (the
/// harness draws `salt` afresh for each), agent and call, so no measured
/// prompt shares its first tokens with an earlier one. Its first characters
/// after `Request` are 12 hex digits of a hash of all three (the top 48 bits
/// of [`nonce_hash`] of `{salt}-{n}-{call_index}`), so two calls of one process
/// share no more than the word. A plain sentence: of the forms measured, the
/// one the embedded Gemma 3 270M copies into its reply least often
/// (`benchmarks/nonce_echo.py`). Identical to `cfexp.agents.spec.nonce_text`.
pub fn nonce_text(salt: &str, agent: &str, call_index: u32) -> String {
    let agent = agent.strip_prefix("agent_").unwrap_or(agent);
    let digest = nonce_hash(format!("{salt}-{agent}-{call_index}").as_bytes()) >> 16;
    format!("Request {digest:012x}-{agent}-{call_index}.\n")
}

/// Model options an agent may send (Ollama names); anything else is a spec
/// error, so a typo cannot silently become "server defaults".
pub const OPTION_KEYS: [&str; 7] = [
    "num_gpu",
    "num_ctx",
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "seed",
];

/// What the agent process does (`cfexp.vocab.Scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// One call, no corpus (TR108).
    SingleInference,
    /// One agent: ingest, analysis call, report call (TR109/TR111).
    SingleAgent,
    /// The single-agent workflow once per agent, concurrently (TR110/113/114/115).
    MultiAgent,
}

impl Scenario {
    /// Every scenario, in `cfexp/vocab.py`'s order.
    pub const ALL: [Scenario; 3] = [
        Scenario::SingleInference,
        Scenario::SingleAgent,
        Scenario::MultiAgent,
    ];

    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::SingleInference => "single_inference",
            Scenario::SingleAgent => "single_agent",
            Scenario::MultiAgent => "multi_agent",
        }
    }
}

/// Which wire protocol a server speaks (`cfexp.vocab.Api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /api/chat`, NDJSON stream.
    Ollama,
    /// `POST /v1/chat/completions`, server-sent events.
    Openai,
}

impl Api {
    /// Every API, in `cfexp/vocab.py`'s order.
    pub const ALL: [Api; 2] = [Api::Ollama, Api::Openai];

    /// The name used in the spec and the records.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Ollama => "ollama",
            Api::Openai => "openai",
        }
    }

    /// The request path appended to `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            Api::Ollama => "/api/chat",
            Api::Openai => "/v1/chat/completions",
        }
    }
}

/// An API key: never printed, never serialized.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One agent of the spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// `agent_0`, `agent_1`, …
    pub name: String,
    /// Key in `personas.json`.
    pub persona: String,
    /// e.g. `http://127.0.0.1:41234`, no trailing slash.
    pub base_url: String,
    /// Wire protocol of the server.
    pub api: Api,
    /// Model name sent in the request.
    pub model: String,
    /// Model options (Ollama names); `None` sends none (server defaults).
    /// After validation, keys with a null value are gone ("not set").
    pub options: Option<Map<String, Value>>,
    /// Index of the server instance (recorded, not used).
    pub instance: i64,
    /// Sent as `Authorization: Bearer …` to OpenAI-style servers.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
}

/// The whole spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Must be [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The harness's job id; copied into every record.
    pub run_id: String,
    /// What to do.
    pub scenario: Scenario,
    /// Absolute path of `cfexp/data`.
    pub data_dir: PathBuf,
    /// Generation cap sent with every call.
    pub num_predict: u32,
    /// Per-call timeout: connect + whole stream.
    pub call_timeout_s: f64,
    /// Salt of the cache-defeating nonce ([`nonce_text`]); `None` = no
    /// nonce. Required, null allowed (`deserialize_with` makes serde insist
    /// on the key, as the Python agent does).
    #[serde(deserialize_with = "Option::deserialize")]
    pub cache_nonce: Option<String>,
    /// One entry per concurrent agent.
    pub agents: Vec<AgentSpec>,
    /// The Python agent's event loop (`asyncio`/`uvloop`): checked, then
    /// ignored here.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// Where to send one agent's requests, parsed from `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host to connect to (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Host` header value (`host:port` as written in `base_url`).
    pub authority: String,
    /// Request path: `base_url`'s path plus the API's path.
    pub path: String,
}

impl Endpoint {
    /// Parses `base_url` (plain `http://` only) for `api`.
    pub fn parse(base_url: &str, api: Api) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                Kind::Spec,
                format!(
                    "<base_url={base_url}> {why}; give it as http://HOST:PORT without a trailing slash"
                ),
            )
        };
        let rest = base_url
            .strip_prefix("http://")
            .ok_or_else(|| bad("is not a plain http:// URL (the Rust agent has no TLS)"))?;
        if rest.ends_with('/') {
            return Err(bad("ends with a slash"));
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("has no usable host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has a bad IPv6 host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("has a bad IPv6 host")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("has a bad port"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: format!("{prefix}{}", api.path()),
        })
    }
}

impl Spec {
    /// Reads and validates the spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                Kind::Spec,
                format!("cannot read the spec <path={}>", path.display()),
                e,
            )
        })?;
        Self::from_json(&text)
    }

    /// Parses and validates a spec document.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut spec: Spec = serde_json::from_str(text).map_err(|e| {
            Error::with_source(
                Kind::Spec,
                format!(
                    "the spec is not a valid schema-{SCHEMA_VERSION} spec (see docs/record-schema.md)"
                ),
                e,
            )
        })?;
        for agent in &mut spec.agents {
            if let Some(options) = &mut agent.options {
                // A null value means "not set": the key is not sent.
                options.retain(|_, v| !v.is_null());
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(Kind::Spec, msg));
        if self.schema_version != SCHEMA_VERSION {
            return bad(format!(
                "<schema_version={}> is not supported; this agent implements schema_version {SCHEMA_VERSION}",
                self.schema_version
            ));
        }
        if self.num_predict < 1 {
            return bad(format!(
                "<num_predict={}> must be at least 1",
                self.num_predict
            ));
        }
        if !(self.call_timeout_s.is_finite() && self.call_timeout_s > 0.0) {
            return bad(format!(
                "<call_timeout_s={}> must be a positive number of seconds",
                self.call_timeout_s
            ));
        }
        let foreign_runtime =
            (self.runtime.as_deref()).filter(|runtime| !PYTHON_RUNTIMES.contains(runtime));
        if let Some(runtime) = foreign_runtime {
            return bad(format!(
                "<runtime={runtime:?}> must be one of {} or null",
                PYTHON_RUNTIMES.join(", ")
            ));
        }
        let bad_salt = (self.cache_nonce.as_deref())
            .filter(|salt| salt.is_empty() || !salt.bytes().all(|b| b.is_ascii_alphanumeric()));
        if let Some(salt) = bad_salt {
            return bad(format!(
                "<cache_nonce={salt:?}> must be null or a non-empty ASCII alphanumeric salt"
            ));
        }
        if self.agents.is_empty() {
            return bad("<agents=[]> needs at least one agent".to_owned());
        }
        if self.scenario != Scenario::MultiAgent && self.agents.len() != 1 {
            return bad(format!(
                "<scenario={} agents={}> a single scenario runs exactly one agent",
                self.scenario.as_str(),
                self.agents.len()
            ));
        }
        let mut names = std::collections::HashSet::new();
        for agent in &self.agents {
            if !names.insert(agent.name.as_str()) {
                return bad(format!("<agent={}> appears twice in agents", agent.name));
            }
            Endpoint::parse(&agent.base_url, agent.api)?;
            for (key, value) in agent.options.iter().flatten() {
                if !OPTION_KEYS.contains(&key.as_str()) {
                    return bad(format!(
                        "unknown model option <{}.options.{key}>: allowed are {}",
                        agent.name,
                        OPTION_KEYS.join(", ")
                    ));
                }
                if !value.is_number() {
                    return bad(format!(
                        "<{}.options.{key}={value}> must be a number",
                        agent.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.call_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(extra_agents: usize, scenario: &str) -> String {
        let agent = |i: usize| {
            format!(
                r#"{{"name":"agent_{i}","persona":"default","base_url":"http://127.0.0.1:1234","api":"ollama","model":"m","options":null,"instance":0,"api_key":null}}"#
            )
        };
        let agents: Vec<String> = (0..=extra_agents).map(agent).collect();
        format!(
            r#"{{"schema_version":3,"run_id":"r","scenario":"{scenario}","data_dir":"/d","num_predict":64,"call_timeout_s":5.0,"cache_nonce":null,"agents":[{}]}}"#,
            agents.join(",")
        )
    }

    #[test]
    fn reads_a_valid_spec() {
        let spec = Spec::from_json(&spec_json(1, "multi_agent")).unwrap();
        assert_eq!(spec.agents.len(), 2);
        assert_eq!(spec.scenario, Scenario::MultiAgent);
        assert_eq!(spec.agents[1].name, "agent_1");
    }

    #[test]
    fn single_scenarios_need_one_agent() {
        let err = Spec::from_json(&spec_json(1, "single_agent")).unwrap_err();
        assert_eq!(err.kind(), Kind::Spec);
    }

    #[test]
    fn rejects_other_schema_versions_and_unknown_scenarios() {
        let text =
            spec_json(0, "single_agent").replace("\"schema_version\":3", "\"schema_version\":1");
        assert_eq!(Spec::from_json(&text).unwrap_err().kind(), Kind::Spec);
        assert!(Spec::from_json(&spec_json(0, "dance")).is_err());
    }

    #[test]
    fn checks_options_and_drops_null_ones() {
        let with = |opts: &str| {
            Spec::from_json(
                &spec_json(0, "single_agent")
                    .replace("\"options\":null", &format!("\"options\":{opts}")),
            )
        };
        let spec = with(r#"{"num_ctx":512,"seed":null}"#).unwrap();
        assert_eq!(
            serde_json::Value::Object(spec.agents[0].options.clone().unwrap()),
            serde_json::json!({"num_ctx": 512})
        );
        assert_eq!(with(r#"{"num_ctxx":512}"#).unwrap_err().kind(), Kind::Spec);
        assert_eq!(with(r#"{"num_ctx":"512"}"#).unwrap_err().kind(), Kind::Spec);
        assert!(
            Spec::from_json(
                &spec_json(0, "single_agent").replace("\"run_id\"", "\"bogus\":1,\"run_id\"")
            )
            .is_err()
        );
        assert!(
            Spec::from_json(
                &spec_json(0, "single_agent")
                    .replace("\"run_id\"", "\"runtime\":\"uvloop\",\"run_id\"")
            )
            .is_ok()
        );
    }

    #[test]
    fn cache_nonce_is_required_and_an_ascii_alphanumeric_salt() {
        let with = |value: &str| {
            Spec::from_json(
                &spec_json(0, "single_agent")
                    .replace("\"cache_nonce\":null", &format!("\"cache_nonce\":{value}")),
            )
        };
        assert_eq!(with("null").unwrap().cache_nonce, None);
        assert_eq!(
            with("\"a1b2c3\"").unwrap().cache_nonce.as_deref(),
            Some("a1b2c3")
        );
        for bad in ["\"\"", "\"a-b\"", "\"é1\"", "\"a b\"", "true", "12"] {
            assert_eq!(with(bad).unwrap_err().kind(), Kind::Spec, "{bad}");
        }
        let missing = spec_json(0, "single_agent").replace("\"cache_nonce\":null,", "");
        let err = Spec::from_json(&missing).unwrap_err();
        let why = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            why.as_deref().unwrap_or("").contains("cache_nonce"),
            "{why:?}"
        );
    }

    #[test]
    fn runtime_must_be_a_python_runtime_or_null() {
        let with = |value: &str| {
            Spec::from_json(
                &spec_json(0, "single_agent")
                    .replace("\"run_id\"", &format!("\"runtime\":{value},\"run_id\"")),
            )
        };
        assert!(with("\"asyncio\"").is_ok() && with("null").is_ok());
        assert_eq!(with("\"tokio\"").unwrap_err().kind(), Kind::Spec);
    }

    #[test]
    fn nonce_text_names_a_hash_agent_and_call() {
        // The same texts as the Python agent's test (tests/agents/test_spec.py).
        assert_eq!(
            nonce_text("3f9a0c71d2be", "agent_1", 2),
            "Request 13ef6640b063-1-2.\n"
        );
        assert_eq!(
            nonce_text("a1b2", "agent_3", 1),
            "Request ff7c5915105b-3-1.\n"
        );
        assert_eq!(
            nonce_text("a1b2", "solo", 0),
            "Request 600504612fac-solo-0.\n"
        );
    }

    #[test]
    fn api_key_is_redacted_in_debug() {
        let text =
            spec_json(0, "single_agent").replace("\"api_key\":null", "\"api_key\":\"sk-secret\"");
        let spec = Spec::from_json(&text).unwrap();
        assert!(!format!("{spec:?}").contains("sk-secret"));
        assert_eq!(
            spec.agents[0].api_key.as_ref().unwrap().expose(),
            "sk-secret"
        );
    }

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:41234", Api::Ollama).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 41234, "/api/chat")
        );
        assert_eq!(e.authority, "127.0.0.1:41234");
        let e = Endpoint::parse("http://localhost", Api::Openai).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("localhost", 80, "/v1/chat/completions")
        );
        let e = Endpoint::parse("http://[::1]:8000/prefix", Api::Openai).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8000));
        assert_eq!(e.path, "/prefix/v1/chat/completions");
        assert!(Endpoint::parse("https://127.0.0.1:1", Api::Ollama).is_err());
        assert!(Endpoint::parse("http://127.0.0.1:notaport", Api::Ollama).is_err());
        assert!(Endpoint::parse("http://:80", Api::Ollama).is_err());
        assert!(Endpoint::parse("http://127.0.0.1:1/", Api::Ollama).is_err());
    }
}
