"""Registration of the erlgym environments with Gymnasium."""

from __future__ import annotations

import gymnasium

ENTRY_POINTS = {
    "erlgym/FrozenLake-v0": "erlgym.envs.frozen_lake:FrozenLakeTextEnv",
    "erlgym/Sokoban-v0": "erlgym.envs.sokoban:SokobanTextEnv",
    "erlgym/SearchQA-v0": "erlgym.envs.search_qa:SearchQATextEnv",
    "erlgym/DrawScene-v0": "erlgym.envs.draw_scene:DrawSceneTextEnv",
}
"""Environment id to its ``module:class`` entry point. Add new environments here."""


def register_envs() -> None:
    """Register every id in :data:`ENTRY_POINTS` that Gymnasium does not know yet.

    Calling it again is harmless, so importing :mod:`erlgym.envs` twice (or reloading
    it) registers nothing twice. Entry points are imported lazily by
    ``gymnasium.make``, so an id whose module is missing fails only when it is made.
    The environments count their own steps and truncate at ``max_steps``, so no
    ``max_episode_steps`` is registered.
    """
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)
