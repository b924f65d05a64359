"""Compare the step rate of erlgym's FrozenLake text env with Gymnasium's FrozenLake-v1.

Both environments play the same non-slippery 4x4 map with the same random action
sequence: Gymnasium receives integer actions, erlgym receives the reply
``"Action: <Name>"`` and parses it. Both are built with ``gymnasium.make`` and its
default wrappers, and both reset when an episode ends. Only ``step`` calls are timed.
The goal is a text step no more than 3 times slower than the integer step.

Usage::

    python benchmarks/env_steps.py --out benchmarks/results/env_steps.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium
import numpy as np

import erlgym.envs  # noqa: F401  (registers erlgym/FrozenLake-v0)
from machine import describe_machine, write_result

GOAL_MAX_RATIO = 3.0
# Gymnasium's integer actions: LEFT=0, DOWN=1, RIGHT=2, UP=3.
REPLIES = ("Action: Left", "Action: Down", "Action: Right", "Action: Up")


def measure_steps_per_s(env: gymnasium.Env, actions: list, num_steps: int) -> float:
    """Return the step rate over ``num_steps`` steps, excluding reset time."""
    env.reset(seed=0)
    step_time_s = 0.0
    for i in range(num_steps):
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(actions[i % len(actions)])
        step_time_s += time.perf_counter() - start
        if terminated or truncated:
            env.reset()
    return num_steps / step_time_s


def run(num_steps: int, repeats: int) -> dict:
    """Measure both environments ``repeats`` times, alternating, and keep each one's best rate."""
    action_ids = np.random.default_rng(0).integers(4, size=1000).tolist()
    replies = [REPLIES[i] for i in action_ids]
    gymnasium_env = gymnasium.make("FrozenLake-v1", map_name="4x4", is_slippery=False)
    text_env = gymnasium.make("erlgym/FrozenLake-v0", map_name="4x4", max_steps=100)

    gymnasium_rates, text_rates = [], []
    for _ in range(repeats):
        gymnasium_rates.append(measure_steps_per_s(gymnasium_env, action_ids, num_steps))
        text_rates.append(measure_steps_per_s(text_env, replies, num_steps))

    gymnasium_rate, text_rate = max(gymnasium_rates), max(text_rates)
    ratio = gymnasium_rate / text_rate
    return {
        "benchmark": "FrozenLake 4x4 non-slippery step rate, text env vs Gymnasium integer env",
        "command": f"python benchmarks/env_steps.py --num-steps {num_steps} --repeats {repeats}",
        "num_steps": num_steps,
        "repeats": repeats,
        "gymnasium_frozen_lake_v1_steps_per_s": round(gymnasium_rate),
        "erlgym_frozen_lake_v0_steps_per_s": round(text_rate),
        "slowdown_ratio": round(ratio, 3),
        "goal_max_ratio": GOAL_MAX_RATIO,
        "goal_met": ratio <= GOAL_MAX_RATIO,
        "machine": describe_machine("gymnasium", "numpy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file to write; prints to stdout when omitted")
    parser.add_argument("--num-steps", type=int, default=50_000, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per environment; the best is kept")
    args = parser.parse_args()

    result = run(args.num_steps, args.repeats)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
