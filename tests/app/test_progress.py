"""What a command says on screen (issue 13, item 2): a line per job, a table, where to look."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cfexp.app.progress import Where, final_table, headline, job_line, key_metrics, swept_among, varied
from cfexp.app.status import JobStatus
from tests.app.test_e2e_sim import FAST_SIM, run_cfexp, runs_of

METRICS = {"ttft_ms": 41.25, "throughput_tok_s": 55.0, "e2e_ms": 812.0, "calls_total": 3.0, "calls_failed": 1.0,
           "agent_cpu_ms": 12.0, "parallel_efficiency_pct": float("nan")}  # fmt: skip


def test_key_metrics_keep_the_few_numbers_a_line_shows() -> None:
    assert key_metrics(METRICS) == {"ttft_ms": 41.25, "throughput_tok_s": 55.0, "e2e_ms": 812.0,
                                    "calls_total": 3.0, "calls_failed": 1.0}  # fmt: skip
    assert headline(key_metrics(METRICS)) == "ttft_ms 41.2 · throughput_tok_s 55.0 · e2e_ms 812.0 · calls 2/3 ok"
    assert headline(None) == "" and key_metrics(None) == {}


def test_a_job_line_shows_the_swept_values_the_numbers_and_the_eta() -> None:
    job = JobStatus("FINISHED", ["backend=sim", "temperature=0.6", "ctx=512"], run_id="r1", metrics=key_metrics(METRICS))
    line = job_line(2, 8, job, 30.0, swept={"temperature"})
    assert line == ("cfexp [2/8] FINISHED temperature=0.6 | ttft_ms 41.2 · throughput_tok_s 55.0 · e2e_ms 812.0 · "
                    "calls 2/3 ok | 0m30s elapsed, about 1m30s to go")  # 15 s per job, 6 to go  # fmt: skip
    last = job_line(8, 8, job, 3725.0)
    assert last.endswith("| 1h02m elapsed") and "to go" not in last and "backend=sim temperature=0.6 ctx=512" in last
    assert job_line(3, None, JobStatus("FAILED", []), 5.0) == "cfexp [3] FAILED defaults | 0m05s elapsed"


def test_the_final_table_has_a_row_per_job_with_its_run_id() -> None:
    statuses = [
        JobStatus("FINISHED", ["backend=sim", "temperature=0.6"], run_id="aaa", folder="0", metrics={"ttft_ms": 10.0}),
        JobStatus("FAILED", ["backend=sim", "temperature=0.8"], error="boom", run_id="bbb", folder="1"),
    ]
    assert swept_among(statuses) == {"temperature"}
    lines = final_table(statuses).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["#", "status", "swept values", "key metrics", "run id"]
    assert re.split(r"\s{2,}", lines[1]) == ["0", "FINISHED", "temperature=0.6", "ttft_ms 10.0", "aaa"]
    assert re.split(r"\s{2,}", lines[2]) == ["1", "FAILED", "temperature=0.8", "-", "bbb"]
    assert varied(["+a=1", "b=2"], {"a"}) == "+a=1" and varied([], None) == "defaults"


def test_where_to_look_names_the_store_only_when_it_is_not_the_default() -> None:
    default = Where("multirun/x", "cfexp", "p1", "sqlite:////w/mlruns/mlflow.db", "/w/mlruns", sweep=True,
                    default_store=True).text()  # fmt: skip
    assert "cfexp ui   (http://127.0.0.1:5000)" in default and "cfexp report --experiment cfexp\n" in default + "\n"
    assert "sweep (parent run) p1" in default
    other = Where("out", "tr112", "r1", "sqlite:////t/mlruns/mlflow.db", "/t/mlruns", sweep=False,
                  default_store=False).text()  # fmt: skip
    assert "cfexp ui --mlruns /t/mlruns" in other and "report" not in other and "run r1 in experiment 'tr112'" in other


@pytest.mark.slow
def test_a_sweep_prints_a_line_per_job_then_the_table_and_where_to_look(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4", "temperature=0.6,0.8")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"^cfexp \[1/2\] FINISHED temperature=0\.\d \| ttft_ms .* \| \dm\d\ds elapsed, about", out, re.M)
    assert re.search(r"^cfexp \[2/2\] FINISHED temperature=0\.\d \| .*calls 1/1 ok \| \dm\d\ds elapsed$", out, re.M)
    runs = {r.info.run_id: r for r in runs_of(tmp_path)}
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId")]
    table = out.split("cfexp: 2 job(s), 0 failed", 1)[1]
    for child in children:  # each row names its run, with the value it ran
        row = next(line for line in table.splitlines() if child.info.run_id in line)
        assert f"temperature={child.data.params['temperature']}" in row and "FINISHED" in row
    (parent,) = [r for r in runs.values() if r.data.tags.get("cfexp.sweep") == "parent"]
    assert f"sweep (parent run) {parent.info.run_id}" in table
    assert f"cfexp ui --mlruns {tmp_path}/mlruns" in table and "cfexp report --experiment cfexp --tracking-uri" in table
    assert "httpx" not in done.stderr + out  # no request lines by default


@pytest.mark.slow
def test_a_single_run_ends_with_its_numbers_and_its_run(tmp_path: Path) -> None:
    done = run_cfexp(tmp_path, *FAST_SIM, "scenario=single_inference", "num_predict=4")
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    assert re.search(r"^cfexp: FINISHED \| ttft_ms [\d.]+ · throughput_tok_s [\d.]+ · e2e_ms [\d.]+ · calls 1/1 ok$",
                     done.stdout, re.M)  # fmt: skip
    assert f"run {run.info.run_id} in experiment 'cfexp'" in done.stdout
    verbose = run_cfexp(tmp_path, *FAST_SIM, "scenario=single_inference", "num_predict=4", "hydra.verbose=httpx")
    assert "HTTP Request: POST" in verbose.stderr + verbose.stdout  # brought back on request
