"""The config hash that resume relies on, and which parent run a resumed sweep reuses."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from cfexp.app.hydra_job import settings_tree
from cfexp.config.validate import to_settings
from cfexp.tracking import resume
from cfexp.tracking.jobs import start_parent
from cfexp.tracking.resume import VOLATILE_KEYS, config_hash, finished_run, parent_to_reuse, sweep_key
from cfexp.tracking.store import MlflowTracker, Tracker
from cfexp.tracking.sweep_file import PARENT_FILE

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ("backend=sim", "scenario=single_agent", "temperature=0.6")

_HASH_IN_A_NEW_PROCESS = textwrap.dedent(
    """
    import sys
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict
    from cfexp.config.schema import register_configs
    from cfexp.app.hydra_job import settings_tree
    from cfexp.config.validate import to_settings
    from cfexp.tracking.resume import config_hash

    register_configs()
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = compose("config", overrides=sys.argv[2:], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    print(config_hash(settings_tree(to_settings(cfg))))
    """
)


def _tree(cfg: DictConfig) -> dict[str, Any]:
    """What a job run hashes: its typed settings as a tree (cfexp.app.hydra_job.settings_tree)."""
    return settings_tree(to_settings(cfg))


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, node


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return "set" if value is None else None


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(tree)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


def test_the_hash_is_the_same_in_another_process_and_with_other_output_paths(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    here = config_hash(_tree(compose_cfg(*OVERRIDES)))
    elsewhere = tmp_path / "elsewhere"
    done = subprocess.run(
        [sys.executable, "-c", _HASH_IN_A_NEW_PROCESS, str(REPO / "conf"), *reversed(OVERRIDES),
         f"paths.root_dir={elsewhere}", "resume=true", "tracking.experiment=other", "trial.number=7"],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.stdout.strip() == here
    assert len(here) == 64


def test_every_measured_setting_changes_the_hash(compose_cfg: Callable[..., DictConfig]) -> None:
    config = _tree(compose_cfg(*OVERRIDES))
    base = config_hash(config)
    measured = [(path, value) for path, value in _leaves(config) if path[0] not in VOLATILE_KEYS]
    assert len(measured) > 40  # the whole config, not a chosen few keys
    for path, value in measured:
        assert config_hash(_set(config, path, _changed(value))) != base, ".".join(path)
    for path, value in _leaves(config):
        if path[0] in VOLATILE_KEYS:
            assert config_hash(_set(config, path, _changed(value))) == base, ".".join(path)


def test_volatile_keys_do_not_change_the_hash(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    base = config_hash(_tree(compose_cfg(*OVERRIDES)))
    assert config_hash(_tree(compose_cfg(*OVERRIDES, "resume=true", "tracking.uri=sqlite:///x.db"))) == base
    assert config_hash(_tree(compose_cfg(*OVERRIDES, "temperature=0.7"))) != base
    assert config_hash(_tree(compose_cfg(*OVERRIDES, "repetition=1"))) != base


def test_a_changed_api_key_does_not_change_the_hash(compose_cfg: Callable[..., DictConfig]) -> None:
    """The key is a secret, not a setting: a rotated key finds the same FINISHED runs (resume)."""
    openai = ("backend=openai", "backend.url=http://127.0.0.1:8000", "scenario=single_inference")
    first = _tree(compose_cfg(*openai, "backend.api_key=sk-first-0123456789"))
    second = _tree(compose_cfg(*openai, "backend.api_key=sk-second-9876543210"))
    assert "sk-first" not in str(first)  # masked in what is logged and hashed
    assert config_hash(first) == config_hash(second)
    assert config_hash(_tree(compose_cfg(*openai, "backend.api_key=sk-first-0123456789", "temperature=0.7"))) != (
        config_hash(first)
    )


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts")


def _parent(tracker: Tracker, overrides: list[str], status: str) -> str:
    run_id = tracker.start_run(
        "e", "sweep", {"cfexp.sweep": "parent", "cfexp.sweep_key": sweep_key(overrides)}
    )
    tracker.end_run(run_id, status)
    return run_id


def test_the_latest_unfinished_parent_with_the_same_overrides_is_reused(tracker: Tracker, tmp_path: Path) -> None:
    sweep = ["temperature=0.6,0.8", "ctx=512"]
    unfinished = _parent(tracker, sweep, "FAILED")
    _parent(tracker, sweep, "FINISHED")
    _parent(tracker, ["temperature=0.6,0.9"], "KILLED")
    resumed = ["ctx=512", "resume=true", "temperature=0.6,0.8"]  # any order, plus resume
    assert parent_to_reuse(tracker, "e", resumed, tmp_path) == unfinished
    assert parent_to_reuse(tracker, "e", ["temperature=0.1,0.2"], tmp_path) is None


def test_when_every_parent_finished_the_latest_is_reused(tracker: Tracker, tmp_path: Path) -> None:
    sweep = ["temperature=0.6,0.8"]
    _parent(tracker, sweep, "FINISHED")
    latest = _parent(tracker, sweep, "FINISHED")
    assert parent_to_reuse(tracker, "e", sweep, tmp_path) == latest


def test_start_parent_reopens_the_parent_of_the_sweep_folder(tracker: Tracker, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    first = start_parent(tracker, "e", sweep_dir, ["temperature=0.6,0.8"], [], resume=False)
    tracker.end_run(first, "KILLED")
    assert (sweep_dir / PARENT_FILE).exists()
    # Other overrides (a fault removed), same folder: the folder's parent wins.
    again = start_parent(tracker, "e", sweep_dir, ["temperature=0.6,0.7", "resume=true"], [], resume=True)
    assert again == first
    assert tracker.get_run(first).info.status == "RUNNING"
    assert start_parent(tracker, "e", sweep_dir, ["temperature=0.6,0.7"], [], resume=False) != first


def test_finished_run_finds_only_finished_runs_of_the_hash(tracker: Tracker) -> None:
    failed = tracker.start_run("e", "a", {"cfexp.config_hash": "h1"})
    tracker.end_run(failed, "FAILED")
    assert finished_run(tracker, "e", "h1") is None
    done = tracker.start_run("e", "b", {"cfexp.config_hash": "h1"})
    tracker.log_metrics(done, {"ttft_ms": 12.5})
    tracker.end_run(done, "FINISHED")
    earlier = finished_run(tracker, "e", "h1")
    assert earlier is not None and earlier.run_id == done and earlier.metrics == {"ttft_ms": 12.5}
    assert finished_run(tracker, "e", "h2") is None
    newer = tracker.start_run("e", "c", {"cfexp.config_hash": "h1"}, start_time_ms=2_000_000_000_000)
    tracker.end_run(newer, "FINISHED")
    later_first = tracker.start_run("e", "d", {"cfexp.config_hash": "h1"}, start_time_ms=1_000_000_000_000)
    tracker.end_run(later_first, "FINISHED")  # started earlier, though written last
    found = finished_run(tracker, "e", "h1")
    assert found is not None and found.run_id == newer  # the latest by start time


def test_the_duration_estimate_reads_the_latest_runs_only_and_times_their_finished_jobs(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's estimate must not read a big experiment whole at every start (10,000 runs: 11 s)."""
    monkeypatch.setattr(resume, "ESTIMATE_RUNS", 2)
    for start_s, took_s, status in [(100, 1, "FINISHED"), (200, 2, "FINISHED"), (300, 3, "FAILED"), (400, 4, "FINISHED")]:
        run_id = tracker.start_run("e", f"job {start_s}", {}, start_time_ms=start_s * 1000)
        tracker.end_run(run_id, status, end_time_ms=(start_s + took_s) * 1000)
    parent = tracker.start_run("e", "sweep", {"cfexp.sweep": "parent"}, start_time_ms=500_000)
    tracker.end_run(parent, "FINISHED", end_time_ms=600_000)
    # The two newest runs are the parent (left out) and the 4 s job.
    assert resume.finished_durations_s(tracker, "e") == [4.0]
    # The three newest add the FAILED job: left out.
    monkeypatch.setattr(resume, "ESTIMATE_RUNS", 3)
    assert resume.finished_durations_s(tracker, "e") == [4.0]
    monkeypatch.setattr(resume, "ESTIMATE_RUNS", 4)
    assert resume.finished_durations_s(tracker, "e") == [4.0, 2.0]


class _ThroughTheClient:
    """The same store read through MLflow's client: the path a store other than local SQLite takes."""

    uri = "http://tracking.invalid"

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def search_runs(self, experiment: str, filter_string: str = "", latest: int = 10_000) -> Any:
        return self._tracker.search_runs(experiment, filter_string, latest)


def test_the_estimate_read_from_sqlite_agrees_with_mlflows_client(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local store's estimate is read from MLflow's tables: the same durations, for each cut of the latest runs."""
    for start_s, took_s, status in [(100, 1, "FINISHED"), (200, 2, "FINISHED"), (300, 3, "FAILED"),
                                    (350, 7, "FINISHED"), (400, 4, "FINISHED"), (450, 5, "FINISHED")]:
        run_id = tracker.start_run("e", f"job {start_s}", {}, start_time_ms=start_s * 1000)
        tracker.end_run(run_id, status, end_time_ms=(start_s + took_s) * 1000)
        if start_s == 350:
            tracker.delete_run(run_id)  # deleted: in neither read
    parent = tracker.start_run("e", "sweep", {"cfexp.sweep": "parent"}, start_time_ms=500_000)
    tracker.end_run(parent, "FINISHED", end_time_ms=600_000)
    tracker.start_run("e", "still running", {}, start_time_ms=550_000)
    other = tracker.start_run("other", "job", {}, start_time_ms=560_000)
    tracker.end_run(other, "FINISHED", end_time_ms=569_000)
    for latest in range(1, 9):
        monkeypatch.setattr(resume, "ESTIMATE_RUNS", latest)
        from_sqlite = resume.finished_durations_s(tracker, "e")
        assert from_sqlite == resume.finished_durations_s(_ThroughTheClient(tracker), "e"), latest  # type: ignore[arg-type]
    assert from_sqlite == [5.0, 4.0, 2.0, 1.0]
    assert resume.finished_durations_s(tracker, "no such experiment") == []
