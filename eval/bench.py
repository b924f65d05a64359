"""``erlgym bench``: train several methods on several seeds, evaluate each run, and write a report.

A bench folder contains:

- ``bench.json``: the bench settings and the base training configuration;
- ``base_eval.json``: the untrained model on the held-out episodes;
- ``runs/<method>-seed<k>/``: one training run directory per method and seed, with
  its held-out evaluation in ``eval.json``;
- ``report/``: the markdown report, learning curves and every number as CSV and JSON.

For one seed, every method trains on the same tasks with the same seed and is
evaluated on the same held-out episodes, so differences between methods are paired.
Different seeds train on disjoint task ranges. Started again with the same settings,
a bench skips finished runs and resumes unfinished ones from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erlgym.erl.config import EVAL_SEED_OFFSET, ConfigError, TrainConfig

BUDGETS = ("steps", "tokens", "seconds")
BENCH_FILE = "bench.json"
BASE_EVAL_FILE = "base_eval.json"
RUNS_DIR = "runs"
REPORT_DIR = "report"
EVAL_FILE = "eval.json"

VARIANTS: dict[str, dict[str, Any]] = {
    "erl": {"method": "erl"},
    "grpo": {"method": "grpo"},
    "erl-no-internalize": {"method": "erl", "internalize": False},
    "erl-no-reflection-reward": {"method": "erl", "train_reflections": False},
    "erl-attempt-retry": {"method": "erl", "retry_context": "attempt"},
    "erl-no-memory": {"method": "erl", "memory_size": 0},
    "erl-top-memory": {"method": "erl", "memory_policy": "top"},
    "erl-rulebook": {"method": "erl", "reflection_scope": "batch"},
    "erl-task-memory": {"method": "erl", "memory_scope": "task"},
    "ppo": {"method": "grpo", "update": "ppo"},
    "erl-ppo": {"method": "erl", "update": "ppo"},
    "erl-distill": {"method": "erl", "internalization": "distill"},
    "grpo-t1.0": {"method": "grpo", "temperature": 1.0},
    "grpo-templates": {"method": "grpo", "templates": "auto", "temperature": 0.3},
    "erl-templates": {"method": "erl", "templates": "auto", "reflection_templates": "reflection",
                      "temperature": 0.3},
}
"""Names ``--methods`` accepts, with the training fields each sets on top of the base configuration.

- ``erl-no-internalize``: successful retries are not trained again without the reflection.
- ``erl-no-reflection-reward``: reflections are written and used but never trained.
- ``erl-attempt-retry``: a retry starts with the failed attempt and its feedback, not a reflection.
- ``erl-no-memory``: no reflections are kept.
- ``erl-top-memory``: the memory keeps the reflections with the highest retry reward.
- ``erl-rulebook``: one rulebook per step, written from a batch of attempts, guides every retry.
- ``erl-task-memory``: a reflection prompt shows only the kept reflections from the same task.
- ``ppo``, ``erl-ppo``: first attempts only, and ERL, with PPO advantages (a value head and GAE
  over turns). ``erl`` and ``grpo`` use the base configuration's ``--update``.
- ``erl-distill``: successful retries are internalized by self-distillation toward the
  reflection-conditioned policy's token distributions instead of reward-weighted training.
- ``grpo-t1.0``: first attempts sampled at temperature 1.0, the usual way to explore more.
- ``grpo-templates``, ``erl-templates``: exploration from STATe templates (the environment's
  bundled library, chosen uniformly at every turn; ERL also prefills reflections) at
  temperature 0.3 instead of the base temperature.
