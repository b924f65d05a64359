"""A scene classifier that judges generated images: conditional accuracy and a Fréchet distance in its features.

The verifier is a small convolutional network trained on rendered scenes to predict the
four attributes of the one shape in an image (shape, colour, position, size). It plays the
role Inception plays for FID: a fixed judge, trained once and shared by every generator it
compares. Two measures come from it:

- **Conditional accuracy**: generate images for given scenes and count how often the
  verifier reads back each attribute, and all four at once.
- **Fréchet distance** between the verifier's penultimate features of generated images
  and of rendered ones, d² = |μ₁ − μ₂|² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) (Heusel et al., 2017,
  arXiv 1706.08500), with the verifier in place of Inception. Two independent sets of
  rendered images do not reach 0, so reports include that floor.

Generated images are blurrier and noisier than renders. The verifier therefore trains on
renders (with the renderer's position and brightness jitter) degraded by Gaussian noise
and a random blur, so that a correct but imperfect image still reads as its scene.

A verifier folder contains ``model.safetensors`` and ``config.json``. ``load_verifier(None)``
reads the verifier bundled with the package in ``erlgym/bitimage/verifier-checkpoint/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from erlgym.bitimage.scenes import ATTRIBUTES, VOCABULARIES, Scene, all_scenes, render, scene_batch
from erlgym.bitimage.weights import load_weights, save_weights

if TYPE_CHECKING:
    from erlgym.bitimage.checkpoint import ImageModel

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "erlgym.bitimage.verifier"
CHECKPOINT_VERSION = 1

BUNDLED_VERIFIER = Path(__file__).resolve().parent / "verifier-checkpoint"
"""Verifier folder that ``load_verifier(None)`` reads, inside the installed package."""

TRAIN_COMMAND = "erlgym image train-verifier --out DIR"

# Random streams of the verifier's data, as the last word of the numpy seed tuple.
TRAIN_STREAM = 11
"""Training step i renders scene_batch(batch_size, seed=(seed, i, TRAIN_STREAM))."""
HELD_OUT_STREAM = 12
"""Seed word of the held-out renders that evaluations compare against."""
REFERENCE_STREAM = 13
"""Seed word of the second, independent set of renders that gives the Fréchet floor."""


class VerifierError(ValueError):
    """A verifier folder that is missing, incomplete or corrupt, or invalid verifier settings.

    The message names the folder, file or value and what to do next.
    """


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class VerifierConfig:
    """Architecture of :class:`SceneVerifier` and the degradation it trains with."""

    image_size: int = field(default=32, metadata=_help("Side of the square input images in pixels."))
    hidden: tuple[int, ...] = field(
        default=(32, 64, 64),
        metadata=_help("Channels of the convolution stages; each stage after the first halves the side."))
    features: int = field(default=128, metadata=_help("Width of the feature layer used for the Fréchet distance."))
    max_noise_std: float = field(
        default=0.1, metadata=_help("Training images get Gaussian noise with a std drawn from [0, max_noise_std]."))
    blur_probability: float = field(
        default=0.5, metadata=_help("Probability that a training image is blurred with a 3x3 box filter."))

    def __post_init__(self) -> None:
        self.hidden = tuple(int(channels) for channels in self.hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise VerifierError(f"invalid hidden {self.hidden}: expected one or more positive channel counts")
        if self.features < 1:
            raise VerifierError(f"invalid features {self.features}: expected 1 or more")
        reduction = 2 ** (len(self.hidden) - 1)
        if self.image_size < 8 or self.image_size % reduction:
            raise VerifierError(f"invalid image_size {self.image_size}: expected 8 or more, divisible by "
                                f"{reduction} for {len(self.hidden)} stages")
        if not 0 <= self.max_noise_std <= 1 or not 0 <= self.blur_probability <= 1:
            raise VerifierError(f"invalid degradation max_noise_std={self.max_noise_std}, "
                                f"blur_probability={self.blur_probability}: expected values from 0 to 1")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden"] = list(self.hidden)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VerifierConfig:
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise VerifierError(f"unknown verifier settings {unknown}. Expected fields are {sorted(known)}")
        return cls(**values)


@dataclass
class VerifierOutput:
    logits: dict[str, torch.Tensor]
    """Per attribute, (B, vocabulary size) logits."""
    features: torch.Tensor
    """(B, features), the penultimate activations."""


class SceneVerifier(nn.Module):
    """Convolutions, then a feature layer, then one linear classifier per scene attribute.

    Input: float images (B, 3, H, W) in [0, 1]. The convolutions keep a spatial map, and
    the feature layer takes all of it as input, so position is as readable as shape and colour.
    """

    def __init__(self, config: VerifierConfig | None = None):
        super().__init__()
        self.config = config = config or VerifierConfig()
        layers: list[nn.Module] = []
        channels = 3
        for index, width in enumerate(config.hidden):
            stride = 1 if index == 0 else 2
            layers += [nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1), nn.GELU()]
            channels = width
        self.convolutions = nn.Sequential(*layers)
        side = config.image_size // 2 ** (len(config.hidden) - 1)
        self.feature_layer = nn.Linear(channels * side * side, config.features)
        self.classifiers = nn.ModuleDict(
            {attribute: nn.Linear(config.features, len(VOCABULARIES[attribute])) for attribute in ATTRIBUTES})

    def forward(self, images: torch.Tensor) -> VerifierOutput:
        expected = (3, self.config.image_size, self.config.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}")
        maps = self.convolutions(images * 2 - 1)  # (B, C, side, side)
        features = F.gelu(self.feature_layer(maps.flatten(start_dim=1)))  # (B, features)
        logits = {attribute: classifier(features) for attribute, classifier in self.classifiers.items()}
        return VerifierOutput(logits=logits, features=features)

    def loss(self, images: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
        """Sum over attributes of the cross-entropy; ``attribute_ids`` is (B, 4) in ``ATTRIBUTES`` order."""
        logits = self(images).logits
        return sum(F.cross_entropy(logits[attribute], attribute_ids[:, index])
                   for index, attribute in enumerate(ATTRIBUTES))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the predicted attribute ids (B, 4) and the features (B, features), computed in batches on CPU."""
        self.eval()
        device = next(self.parameters()).device
        predictions, features = [], []
        for start in range(0, images.shape[0], batch_size):
            output = self(images[start:start + batch_size].to(device))
            predictions.append(torch.stack([output.logits[attribute].argmax(dim=1) for attribute in ATTRIBUTES],
                                           dim=1).cpu())
            features.append(output.features.cpu())
        return torch.cat(predictions), torch.cat(features)


