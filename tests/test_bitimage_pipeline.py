"""Tests of bitimage training, model folders and the ``erlgym image`` command, with tiny models.

Every training run here takes a few steps per stage with models of a few thousand
parameters, so the file runs in seconds. The weights are untrained, so the tests check
files, shapes, determinism and errors, never image quality.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from erlgym.bitimage import checkpoint
from erlgym.bitimage.checkpoint import (
    GENERATOR_FOLDER,
    INFO_FILE,
    MODEL_VERSION,
    TOKENIZER_FOLDER,
    WEIGHTS_FILE,
    ImageModel,
    ImageModelError,
    load_model,
    save_model,
    save_png,
)
from erlgym.bitimage.generator import BitGenerator
from erlgym.bitimage.pipeline import (
    TRAINING_FOLDER,
    ImageTrainConfig,
    ImageTrainError,
    TrainProgress,
    generator_learning_rate,
    train_image_model,
)
from erlgym.bitimage.scenes import DescriptionError, Scene
from erlgym.bitimage.tokenizer import BinaryTokenizer, TokenizerConfig, train_tokenizer
from erlgym.erl.cli import EXIT_USAGE, main

TINY_TOKENIZER = {"hidden": [8, 16], "residual_blocks": 1, "bits": 8, "group_size": 4}
TINY_GENERATOR = {"width": 16, "depth": 1, "heads": 1, "head_width": 16, "head_depth": 1,
                  "head_attention_heads": 1, "head_steps": 2, "head_noise_samples": 1}
TINY_SETTINGS = {
    "tokenizer_steps": 4,
    "generator_steps": 6,
    "batch_size": 4,
    "generator_warmup_steps": 2,
    "tokens_per_step": 4,
    "eval_images": 8,
    "save_every": 2,
    "tokenizer_overrides": TINY_TOKENIZER,
    "generator_overrides": TINY_GENERATOR,
}


def tiny_config(**changes) -> ImageTrainConfig:
    return ImageTrainConfig(**{**TINY_SETTINGS, **changes})


def tiny_options() -> list[str]:
    """Return the ``erlgym image train`` options of ``TINY_SETTINGS``."""
    options = []
    for name, value in TINY_SETTINGS.items():
        options += ["--" + name.replace("_", "-"), json.dumps(value) if isinstance(value, dict) else str(value)]
    return options


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``erlgym`` and return its exit status, stdout and stderr (whitespace collapsed)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stdout.getvalue(), " ".join(stderr.getvalue().split())


def weight_files(folder: Path) -> dict[str, bytes]:
    return {part: (folder / part / WEIGHTS_FILE).read_bytes() for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER)}


class InterruptAt:
    """Progress callback that records every report and raises KeyboardInterrupt after one stage's step."""

    def __init__(self, stage: str | None = None, step: int | None = None):
        self.stage = stage
        self.step = step
        self.reports: list[TrainProgress] = []

    def __call__(self, report: TrainProgress) -> None:
        self.reports.append(report)
        if report.stage == self.stage and report.step == self.step and report.metrics:
            raise KeyboardInterrupt

    def start_step(self, stage: str) -> int:
        """Return the step that ``stage`` started after, from its first report."""
        return next(report.step for report in self.reports if report.stage == stage)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, InterruptAt]:
    """Train the tiny model once without interruption; return its folder and the progress reports."""
    folder = tmp_path_factory.mktemp("bitimage") / "model"
    reports = InterruptAt()
    train_image_model(tiny_config(), folder, on_progress=reports)
    return folder, reports


@pytest.fixture
def model_copy(trained, tmp_path) -> Path:
    """A copy of the trained model folder that a test may damage."""
    copy = tmp_path / "model"
    for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER):
        (copy / part).mkdir(parents=True)
        for name in ("config.json", WEIGHTS_FILE):
            (copy / part / name).write_bytes((trained[0] / part / name).read_bytes())
    (copy / INFO_FILE).write_bytes((trained[0] / INFO_FILE).read_bytes())
    return copy


def change_generator_config(folder: Path, **changes) -> None:
    """Overwrite fields of the GeneratorConfig stored in the model folder ``folder``."""
    path = folder / GENERATOR_FOLDER / "config.json"
    document = json.loads(path.read_text())
    document["config"].update(changes)
    path.write_text(json.dumps(document))


# ---------------------------------------------------------------------- training


