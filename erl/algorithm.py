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
   well with no reflection in context. This is the deployed behaviour. With
   ``internalization="distill"`` the policy without Δ is instead trained toward the
   token distributions of the policy with Δ on the retry's tokens (self-distillation).
6. Memory: Δ is kept when r² >= τ.

With ``reflection_scope="batch"``, steps 3 and 6 change: the policy writes one rulebook per
step, a short list of rules from a capped batch of the step's attempts, and every retry of
the step starts with it. The rulebook is one training sample (see
:func:`rulebook_advantage`), and it is kept when the mean r² of its retries is >= τ.

With ``reflection=False`` only step 1 runs: the GRPO baseline on the same code.

With STATe templates (:mod:`erlgym.erl.prefill`), a controller picks a template for every
turn of first attempts and retries and for every reflection; its prefill starts the
model's text and is masked out of the loss. After the step, each controller learns from
the rewards its choices led to: an episode's reward for an action template, the retry's
reward r² for a reflection template.
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
from erlgym.erl.diversity import mean_group_diversity
from erlgym.erl.memory import MemoryItem, ReflectionMemory
from erlgym.erl.prefill import TemplatePrefill
from erlgym.erl.prompts import (
    build_reflection_messages,
    build_rulebook_messages,
    format_attempt_note,
    format_retry_note,
    format_rulebook_note,
    select_rulebook_attempts,
)
from erlgym.erl.rollout import Episode, RolloutEngine

logger = logging.getLogger(__name__)

FIRST_ATTEMPT = "first_attempt"
REFLECTION = "reflection"
RETRY = "retry"
INTERNALIZED_RETRY = "internalized_retry"
DISTILLED_RETRY = "distilled_retry"
TRAJECTORY_KINDS = (FIRST_ATTEMPT, REFLECTION, RETRY, INTERNALIZED_RETRY, DISTILLED_RETRY)


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
    teacher_prompt_ids: list[int] | None = None
    """For a distilled retry: the prompt with the reflection, under which the policy is the teacher."""


@dataclass
class StepResult:
    """Everything one collection step produced: samples, metrics and texts for the logs."""

    samples: list[TrainingSample]
    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    template_records: list[dict[str, Any]] = field(default_factory=list)
    """One record per trajectory that used templates: the choices, whether they were followed, the outcome."""


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
    internalization: str = "reward"
    """Internalization of successful retries: "reward" (training on their tokens, weighted by r²) or
    "distill" (training toward the reflection-conditioned policy's token distributions)."""
    reflection_scope: str = "task"
    """Reflection granularity: "task" (one reflection per failed attempt, reading that attempt) or "batch"
    (one rulebook per step, reading a capped batch of the step's attempts, that every retry starts with)."""


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


def rulebook_advantage(retries: list[Episode], first_by_task: dict[int, list[Episode]]) -> float:
    """Return the advantage of a rulebook: the mean over its retries of r² minus the mean r¹ of the retry's task.

    The baseline of a retry is the mean first-attempt reward of its task's G attempts: what a
    fresh attempt at that task earns on average without a rulebook. The failed attempt's own
    r¹ (0 when only success is rewarded) would be a baseline biased low, because a fresh sample
    also solves a task at about its group's success rate. With rewards of 1 for success and 0
    otherwise, a rulebook whose retries all fail gets an advantage <= 0 (0 when every first
    attempt at those tasks failed as well), and one whose retries all succeed gets one > 0,
    because every retried task had a failed first attempt. The value is in reward units and
    not divided by a standard deviation, because one rulebook per step has no group to scale by.
    """
    task_means = {seed: float(np.mean([episode.reward for episode in episodes]))
                  for seed, episodes in first_by_task.items()}
    return float(np.mean([retry.reward - task_means[retry.seed] for retry in retries]))


@dataclass
class Reflections:
    """Reflections (or one rulebook) generated from prompts, with the templates that started them."""

    prompt_ids: list[list[int]]
    """Each prompt's ids, followed by its template's prefill ids when templates are used."""
    completion_ids: list[list[int]]
    texts: list[str]
    """The text a retry reads: the template's prefix (without guidance) and the generated text."""
    templates: list[Any] = field(default_factory=list)
    followed: list[dict[str, bool]] = field(default_factory=list)