def degrade(images: torch.Tensor, config: VerifierConfig, generator: torch.Generator) -> torch.Tensor:
    """Blur some images with a 3x3 box filter and add Gaussian noise to all, clamped to [0, 1].

    Each image is blurred with probability ``config.blur_probability`` and gets noise with
    a std drawn uniformly from [0, ``config.max_noise_std``]. All draws come from ``generator``.
    """
    batch = images.shape[0]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)
    blur = (torch.rand(batch, 1, 1, 1, generator=generator) < config.blur_probability).to(images.dtype)
    images = blur * blurred + (1 - blur) * images
    noise_std = torch.rand(batch, 1, 1, 1, generator=generator) * config.max_noise_std
    noise = torch.randn(images.shape, generator=generator) * noise_std
    return (images + noise).clamp(0, 1)


# ---------------------------------------------------------------------- training

StepCallback = Callable[[int, int, dict[str, float]], None]


def train_verifier(config: VerifierConfig | None = None, steps: int = 1500, batch_size: int = 64, seed: int = 0,
                   learning_rate: float = 2e-3, on_step: StepCallback | None = None) -> SceneVerifier:
    """Train a SceneVerifier on degraded renders with AdamW and a cosine learning rate, and return it in eval mode.

    Step i trains on ``scene_batch(batch_size, seed=(seed, i, TRAIN_STREAM))`` degraded
    with a torch generator seeded from (seed, i), so the same arguments give the same
    weights on one device with the same thread count. ``on_step(step, steps, metrics)``
    is called after each update with the float ``loss`` and ``learning_rate``.
    """
    config = config or VerifierConfig()
    if steps < 1 or batch_size < 1:
        raise VerifierError(f"invalid steps {steps} or batch_size {batch_size}: expected 1 or more")
    if not math.isfinite(learning_rate) or learning_rate <= 0:
        raise VerifierError(f"invalid learning_rate {learning_rate}: expected a positive number")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SceneVerifier(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)

    started = time.perf_counter()
    for step in range(1, steps + 1):
        rate = learning_rate * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        for group in optimizer.param_groups:
            group["lr"] = rate
        images, attribute_ids = scene_batch(batch_size, seed=(seed, step, TRAIN_STREAM), size=config.image_size)
        noise = torch.Generator().manual_seed(int(np.random.SeedSequence((seed, step)).generate_state(1)[0]))
        loss = model.loss(degrade(images, config, noise), attribute_ids)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, steps, {"loss": loss.item(), "learning_rate": rate})
    logger.info("trained verifier in %.1f s", time.perf_counter() - started)
    return model.eval()


