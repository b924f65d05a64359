"""Tests of erlgym.bitimage scenes, quantizer, tokenizer and metrics, on real components."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from erlgym.bitimage.metrics import bit_usage, psnr
from erlgym.bitimage.quantizer import BinaryQuantizer, bits_to_indices, group_entropies, indices_to_bits
from erlgym.bitimage.scenes import (
    BRIGHTNESS_RANGE,
    COLOUR_RGB,
    COLOURS,
    DEFAULT_SIZE,
    POSITION_CENTRES,
    POSITIONS,
    SHAPES,
    SIZE_FRACTIONS,
    SIZES,
    DescriptionError,
    Scene,
    all_scenes,
    parse_description,
    render,
    sample_scenes,
    scene_batch,
)
from erlgym.bitimage.tokenizer import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    BinaryTokenizer,
    TokenizerCheckpointError,
    TokenizerConfig,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

SMALL_CONFIG = TokenizerConfig(hidden=(8, 16), residual_blocks=1, bits=8, group_size=4)
"""A tokenizer small enough to build many times in a test."""


def shape_mask(image: np.ndarray) -> np.ndarray:
    return image.any(axis=-1)


def bounding_box(mask: np.ndarray) -> tuple[float, float, int, int]:
    """Return the box centre (row, column) in pixel coordinates and its height and width."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    centre_row = (rows[0] + rows[-1] + 1) / 2
    centre_column = (columns[0] + columns[-1] + 1) / 2
    return centre_row, centre_column, rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


# Scenes


def test_scene_batch_deterministic_per_seed():
    images, ids = scene_batch(16, seed=3)
    images_again, ids_again = scene_batch(16, seed=3)
    other_images, _ = scene_batch(16, seed=4)

    assert images.shape == (16, 3, 32, 32)
    assert images.dtype == torch.float32
    assert ids.shape == (16, 4)
    assert ids.dtype == torch.long
    assert torch.equal(images, images_again)
    assert torch.equal(ids, ids_again)
    assert not torch.equal(images, other_images)
    assert images.min() >= 0.0
    assert images.max() <= 1.0


def test_scene_batch_ids_match_sample_scenes():
    _, ids = scene_batch(20, seed=(7, 1))
    scenes = sample_scenes(20, seed=(7, 1))

    assert [Scene.from_ids(row) for row in ids.tolist()] == scenes


def test_sample_scenes_covers_vocabulary():
    scenes = sample_scenes(2000, seed=0)

    assert {scene.shape for scene in scenes} == set(SHAPES)
    assert {scene.colour for scene in scenes} == set(COLOURS)
    assert {scene.position for scene in scenes} == set(POSITIONS)
    assert {scene.size for scene in scenes} == set(SIZES)


def test_render_every_scene_colour_and_place():
    for scene in all_scenes():
        image = render(scene)
        mask = shape_mask(image)
        centre_row, centre_column, height, width = bounding_box(mask)
        expected_row, expected_column = (32 * fraction for fraction in POSITION_CENTRES[scene.position])
        expected_extent = SIZE_FRACTIONS[scene.size] * 32

        assert image.shape == (32, 32, 3), scene
        assert image.dtype == np.uint8, scene
        assert (image[mask] == COLOUR_RGB[scene.colour]).all(), scene
        assert (image[~mask] == 0).all(), scene
        assert abs(centre_row - expected_row) <= 1, (scene, centre_row, expected_row)
        assert abs(centre_column - expected_column) <= 1, (scene, centre_column, expected_column)
        assert abs(max(height, width) - expected_extent) <= 1.5, (scene, height, width)


