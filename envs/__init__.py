"""Gymnasium text environments, the action parser and the level files they read."""

from erlgym.envs.registration import ENTRY_POINTS, register_envs

register_envs()

__all__ = ["ENTRY_POINTS", "register_envs"]
