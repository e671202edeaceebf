"""Runs of the tracking store -> one DataFrame the report computes from.

Reads through :mod:`cfexp.tracking.query` only (:func:`load_runs`); the rest
is pure. Adds, per run:

- ``provenance`` (measured / simulated; never pooled);
- ``design``: which *design* the run belongs to. A design is a group of sweeps
  with the same fixed (non-swept) config and the same grid; runs of different
  designs are never pooled (each gets its own section), because a comparison
  pooled over sweeps that differ in more than the factor compared is confounded;
- ``config``: a label made of its design's swept factors (the params whose
  values vary between the design's finished runs, ``repetition`` and
  infrastructure keys aside), so that the runs of one config are its repetitions;
- ``used``: finished runs are used; failed, killed or unfinished runs are
  listed in the report and excluded from every statistic;
- ``position``: the run's position in its sweep (its ``sweep.position`` tag,
  else the rank of its start time), for the run-order trend check;
- ``warnings``/``warning_text``: its measurement warnings (count, sentences).

A metric value outside its physical range (named by the run's
``out_of_range_metrics`` tag, or beyond the catalogue's bound by more than the
run's noise floor) is removed from the frame and listed in
:attr:`RunSet.out_of_range`: it reaches no statistic, ranking or rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from cfexp.errors import TrackingError
from cfexp.metrics import catalog
from cfexp.metrics.multi import MIN_TOLERANCE_PCT
from cfexp.tracking import tags
from cfexp.tracking.query import search_runs

REPETITION = "params.repetition"
# Keys that say where things are or how the harness runs, never what is measured:
# they are never comparison factors and never make two sweeps different designs.
INFRASTRUCTURE_PREFIXES = ("params.paths.", "params.tracking.", "params.hydra.", "params.trial.", "params.timeouts.")
INFRASTRUCTURE_KEYS = frozenset({
    "params.backend.binary",  # server program path
    "params.backend.models_dir",  # models folder
    "params.backend.url",
    "params.backend.urls",
    "params.backend.api_key",
    "params.backend.host",  # bind address (loopback)
    "params.backend.start_if_absent",
    "params.topology.host_lock",
    "params.topology.sample_interval_s",
    "params.scenario.drift_warn_pct",  # when to warn, not what is measured
    "params.resume",
})
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
POSITION_TAG = "tags." + tags.POSITION_TAG
ORDER_TAG = "tags." + tags.ORDER_TAG
SEED_TAG = "tags." + tags.SEED_TAG
WARNINGS_TAG = "tags." + tags.WARNINGS_TAG
WARNINGS_METRIC = "metrics.measurement_warnings"
OUT_OF_RANGE_TAG = "tags." + tags.OUT_OF_RANGE_TAG
# Separator of the sentences of a run's measurement_warnings tag.
WARNING_SEPARATOR = " | "


@dataclass(frozen=True)
class Design:
    """Sweeps with the same fixed config and the same grid: their runs may be pooled."""

    id: str  # D1, D2, … in order of their first run
    sweeps: tuple[str, ...]  # parent run ids; "" stands for runs outside any sweep
    factors: list[str]  # param columns that vary within the design: its configs
    fixed: dict[str, str]  # every other param that could be a factor: its one value
    levels: dict[str, tuple[str, ...]]  # swept keys with their values
    run_ids: frozenset[str] = frozenset()  # its runs, every status


@dataclass(frozen=True)
class Scope:
    """Which runs of the experiment the report covers, and what it left out."""

    kind: str  # "latest" (default), "sweeps" (--sweep), "all" (--all), "no sweeps" (the experiment has none)
    sweeps: tuple[str, ...]  # the selected sweeps' parent run ids
    sweeps_in_experiment: int
    runs_left_out: int  # runs of the experiment (matching the filter) outside the scope


@dataclass
class RunSet:
    """The runs a report is made of."""

    runs: pd.DataFrame  # one row per run (children and single runs), every status
    parents: pd.DataFrame  # the sweeps' parent runs (all of the experiment's, for their tags)
    designs: list[Design] = field(default_factory=list)
    source: dict[str, str] = field(default_factory=dict)
    scope: Scope = field(default_factory=lambda: Scope("all", (), 0, 0))
    # Values removed as outside their physical range: run_id, config, metric, value, reason.
    out_of_range: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def used(self) -> pd.DataFrame:
        return self.runs[self.runs["used"]]

    @property
    def excluded(self) -> pd.DataFrame:
        return self.runs[~self.runs["used"]]

    @property
    def factors(self) -> list[str]:
        """Every design's factors, in report order."""
        seen = [f for d in self.designs for f in d.factors]
        return order_factors(list(dict.fromkeys(seen)))

    def design(self, design_id: str) -> Design:
        return next(d for d in self.designs if d.id == design_id)


