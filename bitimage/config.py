"""Settings of ``erlgym image train``, in a module that does not import torch.

The ``erlgym`` command line builds its options from :class:`ImageTrainConfig` when it
starts, so keeping torch out of this module keeps every ``erlgym`` command from paying
for importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erlgym.bitimage.generator import GeneratorConfig
    from erlgym.bitimage.tokenizer import TokenizerConfig

HEADS = ("diffusion", "bernoulli")
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")
"""Dtypes that saved weight files may use."""
"""Generator output heads; equal to ``erlgym.bitimage.generator.HEADS``, which a test checks."""

MIN_LEARNING_RATE_FRACTION = 0.1
"""Generator learning rate at the last step, as a fraction of the peak rate."""

MAX_SEED = 2**32 - 1

GENERATOR_DERIVED_FIELDS = ("bits", "grid", "condition_sizes")
"""GeneratorConfig fields set from the tokenizer and the scenes, never by overrides."""
GENERATOR_OWN_FIELDS = ("tokens_per_step", "head")
"""GeneratorConfig fields that ImageTrainConfig sets with fields of the same name."""


TOKENIZER_FOLDER = "tokenizer"
"""Subfolder of a model folder that contains the tokenizer."""
TOKENIZER_CONFIG_FILE = "config.json"
TRAINING_FOLDER = "training"
"""Subfolder of a model folder with the training settings and states."""
REUSED_TOKENIZER_FOLDER = "tokenizer-from"
"""Folder in ``training/`` holding the copy of the tokenizer named by ``tokenizer_from``."""


class ImageTrainError(ValueError):
    """Invalid training settings, an output folder that cannot be used, or an unreadable training state.

    The message names the value or path and what to do next.
    """


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class ImageTrainConfig:
    """Settings of ``train_image_model``.

    Groups: stage lengths and batch (``tokenizer_steps``, ``generator_steps``,
    ``batch_size``), optimization (learning rates, warmup, clipping), the models
    (``tokens_per_step``, ``head``, ``tokenizer_from`` and the override dicts), evaluation
    (``eval_images``), and the run (``seed``, ``save_every``, ``out``, ``device``).

    The tokenizer defaults are the measured ones: 2,000 steps at batch 32 and learning
    rate 2e-3 reached 32.65 dB PSNR on 512 held-out scenes. The generator defaults are
    not tuned yet.
    """

    # Stages
    tokenizer_steps: int = field(default=2000, metadata=_help("Training steps of the tokenizer (stage 1)."))
    generator_steps: int = field(
        default=3000, metadata=_help("Training steps of the generator on frozen tokenizer codes (stage 2)."))
    batch_size: int = field(default=32, metadata=_help("Scenes per training step, in both stages."))

    # Optimization
    tokenizer_learning_rate: float = field(
        default=2e-3, metadata=_help("AdamW learning rate of the tokenizer, constant over the stage."))
    generator_learning_rate: float = field(
        default=1e-3, metadata=_help("Peak AdamW learning rate of the generator, reached after the warmup and "
                                     f"decayed on a cosine to {MIN_LEARNING_RATE_FRACTION:g} of it."))
    generator_warmup_steps: int = field(
        default=100, metadata=_help("Steps of linear learning-rate warmup at the start of the generator stage."))
    max_grad_norm: float = field(
        default=1.0, metadata=_help("Maximum L2 norm of the generator's gradient; larger gradients are scaled down."))

    # Models
    tokens_per_step: int = field(
        default=1, metadata=_help("Tokens the generator predicts per decoding step (k): a perfect square whose root "
                                  "divides the latent grid side. 1 is raster-order next-token prediction; 4 and 16 "
                                  "sample faster."))
    head: str = field(default="diffusion", metadata=_help("Output head of the generator.", choices=HEADS))
    tokenizer_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("TokenizerConfig fields to change, as JSON, e.g. '{\"hidden\": [16, 32], \"bits\": 8}'."))
    tokenizer_from: str | None = field(
        default=None,
        metadata=_help("Model folder whose trained tokenizer is reused, so that stage 1 is skipped and several "
                       "generators share one tokenizer. tokenizer_steps and tokenizer_learning_rate then do not "
                       "apply, and tokenizer_overrides must be empty."))
    generator_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("GeneratorConfig fields to change, as JSON, e.g. '{\"width\": 64, \"depth\": 2}'. bits, grid "
                       "and condition_sizes follow the tokenizer and the scenes."))

    weights_dtype: str = field(
        default="float32",
        metadata=_help("Dtype of the saved weight files; float16 halves them. Training always runs in float32.",
                       choices=WEIGHT_DTYPES))

    # Evaluation
    eval_images: int = field(
        default=512, metadata=_help("Held-out scenes on which the tokenizer's PSNR and bit usage are measured."))

    # Run
    seed: int = field(
        default=0, metadata=_help("Seed of the weights, the training scenes and the noise, from 0 to 2**32 - 1."))
    save_every: int = field(
        default=200, metadata=_help("Steps between saved training states; a resumed run repeats at most this many."))
    out: str | None = field(
        default=None, metadata=_help("Output folder, which becomes the model folder (default: runs/bitimage-<time>)."))
    device: str = field(default="cpu", metadata=_help("Torch device to train on, e.g. cpu or cuda."))

    def validate(self) -> ImageTrainConfig:
        """Raise ImageTrainError naming the first invalid field, build both model configs, and return self."""
        for name in ("tokenizer_steps", "generator_steps", "generator_warmup_steps"):
            if getattr(self, name) < 0:
                raise ImageTrainError(f"invalid {name} {getattr(self, name)}: expected 0 or more")
        for name in ("batch_size", "eval_images", "save_every"):
            if getattr(self, name) < 1:
                raise ImageTrainError(f"invalid {name} {getattr(self, name)}: expected 1 or more")
        for name in ("tokenizer_learning_rate", "generator_learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ImageTrainError(f"invalid {name} {value}: expected a positive number")
        if not 0 <= self.seed <= MAX_SEED:
            raise ImageTrainError(f"invalid seed {self.seed}: expected 0 to {MAX_SEED}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ImageTrainError(f"invalid weights_dtype {self.weights_dtype!r}: expected one of "
                                  f"{', '.join(WEIGHT_DTYPES)}")
        if self.head not in HEADS:
            raise ImageTrainError(f"invalid head {self.head!r}: expected one of {', '.join(HEADS)}")
        import torch

        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ImageTrainError(f"invalid device {self.device!r}: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ImageTrainError(f"device {self.device!r} is not available: this torch build or machine has no "
                                  f"CUDA device. Use --device cpu")
        tokenizer_config = self.tokenizer_config()
        generator_config = self.generator_config(tokenizer_config)
        _check_buildable(tokenizer_config, generator_config)
        return self

    def tokenizer_config(self) -> TokenizerConfig:
        """Return the config of the ``tokenizer_from`` tokenizer, else the default with ``tokenizer_overrides`` applied."""
        from erlgym.bitimage.tokenizer import TokenizerConfig

        if self.tokenizer_from is not None:
            return self._reused_tokenizer_config()

        overrides = _as_dict(self.tokenizer_overrides, "tokenizer_overrides")
        _check_value_types(overrides, TokenizerConfig(), "tokenizer_overrides")
        values = {**TokenizerConfig().to_dict(), **overrides}
        try:
            config = TokenizerConfig.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ImageTrainError(f"invalid tokenizer_overrides {self.tokenizer_overrides}: {error}") from error
        if config.channels != 3:
            raise ImageTrainError(f"invalid tokenizer_overrides: channels {config.channels}, but scene images have "
                                  f"3 channels")
        return config

    def _reused_tokenizer_config(self) -> TokenizerConfig:
        from erlgym.bitimage.tokenizer import TokenizerCheckpointError, read_tokenizer_config

        if self.tokenizer_overrides:
            raise ImageTrainError(f"tokenizer_overrides {self.tokenizer_overrides} cannot apply to the tokenizer "
                                  f"reused from {self.tokenizer_from}. Drop one of the two options")
        path = Path(self.tokenizer_from) / TOKENIZER_FOLDER / TOKENIZER_CONFIG_FILE
        # A started run reads its own copy, which outlives changes to the source folder.
        copy = Path(self.out or "") / TRAINING_FOLDER / REUSED_TOKENIZER_FOLDER / TOKENIZER_CONFIG_FILE
        if self.out and copy.is_file():
            path = copy
        elif not path.is_file():
            raise ImageTrainError(f"tokenizer_from {self.tokenizer_from}: {path} not found. Pass a model folder "
                                  f"written by erlgym image train")
        try:
            return read_tokenizer_config(path)
        except TokenizerCheckpointError as error:
            raise ImageTrainError(f"tokenizer_from {self.tokenizer_from}: {error}") from error

    def generator_config(self, tokenizer_config: TokenizerConfig) -> GeneratorConfig:
        """Return the GeneratorConfig for tokens of ``tokenizer_config``, with ``generator_overrides`` applied."""
        from erlgym.bitimage.checkpoint import SCENE_CONDITION_SIZES
        from erlgym.bitimage.generator import GeneratorConfig

        overrides = _as_dict(self.generator_overrides, "generator_overrides")
        reserved = sorted(set(overrides) & set(GENERATOR_DERIVED_FIELDS + GENERATOR_OWN_FIELDS))
        if reserved:
            raise ImageTrainError(
                f"invalid generator_overrides: {reserved} cannot be overridden. bits and grid follow the tokenizer, "
                f"condition_sizes the scene vocabularies, and tokens_per_step and head have their own options")
        side = tokenizer_config.latent_size
        values = {
            "bits": tokenizer_config.bits,
            "grid": (side, side),
            "condition_sizes": SCENE_CONDITION_SIZES,
            "tokens_per_step": self.tokens_per_step,
            "head": self.head,
            **overrides,
        }
        known = {spec.name for spec in dataclasses.fields(GeneratorConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ImageTrainError(f"invalid generator_overrides: unknown fields {unknown}. "
                                  f"Expected fields are {sorted(known - set(GENERATOR_DERIVED_FIELDS))}")
        _check_value_types(overrides, GeneratorConfig(), "generator_overrides")
        try:
            return GeneratorConfig(**values)
        except (TypeError, ValueError) as error:
            raise ImageTrainError(f"invalid generator settings: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageTrainConfig:
        """Build a config from ``to_dict`` output, rejecting unknown fields."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ImageTrainError(f"unknown training settings {unknown}. Expected fields are {sorted(known)}")
        return cls(**values)