# ---------------------------------------------------------------------- saving and loading


def save_verifier(model: SceneVerifier, folder: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (config plus ``info``) into ``folder`` and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS_FILE, CHECKPOINT_FORMAT)
    document = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": model.config.to_dict(),
                "info": info or {}}
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return folder


def load_verifier(folder: str | Path | None = None, device: str | torch.device = "cpu") -> SceneVerifier:
    """Load a verifier folder written by ``save_verifier``, or the bundled verifier when ``folder`` is None.

    Returns the model in eval mode with the stored ``info`` as ``model.info``.

    Raises:
        VerifierError: the folder or a file is missing or corrupt, or the weights do not fit the config.
    """
    if folder is None:
        folder = BUNDLED_VERIFIER
        if not folder.is_dir():
            raise VerifierError(f"no bundled verifier is installed (expected {folder}). Train one with: "
                                f"{TRAIN_COMMAND}, then pass --verifier DIR")
    folder = Path(folder)
    if not folder.is_dir():
        raise VerifierError(f"verifier folder {folder} not found. Pass a folder written by: {TRAIN_COMMAND}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise VerifierError(f"verifier file {folder / name} not found, so the folder is incomplete. "
                                f"Train the verifier again with: {TRAIN_COMMAND}")
    path = folder / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VerifierError(f"corrupt verifier config {path}: {error}") from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise VerifierError(f"invalid verifier config {path}: expected a JSON object with format "
                            f"{CHECKPOINT_FORMAT!r}. Pass a folder written by: {TRAIN_COMMAND}")
    if document.get("version") != CHECKPOINT_VERSION:
        raise VerifierError(f"unsupported verifier config version {document.get('version')!r} in {path}: "
                            f"this erlgym reads version {CHECKPOINT_VERSION}")
    try:
        config = VerifierConfig.from_dict(document["config"])
    except (KeyError, TypeError) as error:
        raise VerifierError(f"invalid verifier config in {path}: {error}") from error
    model = SceneVerifier(config)
    load_weights(model, folder / WEIGHTS_FILE, path, "verifier", VerifierError)
    model.info = document.get("info", {})
    return model.to(device).eval()


# ---------------------------------------------------------------------- measures


def images_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Convert uint8 images (B, H, W, 3), as ``ImageModel.generate`` returns them, to float (B, 3, H, W) in [0, 1]."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
        raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got dtype {pixels.dtype} "
                         f"and shape {pixels.shape}")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0


