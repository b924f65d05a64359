"""The step loop shared by erlgym's tool-calling environments (SearchQA and DrawScene).

A reply makes one ``Action: <tool>[<argument>]`` call (see :mod:`erlgym.envs.tool_calls`).
:class:`ToolTextEnv` parses it, runs the subclass's tool, counts invalid and ineffective
calls, applies the step limit and builds the observation, reward and ``info``. A subclass
supplies the tools and what is specific to its task through the hooks below.
"""

from __future__ import annotations

import logging
from typing import Any, SupportsFloat

import gymnasium

from erlgym.envs.base import EPISODE_OVER_FEEDBACK, MAX_OBSERVATION_CHARS, check_step_action
from erlgym.envs.tool_calls import ToolCall

logger = logging.getLogger(__name__)


def fit_observation(text: str) -> str:
    """Cut an observation to the observation space's maximum length."""
    if len(text) <= MAX_OBSERVATION_CHARS:
        return text
    return text[: MAX_OBSERVATION_CHARS - 3] + "..."


def count_noun(number: int, noun: str) -> str:
    """Return ``"1 step"`` or ``"3 steps"``: the number and the noun, plural unless the number is 1."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class ToolTextEnv(gymnasium.Env[str, str]):
    """A text environment whose replies are tool calls, with a step limit.

    A subclass sets ``outcome_type`` (a dataclass whose first fields are ``valid``,
    ``effective``, ``feedback``, ``result`` and ``terminated``), ``tool_formats`` (the
    call formats an invalid reply's feedback lists) and ``last_step_hint`` (the sentence
    the observation adds when one step is left). It keeps ``_parser``,
    ``_last_observation``, ``_steps``, ``_num_invalid``, ``_num_ineffective``,
    ``_success``, ``_episode_over``, ``_end_flags`` and ``_warned_after_end``, setting
    them in its constructor and ``reset``. It implements :meth:`_run_tool`,
    :meth:`_reward`, :meth:`_task_info` and :meth:`_summarize_episode`.
    """

    outcome_type: type
    tool_formats: str
    last_step_hint: str
    max_steps: int
    format_penalty: float

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Run the reply's tool call and return its result.

        Raises:
            TypeError: If ``action`` is not a ``str``. Any string is accepted.
            gymnasium.error.ResetNeeded: If ``reset`` was never called.
        """
        check_step_action(action, reset_done=bool(self._last_observation))
        if self._episode_over:
            return self._step_after_episode_end()

        self._steps += 1
        parsed = self._parser.parse(action)
        outcome = self._invalid_outcome(parsed.error) if parsed.call is None else self._run_tool(parsed.call)

        if not outcome.valid:
            self._num_invalid += 1
            reward = 0.0 - self.format_penalty
        else:
            if not outcome.effective:
                self._num_ineffective += 1
            reward = self._reward(outcome)

        terminated = outcome.terminated
        truncated = not terminated and self._steps >= self.max_steps
        self._episode_over = terminated or truncated
        self._end_flags = (terminated, truncated)
        feedback = outcome.feedback
        if terminated:
            observation = outcome.result
        elif truncated:
            feedback += f" Step limit of {self.max_steps} reached."
            observation = f"{outcome.result}\nStep limit of {self.max_steps} reached."
        else:
            observation = f"{outcome.result}\n{self._describe_steps_left()}"

        info = self._build_step_info(parsed.call.tool if outcome.valid else None, outcome, feedback)
        if self._episode_over:
            info["episode_feedback"] = self._summarize_episode(truncated)
        self._last_observation = fit_observation(observation)
        return self._last_observation, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        """Return the last observation when ``render_mode == "ansi"``, else None."""
        if self.render_mode is None:
            logger.warning("render() called without a render mode; pass render_mode='ansi'")
            return None
        return self._last_observation

    def _invalid_outcome(self, reason: str | None) -> Any:
        feedback = f"Invalid tool call: {reason}. Reply with {self.tool_formats}."
        return self.outcome_type(False, False, feedback, feedback)

    def _step_after_episode_end(self) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._warned_after_end:
            logger.warning("step() called after the episode ended; call reset() first")
            self._warned_after_end = True
        feedback = EPISODE_OVER_FEEDBACK
        outcome = self.outcome_type(False, False, feedback, self._last_observation)
        info = self._build_step_info(None, outcome, feedback)
        terminated, truncated = self._end_flags
        return self._last_observation, 0.0, terminated, truncated, info

    # Hooks of the subclass.

    def _run_tool(self, call: ToolCall) -> Any:
        raise NotImplementedError

    def _reward(self, outcome: Any) -> float:
        """Return the reward of a valid call."""
        raise NotImplementedError

    def _describe_steps_left(self) -> str:
        steps_left = self.max_steps - self._steps
        if steps_left == 1:
            return f"Steps left: 1. {self.last_step_hint}"
        return f"Steps left: {steps_left}."

    def _build_step_info(self, tool: str | None, outcome: Any, feedback: str) -> dict[str, Any]:
        """Return the ``info`` keys every tool environment shares, followed by :meth:`_task_info`."""
        return {
            "action": tool,
            "action_valid": outcome.valid,
            "action_effective": outcome.effective,
            "success": self._success,
            "feedback": feedback,
            "steps": self._steps,
            "num_invalid_actions": self._num_invalid,
            "num_ineffective_actions": self._num_ineffective,
            **self._task_info(),
        }

    def _task_info(self) -> dict[str, Any]:
        """Return the environment's own ``info`` keys after a step."""
        raise NotImplementedError

    def _summarize_episode(self, truncated: bool) -> str:
        raise NotImplementedError
