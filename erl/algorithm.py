"""One ERL (or GRPO) data-collection step: rollouts, reflections, retries and advantages.

Experiential Reinforcement Learning (ERL) extends GRPO with an experience-reflection-consolidation
loop. For a task x and G first attempts y¹ with rewards r¹:

1. First attempts: G episodes per task; advantages are GRPO group-normalized r¹.
2. Feedback: each failed attempt ends with the environment's episode feedback f.
3. Reflection: the policy writes Δ ~ π(· | x, y¹, f, r¹, m), where m contains earlier
   reflections from the memory. Δ is rewarded with the retry's reward r².
4. Retry: y² ~ π(· | x, Δ), a second episode on the same task with Δ placed before
   its first observation; advantages are r² group-normalized over the task's retries.
5. Internalization: the retry's ids are trained again under the prompt without Δ,
   weighted by r² (retries with r² <= 0 are dropped), so the policy learns to act
   well with no reflection in context. This is the deployed behaviour.
6. Memory: Δ is kept when r² >= τ.

With ``reflection=False`` only step 1 runs: the GRPO baseline on the same code.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from erlgym.erl.chat import encode_prompt
from erlgym.erl.memory import MemoryItem, ReflectionMemory
from erlgym.erl.prompts import build_reflection_messages, format_attempt_note, format_retry_note
from erlgym.erl.rollout import Episode, RolloutEngine

logger = logging.getLogger(__name__)

FIRST_ATTEMPT = "first_attempt"
REFLECTION = "reflection"
RETRY = "retry"
INTERNALIZED_RETRY = "internalized_retry"
TRAJECTORY_KINDS = (FIRST_ATTEMPT, REFLECTION, RETRY, INTERNALIZED_RETRY)


@dataclass
class TrainingSample:
    """A sequence the policy is trained on, with its per-sample advantage."""

    kind: str
    task_seed: int
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    reward: float
    advantage: float = 0.0


@dataclass
class StepResult:
    """Everything one collection step produced: samples, metrics and texts for the logs."""

    samples: list[TrainingSample]
    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepSettings:
    """The parts of the training configuration one collection step reads."""

    group_size: int = 4
    reflection: bool = True
    reflection_max_new_tokens: int = 64
    scale_rewards: str = "group"
    drop_zero_advantage: bool = True
    retry_context: str = "reflection"
    """The note a retry starts with: "reflection" (advice the policy wrote) or "attempt" (the failed
    attempt's replies and feedback, with no reflection written or trained)."""
    train_reflections: bool = True
    internalize: bool = True


def group_advantages(rewards: list[float], scale: str = "group") -> list[float]:
    """GRPO advantages for one group: (r - mean) / (std + 1e-4), or r - mean when ``scale`` is "none"."""
    values = np.asarray(rewards, dtype=np.float64)
    centered = values - values.mean()
    if scale == "none" or len(values) < 2:
        return centered.tolist()
    return (centered / (values.std(ddof=1) + 1e-4)).tolist()


def grouped_advantages(groups: list[list[float]], scale: str = "group") -> list[list[float]]:
    """Advantages for several groups: centered per group, scaled by the group's std ("group"),
    the std of all rewards in ``groups`` ("batch"), or not at all ("none")."""
    if scale != "batch":
        return [group_advantages(rewards, scale) for rewards in groups]
    every_reward = np.asarray([reward for rewards in groups for reward in rewards], dtype=np.float64)
    batch_std = every_reward.std(ddof=1) if len(every_reward) > 1 else 0.0
    return [[value / (batch_std + 1e-4) for value in group_advantages(rewards, "none")] for rewards in groups]


class EnvPool:
    """Reusable environment copies, created on demand with one id and keyword set."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.envs: list[gym.Env] = []

    def take(self, count: int) -> list[gym.Env]:
        while len(self.envs) < count:
            self.envs.append(gym.make(self.env_id, **self.env_kwargs))
        return self.envs[:count]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()


def _episode_sample(kind: str, episode: Episode, prompt_ids: list[int] | None = None) -> TrainingSample:
    return TrainingSample(
        kind=kind, task_seed=episode.seed,
        prompt_ids=list(prompt_ids if prompt_ids is not None else episode.prompt_ids),
        completion_ids=list(episode.completion_ids), env_mask=list(episode.env_mask),
        reward=episode.reward,
    )


def invalid_action_rate(episodes: list[Episode]) -> float:
    """Fraction of all turns whose reply named no valid action."""
    flags = [valid for episode in episodes for valid in episode.action_valid]
    return flags.count(False) / len(flags) if flags else 0.0


def collect_step(
    engine: RolloutEngine,
    pool: EnvPool,
    task_seeds: list[int],
    memory: ReflectionMemory,
    settings: StepSettings,
    step: int = 0,
    make_system_prompt: Callable[[gym.Env], str] | None = None,
) -> StepResult:
    """Run one ERL step (or a GRPO step when ``settings.reflection`` is off) on ``task_seeds``."""
    group = settings.group_size
    envs = pool.take(len(task_seeds) * group)
    system_prompt_of = make_system_prompt or (lambda env: env.unwrapped.system_prompt)
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    started = time.perf_counter()

    # 1. First attempts: G episodes per task, all tasks in one batch.
    first: list[Episode] = []
    task_prompts: dict[int, str] = {}
    for index, env in enumerate(envs):
        seed = task_seeds[index // group]
        episode = engine.start_episode(env, seed, system_prompt_of(env), env.unwrapped.few_shot_messages())
        task_prompts[seed] = episode.messages[0]["content"]
        first.append(episode)
    engine.run(first)

    samples: list[TrainingSample] = []
    by_task: dict[int, list[Episode]] = defaultdict(list)
    for episode in first:
        by_task[episode.seed].append(episode)
    first_advantages = grouped_advantages(
        [[episode.reward for episode in episodes] for episodes in by_task.values()], settings.scale_rewards)
    for episodes, advantages in zip(by_task.values(), first_advantages):
        for episode, advantage in zip(episodes, advantages):
            sample = _episode_sample(FIRST_ATTEMPT, episode)
            sample.advantage = advantage
            samples.append(sample)

    metrics["rollout/first_success_rate"] = float(np.mean([episode.success for episode in first]))
    metrics["rollout/first_reward_mean"] = float(np.mean([episode.reward for episode in first]))
    metrics["rollout/first_turns_mean"] = float(np.mean([episode.turns for episode in first]))
    metrics["rollout/invalid_action_rate"] = invalid_action_rate(first)
    metrics["tokens/first_attempt_tokens"] = float(sum(episode.generated_tokens for episode in first))
    records.extend(_episode_record(FIRST_ATTEMPT, episode, step) for episode in first[: min(group, len(first))])

    failed = [episode for episode in first if not episode.success]
    reflections_text: list[str] = []
    retries: list[Episode] = []
    reflection_ids: list[list[int]] = []
    if settings.reflection and failed:
        writes_reflections = settings.retry_context == "reflection"
        if writes_reflections:
            # 2-3. Feedback and reflection: the policy reads its failed attempt and writes advice.
            reflection_prompts = [
                encode_prompt(engine.tokenizer,
                              build_reflection_messages(task_prompts[episode.seed], episode, memory.texts()))
                for episode in failed
            ]
            reflection_ids = engine.generate(reflection_prompts, settings.reflection_max_new_tokens,
                                             prefix=engine.build_prefix(reflection_prompts))
            reflections_text = [engine.tokenizer.decode(ids, skip_special_tokens=True).strip()
                                for ids in reflection_ids]
            notes = [format_retry_note(reflection) for reflection in reflections_text]
        else:
            # Ablation: the retry's note repeats the failed attempt and its feedback, with no reflection.
            notes = [format_attempt_note(episode) for episode in failed]

        # 4. Retry on the same task with the note before the first observation.
        retry_envs = pool.take(len(envs) + len(failed))[len(envs):]
        for env, episode, note in zip(retry_envs, failed, notes):
            retries.append(engine.start_episode(env, episode.seed, task_prompts[episode.seed],
                                                env.unwrapped.few_shot_messages(), observation_prefix=note))
        engine.run(retries)

        # Advantages of reflections and raw retries: r² normalized over the task's retries.
        retries_by_task: dict[int, list[int]] = defaultdict(list)
        for index, retry in enumerate(retries):
            retries_by_task[retry.seed].append(index)
        retry_advantages = grouped_advantages(
            [[retries[i].reward for i in indices] for indices in retries_by_task.values()], settings.scale_rewards)
        for (seed, indices), advantages in zip(retries_by_task.items(), retry_advantages):
            for i, advantage in zip(indices, advantages):
                if writes_reflections and settings.train_reflections:
                    samples.append(TrainingSample(
                        kind=REFLECTION, task_seed=seed, prompt_ids=reflection_prompts[i],
                        completion_ids=list(reflection_ids[i]), env_mask=[1] * len(reflection_ids[i]),
                        reward=retries[i].reward, advantage=advantage,
                    ))
                retry_sample = _episode_sample(RETRY, retries[i])
                retry_sample.advantage = advantage
                samples.append(retry_sample)

        # 5. Internalization: the retry's ids under the first attempt's prompt, without Δ.
        for retry, episode in zip(retries, failed):
            if retry.reward <= 0 or not settings.internalize:
                continue
            sample = _episode_sample(INTERNALIZED_RETRY, retry, prompt_ids=episode.prompt_ids)
            sample.advantage = retry.reward
            samples.append(sample)

        # 6. Memory keeps reflections whose retry reward reached τ.
        kept = 0
        for retry, reflection in zip(retries, reflections_text):
            kept += memory.offer(MemoryItem(reflection, retry.seed, retry.reward, step))
        for episode, reflection, retry in zip(failed, reflections_text, retries):
            records.append({"kind": REFLECTION, "step": step, "task_seed": episode.seed,
                            "first_feedback": episode.feedback, "reflection": reflection,
                            "retry_reward": retry.reward, "retry_success": retry.success,
                            "retry_feedback": retry.feedback})
        records.extend(_episode_record(RETRY, retry, step) for retry in retries[:group])

        metrics["erl/retry_success_rate"] = float(np.mean([retry.success for retry in retries]))
        metrics["erl/memory_kept"] = float(kept)
        metrics["tokens/reflection_tokens"] = float(sum(len(ids) for ids in reflection_ids))
        metrics["tokens/retry_tokens"] = float(sum(retry.generated_tokens for retry in retries))

    retried_success = sum(retry.success for retry in retries)
    metrics["erl/success_after_reflection"] = (
        sum(episode.success for episode in first) + retried_success) / len(first)
    metrics["erl/num_reflections"] = float(len(reflections_text))
    metrics["erl/memory_size"] = float(len(memory))
    metrics["tokens/generated_tokens"] = float(
        metrics["tokens/first_attempt_tokens"] + metrics.get("tokens/reflection_tokens", 0.0)
        + metrics.get("tokens/retry_tokens", 0.0))
    for kind in TRAJECTORY_KINDS:
        metrics[f"samples/{kind}"] = float(sum(sample.kind == kind for sample in samples))
    if settings.drop_zero_advantage:
        samples = [sample for sample in samples if sample.advantage != 0.0]
    metrics["samples/trained"] = float(len(samples))
    metrics["time/rollout_s"] = time.perf_counter() - started
    return StepResult(samples=samples, metrics=metrics, records=records)


def _episode_record(kind: str, episode: Episode, step: int) -> dict[str, Any]:
    return {"kind": kind, "step": step, "task_seed": episode.seed, "reward": episode.reward,
            "success": episode.success, "feedback": episode.feedback,
            "messages": episode.messages[:1] + episode.messages[-2 * episode.turns:] if episode.turns else episode.messages}