def test_render_mean_colour_in_quadrant():
    quadrants = {
        "top-left": (slice(0, 16), slice(0, 16)),
        "top-right": (slice(0, 16), slice(16, 32)),
        "bottom-left": (slice(16, 32), slice(0, 16)),
        "bottom-right": (slice(16, 32), slice(16, 32)),
        "center": (slice(8, 24), slice(8, 24)),
    }
    for position, (rows, columns) in quadrants.items():
        for colour in COLOURS:
            image = render(Scene("square", colour, position, "large"))
            region = image[rows, columns]
            lit = shape_mask(region)
            mean_colour = region[lit].mean(axis=0)

            assert lit.sum() == shape_mask(image).sum(), (position, colour)
            np.testing.assert_allclose(mean_colour, COLOUR_RGB[colour])


def test_render_shapes_differ():
    masks = [shape_mask(render(Scene(shape, "white", "center", size))) for shape in SHAPES for size in SIZES]
    fills = {shape: shape_mask(render(Scene(shape, "white", "center", "large"))).mean() for shape in SHAPES}

    for i, first in enumerate(masks):
        for second in masks[i + 1 :]:
            assert not np.array_equal(first, second)
    assert fills["square"] > fills["circle"] > fills["cross"]
    assert fills["square"] > fills["circle"] > fills["triangle"]


def test_render_small_smaller_than_large():
    for shape in SHAPES:
        small = shape_mask(render(Scene(shape, "red", "center", "small"))).sum()
        large = shape_mask(render(Scene(shape, "red", "center", "large"))).sum()

        assert large > 2 * small, shape


def test_render_jitter_bounded():
    scene = Scene("square", "yellow", "top-left", "small")
    plain_row, plain_column, _, _ = bounding_box(shape_mask(render(scene)))
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(100):
        image = render(scene, rng=rng)
        mask = shape_mask(image)
        row, column, _, _ = bounding_box(mask)
        colours = np.unique(image[mask], axis=0)
        brightness = colours[0] / np.asarray(COLOUR_RGB["yellow"])
        offsets.add((row - plain_row, column - plain_column))

        assert abs(row - plain_row) <= 2
        assert abs(column - plain_column) <= 2
        assert len(colours) == 1
        assert BRIGHTNESS_RANGE[0] - 0.01 <= brightness.min()
        assert brightness.max() <= BRIGHTNESS_RANGE[1] + 0.01
    assert len(offsets) > 5


def test_render_other_sizes():
    image = render(Scene("circle", "blue", "bottom-right", "large"), size=64)

    assert image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="image size"):
        render(Scene("circle", "blue", "center"), size=4)


def test_prompt_parse_round_trip():
    scenes = all_scenes()

    assert len(scenes) == len(SHAPES) * len(COLOURS) * len(POSITIONS) * len(SIZES)
    for scene in scenes:
        assert parse_description(scene.prompt) == scene
        assert Scene.from_ids(scene.attribute_ids()) == scene


def test_prompt_format():
    scene = Scene("circle", "red", "top-left", "large")

    assert scene.prompt == "large red circle top-left"
    assert scene.attribute_ids() == (0, 0, 0, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A large red circle in the top-left corner", Scene("circle", "red", "top-left", "large")),
        ("the top left, a SMALL Blue Square", Scene("square", "blue", "top-left", "small")),
        ("cross, purple, at the bottom right", Scene("cross", "purple", "bottom-right", DEFAULT_SIZE)),
        ("an yellow triangle in the centre", Scene("triangle", "yellow", "center", DEFAULT_SIZE)),
        ("white circle middle small.", Scene("circle", "white", "center", "small")),
        ("green green square bottom-left", Scene("square", "green", "bottom-left", DEFAULT_SIZE)),
    ],
)
def test_parse_filler_and_order(text, expected):
    assert parse_description(text) == expected


def test_parse_unknown_word_lists_vocabulary():
    with pytest.raises(DescriptionError) as raised:
        parse_description("a large orange circle top-left")
    message = str(raised.value)

    assert raised.value.word == "orange"
    assert "'orange'" in message
    for word in SHAPES + COLOURS + POSITIONS + SIZES:
        assert word in message


