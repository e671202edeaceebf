"""`cfexp report` end to end on a small store made with cfexp's Tracker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cfexp.errors import TrackingError
from cfexp.report import ReportOptions, generate_report
from cfexp.report.writer import TIMESTAMP_PREFIX
from cfexp.tracking import query
from tests.report.conftest import EXPERIMENT

REPO = Path(__file__).resolve().parents[2]


def _report(store: str, out: Path, **kwargs: object) -> str:
    path = generate_report(ReportOptions(EXPERIMENT, store, out_dir=out, **kwargs))  # type: ignore[arg-type]
    return path.read_text()


def test_report_has_the_expected_sections_and_csvs(store: str, tmp_path: Path) -> None:
    text = _report(store, tmp_path / "rep")
    assert "**13 runs**: 12 finished and used; 1 failed" in text
    for heading in ("## Environment and provenance", "### Per-config statistics", "#### throughput_tok_s",
                    "### Rust vs Python", "### Comparisons along the swept dimensions",
                    "### Optimization success rate", "### Run order", "### Failed, killed or unfinished runs",
                    "agent crashed"):
        assert heading in text, heading
    assert "| agent_startup_ms (lower better) |" in text and "| Rust |" in text
    configs = pd.read_csv(tmp_path / "rep" / "configs.csv")
    tput = configs[(configs["metric"] == "throughput_tok_s")]
    assert sorted(tput["n"]) == [3, 3, 3, 3]
    assert tput["p99"].max() < 1000  # the FAILED run's 1e6 reached no statistic
    assert all(len(ids.split()) == 3 for ids in tput["run_ids"])
    success = pd.read_csv(tmp_path / "rep" / "success_rates.csv")
    assert list(success["group"]) == ["python", "rust"]
    assert list(success["gated_successes"]) == [0, 1]
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    assert len(runs) == 13 and (runs["status"] == "FAILED").sum() == 1
    assert sorted(p.name for p in (tmp_path / "rep").glob("*.png"))  # figures drawn


def test_same_runs_same_report(store: str, tmp_path: Path) -> None:
    def without_timestamp(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith(TIMESTAMP_PREFIX)]

    first, second = _report(store, tmp_path / "a"), _report(store, tmp_path / "b")
    assert without_timestamp(first) == without_timestamp(second)
    for name in sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix in (".csv", ".png")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_filter_and_sweep_select_runs(store: str, tmp_path: Path) -> None:
    text = _report(store, tmp_path / "f", filter_string="params.options_mode = 'configured'")
    assert "**7 runs**" in text and "Optimization success rate" not in text
    frame = query.search_runs(store, EXPERIMENT)
    parent = frame.loc[frame["is_parent"], "run_id"].iloc[0]
    assert "**13 runs**" in _report(store, tmp_path / "p", sweeps=(parent,))


def test_the_sql_fast_path_and_mlflows_client_agree(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = query.search_runs(store, EXPERIMENT)
    monkeypatch.setenv("CFEXP_QUERY_VIA_MLFLOW", "1")
    slow = query.search_runs(store, EXPERIMENT)
    pd.testing.assert_frame_equal(fast[sorted(fast.columns)], slow[sorted(slow.columns)], check_dtype=False)


def test_no_matching_runs_is_a_clear_error(store: str, tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="no runs match"):
        _report(store, tmp_path / "x", filter_string="params.ctx = '9999'")
    with pytest.raises(TrackingError, match="no experiment <experiment=nope>.*reporttest"):
        generate_report(ReportOptions("nope", store, out_dir=tmp_path / "y"))


@pytest.mark.slow
def test_cli_exits_non_zero_without_runs(store: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "cfexp.cli", "report", "--experiment", "nope", "--tracking-uri", store,
         "--out", str(tmp_path / "z")], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no experiment <experiment=nope>" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "cfexp.cli", "report", "--experiment", EXPERIMENT, "--tracking-uri", store,
         "--out", str(tmp_path / "ok")], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ok" / "report.md").is_file()


def test_the_default_output_folder_is_reports_and_the_experiment_name(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = generate_report(ReportOptions(EXPERIMENT, store))
    assert path == Path("reports") / EXPERIMENT / "report.md" and path.exists()
