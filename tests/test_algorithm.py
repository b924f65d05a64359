"""Tests of GRPO advantages and the ERL collection step with a real model and real envs.

The policy is the tiny action model (see ``tiny_model.py``): on 2x2 and 3x3 FrozenLake
maps some of its attempts succeed and some fail, so every trajectory kind appears.
The seeds are fixed, so each step is deterministic.
"""

import numpy as np
import pytest
import torch

from erlgym.erl.algorithm import (
    FIRST_ATTEMPT,
    INTERNALIZED_RETRY,
    REFLECTION,
    RETRY,
    TRAJECTORY_KINDS,
    EnvPool,
    StepSettings,
    DISTILLED_RETRY,
    collect_step,
    group_advantages,
    rulebook_advantage,
)
from erlgym.erl.memory import MemoryItem, ReflectionMemory
from erlgym.erl.models import load_model
from erlgym.erl.prompts import (
    ATTEMPT_NOTE_HEADER,
    REFLECTION_SYSTEM_PROMPT,
    RETRY_NOTE_HEADER,
    RULEBOOK_MAX_FAILED,
    RULEBOOK_NOTE_HEADER,
    RULEBOOK_SYSTEM_PROMPT,
    format_retry_note,
    format_rulebook_note,
    select_rulebook_attempts,
)
from erlgym.erl.rollout import Episode, GenerationConfig, RolloutEngine
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS

TASK_SEEDS = [100, 101, 102]
GROUP = 3
THRESHOLD = 1.0


@pytest.fixture(scope="module")
def action_model(action_model_dir):
    return load_model(str(action_model_dir))


def make_engine(loaded, max_new_tokens: int = 8) -> RolloutEngine:
    return RolloutEngine(loaded.model, loaded.tokenizer,
                         GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0))


def of_kind(samples, kind):
    return [sample for sample in samples if sample.kind == kind]


@pytest.fixture(scope="module")
def erl_step(action_model):
    """One ERL step on three tasks with three first attempts each, nothing dropped."""
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=32, threshold=THRESHOLD)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=True, reflection_max_new_tokens=10,
                            drop_zero_advantage=False)
    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings, step=1)
    pool.close()
    return result, memory


# ---------------------------------------------------------------- group_advantages


def test_advantages_mean_zero():
    advantages = group_advantages([1.0, 0.0, 0.0, 1.0, 1.0])

    assert sum(advantages) == pytest.approx(0.0, abs=1e-9)


def test_advantages_divided_by_std():
    advantages = group_advantages([1.0, 0.0, 0.0, 1.0])
    std = np.std([1.0, 0.0, 0.0, 1.0], ddof=1)

    unit = 0.5 / (std + 1e-4)

    assert advantages == pytest.approx([unit, -unit, -unit, unit])


def test_advantages_scale_invariant():
    small = group_advantages([1.0, 0.0, 0.0])
    large = group_advantages([10.0, 0.0, 0.0])

    assert large == pytest.approx(small, rel=1e-3)


def test_advantages_scale_none_centers_only():
    advantages = group_advantages([1.0, 0.0, 0.0, 1.0], scale="none")

    assert advantages == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_advantages_group_of_one():
    assert group_advantages([1.0]) == [0.0]


def test_advantages_equal_rewards_zero():
    advantages = group_advantages([1.0, 1.0, 1.0])

    assert advantages == [0.0, 0.0, 0.0]
    assert all(np.isfinite(advantages))


# ---------------------------------------------------------------- EnvPool


def test_env_pool_reuses_envs():
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)

    first = pool.take(2)
    second = pool.take(3)

    assert second[:2] == first
    assert len(second) == 3
    assert second[2].unwrapped.size_range == (2, 3)
    pool.close()
    assert pool.envs == []


# ---------------------------------------------------------------- ERL step


