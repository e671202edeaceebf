"""The metric catalogue: every number cfexp records, written down once.

Each :class:`Metric` says what its name means: the unit, the scope it
describes (one call, one agent, one run, a multi-agent run, the machine),
which direction is better, which side measured it (the agent as client, the
LLM server's own counters, or the harness from outside the agent), and a
one-line definition. Everything else reads it:

- ``cfexp.metrics`` computes exactly the catalogue's call fields and run
  summaries (a test holds them equal);
- MLflow gets these names (and the ``_p50``/``_p95`` of per-call metrics);
- ``cfexp report`` takes its tables, plots and the direction of every
  comparison and success rate from here;
- the Optuna sweeper's objectives default to the catalogue's direction;
- ``docs/metrics.md``'s reference table is generated from it
  (``python -m cfexp.metrics.catalog``; a test checks the page is current).

Families of names (one per agent, process or core) are written with a
placeholder: ``agent_<i>_solo_ms``, ``proc_<name>_rss_mb``.

Adding a metric: one entry here, plus the pure function that computes it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from enum import StrEnum

from cfexp.errors import ConfigError


class Scope(StrEnum):
    CALL = "call"  # one LLM call; summarised per run (mean, _p50, _p95)
    AGENT = "agent"  # one agent of a multi-agent run
    RUN = "run"  # one job
    MULTI_AGENT = "multi_agent"  # one multi-agent job as a whole
    SYSTEM = "system"  # the machine and the processes while the job ran


class Direction(StrEnum):
    LOWER = "lower"
    HIGHER = "higher"
    NONE = "none"  # a count or a setting: neither is better

    @property
    def optuna(self) -> str:
        """Optuna's word for it (``minimize``/``maximize``)."""
        if self is Direction.NONE:
            raise ValueError("a metric without a better direction cannot be an objective")
        return "minimize" if self is Direction.LOWER else "maximize"


class Side(StrEnum):
    CLIENT = "client"  # the agent's own clock readings
    SERVER = "server"  # the LLM server's counters, as it reported them
    HARNESS = "harness"  # cfexp, measuring the agent process from outside


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    scope: Scope
    direction: Direction
    side: Side
    definition: str
    # Shown in the report's per-config and comparison tables.
    reported: bool = False
    # Drawn in the report's figures.
    plotted: bool = False
    # Physical range (low, high) of a run's value; None = unbounded. A value
    # outside it is a measurement problem (docs/multi-agent.md), never a winner.
    low: float | None = None
    high: float | None = None


_C, _S, _H = Side.CLIENT, Side.SERVER, Side.HARNESS
_LO, _HI, _NO = Direction.LOWER, Direction.HIGHER, Direction.NONE

