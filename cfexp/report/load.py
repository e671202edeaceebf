"""Runs of the tracking store -> one DataFrame the report computes from.

Reads through :mod:`cfexp.tracking.query` only. Adds, per run:

- ``provenance`` (measured / simulated; never pooled),
- ``config``: a label made of the swept factors (the params whose values vary
  between the finished runs, ``repetition`` excepted), so that the runs of
  one config are its repetitions,
- ``used``: finished runs are used; failed, killed or unfinished runs are
  listed in the report and excluded from every statistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from cfexp.errors import TrackingError
from cfexp.tracking.query import search_runs

# Params that never define a config: where files go, the repetition index
# itself, and an Optuna trial's bookkeeping (study name, trial number).
_NOT_FACTORS = ("params.paths.", "params.tracking.", "params.hydra.", "params.trial.")
REPETITION = "params.repetition"
# Factors in the order the report shows them; others follow, sorted.
FACTOR_ORDER = (
    "params.language",
    "params.runtime.name",
    "params.topology.name",
    "params.scenario.name",
    "params.scenario.mode",
    "params.options_mode",
    "params.backend.name",
    "params.gpu_layers",
    "params.ctx",
    "params.temperature",
)
SHORT_NAMES = {
    "params.runtime.name": "runtime",
    "params.topology.name": "topology",
    "params.scenario.name": "scenario",
    "params.scenario.mode": "mode",
    "params.backend.name": "backend",
}
MISSING = "-"


@dataclass
class RunSet:
    """The runs a report is made of."""

    runs: pd.DataFrame  # one row per run (children and single runs), every status
    parents: pd.DataFrame  # the sweeps' parent runs, for the record
    factors: list[str] = field(default_factory=list)  # param columns that define a config
    source: dict[str, str] = field(default_factory=dict)

    @property
    def used(self) -> pd.DataFrame:
        return self.runs[self.runs["used"]]

    @property
    def excluded(self) -> pd.DataFrame:
        return self.runs[~self.runs["used"]]


def short(column: str) -> str:
    """params.runtime.name -> runtime; params.gpu_layers -> gpu_layers."""
    return SHORT_NAMES.get(column, column.removeprefix("params.").removeprefix("metrics."))


def sort_key(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, then strings: "60" < "120" < "abc"."""
    text = str(value)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def load_runs(uri: str, experiment: str, filter_string: str = "", parent_run_id: str | None = None) -> RunSet:
    frame = search_runs(uri, experiment, filter_string, parent_run_id)
    what = f"<experiment={experiment}>" + (f" <filter={filter_string!r}>" if filter_string else "")
    what += f" <parent={parent_run_id}>" if parent_run_id else ""
    if frame.empty:
        raise TrackingError(f"no runs match {what} in <tracking-uri={uri}>: check the name and filter")
    parents = frame[frame["is_parent"]].reset_index(drop=True)
    runs = frame[~frame["is_parent"]].reset_index(drop=True)
    if runs.empty:
        raise TrackingError(f"only sweep parent runs match {what}: their jobs recorded no runs")
    return prepare(runs, parents, {"tracking_uri": uri, "experiment": experiment,
                                   "filter": filter_string, "parent": parent_run_id or ""})


def prepare(runs: pd.DataFrame, parents: pd.DataFrame, source: dict[str, str]) -> RunSet:
    """Label provenance, usability and config of every run (pure)."""
    runs = runs.copy()
    runs["provenance"] = runs.get("tags.provenance", pd.Series(MISSING, index=runs.index)).fillna(MISSING)
    runs["used"] = runs["status"] == "FINISHED"
    factors = find_factors(runs[runs["used"]])
    for column in factors:
        runs[column] = runs[column].fillna(MISSING).astype(str)
    label = pd.Series("", index=runs.index)
    for column in factors:
        label = label + (" " if column != factors[0] else "") + f"{short(column)}=" + runs[column]
    runs["config"] = label if factors else "all"
    runs = runs.sort_values(["provenance", "config", "run_id"], key=_sorter, kind="stable").reset_index(drop=True)
    return RunSet(runs=runs, parents=parents, factors=factors, source=source)


def _sorter(column: pd.Series) -> pd.Series:
    if column.name == "config":
        return column.map(config_sort_key)
    return column


def config_sort_key(label: str) -> tuple[tuple[int, float, str], ...]:
    return tuple(sort_key(part.split("=", 1)[-1]) for part in str(label).split(" "))


def find_factors(finished: pd.DataFrame) -> list[str]:
    """Params that vary between finished runs, one column per distinct partition of the runs.

    ``runtime.name`` varies exactly with ``language`` when each language has one runtime: only the first
    (in :data:`FACTOR_ORDER`) is kept, so labels say each thing once; a
    secondary param (not in FACTOR_ORDER) fixed by the kept ones is dropped too.
    """
    candidates = [
        c for c in finished.columns
        if c.startswith("params.") and c != REPETITION and not c.startswith(_NOT_FACTORS)
    ]
    varying = [c for c in candidates if finished[c].fillna(MISSING).nunique() > 1]
    ordered = [c for c in FACTOR_ORDER if c in varying] + sorted(c for c in varying if c not in FACTOR_ORDER)
    kept: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for column in ordered:
        values = finished[column].fillna(MISSING)
        codes = tuple(pd.factorize(values)[0].tolist())
        if codes in seen:
            continue
        if column not in FACTOR_ORDER and kept:
            # A secondary key fixed by the main ones (scenario.agents by scenario) adds nothing.
            per_group = values.groupby([finished[k].fillna(MISSING) for k in kept]).nunique()
            if (per_group <= 1).all():
                continue
        seen.add(codes)
        kept.append(column)
    return kept
