"""Reports from the tracking store: ``cfexp report --experiment NAME``.

Reads runs only (through :mod:`cfexp.tracking.query`; an Optuna search's storage
too), never an LLM server:

- :mod:`cfexp.report.load` — runs -> DataFrame, configs, provenance;
- :mod:`cfexp.report.stats` — pure statistics (scipy);
- :mod:`cfexp.report.success` — optimization success rate, two rules;
- :mod:`cfexp.report.study_store`, :mod:`cfexp.report.study` — an Optuna
  study's trials (read from its storage), best trials, importances, success
  rate against the baseline;
- :mod:`cfexp.report.tables` — the report's tables;
- :mod:`cfexp.report.plots` — deterministic PNG figures, drawn by a forked
  child process meanwhile (:mod:`cfexp.report.aside`);
- :mod:`cfexp.report.markdown`, :mod:`cfexp.report.writer` — report.md and CSVs.

How to read a report: docs/reports.md.
"""

from cfexp.report.success import SuccessRule
from cfexp.report.writer import ReportOptions, generate_report

__all__ = ["ReportOptions", "SuccessRule", "generate_report"]