METRICS: tuple[Metric, ...] = (
    # ------------------------------------------------------------ per call
    Metric("ttft_ms", "ms", Scope.CALL, _LO, _C,
           "request written to the connection (t_send_ns) to the first content chunk received "
           "(queueing, prefill, first decode step; not the connect)",
           reported=True, plotted=True),
    Metric("connect_ms", "ms", Scope.CALL, _LO, _C,
           "TCP connect (TLS included) the call made before writing its request; absent on a reused connection"),
    Metric("e2e_ms", "ms", Scope.CALL, _LO, _C, "request written to the last content chunk received",
           reported=True, plotted=True),
    Metric("tpot_ms", "ms", Scope.CALL, _LO, _C,
           "(e2e_ms − ttft_ms) / (output_tokens − 1): time per output token after the first", reported=True),
    Metric("itl_ms_mean", "ms", Scope.CALL, _LO, _C, "mean gap between successive content chunks"),
    Metric("itl_ms_p50", "ms", Scope.CALL, _LO, _C, "median gap between successive content chunks"),
    Metric("itl_ms_p95", "ms", Scope.CALL, _LO, _C, "95th percentile gap between successive content chunks"),
    Metric("itl_ms_max", "ms", Scope.CALL, _LO, _C, "longest gap between successive content chunks"),
    Metric("throughput_tok_s", "tokens/s", Scope.CALL, _HI, _C,
           "(output_tokens − 1) / (last − first content chunk): decode rate as the client sees it",
           reported=True, plotted=True),
    Metric("e2e_throughput_tok_s", "tokens/s", Scope.CALL, _HI, _C, "output_tokens / e2e: prefill included"),
    Metric("output_tokens", "tokens", Scope.CALL, _NO, _S,
           "tokens of the reply, the end-of-turn token excluded: the server's count, − 1 when it stopped by itself"),
    Metric("output_tokens_server", "tokens", Scope.CALL, _NO, _S,
           "the server's raw count (Ollama eval_count, OpenAI usage.completion_tokens, llama.cpp predicted_n)"),
    Metric("prompt_tokens", "tokens", Scope.CALL, _NO, _S,
           "prompt tokens, cached + evaluated (Ollama prompt_eval_count, OpenAI usage.prompt_tokens)"),
    Metric("prompt_tokens_evaluated", "tokens", Scope.CALL, _NO, _S,
           "prompt tokens the server really evaluated (llama.cpp timings.prompt_n); absent where not exposed (Ollama)"),
    Metric("prompt_tokens_cached", "tokens", Scope.CALL, _NO, _S,
           "prompt tokens taken from the server's prefix cache (timings.cache_n or usage cached_tokens)"),
    Metric("prompt_truncated_tokens", "tokens", Scope.CALL, _LO, _S,
           "prompt tokens the server dropped to fit the context (cfexp's servers say; others do not)"),
    Metric("server_prompt_eval_ms", "ms", Scope.CALL, _LO, _S,
           "the server's prompt evaluation time (Ollama prompt_eval_duration, llama.cpp timings.prompt_ms)"),
    Metric("server_throughput_tok_s", "tokens/s", Scope.CALL, _HI, _S,
           "the server's decode rate (eval_count / eval_duration, or predicted_n / predicted_ms)"),
    Metric("server_load_ms", "ms", Scope.CALL, _LO, _S, "model load time the server charged to the call"),
    # ------------------------------------------------------------- per run
    Metric("calls_total", "calls", Scope.RUN, _NO, _C, "calls made, failed ones included"),
    Metric("calls_failed", "calls", Scope.RUN, _LO, _C, "calls that failed (excluded from every call statistic)"),
    Metric("calls_with_load", "calls", Scope.RUN, _LO, _S,
           "measured calls whose server_load_ms shows a model load (≥ 100 ms): warm-up did not hold"),
    Metric("first_call_ttft_ms", "ms", Scope.RUN, _LO, _C,
           "TTFT of the agent process's first call (cold: its client code runs for the first time)"),
    Metric("warm_ttft_ms", "ms", Scope.RUN, _LO, _C, "mean TTFT of the calls after the process's first one"),
    Metric("output_tokens_total", "tokens", Scope.RUN, _NO, _S, "output_tokens summed over successful calls"),
    Metric("measurement_warnings", "warnings", Scope.RUN, _LO, _H,
           "problems that make the run's numbers doubtful (the run's measurement_warnings tag says which)"),
    Metric("agent_startup_ms", "ms", Scope.RUN, _LO, _H,
           "agent process exec to its ready record (one CLOCK_MONOTONIC)", reported=True),
    Metric("agent_peak_rss_mb", "MiB", Scope.RUN, _LO, _H, "peak resident memory of the agent process (wait4)",
           reported=True),
    Metric("agent_cpu_ms", "ms", Scope.RUN, _LO, _H, "user + system CPU time of the agent process"),
    Metric("agent_cpu_us_per_token", "µs/token", Scope.RUN, _LO, _H,
           "agent_cpu_ms × 1000 / output_tokens_total (start-up included)", reported=True),
    Metric("agent_wall_ms", "ms", Scope.RUN, _LO, _H, "agent process spawn to exit, harness clock"),
    Metric("ingest_files", "files", Scope.RUN, _NO, _C, "corpus files ingested (summed over agents)"),
    Metric("ingest_bytes", "bytes", Scope.RUN, _NO, _C, "corpus bytes ingested (summed over agents)"),
    Metric("warmup_load_ms", "ms", Scope.RUN, _NO, _S, "longest model load reported by the untimed warm-up calls"),
    Metric("report_quality_overall", "score", Scope.RUN, _HI, _C, "TR109 rubric, faithful (tops out at 0.98)",
           low=0.0, high=1.0),
    Metric("report_quality_overall_corrected", "score", Scope.RUN, _HI, _C, "TR109 rubric, GPU keyword fixed",
           low=0.0, high=1.0),
    Metric("report_quality_technical_depth", "share", Scope.RUN, _HI, _C, "share of 15 technical words found"),
    Metric("report_quality_technical_depth_corrected", "share", Scope.RUN, _HI, _C,
           "the same with the GPU keyword fixed"),
    Metric("report_quality_data_analysis", "share", Scope.RUN, _HI, _C, "share of 18 data-analysis words found"),
    Metric("report_quality_structure", "share", Scope.RUN, _HI, _C, "share of 7 Markdown line patterns present"),
    Metric("report_quality_citations", "matches", Scope.RUN, _NO, _C, "bracketed or 'Section N' matches"),
    Metric("report_word_count", "words", Scope.RUN, _NO, _C, "white-space separated words of the report"),
    Metric("report_section_count", "sections", Scope.RUN, _NO, _C, "Markdown headings of the report"),
    # ------------------------------------------------------- multi-agent run
    Metric("agents", "agents", Scope.MULTI_AGENT, _NO, _C, "agents that ran concurrently"),
    Metric("concurrent_wall_ms", "ms", Scope.MULTI_AGENT, _LO, _C,
           "first agent start to last agent end of the concurrent phase"),
    Metric("solo_sum_ms", "ms", Scope.MULTI_AGENT, _NO, _C, "Σ of the agents' solo times"),
    Metric("solo_max_ms", "ms", Scope.MULTI_AGENT, _NO, _C, "the longest agent's solo time"),
    Metric("speedup", "×", Scope.MULTI_AGENT, _HI, _C,
           "Σ solo / concurrent wall: how many agents' worth of work ran at once (≤ N)", low=0.0),
    Metric("parallel_efficiency_pct", "%", Scope.MULTI_AGENT, _HI, _C,
           "longest solo / concurrent wall × 100: 100 = no interference, whatever the balance",
           reported=True, high=100.0),
    Metric("overlap_efficiency_pct", "%", Scope.MULTI_AGENT, _HI, _C,
           "the original's Σ concurrent / (N × wall) × 100, for comparison with published numbers",
           reported=True, high=100.0),
    Metric("contention_rate_pct", "%", Scope.MULTI_AGENT, _LO, _C, "share of agents contended (the rule in docs)",
           reported=True, low=0.0, high=100.0),
    Metric("drift_pct", "%", Scope.MULTI_AGENT, _LO, _C,
           "largest |solo after − solo before| / mean solo of an agent: the run's noise floor", low=0.0),
    # ------------------------------------------------------------- per agent
    Metric("agent_<i>_instance", "index", Scope.AGENT, _NO, _C, "server instance the agent used"),
    Metric("agent_<i>_concurrent_ms", "ms", Scope.AGENT, _LO, _C, "the agent's workflow time, concurrent phase"),
    Metric("agent_<i>_solo_ms", "ms", Scope.AGENT, _NO, _C, "mean of its solo workflow times"),
    Metric("agent_<i>_solo_before_ms", "ms", Scope.AGENT, _NO, _C, "its solo time before the concurrent phase"),
    Metric("agent_<i>_solo_after_ms", "ms", Scope.AGENT, _NO, _C, "its solo time after the concurrent phase"),
    Metric("agent_<i>_drift_pct", "%", Scope.AGENT, _LO, _C, "|after − before| / mean of its solo times"),
    Metric("agent_<i>_ttft_ms_concurrent", "ms", Scope.AGENT, _LO, _C, "mean TTFT of its concurrent calls"),
    Metric("agent_<i>_ttft_ms_solo", "ms", Scope.AGENT, _LO, _C, "mean TTFT of its solo calls"),
    Metric("agent_<i>_throughput_tok_s_concurrent", "tokens/s", Scope.AGENT, _HI, _C,
           "mean decode rate of its concurrent calls"),
    Metric("agent_<i>_throughput_tok_s_solo", "tokens/s", Scope.AGENT, _HI, _C, "mean decode rate of its solo calls"),
    Metric("agent_<i>_tpot_ms_concurrent", "ms", Scope.AGENT, _LO, _C, "mean TPOT of its concurrent calls"),
    Metric("agent_<i>_tpot_ms_solo", "ms", Scope.AGENT, _LO, _C, "mean TPOT of its solo calls"),
    Metric("agent_<i>_output_tokens_concurrent", "tokens", Scope.AGENT, _NO, _S,
           "output tokens of its concurrent calls"),
    Metric("agent_<i>_output_tokens_solo", "tokens", Scope.AGENT, _NO, _S,
           "output tokens per solo phase (mean over its solo phases)"),
    Metric("agent_<i>_contended", "flag", Scope.AGENT, _LO, _C, "1 when the contention rule says so, else 0"),
    # -------------------------------------------------------------- system
    Metric("sys_cpu_pct", "%", Scope.SYSTEM, _NO, _H, "machine CPU busy (all cores)"),
    Metric("sys_core<i>_cpu_pct", "%", Scope.SYSTEM, _NO, _H, "CPU busy of core i"),
    Metric("sys_mem_used_mb", "MiB", Scope.SYSTEM, _NO, _H, "memory not available to new work"),
    Metric("sys_mem_pct", "%", Scope.SYSTEM, _NO, _H, "the same as a share of total memory"),
    Metric("sys_load_avg_1m", "tasks", Scope.SYSTEM, _NO, _H, "1-minute load average"),
    Metric("proc_<name>_cpu_pct", "% of a core", Scope.SYSTEM, _NO, _H, "CPU of a watched process and children"),
    Metric("proc_<name>_rss_mb", "MiB", Scope.SYSTEM, _NO, _H, "resident memory of a watched process and children"),
    Metric("proc_<name>_threads", "threads", Scope.SYSTEM, _NO, _H, "threads of a watched process and children"),
    Metric("proc_<name>_samples", "samples", Scope.SYSTEM, _NO, _H, "ticks at which the process was alive"),
    Metric("gpu<i>_util_pct", "%", Scope.SYSTEM, _NO, _H, "NVML utilisation of GPU i"),
    Metric("gpu<i>_mem_used_mb", "MiB", Scope.SYSTEM, _NO, _H, "device memory in use"),
    Metric("gpu<i>_power_w", "W", Scope.SYSTEM, _NO, _H, "board power draw"),
    Metric("gpu_available", "flag", Scope.SYSTEM, _NO, _H, "1 when NVML found a GPU, else 0 (GPU metrics absent)"),
    Metric("samples", "samples", Scope.SYSTEM, _NO, _H, "sampler ticks recorded"),
    Metric("sampler_cpu_ms", "ms", Scope.SYSTEM, _NO, _H, "CPU the sampler itself used"),
)  # fmt: skip

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

