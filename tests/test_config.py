"""TrainConfig defaults, validation and dtype resolution."""

from __future__ import annotations

import pytest

from erlgym.erl.config import DEFAULT_ENV_KWARGS, ConfigError, TrainConfig, resolve_dtype


def test_default_env_kwargs_for_frozen_lake():
    config = TrainConfig(env="erlgym/FrozenLake-v0").validate()
    assert config.env_kwargs == DEFAULT_ENV_KWARGS["erlgym/FrozenLake-v0"]


def test_default_env_kwargs_are_copied():
    config = TrainConfig(env="erlgym/FrozenLake-v0").validate()
    config.env_kwargs["size"] = 9
    assert DEFAULT_ENV_KWARGS["erlgym/FrozenLake-v0"]["size"] != 9


def test_explicit_env_kwargs_kept():
    config = TrainConfig(env="erlgym/FrozenLake-v0", env_kwargs={"size": 5}).validate()
    assert config.env_kwargs == {"size": 5}


def test_unknown_env_gets_no_kwargs():
    config = TrainConfig(env="erlgym/Other-v0").validate()
    assert config.env_kwargs == {}


def test_indivisible_micro_batches_rejected():
    with pytest.raises(ConfigError, match="micro_batches"):
        TrainConfig(tasks_per_step=3, rollouts_per_task=3, micro_batches=2).validate()


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match="Unknown config field"):
        TrainConfig.from_dict({"stepz": 3})


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_resolve_dtype_keeps_explicit(name):
    assert resolve_dtype(name) == name


def test_resolve_dtype_auto_is_concrete():
    assert resolve_dtype("auto") in ("float32", "bfloat16")


@pytest.mark.parametrize("field, value", [
    ("lora", "no"), ("steps", True), ("seed", 1.5), ("learning_rate", "1e-4"), ("model", 5), ("env_kwargs", [1]),
])
def test_wrong_type_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


def test_integer_learning_rate_accepted():
    assert TrainConfig(learning_rate=1).validate().learning_rate == 1


@pytest.mark.parametrize("field", ["seed", "train_seed_offset"])
def test_negative_seed_rejected(field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: -1}).validate()


@pytest.mark.parametrize("field, value, allowed", [
    ("memory_policy", "oldest", "latest, top"),
    ("retry_context", "feedback", "reflection, attempt"),
    ("memory_scope", "stream", "global, task"),
    ("reflection_scope", "step", "task, batch"),
])
def test_unknown_choice_rejected(field, value, allowed):
    with pytest.raises(ConfigError, match=f"{field} must be one of {allowed}, got '{value}'"):
        TrainConfig(**{field: value}).validate()


def test_scope_defaults_and_choices():
    assert (TrainConfig().memory_scope, TrainConfig().reflection_scope) == ("global", "task")
    config = TrainConfig(memory_scope="task", reflection_scope="batch").validate()
    assert (config.memory_scope, config.reflection_scope) == ("task", "batch")


@pytest.mark.parametrize("field, value", [
    ("value_coef", float("inf")), ("value_coef", float("nan")), ("beta", float("nan")), ("beta", float("inf")),
    ("max_grad_norm", -1.0), ("max_grad_norm", 0.0), ("max_grad_norm", float("nan")),
    ("memory_threshold", float("nan")), ("memory_threshold", float("inf")),
])
def test_non_finite_or_negative_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()
