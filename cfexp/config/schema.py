"""The structured schema of every composed cfexp config.

Registered in Hydra's ConfigStore as ``cfexp_schema`` and placed first in
``conf/config.yaml``'s defaults list, so every YAML file and every command-line
override is merged into these typed nodes: an unknown key or a value of the
wrong type fails at composition. Ranges and cross-field rules (which OmegaConf
cannot express) are checked by :mod:`cfexp.config.validate` before anything
starts.

Names follow the house rule: a Hydra choice name = its YAML file name = its
registry key, and numeric fields carry their unit (``call_s``, ``port``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LanguageConfig:
    # python | rust: the language the agent process is written in.
    name: str = MISSING


@dataclass
class RuntimeConfig:
    # The async runtime of the agent; its YAML file name.
    name: str = MISSING
    # The language this runtime belongs to; must equal language.name.
    language: str = MISSING
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
    lifecycle: str = "per_sweep"
    # Untimed calls sent to each instance before measuring (0 = none).
    warmup_calls: int = 0
    # System metrics (CPU, memory, per-process, GPU) sampling period; 0 = off.
    sample_interval_s: float = 0.5
    # auto | always | never: hold this host's lock from starting managed servers
    # until they stop, so parallel jobs on one host never share its cores or GPU
    # (auto = for llamacpp/llamaserver/ollama servers cfexp starts; see docs/scale.md).
    host_lock: str = "auto"


@dataclass
class BackendConfig:
    # llamacpp | sim | ollama | openai | llamaserver
    name: str = MISSING
    # The API agents speak to it: ollama (NDJSON) or openai (SSE).
    api: str = "ollama"
    # External server URL; null = cfexp starts its own instance(s).
    url: Optional[str] = None
    # ollama only: start `ollama serve` when url is on loopback, free, and ollama is on PATH.
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
    # ollama: the binary and its models folder (null = its default). llamaserver:
    # a llama-server to run; null = the one cfexp builds from llama.cpp's source.
    binary: Optional[str] = "ollama"
    models_dir: Optional[str] = None
    # True when runs on this backend are simulated (tagged provenance=simulated).
    simulated: bool = False


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
    name: str = MISSING
    # Agents run concurrently in one agent process.
    agents: int = 1
    # Personas, one per agent (cycled when there are more agents).
    personas: list[str] = field(default_factory=lambda: ["default"])
    # multi_agent only: baseline_vs_chimera (agent_0 sends no options, the
    # others the configured ones), chimera_homo (all the same options),
    # chimera_hetero (per_agent overrides).
    mode: str = "chimera_homo"
    # multi_agent only: per-agent options, e.g. per_agent.agent_1.ctx=1024.
    per_agent: dict[str, AgentOverride] = field(default_factory=dict)
    # multi_agent only: run each agent alone first, for true parallel efficiency.
    solo_baseline: bool = True
    # multi_agent only: an agent is contended when its concurrent TTFT is worse
    # than solo by more than this percentage, or its throughput lower by more.
    contention_threshold_pct: float = 25.0


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
    language: LanguageConfig = field(default_factory=LanguageConfig)
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
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    num_predict: int = 128
    seed: Optional[int] = None
    # configured: send the options above; server_defaults: send none (the
    # original's "baseline" run).
    options_mode: str = "configured"
    # Prefix each prompt with a unique nonce so prefix caches cannot hide prefill
    # (off by default: small models echo it; cfexp's servers disable their cache).
    defeat_prompt_cache: bool = False
    # A free index so a multirun can repeat one config: `-m repetition=0,1,2`.
    repetition: int = 0
    # Skip jobs whose config already has a FINISHED run; a sweep reuses its
    # parent run (docs/tracking.md, "Resuming a sweep").
    resume: bool = False


def register_configs() -> None:
    """Register the schema; called before Hydra composes anything."""
    ConfigStore.instance().store(name="cfexp_schema", node=CfexpConfig)
