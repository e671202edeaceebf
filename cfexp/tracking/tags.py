"""The names of the tags cfexp writes on MLflow runs, each written once.

The report and the sweepers read runs by these names; a value's meaning is in
docs/tracking.md.
"""

# On a sweep's parent run: "parent" (its job runs are linked to it by MLflow's parentRunId).
PARENT_TAG = "cfexp.sweep"
# On every job run: sha256 of its config without paths, tracking, trial, resume (resume=true).
CONFIG_HASH_TAG = "cfexp.config_hash"
# On a sweep's parent run: a hash of its overrides without ``resume``.
SWEEP_KEY_TAG = "cfexp.sweep_key"
# On a job run: its place in its sweep's run order (0 = first). A tag, never a
# param: not part of the config (nor of its hash), so no report takes it for a factor.
POSITION_TAG = "sweep.position"
# On a sweep's parent run: the run order (grid | shuffled | blocked), its seed, the number of jobs.
ORDER_TAG = "sweep.order"
SEED_TAG = "sweep.seed"
JOBS_TAG = "sweep.jobs"
# On a job run: why its numbers are doubtful (" | "-separated), and the metrics out of their range.
WARNINGS_TAG = "measurement_warnings"
OUT_OF_RANGE_TAG = "out_of_range_metrics"

# On every experiment cfexp creates: MLflow 3's experiment kind, "custom_model_development"
# (its UI's "Machine learning"): runs with metrics and params, not GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# On every experiment cfexp creates: a view of its runs table that the MLflow UI opens with
# ``?viewStateShareKey=cfexp`` (the key metrics as columns); the prefix is MLflow's own.
VIEW_KEY = "cfexp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