RESUMABLE_FIELDS = ("save_every", "out", "device", "weights_dtype")
"""ImageTrainConfig fields that may change when a run is resumed, because the trained weights do not depend on them.

Resuming a finished run with another ``weights_dtype`` rewrites its model folder in that dtype."""


def _check_buildable(tokenizer_config: TokenizerConfig, generator_config: GeneratorConfig) -> None:
    """Build both models once on the meta device, so settings that only their modules check fail before training."""
    import torch

    from erlgym.bitimage.generator import BitGenerator
    from erlgym.bitimage.tokenizer import BinaryTokenizer

    for name, build in (("tokenizer", lambda: BinaryTokenizer(tokenizer_config)),
                        ("generator", lambda: BitGenerator(generator_config))):
        try:
            with torch.device("meta"):
                build()
        except (ValueError, TypeError, RuntimeError) as error:
            raise ImageTrainError(f"invalid {name} settings: {error}. Change {name}_overrides") from error


def _check_value_types(overrides: dict[str, Any], defaults: Any, name: str) -> None:
    """Raise ImageTrainError for an override whose JSON type differs from the default's (int, float, list or text)."""
    for field_name, value in overrides.items():
        default = getattr(defaults, field_name, None)
        if default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (tuple, list)) and all(
                isinstance(item, int) and not isinstance(item, bool) for item in value)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}
            kind = "a list of integers" if isinstance(default, (tuple, list)) else kinds[type(default)]
            raise ImageTrainError(f"invalid {name}: {field_name} is {value!r}, expected {kind} such as {default!r}")


def _as_dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ImageTrainError(f"invalid {name} {value!r}: expected a JSON object of field names and values")
    return value