def test_train_writes_model_folder(trained):
    folder, _ = trained
    info = json.loads((folder / INFO_FILE).read_text())
    metrics = info["metrics"]

    for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER):
        assert (folder / part / WEIGHTS_FILE).is_file()
        assert (folder / part / "config.json").is_file()
    assert info["format"] == "erlgym.bitimage"
    assert info["version"] == MODEL_VERSION
    assert info["steps"] == {"tokenizer": 4, "generator": 6}
    assert info["training"]["tokenizer_overrides"] == TINY_TOKENIZER
    assert "out" not in info["training"]
    assert info["package_version"]
    assert info["created"].endswith("Z")
    assert metrics["held_out_images"] == 8
    assert 0 < metrics["tokenizer_psnr_db"] < 100
    assert 0 <= metrics["bit_entropy_bits"] <= 1
    assert len(metrics["code_usage"]) == 2
    assert metrics["generator_loss"] > 0
    assert metrics["tokenizer_loss"] > 0


def test_train_reports_progress(trained):
    _, reports = trained
    steps = {stage: [report.step for report in reports.reports if report.stage == stage and report.metrics]
             for stage in ("tokenizer", "generator")}

    assert [report.stage for report in reports.reports if not report.metrics] == ["tokenizer", "generator",
                                                                                   "evaluate"]
    assert steps == {"tokenizer": [1, 2, 3, 4], "generator": [1, 2, 3, 4, 5, 6]}
    assert all("loss" in report.metrics for report in reports.reports if report.stage != "evaluate"
               and report.metrics)


def test_trained_model_loads_with_tiny_configs(trained):
    model = load_model(trained[0])

    assert model.tokenizer.config.hidden == (8, 16)
    assert model.tokenizer.config.bits == 8
    assert model.generator.config.bits == 8
    assert model.generator.config.grid == (8, 8)
    assert model.generator.config.tokens_per_step == 4
    assert model.generator.config.width == 16
    assert not model.generator.training
    assert model.info["steps"]["generator"] == 6


def test_tokenizer_stage_matches_train_tokenizer(trained):
    saved = load_file(trained[0] / TOKENIZER_FOLDER / WEIGHTS_FILE)
    reference = train_tokenizer(TokenizerConfig(**TINY_TOKENIZER), steps=4, batch_size=4, seed=0,
                                learning_rate=ImageTrainConfig().tokenizer_learning_rate)

    for name, tensor in reference.state_dict().items():
        assert torch.equal(saved[name], tensor), name


def test_resume_after_interruptions_matches_uninterrupted(trained, tmp_path):
    folder = tmp_path / "model"
    first = InterruptAt("tokenizer", 3)
    second = InterruptAt("generator", 5)
    third = InterruptAt()

    # Other global random states than the uninterrupted run's: the weights must not depend on them.
    torch.manual_seed(101)
    with pytest.raises(KeyboardInterrupt):
        train_image_model(tiny_config(), folder, on_progress=first)
    torch.manual_seed(102)
    with pytest.raises(KeyboardInterrupt):
        train_image_model(None, folder, resume=True, on_progress=second)
    torch.manual_seed(103)
    train_image_model(tiny_config(), folder, resume=True, on_progress=third)

    assert second.start_step("tokenizer") == 2, "save_every=2, so the tokenizer resumes after step 2"
    assert second.start_step("generator") == 0
    assert third.start_step("tokenizer") == 4
    assert third.start_step("generator") == 4
    assert weight_files(folder) == weight_files(trained[0])


def test_training_keeps_global_random_state(trained, tmp_path):
    torch.manual_seed(7)
    state = torch.get_rng_state()

    folder = train_image_model(tiny_config(), tmp_path / "model")

    assert torch.equal(torch.get_rng_state(), state)
    assert weight_files(folder) == weight_files(trained[0])


def test_interrupted_run_writes_no_model(tmp_path):
    folder = tmp_path / "model"

    with pytest.raises(KeyboardInterrupt):
        train_image_model(tiny_config(), folder, on_progress=InterruptAt("generator", 1))

    assert not (folder / INFO_FILE).exists()
    assert (folder / TRAINING_FOLDER / "tokenizer.pt").is_file()
    assert not (folder / TRAINING_FOLDER / "generator.pt").exists()


def test_other_seed_gives_other_weights(trained, tmp_path):
    folder = train_image_model(tiny_config(seed=1), tmp_path / "model")

    other, reference = weight_files(folder), weight_files(trained[0])

    assert other[TOKENIZER_FOLDER] != reference[TOKENIZER_FOLDER]
    assert other[GENERATOR_FOLDER] != reference[GENERATOR_FOLDER]


