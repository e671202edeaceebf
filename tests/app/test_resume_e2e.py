"""End to end: a sweep with a failed job, resumed with `resume=true` on the simulator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.app.test_e2e_sim import FAST_SIM, leftover_processes, run_cfexp, runs_of

pytestmark = pytest.mark.slow

HASH = "cfexp.config_hash"


def _children(tmp_path: Path) -> list:  # type: ignore[type-arg]
    return [r for r in runs_of(tmp_path) if r.data.tags.get("mlflow.parentRunId")]


def test_resume_runs_only_the_missing_jobs_under_the_same_parent(tmp_path: Path) -> None:
    """Invariant: after the resumed sweep every config of the sweep has exactly
    one FINISHED run, all under the first sweep's parent, and only the jobs
    that had not finished ran again."""
    base = (*FAST_SIM, "scenario=single_inference", "num_predict=4")
    # Job 3 gives the simulator a setting it rejects: its server does not start.
    first = run_cfexp(tmp_path, "-m", *base, "backend.settings.jitter_cv=0,0.01,0.02,-1")
    assert first.returncode == 1, first.stderr[-3000:]
    (parent,) = [r for r in runs_of(tmp_path) if r.data.tags.get("cfexp.sweep") == "parent"]
    assert parent.info.status == "FAILED"
    before = _children(tmp_path)
    assert len(before) == 4 and all(HASH in r.data.tags for r in before)
    finished_before = {r.data.tags[HASH]: r for r in before if r.info.status == "FINISHED"}
    assert len(finished_before) == 3

    # The same sweep folder, the fault removed (job 3 now asks for 0.03).
    second = run_cfexp(tmp_path, "-m", *base, "backend.settings.jitter_cv=0,0.01,0.02,0.03", "resume=true")
    assert second.returncode == 0, second.stderr[-3000:]

    parents = [r for r in runs_of(tmp_path) if r.data.tags.get("cfexp.sweep") == "parent"]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # reused, not a new one
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["failed_jobs"] == "0"
    after = _children(tmp_path)
    new_runs = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert [r.data.params["backend.settings.jitter_cv"] for r in new_runs] == ["0.03"]
    assert new_runs[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in after} == {parent.info.run_id}
    finished = Counter(r.data.tags[HASH] for r in after if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}

    statuses = {
        json.loads((tmp_path / "multirun" / str(n) / "cfexp_status.json").read_text())["status"] for n in range(3)
    }
    assert statuses == {"SKIPPED"}
    skipped_ids = {
        json.loads((tmp_path / "multirun" / str(n) / "cfexp_status.json").read_text())["run_id"] for n in range(3)
    }
    assert skipped_ids == {r.info.run_id for r in finished_before.values()}
    assert leftover_processes(tmp_path) == []


def test_without_resume_every_job_runs_again(tmp_path: Path) -> None:
    args = ("-m", *FAST_SIM, "scenario=single_inference", "num_predict=4", "temperature=0.6,0.8")
    assert run_cfexp(tmp_path, *args).returncode == 0
    done = run_cfexp(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(tmp_path)
    assert len([r for r in runs if r.data.tags.get("cfexp.sweep") == "parent"]) == 2
    assert Counter(r.data.tags[HASH] for r in runs if r.data.tags.get("mlflow.parentRunId")) == Counter(
        {h: 2 for h in {r.data.tags[HASH] for r in runs if HASH in r.data.tags}}
    )