CALL_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.scope is Scope.CALL)
#: Suffixes of a per-call metric's run summary (the mean has none).
CALL_SUMMARY_SUFFIXES = ("_p50", "_p95")
#: Suffixes of a sampled system series' run summary.
SYSTEM_SUMMARY_SUFFIXES = ("_mean", "_max")
#: A measured call "paid a load" when the server charged at least this to it.
LOAD_THRESHOLD_MS = 100.0

_PLACEHOLDER = re.compile(r"<(i|name)>")
_PATTERNS = {"i": r"\d+", "name": r"[A-Za-z0-9_.-]+"}
_FAMILIES = [
    (re.compile("^" + _PLACEHOLDER.sub(lambda p: _PATTERNS[p.group(1)], re.escape(m.name)) + "$"), m)
    for m in METRICS
    if _PLACEHOLDER.search(m.name)
]


def lookup(name: str) -> Metric | None:
    """The catalogue entry of a logged metric name (summary suffixes and families resolved)."""
    found = BY_NAME.get(name) or _family(name)
    if found is not None:
        return found
    for suffix in CALL_SUMMARY_SUFFIXES:
        base = BY_NAME.get(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if base is not None and base.scope is Scope.CALL:
            return base
    for suffix in SYSTEM_SUMMARY_SUFFIXES:
        if name.endswith(suffix):
            base = BY_NAME.get(name.removesuffix(suffix)) or _family(name.removesuffix(suffix))
            if base is not None and base.scope is Scope.SYSTEM:
                return base
    return None


def _family(name: str) -> Metric | None:
    return next((metric for pattern, metric in _FAMILIES if pattern.match(name)), None)


def direction(name: str) -> Direction:
    """Which way is better for a logged metric name (NONE when unknown or neutral)."""
    metric = lookup(name)
    return metric.direction if metric is not None else Direction.NONE


def higher_is_better(name: str) -> bool:
    """For comparisons: True unless the catalogue says lower is better (raises for neutral metrics)."""
    which = direction(name)
    if which is Direction.NONE:
        raise ConfigError(
            f"<metric={name}> has no better direction in the catalogue (docs/metrics.md): "
            "say which is better (--higher-is-better or --lower-is-better)"
        )
    return which is Direction.HIGHER


def reported() -> list[str]:
    return [m.name for m in METRICS if m.reported]


def plotted() -> list[str]:
    return [m.name for m in METRICS if m.plotted]


def markdown_table() -> str:
    """The reference table of docs/metrics.md (between its catalogue markers)."""
    lines = ["| metric | unit | scope | better | side | definition |", "|---|---|---|---|---|---|"]
    for m in METRICS:
        lines.append(
            f"| `{m.name}` | {m.unit} | {m.scope} | {m.direction} | {m.side} | {m.definition} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cfexp.metrics.catalog > table.md
    sys.stdout.write(markdown_table() + "\n")
