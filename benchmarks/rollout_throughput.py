"""Measure the generation throughput of erlgym's rollout engine.

Two comparisons, each in generated tokens per second:

1. ``RolloutEngine.generate`` against a direct ``model.generate`` call on the same
   batch of first FrozenLake prompts (system prompt, few-shot examples and first
   observation), both greedy, with the same ``max_new_tokens`` and stop ids. The
   engine adds padding, stop-id trimming and bookkeeping around ``model.generate``,
   and the goal is that it keeps at least 85% of the direct call's rate. A third
   measurement passes the prompts' shared prefix (``RolloutEngine.build_prefix``,
   timed with the call), as ``RolloutEngine.run`` does.
2. Full multi-turn FrozenLake episodes played by ``RolloutEngine.run``: all
   episodes in one batch against one episode at a time. The time includes every
   turn's generation, parsing and environment step. The goal is that the batch is
   at least 4 times faster at batch size 8. ``RolloutEngine.run`` computes the
   shared prompt prefix once when it plays two or more episodes, and not for a
   single episode, so the ratio includes that saving.

Generated tokens are counted up to and including the first stop id of each row.
Greedy decoding makes the paths of comparison 1 produce the same tokens, which the
script checks and records (``same_tokens``). Each measurement is repeated and the fastest repeat is kept, because
other processes on a shared machine only ever slow a repeat down.

The results record the load average before and after the run. On a machine whose
cores are busy with other work, torch's intra-op threads wait for each other and
small matrix products become many times slower. Compare runs only at similar load,
or pass ``--threads 1``.

Usage::

    python benchmarks/rollout_throughput.py --out benchmarks/results/rollout_throughput.json
    python benchmarks/rollout_throughput.py --model PATH/TO/MODEL_FOLDER --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# erlgym.erl comes first, as in the erlgym command line, because it sets OMP_WAIT_POLICY,
# which takes effect only before torch loads its OpenMP runtime.
import erlgym.erl  # noqa: I001
import erlgym.envs  # noqa: F401  (registers erlgym/FrozenLake-v0)
from erlgym.erl.chat import encode_prompt
from erlgym.erl.models import load_model
from erlgym.erl.rollout import Episode, GenerationConfig, RolloutEngine

import gymnasium
import torch
import transformers

ENV_ID = "erlgym/FrozenLake-v0"
GOAL_MIN_ENGINE_RATIO = 0.85
"""Minimum engine / direct ``model.generate`` token rate."""
GOAL_MIN_BATCHED_RATIO = 4.0
"""Minimum batched / one-at-a-time episode token rate, at batch size 8."""
GOAL_BATCH_SIZE = 8


def build_first_prompts(tokenizer, env_kwargs: dict[str, Any], seeds: list[int]) -> list[list[int]]:
    """Encode the first prompt of one FrozenLake episode per seed, as a training rollout builds it."""
    env = gymnasium.make(ENV_ID, **env_kwargs)
    prompts = []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        messages = [{"role": "system", "content": env.unwrapped.system_prompt},
                    *env.unwrapped.few_shot_messages(),
                    {"role": "user", "content": observation}]
        prompts.append(encode_prompt(tokenizer, messages))
    env.close()
    return prompts


def generate_directly(engine: RolloutEngine, contexts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Generate greedily with ``model.generate`` on a batch the tokenizer pads, as a user would."""
    tokenizer, model = engine.tokenizer, engine.model
    batch = tokenizer.pad({"input_ids": contexts}, padding=True, return_tensors="pt")  # (B, width), left-padded
    width = batch["input_ids"].shape[1]
    with torch.inference_mode():
        output = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(engine.stop_ids),
        )
    return [cut_at_stop(row, engine.stop_ids) for row in output[:, width:].tolist()]


def cut_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in stop_ids:
            return ids[: position + 1]
    return ids


