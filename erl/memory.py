"""Reflection memory: reflections whose retry reached the reward threshold τ.

Two policies decide which reflections stay when the memory is full: ``latest`` keeps
the most recent ones, ``top`` keeps those with the highest retry reward (the newer one
wins a tie).

The scope decides which kept reflections a reflection prompt shows: all of them
(``global``) or only those from the same task seed (``task``). The capacity is shared
by all tasks in both scopes.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from erlgym.erl.config import MEMORY_POLICIES, MEMORY_SCOPES


@dataclass
class MemoryItem:
    """A kept reflection with the task it came from and the retry reward it earned."""

    text: str
    task_seed: int
    retry_reward: float
    step: int


class ReflectionMemory:
    """Up to ``capacity`` reflections whose retry reward was at least ``threshold``, chosen by ``policy``
    and shown to reflection prompts by ``scope``."""

    def __init__(self, capacity: int = 8, threshold: float = 1.0, policy: str = "latest", scope: str = "global"):
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        if policy not in MEMORY_POLICIES:
            raise ValueError(f"memory policy must be one of {', '.join(MEMORY_POLICIES)}, got {policy!r}")
        if scope not in MEMORY_SCOPES:
            raise ValueError(f"memory scope must be one of {', '.join(MEMORY_SCOPES)}, got {scope!r}")
        self.capacity = capacity
        self.threshold = threshold
        self.policy = policy
        self.scope = scope
        self.items: deque[MemoryItem] = deque(maxlen=capacity or None)

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, item: MemoryItem) -> bool:
        """Keep ``item`` if its retry reward reaches the threshold; return whether it was kept."""
        if self.capacity == 0 or item.retry_reward < self.threshold:
            return False
        if self.policy == "top" and len(self.items) == self.capacity:
            weakest = min(self.items, key=lambda kept: (kept.retry_reward, kept.step))
            if item.retry_reward < weakest.retry_reward:
                return False
            self.items.remove(weakest)
        self.items.append(item)
        return True

    def texts(self, task_seeds: Collection[int] | None = None) -> list[str]:
        """Return the kept texts, oldest first, that a prompt about ``task_seeds`` may show.

        With scope ``task`` and ``task_seeds`` given, only items from those seeds are
        returned. With scope ``global``, or without ``task_seeds``, every item is.
        """
        if self.scope == "task" and task_seeds is not None:
            return [item.text for item in self.items if item.task_seed in task_seeds]
        return [item.text for item in self.items]

    def save(self, path: Path) -> None:
        payload = {"capacity": self.capacity, "threshold": self.threshold, "policy": self.policy,
                   "scope": self.scope, "items": [asdict(item) for item in self.items]}
        path.write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> "ReflectionMemory":
        """Read a memory written by :meth:`save`. Files without ``policy`` or ``scope`` get the defaults."""
        payload = json.loads(path.read_text())
        memory = cls(capacity=payload["capacity"], threshold=payload["threshold"],
                     policy=payload.get("policy", "latest"), scope=payload.get("scope", "global"))
        for item in payload["items"]:
            memory.items.append(MemoryItem(**item))
        return memory