"""


@dataclass
class BenchConfig:
    """Settings of one ``erlgym bench``: which methods, how many seeds, the budget and the evaluation."""

    out: str
    train: TrainConfig
    methods: tuple[str, ...] = ("erl", "grpo")
    seeds: int = 3
    budget: str = "steps"
    budget_value: float = 0.0
    episodes: int = 64
    baseline: str = "grpo"
    command: str | None = field(default=None, compare=False)

    def validate(self) -> "BenchConfig":
        """Raise :class:`ConfigError` for the first invalid setting."""
        self.train.validate()
        unknown = [method for method in self.methods if method not in VARIANTS]
        if not self.methods or unknown:
            raise ConfigError(f"--methods must list methods from {', '.join(VARIANTS)}, got {','.join(self.methods)!r}.")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {','.join(self.methods)!r}.")
        if self.baseline not in self.methods:
            raise ConfigError(f"--baseline {self.baseline!r} is not among --methods {','.join(self.methods)!r}.")
        trained: dict[str, str] = {}
        for method in self.methods:
            settings = json.dumps(dataclasses.replace(self.train, **VARIANTS[method]).to_dict(), sort_keys=True)
            if settings in trained:
                raise ConfigError(
                    f"--methods {trained[settings]} and {method} train the same configuration with these options "
                    f"(erl and grpo follow --update, --internalization and the other options). Drop one of them.")
            trained[settings] = method
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, got {self.seeds!r}.")
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise ConfigError(f"--episodes must be a positive integer, got {self.episodes!r}.")
        if self.budget not in BUDGETS:
            raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}.")
        if self.budget == "steps" and self.budget_value:
            raise ConfigError(f"--budget-value {self.budget_value:g} has no effect with --budget steps; "
                              "pass --budget tokens or --budget seconds, or set the steps with --steps.")
        if self.budget != "steps" and not self.budget_value > 0:
            raise ConfigError(f"--budget {self.budget} needs --budget-value above 0 "
                              f"({'tokens' if self.budget == 'tokens' else 'seconds'} per run).")
        last_task = self.train.train_seed_offset + self.seeds * self.task_stride()
        if last_task > EVAL_SEED_OFFSET:
            raise ConfigError(
                f"{self.seeds} seeds × {self.task_stride()} training tasks from seed {self.train.train_seed_offset} "
                f"reach the held-out seeds from {EVAL_SEED_OFFSET}. Use fewer seeds, steps or tasks per step.")
        return self

    def task_stride(self) -> int:
        """Return how many task seeds one run can use: steps × tasks per step."""
        return self.train.steps * self.train.tasks_per_step

    def run_config(self, method: str, seed: int, run_dir: Path) -> TrainConfig:
        """Return the training configuration of one run: the base one with its method, seed, tasks and budget."""
        budget = {"tokens": {"max_generated_tokens": int(self.budget_value)},
                  "seconds": {"max_train_seconds": float(self.budget_value)}}.get(self.budget, {})
        return dataclasses.replace(
            self.train, seed=seed, output_dir=str(run_dir),
            train_seed_offset=self.train.train_seed_offset + seed * self.task_stride(), **VARIANTS[method], **budget)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings that decide the bench's results, as JSON-ready values."""
        values = {name: getattr(self, name) for name in
                  ("methods", "seeds", "budget", "budget_value", "episodes", "baseline")}
        values["methods"] = list(self.methods)
        train = dataclasses.asdict(self.train)
        train.pop("output_dir")
        values["train"] = train
        return values


@dataclass
class BenchEvent:
    """Progress of a bench: which run starts or ends, and how many runs are done."""

    kind: str  # "start", "skip", "done"
    label: str
    done: int
    total: int
    seconds: float = 0.0


def prepare_bench_dir(config: BenchConfig) -> Path:
    """Create the bench folder, or reopen one made with the same settings.

    Raises:
        ConfigError: the folder contains a bench with other settings, or is another non-empty folder.
    """
    out = Path(config.out).expanduser()
    settings = config.to_dict()
    saved_path = out / BENCH_FILE
    if saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{saved_path} is not valid JSON ({error.msg}). Delete it or use another --out.") from error
        changed = [f"{key}: {saved.get(key)!r} there, {settings.get(key)!r} now"
                   for key in sorted(set(saved) | set(settings))
                   if key != "train" and saved.get(key) != settings.get(key)]
        # A bench saved before a training field existed ran with that field's default.
        saved_train = {**TrainConfig().to_dict(), **saved.get("train", {})}
        saved_train.pop("output_dir", None)
        changed += [f"{key}: {saved_train.get(key)!r} there, {settings['train'].get(key)!r} now"
                    for key in sorted(set(saved_train) | set(settings["train"]))
                    if saved_train.get(key) != settings["train"].get(key)]
        if changed:
            raise ConfigError(
                f"{out} contains a bench with other settings ({'; '.join(changed)}). Rerun with the same options "
                "to continue it, or pass another --out.")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder or a bench folder. Pass another --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(settings, indent=2))
    except OSError as error:
        raise ConfigError(f"Cannot write the bench folder {out}: {error.strerror}. Pass a writable --out.") from error
    return out


