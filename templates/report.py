"""Write a :class:`~erlgym.templates.analysis.RunAnalysis` as ``report.md``, ``analysis.json`` and steering files.

``report.md`` is for reading, ``analysis.json`` has every number of the analysis, and
``steering.json`` (action library) and ``steering-reflections.json`` (reflection library)
are the weight files that ``erlgym train --template-controller steered --template-weights``
reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erlgym.templates.analysis import MIN_BOOTSTRAP_GROUPS, RunAnalysis, SectionAnalysis
from erlgym.templates.records import TemplateAnalysisError

if TYPE_CHECKING:
    from erlgym.templates.fitting import LassoFit, PresenceModel

REPORT_FILE = "report.md"
ANALYSIS_FILE = "analysis.json"
STEERING_FILES = {"actions": "steering.json", "reflections": "steering-reflections.json"}
SECTION_TITLES = {"actions": "Action trajectories", "reflections": "Reflections"}


def write_analysis(analysis: RunAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write the report, the JSON of every number and one steering file per section, and return the paths by name.

    Raises:
        TemplateAnalysisError: If ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    files = {"report": out / REPORT_FILE, "analysis": out / ANALYSIS_FILE}
    contents = {"report": render_report(analysis, out),
                "analysis": json.dumps(analysis_json(analysis), indent=2) + "\n"}
    for section, result in analysis.sections.items():
        name = f"steering_{section}"
        files[name] = out / STEERING_FILES[section]
        contents[name] = json.dumps(result.steering, indent=2) + "\n"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            path.write_text(contents[name], encoding="utf-8")
    except OSError as error:
        raise TemplateAnalysisError(f"cannot write the analysis to {error.filename or out}: {error.strerror}; "
                                    "pass a writable --out folder") from None
    return files


def analysis_json(analysis: RunAnalysis) -> dict[str, Any]:
    """Return the analysis as a JSON-ready object, with null for NaN (the loss of a penalty no fold could fit)."""
    return _without_nan({"run_dir": analysis.run_dir, "options": dataclasses.asdict(analysis.options),
                         "sections": {section: dataclasses.asdict(result)
                                      for section, result in analysis.sections.items()}})


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value


def render_report(analysis: RunAnalysis, out_dir: str | Path = ".") -> str:
    """Return the markdown report: one section per kind of trajectory, with its tables and caveats."""
    options = analysis.options
    intervals = (f"Intervals come from {options.bootstrap} bootstrap resamples (seed {options.seed}), and an "
                 "interval marked * excludes 0." if options.bootstrap else "No bootstrap intervals (--bootstrap 0).")
    lines = [f"# Template analysis of {analysis.run_dir}", "",
             f"Outcome: **{options.target}**. Position-specific features count the turns at or after "
             f"{options.max_position} as turn {options.max_position}. LASSO features seen in fewer than "
             f"{options.min_count} trajectories are dropped, and the penalty rule is {options.penalty_rule}. "
             f"{intervals}", ""]
    run_options = _run_options(analysis.run_dir)
    for section, result in analysis.sections.items():
        lines += _render_section(result, Path(out_dir) / STEERING_FILES[section], options.sequence_turns, run_options)
    return "\n".join(lines).rstrip() + "\n"


def _run_options(run_dir: str) -> str:
    """Return the ``--env`` and ``--method`` options of the analysed run, from its config.json, or "" without one."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(config, dict):
        return ""
    parts = [f"--{name} {config[name]}" for name in ("env", "method") if isinstance(config.get(name), str)]
    return " ".join(parts) + " " if parts else ""


def _render_section(result: SectionAnalysis, steering_path: Path, sequence_turns: int,
                    run_options: str = "") -> list[str]:
    lines = [f"## {SECTION_TITLES[result.section]} ({', '.join(result.kinds)})", "",
             f"Library `{result.library}` from {result.library_source}. {result.trajectories} trajectories in "
             f"{result.groups} task groups; success rate {result.success_rate:.2f}, mean reward "
             f"{result.mean_reward:.3f}.", ""]
    if result.notes:
        lines += [f"- {note}" for note in result.notes] + [""]
    lines += _render_choices(result.presence, result.target)
    lines += _render_lasso(result.lasso, result.target)
    lines += _render_sequences(result, sequence_turns)
    lines += _render_controllability(result)
    steering = result.steering
    origin = {"lasso": "the LASSO's nonzero coefficients", "presence": "the presence model's effects",
              "none": "no fitted model, so every weight is 0"}[steering["source"]]
    if result.section == "actions":
        command = (f"`erlgym train {run_options}--templates {result.library_source} --template-controller steered "
                   f"--template-weights {steering_path}`.")
    else:
        # With both libraries set, a steered controller steers the action templates.
        command = (f"`erlgym train {run_options}--reflection-templates {result.library_source} --template-controller steered "
                   f"--template-weights {steering_path}`, without --templates.")
    lines += ["### Steering weights", "",
              f"{steering_path.name}: {len(steering['weights'])} weights from {origin}, temperature "
              f"{steering['temperature']}. Train with them: {command}", ""]
    return lines