@pytest.mark.parametrize(
    ("text", "attribute"),
    [("red top-left", "shape"), ("large circle top-left", "colour"), ("small red circle", "position")],
)
def test_parse_missing_attribute(text, attribute):
    with pytest.raises(DescriptionError, match=f"no {attribute}") as raised:
        parse_description(text)

    assert raised.value.attribute == attribute


def test_parse_two_colours():
    with pytest.raises(DescriptionError, match="two values of colour") as raised:
        parse_description("red blue circle top-left")
    message = str(raised.value)

    assert "'red'" in message
    assert "'blue'" in message
    assert raised.value.attribute == "colour"


def test_parse_two_positions():
    with pytest.raises(DescriptionError, match="two values of position"):
        parse_description("red circle top left bottom right")


def test_scene_rejects_invalid_attribute():
    with pytest.raises(ValueError, match="invalid colour 'orange'"):
        Scene("circle", "orange", "center")
    with pytest.raises(ValueError, match="invalid size id 2"):
        Scene.from_ids((0, 0, 0, 2))
    with pytest.raises(ValueError, match="expected 4 attribute ids"):
        Scene.from_ids((0, 0, 0))


# Quantizer


def test_quantizer_codes_exactly_plus_minus_one():
    quantizer = BinaryQuantizer(bits=8)
    z = torch.randn(3, 8, 4, 4) * 3
    z[0, 0, 0, 0] = 0.0

    codes = quantizer(z).codes

    assert codes.shape == z.shape
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes, torch.where(z >= 0, 1.0, -1.0))
    assert codes[0, 0, 0, 0] == 1.0


def test_quantizer_straight_through_gradient():
    quantizer = BinaryQuantizer(bits=8)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 8, 3, 3)

    quantizer(z).codes.backward(upstream)

    assert torch.equal(z.grad, upstream)


def test_quantizer_entropy_bounds():
    quantizer = BinaryQuantizer(bits=8, group_size=4)
    generator = torch.Generator().manual_seed(0)
    for scale in (0.01, 0.1, 1.0, 10.0):
        output = quantizer(torch.randn(4, 8, 5, 5, generator=generator) * scale)

        assert 0.0 <= output.per_sample_entropy.item() <= quantizer.max_entropy + 1e-6, scale
        assert 0.0 <= output.batch_entropy.item() <= quantizer.max_entropy + 1e-6, scale
        assert output.per_sample_entropy.item() <= output.batch_entropy.item() + 1e-6, scale
        assert math.isclose(
            output.entropy_loss.item(), output.per_sample_entropy.item() - output.batch_entropy.item(), abs_tol=1e-6
        )


def test_quantizer_uniform_codes_max_batch_entropy():
    group_size = 4
    every_code = indices_to_bits(torch.arange(2**group_size), group_size)  # (16, 4)
    latents = torch.cat([every_code, every_code.flip(0)], dim=1).repeat(3, 1) * 5  # (48, 8), two groups

    per_sample, batch = group_entropies(latents, group_size, temperature=0.1)

    assert batch.item() == pytest.approx(math.log(2**group_size), abs=1e-4)
    assert per_sample.item() == pytest.approx(0.0, abs=1e-4)


def test_quantizer_single_code_min_batch_entropy():
    latents = torch.ones(32, 8) * 5

    per_sample, batch = group_entropies(latents, group_size=4, temperature=0.1)

    assert batch.item() == pytest.approx(0.0, abs=1e-4)
    assert per_sample.item() == pytest.approx(0.0, abs=1e-4)


def test_quantizer_entropy_loss_gradient_finite():
    quantizer = BinaryQuantizer(bits=8, temperature=0.01)
    z = (torch.randn(2, 8, 4, 4) * 5).requires_grad_()

    output = quantizer(z)
    output.loss.backward()

    assert torch.isfinite(z.grad).all()
    assert output.commitment_loss.item() == pytest.approx(torch.mean((z.detach() - output.codes.detach()) ** 2).item())