def attribute_accuracy(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Return the fraction of images whose predicted id equals the target, per attribute and for all four ("all")."""
    if predicted.shape != target.shape or predicted.dim() != 2 or predicted.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"expected two (B, {len(ATTRIBUTES)}) id tensors, got {tuple(predicted.shape)} "
                         f"and {tuple(target.shape)}")
    correct = predicted == target  # (B, 4)
    accuracy = {attribute: correct[:, index].float().mean().item() for index, attribute in enumerate(ATTRIBUTES)}
    accuracy["all"] = correct.all(dim=1).float().mean().item()
    return accuracy


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Return the Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D).

    d² = |μ_a − μ_b|² + Tr(Σ_a) + Tr(Σ_b) − 2 Tr((Σ_a Σ_b)^½). The trace of the matrix
    square root is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix Σ_a^½ Σ_b Σ_a^½, which has the same eigenvalues as Σ_a Σ_b.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two feature sets (N, D) and (M, D) with N, M >= 2, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    covariance_a, covariance_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance_a)
    root_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T  # Σ_a^½
    cross = np.linalg.eigvalsh(root_a @ covariance_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_root
    return float(max(distance, 0.0))


def balanced_scenes(count: int) -> list[Scene]:
    """Return ``count`` scenes cycling through all 240 attribute combinations in order."""
    scenes = all_scenes()
    return [scenes[index % len(scenes)] for index in range(count)]


def render_scenes(scenes: Sequence[Scene], seed: int | Sequence[int], size: int = 32) -> torch.Tensor:
    """Render ``scenes`` with the renderer's jitter drawn from ``seed``, as float (B, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    return images_to_tensor(np.stack([render(scene, size, rng) for scene in scenes]))


@torch.no_grad()
def evaluate_verifier(verifier: SceneVerifier, count: int = 1024, seed: int = 0) -> dict[str, Any]:
    """Measure the verifier on held-out renders, clean and degraded as in training.

    Also returns ``frechet_floor``, the distance between the features of two independent
    sets of ``count`` renders: the value a perfect generator would score.
    """
    images, attribute_ids = scene_batch(count, seed=(seed, 0, HELD_OUT_STREAM), size=verifier.config.image_size)
    predicted, features = verifier.predict(images)
    noise = torch.Generator().manual_seed(seed)
    degraded, _ = verifier.predict(degrade(images, verifier.config, noise))
    reference, _ = scene_batch(count, seed=(seed, 0, REFERENCE_STREAM), size=verifier.config.image_size)
    _, reference_features = verifier.predict(reference)
    return {
        "images": count,
        "accuracy": attribute_accuracy(predicted, attribute_ids),
        "degraded_accuracy": attribute_accuracy(degraded, attribute_ids),
        "frechet_floor": frechet_distance(features, reference_features),
    }


@torch.no_grad()
def evaluate_generation(model: ImageModel, verifier: SceneVerifier, count: int = 480, guidance_scale: float = 2.0,
                        seed: int = 0, batch_size: int = 240,
                        on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Judge ``count`` generated images with ``verifier``, against renders and the tokenizer's reconstructions.

    The generated images condition on ``balanced_scenes(count)``, in batches of
    ``batch_size`` seeded with ``seed + batch index``. Returns:

    - ``generated``: conditional ``accuracy`` and ``frechet_distance`` to ``count`` held-out
      renders of the same scenes, and ``seconds`` of generation;
    - ``reconstructed``: the same measures for the tokenizer's reconstructions of the
      renders, the best a generator on this tokenizer can reach;
    - ``rendered``: the verifier's accuracy on the renders and the Fréchet floor between
      two independent render sets.

    ``on_batch(done, count)`` is called after each generated batch.
    """
    if count < 2:
        raise ValueError(f"invalid count {count}: expected 2 or more images")
    size = verifier.config.image_size
    if model.tokenizer.config.image_size != size:
        raise VerifierError(f"the model makes {model.tokenizer.config.image_size}-pixel images, but the verifier "
                            f"reads {size}-pixel images")
    scenes = balanced_scenes(count)
    target = torch.tensor([scene.attribute_ids() for scene in scenes], dtype=torch.long)  # (count, 4)

    started = time.perf_counter()
    generated = []
    for index, start in enumerate(range(0, count, batch_size)):
        pixels, _ = model.generate(scenes[start:start + batch_size], guidance_scale=guidance_scale, seed=seed + index)
        generated.append(images_to_tensor(pixels))
        if on_batch is not None:
            on_batch(min(start + batch_size, count), count)
    seconds = time.perf_counter() - started
    generated_predicted, generated_features = verifier.predict(torch.cat(generated))

    # Renders of the same scenes, with independent jitter, are the reference sets.
    rendered = render_scenes(scenes, (seed, 0, HELD_OUT_STREAM), size)
    rendered_predicted, rendered_features = verifier.predict(rendered)
    _, reference_features = verifier.predict(render_scenes(scenes, (seed, 0, REFERENCE_STREAM), size))
    device = model.device
    reconstructions = []
    for start in range(0, count, batch_size):
        codes = model.tokenizer.encode(rendered[start:start + batch_size].to(device))
        reconstructions.append(model.tokenizer.decode(codes).clamp(0, 1).cpu())
    # Round to 8 bits as generated images are, so both sets go through the same quantization.
    reconstructed = (torch.cat(reconstructions) * 255).round() / 255
    reconstructed_predicted, reconstructed_features = verifier.predict(reconstructed)

    return {
        "images": count,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "generated": {
            "accuracy": attribute_accuracy(generated_predicted, target),
            "frechet_distance": frechet_distance(generated_features, rendered_features),
            "seconds": round(seconds, 3),
        },
        "reconstructed": {
            "accuracy": attribute_accuracy(reconstructed_predicted, target),
            "frechet_distance": frechet_distance(reconstructed_features, reference_features),
        },
        "rendered": {
            "accuracy": attribute_accuracy(rendered_predicted, target),
            "frechet_floor": frechet_distance(rendered_features, reference_features),
        },
    }