def _render_choices(presence: PresenceModel, target: str) -> list[str]:
    lines = ["### Choices", ""]
    if presence.fitted:
        lines += [f"Presence model: {presence.model}, roughly relative to the average choice of the dimension. "
                  f"{_bootstrap_sentence(presence.bootstrap_fits, presence.bootstrap_unit)}", ""]
    else:
        lines += [f"Presence model not fitted: {presence.reason}", ""]
    unit = "log-odds" if target == "success" else "reward"
    lines += [f"| dimension | choice | trajectories | success rate | mean reward | effect ({unit}) | 95% interval |",
              "|---|---|---:|---:|---:|---:|---|"]
    for effect in presence.effects:
        lines.append(f"| {effect.dimension} | {effect.choice} | {effect.trajectories} | "
                     f"{_number(effect.success_rate, 2)} | {_number(effect.mean_reward, 3)} | "
                     f"{_signed(effect.effect)} | {_interval(effect.ci_low, effect.ci_high)} |")
    return lines + [""]


def _render_lasso(lasso: LassoFit, target: str) -> list[str]:
    lines = ["### LASSO features", ""]
    if not lasso.fitted:
        return lines + [f"LASSO not fitted: {lasso.reason}", ""]
    merged = sum(len(feature.aliases) for feature in lasso.features)
    rule = ("the minimum of the held-out loss" if lasso.penalty_rule == "min" else
            "the strongest within one standard error of the minimum held-out loss")
    lines += [f"{lasso.model}. Penalty {lasso.penalty_name}={lasso.penalty:.4g}, {rule} in {lasso.cv_folds}-fold "
              f"cross-validation by {lasso.cv_unit}. {lasso.features_seen} features seen: {lasso.features_rare} "
              f"dropped as rare, {lasso.features_constant} dropped as present in every trajectory, {merged} merged "
              f"into an identical feature, {len(lasso.features)} fitted. "
              f"{_bootstrap_sentence(lasso.bootstrap_fits, lasso.bootstrap_unit)} Selection frequency is the share of "
              "bootstrap fits with a nonzero coefficient.", ""]
    selected = lasso.selected
    if not selected:
        return lines + ["No feature selected.", ""]
    unit_name = "log-odds" if target == "success" else "reward"
    lines += [f"| feature | trajectories | success rate | coefficient ({unit_name}) | 95% interval | "
              "selection frequency |", "|---|---:|---:|---:|---|---:|"]
    for feature in selected:
        name = f"`{feature.feature}`"
        if feature.aliases:
            name += " (= " + ", ".join(f"`{alias}`" for alias in feature.aliases) + ")"
        lines.append(f"| {name} | {feature.trajectories} | {feature.success_rate:.2f} | "
                     f"{_signed(feature.coefficient)} | {_interval(feature.ci_low, feature.ci_high)} | "
                     f"{_number(feature.selection_frequency, 2)} |")
    return lines + [""]


def _render_sequences(result: SectionAnalysis, turns: int) -> list[str]:
    lines = [f"### Most frequent template sequences (first {turns} turn{'s' if turns != 1 else ''})", "",
             "A shorter trajectory counts with all its turns.", "",
             "| templates | trajectories | success rate | mean reward |", "|---|---:|---:|---:|"]
    for row in result.sequences:
        templates = " → ".join(f"`{key}`" for key in row.templates)
        lines.append(f"| {templates} | {row.trajectories} | {row.success_rate:.2f} | {row.mean_reward:.3f} |")
    return lines + [""]


def _render_controllability(result: SectionAnalysis) -> list[str]:
    lines = ["### Controllability", "",
             "How often the generated text of a turn matched the check of the choice its template prescribed.", "",
             "| dimension | choice | turns | turns checked | followed | follow rate |",
             "|---|---|---:|---:|---:|---:|"]
    for dimension in result.controllability:
        for row in dimension.choices:
            rate = _number(row.follow_rate, 2) if row.has_check else "no check"
            lines.append(f"| {dimension.dimension} | {row.choice} | {row.turns} | {row.turns_checked} | "
                         f"{row.turns_followed} | {rate} |")
        lines.append(f"| {dimension.dimension} | **all** | | {dimension.turns_checked} | {dimension.turns_followed} | "
                     f"{_number(dimension.follow_rate, 2)} |")
    return lines + [""]


def _bootstrap_sentence(fits: int, unit: str) -> str:
    if fits == 0:
        return "No bootstrap intervals."
    resampled = "task groups" if unit == "group" else (f"trajectories (fewer than {MIN_BOOTSTRAP_GROUPS} task "
                                                       "groups)")
    return f"95% percentile intervals from {fits} bootstrap fits on resampled {resampled}."


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    marker = " *" if low > 0 or high < 0 else ""
    return f"[{low:+.3f}, {high:+.3f}]{marker}"
