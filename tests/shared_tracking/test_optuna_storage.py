"""The sweeper's storage and study on a real PostgreSQL, opened by several processes at once.

Workers of one search start together: on an empty database they all create
Optuna's tables, and they all find no study. Exactly one of them must
create the study (and so enqueue the baseline), the others load it, and
none may fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra_plugins.cfexp_sweeper._errors import SweepError
from hydra_plugins.cfexp_sweeper._objectives import Objective
from hydra_plugins.cfexp_sweeper._study import open_storage, open_study

REPO = Path(__file__).resolve().parents[2]
OBJECTIVES = [Objective("throughput_tok_s", "maximize")]

# One worker: wait for the common start time, open storage and study, print the outcome.
WORKER = """
import json, sys, time
from hydra_plugins.cfexp_sweeper._objectives import Objective
from hydra_plugins.cfexp_sweeper._study import open_storage, open_study
url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
storage = open_storage(url)
study, existed = open_study(storage, url, "shared", [Objective("throughput_tok_s", "maximize")], True)
print(json.dumps({"existed": existed, "study_id": study._study_id}))
"""


def test_workers_opening_a_new_storage_at_once_create_one_study(optuna_url: str, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    start = time.time() + 4  # every process imported Optuna by then
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), optuna_url, str(start)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert sorted(r["existed"] for r in results) == [False, True, True, True]
    assert len({r["study_id"] for r in results}) == 1


def test_an_existing_study_is_resumed_or_refused(optuna_url: str) -> None:
    storage = open_storage(optuna_url)
    _, existed = open_study(storage, optuna_url, "once", OBJECTIVES, load_if_exists=False)
    assert existed is False
    study, existed = open_study(storage, optuna_url, "once", OBJECTIVES, load_if_exists=True)
    assert existed is True and study.user_attrs["cfexp.objectives"] == ["throughput_tok_s"]
    with pytest.raises(SweepError, match="already exists"):
        open_study(storage, optuna_url, "once", OBJECTIVES, load_if_exists=False)


def test_a_bare_postgresql_url_uses_the_installed_driver(optuna_url: str) -> None:
    # psycopg2 is cfexp's dependency; SQLAlchemy 2.1 reads postgresql:// as psycopg 3.
    bare = optuna_url.replace("postgresql+psycopg2://", "postgresql://")
    storage = open_storage(bare)
    study, existed = open_study(storage, bare, "bare", OBJECTIVES, load_if_exists=True)
    assert existed is False and study.study_name == "bare"