def test_erl_step_has_every_kind(erl_step):
    result, _ = erl_step

    # Internalization by reward (the default) makes internalized retries, not distilled ones.
    assert {sample.kind for sample in result.samples} == set(TRAJECTORY_KINDS) - {DISTILLED_RETRY}


def test_erl_step_mixed_outcomes(erl_step):
    """Precondition of the tests below: some first attempts fail and some retries succeed."""
    result, _ = erl_step
    first = of_kind(result.samples, FIRST_ATTEMPT)
    retries = of_kind(result.samples, RETRY)

    assert any(sample.reward == 1.0 for sample in first)
    assert any(sample.reward == 0.0 for sample in first)
    assert any(sample.reward == 1.0 for sample in retries)
    assert any(sample.reward == 0.0 for sample in retries)


def test_first_attempts_per_task(erl_step):
    result, _ = erl_step
    first = of_kind(result.samples, FIRST_ATTEMPT)

    assert [sample.task_seed for sample in first] == [seed for seed in TASK_SEEDS for _ in range(GROUP)]


def test_first_attempt_advantages_grouped(erl_step):
    result, _ = erl_step
    first = of_kind(result.samples, FIRST_ATTEMPT)

    for seed in TASK_SEEDS:
        group = [sample for sample in first if sample.task_seed == seed]
        expected = group_advantages([sample.reward for sample in group])
        assert [sample.advantage for sample in group] == pytest.approx(expected)


def test_one_reflection_per_failure(erl_step):
    result, _ = erl_step
    failed = [sample for sample in of_kind(result.samples, FIRST_ATTEMPT) if sample.reward < 1.0]
    reflections = of_kind(result.samples, REFLECTION)
    retries = of_kind(result.samples, RETRY)

    assert len(reflections) == len(failed)
    assert len(retries) == len(failed)
    assert [sample.task_seed for sample in reflections] == [sample.task_seed for sample in failed]
    assert [sample.task_seed for sample in retries] == [sample.task_seed for sample in failed]


def test_reflection_reward_is_retry_reward(erl_step):
    result, _ = erl_step
    pairs = zip(of_kind(result.samples, REFLECTION), of_kind(result.samples, RETRY))

    for reflection, retry in pairs:
        assert reflection.reward == retry.reward
        assert reflection.advantage == retry.advantage


def test_retry_advantages_grouped(erl_step):
    result, _ = erl_step
    retries = of_kind(result.samples, RETRY)

    for seed in {sample.task_seed for sample in retries}:
        group = [sample for sample in retries if sample.task_seed == seed]
        expected = group_advantages([sample.reward for sample in group])
        assert [sample.advantage for sample in group] == pytest.approx(expected)


def test_reflection_sample_trains_every_token(erl_step, action_model):
    result, _ = erl_step

    for reflection in of_kind(result.samples, REFLECTION):
        prompt = action_model.tokenizer.decode(reflection.prompt_ids)
        assert reflection.env_mask == [1] * len(reflection.completion_ids)
        assert REFLECTION_SYSTEM_PROMPT in prompt
        assert "Outcome: Failed" in prompt


def test_retry_prompt_holds_reflection(erl_step, action_model):
    result, _ = erl_step
    tokenizer = action_model.tokenizer
    first_prompt = {sample.task_seed: sample.prompt_ids for sample in of_kind(result.samples, FIRST_ATTEMPT)}
    pairs = zip(of_kind(result.samples, REFLECTION), of_kind(result.samples, RETRY))

    for reflection, retry in pairs:
        reflection_text = tokenizer.decode(reflection.completion_ids, skip_special_tokens=True).strip()
        first_text = tokenizer.decode(first_prompt[retry.task_seed])
        last_user_start = first_text.rindex("<|im_start|>user\n") + len("<|im_start|>user\n")
        expected = first_text[:last_user_start] + format_retry_note(reflection_text) + first_text[last_user_start:]
        assert tokenizer.decode(retry.prompt_ids) == expected


