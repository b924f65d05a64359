"""Tests of the scene verifier: training, the Fréchet distance, saving, evaluation of a model, and the commands."""

import json

import numpy as np
import pytest
import torch

from erlgym.bitimage import verifier as verifier_module
from erlgym.bitimage.checkpoint import load_model
from erlgym.bitimage.scenes import all_scenes, scene_batch
from erlgym.bitimage.verifier import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    SceneVerifier,
    VerifierConfig,
    VerifierError,
    attribute_accuracy,
    balanced_scenes,
    degrade,
    evaluate_generation,
    evaluate_verifier,
    frechet_distance,
    images_to_tensor,
    load_verifier,
    render_scenes,
    save_verifier,
    train_verifier,
)
from erlgym.erl.cli import EXIT_USAGE
from test_bitimage_pipeline import run_main, trained  # noqa: F401  (trained is a fixture)

SMALL = VerifierConfig(hidden=(8, 16, 16), features=32)


@pytest.fixture(scope="module")
def small_verifier() -> SceneVerifier:
    return train_verifier(SMALL, steps=150, batch_size=32, learning_rate=5e-3)


@pytest.fixture(scope="module")
def verifier_folder(small_verifier, tmp_path_factory):
    return save_verifier(small_verifier, tmp_path_factory.mktemp("verifier") / "verifier", {"steps": 150})


# ---------------------------------------------------------------------- training


def test_short_training_beats_chance(small_verifier):
    metrics = evaluate_verifier(small_verifier, count=256)

    # Chance is 1/5 for position, 1/6 for colour and 1/240 for all four attributes.
    assert metrics["accuracy"]["position"] >= 0.95
    assert metrics["accuracy"]["colour"] >= 0.8
    assert metrics["accuracy"]["all"] >= 0.2
    assert metrics["degraded_accuracy"]["all"] >= 0.2
    assert metrics["frechet_floor"] >= 0


def test_training_is_deterministic_in_seed():
    first = train_verifier(SMALL, steps=3, batch_size=8, seed=4)
    again = train_verifier(SMALL, steps=3, batch_size=8, seed=4)
    other = train_verifier(SMALL, steps=3, batch_size=8, seed=5)

    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    assert any(not torch.equal(tensor, other.state_dict()[name]) for name, tensor in first.state_dict().items())


def test_training_reports_each_step():
    reports = []

    train_verifier(SMALL, steps=4, batch_size=4, on_step=lambda step, steps, metrics: reports.append((step, steps)))

    assert reports == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("changes, message", [
    ({"hidden": ()}, "invalid hidden"),
    ({"features": 0}, "invalid features"),
    ({"image_size": 30}, "divisible by 4"),
    ({"max_noise_std": 2.0}, "expected values from 0 to 1"),
])
def test_config_rejects_invalid_settings(changes, message):
    with pytest.raises(VerifierError, match=message):
        VerifierConfig(**changes)


def test_training_rejects_invalid_arguments():
    with pytest.raises(VerifierError, match="invalid steps 0"):
        train_verifier(SMALL, steps=0)
    with pytest.raises(VerifierError, match="invalid learning_rate"):
        train_verifier(SMALL, steps=1, learning_rate=float("nan"))


def test_degrade_range_and_identity():
    images, _ = scene_batch(6, seed=0)
    generator = torch.Generator().manual_seed(0)

    degraded = degrade(images, VerifierConfig(max_noise_std=0.5, blur_probability=1.0), generator)
    unchanged = degrade(images, VerifierConfig(max_noise_std=0.0, blur_probability=0.0), generator)

    assert degraded.min() >= 0
    assert degraded.max() <= 1
    assert not torch.equal(degraded, images)
    assert torch.equal(unchanged, images)


def test_forward_rejects_wrong_image_shape(small_verifier):
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        small_verifier(torch.zeros(2, 3, 16, 16))


# ---------------------------------------------------------------------- measures


def test_frechet_distance_of_equal_sets_is_zero():
    features = np.random.default_rng(0).normal(size=(200, 5))

    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_diagonal_closed_form():
    # For diagonal covariances d² = |μa − μb|² + Σ_i (σa_i − σb_i)², where σ are standard deviations.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200_000, 3)) * np.array([1.0, 2.0, 0.5])
    b = rng.normal(size=(200_000, 3)) * np.array([3.0, 2.0, 1.5]) + np.array([1.0, 0.0, -2.0])

    expected = (1 + 0 + 4) + ((1 - 3) ** 2 + 0 + (0.5 - 1.5) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(frechet_distance(a, b))


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="expected two feature sets"):
        frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="expected two feature sets"):
        frechet_distance(np.zeros((1, 3)), np.zeros((10, 3)))


def test_attribute_accuracy_per_attribute():
    target = torch.tensor([[0, 0, 0, 0], [1, 2, 3, 1], [3, 5, 4, 0], [2, 1, 1, 1]])
    predicted = torch.tensor([[0, 0, 0, 0], [1, 2, 0, 1], [3, 4, 4, 0], [2, 1, 1, 1]])

    accuracy = attribute_accuracy(predicted, target)

    assert accuracy == {"shape": 1.0, "colour": 0.75, "position": 0.75, "size": 1.0, "all": 0.5}
    with pytest.raises(ValueError, match=r"expected two \(B, 4\) id tensors"):
        attribute_accuracy(predicted[:, :3], target[:, :3])


def test_balanced_scenes_cycle_through_all_scenes():
    scenes = balanced_scenes(500)

    assert scenes[:240] == all_scenes()
    assert scenes[240:480] == all_scenes()
    assert scenes[480:] == all_scenes()[:20]


