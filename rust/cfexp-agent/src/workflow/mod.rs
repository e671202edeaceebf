//! The agent workflows' pure parts, identical to docs/agent-workflow.md and
//! to the Python agent: loading the data files, ingesting the corpus into
//! the data summary, rendering prompts (with the cache-defeating nonce), and
//! parsing the analysis. The async workflow itself is in `crate::agent`.

pub mod data;
pub mod ingest;
pub mod parse;
pub mod render;
