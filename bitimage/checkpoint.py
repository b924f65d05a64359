"""Model folders that hold a trained tokenizer and generator, and image generation from them.

A model folder contains::

    bitimage.json                  format, version, creation time, package version,
                                   training settings, step counts and metrics
    tokenizer/model.safetensors    the BinaryTokenizer, as ``save_tokenizer`` writes it
    tokenizer/config.json
    generator/model.safetensors    the BitGenerator weights
    generator/config.json          its GeneratorConfig as JSON

``save_model`` writes ``bitimage.json`` last, so a folder without it is incomplete.
``load_model`` reads a folder into an :class:`ImageModel`, and ``load_model(None)``
reads the checkpoint bundled with the package in ``erlgym/bitimage/checkpoint/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from erlgym.bitimage.config import TOKENIZER_FOLDER, TRAINING_FOLDER
from erlgym.bitimage.generator import BitGenerator, GeneratorConfig
from erlgym.bitimage.scenes import ATTRIBUTES, VOCABULARIES, Scene, parse_description
from erlgym.bitimage.tokenizer import (
    BinaryTokenizer,
    TokenizerCheckpointError,
    TokenizerConfig,
    load_tokenizer,
    save_tokenizer,
)
from erlgym.bitimage.weights import load_weights, save_weights
from PIL import Image

MODEL_FORMAT = "erlgym.bitimage"
MODEL_VERSION = 1
INFO_FILE = "bitimage.json"
GENERATOR_FOLDER = "generator"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GENERATOR_FORMAT = "erlgym.bitimage.generator"
GENERATOR_VERSION = 1

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoint"
"""Model folder that ``load_model(None)`` reads, inside the installed package."""

TRAIN_COMMAND = "erlgym image train --out DIR"

SCENE_CONDITION_SIZES = tuple(len(VOCABULARIES[attribute]) for attribute in ATTRIBUTES)
"""Vocabulary size of each scene attribute, the ``condition_sizes`` a generator of scenes needs."""


class ImageModelError(ValueError):
    """A model folder that is missing, incomplete, corrupt, of another format version, or inconsistent.

    The message names the folder or file and what to do next.
    """


# ---------------------------------------------------------------------- generator files


def generator_config_to_dict(config: GeneratorConfig) -> dict[str, Any]:
    """Return ``config`` as a JSON-compatible dict, with tuples as lists."""
    values = dataclasses.asdict(config)
    values["grid"] = list(config.grid)
    values["condition_sizes"] = list(config.condition_sizes)
    return values


def generator_config_from_dict(values: dict[str, Any]) -> GeneratorConfig:
    """Build a GeneratorConfig from ``generator_config_to_dict`` output, rejecting unknown fields."""
    known = {spec.name for spec in dataclasses.fields(GeneratorConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown generator config fields {unknown}. Expected fields are {sorted(known)}")
    return GeneratorConfig(**values)


def save_generator(model: BitGenerator, folder: str | Path, weights_dtype: str = "float32") -> Path:
    """Write ``model.safetensors`` (in ``weights_dtype``) and ``config.json`` into ``folder``, and return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS_FILE, GENERATOR_FORMAT, weights_dtype)
    document = {"format": GENERATOR_FORMAT, "version": GENERATOR_VERSION,
                "config": generator_config_to_dict(model.config)}
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return folder


