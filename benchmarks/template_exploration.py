"""Compare exploration by STATe templates at low temperature with plain temperature sampling.

Every condition plays the same tasks with the same number of rollouts per task (a GRPO
group), with no training, and records per group of rollouts:

* distinct action sequences and distinct final states (of G rollouts);
* distinct-2 of the group's reply texts;
* pass@k for k = 1, 2, 4, ..., G, with the unbiased estimator 1 - C(n - c, k) / C(n, k)
  of Chen et al. (2021), "Evaluating Large Language Models Trained on Code";
* the success rate and the rate of replies that named no valid action.

Conditions (``--conditions``): ``t0.7`` and ``t1.0`` sample at that temperature without
templates; ``templates-t0.3`` and ``templates-greedy`` prefill a template chosen
uniformly from the environment's bundled library at every turn and sample at 0.3, or
decode greedily, so that all diversity comes from the templates.

Each seed draws its own tasks and sampling seed. Intervals are two-level bootstrap 95%
intervals over seeds and tasks (``erlgym.eval.stats.bootstrap_ci``).

Usage::

    python benchmarks/template_exploration.py --out benchmarks/results/template_exploration.json
    python benchmarks/template_exploration.py --env erlgym/Sokoban-v0 --tasks 8 --group 8 --seeds 3
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

# erlgym.erl comes first, as in the erlgym command line, because it sets OMP_WAIT_POLICY,
# which takes effect only before torch loads its OpenMP runtime.
import erlgym.erl  # noqa: I001
import erlgym.envs  # noqa: F401  (registers the environments)
from erlgym.erl.algorithm import EnvPool, invalid_action_rate
from erlgym.erl.config import DEFAULT_ENV_KWARGS, DEFAULT_TEMPLATE_LIBRARIES
from erlgym.erl.diversity import group_diversity
from erlgym.erl.models import load_model
from erlgym.erl.prefill import build_prefill
from erlgym.erl.rollout import GenerationConfig, RolloutEngine
from erlgym.eval.stats import bootstrap_ci

import torch
from rich.progress import Progress

from machine import describe_machine, write_result

CONDITIONS = {
    "t0.7": {"temperature": 0.7, "templates": False},
    "t1.0": {"temperature": 1.0, "templates": False},
    "templates-t0.3": {"temperature": 0.3, "templates": True},
    "templates-greedy": {"temperature": 0.0, "templates": True},
}
TASK_SEED_START = 2_000_000
"""First task seed, away from training (0...) and evaluation (1,000,000...) seeds."""


def pass_at_k(successes: int, n: int, k: int) -> float:
    """Return the unbiased pass@k estimate for a task with ``successes`` of ``n`` rollouts correct."""
    if n - successes < k:
        return 1.0
    return 1.0 - math.comb(n - successes, k) / math.comb(n, k)


def run_condition(loaded, env_id: str, env_kwargs: dict[str, Any], name: str, seed: int, tasks: int,
                  group: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """Play ``tasks`` × ``group`` episodes under one condition and return one measurement per task."""
    settings = CONDITIONS[name]
    torch.manual_seed(seed)
    engine = RolloutEngine(loaded.model, loaded.tokenizer,
                           GenerationConfig(max_new_tokens=max_new_tokens, temperature=settings["temperature"]))
    templates = (build_prefill(DEFAULT_TEMPLATE_LIBRARIES[env_id], "uniform", loaded.tokenizer, seed=seed)
                 if settings["templates"] else None)
    pool = EnvPool(env_id, env_kwargs)
    task_seeds = [TASK_SEED_START + seed * tasks + index for index in range(tasks)]
    episodes = [engine.start_episode(env, task_seeds[index // group], env.unwrapped.system_prompt,
                                     env.unwrapped.few_shot_messages())
                for index, env in enumerate(pool.take(tasks * group))]
    engine.run(episodes, templates=templates)
    pool.close()

    measurements = []
    for index, task_seed in enumerate(task_seeds):
        attempts = episodes[index * group: (index + 1) * group]
        successes = sum(attempt.success for attempt in attempts)
        measurement = {"task_seed": task_seed, "successes": successes,
                       "invalid_action_rate": invalid_action_rate(attempts),
                       "generated_tokens": sum(attempt.generated_tokens for attempt in attempts),
                       **group_diversity(attempts)}
        for k in ks(group):
            measurement[f"pass@{k}"] = pass_at_k(successes, group, k)
        measurements.append(measurement)
    return measurements


def ks(group: int) -> list[int]:
    values, k = [], 1
    while k <= group:
        values.append(k)
        k *= 2
    return values


def summarize(per_seed: list[list[dict[str, Any]]], group: int) -> dict[str, Any]:
    """Return the mean and bootstrap interval of every measure over seeds and tasks."""
    measures = ["distinct_action_sequences", "distinct_final_states", "distinct_2", "invalid_action_rate",
                *(f"pass@{k}" for k in ks(group))]
    summary = {}
    for measure in measures:
        interval = bootstrap_ci([[task[measure] for task in tasks] for tasks in per_seed], resamples=4000)
        summary[measure] = {"mean": interval.mean, "low": interval.low, "high": interval.high}
    interval = bootstrap_ci([[task["successes"] / group for task in tasks] for tasks in per_seed], resamples=4000)
    summary["success_rate"] = {"mean": interval.mean, "low": interval.low, "high": interval.high}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="Model spec, as for erlgym train --model.")
    parser.add_argument("--env", default="erlgym/FrozenLake-v0", choices=sorted(DEFAULT_TEMPLATE_LIBRARIES))
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help=f"Comma-separated conditions from {', '.join(CONDITIONS)}.")
    parser.add_argument("--tasks", type=int, default=12, help="Tasks per seed.")
    parser.add_argument("--group", type=int, default=8, help="Rollouts per task (G).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds; each draws its own tasks.")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="Tokens per turn, as erlgym train's default.")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file; default: print.")
    args = parser.parse_args()
    conditions = [name.strip() for name in args.conditions.split(",") if name.strip()]
    unknown = [name for name in conditions if name not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {unknown}; valid: {', '.join(CONDITIONS)}")

    loaded = load_model(args.model)
    env_kwargs = dict(DEFAULT_ENV_KWARGS.get(args.env, {}))
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with Progress() as progress:
        bar = progress.add_task("conditions × seeds", total=len(conditions) * args.seeds)
        for name in conditions:
            per_seed = []
            seconds = 0.0
            for seed in range(args.seeds):
                began = time.perf_counter()
                per_seed.append(run_condition(loaded, args.env, env_kwargs, name, seed, args.tasks, args.group,
                                              args.max_new_tokens))
                seconds += time.perf_counter() - began
                progress.advance(bar)
            results[name] = {**CONDITIONS[name], "seconds": seconds, "summary": summarize(per_seed, args.group),
                             "per_seed": per_seed}

    write_result({
        "benchmark": "template_exploration",
        "command": "python benchmarks/template_exploration.py " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
            if key != "out" and value is not None),
        "env": args.env, "env_kwargs": env_kwargs, "model": args.model, "tasks_per_seed": args.tasks,
        "group": args.group, "seeds": args.seeds, "total_seconds": time.perf_counter() - started,
        "machine": describe_machine("torch", "transformers"),
        "conditions": results,
    }, args.out)


if __name__ == "__main__":
    main()
