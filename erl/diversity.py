"""Diversity of the rollouts of one group (the G attempts at one task).

Exploration only helps GRPO and ERL when a group's attempts differ: identical attempts get
identical rewards and zero advantage. These measures count how much they differ:

* distinct action sequences: how many different sequences of parsed actions the group played;
* distinct final states: how many different last observations the group ended in;
* distinct-n: unique word n-grams over all n-grams of the text the model generated in the
  group's turns, without template prefills (Li et al., 2016, "A Diversity-Promoting
  Objective Function for Neural Conversation Models").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class _Attempt(Protocol):
    actions: list[str | None]
    final_observation: str
    generated_replies: list[str]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Return unique word n-grams / all word n-grams over ``texts`` (lowercased); 0.0 when there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def group_diversity(group: Sequence[_Attempt], n: int = 2) -> dict[str, float]:
    """Return the diversity measures of one group of attempts at the same task."""
    return {
        "distinct_action_sequences": float(len({tuple(attempt.actions) for attempt in group})),
        "distinct_final_states": float(len({attempt.final_observation for attempt in group})),
        f"distinct_{n}": distinct_n([reply for attempt in group for reply in attempt.generated_replies], n),
    }


def mean_group_diversity(groups: Sequence[Sequence[_Attempt]], n: int = 2) -> dict[str, float]:
    """Average :func:`group_diversity` over ``groups``; an empty input returns an empty dict."""
    measures = [group_diversity(group, n) for group in groups if group]
    if not measures:
        return {}
    return {name: float(np.mean([measure[name] for measure in measures])) for name in measures[0]}
