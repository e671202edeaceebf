"""What makes MLflow's UI show cfexp's runs: the experiment's tags and the runs' names."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from cfexp.tracking.jobs import run_name, sweep_name
from cfexp.tracking.store import MlflowTracker, ui_tags
from cfexp.tracking.tags import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG


def test_a_new_experiment_is_a_machine_learning_one_with_the_key_metrics_as_columns(tmp_path: Path) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts")
    tags = MlflowClient(tracker.uri).get_experiment(tracker.experiment_id("study")).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert json.loads(tags[VIEW_TAG])["selectedColumns"] == [
        "metrics.`ttft_ms`", "metrics.`e2e_ms`", "metrics.`throughput_tok_s`"
    ]


def test_an_experiment_made_before_gets_the_tags_it_lacks_and_keeps_its_own(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowTracker(uri, tmp_path / "artifacts")  # creates the store
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("old", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    MlflowTracker(uri, tmp_path / "artifacts").experiment_id("old")
    tags = client.get_experiment(experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a kind someone chose in the UI stays
    assert tags[VIEW_TAG] == ui_tags()[VIEW_TAG]


def test_runs_are_named_by_what_the_sweep_varies() -> None:
    overrides = ["backend=sim", "temperature=0.6,0.8", "paths.root_dir=/tmp/x", "num_predict=4", "hydra.job.chdir=false"]
    assert sweep_name(Path("/out/multirun/14-02-51"), overrides, ["temperature"]) == (
        "sweep 14-02-51: temperature=0.6,0.8 | backend=sim num_predict=4"
    )
    assert sweep_name(Path("/out/x"), ["paths.root_dir=/tmp/x"], []) == "sweep x: defaults"
    job = ["backend=sim", "temperature=0.6", "paths.root_dir=/tmp/x"]
    assert run_name(job, ["temperature"]) == "temperature=0.6"
