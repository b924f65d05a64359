"""Compare the wall time of ERL and GRPO training steps on the same tasks.

Both methods train the default model for ``--steps`` steps with the same seed and
training tasks, so each step's first attempts start from the same tasks and sampling
seed; ERL then also writes reflections, plays retries and trains more sequences. The
result is the ratio of mean step times, with the generated tokens and trained samples
that explain it. Goal: an ERL step costs at most 1.6 times a GRPO step.

Usage: python benchmarks/iteration_cost.py [--env ENV_ID] [--steps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import erlgym.envs  # noqa: F401  (registers the environments)
from erlgym.erl.config import TrainConfig
from erlgym.erl.run import train

GOAL_RATIO = 1.6


def run_method(method: str, env: str, steps: int, folder: Path) -> dict:
    """Train ``method`` for ``steps`` steps in a new run directory and return its per-step figures."""
    run_dir = folder / method
    started = time.perf_counter()
    train(TrainConfig(env=env, method=method, steps=steps, output_dir=str(run_dir), save_every=steps))
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "command_seconds": round(total, 1),
        "step_seconds": [round(record["time/step_s"], 1) for record in records],
        "rollout_seconds": [round(record["time/rollout_s"], 1) for record in records],
        "generated_tokens": [int(record["tokens/generated_tokens"]) for record in records],
        "trained_samples": [int(record["samples/trained"]) for record in records],
        "first_success_rate": [record["rollout/first_success_rate"] for record in records],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="erlgym/FrozenLake-v0", help="environment id (default: erlgym/FrozenLake-v0)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per method (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/iteration_cost.json"),
                        help="JSON file for the results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        results = {method: run_method(method, args.env, args.steps, Path(folder)) for method in ("grpo", "erl")}
    mean_step = {method: statistics.mean(figures["step_seconds"]) for method, figures in results.items()}
    ratio = mean_step["erl"] / mean_step["grpo"]
    summary = {
        "benchmark": "iteration_cost",
        "command": f"python benchmarks/iteration_cost.py --env {args.env} --steps {args.steps}",
        "env": args.env,
        "steps": args.steps,
        "methods": results,
        "mean_step_seconds": {method: round(value, 1) for method, value in mean_step.items()},
        "erl_over_grpo": round(ratio, 2),
        "goal": {"erl_over_grpo_max": GOAL_RATIO, "met": ratio <= GOAL_RATIO},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({key: summary[key] for key in ("mean_step_seconds", "erl_over_grpo", "goal")}, indent=2))


if __name__ == "__main__":
    main()
