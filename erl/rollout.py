"""Batched multi-turn rollouts over many environment copies, token-in/token-out.

Each :class:`Episode` keeps two id lists: ``prompt_ids`` (the first prompt, rendered
once by the chat template) and ``completion_ids`` (everything after it). The model's
sampled ids are appended to ``completion_ids`` unchanged with ``env_mask`` 1; the
observation that follows, wrapped in the chat template's turn markers, is appended as
ids with ``env_mask`` 0 so the trainer leaves it out of the loss.

All active episodes generate together in one left-padded batch per turn.

With a :class:`~erlgym.erl.prefill.TemplatePrefill`, each turn starts with the ids of a
template the controller chose (``env_mask`` 0), and the model continues from them.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from erlgym.erl.chat import TurnTemplate, encode_prompt
from erlgym.erl.prefill import TemplatePrefill
from erlgym.templates import Template

logger = logging.getLogger(__name__)


@dataclass
class Episode:
    """One environment episode as the model saw and produced it."""

    env: gym.Env | None
    seed: int
    messages: list[dict[str, str]]
    prompt_ids: list[int]
    first_observation: str = ""
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    action_valid: list[bool] = field(default_factory=list)
    reward: float = 0.0
    success: bool = False
    done: bool = False
    turns: int = 0
    generated_tokens: int = 0
    feedback: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    actions: list[str | None] = field(default_factory=list)
    """The action the environment parsed from each reply (None for an invalid one)."""
    final_observation: str = ""
    turn_templates: list[Template] = field(default_factory=list)
    """The template prefilled at each turn; empty when the rollout used no templates."""
    followed: list[dict[str, bool]] = field(default_factory=list)
    """Per turn, whether the generated text matched each chosen choice's check."""
    generated_replies: list[str] = field(default_factory=list)
    """The model's own text of each turn; ``replies`` also contain the template prefill."""


@dataclass
class GenerationConfig:
    """Sampling settings shared by every generation call of a rollout."""

    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 1.0
    max_context_tokens: int = 2048
    share_prefix: bool = True
    reuse_cache: bool = True