def test_nonempty_out_rejected_without_resume(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")

    with pytest.raises(ImageTrainError, match="is not empty. Pass --resume"):
        train_image_model(tiny_config(), tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    assert notes.read_text() == "keep me"


def test_resume_without_state_rejected(tmp_path):
    with pytest.raises(ImageTrainError, match="no training state to resume"):
        train_image_model(tiny_config(), tmp_path / "missing", resume=True)


def test_resume_with_other_settings_rejected(tmp_path):
    folder = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        train_image_model(tiny_config(), folder, on_progress=InterruptAt("tokenizer", 1))

    with pytest.raises(ImageTrainError, match="seed: saved 0, given 3"):
        train_image_model(tiny_config(seed=3), folder, resume=True)


def test_tokenizer_from_trains_same_generator(trained, tmp_path):
    source = trained[0]
    reports = InterruptAt()

    folder = train_image_model(tiny_config(tokenizer_from=str(source), tokenizer_steps=99, tokenizer_overrides={}), tmp_path / "reused",
                               on_progress=reports)

    files, reference = weight_files(folder), weight_files(source)
    assert files[TOKENIZER_FOLDER] == reference[TOKENIZER_FOLDER]
    # Same tokenizer, seed and generator settings: the generator trains to the same weights.
    assert files[GENERATOR_FOLDER] == reference[GENERATOR_FOLDER]
    assert "tokenizer" not in {report.stage for report in reports.reports}
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["steps"] == {"tokenizer": 0, "generator": 6}
    assert info["training"]["tokenizer_from"] == str(source)


def test_tokenizer_from_resumes_from_its_copy(trained, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / TOKENIZER_FOLDER).mkdir()
    for name in ("config.json", WEIGHTS_FILE):
        (source / TOKENIZER_FOLDER / name).write_bytes((trained[0] / TOKENIZER_FOLDER / name).read_bytes())
    folder = tmp_path / "reused"
    with pytest.raises(KeyboardInterrupt):
        train_image_model(tiny_config(tokenizer_from=str(source), tokenizer_overrides={}), folder, on_progress=InterruptAt("generator", 3))

    # The source is gone after the run started; the resumed run keeps the copied tokenizer.
    (source / TOKENIZER_FOLDER / WEIGHTS_FILE).unlink()
    (source / TOKENIZER_FOLDER / "config.json").unlink()
    train_image_model(None, folder, resume=True)

    assert weight_files(folder) == weight_files(trained[0])


def test_finished_run_resaved_in_float16(trained, tmp_path):
    folder = tmp_path / "model"
    train_image_model(tiny_config(), folder)
    sizes = {part: (folder / part / WEIGHTS_FILE).stat().st_size for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER)}

    train_image_model(tiny_config(weights_dtype="float16"), folder, resume=True)

    for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER):
        half = load_file(folder / part / WEIGHTS_FILE)
        full = load_file(trained[0] / part / WEIGHTS_FILE)
        assert (folder / part / WEIGHTS_FILE).stat().st_size < 0.6 * sizes[part], part
        for name, tensor in full.items():
            if tensor.is_floating_point():
                assert half[name].dtype == torch.float16, name
                torch.testing.assert_close(half[name].float(), tensor, rtol=1e-3, atol=1e-4)
            else:
                assert torch.equal(half[name], tensor), name
    model = load_model(folder)
    assert all(parameter.dtype == torch.float32 for parameter in model.generator.parameters())
    assert model.generate(["red circle top-left"])[0].shape == (1, 32, 32, 3)


def test_plain_resume_keeps_changed_weights_dtype(tmp_path):
    folder = tmp_path / "model"
    train_image_model(tiny_config(), folder)
    train_image_model(tiny_config(weights_dtype="float16"), folder, resume=True)

    train_image_model(None, folder, resume=True)

    assert load_file(folder / GENERATOR_FOLDER / WEIGHTS_FILE)["start_queries"].dtype == torch.float16


def test_weight_files_follow_umask(trained):
    umask = os.umask(0)
    os.umask(umask)

    for part in (TOKENIZER_FOLDER, GENERATOR_FOLDER):
        mode = (trained[0] / part / WEIGHTS_FILE).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, oct(mode)


