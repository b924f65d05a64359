"""Sharing the prompt prefix's keys and values must not change what the model generates."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import erlgym.envs  # noqa: F401  (registers the environments)
from erlgym.erl.models import load_model
from erlgym.erl.rollout import GenerationConfig, RolloutEngine


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def _engine(tiny, share_prefix: bool) -> RolloutEngine:
    config = GenerationConfig(max_new_tokens=6, temperature=0.0, share_prefix=share_prefix)
    return RolloutEngine(tiny.model, tiny.tokenizer, config)


def test_build_prefix_finds_common_ids(tiny):
    engine = _engine(tiny, share_prefix=True)
    shared = list(range(10, 50))
    prefix = engine.build_prefix([shared + [60, 61], shared + [70], shared + [80, 81, 82]])
    assert prefix is not None
    assert prefix.ids == shared


def test_build_prefix_keeps_one_token_per_row(tiny):
    engine = _engine(tiny, share_prefix=True)
    shared = list(range(10, 50))
    prefix = engine.build_prefix([shared, shared + [70]])
    assert prefix is not None
    assert prefix.ids == shared[:-1]


def test_build_prefix_skips_short_prefix(tiny):
    engine = _engine(tiny, share_prefix=True)
    assert engine.build_prefix([[1, 2, 3, 4], [1, 2, 5, 6]]) is None
    assert engine.build_prefix([list(range(100))]) is None


def test_generate_with_prefix_matches_plain(tiny):
    engine = _engine(tiny, share_prefix=True)
    torch.manual_seed(0)
    shared = torch.randint(5, len(tiny.tokenizer) - 1, (40,)).tolist()
    contexts = [shared + [7, 8, 9], shared + [11], shared + [12, 13, 14, 15, 16]]
    plain = engine.generate(contexts, max_new_tokens=6)
    prefix = engine.build_prefix(contexts)
    cached = engine.generate(contexts, max_new_tokens=6, prefix=prefix)
    assert cached == plain


def test_prefix_is_reusable_across_calls(tiny):
    engine = _engine(tiny, share_prefix=True)
    shared = list(range(20, 70))
    contexts = [shared + [7], shared + [8, 9]]
    prefix = engine.build_prefix(contexts)
    first = engine.generate(contexts, max_new_tokens=4, prefix=prefix)
    second = engine.generate(contexts, max_new_tokens=4, prefix=prefix)
    assert first == second


def test_rollouts_equal_with_and_without_prefix(tiny):
    results = []
    for share_prefix in (True, False):
        engine = _engine(tiny, share_prefix)
        envs = [gym.make("erlgym/FrozenLake-v0", size=3) for _ in range(3)]
        episodes = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                    for seed, env in enumerate(envs)]
        engine.run(episodes)
        results.append([(episode.completion_ids, episode.env_mask) for episode in episodes])
    assert results[0] == results[1]
