"""Base class shared by the erlgym text environments.

:class:`TextEnv` owns what every grid puzzle shares. That is the text spaces, argument
checks, action parsing, step counting, rewards and the ``info`` fields. It also builds
the per-step and end-of-episode feedback, remaps symbols in hidden mode, and builds the
chat messages (system prompt, few-shot examples). A subclass supplies the puzzle: how
an episode starts, what a valid action does, and how the state is drawn.

Subclass contract
-----------------
Class attributes:

* ``actions``: canonical action name to its aliases, in display order (see
  :mod:`erlgym.envs.parser`).
* ``symbol_roles``: role name to its plain symbol, one character each, for example
  ``{"player": "P", "hole": "O"}``. Hidden mode replaces each with a letter.

Methods:

* ``_start_episode(task)``: build the episode state, from ``task`` when it is not
  None, else by drawing from ``self.np_random``. ``self.symbol_map`` is already set
  for the episode, so the method may draw static parts of the state once.
* ``_apply_action(action) -> Transition``: apply a valid canonical action.
* ``_render_state() -> str``: the state as text, drawn with ``self.symbol_map``, with
  a legend when ``self.symbols == "plain"``.
* ``_describe_rules() -> str`` and ``_describe_goal() -> str``: the system prompt's
  task paragraph in plain and hidden mode.
* ``_build_few_shot_examples() -> list[tuple[str, str]]``: (observation, reply) pairs
  from fixed example tasks, drawn in the current symbol mode.
* ``_default_step_limit() -> int``: the step limit of the current episode when the
  constructor's ``max_steps`` is None. Called after ``_start_episode``.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces

from erlgym.envs.parser import MAX_REPLY_CHARS, ActionParser

logger = logging.getLogger(__name__)

PRINTABLE = string.printable
"""Charset of both text spaces: ASCII letters, digits, punctuation and whitespace."""

SYMBOL_MODES = ("plain", "hidden")
RENDER_MODES = ("ansi",)
HIDDEN_SYMBOL_LETTERS = string.ascii_uppercase
"""Letters that hidden mode draws symbols from, minus the plain symbols themselves."""

MAX_OBSERVATION_CHARS = 8192
DEFAULT_FEW_SHOT_EXAMPLES = 3


EPISODE_OVER_FEEDBACK = "The episode has ended. Call reset() to start a new one."
"""Feedback of a ``step`` call made after the episode ended."""


def check_step_action(action: Any, reset_done: bool) -> None:
    """Raise ``TypeError`` unless ``action`` is a ``str``, and ``ResetNeeded`` before the first ``reset``."""
    if not isinstance(action, str):
        raise TypeError(f"action must be a str (the agent's reply), got {type(action).__name__}")
    if not reset_done:
        raise gymnasium.error.ResetNeeded("call reset() before step()")


@dataclass(frozen=True)
class Transition:
    """Result of applying one valid action, returned by ``_apply_action``.

    Attributes:
        effective: Whether the state changed.
        feedback: One sentence for the agent, for example ``"You moved right."`` or
            ``"Moving left had no effect: a wall is there."``.
        terminated: Whether the episode ended in a terminal state.
        success: Whether that terminal state solves the task.
        outcome: For a failed terminal state, a clause for the episode summary, for
            example ``"you fell into a hole at row 2, column 3"``.
    """

    effective: bool
    feedback: str
    terminated: bool = False
    success: bool = False
    outcome: str | None = None


class TextEnv(gymnasium.Env[str, str]):
    """Base class of the text environments: observations and actions are strings.

    Args:
        symbols: ``"plain"`` draws the standard symbols and states the rules in the
            system prompt. ``"hidden"`` replaces each symbol with an upper-case letter
            drawn from the episode's seed and states only the goal and the reply
            format, so the agent must infer the rules from feedback.
        max_steps: Steps per episode before truncation, at least 1. Invalid replies
            count as steps. None uses the subclass's default for each episode.
        format_penalty: Non-negative amount subtracted from the reward of a step
            whose reply names no valid action.
        render_mode: None or ``"ansi"``.

    Raises:
        ValueError: If an argument is outside the range given above.

    Reward is 1.0 on the step that solves the task, else 0.0, minus
    ``format_penalty`` on an invalid step. An invalid step leaves the state unchanged.
    ``truncated`` is True only when the step limit is reached without a terminal
    state, so ``terminated`` and ``truncated`` are never both True.

    ``info`` after ``step`` contains ``action`` (canonical name or None),
    ``action_valid``, ``action_effective``, ``success``, ``feedback``, ``steps``,
    ``num_invalid_actions`` and ``num_ineffective_actions``. When the episode ends it
    also contains ``episode_feedback``, a summary such as ``"Failed: you fell into a
    hole at row 2, column 3 after 4 moves. 1 invalid action."``. A move is a valid
    action, effective or not. ``info`` after ``reset`` contains ``success``,
    ``feedback`` (empty), ``steps`` and the two counters.

    Calling ``step`` after the episode ended returns the final observation again with
    reward 0.0 and changes nothing until ``reset``.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    actions: Mapping[str, tuple[str, ...]] = {}
    symbol_roles: Mapping[str, str] = {}

    def __init__(
        self,
        *,
        symbols: str = "plain",
        max_steps: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.symbols = validate_symbols(symbols)
        self.max_steps = validate_max_steps(max_steps)
        self.format_penalty = validate_format_penalty(format_penalty)
        self.render_mode = validate_render_mode(render_mode)

        self._parser = ActionParser(self.actions)
        self.action_names: tuple[str, ...] = self._parser.action_names
        self.action_space = spaces.Text(
            max_length=MAX_REPLY_CHARS, min_length=0, charset=PRINTABLE
        )
        self.observation_space = spaces.Text(
            max_length=MAX_OBSERVATION_CHARS, min_length=1, charset=PRINTABLE
        )

        self.symbol_map: dict[str, str] = dict(self.symbol_roles)
        self.step_limit = self.max_steps or 1
        self._reset_counters()
        self._episode_over = True
        self._warned_after_end = False
        self._end_flags = (False, False)
        self._last_observation = ""

    # ------------------------------------------------------------------ episode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode, from ``options["task"]`` when given, else a drawn task.

        The same seed gives the same task, symbols and observation.
        """
        super().reset(seed=seed)
        task = (options or {}).get("task")

        # Drawn in both modes, so that plain and hidden episodes with one seed share
        # the task and every later draw from np_random.
        symbol_seed = int(self.np_random.integers(2**32))
        self.symbol_map = self._draw_symbol_map(symbol_seed)
        self._start_episode(task)

        self.step_limit = self.max_steps if self.max_steps is not None else self._default_step_limit()
        self._reset_counters()
        self._episode_over = False
        self._warned_after_end = False
        self._last_observation = self._render_state()
        return self._last_observation, self._build_reset_info()

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Parse the reply, apply its action if valid, and return the feedback.

        Raises:
            TypeError: If ``action`` is not a ``str``. Any string, including an empty,
                huge or non-ASCII one, is accepted.
            gymnasium.error.ResetNeeded: If ``reset`` was never called.
        """
        check_step_action(action, reset_done=bool(self._last_observation))
        if self._episode_over:
            return self._step_after_episode_end()

        self._steps += 1
        parsed = self._parser.parse(action)
        if parsed.action is None:
            self._num_invalid_actions += 1
            transition = Transition(
                effective=False,
                feedback=f"Invalid action: {parsed.error}. Reply with `{self._parser.format_hint}`.",
            )
            reward = 0.0 - self.format_penalty
        else:
            transition = self._apply_action(parsed.action)
            self._moves += 1
            if not transition.effective:
                self._num_ineffective_actions += 1
            reward = 1.0 if transition.success else 0.0

        terminated = transition.terminated
        truncated = not terminated and self._steps >= self.step_limit
        feedback = transition.feedback
        if truncated:
            feedback += f" Step limit of {self.step_limit} reached."
        self._episode_over = terminated or truncated
        self._end_flags = (terminated, truncated)

        info = self._build_step_info(parsed.action, transition, feedback)
        if self._episode_over:
            info["episode_feedback"] = self._summarize_episode(transition, truncated)
        self._last_observation = feedback + "\n" + self._render_state()
        return self._last_observation, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        """Return the current state as text when ``render_mode == "ansi"``, else None."""
        if self.render_mode is None:
            logger.warning("render() called without a render mode; pass render_mode='ansi'")
            return None
        return self._render_state()

    # ------------------------------------------------------------------ prompts

    @property
    def system_prompt(self) -> str:
        """System message: the rules (plain) or only the goal (hidden), then the reply format."""
        task = self._describe_rules() if self.symbols == "plain" else self._describe_goal()
        return task + "\n" + self.describe_reply_format()

    def describe_reply_format(self) -> str:
        """Return the reply-format instruction that ends the system prompt."""
        return (
            "Reply with at most one short line of reasoning, then the action on its own "
            f"line as `{self._parser.format_hint}`."
        )

    def few_shot_messages(self, num_examples: int = DEFAULT_FEW_SHOT_EXAMPLES) -> list[dict[str, str]]:
        """Build worked examples as alternating user and assistant chat messages.

        Each example is an observation of a fixed example task and a correct reply in
        the reply format. The examples do not depend on the current episode, and in
        hidden mode their symbols come from a fixed seed, not the episode's.

        Raises:
            ValueError: If ``num_examples`` is negative or more than the subclass has.
        """
        examples = self._build_few_shot_examples()
        if not 0 <= num_examples <= len(examples):
            raise ValueError(
                f"num_examples={num_examples} is out of range: use 0 to {len(examples)}"
            )
        messages = []
        for observation, reply in examples[:num_examples]:
            messages.append({"role": "user", "content": observation})
            messages.append({"role": "assistant", "content": reply})
        return messages

    def format_reply(self, action: str, reasoning: str | None = None) -> str:
        """Write a reply in the reply format, for example ``"Goal is right.\\nAction: Right"``."""
        line = f"Action: {action.capitalize()}"
        return line if not reasoning else f"{reasoning}\n{line}"

    def build_example_symbol_map(self) -> dict[str, str]:
        """Return the symbols few-shot examples use: plain ones, or hidden ones from a fixed seed."""
        return self._draw_symbol_map(EXAMPLE_SYMBOL_SEED)

    # ------------------------------------------------------------------ helpers

    def _draw_symbol_map(self, seed: int) -> dict[str, str]:
        if self.symbols == "plain":
            return dict(self.symbol_roles)
        return draw_hidden_symbols(self.symbol_roles, np.random.default_rng(seed))

    def _reset_counters(self) -> None:
        self._steps = 0
        self._moves = 0
        self._num_invalid_actions = 0
        self._num_ineffective_actions = 0
        self._success = False

    def _build_reset_info(self) -> dict[str, Any]:
        return {
            "success": False,
            "feedback": "",
            "steps": 0,
            "num_invalid_actions": 0,
            "num_ineffective_actions": 0,
        }

    def _build_step_info(
        self, action: str | None, transition: Transition, feedback: str
    ) -> dict[str, Any]:
        self._success = transition.success
        return {
            "action": action,
            "action_valid": action is not None,
            "action_effective": transition.effective,
            "success": transition.success,
            "feedback": feedback,
            "steps": self._steps,
            "num_invalid_actions": self._num_invalid_actions,
            "num_ineffective_actions": self._num_ineffective_actions,
        }

    def _summarize_episode(self, transition: Transition, truncated: bool) -> str:
        moves = _count(self._moves, "move")
        if transition.success:
            summary = f"Succeeded in {moves}."
        elif truncated:
            summary = f"Failed: step limit of {self.step_limit} reached after {moves}."
        else:
            outcome = transition.outcome or "the episode ended"
            summary = f"Failed: {outcome} after {moves}."
        if self._num_invalid_actions:
            summary += f" {_count(self._num_invalid_actions, 'invalid action')}."
        if self._num_ineffective_actions == 1:
            summary += " 1 action had no effect."
        elif self._num_ineffective_actions > 1:
            summary += f" {self._num_ineffective_actions} actions had no effect."
        return summary

    def _step_after_episode_end(self) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._warned_after_end:
            logger.warning("step() called after the episode ended; call reset() first")
            self._warned_after_end = True
        feedback = EPISODE_OVER_FEEDBACK
        transition = Transition(effective=False, feedback=feedback, success=self._success)
        info = self._build_step_info(None, transition, feedback)
        terminated, truncated = self._end_flags
        return self._last_observation, 0.0, terminated, truncated, info

    # ------------------------------------------------------------------ subclass hooks

    def _start_episode(self, task: Any) -> None:
        raise NotImplementedError

    def _apply_action(self, action: str) -> Transition:
        raise NotImplementedError

    def _render_state(self) -> str:
        raise NotImplementedError

    def _describe_rules(self) -> str:
        raise NotImplementedError

    def _describe_goal(self) -> str:
        raise NotImplementedError

    def _build_few_shot_examples(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _default_step_limit(self) -> int:
        raise NotImplementedError


EXAMPLE_SYMBOL_SEED = 20240601
"""Seed of the hidden symbols in few-shot examples, fixed so examples never change."""


def draw_hidden_symbols(symbol_roles: Mapping[str, str], rng: np.random.Generator) -> dict[str, str]:
    """Draw one distinct upper-case letter per role, never a role's plain symbol.

    Raises:
        ValueError: If there are more roles than letters left to draw from.
    """
    letters = [ch for ch in HIDDEN_SYMBOL_LETTERS if ch not in symbol_roles.values()]
    if len(symbol_roles) > len(letters):
        raise ValueError(
            f"{len(symbol_roles)} symbol roles need distinct letters but only {len(letters)} are available"
        )
    chosen = rng.choice(len(letters), size=len(symbol_roles), replace=False)
    return {role: letters[i] for role, i in zip(symbol_roles, chosen)}


def validate_symbols(symbols: str) -> str:
    """Return ``symbols`` if it is a known symbol mode, else raise ValueError."""
    if symbols not in SYMBOL_MODES:
        raise ValueError(f"symbols={symbols!r} is invalid: use one of {SYMBOL_MODES}")
    return symbols


def validate_max_steps(max_steps: int | None) -> int | None:
    """Return ``max_steps`` if it is None or an int of at least 1, else raise ValueError."""
    if max_steps is None:
        return None
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} is invalid: use an int of at least 1, or None")
    return int(max_steps)


def validate_format_penalty(format_penalty: float) -> float:
    """Return ``format_penalty`` as a float if it is finite and at least 0, else raise ValueError."""
    if (
        isinstance(format_penalty, bool)
        or not isinstance(format_penalty, (int, float, np.integer, np.floating))
        or not math.isfinite(format_penalty)
        or format_penalty < 0
    ):
        raise ValueError(
            f"format_penalty={format_penalty!r} is invalid: use a finite number of at least 0.0"
        )
    return float(format_penalty)


def validate_render_mode(render_mode: str | None) -> str | None:
    """Return ``render_mode`` if it is None or ``"ansi"``, else raise ValueError."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode={render_mode!r} is invalid: use None or 'ansi'")
    return render_mode


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