def test_tokenizer_from_errors(trained, tmp_path):
    with pytest.raises(ImageTrainError, match="tokenizer/config.json not found"):
        tiny_config(tokenizer_from=str(tmp_path), tokenizer_overrides={}).validate()
    with pytest.raises(ImageTrainError, match="cannot apply to the tokenizer reused from"):
        tiny_config(tokenizer_from=str(trained[0]), tokenizer_overrides={"bits": 8}).validate()


@pytest.mark.parametrize(("changes", "message"), [
    ({"batch_size": 0}, "invalid batch_size 0"),
    ({"seed": -1}, "invalid seed -1"),
    ({"generator_learning_rate": 0.0}, "invalid generator_learning_rate"),
    ({"tokens_per_step": 3}, "invalid tokens_per_step=3"),
    ({"generator_overrides": {"bits": 4}}, "cannot be overridden"),
    ({"generator_overrides": {"widht": 4}}, "unknown fields ['widht']"),
    ({"tokenizer_overrides": {"bits": 6}}, "invalid group_size"),
    ({"tokenizer_overrides": {"channels": 1}}, "scene images have 3 channels"),
    ({"device": "no-such-device"}, "invalid device"),
    ({"weights_dtype": "int8"}, "invalid weights_dtype 'int8'"),
    ({"generator_overrides": {"head_steps": 0}}, "invalid generator settings: need steps >= 1"),
    ({"generator_overrides": {"mlp_ratio": -1}}, "invalid generator settings"),
    ({"generator_overrides": {"width": "64"}}, "width is '64', expected an integer"),
    ({"tokenizer_overrides": {"hidden": [16.5, 32]}}, "expected a list of integers"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "no-such-device"}, "device"),
])
def test_config_rejects_invalid_settings(changes, message):
    with pytest.raises(ImageTrainError) as error:
        tiny_config(**changes).validate()

    assert message in str(error.value)


def test_generator_learning_rate_warms_up_then_decays():
    config = ImageTrainConfig(generator_steps=100, generator_warmup_steps=10, generator_learning_rate=1e-3)

    assert generator_learning_rate(1, config) == pytest.approx(1e-4)
    assert generator_learning_rate(10, config) == pytest.approx(1e-3)
    assert generator_learning_rate(55, config) == pytest.approx(0.55e-3)
    assert generator_learning_rate(100, config) == pytest.approx(1e-4)


# ---------------------------------------------------------------------- model folders and generation


def test_generate_returns_images_and_scenes(trained):
    model = load_model(trained[0])
    descriptions = ["blue square bottom-right", Scene("circle", "red", "top-left", "small")]

    images, scenes = model.generate(descriptions, seed=1)
    again, _ = model.generate(descriptions, seed=1)
    other, _ = model.generate(descriptions, seed=2)

    assert images.shape == (2, 32, 32, 3)
    assert images.dtype == np.uint8
    assert scenes == [Scene("square", "blue", "bottom-right", "large"), descriptions[1]]
    assert np.array_equal(images, again)
    assert not np.array_equal(images, other)


@pytest.mark.parametrize(("descriptions", "changes", "error", "message"), [
    ("red circle center", {}, TypeError, "expected a list of descriptions"),
    ([None], {}, TypeError, "expected descriptions as text or Scene"),
    (["red circle center"], {"guidance_scale": float("nan")}, ValueError, "invalid guidance_scale"),
    (["red circle center"], {"seed": -1}, ValueError, "invalid seed -1"),
])
def test_generate_rejects_bad_arguments(trained, descriptions, changes, error, message):
    with pytest.raises(error, match=message):
        load_model(trained[0]).generate(descriptions, **changes)


def test_load_unfinished_run_says_resume(tmp_path):
    folder = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        train_image_model(tiny_config(), folder, on_progress=InterruptAt("tokenizer", 2))

    with pytest.raises(ImageModelError, match="unfinished training run.*--resume"):
        load_model(folder)


def test_load_generator_config_that_cannot_build(model_copy):
    change_generator_config(model_copy, head_steps=0)

    with pytest.raises(ImageModelError, match="invalid generator config"):
        load_model(model_copy)


def test_generate_rejects_unknown_word(trained):
    model = load_model(trained[0])

    with pytest.raises(DescriptionError, match="unknown word 'squar'"):
        model.generate(["blue squar bottom-right"])


