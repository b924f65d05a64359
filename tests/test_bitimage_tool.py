"""Tests of the image tool agents call, with a tiny model trained in the test session."""

import numpy as np
import pytest
from PIL import Image

from erlgym.bitimage.checkpoint import ImageModelError, load_model
from erlgym.bitimage.pipeline import train_image_model
from erlgym.bitimage.scenes import Scene
from erlgym.bitimage.tool import MAX_DESCRIPTION_CHARS, ImageTool, vocabulary_text
from test_bitimage_pipeline import tiny_config


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bitimage-tool") / "model"
    train_image_model(tiny_config(), folder)
    return folder


@pytest.fixture
def tool(model_folder, tmp_path):
    return ImageTool(model_folder, tmp_path / "images")


def test_tool_writes_png_and_attributes(tool):
    result = tool.generate_image("a small blue square in the bottom-right corner")

    assert result.ok
    assert result.scene == Scene("square", "blue", "bottom-right", "small")
    assert result.attributes == {"shape": "square", "colour": "blue", "position": "bottom-right", "size": "small"}
    assert result.image.shape == (32, 32, 3)
    assert result.image.dtype == np.uint8
    assert result.path.is_file()
    assert Image.open(result.path).size == (128, 128)
    assert "shape square" in result.as_text()


def test_tool_calls_differ_and_seed_repeats(tool):
    first = tool.generate_image("red circle top-left")
    second = tool.generate_image("red circle top-left")
    again = tool.generate_image("red circle top-left", seed=0)

    assert first.path != second.path
    assert np.array_equal(first.image, again.image)


@pytest.mark.parametrize("description, message", [
    ("red blob top-left", "unknown word 'blob'"),
    ("red circle", "has no position"),
    ("red blue circle top-left", "two values of colour"),
    ("", "non-empty text"),
    ("   ", "non-empty text"),
    ("red circle top-left " * 20, f"more than {MAX_DESCRIPTION_CHARS}"),
])
def test_tool_errors_are_feedback(tool, description, message):
    result = tool.generate_image(description)

    assert not result.ok
    assert message in result.error
    assert result.path is None
    assert result.as_text().startswith("generate_image failed:")
    assert tool.calls == 0


def test_tool_error_lists_vocabulary(tool):
    result = tool.generate_image("red blob top-left")

    for word in ("circle", "purple", "bottom-left", "small"):
        assert word in result.error
    assert "shape: circle" in vocabulary_text()


def test_tool_rejects_non_text(tool):
    result = tool.generate_image(None)

    assert "non-empty text" in result.error


def test_tool_missing_model(tmp_path):
    with pytest.raises(ImageModelError):
        ImageTool(tmp_path / "no-model", tmp_path / "images")


def test_tool_accepts_loaded_model(model_folder, tmp_path):
    tool = ImageTool(load_model(model_folder), tmp_path / "images", scale=1)

    result = tool.generate_image("green triangle center")

    assert Image.open(result.path).size == (32, 32)
