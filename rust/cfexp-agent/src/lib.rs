//! cfexp's Rust LLM agent.
//!
//! Reads a spec (JSON), runs a benchmark scenario against Ollama- or
//! OpenAI-style servers, and writes JSONL records — the contract in
//! `docs/record-schema.md`, shared with the Python agent. The workflows are
//! written once ([`agent`]) over a small [`runtime::Runtime`] trait; each
//! runtime variant (feature-gated module under [`rt`]) supplies its own TCP,
//! spawner and timer, and its thin binary (`src/bin/`) just starts it.
//!
//! Layout: [`spec`] in → [`agent`] (workflows) → [`call`] (one request,
//! [`hyper_client`] over [`http`]) → [`stream`] (pure parsers) →
//! [`records`] out; [`workflow`] holds the pure steps (ingest, render,
//! parse); [`clock`] is `CLOCK_MONOTONIC`.

#![warn(missing_docs)]

pub mod agent;
pub mod call;
pub mod cli;
pub mod clock;
pub mod error;
pub mod http;
pub mod hyper_client;
pub mod records;
pub mod request;
pub mod rt;
pub mod runtime;
pub mod spec;
pub mod stream;
pub mod workflow;

pub use error::{Error, Kind, Result};