def test_save_png_enlarges_with_nearest_pixels(tmp_path):
    image = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)  # (2, 2, 3)

    path = save_png(image, tmp_path / "sub" / "image.png", scale=3)
    pixels = np.asarray(Image.open(path).convert("RGB"))

    assert pixels.shape == (6, 6, 3)
    assert np.array_equal(pixels, image.repeat(3, axis=0).repeat(3, axis=1))
    with pytest.raises(ValueError, match="invalid scale 0"):
        save_png(image, tmp_path / "zero.png", scale=0)
    with pytest.raises(ValueError, match="uint8 RGB image"):
        save_png(image.astype(np.float32), tmp_path / "float.png")


def test_load_missing_folder(tmp_path):
    with pytest.raises(ImageModelError, match="model folder .*missing not found"):
        load_model(tmp_path / "missing")


def test_load_missing_info_file(model_copy):
    (model_copy / INFO_FILE).unlink()

    with pytest.raises(ImageModelError, match="bitimage.json not found, so the model folder is incomplete"):
        load_model(model_copy)


def test_load_missing_generator_weights(model_copy):
    (model_copy / GENERATOR_FOLDER / WEIGHTS_FILE).unlink()

    with pytest.raises(ImageModelError, match="generator file .*model.safetensors not found"):
        load_model(model_copy)


@pytest.mark.parametrize("part", [GENERATOR_FOLDER, TOKENIZER_FOLDER])
def test_load_corrupt_weights(model_copy, part):
    (model_copy / part / WEIGHTS_FILE).write_bytes(b"not a safetensors file")

    with pytest.raises(ImageModelError, match=f"corrupt {part} weights"):
        load_model(model_copy)


def test_load_wrong_format_version(model_copy):
    info = json.loads((model_copy / INFO_FILE).read_text())
    (model_copy / INFO_FILE).write_text(json.dumps({**info, "version": MODEL_VERSION + 1}))

    with pytest.raises(ImageModelError, match=f"unsupported model format version {MODEL_VERSION + 1}"):
        load_model(model_copy)


def test_load_weights_not_matching_config(model_copy):
    change_generator_config(model_copy, width=32)

    with pytest.raises(ImageModelError, match="do not match the config"):
        load_model(model_copy)


def test_save_rejects_parts_that_do_not_fit(trained, tmp_path):
    model = load_model(trained[0])
    other_tokenizer = BinaryTokenizer(TokenizerConfig(hidden=(8, 16), bits=12, group_size=4))

    with pytest.raises(ImageModelError, match="generator bits 8 != tokenizer bits 12"):
        save_model(tmp_path / "model", other_tokenizer, model.generator)
    with pytest.raises(ImageModelError, match="generator bits 8 != tokenizer bits 12"):
        ImageModel(other_tokenizer, model.generator)
    assert not (tmp_path / "model").exists()


def test_bundled_checkpoint_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint, "BUNDLED_CHECKPOINT", tmp_path / "checkpoint")

    with pytest.raises(ImageModelError) as error:
        load_model()

    assert "no bundled bitimage checkpoint is installed" in str(error.value)
    assert "erlgym image train --out DIR" in str(error.value)


def test_save_model_round_trip(trained, tmp_path):
    model = load_model(trained[0])

    folder = save_model(tmp_path / "copy", model.tokenizer, model.generator, {"metrics": {"note": 1}})
    loaded = load_model(folder)

    assert weight_files(folder) == weight_files(trained[0])
    assert loaded.info["metrics"] == {"note": 1}
    assert isinstance(loaded.generator, BitGenerator)
    with pytest.raises(ValueError, match="info must not set"):
        save_model(tmp_path / "other", model.tokenizer, model.generator, {"version": 7})


# ---------------------------------------------------------------------- command line


def test_cli_sample_writes_png(trained, tmp_path):
    out = tmp_path / "image.png"

    status, stdout, _ = run_main(["image", "sample", "blue square bottom-right", "--model", str(trained[0]),
                                  "--out", str(out), "--scale", "3", "--seed", "5"])

    assert status == 0
    assert Image.open(out).size == (96, 96)
    assert "shape=square colour=blue position=bottom-right size=large" in stdout


def test_cli_sample_several_descriptions_to_folder(trained, tmp_path):
    out = tmp_path / "samples"

    status, stdout, _ = run_main(["image", "sample", "red circle top-left", "a small green cross in the middle",
                                  "--model", str(trained[0]), "--out", str(out)])

    assert status == 0
    assert sorted(path.name for path in out.iterdir()) == ["1-large-red-circle-top-left.png",
                                                           "2-small-green-cross-center.png"]
    assert Image.open(out / "1-large-red-circle-top-left.png").size == (128, 128)
    assert "shape=cross colour=green position=center size=small" in stdout


