"""Shared fixtures: tiny chat models saved once per test session."""

from __future__ import annotations

import pytest
import torch

from tiny_model import save_action_model, save_tiny_model

# The tiny models run fastest on one thread. On a 2-core machine shared with other
# processes, two threads made a training step of the action model about 5x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def action_model_dir(tmp_path_factory):
    """The tiny model fine-tuned to reply ``Action: <random direction>`` on FrozenLake."""
    return save_action_model(tmp_path_factory.mktemp("action-model"))
