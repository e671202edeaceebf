"""The report's figures (matplotlib's Figure drawn on its Agg canvas, deterministic PNGs).

Each function writes one PNG and returns its file name, or None when the
data has nothing to show. Same runs -> byte-identical files: no timestamps or
software versions in the PNG metadata, groups drawn in sorted order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfexp.report.load import short, sort_key
from cfexp.report.stats import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# No creation time, no version string: the same data makes the same bytes.
_METADATA = {"Software": None}
# Beyond this many configs a per-config box plot is unreadable: the CSV has them all.
MAX_BOXES = 60
# Pixels per inch of the PNGs.
_DPI = 90


def _subplots(*args: int, **kwargs: Any) -> tuple[Figure, Any]:
    """A Figure with ``Figure.subplots(*args, **kwargs)`` (one Axes, or an array with ``squeeze=False``).

    matplotlib's ``Figure`` itself, not pyplot (no figure manager, no global state, nothing to close):
    saving a PNG draws it on the Agg canvas, imported with the first figure (not before). Its layout is
    "constrained": the margins fit the tick labels and titles when it is drawn, once; ``bbox_inches="tight"``
    cost a second layout pass of every text on each save.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the figure's canvas from now on
    axes = fig.subplots(*args, **kwargs)
    return fig, axes


def _save(fig: Figure, out: Path, name: str) -> str:
    # The canvas's print_png draws the figure once, its layout first; Figure.savefig would add a dry-run
    # draw (every tick and text laid out) before it whenever a layout engine is set.
    fig.canvas.print_png(out / name, metadata=_METADATA)  # type: ignore[attr-defined]
    return name


