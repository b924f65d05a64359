"""Reflection memory: reflections whose retry reached the reward threshold τ.

Two policies decide which reflections stay when the memory is full: ``latest`` keeps
the most recent ones, ``top`` keeps those with the highest retry reward (the newer one
wins a tie).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from erlgym.erl.config import MEMORY_POLICIES


@dataclass
class MemoryItem:
    """A kept reflection with the task it came from and the retry reward it earned."""

    text: str
    task_seed: int
    retry_reward: float
    step: int


class ReflectionMemory:
    """Up to ``capacity`` reflections whose retry reward was at least ``threshold``, chosen by ``policy``."""

    def __init__(self, capacity: int = 8, threshold: float = 1.0, policy: str = "latest"):
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        if policy not in MEMORY_POLICIES:
            raise ValueError(f"memory policy must be one of {', '.join(MEMORY_POLICIES)}, got {policy!r}")
        self.capacity = capacity
        self.threshold = threshold
        self.policy = policy
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

    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    def save(self, path: Path) -> None:
        payload = {"capacity": self.capacity, "threshold": self.threshold, "policy": self.policy,
                   "items": [asdict(item) for item in self.items]}
        path.write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> "ReflectionMemory":
        payload = json.loads(path.read_text())
        memory = cls(capacity=payload["capacity"], threshold=payload["threshold"],
                     policy=payload.get("policy", "latest"))
        for item in payload["items"]:
            memory.items.append(MemoryItem(**item))
        return memory