def test_internalized_uses_first_prompt(erl_step, action_model):
    result, _ = erl_step
    first_prompt = {sample.task_seed: sample.prompt_ids for sample in of_kind(result.samples, FIRST_ATTEMPT)}
    internalized = of_kind(result.samples, INTERNALIZED_RETRY)

    assert internalized
    for sample in internalized:
        assert sample.prompt_ids == first_prompt[sample.task_seed]
        assert RETRY_NOTE_HEADER not in action_model.tokenizer.decode(sample.prompt_ids)


def test_internalized_uses_retry_completion(erl_step):
    result, _ = erl_step
    rewarded = [sample for sample in of_kind(result.samples, RETRY) if sample.reward > 0]
    internalized = of_kind(result.samples, INTERNALIZED_RETRY)

    assert len(internalized) == len(rewarded)
    for sample, retry in zip(internalized, rewarded):
        assert sample.task_seed == retry.task_seed
        assert sample.completion_ids == retry.completion_ids
        assert sample.env_mask == retry.env_mask
        assert sample.reward == retry.reward
        assert sample.advantage == retry.reward


def test_memory_keeps_successful_reflections(erl_step):
    result, memory = erl_step
    records = [record for record in result.records if record["kind"] == REFLECTION]
    expected = [record["reflection"] for record in records if record["retry_reward"] >= THRESHOLD]

    assert expected
    assert len(expected) < len(records)
    assert memory.texts() == expected
    assert all(item.retry_reward >= THRESHOLD for item in memory.items)
    assert all(item.step == 1 for item in memory.items)


def test_reflection_records_match_samples(erl_step, action_model):
    result, _ = erl_step
    records = [record for record in result.records if record["kind"] == REFLECTION]
    reflections = of_kind(result.samples, REFLECTION)
    tokenizer = action_model.tokenizer

    assert len(records) == len(reflections)
    for record, sample in zip(records, reflections):
        assert record["reflection"] == tokenizer.decode(sample.completion_ids, skip_special_tokens=True).strip()
        assert record["retry_reward"] == sample.reward
        assert record["first_feedback"].startswith("Failed")


def test_erl_step_metrics(erl_step):
    result, memory = erl_step
    first = of_kind(result.samples, FIRST_ATTEMPT)
    retries = of_kind(result.samples, RETRY)
    successes = sum(sample.reward == 1.0 for sample in first) + sum(sample.reward == 1.0 for sample in retries)

    for kind in TRAJECTORY_KINDS:
        assert result.metrics[f"samples/{kind}"] == len(of_kind(result.samples, kind))
    assert result.metrics["samples/trained"] == len(result.samples)
    assert result.metrics["erl/num_reflections"] == len(retries)
    assert result.metrics["erl/memory_kept"] == len(memory)
    assert result.metrics["erl/memory_size"] == len(memory)
    assert result.metrics["rollout/first_success_rate"] == pytest.approx(np.mean([s.reward for s in first]))
    assert result.metrics["erl/retry_success_rate"] == pytest.approx(np.mean([s.reward for s in retries]))
    assert result.metrics["erl/success_after_reflection"] == pytest.approx(successes / len(first))


def test_reflection_prompt_shows_memory(action_model):
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=4, threshold=THRESHOLD)
    memory.offer(MemoryItem("Go right before going down.", task_seed=7, retry_reward=1.0, step=0))
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection_max_new_tokens=10, drop_zero_advantage=False)

    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings, step=2)
    reflections = of_kind(result.samples, REFLECTION)

    assert reflections
    for sample in reflections:
        prompt = action_model.tokenizer.decode(sample.prompt_ids)
        assert "Advice that helped on earlier tasks:\n- Go right before going down." in prompt


def test_drop_zero_advantage(action_model):
    torch.manual_seed(0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection_max_new_tokens=10, drop_zero_advantage=True)

    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, ReflectionMemory(), settings)

    assert result.samples
    assert all(sample.advantage != 0.0 for sample in result.samples)
    assert result.metrics["samples/trained"] == len(result.samples)
    assert result.metrics["samples/first_attempt"] >= len(of_kind(result.samples, FIRST_ATTEMPT))