def short(column: str) -> str:
    """params.runtime.name -> runtime; params.gpu_layers -> gpu_layers."""
    return SHORT_NAMES.get(column, column.removeprefix("params.").removeprefix("metrics."))


def sort_key(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, then strings: "60" < "120" < "abc"."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return (1, 0.0, text)
    return (0, number, text) if math.isfinite(number) else (1, 0.0, text)


def is_infrastructure(column: str) -> bool:
    return column in INFRASTRUCTURE_KEYS or column.startswith(INFRASTRUCTURE_PREFIXES)


def load_runs(
    uri: str, experiment: str, filter_string: str = "", sweeps: tuple[str, ...] = (), all_runs: bool = False
) -> RunSet:
    """The runs of the report's scope: the latest sweep by default, ``sweeps``, or ``all_runs``."""
    frame = search_runs(uri, experiment, filter_string)
    what = f"<experiment={experiment}>" + (f" <filter={filter_string!r}>" if filter_string else "")
    if frame.empty:
        raise TrackingError(f"no runs match {what} in <tracking-uri={uri}>: check the name and filter")
    # A filter leaves the parents out (their params differ): they are read apart, for scope and tags.
    parents = frame if not filter_string else search_runs(uri, experiment, "")
    parents = parents[parents["is_parent"]].reset_index(drop=True)
    children = frame[~frame["is_parent"]].reset_index(drop=True)
    runs, scope = select_scope(children, parents, sweeps, all_runs)
    if runs.empty and scope.kind == "sweeps":
        raise TrackingError(f"no job runs match {what} in <sweep={','.join(sweeps)}>: its jobs recorded no runs "
                            "(or none matches the filter); --all reports every run of the experiment")
    if runs.empty:
        raise TrackingError(f"only sweep parent runs match {what}: their jobs recorded no runs")
    source = {"tracking_uri": uri, "experiment": experiment, "filter": filter_string}
    return prepare(runs, parents, source, scope)


def select_scope(
    runs: pd.DataFrame, parents: pd.DataFrame, sweeps: tuple[str, ...] = (), all_runs: bool = False
) -> tuple[pd.DataFrame, Scope]:
    """The runs of the scope: every run, the children of ``sweeps``, or of the latest sweep with runs."""
    parent_of = runs["parent_run_id"].fillna("") if "parent_run_id" in runs.columns else pd.Series("", runs.index)
    known = list(parents["run_id"]) if "run_id" in parents.columns else []
    if all_runs:
        return runs, Scope("all", tuple(sorted(set(parent_of) - {""})), len(known), 0)
    if sweeps:
        unknown = [s for s in sweeps if s not in known]
        if unknown:
            raise TrackingError(
                f"<sweep={','.join(unknown)}> is not a sweep (parent run) of the experiment; its sweeps, "
                f"latest first: {_sweep_list(parents)}. Pass their ids to --sweep, or --all"
            )
        keep = parent_of.isin(sweeps)
        return runs[keep], Scope("sweeps", tuple(sorted(sweeps)), len(known), int((~keep).sum()))
    with_runs = parents[parents["run_id"].isin(set(parent_of))] if known else parents
    if with_runs.empty:
        return runs, Scope("no sweeps", (), len(known), 0)
    latest = str(_latest_first(with_runs)["run_id"].iloc[0])
    keep = parent_of == latest
    return runs[keep], Scope("latest", (latest,), len(known), int((~keep).sum()))


def _latest_first(parents: pd.DataFrame) -> pd.DataFrame:
    start = _numbers(parents, "start_time").fillna(-1)
    return parents.assign(_start=start).sort_values(["_start", "run_id"], ascending=[False, True])


def _sweep_list(parents: pd.DataFrame) -> str:
    if parents.empty:
        return "none (no sweep was run)"
    rows = _latest_first(parents).head(10)
    listed = ", ".join(f"{r['run_id']} ({r.get('run_name') or 'sweep'})" for _, r in rows.iterrows())
    return listed + (f", and {len(parents) - 10} more" if len(parents) > 10 else "")


def prepare(
    runs: pd.DataFrame, parents: pd.DataFrame, source: dict[str, str], scope: Scope | None = None
) -> RunSet:
    """Label provenance, usability, design, config, position and warnings of every run (pure)."""
    runs = runs.copy()
    if "parent_run_id" not in runs.columns:
        runs["parent_run_id"] = ""
    runs["parent_run_id"] = runs["parent_run_id"].fillna("")
    runs["provenance"] = _texts(runs, "tags.provenance", MISSING)
    runs["used"] = runs["status"] == "FINISHED"
    runs, out_of_range = remove_out_of_range(runs)
    runs["warnings"], runs["warning_text"] = measurement_warnings(runs)
    runs["position"], runs["position_source"] = positions(runs)
    designs = find_designs(runs)
    runs["design"] = ""
    runs["config"] = "all"
    for design in designs:
        mine = runs["run_id"].isin(design.run_ids)
        runs.loc[mine, "design"] = design.id
        for column in design.factors:
            runs.loc[mine, column] = runs.loc[mine, column].fillna(MISSING).astype(str)
        if design.factors:
            label = pd.Series("", index=runs.index[mine])
            for index, column in enumerate(design.factors):
                label = label + (" " if index else "") + f"{short(column)}=" + runs.loc[mine, column].astype(str)
            runs.loc[mine, "config"] = label
    runs = runs.sort_values(["provenance", "design", "config", "run_id"], key=_sorter, kind="stable")
    runs = runs.reset_index(drop=True)
    if not out_of_range.empty:
        config = runs.set_index("run_id")["config"]
        out_of_range.insert(1, "config", out_of_range["run_id"].map(config))
    return RunSet(runs=runs, parents=parents, designs=designs, source=source,
                  scope=scope or Scope("all", (), 0, 0), out_of_range=out_of_range)


def _sorter(column: pd.Series) -> pd.Series:
    if column.name == "config":
        keys = {label: config_sort_key(label) for label in column.unique()}  # each label once, not each run
        return column.map(keys)
    if column.name == "design":
        return column.map(lambda d: (len(d), d))  # D2 before D10
    return column


def config_sort_key(label: str) -> tuple[tuple[int, float, str], ...]:
    return tuple(sort_key(part.split("=", 1)[-1]) for part in str(label).split(" "))


def candidate_params(frame: pd.DataFrame) -> list[str]:
    """Param columns that could be comparison factors (repetition and infrastructure aside)."""
    return sorted(
        c for c in frame.columns if c.startswith("params.") and c != REPETITION and not is_infrastructure(c)
    )


def order_factors(columns: list[str]) -> list[str]:
    return [c for c in FACTOR_ORDER if c in columns] + sorted(c for c in columns if c not in FACTOR_ORDER)


def find_factors(finished: pd.DataFrame) -> list[str]:
    """Params that vary between finished runs, one column per distinct partition of the runs.

    ``runtime.name`` varies exactly with ``language`` when each language has one runtime: only the first
    (in :data:`FACTOR_ORDER`) is kept, so labels say each thing once; a
    secondary param (not in FACTOR_ORDER) fixed by the kept ones is dropped too.
    """
    varying = [c for c in candidate_params(finished) if finished[c].fillna(MISSING).nunique() > 1]
    kept: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for column in order_factors(varying):
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


# ------------------------------------------------------------------ designs

Signature = tuple[tuple[str, tuple[str, ...]], ...]


def _signature(group: pd.DataFrame, columns: list[str]) -> Signature:
    """Each candidate param with its sorted distinct values over the group's runs (every status)."""
    return tuple(
        (c, tuple(sorted(group[c].fillna(MISSING).astype(str).unique(), key=sort_key))) for c in columns
    )


def _sweep_groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Each sweep's runs; a run outside any sweep is a group of its own."""
    groups = [(str(k), g) for k, g in runs[runs["parent_run_id"] != ""].groupby("parent_run_id", sort=True)]
    single = runs[runs["parent_run_id"] == ""]
    groups += [(f"run:{run_id}", single[single["run_id"] == run_id]) for run_id in sorted(single["run_id"])]
    return groups


def find_designs(runs: pd.DataFrame) -> list[Design]:
    """Group the sweeps into designs: the same fixed config and the same grid (repetitions aside).

    A sweep's signature is every candidate param with the set of values its
    runs took: one value for a fixed key, the grid's levels for a swept one.
    Sweeps with equal signatures (the same sweep run again, or resumed) are
    one design; runs outside any sweep with equal configs are one design.
    """
    if runs.empty:
        return []
    columns = candidate_params(runs)
    by_signature: dict[Signature, list[str]] = {}
    for key, group in _sweep_groups(runs):
        by_signature.setdefault(_signature(group, columns), []).append(key)
    start = _numbers(runs, "start_time")
    first = runs.assign(_start=start.fillna(math.inf))

    def earliest(keys: list[str]) -> tuple[float, str]:
        sweeps = [k for k in keys if not k.startswith("run:")]
        singles = [k.removeprefix("run:") for k in keys if k.startswith("run:")]
        mine = first[first["parent_run_id"].isin(sweeps) | first["run_id"].isin(singles)]
        return (float(mine["_start"].min()), str(mine["run_id"].min()))

    designs = []
    for index, (signature, keys) in enumerate(sorted(by_signature.items(), key=lambda kv: earliest(kv[1]))):
        sweeps = tuple(sorted({k for k in keys if not k.startswith("run:")} | ({""} if any(
            k.startswith("run:") for k in keys) else set())))
        singles = {k.removeprefix("run:") for k in keys if k.startswith("run:")}
        mine = runs[runs["parent_run_id"].isin([s for s in sweeps if s]) | runs["run_id"].isin(singles)]
        levels = {c: values for c, values in signature if len(values) > 1}
        designs.append(Design(
            id=f"D{index + 1}", sweeps=sweeps, factors=find_factors(mine[mine["used"]]),
            fixed={c: values[0] for c, values in signature if len(values) == 1}, levels=levels,
            run_ids=frozenset(mine["run_id"]),
        ))
    return designs


def design_differences(designs: list[Design]) -> dict[str, dict[str, str]]:
    """The keys that tell designs apart: key -> design id -> "value" or "swept: a, b"."""
    keys = sorted({k for d in designs for k in (*d.fixed, *d.levels)})
    out: dict[str, dict[str, str]] = {}
    for key in keys:
        described = {
            d.id: (f"swept: {', '.join(d.levels[key])}" if key in d.levels else d.fixed.get(key, MISSING))
            for d in designs
        }
        if len(set(described.values())) > 1:
            out[key] = described
    return out


# ------------------------------------------------------------------ per-run facts

def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing or not a number); all NaN when the column is absent."""
    if column not in frame.columns:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.Series(pd.to_numeric(frame[column], errors="coerce"), index=frame.index, dtype=float)


def _texts(frame: pd.DataFrame, column: str, missing: str = "") -> pd.Series:
    if column not in frame.columns:
        return pd.Series(missing, index=frame.index, dtype=object)
    return frame[column].fillna(missing).astype(str)


def positions(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each run's 0-based position in its sweep and where it comes from.

    The ``sweep.position`` tag (the order the sweep ran its jobs) when the run
    has it; else the rank of its start time among the runs of its sweep (every
    status); runs outside any sweep are ranked together by start time.
    """
    start = _numbers(runs, "start_time")
    ranked = start.groupby(runs["parent_run_id"]).rank(method="first") - 1
    tagged = _numbers(runs, POSITION_TAG)
    position = tagged.where(tagged.notna(), ranked)
    source = pd.Series("start time", index=runs.index).where(tagged.isna(), "sweep.position")
    source = source.where(position.notna(), "")
    return position.astype(float), source