def test_cli_sample_png_out_for_several_descriptions(trained, tmp_path):
    status, _, stderr = run_main(["image", "sample", "red circle top-left", "blue square center",
                                  "--model", str(trained[0]), "--out", str(tmp_path / "image.png")])

    assert status == EXIT_USAGE
    assert "names one PNG file, but 2 descriptions were given" in stderr


@pytest.mark.parametrize("option", [["--guidance", "nan"], ["--guidance", "-1"], ["--seed", "99999999999999999999"]])
def test_cli_sample_rejects_bad_numbers(trained, tmp_path, option):
    with pytest.raises(SystemExit) as exit_info:
        run_main(["image", "sample", "red circle center", "--model", str(trained[0]), "--out",
                  str(tmp_path / "a.png"), *option])

    assert exit_info.value.code == EXIT_USAGE


def test_cli_sample_unwritable_out(trained, tmp_path):
    blocker = tmp_path / "file.png"
    blocker.write_bytes(b"keep")

    status, _, stderr = run_main(["image", "sample", "red circle center", "--model", str(trained[0]),
                                  "--out", str(blocker / "a.png")])

    assert status == EXIT_USAGE
    assert "cannot create the folder" in stderr
    assert blocker.read_bytes() == b"keep"


def test_cli_sample_unknown_word(trained, tmp_path):
    status, _, stderr = run_main(["image", "sample", "blue squar bottom-right", "--model", str(trained[0]),
                                  "--out", str(tmp_path / "image.png")])

    assert status == EXIT_USAGE
    assert "unknown word 'squar'" in stderr
    assert "shape: circle, square, triangle, cross" in stderr
    assert "colour: red, green, blue, yellow, purple, white" in stderr
    assert not (tmp_path / "image.png").exists()


def test_cli_sample_without_bundled_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint, "BUNDLED_CHECKPOINT", tmp_path / "checkpoint")

    status, _, stderr = run_main(["image", "sample", "blue square bottom-right", "--out", str(tmp_path / "a.png")])

    assert status == EXIT_USAGE
    assert "no bundled bitimage checkpoint is installed" in stderr


def test_cli_sample_missing_model_folder(tmp_path):
    status, _, stderr = run_main(["image", "sample", "blue square bottom-right", "--model", str(tmp_path / "none"),
                                  "--out", str(tmp_path / "a.png")])

    assert status == EXIT_USAGE
    assert f"model folder {tmp_path / 'none'} not found" in stderr


def test_cli_train_resume_and_reject(trained, tmp_path):
    out = tmp_path / "run"

    status, stdout, stderr = run_main(["image", "train", "--out", str(out), *tiny_options()])
    resumed_status, _, _ = run_main(["image", "train", "--resume", "--out", str(out)])
    again_status, _, again_stderr = run_main(["image", "train", "--out", str(out), *tiny_options()])

    assert status == 0
    assert "dB PSNR on 8 held-out scenes" in stdout
    assert f"Model folder: {out}" in stderr
    assert weight_files(out) == weight_files(trained[0])
    assert resumed_status == 0
    assert weight_files(out) == weight_files(trained[0])
    assert again_status == EXIT_USAGE
    assert "is not empty. Pass --resume" in again_stderr


def test_cli_train_resume_needs_out():
    status, _, stderr = run_main(["image", "train", "--resume"])

    assert status == EXIT_USAGE
    assert "--resume needs --out DIR" in stderr


def test_cli_train_interrupted_prints_resume_command(monkeypatch, tmp_path):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("erlgym.bitimage.pipeline.train_image_model", interrupt)
    out = tmp_path / "run"

    status, _, stderr = run_main(["image", "train", "--out", str(out)])

    assert status == 130
    assert f"erlgym image train --resume --out {out}" in stderr


def test_cli_train_help_lists_config_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["image", "train", "--help"])
    out = " ".join(capsys.readouterr().out.split())

    assert exit_info.value.code == 0
    assert "--tokenizer-steps" in out
    assert "Training steps of the tokenizer (stage 1). (default: 2000)" in out
    assert "--generator-overrides" in out
    assert "--resume" in out


def test_config_module_heads_match_generator():
    from erlgym.bitimage import config, generator

    assert config.HEADS == generator.HEADS


def test_cli_starts_without_torch():
    # Every erlgym command builds the image parser, so building it must not import torch.
    import subprocess
    import sys

    code = ("import sys; import erlgym.erl.cli as cli; cli.build_parser(); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
