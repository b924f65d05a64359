"""Reflection memory: reflections whose retry reached the reward threshold τ."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class MemoryItem:
    """A kept reflection with the task it came from and the retry reward it earned."""

    text: str
    task_seed: int
    retry_reward: float
    step: int


class ReflectionMemory:
    """The most recent ``capacity`` reflections whose retry reward was at least ``threshold``."""

    def __init__(self, capacity: int = 8, threshold: float = 1.0):
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.threshold = threshold
        self.items: deque[MemoryItem] = deque(maxlen=capacity or None)

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, item: MemoryItem) -> bool:
        """Keep ``item`` if its retry reward reaches the threshold; return whether it was kept."""
        if self.capacity == 0 or item.retry_reward < self.threshold:
            return False
        self.items.append(item)
        return True

    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    def save(self, path: Path) -> None:
        payload = {"capacity": self.capacity, "threshold": self.threshold,
                   "items": [asdict(item) for item in self.items]}
        path.write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: Path) -> "ReflectionMemory":
        payload = json.loads(path.read_text())
        memory = cls(capacity=payload["capacity"], threshold=payload["threshold"])
        for item in payload["items"]:
            memory.items.append(MemoryItem(**item))
        return memory
