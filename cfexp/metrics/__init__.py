"""Metrics: pure functions over typed agent records (no I/O, no tracking).

- :mod:`cfexp.metrics.catalog`: every metric once — unit, scope, direction, side, definition;
- :mod:`cfexp.metrics.calls`: per-call derived fields (ttft, tpot, itl, output tokens, ...);
- :mod:`cfexp.metrics.runs`: per-run summaries, the agent process, the TR109 rubric means;
- :mod:`cfexp.metrics.multi`: speedup, parallel efficiency, drift, contention;
- :mod:`cfexp.metrics.rubric`: TR109's report-quality keyword rubric.

Definitions: docs/metrics.md (its reference table is generated from the catalogue).
"""

from cfexp.metrics.calls import CallMetrics, MeasuredCall, derive_call, measure_calls, percentile
from cfexp.metrics.rubric import score_report

__all__ = ["CallMetrics", "MeasuredCall", "derive_call", "measure_calls", "percentile", "score_report"]