def run_status(run_dir: Path) -> str | None:
    """Return the run's status from its ``run.json``, or None when it has none."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def evaluation_is_current(path: Path, config: BenchConfig) -> bool:
    """Return whether ``path`` is a readable evaluation on this bench's held-out episodes."""
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(results, dict):
        return False
    expected_seeds = [EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + config.episodes - 1]
    return (results.get("seeds") == expected_seeds and results.get("temperature") == 0.0
            and results.get("env") == config.train.env
            and len(results.get("episode_success") or []) == config.episodes)


def evaluate_to_file(model: str, config: BenchConfig, path: Path, env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Evaluate ``model`` on the bench's held-out episodes and write the results to ``path``."""
    from erlgym.erl.evaluate import EvalConfig, evaluate

    results = evaluate(EvalConfig(env=config.train.env, env_kwargs=env_kwargs, model=model,
                                  episodes=config.episodes, temperature=0.0,
                                  max_new_tokens=config.train.max_new_tokens,
                                  max_context_tokens=config.train.max_context_tokens, dtype=config.train.dtype))
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2))
    temporary.replace(path)  # a killed bench never leaves a half-written evaluation
    return results


def run_bench(config: BenchConfig, on_event: Callable[[BenchEvent], None] | None = None,
              on_step: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train and evaluate every method on every seed, then write the report; return the path of report.md.

    Seeds are the outer loop, so that an interrupted bench has complete pairs to compare.
    """
    from erlgym.erl.run import train
    from erlgym.eval.report import load_run, write_report

    config.validate()
    out = prepare_bench_dir(config)
    plan = [(method, seed) for seed in range(config.seeds) for method in config.methods]
    total = len(plan) + 1

    def report(kind: str, label: str, done: int, seconds: float = 0.0) -> None:
        if on_event is not None:
            on_event(BenchEvent(kind=kind, label=label, done=done, total=total, seconds=seconds))

    base_eval = out / BASE_EVAL_FILE
    if evaluation_is_current(base_eval, config):
        report("skip", "base model evaluation", 1)
    else:
        report("start", "base model evaluation", 0)
        started = time.perf_counter()
        evaluate_to_file(config.train.model, config, base_eval, config.train.env_kwargs)
        report("done", "base model evaluation", 1, time.perf_counter() - started)

    runs = []
    for index, (method, seed) in enumerate(plan, start=2):
        label = f"{method} seed {seed}"
        run_dir = out / RUNS_DIR / f"{method}-seed{seed}"
        eval_path = run_dir / EVAL_FILE
        status = run_status(run_dir)
        # An evaluation that is missing, unreadable or made with other settings is made again.
        if status == "completed" and evaluation_is_current(eval_path, config):
            report("skip", label, index)
        else:
            report("start", label, index - 1)
            started = time.perf_counter()
            if status != "completed":
                resume = run_dir.is_dir() and any(run_dir.iterdir())
                train(config.run_config(method, seed, run_dir), resume=resume, on_step=on_step)
            evaluate_to_file(str(run_dir), config, eval_path, None)
            report("done", label, index, time.perf_counter() - started)
        runs.append(load_run(method, seed, run_dir))

    seeds = f"{config.seeds} seed" + ("s" if config.seeds != 1 else "")
    title = f"{', '.join(config.methods)} on {config.train.env}: {seeds}, {config.budget} budget"
    return write_report(out / REPORT_DIR, runs, title=title, command=config.command, baseline=config.baseline,
                        base_evaluation=json.loads(base_eval.read_text()))
