"""Write a report folder that compares methods over finished training runs.

``write_report`` takes one ``RunResult`` per method and training seed (see
``load_run``) and writes:

- ``report.md``: held-out first-attempt success per method with two-level bootstrap
  intervals, each method's difference to the baseline with its interval and
  significance, training-time success after reflection, the token and time budget,
  and the learning curves;
- ``curves_steps.png``, ``curves_tokens.png``, ``curves_time.png``: the learning curves;
- ``results.json``: every number in the report, plus each run's per-step metrics;
- ``results.csv``: one row per run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from erlgym.eval.curves import plot_curves
from erlgym.eval.runs import AFTER_REFLECTION_KEY, FIRST_SUCCESS_KEY, TOKEN_KEYS, RunDataError, RunResult, load_run
from erlgym.eval.stats import Interval, bootstrap_ci, bootstrap_difference_ci, describe_difference

# RunResult, load_run and RunDataError are re-exported: a report is built from loaded runs.
__all__ = ["Comparison", "MethodSummary", "RunDataError", "RunResult", "load_run", "write_report"]

# eval.json fields that must match across runs for their success rates to be comparable.
EVALUATION_SETTING_KEYS = ("env", "env_kwargs", "seeds", "temperature")
CSV_COLUMNS = [
    "method",
    "seed",
    "run_dir",
    "held_out_success",
    "invalid_action_rate",
    "episodes",
    "steps",
    "first_attempt_tokens",
    "reflection_tokens",
    "retry_tokens",
    "generated_tokens",
    "wall_time_s",
]


@dataclass(frozen=True)
class MethodSummary:
    """Numbers of one method, over its training seeds."""

    method: str
    seeds: list[int]
    episodes_per_seed: list[int]
    held_out_success: Interval
    held_out_success_by_seed: list[float]
    invalid_action_rate: float | None
    """Mean over the seeds that recorded it, or None."""
    after_reflection: float | None
    """Training "erl/success_after_reflection", mean over the last steps and then over seeds."""
    first_attempt_last_steps: float | None
    """Training "rollout/first_success_rate" over the same last steps, for comparison."""
    tokens: dict[str, float]
    """Generated tokens by kind and in total, summed over steps and averaged over seeds."""
    steps: float
    """Logged training steps, mean over seeds."""
    wall_time_s: float
    """Sum of "time/step_s", mean over seeds."""


@dataclass(frozen=True)
class Comparison:
    """A method's held-out success minus the baseline's, paired by training seed."""

    method: str
    baseline: str
    seeds: list[int]
    difference: Interval
    sentence: str


def write_report(
    out_dir: Path,
    runs: list[RunResult],
    title: str,
    command: str | None = None,
    baseline: str = "grpo",
    *,
    smoothing_window: int = 1,
    last_steps: int = 5,
    confidence: float = 0.95,
    resamples: int = 10_000,
    rng_seed: int = 0,
    base_evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write report.md, the three curve PNGs, results.json and results.csv to ``out_dir``.

    ``command`` is the command line that produced the report, shown at its top.
    ``base_evaluation`` is the untrained model's evaluation on the same episodes, if any.
    Differences are computed against the runs of ``baseline`` with the same seeds.
    ``last_steps`` is how many final training steps the success after reflection is
    averaged over. Returns the path of report.md. Raises ValueError for no runs, two
    runs of the same method and seed, or a ``last_steps`` or ``smoothing_window`` below 1.
    """
    if last_steps < 1:
        raise ValueError(f"last_steps must be at least 1, got {last_steps}")
    if smoothing_window < 1:
        raise ValueError(f"smoothing_window must be at least 1 step, got {smoothing_window}")
    runs_by_method = _group_runs(runs, baseline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    summaries = [
        _summarize_method(method, method_runs, last_steps, confidence, resamples, rng_seed)
        for method, method_runs in runs_by_method.items()
    ]
    comparisons = [
        _compare(method_runs, runs_by_method[baseline], confidence, resamples, rng_seed)
        for method, method_runs in runs_by_method.items()
        if method != baseline and baseline in runs_by_method
    ]
    warnings = _evaluation_setting_warnings(runs)
    curve_paths = plot_curves(out_dir, runs_by_method, smoothing_window)

    settings = {
        "baseline": baseline,
        "confidence": confidence,
        "resamples": resamples,
        "rng_seed": rng_seed,
        "smoothing_window": smoothing_window,
        "last_steps": last_steps,
    }
    base = _base_model(base_evaluation, confidence, resamples, rng_seed)
    _write_json(out_dir / "results.json", title, command, settings, summaries, comparisons, warnings, runs, base)
    _write_csv(out_dir / "results.csv", runs)

    markdown = _render_markdown(title, command, settings, summaries, comparisons, warnings, curve_paths, base)
    report_path = out_dir / "report.md"
    report_path.write_text(markdown, encoding="utf-8")
    return report_path


# Grouping and summaries


def _group_runs(runs: list[RunResult], baseline: str) -> dict[str, list[RunResult]]:
    """Group runs by method, sorted by seed: the baseline first, then in order of first appearance."""
    if not runs:
        raise ValueError("runs is empty: a report needs at least one run")
    seen = set()
    for run in runs:
        key = (run.method, run.seed)
        if key in seen:
            raise ValueError(f"two runs of method {run.method!r} with seed {run.seed}: pass each run once")
        seen.add(key)

    methods = sorted({run.method for run in runs}, key=lambda method: (method != baseline, _first_index(runs, method)))
    return {method: sorted((run for run in runs if run.method == method), key=lambda run: run.seed) for method in methods}


def _first_index(runs: list[RunResult], method: str) -> int:
    return next(index for index, run in enumerate(runs) if run.method == method)


def _summarize_method(
    method: str, runs: list[RunResult], last_steps: int, confidence: float, resamples: int, rng_seed: int
) -> MethodSummary:
    interval = bootstrap_ci([run.episode_success for run in runs], confidence, resamples, rng_seed)
    invalid_rates = [run.invalid_action_rate for run in runs if run.invalid_action_rate is not None]
    token_totals = [run.tokens_by_kind() for run in runs]
    return MethodSummary(
        method=method,
        seeds=[run.seed for run in runs],
        episodes_per_seed=[len(run.episode_success) for run in runs],
        held_out_success=interval,
        held_out_success_by_seed=[run.held_out_success for run in runs],
        invalid_action_rate=float(np.mean(invalid_rates)) if invalid_rates else None,
        # A run without retries (GRPO) logs its first-attempt success under this key too.
        after_reflection=(_mean_of_last_steps(runs, AFTER_REFLECTION_KEY, last_steps)
                          if any(totals["retry"] > 0 for totals in token_totals) else None),
        first_attempt_last_steps=_mean_of_last_steps(runs, FIRST_SUCCESS_KEY, last_steps),
        tokens={kind: float(np.mean([totals[kind] for totals in token_totals])) for kind in token_totals[0]},
        steps=float(np.mean([run.steps for run in runs])),
        wall_time_s=float(np.mean([run.wall_time_s for run in runs])),
    )


def _mean_of_last_steps(runs: list[RunResult], key: str, last_steps: int) -> float | None:
    """Average a metric over each run's last steps, then over the runs that logged it there."""
    run_means = []
    for run in runs:
        values = run.series(key)[-last_steps:]
        values = values[~np.isnan(values)]
        if values.size:
            run_means.append(float(values.mean()))
    return float(np.mean(run_means)) if run_means else None


def _compare(
    runs: list[RunResult], baseline_runs: list[RunResult], confidence: float, resamples: int, rng_seed: int
) -> Comparison | None:
    """Compare a method with the baseline on the seeds both have, or return None if they share none."""
    baseline_by_seed = {run.seed: run for run in baseline_runs}
    pairs = [(run, baseline_by_seed[run.seed]) for run in runs if run.seed in baseline_by_seed]
    method, baseline = runs[0].method, baseline_runs[0].method
    if not pairs:
        return None

    difference = bootstrap_difference_ci(
        [run.episode_success for run, _ in pairs],
        [base.episode_success for _, base in pairs],
        confidence,
        resamples,
        rng_seed,
    )
    sentence = describe_difference(difference, f"{method} \N{MINUS SIGN} {baseline}")
    return Comparison(method, baseline, [run.seed for run, _ in pairs], difference, sentence)


def _evaluation_setting_warnings(runs: list[RunResult]) -> list[str]:
    """Describe each distinct held-out evaluation setting when the runs used more than one."""
    runs_by_setting: dict[str, list[str]] = {}
    for run in runs:
        setting = {key: run.evaluation.get(key) for key in EVALUATION_SETTING_KEYS if key in run.evaluation}
        text = json.dumps(setting, sort_keys=True)
        runs_by_setting.setdefault(text, []).append(f"{run.method} seed {run.seed}")
    if len(runs_by_setting) < 2:
        return []
    return [f"{setting}: {', '.join(names)}" for setting, names in runs_by_setting.items()]


def _base_model(evaluation: dict[str, Any] | None, confidence: float, resamples: int,
                rng_seed: int) -> dict[str, Any] | None:
    """Summarize the untrained model's evaluation: its success with an interval over episodes."""
    if evaluation is None:
        return None
    outcomes = [float(value) for value in evaluation["episode_success"]]
    interval = bootstrap_ci([outcomes], confidence=confidence, resamples=resamples, rng_seed=rng_seed)
    return {"model": evaluation.get("model"), "episodes": len(outcomes), "success": asdict(interval),
            "evaluation": {key: value for key, value in evaluation.items() if key != "episode_success"}}


# Output files


def _write_json(
    path: Path,
    title: str,
    command: str | None,
    settings: dict[str, Any],
    summaries: list[MethodSummary],
    comparisons: list[Comparison | None],
    warnings: list[str],
    runs: list[RunResult],
    base: dict[str, Any] | None,
) -> None:
    results = {
        "title": title,
        "command": command,
        "settings": settings,
        "methods": [asdict(summary) for summary in summaries],
        "comparisons": [
            {**asdict(comparison), "excludes_zero": comparison.difference.excludes_zero}
            for comparison in comparisons
            if comparison is not None
        ],
        "evaluation_setting_warnings": warnings,
        "base_model": base,
        "runs": [
            {
                "method": run.method,
                "seed": run.seed,
                "run_dir": str(run.run_dir),
                "evaluation": run.evaluation,
                "metrics": run.metrics,
            }
            for run in runs
        ],
    }
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _write_csv(path: Path, runs: list[RunResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run in runs:
            tokens = run.tokens_by_kind()
            writer.writerow(
                {
                    "method": run.method,
                    "seed": run.seed,
                    "run_dir": str(run.run_dir),
                    "held_out_success": run.held_out_success,
                    "invalid_action_rate": "" if run.invalid_action_rate is None else run.invalid_action_rate,
                    "episodes": len(run.episode_success),
                    "steps": run.steps,
                    **{f"{kind}_tokens": round(tokens[kind]) for kind in [*TOKEN_KEYS, "generated"]},
                    "wall_time_s": round(run.wall_time_s, 3),
                }
            )


# Markdown


def _render_markdown(
    title: str,
    command: str | None,
    settings: dict[str, Any],
    summaries: list[MethodSummary],
    comparisons: list[Comparison | None],
    warnings: list[str],
    curve_paths: list[Path],
    base: dict[str, Any] | None,
) -> str:
    sections = [f"# {title}"]
    if command:
        sections.append(f"Produced by:\n\n```bash\n{command}\n```")
    sections.append(_held_out_section(settings, summaries, warnings))
    sections.append(_difference_section(settings, summaries, comparisons))
    if base is not None:
        sections.append(_base_model_section(settings, base))
    after_reflection = _after_reflection_section(settings, summaries)
    if after_reflection:
        sections.append(after_reflection)
    sections.append(_budget_section(summaries))
    sections.append(_curves_section(settings, curve_paths))
    return "\n\n".join(sections) + "\n"


def _base_model_section(settings: dict[str, Any], base: dict[str, Any]) -> str:
    success = base["success"]
    return (
        "## Untrained model\n\n"
        f"Before training, {base['model']} reached {_percent(success['mean'])} held-out first-attempt success "
        f"on the same {base['episodes']} episodes ({_level(settings['confidence'])} CI "
        f"{_percent(success['low'])} to {_percent(success['high'])}, episodes resampled)."
    )


def _held_out_section(settings: dict[str, Any], summaries: list[MethodSummary], warnings: list[str]) -> str:
    level = _level(settings["confidence"])
    lines = [
        "## Held-out success",
        "",
        "First-attempt success on the held-out evaluation episodes (`eval.json`), with no "
        "reflection in context: the success of the policy as deployed. Intervals are "
        f"{level} two-level bootstrap intervals: training seeds are resampled with replacement, "
        f"then episodes within each seed ({settings['resamples']:,} resamples). With few seeds "
        "they understate the variance between seeds.",
        "",
        f"| method | success | {level} CI | seeds | episodes per seed | success per seed | invalid actions |",
        "|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        interval = summary.held_out_success
        per_seed = ", ".join(
            f"{seed}: {_percent(rate)}" for seed, rate in zip(summary.seeds, summary.held_out_success_by_seed)
        )
        invalid = "n/a" if summary.invalid_action_rate is None else _percent(summary.invalid_action_rate)
        lines.append(
            f"| {summary.method} | {_percent(interval.mean)} | {_percent(interval.low)} to {_percent(interval.high)} "
            f"| {len(summary.seeds)} | {_episode_counts(summary.episodes_per_seed)} | {per_seed} | {invalid} |"
        )

    if warnings:
        lines += ["", "Warning: the runs were evaluated with different settings, so their rates are not comparable:", ""]
        lines += [f"- {warning}" for warning in warnings]
    return "\n".join(lines)


def _difference_section(
    settings: dict[str, Any], summaries: list[MethodSummary], comparisons: list[Comparison | None]
) -> str:
    baseline = settings["baseline"]
    lines = [f"## Difference to {baseline}", ""]
    if baseline not in {summary.method for summary in summaries}:
        lines.append(f"No runs of the baseline method {baseline!r}, so no differences were computed.")
        return "\n".join(lines)

    lines.append(
        "Held-out success minus the baseline's, in percentage points. Seeds are paired: each "
        "resample draws the same training seeds for both methods, and the same episodes "
        "where both evaluated the same number."
    )
    lines.append("")
    others = [summary.method for summary in summaries if summary.method != baseline]
    for method, comparison in zip(others, comparisons):
        if comparison is None:
            lines.append(f"- {method}: no training seed in common with {baseline}, so no difference was computed.")
        else:
            seeds = ", ".join(str(seed) for seed in comparison.seeds)
            lines.append(f"- {comparison.sentence} Seeds: {seeds}.")
    if not others:
        lines.append(f"Only the baseline {baseline!r} was given.")
    return "\n".join(lines)


def _after_reflection_section(settings: dict[str, Any], summaries: list[MethodSummary]) -> str | None:
    rows = [summary for summary in summaries if summary.after_reflection is not None]
    if not rows:
        return None
    lines = [
        "## Success after reflection (training)",
        "",
        "Measured during training with the reflection in context (`erl/success_after_reflection`: "
        "first attempts that succeeded directly or through their retry), so it is not comparable "
        f"with held-out success. Mean over the last {settings['last_steps']} logged steps of each "
        "run, then over seeds, beside the training first-attempt success over the same steps.",
        "",
        "| method | after reflection | first attempt, same steps |",
        "|---|---|---|",
    ]
    for summary in rows:
        first_attempt = "n/a" if summary.first_attempt_last_steps is None else _percent(summary.first_attempt_last_steps)
        lines.append(f"| {summary.method} | {_percent(summary.after_reflection)} | {first_attempt} |")
    return "\n".join(lines)


def _budget_section(summaries: list[MethodSummary]) -> str:
    lines = [
        "## Budget",
        "",
        "Generated tokens by kind are summed over the steps of each run, and wall time is the "
        "sum of `time/step_s`. Every column is a mean over seeds.",
        "",
        "| method | first-attempt tokens | reflection tokens | retry tokens | generated tokens | steps | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        tokens = summary.tokens
        lines.append(
            f"| {summary.method} | {tokens['first_attempt']:,.0f} | {tokens['reflection']:,.0f} "
            f"| {tokens['retry']:,.0f} | {tokens['generated']:,.0f} | {summary.steps:g} "
            f"| {summary.wall_time_s:,.0f} s ({summary.wall_time_s / 60:.1f} min) |"
        )
    return "\n".join(lines)


def _curves_section(settings: dict[str, Any], curve_paths: list[Path]) -> str:
    window = settings["smoothing_window"]
    smoothing = f" Each run is smoothed by a moving average over {window} steps." if window > 1 else ""
    lines = [
        "## Learning curves",
        "",
        "Training first-attempt success (`rollout/first_success_rate`): the line is the mean over "
        "seeds and the band spans their minimum to maximum. Dashed lines show success after "
        f"reflection for methods that log it.{smoothing}",
        "",
    ]
    lines += [f"![{path.stem}]({path.name})" for path in curve_paths]
    return "\n".join(lines)


def _level(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _episode_counts(counts: list[int]) -> str:
    return str(counts[0]) if len(set(counts)) == 1 else ", ".join(str(count) for count in counts)