# ---------------------------------------------------------------- GRPO step


@pytest.fixture(scope="module")
def grpo_step(action_model):
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=4, threshold=0.0)
    memory.offer(MemoryItem("kept from an earlier step", task_seed=1, retry_reward=1.0, step=0))
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=False, drop_zero_advantage=False)
    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings)
    pool.close()
    return result, memory


def test_grpo_step_first_attempts_only(grpo_step):
    result, _ = grpo_step

    assert {sample.kind for sample in result.samples} == {FIRST_ATTEMPT}
    assert len(result.samples) == len(TASK_SEEDS) * GROUP
    assert any(sample.reward == 0.0 for sample in result.samples)


def test_grpo_step_leaves_memory(grpo_step):
    _, memory = grpo_step

    assert memory.texts() == ["kept from an earlier step"]


def test_grpo_step_metrics(grpo_step):
    result, _ = grpo_step

    assert result.metrics["erl/num_reflections"] == 0
    assert "erl/retry_success_rate" not in result.metrics
    assert result.metrics["samples/reflection"] == 0
    assert result.metrics["tokens/generated_tokens"] == result.metrics["tokens/first_attempt_tokens"]
    assert all(record["kind"] == FIRST_ATTEMPT for record in result.records)


def test_custom_system_prompt(action_model):
    torch.manual_seed(0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=2, reflection=False, drop_zero_advantage=False)

    result = collect_step(make_engine(action_model), pool, [100], ReflectionMemory(), settings,
                          make_system_prompt=lambda env: "Reach G. Reply `Action: <direction>`.")
    prompt = action_model.tokenizer.decode(result.samples[0].prompt_ids)

    assert prompt.startswith("<|im_start|>system\nReach G. Reply `Action: <direction>`.<|im_end|>")


def test_random_model_trains_nothing(tiny_model_dir):
    """A model that never names a valid action gets reward 0 everywhere, so every advantage is 0."""
    torch.manual_seed(0)
    loaded = load_model(str(tiny_model_dir))
    pool = EnvPool(ACTION_ENV_ID, {"size": 2, "max_steps": 2})
    settings = StepSettings(group_size=2, reflection=True, reflection_max_new_tokens=4, drop_zero_advantage=True)

    result = collect_step(make_engine(loaded, max_new_tokens=4), pool, [100], ReflectionMemory(), settings)

    assert result.samples == []
    assert result.metrics["samples/first_attempt"] == 2
    assert result.metrics["samples/internalized_retry"] == 0
    assert result.metrics["rollout/invalid_action_rate"] == 1.0


def test_batch_scale_uses_batch_std(action_model):
    torch.manual_seed(0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=False, scale_rewards="batch", drop_zero_advantage=False)

    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, ReflectionMemory(), settings)
    rewards = np.array([sample.reward for sample in result.samples])
    group_means = rewards.reshape(len(TASK_SEEDS), GROUP).mean(axis=1).repeat(GROUP)
    expected = (rewards - group_means) / (rewards.std(ddof=1) + 1e-4)
    group_stds = rewards.reshape(len(TASK_SEEDS), GROUP).std(axis=1, ddof=1)

    # The batch's std must differ from some mixed group's std for the check to tell them apart.
    assert any(std > 0 and abs(std - rewards.std(ddof=1)) > 1e-3 for std in group_stds)
    assert [sample.advantage for sample in result.samples] == pytest.approx(expected.tolist())


# ---------------------------------------------------------------- ablations


def ablation_step(action_model, **settings_overrides):
    torch.manual_seed(0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=True, reflection_max_new_tokens=10,
                            drop_zero_advantage=False, **settings_overrides)
    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, ReflectionMemory(capacity=32, threshold=0.0),
                          settings, step=1)
    pool.close()
    return result


