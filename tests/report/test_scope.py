"""Reports scoped to one design: the latest sweep by default, --sweep/--all to widen, designs never pooled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cfexp.errors import TrackingError
from cfexp.report import ReportOptions, generate_report
from cfexp.report.load import find_designs, is_infrastructure, prepare, select_scope
from tests.report.conftest import EXPERIMENT, NewStore

# The quick tour, logged into one experiment (start times in ms):
#   S1 `-m runtime=asyncio,uvloop repetition=0,1,2`                              t = 1000…
#   S3  the same sweep again, on another machine (other paths, binary, models)   t = 2000…
#   S2 `scenario=single_inference num_predict=32 -m repetition=0,1,2`            t = 3000…
#   R  `python -m cfexp` (a single run)                                          t = 4000
# RSS: the same for both runtimes within a sweep (±0.2), much lower with single_inference:
# pooled over everything, asyncio "uses less memory" than uvloop — a confound, not an effect.
RSS = {"asyncio": [30.0, 30.2, 29.8], "uvloop": [30.1, 29.9, 30.0], "single_inference": [20.0, 20.1, 19.9]}


def _params(runtime: str, scenario: str, num_predict: int, rep: int, machine: str, job: int) -> dict[str, object]:
    return {
        "language": "python", "runtime.name": runtime, "scenario.name": scenario, "num_predict": num_predict,
        "repetition": rep, "ctx": 512,
        # infrastructure: differs between machines and jobs, never a factor
        "paths.root_dir": f"/home/{machine}", "paths.cache_dir": f"/home/{machine}/.cache",
        "backend.binary": f"/opt/{machine}/ollama", "backend.models_dir": f"/data/{machine}",
        "backend.url": f"http://127.0.0.1:{11434 + job}", "topology.sample_interval_s": 0.5 if job % 2 else 0.25,
        "timeouts.call_s": 120 + job, "topology.host_lock": "auto", "tracking.uri": f"sqlite:///{machine}",
    }


@pytest.fixture
def tour(tmp_path: Path, new_store: NewStore) -> tuple[str, dict[str, str]]:
    uri, tracker = new_store(tmp_path)
    sweeps: dict[str, str] = {}
    for name, start, runtimes, scenario, num_predict, machine in (
        ("S1", 1000, ("asyncio", "uvloop"), "single_agent", 128, "a"),
        ("S3", 2000, ("asyncio", "uvloop"), "single_agent", 128, "b"),
        ("S2", 3000, ("asyncio",), "single_inference", 32, "a"),
    ):
        parent = tracker.start_run(EXPERIMENT, name, {"cfexp.sweep": "parent"}, start_time_ms=start)
        sweeps[name] = parent
        job = 0
        for runtime in runtimes:
            for rep in range(3):
                job += 1
                run = tracker.start_run(EXPERIMENT, f"{name} {runtime} {rep}", {"provenance": "measured"}, parent,
                                        start_time_ms=start + job)
                tracker.log_params(run, _params(runtime, scenario, num_predict, rep, machine, job))
                rss = RSS["single_inference" if scenario == "single_inference" else runtime][rep]
                tracker.log_metrics(run, {"agent_peak_rss_mb": rss, "ttft_ms": 50.0 + rep})
                tracker.end_run(run, "FINISHED")
        tracker.end_run(parent, "FINISHED")
    single = tracker.start_run(EXPERIMENT, "R", {"provenance": "measured"}, start_time_ms=4000)
    tracker.log_params(single, _params("asyncio", "single_agent", 128, 0, "a", 0))
    tracker.log_metrics(single, {"agent_peak_rss_mb": 30.0, "ttft_ms": 50.0})
    tracker.end_run(single, "FINISHED")
    sweeps["R"] = single
    return uri, sweeps


def test_the_default_scope_is_the_latest_sweep(tour: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    uri, sweeps = tour
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r")).read_text()
    assert f"Scope: the latest sweep `{sweeps['S2']}` of the 3 sweep(s) in the experiment; 13 other run(s) " \
           "not included (`--all` for every run, `--sweep ID…` to choose)." in text
    assert "**3 runs**: 3 finished" in text and "Mixed designs" not in text
    runs = pd.read_csv(tmp_path / "r" / "runs.csv")
    assert len(runs) == 3 and set(runs["run_name"]) == {"S2 asyncio 0", "S2 asyncio 1", "S2 asyncio 2"}


def test_sweeps_of_one_design_pool_and_infrastructure_is_never_a_factor(
    tour: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """S1 and S3 differ only in paths, binary, models folder, URLs, sample interval, timeouts: one design."""
    uri, sweeps = tour
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r",
                                         sweeps=(sweeps["S1"], sweeps["S3"]))).read_text()
    assert "Mixed designs" not in text
    assert "Swept factors (a config is one combination of them; its runs are its repetitions): `runtime`." in text
    configs = pd.read_csv(tmp_path / "r" / "configs.csv")
    assert sorted(configs["config"].unique()) == ["runtime=asyncio", "runtime=uvloop"]
    assert set(configs["n"]) == {6}
    comparisons = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    rss = comparisons[comparisons["metric"] == "agent_peak_rss_mb"].iloc[0]
    assert (rss["a"], rss["b"], rss["better"]) == ("asyncio", "uvloop", "no significant difference")


def test_pooling_designs_warns_and_stratifies(tour: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """--all: the quick tour's runs form 3 designs, each its own section; no comparison crosses them."""
    uri, sweeps = tour
    out = tmp_path / "r"
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=out, all_runs=True)).read_text()
    assert "Scope: every run of the experiment (`--all`): 3 sweep(s) and 1 run(s) outside any sweep." in text
    assert "> **Mixed designs**: these runs come from 3 designs" in text
    d1 = " ".join(f"`{s}`" for s in sorted((sweeps["S1"], sweeps["S3"])))
    assert f"| D1 | {d1} | 12 | `runtime` |" in text
    assert f"| D2 | `{sweeps['S2']}` | 3 | none |" in text
    assert "| D3 | (runs outside any sweep) | 1 | none |" in text
    assert "| `num_predict` | 128 | 32 | 128 |" in text
    assert "| `runtime` | swept: asyncio, uvloop | asyncio | asyncio |" in text
    assert "| `scenario` | single_agent | single_inference | single_agent |" in text
    for heading in ("## Design D1: measured runs (12 runs, 2 configs)", "## Design D2: measured runs (3 runs, 1 configs)",
                    "## Design D3: measured runs (1 runs, 1 configs)"):
        assert heading in text
    # Only D1 has something to compare, and only within itself: asyncio vs uvloop, same scenario and budget.
    assert sorted(p.name for p in out.glob("*comparisons.csv")) == ["D1_comparisons.csv"]
    comparisons = pd.read_csv(out / "D1_comparisons.csv")
    rss = comparisons[comparisons["metric"] == "agent_peak_rss_mb"].iloc[0]
    assert (rss["n_a"], rss["n_b"], rss["better"]) == (6, 6, "no significant difference")
    assert comparisons["welch_p_holm"].min() > 0.05


