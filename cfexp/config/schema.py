"""The structured schema of every composed cfexp config.

Registered in Hydra's ConfigStore as ``cfexp_schema`` and placed first in
``conf/config.yaml``'s defaults list, so every YAML file and every command-line
override is merged into these typed nodes: an unknown key or a value of the
wrong type fails at composition. Ranges and cross-field rules (which OmegaConf
cannot express) are checked by :mod:`cfexp.config.validate` before anything
starts.

Names follow the house rule: a Hydra choice name = its YAML file name = its
registry key, and numeric fields carry their unit (``call_s``, ``port``).
Closed vocabularies are the enums of :mod:`cfexp.vocab`, so a wrong word
fails while Hydra composes, with the allowed words in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cfexp.vocab import (
    Api,
    Backend,
    HostLockMode,
    Language,
    Lifecycle,
    MultiMode,
    OptionsMode,
    PromptCache,
    Runtime,
    Scenario,
    SoloPhases,
)


@dataclass
class RuntimeConfig:
    # The async runtime of the agent; its YAML file name. It implies the
    # language (cfexp.vocab.Runtime.language): asyncio/uvloop are Python, the rest Rust.
    name: Runtime = MISSING
    # A runtime kept only for comparison with the original study (async_std).
    legacy: bool = False


@dataclass
class TopologyConfig:
    # single | dual | … : how many server instances the agents share.
    name: str = "single"
    # Number of server instances; agent i uses instance i mod instances.
    instances: int = 1
    # per_job: fresh servers each job (cold start); per_sweep: keep them while
    # their launch parameters match; external: nothing is started or stopped.
    lifecycle: Lifecycle = Lifecycle.per_sweep
    # Untimed calls sent to each instance before every measured phase, with the
    # options the phase's calls send, so no model load lands inside it (0 = none:
    # the first measured call then pays whatever is cold).
    warmup_calls: int = 1
    # System metrics (CPU, memory, per-process, GPU) sampling period; 0 = off.
    sample_interval_s: float = 0.5
    # auto | always | never: hold this host's lock from starting managed servers
    # until they stop, so parallel jobs on one host never share its cores or GPU
    # (auto = for llamacpp/llamaserver/ollama servers cfexp starts; see docs/scale.md).
    host_lock: HostLockMode = HostLockMode.auto


@dataclass
class BackendConfig:
    # llamacpp | llamaserver | sim | ollama | openai
    name: Backend = MISSING
    # The API agents speak to it: ollama (NDJSON) or openai (SSE).
    api: Api = Api.ollama
    # External server URL; null = cfexp starts its own instance(s). For a
    # managed Ollama: the first instance's address (instance i listens on port + i).
    url: Optional[str] = None
    # topology.lifecycle=external with several instances: one distinct URL per
    # instance (instance i = urls[i]); url is then unused.
    urls: list[str] = field(default_factory=list)
    # ollama, llamaserver: start the server when nothing answers at a free loopback url.
    start_if_absent: bool = True
    # Interface managed servers bind to (loopback only by design).
    host: str = "127.0.0.1"
    # CPU threads per managed instance (llamacpp); 0 = auto: the machine's cores
    # split evenly between the instances, so they do not oversubscribe.
    threads: int = 0
    # Requests served in parallel per instance (like OLLAMA_NUM_PARALLEL); more wait FIFO.
    slots: int = 1
    # Engine settings passed verbatim to the serving process (see docs/serving.md).
    settings: dict[str, Any] = field(default_factory=dict)
    # openai: bearer token; never logged, never tracked.
    api_key: Optional[str] = None
    # The server program for backends that run one (ollama, llamaserver); null = the
    # backend's own default (ollama on PATH; llamaserver: the one cfexp builds).
    binary: Optional[str] = None
    # ollama: OLLAMA_MODELS of managed instances (null = Ollama's default); "{index}"
    # in it is replaced by the instance index, giving each instance its own folder.
    models_dir: Optional[str] = None


@dataclass
class ModelConfig:
    # The model name sent in every request (Ollama tag or OpenAI model id).
    name: str = MISSING
    # GGUF file for llamacpp; null = the embedded Gemma 3 270M from PyPI.
    file: Optional[str] = None
    # Transformer layers; gpu_layers >= n_layers means fully offloaded.
    n_layers: int = 18


@dataclass
class AgentOverride:
    """Options one agent of a chimera_hetero run uses instead of the top-level ones."""

    gpu_layers: Optional[int] = None
    ctx: Optional[int] = None
    temperature: Optional[float] = None


@dataclass
class ScenarioConfig:
    # single_inference | single_agent | multi_agent
    name: Scenario = MISSING
    # Agents run concurrently in one agent process.
    agents: int = 1
    # Personas, one per agent (cycled when there are more agents).
    personas: list[str] = field(default_factory=lambda: ["default"])
    # multi_agent only: baseline_vs_chimera (agent_0 sends no options, the
    # others the configured ones), chimera_homo (all the same options),
    # chimera_hetero (per_agent overrides).
    mode: MultiMode = MultiMode.chimera_homo
    # multi_agent only: per-agent options, e.g. per_agent.agent_1.ctx=1024.
    per_agent: dict[str, AgentOverride] = field(default_factory=dict)
    # multi_agent only: when each agent runs alone on its instance, for speedup,
    # efficiency and contention: both = before and after the concurrent phase
    # (ABA: their difference is the drift), before, after; null = no solo phase.
    solo: Optional[SoloPhases] = SoloPhases.both
    # multi_agent only: an agent is contended when, for a step, its concurrent
    # TTFT exceeds its highest solo TTFT by more than this percentage plus its
    # drift, or its throughput falls below its lowest solo by as much.
    contention_threshold_pct: float = 25.0
    # multi_agent only: a run whose solo phases differ by more than this
    # percentage (drift) gets a measurement warning.
    drift_warn_pct: float = 10.0


@dataclass
class TimeoutsConfig:
    # One LLM call: connect plus the whole stream.
    call_s: float = 120.0
    # One agent process, start to exit.
    run_s: float = 900.0
    # A managed server from launch to healthy (includes model load).
    server_start_s: float = 180.0


@dataclass
class TrackingConfig:
    # MLflow experiment name.
    experiment: str = "cfexp"
    # Tracking URI; null = $MLFLOW_TRACKING_URI, else SQLite under paths.mlruns_dir.
    uri: Optional[str] = None


@dataclass
class PathsConfig:
    # Folder the command was started from (Hydra's original cwd).
    root_dir: str = "${hydra:runtime.cwd}"
    # MLflow's SQLite store and artifacts.
    mlruns_dir: str = "${paths.root_dir}/mlruns"
    # Build products and assembled model files.
    cache_dir: str = "${oc.env:CFEXP_CACHE_DIR,${oc.env:HOME}/.cache/cfexp}"


@dataclass
class TrialInfo:
    """Which optimisation trial a job is; set by the sweeper (docs/optuna.md), else null."""

    # The Optuna study the job is a trial of (hydra/sweeper=cfexp_optuna).
    study: Optional[str] = None
    # The trial's number in that study.
    number: Optional[int] = None


@dataclass
class CfexpConfig:
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Set per job by the Optuna sweeper; tagged on the job's MLflow run.
    trial: TrialInfo = field(default_factory=TrialInfo)

    # Model options, top-level so `-m temperature=0.6,0.8` needs no quoting.
    gpu_layers: int = 80
    ctx: int = 512
    temperature: float = 0.8
    # Sampling options sent with temperature; null = not sent (the server's own
    # value), as the original's TR115 sent none of them.
    top_p: Optional[float] = 0.9
    top_k: Optional[int] = 40
    repeat_penalty: Optional[float] = 1.1
    num_predict: int = 128
    # Sampling seed: agent i sends seed + i with every call, so every phase of a
    # job asks for the same sampling; null = the server's choice.
    seed: Optional[int] = 0
    # configured: send the options above; server_defaults: send none, to servers
    # started with the backend's own defaults (the original's "baseline").
    options_mode: OptionsMode = OptionsMode.configured
    # defeat: every measured prompt starts with a nonce no earlier call shared, so
    # a server's prefix cache cannot serve it; allow: no nonce, and every job is
    # warmed alike by an untimed run of its workflow first (docs/metrics.md).
    prompt_cache: PromptCache = PromptCache.defeat
    # A free index so a multirun can repeat one config: `-m repetition=0,1,2`.
    repetition: int = 0
    # Skip jobs whose config already has a FINISHED run; a sweep reuses its
    # parent run (docs/tracking.md, "Resuming a sweep").
    resume: bool = False

    @property
    def language(self) -> Language:
        """The agent's language, implied by its runtime."""
        return Runtime(self.runtime.name).language


def register_configs() -> None:
    """Register the schema and cfexp's resolvers; called before Hydra composes anything."""
    from cfexp.config.output_dirs import register_resolvers

    ConfigStore.instance().store(name="cfexp_schema", node=CfexpConfig)
    register_resolvers()
