"""Objectives and constraints: what a finished job's metrics say about its trial.

A cfexp job returns a dict of metrics, or None when it failed. The objectives
pick values out of that dict; each constraint ``metric <= bound`` becomes
``metric - bound`` (``bound - metric`` for ``>=``), Optuna's convention: a
trial is feasible when every constraint value is <= 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra_plugins.cfexp_sweeper._errors import SweepError

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Objective:
    metric: str
    # "maximize" | "minimize", as Optuna spells them.
    direction: str

    def __str__(self) -> str:
        return f"{self.direction} {self.metric}"


@dataclass(frozen=True)
class Constraint:
    metric: str
    # "<=" or ">=" (a strict "<" / ">" is read as the non-strict one: metrics are continuous).
    op: str
    bound: float

    def value(self, metric_value: float) -> float:
        """Optuna's constraint value: <= 0 when satisfied."""
        return metric_value - self.bound if self.op == "<=" else self.bound - metric_value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    match = _CONSTRAINT.match(text)
    if match is None:
        raise SweepError(
            f"cannot read the constraint <{text!r}>: write it as \"metric <= number\" or "
            "\"metric >= number\", e.g. \"agent_peak_rss_mb <= 60\""
        )
    metric, op, bound = match.groups()
    return Constraint(metric, "<=" if op.startswith("<") else ">=", float(bound))


@dataclass(frozen=True)
class TrialResult:
    """A job's outcome for Optuna: values to tell, or the reason it failed."""

    values: list[float] | None = None
    constraints: list[float] | None = None
    metrics: Mapping[str, float] | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.values is None


class MissingMetricError(SweepError):
    """A job finished but did not return a metric an objective or constraint needs."""

    def __init__(self, missing: Sequence[str], produced: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"the job does not produce the metric(s) {', '.join(missing)} named in "
            f"hydra.sweeper.objectives/constraints. It produces: {', '.join(produced) or 'none'}. "
            "Pick one of these (docs/metrics.md says what each means)."
        )


def evaluate(returned: Any, objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> TrialResult:
    """The trial's values from a job's return value (None = the job failed).

    Raises :class:`MissingMetricError` when a finished job lacks a needed
    metric and :class:`SweepError` when the task returns something else than
    metrics.
    """
    if returned is None:
        return TrialResult(error="the job failed (it returned no metrics)")
    if not isinstance(returned, Mapping):
        raise SweepError(
            f"the task function returned {type(returned).__name__} <{returned!r}>; "
            "the cfexp sweeper needs a dict of metrics (or None for a failed job)"
        )
    needed = [o.metric for o in objectives] + [c.metric for c in constraints]
    missing = [name for name in dict.fromkeys(needed) if name not in returned]
    if missing:
        raise MissingMetricError(missing, sorted(str(k) for k in returned))
    metrics = {str(k): v for k, v in returned.items()}
    values = []
    for objective in objectives:
        value = _number(metrics[objective.metric])
        if value is None:
            return TrialResult(metrics=metrics, error=f"{objective.metric} is not a finite number: {metrics[objective.metric]!r}")
        values.append(value)
    constraint_values = []
    for constraint in constraints:
        value = _number(metrics[constraint.metric])
        if value is None:
            return TrialResult(metrics=metrics, error=f"{constraint.metric} is not a finite number: {metrics[constraint.metric]!r}")
        constraint_values.append(constraint.value(value))
    return TrialResult(values=values, constraints=constraint_values or None, metrics=metrics)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
