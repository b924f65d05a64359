"""Errors that carry a message for the user: the value that is wrong and how to fix it.

They live in this module, which imports nothing heavy, so that the command line can
catch them without loading torch or transformers first.
"""

from __future__ import annotations


class ChatTemplateError(ValueError):
    """A chat template that multi-turn rollouts cannot extend token by token."""


class ModelLoadError(RuntimeError):
    """A model spec that could not be resolved or loaded; the message names the fix."""


class RunError(RuntimeError):
    """A run that cannot start or continue; the message names the value and the fix."""