def test_attempt_context_retries_without_reflection(action_model):
    result = ablation_step(action_model, retry_context="attempt")
    retries = of_kind(result.samples, RETRY)
    first_user = action_model.tokenizer.decode(retries[0].prompt_ids)

    assert retries
    assert not of_kind(result.samples, REFLECTION)
    assert result.metrics["erl/num_reflections"] == 0
    assert result.metrics["tokens/reflection_tokens"] == 0
    assert ATTEMPT_NOTE_HEADER in first_user
    assert RETRY_NOTE_HEADER not in first_user


def test_untrained_reflections_still_guide_retries(action_model):
    result = ablation_step(action_model, train_reflections=False)
    retries = of_kind(result.samples, RETRY)

    assert not of_kind(result.samples, REFLECTION)
    assert result.metrics["erl/num_reflections"] == len(retries) > 0
    assert RETRY_NOTE_HEADER in action_model.tokenizer.decode(retries[0].prompt_ids)


def test_internalization_off_drops_internalized_retries(action_model):
    with_internalization = ablation_step(action_model)
    without = ablation_step(action_model, internalize=False)

    assert of_kind(with_internalization.samples, INTERNALIZED_RETRY)
    assert not of_kind(without.samples, INTERNALIZED_RETRY)
    assert of_kind(without.samples, RETRY)


def test_task_scope_is_the_default(action_model):
    default = ablation_step(action_model)
    task_scope = ablation_step(action_model, reflection_scope="task")

    assert task_scope.samples == default.samples
    assert len(of_kind(task_scope.samples, REFLECTION)) == len(of_kind(task_scope.samples, RETRY)) > 1


# ---------------------------------------------------------------- memory scope


def test_task_memory_scope_filters_prompts(action_model):
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=4, threshold=THRESHOLD, scope="task")
    memory.offer(MemoryItem("Advice for task 100.", task_seed=100, retry_reward=1.0, step=0))
    memory.offer(MemoryItem("Advice for task 7.", task_seed=7, retry_reward=1.0, step=0))
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection_max_new_tokens=10, drop_zero_advantage=False)

    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings, step=2)
    prompts = [(sample.task_seed, action_model.tokenizer.decode(sample.prompt_ids))
               for sample in of_kind(result.samples, REFLECTION)]

    # Precondition: reflections on task 100 and on another task.
    assert {seed for seed, _ in prompts} >= {100, 101}
    for seed, prompt in prompts:
        assert "Advice for task 7." not in prompt
        assert ("Advice that helped on earlier tasks:\n- Advice for task 100." in prompt) == (seed == 100)
        assert ("Advice that helped on earlier tasks" in prompt) == (seed == 100)


# ---------------------------------------------------------------- rulebook (batch reflection scope)


def attempt(seed: int, reward: float, replies: tuple[str, ...] = ("Action: Right",)) -> Episode:
    return Episode(env=None, seed=seed, messages=[], prompt_ids=[], first_observation=f"map of task {seed}",
                   replies=list(replies), reward=reward, success=reward >= 1.0,
                   feedback="Succeeded." if reward >= 1.0 else "Failed: fell into a hole.")


def rulebook_text_of(result, tokenizer) -> str:
    (rulebook,) = of_kind(result.samples, REFLECTION)
    return tokenizer.decode(rulebook.completion_ids, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def rulebook_step(action_model):
    """One ERL step with one rulebook for the step; the memory keeps every rulebook."""
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=32, threshold=0.0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=True, reflection_max_new_tokens=10,
                            drop_zero_advantage=False, reflection_scope="batch")
    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings, step=1)
    pool.close()
    return result, memory


