"""The default Optuna storage (SQLite) opened by several sweeps that start together."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.together import run_together

# Opens the storage at argv[1] when released, and the study "s" in it (created by whoever is first).
OPEN_THE_STUDY = """
from hydra_plugins.cfexp_sweeper._objectives import Objective
from hydra_plugins.cfexp_sweeper._study import open_storage, open_study
url = sys.argv[1]
go()
storage = open_storage(url)
study, existed = open_study(storage, url, "s", [Objective("ttft_ms", "minimize")], load_if_exists=True)
print("existed" if existed else "created")
"""


def test_sweeps_opening_a_new_sqlite_storage_together_all_succeed(tmp_path: Path) -> None:
    (tmp_path / "multirun" / "optuna").mkdir(parents=True)  # as default_storage() makes it
    url = f"sqlite:///{tmp_path}/multirun/optuna/optuna.db"
    results = run_together(OPEN_THE_STUDY, [[url]] * 3)
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert sorted(r.stdout.strip() for r in results) == ["created", "existed", "existed"]
    (study,) = optuna.get_all_study_summaries(storage=url)
    assert study.study_name == "s"