def test_bits_indices_round_trip():
    indices = torch.arange(16)
    bits = indices_to_bits(indices, 4)

    assert bits.shape == (16, 4)
    assert torch.equal(bits_to_indices(bits), indices)
    assert bits_to_indices(torch.tensor([-1.0, -1.0, 1.0])).item() == 1
    assert bits_to_indices(torch.tensor([1.0, -1.0, -1.0])).item() == 4


def test_quantizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="group size 3"):
        BinaryQuantizer(bits=8, group_size=3)
    with pytest.raises(ValueError, match="latents of shape"):
        BinaryQuantizer(bits=8)(torch.zeros(1, 4, 2, 2))


# Tokenizer


def test_tokenizer_shapes():
    torch.manual_seed(0)
    model = BinaryTokenizer(SMALL_CONFIG)
    images, _ = scene_batch(3, seed=0)

    codes = model.encode(images)
    decoded = model.decode(codes)
    output = model(images)

    assert codes.shape == (3, 8, 8, 8)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert decoded.shape == (3, 3, 32, 32)
    assert decoded.min() >= 0.0
    assert decoded.max() <= 1.0
    assert output.reconstruction.shape == (3, 3, 32, 32)
    assert torch.equal(output.codes, codes)
    assert output.loss.dim() == 0


def test_tokenizer_rejects_bad_shapes():
    model = BinaryTokenizer(SMALL_CONFIG)

    with pytest.raises(ValueError, match="expected images of shape"):
        model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expected codes of shape"):
        model.decode(torch.zeros(1, 8, 8, 16))


def test_tokenizer_config_validation():
    assert TokenizerConfig().downsample == 4
    assert TokenizerConfig().latent_size == 8
    with pytest.raises(ValueError, match="image_size 30"):
        TokenizerConfig(image_size=30)
    with pytest.raises(ValueError, match="group_size 5"):
        TokenizerConfig(bits=16, group_size=5)
    with pytest.raises(ValueError, match="unknown tokenizer config fields"):
        TokenizerConfig.from_dict({"width": 3})


@pytest.fixture(scope="module")
def trained():
    """A small tokenizer trained for 300 steps, with its per-step metrics."""
    config = TokenizerConfig(hidden=(16, 32), residual_blocks=0, bits=16, group_size=4)
    history = []
    model = train_tokenizer(
        config,
        steps=300,
        batch_size=8,
        seed=0,
        learning_rate=3e-3,
        on_step=lambda step, metrics: history.append(metrics),
    )
    return model, history


def test_training_lowers_reconstruction_loss(trained):
    _, history = trained
    first = np.mean([metrics["reconstruction_loss"] for metrics in history[:5]])
    last = np.mean([metrics["reconstruction_loss"] for metrics in history[-20:]])

    assert len(history) == 300
    assert last < 0.1 * first, (first, last)


def test_training_beats_mean_image(trained):
    model, _ = trained
    held_out, _ = scene_batch(128, seed=12345)
    training_images, _ = scene_batch(256, seed=(0, 1))
    mean_image = training_images.mean(dim=0, keepdim=True).expand_as(held_out)

    with torch.no_grad():
        reconstruction = model(held_out).reconstruction
    baseline_db = psnr(held_out, mean_image)
    model_db = psnr(held_out, reconstruction)

    assert model_db > baseline_db + 4.0, (model_db, baseline_db)


def test_training_uses_bits(trained):
    model, _ = trained
    held_out, _ = scene_batch(128, seed=12345)

    with torch.no_grad():
        usage = bit_usage(model.encode(held_out), group_size=4)

    assert usage["bit_entropy_bits"] > 0.5, usage
    assert usage["mean_code_usage"] > 0.5, usage


def test_training_deterministic_per_seed():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)

    first = train_tokenizer(SMALL_CONFIG, steps=2, batch_size=2, seed=5)
    after = torch.rand(1)
    second = train_tokenizer(SMALL_CONFIG, steps=2, batch_size=2, seed=5)
    other = train_tokenizer(SMALL_CONFIG, steps=2, batch_size=2, seed=6)

    assert torch.equal(before, after)
    assert not first.training
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert any(not torch.equal(tensor, other.state_dict()[name]) for name, tensor in first.state_dict().items())