def test_an_unknown_sweep_is_refused_with_the_sweeps_there(tour: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    uri, sweeps = tour
    with pytest.raises(TrackingError, match=r"<sweep=nope> is not a sweep .* latest first: " + sweeps["S2"]):
        generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r", sweeps=("nope",)))


def test_with_a_filter_the_scope_still_knows_the_sweeps(tour: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """A filter leaves the parent runs out of MLflow's answer; the latest sweep with matching runs is S3."""
    uri, sweeps = tour
    text = generate_report(ReportOptions(EXPERIMENT, uri, out_dir=tmp_path / "r",
                                         filter_string="params.`runtime.name` = 'uvloop'")).read_text()
    assert f"Scope: the latest sweep `{sweeps['S3']}`" in text and "**3 runs**" in text


def _frame(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """(parent, runtime, ctx, repetition) -> runs, started in this order."""
    return pd.DataFrame([
        {"run_id": f"r{i:02d}", "parent_run_id": parent, "status": "FINISHED", "start_time": i,
         "params.runtime.name": runtime, "params.ctx": ctx, "params.repetition": str(rep),
         "metrics.ttft_ms": 50.0 + i}
        for i, (parent, runtime, ctx, rep) in enumerate(rows)
    ])


def test_a_test_slice_and_the_full_sweep_are_two_designs() -> None:
    """docs/reproduce-tr.md: a slice first, then the full sweep, into one experiment."""
    rows = [("slice", "tokio", "512", 0), ("slice", "asyncio", "512", 0)]
    rows += [("full", rt, ctx, rep) for rt in ("tokio", "asyncio") for ctx in ("512", "1024") for rep in range(3)]
    runs = _frame(rows)
    parents = pd.DataFrame({"run_id": ["slice", "full"], "start_time": [0, 5]})
    latest, scope = select_scope(runs, parents)
    assert set(latest["parent_run_id"]) == {"full"} and (scope.kind, scope.runs_left_out) == ("latest", 2)
    pooled = prepare(select_scope(runs, parents, all_runs=True)[0], parents, {})
    assert [(d.id, d.sweeps) for d in pooled.designs] == [("D1", ("slice",)), ("D2", ("full",))]
    assert pooled.designs[0].fixed["params.ctx"] == "512" and pooled.designs[1].levels["params.ctx"] == ("512", "1024")
    # The same sweep run twice (or resumed with more repetitions) is one design.
    again = _frame([(p, rt, "512", rep) for p in ("first", "second") for rt in ("tokio", "asyncio")
                    for rep in ((0, 1) if p == "first" else (2, 3))])
    (design,) = find_designs(prepare(again, parents, {}).runs)
    assert design.sweeps == ("first", "second") and design.factors == ["params.runtime.name"]


def test_infrastructure_keys() -> None:
    for key in ("paths.root_dir", "paths.cache_dir", "backend.binary", "backend.models_dir", "backend.url",
                "backend.urls", "backend.api_key", "topology.host_lock", "topology.sample_interval_s",
                "timeouts.call_s", "timeouts.server_start_s", "tracking.uri", "hydra.job.num", "trial.number",
                "resume", "backend.host", "backend.start_if_absent"):
        assert is_infrastructure(f"params.{key}"), key
    for key in ("runtime.name", "language", "backend.name", "backend.threads", "backend.slots", "backend.settings.x",
                "model.name", "model.file", "topology.warmup_calls", "ctx", "num_predict", "seed", "prompt_cache",
                "scenario.contention_threshold_pct"):
        assert not is_infrastructure(f"params.{key}"), key


def test_an_incomplete_grid_is_said_and_a_nested_factor_adds_no_combinations() -> None:
    """runtime fixes language (4 runtimes, 2 languages): 4 x 2 ctx = 8 combinations, not 16."""
    from cfexp.report.tables import grid_coverage

    language = {"asyncio": "python", "uvloop": "python", "tokio": "rust", "smol": "rust"}
    rows = [{"run_id": f"{rt}-{ctx}-{rep}", "parent_run_id": "s", "status": "FINISHED", "params.runtime.name": rt,
             "params.language": language[rt], "params.ctx": ctx, "params.repetition": str(rep)}
            for rt in language for ctx in ("512", "1024") for rep in range(2)]
    runset = prepare(pd.DataFrame(rows), pd.DataFrame(), {})
    assert runset.factors == ["params.language", "params.runtime.name", "params.ctx"]
    assert grid_coverage(runset.used, runset.factors) == (8, 8)
    # The jobs of one config all failed: 7 of 8.
    failed = pd.DataFrame(rows).assign(status=lambda f: f["status"].where(~f["run_id"].str.startswith("smol-1024"),
                                                                             "FAILED"))
    runset = prepare(failed, pd.DataFrame(), {})
    assert grid_coverage(runset.used, runset.factors) == (7, 8)
