"""Contract tests run on every registered erlgym environment.

An id whose module cannot be imported yet is skipped, so a registered but unbuilt
environment does not fail the suite.
"""

import importlib
import warnings

import gymnasium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from gymnasium.utils.env_checker import check_env

from erlgym.envs import ENTRY_POINTS
from erlgym.envs.base import TextEnv

RESET_INFO_KEYS = {"success", "feedback", "steps", "num_invalid_actions", "num_ineffective_actions"}
STEP_INFO_KEYS = RESET_INFO_KEYS | {"action", "action_valid", "action_effective"}
FIRST_REPLIES = {"erlgym/SearchQA-v0": "Action: Search[film]"}
"""A valid reply naming the first action, for environments whose actions take an argument."""


def importable_ids() -> list:
    params = []
    for env_id, entry_point in ENTRY_POINTS.items():
        module_name = entry_point.split(":")[0]
        try:
            importlib.import_module(module_name)
            marks = ()
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            marks = pytest.mark.skip(reason=f"{module_name} is not importable")
        params.append(pytest.param(env_id, marks=marks, id=env_id))
    return params


ENV_IDS = importable_ids()


def make_env(env_id, **kwargs):
    return gymnasium.make(env_id, **kwargs).unwrapped


def first_action_reply(env_id, env) -> str:
    return FIRST_REPLIES.get(env_id, f"Action: {env.action_names[0].capitalize()}")


def symbol_kwargs(env_id, symbols) -> dict:
    """Return the ``symbols`` argument for grid environments. Other environments run once, without it."""
    entry_point = ENTRY_POINTS[env_id]
    module_name, class_name = entry_point.split(":")
    env_class = getattr(importlib.import_module(module_name), class_name)
    if issubclass(env_class, TextEnv):
        return {"symbols": symbols}
    if symbols != "plain":
        pytest.skip(f"{env_id} has no symbol modes")
    return {}


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_passes(env_id, symbols):
    env = make_env(env_id, **symbol_kwargs(env_id, symbols))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode(env_id, symbols):
    episodes = []
    for _ in range(2):
        env = make_env(env_id, **symbol_kwargs(env_id, symbols))
        replies = [f"Action: {name}" for name in env.action_names] + ["nonsense"]
        trace = [env.reset(seed=11)]
        for reply in replies * 3:
            trace.append(env.step(reply))
            if trace[-1][2] or trace[-1][3]:
                break
        episodes.append(trace)
    assert episodes[0] == episodes[1]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_info_has_contract_keys(env_id):
    env = make_env(env_id)
    observation, info = env.reset(seed=0)
    assert observation in env.observation_space
    assert set(info) >= RESET_INFO_KEYS
    assert info["steps"] == 0
    assert not info["success"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_info_has_contract_keys(env_id):
    env = make_env(env_id)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(first_action_reply(env_id, env))
    assert set(info) >= STEP_INFO_KEYS
    assert info["action_valid"]
    assert info["action"] == env.action_names[0]
    assert isinstance(info["feedback"], str)
    assert info["feedback"]
    assert isinstance(reward, float)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_invalid_replies_end_at_step_limit(env_id):
    env = make_env(env_id, max_steps=3, format_penalty=0.5)
    env.reset(seed=0)
    results = [env.step("no action here") for _ in range(3)]
    _, reward, terminated, truncated, info = results[-1]
    assert [result[1] for result in results] == [-0.5, -0.5, -0.5]
    assert not terminated
    assert truncated
    assert info["num_invalid_actions"] == 3
    assert info["episode_feedback"].startswith("Failed: step limit of 3 reached")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_system_prompt_and_few_shot(env_id):
    env = make_env(env_id)
    messages = env.few_shot_messages()
    assert "Action: <" in env.system_prompt
    assert len(messages) == 6
    assert all(message["content"] for message in messages)
    assert all("Action: " in message["content"] for message in messages[1::2])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_never_raises_on_text(env_id):
    env = make_env(env_id, max_steps=10_000)
    env.reset(seed=0)

    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(reply=st.text() | st.text(min_size=1, max_size=20).map(lambda chunk: chunk * 5_000))
    def step_once(reply):
        observation, reward, terminated, truncated, info = env.step(reply)
        assert observation in env.observation_space
        assert set(info) >= STEP_INFO_KEYS
        assert isinstance(reward, float)
        if terminated or truncated:
            env.reset()

    step_once()