def distributions(used: pd.DataFrame, metric: str, out: Path, prefix: str) -> str | None:
    """Box plot of a metric's per-run values, one box per config."""
    column = f"metrics.{metric}"
    if not 0 < used.loc[used[column].notna(), "config"].nunique() <= MAX_BOXES:  # counted before splitting
        return None
    groups = [(str(k), g[column].dropna().to_numpy(dtype=float)) for k, g in used.groupby("config", sort=False)]
    groups = [(k, v) for k, v in groups if len(v)]
    fig, ax = _subplots(figsize=(8, 1.2 + 0.28 * len(groups)))
    ax.boxplot([v for _, v in groups], vert=False, showmeans=True)
    ax.set_yticks(range(1, len(groups) + 1), [k for k, _ in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{metric} per config (box: quartiles, triangle: mean)", fontsize=9)
    return _save(fig, out, f"{prefix}box_{metric}.png")


def _hue(used: pd.DataFrame, factors: list[str]) -> str | None:
    for column in ("params.language", "params.runtime.name", "params.topology.name", "params.options_mode"):
        if column in factors:
            return column
    return None


def throughput_vs_ttft(used: pd.DataFrame, factors: list[str], out: Path, prefix: str) -> str | None:
    if not {"metrics.throughput_tok_s", "metrics.ttft_ms"} <= set(used.columns):
        return None
    data = used.dropna(subset=["metrics.throughput_tok_s", "metrics.ttft_ms"])
    if data.empty:
        return None
    hue = _hue(data, factors)
    fig, ax = _subplots(figsize=(6, 4.5))
    levels = sorted(data[hue].unique(), key=sort_key) if hue else ["all runs"]
    for level in levels:
        part = data[data[hue] == level] if hue else data
        ax.scatter(part["metrics.ttft_ms"], part["metrics.throughput_tok_s"], s=14, alpha=0.7, label=str(level))
    ax.set_xlabel("ttft_ms (per-run mean)")
    ax.set_ylabel("throughput_tok_s (per-run mean)")
    ax.legend(title=short(hue) if hue else None, fontsize=7)
    ax.set_title("Throughput against TTFT, one point per run", fontsize=9)
    return _save(fig, out, f"{prefix}throughput_vs_ttft.png")


def efficiency(used: pd.DataFrame, factors: list[str], out: Path, prefix: str) -> str | None:
    """Parallel and overlap efficiency by topology and runtime."""
    metrics = [m for m in ("parallel_efficiency_pct", "overlap_efficiency_pct") if f"metrics.{m}" in used.columns]
    if not metrics:
        return None
    used = used[used[[f"metrics.{m}" for m in metrics]].notna().any(axis=1)]  # multi-agent runs only
    if used.empty:
        return None
    by = [c for c in ("params.topology.name", "params.runtime.name") if c in used.columns]
    labels = used[by].astype(str).agg(" ".join, axis=1) if by else pd.Series("all", index=used.index)
    keys = sorted(labels.unique(), key=lambda s: tuple(sort_key(p) for p in s.split(" ")))
    fig, axes = _subplots(1, len(metrics), figsize=(5 * len(metrics), 1.5 + 0.35 * len(keys)), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = [used.loc[labels == k, f"metrics.{metric}"].dropna().to_numpy(dtype=float) for k in keys]
        ax.boxplot(values, vert=False, showmeans=True)
        ax.set_yticks(range(1, len(keys) + 1), keys, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
    axes[0][0].set_title("Efficiency by " + " / ".join(short(c) for c in by) if by else "Efficiency", fontsize=9)
    return _save(fig, out, f"{prefix}efficiency.png")


def versus_parameter(used: pd.DataFrame, factors: list[str], metric: str, out: Path, prefix: str) -> str | None:
    """Mean ± 95 % CI of a metric against each numeric swept parameter."""
    column = f"metrics.{metric}"
    numeric = [f for f in factors if f in ("params.gpu_layers", "params.ctx", "params.temperature")]
    if column not in used.columns or not numeric:
        return None
    hue = _hue(used, factors)
    fig, axes = _subplots(1, len(numeric), figsize=(4.2 * len(numeric), 3.6), squeeze=False)
    for ax, parameter in zip(axes[0], numeric, strict=True):
        levels = sorted(used[hue].unique(), key=sort_key) if hue else [None]
        for level in levels:
            part = used[used[hue] == level] if hue else used
            xs, means, errors = [], [], []
            for value in sorted(part[parameter].unique(), key=sort_key):
                summary = describe(part.loc[part[parameter] == value, column].to_numpy(dtype=float))
                if summary.mean is None or sort_key(value)[0] != 0:
                    continue
                xs.append(float(value))
                means.append(summary.mean)
                errors.append(0.0 if summary.ci_high is None else summary.ci_high - summary.mean)
            if xs:
                ax.errorbar(xs, means, yerr=np.asarray(errors), marker="o", capsize=3, label=str(level))
        ax.set_xlabel(short(parameter))
        ax.set_ylabel(metric)
        if hue:
            ax.legend(title=short(hue), fontsize=7)
    axes[0][0].set_title(f"{metric}: mean ± 95 % CI over the other factors", fontsize=9)
    return _save(fig, out, f"{prefix}{metric}_vs_parameters.png")


def optimization_history(
    trials: pd.DataFrame, metrics: list[str], directions: list[str], best: list[int], out: Path, name: str
) -> str | None:
    """Each objective against the trial number: completed trials (baseline apart), the best so
    far among searched trials, the best trials ringed, failed trials as marks on the axis."""
    if trials.empty:
        return None
    fig, axes = _subplots(len(metrics), 1, figsize=(7, 2.8 * len(metrics)), squeeze=False, sharex=True)
    complete = trials[trials["state"] == "COMPLETE"].sort_values("trial")
    failed = trials[trials["state"] == "FAIL"].sort_values("trial")
    for ax, metric, direction in zip(axes[:, 0], metrics, directions, strict=True):
        column = f"value {metric}"
        done = complete.dropna(subset=[column])
        base, searched = done[done["baseline"]], done[~done["baseline"]]
        if len(searched):
            ax.scatter(searched["trial"], searched[column], s=16, color="tab:blue", label="searched trial", zorder=3)
        if len(base):
            ax.scatter(base["trial"], base[column], s=22, marker="s", color="tab:gray", label="baseline run",
                       zorder=3)
            ax.axhline(float(base[column].mean()), color="tab:gray", linestyle=":", linewidth=1,
                       label="baseline mean")
        if len(searched):
            values = searched[column].to_numpy(dtype=float)
            running = np.maximum.accumulate(values) if direction == "maximize" else np.minimum.accumulate(values)
            ax.step(searched["trial"], running, where="post", color="tab:orange", label="best so far (searched)")
        ringed = done[done["trial"].isin(best)]
        if len(ringed):
            ax.scatter(ringed["trial"], ringed[column], s=80, facecolors="none", edgecolors="tab:red",
                       label="best trial(s)" if len(metrics) == 1 else "Pareto front", zorder=4)
        if len(failed):
            # Failed trials have no value: marked on the axis, never drawn as a number.
            ax.scatter(failed["trial"], np.zeros(len(failed)), marker="x", color="tab:red", clip_on=False,
                       transform=ax.get_xaxis_transform(), label="failed trial", zorder=5)
            # Drawn in axis coordinates, they would not widen the x range: a failed last trial fell off the figure
            # (bbox_inches="tight" used to widen the PNG instead, cutting the mark in half).
            ax.update_datalim(np.column_stack((failed["trial"].to_numpy(dtype=float), np.zeros(len(failed)))),
                              updatey=False)
        ax.set_ylabel(f"{metric} ({direction})", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    axes[-1, 0].set_xlabel("trial number")
    axes[0, 0].set_title("Optimization history (one run per trial)", fontsize=9)
    return _save(fig, out, name)


def run_order(used: pd.DataFrame, metrics: list[str], out: Path, prefix: str) -> str | None:
    """Each run's deviation from its config's mean against its position in the sweep (the trend check's data)."""
    panels = []
    for metric in metrics:
        column = f"metrics.{metric}"
        data = used.dropna(subset=[column, "position"])
        data = data[data.groupby("config")[column].transform("size") >= 2]
        if not data.empty:
            residual = data[column] - data.groupby("config")[column].transform("mean")
            panels.append((metric, data["position"].to_numpy(dtype=float), residual.to_numpy(dtype=float)))
    if not panels:
        return None
    fig, axes = _subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), squeeze=False, sharex=True)
    for ax, (metric, xs, ys) in zip(axes[:, 0], panels, strict=True):
        ax.scatter(xs, ys, s=14, alpha=0.7)
        ax.axhline(0.0, color="tab:gray", linewidth=1, linestyle=":")
        ax.set_ylabel(f"{metric}\n− config mean", fontsize=8)
    axes[-1, 0].set_xlabel("position in the sweep")
    axes[0, 0].set_title("Run order: each run's deviation from its config's mean", fontsize=9)
    return _save(fig, out, f"{prefix}run_order.png")