def generate_reflections(engine: RolloutEngine, prompts: list[list[int]], max_new_tokens: int,
                         templates: TemplatePrefill | None = None) -> Reflections:
    """Generate one reflection per prompt in one batch, each after its template's prefill when ``templates`` is set."""
    chosen = templates.choose(len(prompts), 0) if templates is not None else []
    if templates is not None:
        prompts = [prompt + templates.prefill_ids(template) for prompt, template in zip(prompts, chosen)]
    prefix = engine.build_prefix(prompts) if len(prompts) > 1 else None
    completion_ids = engine.generate(prompts, max_new_tokens, prefix=prefix)
    generated = [engine.tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
    if templates is None:
        return Reflections(prompts, completion_ids, [text.strip() for text in generated])
    texts = [(templates.library.prefix(template) + text).strip() for template, text in zip(chosen, generated)]
    followed = [templates.followed(template, text) for template, text in zip(chosen, generated)]
    return Reflections(prompts, completion_ids, texts, chosen, followed)


def _write_rulebook(engine: RolloutEngine, first: list[Episode], task_prompts: dict[int, str],
                    memory: ReflectionMemory, max_new_tokens: int,
                    templates: TemplatePrefill | None) -> tuple[Reflections, int]:
    """Generate the step's rulebook and return it with its task seed.

    The rulebook is filed under the task seed of the first failed attempt its prompt shows.
    """
    failed, success = select_rulebook_attempts(first)
    shown_seeds = {episode.seed for episode in failed} | ({success.seed} if success is not None else set())
    messages = build_rulebook_messages(task_prompts[failed[0].seed], failed, success, memory.texts(shown_seeds))
    prompt_ids = encode_prompt(engine.tokenizer, messages)
    return generate_reflections(engine, [prompt_ids], max_new_tokens, templates), failed[0].seed


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
    action_templates: TemplatePrefill | None = None,
    reflection_templates: TemplatePrefill | None = None,
) -> StepResult:
    """Run one ERL step (or a GRPO step when ``settings.reflection`` is off) on ``task_seeds``.

    ``action_templates`` prefill every turn of first attempts and retries, and
    ``reflection_templates`` every reflection or rulebook; None uses no templates.
    """
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
    engine.run(first, templates=action_templates)

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
    for name, value in mean_group_diversity(list(by_task.values())).items():
        metrics[f"diversity/{name}"] = value
    records.extend(_episode_record(FIRST_ATTEMPT, episode, step) for episode in first[: min(group, len(first))])

    failed = [episode for episode in first if not episode.success]
    reflections_text: list[str] = []
    retries: list[Episode] = []
    reflection_ids: list[list[int]] = []
    reflections: Reflections | None = None
    if settings.reflection and failed:
        writes_reflections = settings.retry_context == "reflection"
        writes_rulebook = writes_reflections and settings.reflection_scope == "batch"
        if writes_rulebook:
            # 2-3. Feedback and reflection: one rulebook for the step, from a capped batch of attempts.
            reflections, rulebook_seed = _write_rulebook(
                engine, first, task_prompts, memory, settings.reflection_max_new_tokens, reflection_templates)
            rulebook_prompt, rulebook_ids, rulebook_text = (
                reflections.prompt_ids[0], reflections.completion_ids[0], reflections.texts[0])
            reflection_ids = [rulebook_ids]
            reflections_text = [rulebook_text]
            notes = [format_rulebook_note(rulebook_text)] * len(failed)
        elif writes_reflections:
            # 2-3. Feedback and reflection: the policy reads its failed attempt and writes advice.
            reflections = generate_reflections(engine, [
                encode_prompt(engine.tokenizer, build_reflection_messages(
                    task_prompts[episode.seed], episode, memory.texts([episode.seed])))
                for episode in failed
            ], settings.reflection_max_new_tokens, reflection_templates)
            reflection_prompts = reflections.prompt_ids
            reflection_ids = reflections.completion_ids
            reflections_text = reflections.texts
            notes = [format_retry_note(reflection) for reflection in reflections_text]
        else:
            # Ablation: the retry's note repeats the failed attempt and its feedback, with no reflection.
            notes = [format_attempt_note(episode) for episode in failed]

        # 4. Retry on the same task with the note before the first observation.
        retry_envs = pool.take(len(envs) + len(failed))[len(envs):]
        for env, episode, note in zip(retry_envs, failed, notes):
            retries.append(engine.start_episode(env, episode.seed, task_prompts[episode.seed],
                                                env.unwrapped.few_shot_messages(), observation_prefix=note))
        engine.run(retries, templates=action_templates)

        # The reflection each retry started with; none with the "attempt" context.
        retry_reflections = [rulebook_text] * len(failed) if writes_rulebook else reflections_text

        # Advantages of reflections and raw retries: r² normalized over the task's retries.
        retries_by_task: dict[int, list[int]] = defaultdict(list)
        for index, retry in enumerate(retries):
            retries_by_task[retry.seed].append(index)
        retry_advantages = grouped_advantages(
            [[retries[i].reward for i in indices] for indices in retries_by_task.values()], settings.scale_rewards)
        for (seed, indices), advantages in zip(retries_by_task.items(), retry_advantages):
            for i, advantage in zip(indices, advantages):
                if writes_reflections and not writes_rulebook and settings.train_reflections:
                    samples.append(TrainingSample(
                        kind=REFLECTION, task_seed=seed, prompt_ids=reflection_prompts[i],
                        completion_ids=list(reflection_ids[i]), env_mask=[1] * len(reflection_ids[i]),
                        reward=retries[i].reward, advantage=advantage,
                    ))
                retry_sample = _episode_sample(RETRY, retries[i])
                retry_sample.advantage = advantage
                samples.append(retry_sample)
        mean_retry_reward = float(np.mean([retry.reward for retry in retries]))
        if writes_rulebook and settings.train_reflections:
            samples.append(TrainingSample(
                kind=REFLECTION, task_seed=rulebook_seed, prompt_ids=rulebook_prompt,
                completion_ids=list(rulebook_ids), env_mask=[1] * len(rulebook_ids),
                reward=mean_retry_reward, advantage=rulebook_advantage(retries, by_task),
            ))

        # 5. Internalization: the retry's ids under the first attempt's prompt, without Δ.
        for retry, episode in zip(retries, failed):
            if retry.reward <= 0 or not settings.internalize:
                continue
            if settings.internalization == "distill":
                sample = _episode_sample(DISTILLED_RETRY, retry, prompt_ids=episode.prompt_ids)
                sample.teacher_prompt_ids = list(retry.prompt_ids)
            else:
                sample = _episode_sample(INTERNALIZED_RETRY, retry, prompt_ids=episode.prompt_ids)
                sample.advantage = retry.reward
            samples.append(sample)

        # 6. Memory keeps reflections whose retry reward reached τ, and a rulebook whose mean retry reward did.
        kept = 0
        if writes_rulebook:
            kept += memory.offer(MemoryItem(rulebook_text, rulebook_seed, mean_retry_reward, step))
        else:
            for retry, reflection in zip(retries, reflections_text):
                kept += memory.offer(MemoryItem(reflection, retry.seed, retry.reward, step))
        for episode, reflection, retry in zip(failed, retry_reflections, retries):
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
    template_records = _learn_from_templates(first, retries, reflections, action_templates,
                                             reflection_templates, step, metrics)
    if settings.drop_zero_advantage:
        # A distilled retry carries no advantage: its loss is a divergence, not a policy gradient.
        samples = [sample for sample in samples if sample.advantage != 0.0 or sample.kind == DISTILLED_RETRY]
    metrics["samples/trained"] = float(len(samples))
    metrics["time/rollout_s"] = time.perf_counter() - started
    return StepResult(samples=samples, metrics=metrics, records=records, template_records=template_records)


