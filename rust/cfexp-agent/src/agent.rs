//! The runtime-neutral core: the scenarios and the agent workflow, written
//! once as async code over [`Runtime`] (spawner, timer, TCP) and
//! [`HttpClient`]. A runtime variant's binary only builds its runtime and
//! calls [`run`].
//!
//! Concurrency: in `multi_agent` each agent is its own task on the runtime;
//! they share only the [`RecordWriter`], whose lock is held for one line
//! write, never across a request. Each agent keeps its own HTTP connection
//! from call to call ([`HttpClient::Connection`]).

use std::path::Path;
use std::sync::Arc;

use crate::call::{self, CallPlan};
use crate::clock::monotonic_ns;
use crate::error::{Error, Kind, Result};
use crate::http::HttpClient;
use crate::hyper_client::HyperClient;
use crate::records::{AgentRecord, DoneRecord, IngestRecord, ReadyRecord, Record, RecordWriter};
use crate::runtime::Runtime;
use crate::spec::{AgentSpec, Endpoint, Scenario, Spec, nonce_text};
use crate::workflow::data::Data;
use crate::workflow::ingest::{ingest, summary};
use crate::workflow::parse::{Analysis, format_items, parse_analysis};
use crate::workflow::render::messages;

/// A runtime variant: its name in records, and how it reads bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// `tokio`, `tokio_localset`, `smol`, `smol_1kb` or `async_std`.
    pub runtime: &'static str,
    /// Re-buffer response bodies into pieces of at least this many bytes
    /// before parsing (`smol_1kb`: 1024).
    pub rebuffer_min_bytes: Option<usize>,
}

/// A validated job, ready to run once the runtime exists.
#[derive(Debug)]
pub struct Job {
    /// The spec.
    pub spec: Spec,
    /// Prompts, personas, corpus location.
    pub data: Data,
    /// Each agent's parsed `base_url`, by agent index.
    pub endpoints: Vec<Endpoint>,
    /// The records file.
    pub writer: RecordWriter,
    /// Which variant runs it.
    pub variant: Variant,
}

impl Job {
    /// Loads the spec and the data files and creates the records file.
    /// Every error here means the job cannot run (exit status 2), and no
    /// records file is created unless spec and data are good.
    pub fn prepare(spec_path: &Path, out_path: &Path, variant: Variant) -> Result<Self> {
        let spec = Spec::load(spec_path)?;
        let data = Data::load(&spec.data_dir)?;
        let mut endpoints = Vec::with_capacity(spec.agents.len());
        for agent in &spec.agents {
            data.persona(&agent.persona)?;
            endpoints.push(Endpoint::parse(&agent.base_url, agent.api)?);
        }
        if spec.scenario != Scenario::SingleInference && !data.corpus_dir.is_dir() {
            return Err(Error::new(
                Kind::Data,
                format!("<corpus={}> is not a directory", data.corpus_dir.display()),
            ));
        }
        let writer = RecordWriter::create(out_path, &spec.run_id)?;
        Ok(Job {
            spec,
            data,
            endpoints,
            writer,
            variant,
        })
    }
}

/// Runs the job on `runtime` with the hyper client: `ready`, the scenario's
/// records, `done`. Returns whether every agent succeeded.
pub async fn run<R: Runtime>(job: Arc<Job>, runtime: R) -> Result<bool> {
    let client = Arc::new(HyperClient::new(runtime.clone(), job.variant.runtime));
    run_with(job, runtime, client).await
}

/// [`run`] with any HTTP client.
pub async fn run_with<R: Runtime, C: HttpClient>(
    job: Arc<Job>,
    runtime: R,
    client: Arc<C>,
) -> Result<bool> {
    job.writer.write(&Record::Ready(ReadyRecord {
        language: "rust",
        runtime: job.variant.runtime,
        agent_version: env!("CARGO_PKG_VERSION"),
        t_ready_ns: monotonic_ns(),
    }))?;
    let mut tasks = Vec::with_capacity(job.spec.agents.len());
    for index in 0..job.spec.agents.len() {
        let (job, client, rt) = (job.clone(), client.clone(), runtime.clone());
        tasks.push(runtime.spawn(async move { run_agent(&job, &*client, &rt, index).await }));
    }
    let mut success = true;
    for task in tasks {
        success &= task.await?;
    }
    job.writer.write(&Record::Done(DoneRecord {
        success,
        t_end_ns: monotonic_ns(),
    }))?;
    Ok(success)
}

/// How an agent workflow ended.
struct Ending {
    error_kind: Option<String>,
    error: Option<String>,
}