def test_render_scenes_layout():
    images = render_scenes(all_scenes()[:3], seed=0)

    assert images.shape == (3, 3, 32, 32)
    assert images.dtype == torch.float32
    assert images.min() >= 0
    assert images.max() <= 1
    with pytest.raises(ValueError, match="expected uint8 images"):
        images_to_tensor(np.zeros((2, 32, 32, 3), dtype=np.float32))


def test_evaluate_generation_reports_measures(trained, small_verifier):  # noqa: F811
    model = load_model(trained[0])
    batches = []

    result = evaluate_generation(model, small_verifier, count=6, batch_size=4,
                                 on_batch=lambda done, total: batches.append((done, total)))

    assert batches == [(4, 6), (6, 6)]
    assert result["images"] == 6
    for part in ("generated", "reconstructed", "rendered"):
        accuracy = result[part]["accuracy"]
        assert set(accuracy) == {"shape", "colour", "position", "size", "all"}
        assert all(0 <= value <= 1 for value in accuracy.values())
    assert result["generated"]["frechet_distance"] >= 0
    assert result["reconstructed"]["frechet_distance"] >= 0
    # The verifier reads its own renders as it did in training.
    assert result["rendered"]["accuracy"]["position"] >= 0.8


# ---------------------------------------------------------------------- saving and loading


def test_save_load_same_predictions(small_verifier, verifier_folder):
    loaded = load_verifier(verifier_folder)
    images, _ = scene_batch(16, seed=3)

    assert loaded.config == SMALL
    assert loaded.info == {"steps": 150}
    assert torch.equal(loaded.predict(images)[0], small_verifier.predict(images)[0])


def test_load_missing_folder(tmp_path):
    with pytest.raises(VerifierError, match="not found. Pass a folder written by: erlgym image train-verifier"):
        load_verifier(tmp_path / "nothing")


def test_load_missing_weights(verifier_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / CONFIG_FILE).write_bytes((verifier_folder / CONFIG_FILE).read_bytes())

    with pytest.raises(VerifierError, match=f"{WEIGHTS_FILE} not found, so the folder is incomplete"):
        load_verifier(folder)


@pytest.mark.parametrize("damage, message", [
    ({CONFIG_FILE: b"{not json"}, "corrupt verifier config"),
    ({CONFIG_FILE: b'{"format": "other"}'}, "expected a JSON object with format"),
    ({WEIGHTS_FILE: b"garbage"}, "corrupt verifier weights"),
])
def test_load_damaged_folder(verifier_folder, tmp_path, damage, message):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (folder / name).write_bytes(damage.get(name, (verifier_folder / name).read_bytes()))

    with pytest.raises(VerifierError, match=message):
        load_verifier(folder)


def test_load_weights_of_another_config(verifier_folder, tmp_path):
    folder = save_verifier(SceneVerifier(VerifierConfig(hidden=(8, 16, 16), features=16)), tmp_path / "other")
    (folder / CONFIG_FILE).write_bytes((verifier_folder / CONFIG_FILE).read_bytes())

    with pytest.raises(VerifierError, match="do not match the config"):
        load_verifier(folder)


def test_bundled_verifier_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(verifier_module, "BUNDLED_VERIFIER", tmp_path / "verifier-checkpoint")

    with pytest.raises(VerifierError, match="no bundled verifier is installed"):
        load_verifier()


# ---------------------------------------------------------------------- command line


def test_cli_train_verifier_then_evaluate(trained, tmp_path):  # noqa: F811
    folder = tmp_path / "verifier"

    status, stdout, _ = run_main(["image", "train-verifier", "--out", str(folder), "--steps", "2",
                                  "--batch-size", "4"])

    assert status == 0
    assert "held-out renders" in stdout
    assert json.loads((folder / CONFIG_FILE).read_text())["info"]["steps"] == 2

    report = tmp_path / "reports" / "evaluation.json"
    status, stdout, _ = run_main(["image", "evaluate", "--model", str(trained[0]), "--verifier", str(folder),
                                  "--images", "4", "--out", str(report)])

    assert status == 0
    assert "generated: all four right" in stdout
    result = json.loads(report.read_text())
    assert result["images"] == 4
    assert result["verifier"] == str(folder)


def test_cli_train_verifier_nonempty_folder(tmp_path):
    (tmp_path / "kept.txt").write_text("data")

    status, _, stderr = run_main(["image", "train-verifier", "--out", str(tmp_path), "--steps", "1"])

    assert status == EXIT_USAGE
    assert "is not an empty folder" in stderr
    assert (tmp_path / "kept.txt").read_text() == "data"


def test_cli_evaluate_missing_verifier(trained, tmp_path):  # noqa: F811
    status, _, stderr = run_main(["image", "evaluate", "--model", str(trained[0]), "--verifier",
                                  str(tmp_path / "missing")])

    assert status == EXIT_USAGE
    assert "verifier folder" in stderr
    assert "not found" in stderr


def test_bundled_verifier_reads_renders():
    verifier = load_verifier()
    images, attribute_ids = scene_batch(256, seed=(0, 0, 99))

    predicted, features = verifier.predict(images)

    assert attribute_accuracy(predicted, attribute_ids)["all"] >= 0.99
    assert features.shape == (256, verifier.config.features)
    assert verifier.info["metrics"]["accuracy"]["all"] >= 0.99


def test_bundled_model_draws_what_is_asked():
    model = load_model()
    scenes = all_scenes()[::7]  # 35 scenes covering every shape, colour, position and size
    target = torch.tensor([scene.attribute_ids() for scene in scenes])

    pixels, _ = model.generate(scenes, seed=0)
    predicted, _ = load_verifier().predict(images_to_tensor(pixels))

    assert model.info["training"]["weights_dtype"] == "float16"
    assert attribute_accuracy(predicted, target)["all"] >= 0.9