def _learn_from_templates(first: list[Episode], retries: list[Episode], reflections: Reflections | None,
                          action_templates: TemplatePrefill | None, reflection_templates: TemplatePrefill | None,
                          step: int, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Update the controllers with the rewards their templates led to, add template metrics, and return records.

    An episode's templates are credited with the episode's reward, and a reflection (or
    rulebook) template with the mean reward of the retries that started with it.
    """
    records: list[dict[str, Any]] = []
    if action_templates is not None:
        episodes = [(FIRST_ATTEMPT, episode) for episode in first] + [(RETRY, retry) for retry in retries]
        action_templates.controller.update([episode.turn_templates for _, episode in episodes],
                                           [episode.reward for _, episode in episodes])
        for kind, episode in episodes:
            records.append({
                "step": step, "kind": kind, "task_seed": episode.seed, "group": f"{step}:{episode.seed}:{kind}",
                "library": action_templates.library.name,
                "templates": [template.key for template in episode.turn_templates],
                "followed": episode.followed, "actions": episode.actions,
                "final_state": episode.final_observation, "reward": episode.reward, "success": episode.success,
            })
        checks = [verdict for episode in first for turn in episode.followed for verdict in turn.values()]
        if checks:
            metrics["templates/followed_rate"] = float(np.mean(checks))

    if reflection_templates is not None and reflections is not None and reflections.templates:
        if len(reflections.templates) == len(retries):
            rewards = [retry.reward for retry in retries]
            successes = [retry.success for retry in retries]
            seeds = [retry.seed for retry in retries]
        else:  # one rulebook served every retry of the step; it counts as a success when most retries succeeded
            rewards = [float(np.mean([retry.reward for retry in retries]))]
            successes = [float(np.mean([retry.success for retry in retries])) > 0.5]
            seeds = [retries[0].seed]
        reflection_templates.controller.update([[template] for template in reflections.templates], rewards)
        for template, verdicts, reward, success, seed in zip(reflections.templates, reflections.followed, rewards,
                                                             successes, seeds):
            records.append({
                "step": step, "kind": REFLECTION, "task_seed": seed, "group": f"{step}:{seed}:{REFLECTION}",
                "library": reflection_templates.library.name, "templates": [template.key],
                "followed": [verdicts], "actions": [None], "final_state": "", "reward": reward,
                "success": bool(success),
            })
    return records


def _episode_record(kind: str, episode: Episode, step: int) -> dict[str, Any]:
    return {"kind": kind, "step": step, "task_seed": episode.seed, "reward": episode.reward,
            "success": episode.success, "feedback": episode.feedback,
            "messages": episode.messages[:1] + episode.messages[-2 * episode.turns:] if episode.turns else episode.messages}