def _read_generator_config(path: Path) -> GeneratorConfig:
    document = _read_json(path, "generator config")
    if document.get("format") != GENERATOR_FORMAT:
        raise ImageModelError(f"invalid generator config {path}: expected a JSON object with format "
                              f"{GENERATOR_FORMAT!r}, got format {document.get('format')!r}")
    if document.get("version") != GENERATOR_VERSION:
        raise ImageModelError(f"unsupported generator config version {document.get('version')!r} in {path}: "
                              f"expected {GENERATOR_VERSION}. Retrain the model with: {TRAIN_COMMAND}")
    try:
        return generator_config_from_dict(document["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ImageModelError(f"invalid generator config in {path}: {error}") from error


def load_generator(folder: str | Path, device: str | torch.device = "cpu") -> BitGenerator:
    """Load a generator written by ``save_generator`` and return it in eval mode.

    Raises:
        ImageModelError: a file is missing or corrupt, or the weights do not fit the config.
    """
    folder = Path(folder)
    _require_files(folder, (CONFIG_FILE, WEIGHTS_FILE), "generator")
    config = _read_generator_config(folder / CONFIG_FILE)
    try:
        model = BitGenerator(config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ImageModelError(f"invalid generator config in {folder / CONFIG_FILE}: {error}") from error
    load_weights(model, folder / WEIGHTS_FILE, folder / CONFIG_FILE, "generator", ImageModelError)
    return model.to(device).eval()


# ---------------------------------------------------------------------- model folders


def check_compatible(tokenizer_config: TokenizerConfig, generator_config: GeneratorConfig) -> None:
    """Raise ImageModelError unless the generator produces the tokens the tokenizer decodes, for scene conditions.

    The generator's ``bits`` must equal the
    tokenizer's, its ``grid`` must be the tokenizer's latent grid, and its
    ``condition_sizes`` must be the scene vocabulary sizes ``SCENE_CONDITION_SIZES``.
    """
    problems = []
    if generator_config.bits != tokenizer_config.bits:
        problems.append(f"generator bits {generator_config.bits} != tokenizer bits {tokenizer_config.bits}")
    latent_grid = (tokenizer_config.latent_size, tokenizer_config.latent_size)
    if tuple(generator_config.grid) != latent_grid:
        problems.append(f"generator grid {tuple(generator_config.grid)} != tokenizer latent grid {latent_grid}")
    if tuple(generator_config.condition_sizes) != SCENE_CONDITION_SIZES:
        problems.append(f"generator condition_sizes {tuple(generator_config.condition_sizes)} != scene "
                        f"vocabulary sizes {SCENE_CONDITION_SIZES} ({', '.join(ATTRIBUTES)})")
    if problems:
        raise ImageModelError("the tokenizer and generator do not fit together: " + "; ".join(problems))


def package_version() -> str:
    """Return the installed erlgym version, or "unknown" when the package metadata is missing."""
    try:
        return version("erlgym")
    except PackageNotFoundError:
        return "unknown"


def save_model(folder: str | Path, tokenizer: BinaryTokenizer, generator: BitGenerator,
               info: dict[str, Any] | None = None, weights_dtype: str = "float32") -> Path:
    """Write a model folder with both parts and ``bitimage.json``, and return the folder.

    The weight files store floating-point tensors in ``weights_dtype`` ("float32",
    "float16" or "bfloat16"); ``load_model`` casts them back to float32.

    ``info`` contains the JSON-compatible entries to store in ``bitimage.json``, such as
    ``training`` (the settings), ``steps`` (per stage) and ``metrics``. ``save_model``
    adds ``format``, ``version``, ``created`` (UTC, ISO 8601) and ``package_version``.
    Files of an earlier model in ``folder`` are overwritten. The old ``bitimage.json``
    is deleted first and the new one written last, so a folder whose writing was
    interrupted fails to load instead of mixing two models.

    Raises:
        ImageModelError: the tokenizer and generator do not fit together.
        ValueError: ``info`` sets one of the keys that ``save_model`` adds.
    """
    check_compatible(tokenizer.config, generator.config)
    info = dict(info or {})
    reserved = sorted({"format", "version", "created", "package_version"} & set(info))
    if reserved:
        raise ValueError(f"info must not set {reserved}: save_model writes them")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFO_FILE).unlink(missing_ok=True)
    save_tokenizer(tokenizer, folder / TOKENIZER_FOLDER, weights_dtype)
    save_generator(generator, folder / GENERATOR_FOLDER, weights_dtype)

    document = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "package_version": package_version(),
        **info,
    }
    write_text_atomic(folder / INFO_FILE, json.dumps(document, indent=2) + "\n")
    return folder


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it to ``path``.

    A reader sees the old file or the new one, never a partial file.
    """
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ImageModelError(f"corrupt {what} {path}: {error}") from error
    if not isinstance(document, dict):
        raise ImageModelError(f"invalid {what} {path}: expected a JSON object")
    return document


def _require_files(folder: Path, names: Sequence[str], what: str) -> None:
    for name in names:
        if not (folder / name).is_file():
            raise ImageModelError(f"{what} file {folder / name} not found, so the model folder is incomplete. "
                                  f"Train the model again with: {TRAIN_COMMAND}")


def read_model_info(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``bitimage.json`` of a model folder and return its contents.

    Raises:
        ImageModelError: the file is missing or corrupt, or its format or version is not this one.
    """
    folder = Path(folder)
    _require_files(folder, (INFO_FILE,), "model info")
    path = folder / INFO_FILE
    info = _read_json(path, "model info")
    if info.get("format") != MODEL_FORMAT:
        raise ImageModelError(f"invalid model info {path}: expected format {MODEL_FORMAT!r}, "
                              f"got {info.get('format')!r}. Pass a folder written by erlgym image train")
    if info.get("version") != MODEL_VERSION:
        raise ImageModelError(f"unsupported model format version {info.get('version')!r} in {path}: this erlgym "
                              f"reads version {MODEL_VERSION}. Retrain the model with: {TRAIN_COMMAND}")
    return info


def load_model(folder: str | Path | None = None, device: str | torch.device = "cpu") -> ImageModel:
    """Load a model folder written by ``save_model``, or the bundled checkpoint when ``folder`` is None.

    Both parts are returned in eval mode on ``device``.

    Raises:
        ImageModelError: the folder does not exist (for None: no bundled checkpoint is
            installed), a file is missing or corrupt, the format version is not this
            one, or the parts do not fit together. The message names the next step.
    """
    if folder is None:
        folder = BUNDLED_CHECKPOINT
        if not folder.is_dir():
            raise ImageModelError(f"no bundled bitimage checkpoint is installed (expected {folder}). "
                                  f"Train a model with: {TRAIN_COMMAND}, then pass --model DIR "
                                  f"(or load_model(DIR)) to use it")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ImageModelError(f"model folder {folder} is a file. Pass a folder written by: {TRAIN_COMMAND}")
    if not folder.is_dir():
        raise ImageModelError(f"model folder {folder} not found. Pass a folder written by: {TRAIN_COMMAND}")
    if not (folder / INFO_FILE).is_file() and (folder / TRAINING_FOLDER / "config.json").is_file():
        raise ImageModelError(f"{folder} contains an unfinished training run, not a model. Finish it with: "
                              f"erlgym image train --resume --out {folder}")

    info = read_model_info(folder)
    try:
        tokenizer = load_tokenizer(folder / TOKENIZER_FOLDER, device=device)
    except FileNotFoundError as error:
        raise ImageModelError(f"{error}. The model folder {folder} is incomplete: train the model again with: "
                              f"{TRAIN_COMMAND}") from error
    except TokenizerCheckpointError as error:
        raise ImageModelError(str(error)) from error
    generator = load_generator(folder / GENERATOR_FOLDER, device=device)
    check_compatible(tokenizer.config, generator.config)
    return ImageModel(tokenizer, generator, info, folder)


# ---------------------------------------------------------------------- generation


class ImageModel:
    """A tokenizer and a generator that fit together, with the model folder's ``bitimage.json`` as ``info``.

    :meth:`generate` turns scene descriptions into images: the generator samples a token
    grid per description and the tokenizer decodes it.
    """

    def __init__(self, tokenizer: BinaryTokenizer, generator: BitGenerator, info: dict[str, Any] | None = None,
                 folder: Path | None = None):
        check_compatible(tokenizer.config, generator.config)
        self.tokenizer = tokenizer
        self.generator = generator
        self.info = info or {}
        self.folder = folder

    @property
    def device(self) -> torch.device:
        return self.generator.start_queries.device

    @torch.no_grad()
    def generate(self, descriptions: Sequence[str | Scene], guidance_scale: float = 2.0,
                 seed: int = 0) -> tuple[np.ndarray, list[Scene]]:
        """Generate one image per description and return the images with the scenes they were conditioned on.

        Each description is a Scene or a text that ``parse_description`` reads, such as
        ``"blue square bottom-right"``. ``guidance_scale`` is the classifier-free guidance
        scale s of ``BitGenerator.sample``, where 0 is plain conditional sampling. All
        images are sampled in one batch from one torch generator seeded with ``seed``.
        The same descriptions in the same order with the same seed therefore give the
        same images on one device. An image can change when other descriptions are added.

        Returns:
            images: uint8 array (B, H, W, 3).
            scenes: the parsed scene of each description.

        Raises:
            DescriptionError: a description has an unknown word or lacks an attribute.
            TypeError: ``descriptions`` is one text instead of a list, or an item is neither text nor Scene.
            ValueError: no descriptions, a non-finite ``guidance_scale`` or a negative ``seed``.
        """
        if isinstance(descriptions, (str, Scene)):
            raise TypeError(f"expected a list of descriptions, got the single {type(descriptions).__name__} "
                            f"{descriptions!r}: pass [{descriptions!r}]")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"invalid guidance_scale {guidance_scale}: expected a finite number such as 2.0")
        if seed < 0:
            raise ValueError(f"invalid seed {seed}: expected 0 or more")
        scenes = []
        for item in descriptions:
            if not isinstance(item, (str, Scene)):
                raise TypeError(f"expected descriptions as text or Scene, got {type(item).__name__} {item!r}")
            scenes.append(item if isinstance(item, Scene) else parse_description(item))
        if not scenes:
            raise ValueError("expected at least one description")
        device = self.device
        conditions = torch.tensor([scene.attribute_ids() for scene in scenes], dtype=torch.long,
                                  device=device)  # (B, 4)
        generator = torch.Generator(device=device).manual_seed(seed)
        self.generator.eval()
        self.tokenizer.eval()
        grid_bits = self.generator.sample(conditions, guidance_scale, generator)  # (B, h, w, bits)
        images = self.tokenizer.decode(grid_bits)  # (B, 3, H, W) in [0, 1]
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # (B, H, W, 3)
        return pixels.cpu().numpy(), scenes


def save_png(image: np.ndarray, path: str | Path, scale: int = 4) -> Path:
    """Write one uint8 RGB image (H, W, 3) as a PNG enlarged ``scale`` times, and return the path.

    Enlarging uses nearest-neighbour interpolation, so every pixel becomes a
    ``scale``×``scale`` square and no colours are blended. Missing parent folders are created.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got dtype {image.dtype} "
                         f"and shape {image.shape}")
    if scale < 1:
        raise ValueError(f"invalid scale {scale}: expected an integer of 1 or more")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2]
    picture = Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    picture.save(path, format="PNG")
    return path
