"""Load a finished training run: its per-step metrics and its held-out evaluation.

A run directory is written by ``erlgym train``. Its ``metrics.jsonl`` contains one
JSON object per training step. ``eval.json`` beside it is the output of
``erlgym eval --model RUN_DIR``, and the report needs its ``episode_success`` list: the
0/1 outcome of every held-out episode, in seed order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIRST_SUCCESS_KEY = "rollout/first_success_rate"
AFTER_REFLECTION_KEY = "erl/success_after_reflection"
STEP_TIME_KEY = "time/step_s"
GENERATED_TOKENS_KEY = "tokens/generated_tokens"
# Generated tokens by kind. A GRPO run logs only first attempts, and a missing kind counts as 0.
TOKEN_KEYS = {
    "first_attempt": "tokens/first_attempt_tokens",
    "reflection": "tokens/reflection_tokens",
    "retry": "tokens/retry_tokens",
}


class RunDataError(ValueError):
    """A run file that is missing or invalid. The message names the file and the fix."""


@dataclass
class RunResult:
    """One training run of one method and seed, with its metrics and held-out evaluation."""

    method: str
    seed: int
    run_dir: Path
    metrics: list[dict[str, Any]]
    """One dict per training step, in the order of ``metrics.jsonl``."""
    evaluation: dict[str, Any]
    """The contents of ``eval.json``."""

    @property
    def episode_success(self) -> list[float]:
        """Held-out first-attempt outcomes, 1.0 or 0.0, in evaluation seed order."""
        return [float(value) for value in self.evaluation["episode_success"]]

    @property
    def held_out_success(self) -> float:
        """Share of held-out episodes solved on the first attempt."""
        return float(np.mean(self.episode_success))

    @property
    def invalid_action_rate(self) -> float | None:
        """Held-out invalid replies per turn, or None when eval.json does not record it."""
        value = self.evaluation.get("eval/invalid_action_rate")
        return None if value is None else float(value)

    @property
    def steps(self) -> int:
        """Number of logged training steps."""
        return len(self.metrics)

    @property
    def step_numbers(self) -> np.ndarray:
        """Step number of each logged step, or its 1-based position when the line has no "step"."""
        return np.array([line.get("step", index + 1) for index, line in enumerate(self.metrics)], dtype=float)

    def series(self, key: str) -> np.ndarray:
        """Return the per-step values of a metric, with NaN at steps that did not log it."""
        return np.array([_as_float(line.get(key)) for line in self.metrics])

    def has_metric(self, key: str) -> bool:
        """Return whether any step logged the metric."""
        return bool(np.any(~np.isnan(self.series(key))))

    def generated_tokens_per_step(self) -> np.ndarray:
        """Return the tokens generated at each step.

        A step without "tokens/generated_tokens" counts the sum of its token kinds.
        """
        by_kind = sum(np.nan_to_num(self.series(key)) for key in TOKEN_KEYS.values())
        total = self.series(GENERATED_TOKENS_KEY)
        return np.where(np.isnan(total), by_kind, total)

    def tokens_by_kind(self) -> dict[str, float]:
        """Sum the generated tokens over all steps, by kind and in total ("generated")."""
        totals = {kind: float(np.nansum(self.series(key))) for kind, key in TOKEN_KEYS.items()}
        totals["generated"] = float(self.generated_tokens_per_step().sum())
        return totals

    @property
    def wall_time_s(self) -> float:
        """Training wall time in seconds: the sum of "time/step_s" over logged steps."""
        return float(np.nansum(self.series(STEP_TIME_KEY)))


def load_run(method: str, seed: int, run_dir: Path | str) -> RunResult:
    """Read a run directory's metrics.jsonl and eval.json into a RunResult.

    Raises RunDataError when either file is missing or invalid, or when eval.json has no
    per-episode outcomes.
    """
    run_dir = Path(run_dir)
    metrics = _read_metrics(run_dir)
    evaluation = _read_evaluation(run_dir)
    return RunResult(method=method, seed=seed, run_dir=run_dir, metrics=metrics, evaluation=evaluation)


def _as_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RunDataError(
            f"{path} not found: {run_dir} is not a training run directory, or its run logged no "
            "step. Pass the directory that `erlgym train` wrote, or train the run again."
        )

    metrics = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunDataError(
                f"{path}, line {number}: invalid JSON ({error}). The run may have stopped while "
                f"writing this line. Resume it with `erlgym train --resume --output-dir {run_dir}`, "
                "which rewrites the lines after its last checkpoint."
            ) from error
        if not isinstance(record, dict):
            raise RunDataError(f"{path}, line {number}: expected a JSON object per step, got {line[:80]!r}")
        metrics.append(record)

    if not metrics:
        raise RunDataError(f"{path} contains no training steps. Train the run before reporting it.")
    return metrics


def _read_evaluation(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "eval.json"
    rerun = f"Evaluate the run again with `erlgym eval --model {run_dir}`, which writes {path}."
    if not path.is_file():
        raise RunDataError(f"{path} not found: the run has no held-out evaluation. {rerun}")
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunDataError(f"{path} is not valid JSON ({error}). {rerun}") from error
    if not isinstance(evaluation, dict):
        raise RunDataError(f"{path} must contain a JSON object, got {type(evaluation).__name__}. {rerun}")

    _check_episode_success(evaluation, path, rerun)
    return evaluation


def _check_episode_success(evaluation: dict[str, Any], path: Path, rerun: str) -> None:
    """Raise RunDataError unless "episode_success" is a non-empty list of 0/1 that matches the totals."""
    outcomes = evaluation.get("episode_success")
    if not isinstance(outcomes, list) or not outcomes:
        raise RunDataError(
            f"{path} has no \"episode_success\" list of per-episode outcomes, which the bootstrap "
            f"intervals need. {rerun}"
        )
    if any(value not in (0, 1) for value in outcomes):
        raise RunDataError(f"{path}: \"episode_success\" must contain only 0 and 1. {rerun}")

    episodes = evaluation.get("episodes")
    if episodes is not None and episodes != len(outcomes):
        raise RunDataError(
            f"{path}: \"episodes\" is {episodes} but \"episode_success\" has {len(outcomes)} entries. {rerun}"
        )
    success_rate = evaluation.get("eval/success_rate")
    if success_rate is not None and not math.isclose(success_rate, np.mean(outcomes), abs_tol=1e-9):
        raise RunDataError(
            f"{path}: \"eval/success_rate\" is {success_rate} but \"episode_success\" averages "
            f"{np.mean(outcomes)}. {rerun}"
        )