def test_rulebook_step_writes_one_reflection(rulebook_step, action_model):
    result, _ = rulebook_step
    failed = [sample for sample in of_kind(result.samples, FIRST_ATTEMPT) if sample.reward < 1.0]
    reflections = of_kind(result.samples, REFLECTION)

    assert len(failed) > 1
    assert len(reflections) == 1
    assert result.metrics["erl/num_reflections"] == 1
    assert result.metrics["tokens/reflection_tokens"] == len(reflections[0].completion_ids)
    assert len(of_kind(result.samples, RETRY)) == len(failed)
    assert RULEBOOK_SYSTEM_PROMPT in action_model.tokenizer.decode(reflections[0].prompt_ids)


def test_rulebook_in_every_retry_note(rulebook_step, action_model):
    result, _ = rulebook_step
    tokenizer = action_model.tokenizer
    rulebook = rulebook_text_of(result, tokenizer)
    retries = of_kind(result.samples, RETRY)

    assert rulebook
    for retry in retries:
        prompt = tokenizer.decode(retry.prompt_ids)
        assert format_rulebook_note(rulebook) in prompt
        assert RETRY_NOTE_HEADER not in prompt


def test_rulebook_prompt_caps_attempts(rulebook_step, action_model):
    result, _ = rulebook_step
    failed = [sample for sample in of_kind(result.samples, FIRST_ATTEMPT) if sample.reward < 1.0]
    prompt = action_model.tokenizer.decode(of_kind(result.samples, REFLECTION)[0].prompt_ids)

    assert len(failed) > RULEBOOK_MAX_FAILED
    assert prompt.count("Failed attempt ") == RULEBOOK_MAX_FAILED
    assert prompt.count("Successful attempt, for contrast:") == 1


def test_rulebook_advantage_from_step(rulebook_step):
    result, _ = rulebook_step
    first = of_kind(result.samples, FIRST_ATTEMPT)
    retries = of_kind(result.samples, RETRY)
    (rulebook,) = of_kind(result.samples, REFLECTION)
    task_mean = {seed: np.mean([sample.reward for sample in first if sample.task_seed == seed]) for seed in TASK_SEEDS}
    expected = np.mean([retry.reward - task_mean[retry.task_seed] for retry in retries])

    assert rulebook.reward == pytest.approx(np.mean([retry.reward for retry in retries]))
    assert rulebook.advantage == pytest.approx(expected)
    assert rulebook.advantage != 0.0


def test_rulebook_retries_keep_group_advantages(rulebook_step):
    result, _ = rulebook_step
    retries = of_kind(result.samples, RETRY)

    for seed in {sample.task_seed for sample in retries}:
        group = [sample for sample in retries if sample.task_seed == seed]
        expected = group_advantages([sample.reward for sample in group])
        assert [sample.advantage for sample in group] == pytest.approx(expected)


def test_rulebook_enters_memory_once(rulebook_step, action_model):
    result, memory = rulebook_step
    (rulebook,) = of_kind(result.samples, REFLECTION)

    assert memory.texts() == [rulebook_text_of(result, action_model.tokenizer)]
    assert memory.items[0].retry_reward == pytest.approx(rulebook.reward)
    assert memory.items[0].task_seed == rulebook.task_seed
    assert result.metrics["erl/memory_kept"] == 1


def test_rulebook_below_threshold_not_kept(action_model):
    torch.manual_seed(0)
    memory = ReflectionMemory(capacity=32, threshold=THRESHOLD)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection_max_new_tokens=10, drop_zero_advantage=False,
                            reflection_scope="batch")

    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, memory, settings, step=1)
    (rulebook,) = of_kind(result.samples, REFLECTION)

    # Precondition: some retries failed, so the mean retry reward is below 1.0.
    assert rulebook.reward < THRESHOLD
    assert len(memory) == 0
    assert result.metrics["erl/memory_kept"] == 0


def test_rulebook_records_every_retry(rulebook_step, action_model):
    result, _ = rulebook_step
    records = [record for record in result.records if record["kind"] == REFLECTION]
    retries = of_kind(result.samples, RETRY)
    rulebook = rulebook_text_of(result, action_model.tokenizer)

    assert len(records) == len(retries)
    assert all(record["reflection"] == rulebook for record in records)
    assert [record["retry_reward"] for record in records] == [retry.reward for retry in retries]