/// One agent's workflow, ending with its `agent` record. `Ok(false)` when a
/// call failed; `Err` only for an internal failure (records cannot be
/// written, the corpus cannot be read).
async fn run_agent<R: Runtime, C: HttpClient>(
    job: &Job,
    client: &C,
    runtime: &R,
    index: usize,
) -> Result<bool> {
    let agent = &job.spec.agents[index];
    let t_start_ns = monotonic_ns();
    let mut flow = Flow {
        job,
        client,
        connection: C::Connection::default(),
        runtime,
        agent,
        endpoint: &job.endpoints[index],
        calls: 0,
    };
    let mut analysis = Analysis::default();
    let instructions = job.data.persona(&agent.persona)?.instructions.as_str();
    let ending = match job.spec.scenario {
        Scenario::SingleInference => flow
            .call(
                "single_inference",
                &[("persona_instructions", instructions)],
            )
            .await?
            .err(),
        Scenario::SingleAgent | Scenario::MultiAgent => flow
            .analyse_and_report(instructions, &mut analysis)
            .await?
            .err(),
    };
    let ending = ending.unwrap_or(Ending {
        error_kind: None,
        error: None,
    });
    let success = ending.error_kind.is_none();
    if let Some(kind) = &ending.error_kind {
        eprintln!(
            "cfexp-agent: {} stopped after call {}: {kind}: {}",
            agent.name,
            flow.calls.saturating_sub(1),
            ending.error.as_deref().unwrap_or("")
        );
    }
    job.writer.write(&Record::Agent(AgentRecord {
        agent: agent.name.clone(),
        persona: agent.persona.clone(),
        instance: agent.instance,
        success,
        error_kind: ending.error_kind,
        error: ending.error,
        t_start_ns,
        t_end_ns: monotonic_ns(),
        findings: analysis.findings,
        recommendations: analysis.recommendations,
        calls: flow.calls,
    }))?;
    Ok(success)
}

/// One agent's state while its workflow runs.
struct Flow<'a, R, C: HttpClient> {
    job: &'a Job,
    client: &'a C,
    /// The agent's own kept-alive connection, carried from call to call.
    connection: C::Connection,
    runtime: &'a R,
    agent: &'a AgentSpec,
    endpoint: &'a Endpoint,
    calls: u32,
}

/// A step's outcome: the text on success, how it failed otherwise.
type StepResult = std::result::Result<String, Ending>;

impl<R: Runtime, C: HttpClient> Flow<'_, R, C> {
    /// Ingest, analysis call, parse, report call. The corpus was checked
    /// before `ready`; if it cannot be read now, that is an internal error
    /// (no `done` record), as in the Python agent.
    async fn analyse_and_report(
        &mut self,
        instructions: &str,
        analysis: &mut Analysis,
    ) -> Result<StepResult> {
        let (job, agent) = (self.job, self.agent);
        let t_start_ns = monotonic_ns();
        // Synchronous on purpose, as in the Python agent: ~20 small files
        // take about a millisecond.
        let corpus = ingest(&job.data.corpus_dir)?;
        let data_summary = summary(&corpus);
        job.writer.write(&Record::Ingest(IngestRecord {
            agent: agent.name.clone(),
            files: corpus.files.len() as u64,
            bytes: corpus.bytes,
            files_by_type: corpus.files_by_type.clone(),
            t_start_ns,
            t_end_ns: monotonic_ns(),
        }))?;

        let analysis_text = match self
            .call(
                "analysis",
                &[
                    ("data_summary", &data_summary),
                    ("persona_instructions", instructions),
                ],
            )
            .await?
        {
            Ok(text) => text,
            Err(ending) => return Ok(Err(ending)),
        };
        *analysis = parse_analysis(&analysis_text);
        let findings = format_items(&analysis.findings);
        let recommendations = format_items(&analysis.recommendations);
        self.call(
            "report",
            &[
                ("data_summary", &data_summary),
                ("persona_instructions", instructions),
                ("findings", &findings),
                ("recommendations", &recommendations),
                ("analysis", &analysis_text),
            ],
        )
        .await
    }

    /// One call of `step`, recorded.
    async fn call(&mut self, step: &str, vars: &[(&str, &str)]) -> Result<StepResult> {
        let job = self.job;
        let call_index = self.calls;
        let nonce = (job.spec.cache_nonce.as_deref())
            .map(|salt| nonce_text(salt, &self.agent.name, call_index));
        let msgs = messages(job.data.prompt(step), vars, nonce.as_deref());
        let plan = CallPlan {
            agent: self.agent,
            endpoint: self.endpoint,
            call_index,
            step,
            messages: &msgs,
            prompt_nonce: nonce.as_deref(),
            num_predict: job.spec.num_predict,
            timeout: job.spec.call_timeout(),
            rebuffer_min_bytes: job.variant.rebuffer_min_bytes,
        };
        let record = call::perform(self.client, &mut self.connection, self.runtime, &plan).await;
        self.calls += 1;
        let result = if record.success {
            Ok(record.text.clone())
        } else {
            Err(Ending {
                error_kind: record.error_kind.clone(),
                error: record.error.clone(),
            })
        };
        job.writer.write(&Record::Call(record))?;
        Ok(result)
    }
}
