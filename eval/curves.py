"""Plot training learning curves of several methods as PNG files.

Each curve is a method's training first-attempt success ("rollout/first_success_rate")
against step, cumulative generated tokens or cumulative wall time. The line is the mean
over seeds, and the shaded band spans the minimum to the maximum over seeds. A dashed
line of the same color shows "erl/success_after_reflection" for methods that log it.

The figures are drawn with the Agg canvas directly, without pyplot, so plotting never
opens a window and never changes the caller's matplotlib backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from erlgym.eval.runs import AFTER_REFLECTION_KEY, FIRST_SUCCESS_KEY, STEP_TIME_KEY, RunResult


@dataclass(frozen=True)
class _Axis:
    file_name: str
    label: str
    title: str


CURVE_AXES = {
    "steps": _Axis("curves_steps.png", "training step", "vs training step"),
    "tokens": _Axis(
        "curves_tokens.png", "cumulative generated tokens (mean over seeds)", "vs generated tokens"
    ),
    "time": _Axis("curves_time.png", "cumulative wall time in minutes (mean over seeds)", "vs wall time"),
}


def plot_curves(out_dir: Path, runs_by_method: dict[str, list[RunResult]], smoothing_window: int = 1) -> list[Path]:
    """Write curves_steps.png, curves_tokens.png and curves_time.png and return their paths.

    ``smoothing_window`` is the length in steps of a trailing moving average applied to
    each run's curve before the mean over seeds, and 1 plots the raw values. A method's
    curves stop at its shortest run, so every point averages the same seeds.
    """
    if smoothing_window < 1:
        raise ValueError(f"smoothing_window must be at least 1 step, got {smoothing_window}")
    paths = []
    for kind, axis in CURVE_AXES.items():
        figure = Figure(figsize=(7, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for color_index, (method, runs) in enumerate(runs_by_method.items()):
            _plot_method(ax, method, runs, kind, smoothing_window, f"C{color_index % 10}")

        ax.set_xlabel(axis.label)
        ax.set_ylabel("training success rate")
        ax.set_ylim(-0.02, 1.02)
        smoothing = f", moving average of {smoothing_window} steps" if smoothing_window > 1 else ""
        ax.set_title(f"First-attempt success during training {axis.title}{smoothing}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

        path = out_dir / axis.file_name
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Return the trailing moving average of each position over up to ``window`` values.

    NaN values are skipped. A position whose window holds only NaN stays NaN.
    """
    valid = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    window_sums = sums[end] - sums[start]
    window_counts = counts[end] - counts[start]
    return np.divide(window_sums, window_counts, out=np.full(len(values), np.nan), where=window_counts > 0)


def _plot_method(ax, method: str, runs: list[RunResult], kind: str, window: int, color: str) -> None:
    steps = min(run.steps for run in runs)
    x = np.stack([_x_values(run, kind)[:steps] for run in runs]).mean(axis=0)  # (steps,)

    success = np.stack([moving_average(run.series(FIRST_SUCCESS_KEY)[:steps], window) for run in runs])
    mean, low, high = _column_stats(success)  # (steps,) each
    seeds = f"{len(runs)} seed" + ("s" if len(runs) != 1 else "")
    ax.plot(x, mean, color=color, marker="o" if len(x) == 1 else None, label=f"{method} first attempt ({seeds})")
    ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)

    # Runs without reflections (GRPO) log a success after reflection equal to their first attempts.
    reflected = any(run.has_metric("erl/num_reflections") and run.series("erl/num_reflections").sum() > 0
                    for run in runs)
    if reflected and any(run.has_metric(AFTER_REFLECTION_KEY) for run in runs):
        after = np.stack([moving_average(run.series(AFTER_REFLECTION_KEY)[:steps], window) for run in runs])
        ax.plot(x, _column_stats(after)[0], color=color, linestyle="--", label=f"{method} after reflection")


def _x_values(run: RunResult, kind: str) -> np.ndarray:
    if kind == "steps":
        return run.step_numbers
    if kind == "tokens":
        return np.cumsum(run.generated_tokens_per_step())
    return np.cumsum(np.nan_to_num(run.series(STEP_TIME_KEY))) / 60


def _column_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the mean, minimum and maximum of each column, skipping NaN.

    A column with only NaN gives NaN, without the warnings of np.nanmean.
    """
    valid = ~np.isnan(rows)
    counts = valid.sum(axis=0)
    empty = counts == 0
    mean = np.divide(np.where(valid, rows, 0.0).sum(axis=0), counts, out=np.full(rows.shape[1], np.nan), where=~empty)
    low = np.where(valid, rows, np.inf).min(axis=0)
    high = np.where(valid, rows, -np.inf).max(axis=0)
    low[empty] = np.nan
    high[empty] = np.nan
    return mean, low, high