def test_untrained_rulebook_still_guides_retries(action_model):
    result = ablation_step(action_model, reflection_scope="batch", train_reflections=False)
    retries = of_kind(result.samples, RETRY)

    assert not of_kind(result.samples, REFLECTION)
    assert result.metrics["erl/num_reflections"] == 1
    assert retries
    assert all(RULEBOOK_NOTE_HEADER in action_model.tokenizer.decode(retry.prompt_ids) for retry in retries)


def test_attempt_context_ignores_rulebook_scope(action_model):
    result = ablation_step(action_model, retry_context="attempt", reflection_scope="batch")
    retries = of_kind(result.samples, RETRY)

    assert retries
    assert result.metrics["erl/num_reflections"] == 0
    assert all(ATTEMPT_NOTE_HEADER in action_model.tokenizer.decode(retry.prompt_ids) for retry in retries)


@pytest.mark.parametrize("first_rewards, retry_rewards, sign", [
    ({1: [1.0, 0.0, 0.0], 2: [0.0, 0.0]}, [0.0, 0.0, 0.0, 0.0], -1),  # retries all fail, a task had a success
    ({1: [0.0, 0.0], 2: [0.0, 0.0]}, [0.0, 0.0, 0.0, 0.0], 0),  # retries all fail, and no first attempt succeeded
    ({1: [1.0, 0.0, 0.0], 2: [0.0, 0.0]}, [1.0, 1.0, 1.0, 1.0], 1),  # retries all succeed
    ({1: [1.0, 1.0, 0.0], 2: [1.0, 0.0]}, [0.0, 1.0], -1),  # one of two retries succeeds, below the tasks' rates
    ({1: [1.0, 0.0, 0.0], 2: [0.0, 0.0]}, [1.0, 0.0, 1.0, 0.0], 1),  # half the retries succeed
])
def test_rulebook_advantage_sign(first_rewards, retry_rewards, sign):
    first_by_task = {seed: [attempt(seed, reward) for reward in rewards] for seed, rewards in first_rewards.items()}
    failed_seeds = [seed for seed, rewards in first_rewards.items() for reward in rewards if reward < 1.0]
    retries = [attempt(seed, reward) for seed, reward in zip(failed_seeds, retry_rewards)]

    advantage = rulebook_advantage(retries, first_by_task)

    assert np.sign(advantage) == sign


def test_rulebook_advantage_value():
    first_by_task = {1: [attempt(1, 1.0), attempt(1, 0.0)], 2: [attempt(2, 0.0), attempt(2, 0.0)]}
    retries = [attempt(1, 1.0), attempt(2, 0.0), attempt(2, 1.0)]

    # Baselines: task 1 averages 0.5, task 2 averages 0.0.
    assert rulebook_advantage(retries, first_by_task) == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_rulebook_attempts_cover_tasks_first():
    first = [attempt(1, 0.0), attempt(1, 0.0), attempt(1, 0.0), attempt(2, 1.0), attempt(2, 0.0),
             attempt(3, 0.0), attempt(3, 1.0)]

    failed, success = select_rulebook_attempts(first, max_failed=4)

    assert [episode.seed for episode in failed] == [1, 2, 3, 1]
    assert all(not episode.success for episode in failed)
    assert success is first[3]


def test_rulebook_attempts_without_success():
    first = [attempt(1, 0.0), attempt(2, 0.0)]

    failed, success = select_rulebook_attempts(first, max_failed=4)

    assert failed == first
    assert success is None


def test_rulebook_success_prefers_shown_task():
    first = [attempt(1, 1.0), attempt(2, 0.0), attempt(2, 1.0)]

    _, success = select_rulebook_attempts(first, max_failed=4)

    assert success is first[2]
