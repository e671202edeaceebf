"""Metrics: pure functions over agent records (no I/O, no tracking).

- :mod:`cfexp.metrics.calls`: per-call derived fields (ttft, tpot, itl, ...),
- :mod:`cfexp.metrics.rubric`: TR109's report-quality keyword rubric,
- :mod:`cfexp.metrics.runs`: per-run summaries.

Definitions: docs/metrics.md.
"""

from cfexp.metrics.calls import DERIVED_FIELDS, derive_call, percentile
from cfexp.metrics.rubric import score_report

__all__ = ["DERIVED_FIELDS", "derive_call", "percentile", "score_report"]