def time_call(function) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def compare_engine_to_direct(engine: RolloutEngine, contexts: list[list[int]], max_new_tokens: int,
                             repeats: int) -> dict[str, Any]:
    """Time the three generation paths ``repeats`` times, in turn, and keep each one's fastest repeat."""
    def generate_with_prefix() -> list[list[int]]:
        return engine.generate(contexts, max_new_tokens, prefix=engine.build_prefix(contexts))

    seconds: dict[str, list[float]] = {"engine": [], "direct": [], "engine_with_prefix": []}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(repeats):
        for name, call in (("engine", lambda: engine.generate(contexts, max_new_tokens)),
                           ("direct", lambda: generate_directly(engine, contexts, max_new_tokens)),
                           ("engine_with_prefix", generate_with_prefix)):
            elapsed, outputs[name] = time_call(call)
            seconds[name].append(elapsed)

    tokens = {name: sum(len(ids) for ids in output) for name, output in outputs.items()}
    rates = {name: tokens[name] / min(seconds[name]) for name in seconds}
    prefix = engine.build_prefix(contexts)
    return {
        "prompt_tokens_mean": round(sum(len(ids) for ids in contexts) / len(contexts), 1),
        "shared_prefix_tokens": len(prefix.ids) if prefix is not None else 0,
        "generated_tokens": tokens,
        "same_tokens": outputs["engine"] == outputs["direct"],
        "same_tokens_with_prefix": outputs["engine_with_prefix"] == outputs["direct"],
        "seconds": {name: [round(value, 3) for value in values] for name, values in seconds.items()},
        "engine_tokens_per_s": round(rates["engine"], 1),
        "direct_tokens_per_s": round(rates["direct"], 1),
        "engine_with_prefix_tokens_per_s": round(rates["engine_with_prefix"], 1),
        "engine_over_direct": round(rates["engine"] / rates["direct"], 3),
        "engine_with_prefix_over_direct": round(rates["engine_with_prefix"] / rates["direct"], 3),
    }


def play_episodes(engine: RolloutEngine, envs: list[gymnasium.Env], seeds: list[int],
                  batch_size: int) -> list[Episode]:
    """Play one episode per seed, ``batch_size`` episodes per ``RolloutEngine.run`` call."""
    episodes = []
    for start in range(0, len(seeds), batch_size):
        batch = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                 for env, seed in zip(envs, seeds[start:start + batch_size])]
        episodes.extend(engine.run(batch))
    return episodes


def compare_batched_to_sequential(engine: RolloutEngine, env_kwargs: dict[str, Any], seeds: list[int],
                                  repeats: int) -> dict[str, Any]:
    """Time full episodes played all at once and one at a time, and keep each one's fastest repeat."""
    envs = [gymnasium.make(ENV_ID, **env_kwargs) for _ in seeds]
    batched_seconds, sequential_seconds = [], []
    batched: list[Episode] = []
    sequential: list[Episode] = []
    for _ in range(repeats):
        seconds, batched = time_call(lambda: play_episodes(engine, envs, seeds, len(seeds)))
        batched_seconds.append(seconds)
        seconds, sequential = time_call(lambda: play_episodes(engine, envs, seeds, 1))
        sequential_seconds.append(seconds)
    for env in envs:
        env.close()

    batched_tokens = sum(episode.generated_tokens for episode in batched)
    sequential_tokens = sum(episode.generated_tokens for episode in sequential)
    batched_rate = batched_tokens / min(batched_seconds)
    sequential_rate = sequential_tokens / min(sequential_seconds)
    # Padding changes floating-point sums, so greedy batched and single episodes may
    # diverge after a near tie. The token counts show how much the work differed.
    same = [b.completion_ids == s.completion_ids for b, s in zip(batched, sequential)]
    return {
        "episodes": len(seeds),
        "share_prefix": engine.config.share_prefix,
        "turns": {"batched": sum(e.turns for e in batched), "sequential": sum(e.turns for e in sequential)},
        "successes": {"batched": sum(e.success for e in batched), "sequential": sum(e.success for e in sequential)},
        "generated_tokens": {"batched": batched_tokens, "sequential": sequential_tokens},
        "episodes_with_same_tokens": sum(same),
        "seconds": {"batched": [round(s, 3) for s in batched_seconds],
                    "sequential": [round(s, 3) for s in sequential_seconds]},
        "batched_tokens_per_s": round(batched_rate, 1),
        "sequential_tokens_per_s": round(sequential_rate, 1),
        "batched_over_sequential": round(batched_rate / sequential_rate, 3),
    }