def measurement_warnings(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each run's count of measurement warnings (the metric, else the tag's sentences) and their text."""
    text = _texts(runs, WARNINGS_TAG)
    counted = text.map(lambda t: len([s for s in t.split(WARNING_SEPARATOR) if s.strip()]))
    metric = _numbers(runs, WARNINGS_METRIC)
    count = metric.where(metric.notna(), counted).fillna(0).astype(int)
    return count, text


def remove_out_of_range(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metric values outside their physical range -> NaN, and a table of what was removed.

    Out of range: named by the run's ``out_of_range_metrics`` tag (the harness
    checked it against the run's own bounds, e.g. speedup ≤ N), or beyond the
    catalogue's ``low``/``high`` by more than the run's noise floor: the larger
    of :data:`~cfexp.metrics.multi.MIN_TOLERANCE_PCT` and the run's
    ``drift_pct``, as the harness allows. (A hard bound would censor a
    distribution centred on it: the runs of a config at 100 % efficiency that
    noise put at 100.4 % would go and bias its mean down.)
    """
    runs = runs.copy()
    names = _texts(runs, OUT_OF_RANGE_TAG).str.split(",").explode().str.strip()
    names = names[names != ""]
    drift = _numbers(runs, "metrics.drift_pct")
    tolerance = drift.fillna(0.0).clip(lower=MIN_TOLERANCE_PCT) / 100
    rows = []
    for column in sorted(c for c in runs.columns if c.startswith("metrics.")):
        name = column.removeprefix("metrics.")
        values = pd.to_numeric(runs[column], errors="coerce")
        flagged = pd.Series(runs.index.isin(names.index[names == name]), index=runs.index) & values.notna()
        reason = pd.Series("", index=runs.index).where(~flagged, "run's out_of_range_metrics tag")
        metric = catalog.lookup(name)
        if metric is not None and (metric.low is not None or metric.high is not None):
            low = -math.inf if metric.low is None else metric.low - abs(metric.low) * tolerance
            high = math.inf if metric.high is None else metric.high + abs(metric.high) * tolerance
            beyond = (values < low) | (values > high)
            bound = f"outside the catalogue's range [{_bound(metric.low)}, {_bound(metric.high)}]"
            reason = reason.where(~(beyond & ~flagged), bound)
            flagged = flagged | beyond
        if flagged.any():
            rows.append(pd.DataFrame({"run_id": runs.loc[flagged, "run_id"], "metric": name,
                                      "value": values[flagged], "reason": reason[flagged]}))
        runs.loc[flagged, column] = math.nan
    columns = ["run_id", "metric", "value", "reason"]
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    return runs, table[columns].sort_values(["run_id", "metric"]).reset_index(drop=True)


def _bound(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"
