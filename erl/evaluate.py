"""Evaluate a model or a run's checkpoint on held-out environment seeds.

Each episode is a first attempt with no reflection in context, the behaviour ERL
deploys. Metrics: success rate, mean steps, invalid-action rate, and the rate of
valid actions on the first turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from erlgym.erl.config import DEFAULT_ENV_KWARGS, EVAL_SEED_OFFSET, ConfigError, resolve_dtype

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Settings of one ``erlgym eval`` run."""

    env: str = "erlgym/FrozenLake-v0"
    env_kwargs: dict[str, Any] | None = None
    model: str = "default"
    episodes: int = 64
    seed_offset: int = EVAL_SEED_OFFSET
    temperature: float = 0.0
    max_new_tokens: int = 24
    max_context_tokens: int = 2048
    batch_size: int = 32
    dtype: str = "auto"


def load_policy(spec: str, dtype: str = "float32"):
    """Load a model spec, or a run directory's trained model (its ``final/`` or latest checkpoint).

    Returns the loaded model and, for a run directory, the run's saved config as a dict.
    """
    from erlgym.erl.models import load_model
    from erlgym.erl.run import FINAL_DIR, STATUS_FILE, latest_checkpoint, read_run_config

    path = Path(spec).expanduser()
    if not (path / STATUS_FILE).is_file():
        return load_model(spec, dtype), None

    run_config = read_run_config(path)
    weights = path / FINAL_DIR if (path / FINAL_DIR).is_dir() else latest_checkpoint(path)
    if weights is None:
        raise ConfigError(f"Run directory {path} has neither final/ nor a checkpoint yet; train it first.")
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(run_config["model"], dtype)
        base.model = PeftModel.from_pretrained(base.model, str(weights)).merge_and_unload()
        base.spec = str(weights)
        return base, run_config
    loaded = load_model(str(weights), dtype)
    return loaded, run_config


def evaluate(config: EvalConfig, on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``config.episodes`` first attempts on held-out seeds and return the metrics."""
    from erlgym.erl.algorithm import invalid_action_rate
    from erlgym.erl.rollout import GenerationConfig, RolloutEngine
    from erlgym.erl.run import check_env_id, make_env_or_raise

    if config.seed_offset < 0:
        raise ConfigError(f"seed_offset must be >= 0, got {config.seed_offset!r}.")
    for name in ("episodes", "batch_size", "max_new_tokens", "max_context_tokens"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if not config.temperature >= 0:
        raise ConfigError(f"temperature must be >= 0, got {config.temperature!r}.")
    check_env_id(config.env)
    dtype = resolve_dtype(config.dtype)
    loaded, run_config = load_policy(config.model, dtype)
    env_kwargs = config.env_kwargs
    if env_kwargs is None:
        # The task distribution training used: the run's own, else training's default.
        same_env = run_config is not None and run_config.get("env") == config.env
        env_kwargs = run_config.get("env_kwargs") if same_env else None
        if env_kwargs is None:
            env_kwargs = dict(DEFAULT_ENV_KWARGS.get(config.env, {}))

    engine = RolloutEngine(loaded.model, loaded.tokenizer, GenerationConfig(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        max_context_tokens=config.max_context_tokens))
    seeds = list(range(config.seed_offset, config.seed_offset + config.episodes))
    envs = [make_env_or_raise(config.env, env_kwargs) for _ in range(min(config.batch_size, len(seeds)))]
    episodes = []
    started = time.perf_counter()
    for start in range(0, len(seeds), len(envs)):
        batch = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                 for env, seed in zip(envs, seeds[start:start + len(envs)])]
        episodes.extend(engine.run(batch))
        if on_batch is not None:
            on_batch(len(episodes), len(seeds))
    for env in envs:
        env.close()

    first_turn_valid = [bool(episode.action_valid[:1] == [True]) for episode in episodes]
    return {
        "env": config.env,
        "env_kwargs": env_kwargs,
        "model": loaded.spec,
        "episodes": len(episodes),
        "seeds": [seeds[0], seeds[-1]],
        "temperature": config.temperature,
        "dtype": dtype,
        "eval/success_rate": float(np.mean([episode.success for episode in episodes])),
        "eval/mean_steps": float(np.mean([episode.turns for episode in episodes])),
        "eval/invalid_action_rate": invalid_action_rate(episodes),
        "eval/first_turn_valid_rate": float(np.mean(first_turn_valid)),
        "eval/generated_tokens": int(sum(episode.generated_tokens for episode in episodes)),
        "eval/seconds": round(time.perf_counter() - started, 1),
        "episode_success": [int(episode.success) for episode in episodes],
    }