def describe_source() -> dict[str, Any]:
    """Return the git commit of the measured code and the tracked files changed since it, if in a checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "modified_files": git("diff", "--name-only", "HEAD").splitlines()}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified_files": []}


def describe_machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gymnasium": gymnasium.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    machine_before = describe_machine()
    source = describe_source()
    torch.manual_seed(0)
    loaded = load_model(args.model)
    engine = RolloutEngine(loaded.model, loaded.tokenizer,
                           GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0))
    seeds = list(range(args.batch_size))
    contexts = build_first_prompts(loaded.tokenizer, args.env_kwargs, seeds)
    engine.generate(contexts[:1], 4)  # warm-up: the first call pays one-time setup costs

    generation = compare_engine_to_direct(engine, contexts, args.max_new_tokens, args.repeats)
    rollout = compare_batched_to_sequential(engine, args.env_kwargs, seeds, args.rollout_repeats)
    at_goal_batch = args.batch_size == GOAL_BATCH_SIZE
    return {
        "benchmark": "Rollout engine generation throughput (greedy), FrozenLake prompts",
        "command": shlex.join(["python", "benchmarks/rollout_throughput.py", *sys.argv[1:]]),
        "model": args.model,
        "env": ENV_ID,
        "env_kwargs": args.env_kwargs,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "rollout_repeats": args.rollout_repeats,
        "generate": generation,
        "rollout": rollout,
        "goals": {
            "engine_over_direct_min": GOAL_MIN_ENGINE_RATIO,
            "engine_over_direct_met": generation["engine_over_direct"] >= GOAL_MIN_ENGINE_RATIO,
            "batched_over_sequential_min": GOAL_MIN_BATCHED_RATIO,
            "batched_over_sequential_batch_size": GOAL_BATCH_SIZE,
            # The batching goal is set for batch size 8 only; other sizes record None.
            "batched_over_sequential_met": (rollout["batched_over_sequential"] >= GOAL_MIN_BATCHED_RATIO
                                            if at_goal_batch else None),
        },
        "source": source,
        "machine": machine_before,
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def parse_json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"size\": 4}}', got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default",
                        help="model spec for erlgym.erl.models.load_model: 'default' (SmolLM2-135M-Instruct) "
                             "or a local model folder (default: default)")
    parser.add_argument("--batch-size", type=int, default=GOAL_BATCH_SIZE,
                        help="prompts per generate call and episodes per rollout (default: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=24,
                        help="maximum new tokens per generate call and per turn (default: 24, the training default)")
    parser.add_argument("--env-kwargs", type=parse_json_object, default={"size": 4},
                        help="gymnasium.make keyword arguments of FrozenLake as JSON (default: '{\"size\": 4}', "
                             "generated 4x4 maps, so episodes end within 14 turns)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats of the generate comparison; the fastest is kept (default: 3)")
    parser.add_argument("--rollout-repeats", type=int, default=1,
                        help="timed repeats of the episode comparison; the fastest is kept (default: 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads; 0 keeps torch's default, one per core (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rollout_throughput.json"),
                        help="JSON file to write (default: benchmarks/results/rollout_throughput.json)")
    args = parser.parse_args()
    for name in ("batch_size", "max_new_tokens", "repeats", "rollout_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 or more, got {args.threads}")

    result = run(args)
    text = json.dumps(result, indent=2) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