@dataclass
class PrefixCache:
    """Keys and values of a token prefix shared by a batch, computed once with batch size 1."""

    ids: list[int]
    cache: Any

    def expand(self, batch_size: int) -> Any:
        """Return a copy of the cache repeated to ``batch_size`` rows; the original stays unchanged."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(batch_size)
        return cache


@dataclass
class TurnState:
    """The padded batch and key/value cache that a multi-turn batch carries from one turn to the next.

    After a call to :meth:`RolloutEngine.generate`, ``input_ids`` contains every token of
    every row so far in the padded layout the model saw, and ``attention_mask`` marks
    the real ones (the sampled ids after a row's stop id are masked). The next call
    appends only each row's new tokens, so earlier turns are never encoded again.
    """

    input_ids: torch.Tensor | None = None  # (B, T)
    attention_mask: torch.Tensor | None = None  # (B, T)
    cache: Any = None

    def select(self, rows: list[int]) -> None:
        """Keep only ``rows``, in that order (the episodes that go on to another turn)."""
        if self.input_ids is None or not rows or rows == list(range(self.input_ids.size(0))):
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.input_ids = self.input_ids[index]
        self.attention_mask = self.attention_mask[index]
        self.cache.batch_select_indices(index)


class RolloutEngine:
    """Generate with a causal LM for many episodes at once."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GenerationConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.turn_template = TurnTemplate.from_tokenizer(tokenizer)
        eos_ids = model.generation_config.eos_token_id
        eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(tokenizer.eos_token_id)
        self.stop_ids = set(eos_ids)
        self.generation_seconds = 0.0

    @torch.inference_mode()
    def generate(self, contexts: list[list[int]], max_new_tokens: int | None = None,
                 prefix: "PrefixCache | None" = None, state: TurnState | None = None) -> list[list[int]]:
        """Sample one continuation per context; each ends at its first stop id (kept) or at the limit.

        With ``prefix``, every context must start with ``prefix.ids``; its keys and values
        are reused instead of being recomputed for every row.

        With ``state``, a call continues the batch of the previous call made with the same
        state: row i of ``contexts`` must extend row i of that call's contexts plus its
        reply (use :meth:`TurnState.select` to drop rows in between). Only the new tokens
        are encoded; the previous keys and values come from the state's cache.
        """
        if not contexts:
            return []
        max_new_tokens = max_new_tokens or self.config.max_new_tokens
        cache = None
        if state is not None and state.input_ids is not None:
            input_ids, attention_mask = self._extend_layout(state, contexts)
            cache = state.cache
        else:
            input_ids, attention_mask = self._first_layout(contexts, prefix)
            if prefix is not None:
                cache = prefix.expand(len(contexts))

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        started = time.perf_counter()
        try:
            sampling = self.config.temperature > 0
            extra = {"cache": cache} if cache is not None else {}
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=self.config.temperature if sampling else None,
                top_p=self.config.top_p if sampling else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.stop_ids),
                return_dict_in_generate=True,
                **extra,
            )
        finally:
            self.generation_seconds += time.perf_counter() - started
            if was_training:
                self.model.train()

        sequences = output.sequences.cpu()  # (B, T + new)
        replies = [self._cut_at_stop(ids) for ids in sequences[:, input_ids.size(1):].tolist()]
        if state is not None:
            reply_mask = torch.zeros((len(contexts), sequences.size(1) - input_ids.size(1)), dtype=torch.long)
            for row, reply in enumerate(replies):
                reply_mask[row, : len(reply)] = 1
            state.input_ids = sequences
            state.attention_mask = torch.cat([attention_mask, reply_mask], dim=1)
            state.cache = output.cache
        return replies

    def _first_layout(self, contexts: list[list[int]], prefix: "PrefixCache | None") -> tuple[torch.Tensor, torch.Tensor]:
        """Lay out ``contexts`` as (B, shared + width) ids and attention mask.

        The shared prefix comes first, then each row's remainder left-padded, so that every
        row's next token is at the same position and padding sits between the prefix and
        the remainder. Position ids follow the attention mask, so padding does not shift them.
        """
        pad_id = self.tokenizer.pad_token_id
        shared = len(prefix.ids) if prefix is not None else 0
        width = max(len(ids) for ids in contexts) - shared
        input_ids = torch.full((len(contexts), shared + width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(contexts), shared + width), dtype=torch.long)
        for row, ids in enumerate(contexts):
            rest = ids[shared:]
            input_ids[row, :shared] = torch.tensor(ids[:shared], dtype=torch.long)
            attention_mask[row, :shared] = 1
            input_ids[row, shared + width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            attention_mask[row, shared + width - len(rest):] = 1
        return input_ids, attention_mask

    def _extend_layout(self, state: TurnState, contexts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Append each context's tokens beyond the state's real tokens, left-padded to a common width."""
        if len(contexts) != state.input_ids.size(0):
            raise ValueError(f"got {len(contexts)} contexts for a turn state of {state.input_ids.size(0)} rows; "
                             "call TurnState.select with the rows that continue first")
        new_parts = []
        for row, ids in enumerate(contexts):
            seen = state.input_ids[row][state.attention_mask[row].bool()].tolist()
            if ids[: len(seen)] != seen:
                raise ValueError(f"context {row} does not extend the tokens of the previous turn; "
                                 "a turn state only supports appending")
            new_parts.append(ids[len(seen):])
        width = max(len(part) for part in new_parts)
        chunk = torch.full((len(contexts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        chunk_mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, part in enumerate(new_parts):
            if part:
                chunk[row, width - len(part):] = torch.tensor(part, dtype=torch.long)
                chunk_mask[row, width - len(part):] = 1
        return torch.cat([state.input_ids, chunk], dim=1), torch.cat([state.attention_mask, chunk_mask], dim=1)

    @torch.inference_mode()
    def build_prefix(self, contexts: list[list[int]], min_length: int = 32) -> "PrefixCache | None":
        """Encode the longest prefix all contexts share, or return None when it is shorter than ``min_length``.

        The last token of the shortest context is left out of the prefix so that every
        row still has at least one token to feed to ``generate``.
        """
        if len(contexts) < 2:
            return None
        length = min(len(ids) for ids in contexts) - 1
        first = contexts[0]
        for ids in contexts[1:]:
            position = 0
            while position < length and ids[position] == first[position]:
                position += 1
            length = position
        if length < min_length:
            return None
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model(input_ids=torch.tensor([first[:length]], device=device), use_cache=True)
        finally:
            if was_training:
                self.model.train()
        return PrefixCache(ids=first[:length], cache=output.cache)

    def _cut_at_stop(self, ids: list[int]) -> list[int]:
        for position, token in enumerate(ids):
            if token in self.stop_ids:
                return ids[: position + 1]
        return ids

    def start_episode(self, env: gym.Env, seed: int, system_prompt: str,
                      few_shot: list[dict[str, str]] | None = None,
                      options: dict[str, Any] | None = None, observation_prefix: str = "") -> Episode:
        """Reset ``env`` with ``seed`` and render the first prompt.

        ``observation_prefix`` is placed before the first observation in the same user
        message (the ERL retry puts its reflection there).
        """
        observation, info = env.reset(seed=seed, options=options)
        messages = [{"role": "system", "content": system_prompt}, *(few_shot or []),
                    {"role": "user", "content": observation_prefix + observation}]
        return Episode(env=env, seed=seed, messages=messages,
                       prompt_ids=encode_prompt(self.tokenizer, messages),
                       first_observation=observation, info=info)

    def run(self, episodes: list[Episode], templates: TemplatePrefill | None = None) -> list[Episode]:
        """Play every episode to its end: generate a reply, step its env, append the observation.

        With ``templates``, every turn first appends the ids of a chosen template's prefill.
        """
        active = [episode for episode in episodes if not episode.done]
        # The system prompt and few-shot examples are usually the same for every episode:
        # their keys and values are computed once per rollout instead of once per row and turn.
        prefix = self.build_prefix([episode.prompt_ids for episode in active]) if self.config.share_prefix else None
        # Each turn encodes only the tokens added since the last one (the observation);
        # the keys and values of earlier turns stay in the state's cache.
        state = TurnState() if self.config.reuse_cache else None
        while active:
            prefilled = self._prefill_turn(active, templates) if templates is not None else [[] for _ in active]
            contexts = [episode.prompt_ids + episode.completion_ids for episode in active]
            replies = self.generate(contexts, prefix=prefix, state=state)
            for episode, prefill_ids, reply_ids in zip(active, prefilled, replies):
                self._advance(episode, reply_ids, prefill_ids, templates)
            if state is not None:
                state.select([row for row, episode in enumerate(active) if not episode.done])
            active = [episode for episode in active if not episode.done]
        return episodes

    def _prefill_turn(self, active: list[Episode], templates: TemplatePrefill) -> list[list[int]]:
        """Choose a template for each active episode's next turn and append its prefill ids (``env_mask`` 0)."""
        by_position: dict[int, list[int]] = {}
        for row, episode in enumerate(active):
            by_position.setdefault(episode.turns, []).append(row)
        prefilled: list[list[int]] = [[] for _ in active]
        for position, rows in by_position.items():
            for row, template in zip(rows, templates.choose(len(rows), position)):
                ids = templates.prefill_ids(template)
                episode = active[row]
                episode.turn_templates.append(template)
                episode.completion_ids.extend(ids)
                episode.env_mask.extend([0] * len(ids))
                prefilled[row] = ids
        return prefilled

    def _advance(self, episode: Episode, reply_ids: list[int], prefill_ids: list[int] | None = None,
                 templates: TemplatePrefill | None = None) -> None:
        """Record a reply (after its prefill, which is already in ``completion_ids``) and step the episode's env.

        The environment reads the whole turn, prefill and reply, because the prefix may start
        the sentence that names the action.
        """
        generated = self.tokenizer.decode(reply_ids, skip_special_tokens=True)
        reply = self.tokenizer.decode(list(prefill_ids) + reply_ids, skip_special_tokens=True) if prefill_ids else generated
        if templates is not None and episode.turn_templates:
            episode.followed.append(templates.followed(episode.turn_templates[-1], generated))
        episode.completion_ids.extend(reply_ids)
        episode.env_mask.extend([1] * len(reply_ids))
        episode.generated_tokens += len(reply_ids)
        episode.replies.append(reply)
        episode.generated_replies.append(generated)
        episode.messages.append({"role": "assistant", "content": reply})
        episode.turns += 1

        observation, reward, terminated, truncated, info = episode.env.step(reply)
        episode.reward += float(reward)
        episode.info = info
        episode.action_valid.append(bool(info.get("action_valid", True)))
        episode.actions.append(info.get("action"))
        episode.final_observation = observation
        episode.success = bool(info.get("success", False))
        if terminated or truncated:
            episode.done = True
            episode.feedback = info.get("episode_feedback") or info.get("feedback", "")
            return

        # Only the template's own end-of-turn token closes the turn; another stop id (such as
        # <|endoftext|> in some generation configs) leaves the closing text to be appended.
        ended_with_turn_end = bool(reply_ids) and reply_ids[-1] == self.tokenizer.eos_token_id
        turn_text = self.turn_template.user_turn_text(observation, ended_with_turn_end)
        turn_ids = self.tokenizer(turn_text, add_special_tokens=False)["input_ids"]
        context_length = len(episode.prompt_ids) + len(episode.completion_ids) + len(turn_ids)
        next_prefill = templates.max_prefill_tokens if templates is not None else 0
        if context_length + next_prefill + self.config.max_new_tokens > self.config.max_context_tokens:
            episode.done = True
            episode.feedback = (
                f"Failed: the conversation reached the context limit of {self.config.max_context_tokens} "
                f"tokens after {episode.turns} turns. {info.get('feedback', '')}"
            ).strip()
            return
        episode.completion_ids.extend(turn_ids)
        episode.env_mask.extend([0] * len(turn_ids))
        episode.messages.append({"role": "user", "content": observation})
