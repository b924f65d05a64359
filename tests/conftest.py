"""Shared fixtures: a tiny chat model saved once per test session."""

from __future__ import annotations

import pytest

from tiny_model import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