def test_save_load_round_trip(tmp_path):
    model = train_tokenizer(SMALL_CONFIG, steps=2, batch_size=2, seed=1)
    images, _ = scene_batch(4, seed=9)

    save_tokenizer(model, tmp_path / "tokenizer")
    loaded = load_tokenizer(tmp_path / "tokenizer", expected_config=SMALL_CONFIG)

    assert loaded.config == SMALL_CONFIG
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model.encode(images), loaded.encode(images))
        assert torch.equal(model(images).reconstruction, loaded(images).reconstruction)


@pytest.fixture
def saved_folder(tmp_path):
    return save_tokenizer(BinaryTokenizer(SMALL_CONFIG), tmp_path / "tokenizer")


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer folder .* not found"):
        load_tokenizer(tmp_path / "absent")


def test_load_missing_file(saved_folder):
    (saved_folder / WEIGHTS_FILE).unlink()

    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_tokenizer(saved_folder)


def test_load_corrupt_weights(saved_folder):
    (saved_folder / WEIGHTS_FILE).write_bytes(b"not a safetensors file")

    with pytest.raises(TokenizerCheckpointError, match="corrupt tokenizer weights"):
        load_tokenizer(saved_folder)


def test_load_corrupt_config(saved_folder):
    (saved_folder / CONFIG_FILE).write_text("{broken", encoding="utf-8")

    with pytest.raises(TokenizerCheckpointError, match="corrupt tokenizer config"):
        load_tokenizer(saved_folder)


def test_load_config_weights_mismatch(saved_folder):
    path = saved_folder / CONFIG_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    document["config"]["bits"] = 16
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(TokenizerCheckpointError, match="do not match the config"):
        load_tokenizer(saved_folder)


def test_load_unexpected_config(saved_folder):
    expected = TokenizerConfig(hidden=(8, 16), bits=16)

    with pytest.raises(TokenizerCheckpointError, match="differs from the expected config") as raised:
        load_tokenizer(saved_folder, expected_config=expected)

    assert "'bits': (8, 16)" in str(raised.value)


# Metrics


def test_psnr_known_values():
    reference = torch.zeros(2, 3, 4, 4)

    assert psnr(reference, reference + 0.1) == pytest.approx(20.0)
    assert psnr(reference, reference) == pytest.approx(100.0)
    assert psnr(reference[0], reference[0] + 0.01) == pytest.approx(40.0)
    assert psnr(reference * 255, reference + 25.5, max_value=255.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(reference, reference[:1])


def test_psnr_averages_per_image():
    reference = torch.zeros(2, 1, 2, 2)
    reconstruction = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 0.01)])

    assert psnr(reference, reconstruction) == pytest.approx(30.0)


def test_bit_usage_balanced_codes():
    every_code = indices_to_bits(torch.arange(16), 4)  # (16, 4)
    codes = torch.cat([every_code, every_code], dim=1).reshape(4, 2, 2, 8)

    usage = bit_usage(codes, group_size=4)

    assert usage["plus_fraction"] == [0.5] * 8
    assert usage["bit_entropy_bits"] == pytest.approx(1.0)
    assert usage["code_usage"] == [1.0, 1.0]
    assert usage["code_perplexity"] == pytest.approx([16.0, 16.0])
    assert usage["mean_code_perplexity"] == pytest.approx(16.0)


def test_bit_usage_constant_codes():
    codes = -torch.ones(10, 8)

    usage = bit_usage(codes, group_size=4)

    assert usage["plus_fraction"] == [0.0] * 8
    assert usage["bit_entropy_bits"] == pytest.approx(0.0)
    assert usage["mean_code_usage"] == pytest.approx(1 / 16)
    assert usage["mean_code_perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="group size 3"):
        bit_usage(codes, group_size=3)
