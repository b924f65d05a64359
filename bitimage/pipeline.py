"""Train the whole bitimage model, tokenizer then generator, into a model folder, with resumable stages.

Stages:

1. Tokenizer. AdamW on ``scene_batch`` images at a constant learning rate, the same
   loop as :func:`~erlgym.bitimage.tokenizer.train_tokenizer`: with equal settings the
   weights are equal. With ``tokenizer_from`` the stage is skipped and the tokenizer of
   that model folder is copied into ``training/tokenizer-from/`` and used instead.
2. Generator. The tokenizer is frozen. Every step renders a fresh batch of scenes,
   encodes it into ±1 token grids under ``no_grad``, and trains the
   :class:`~erlgym.bitimage.generator.BitGenerator` on (grid, attribute ids) with AdamW,
   a linear warmup, a cosine decay to ``MIN_LEARNING_RATE_FRACTION`` of the peak rate,
   and gradient-norm clipping.
3. Evaluation. The tokenizer's PSNR and bit usage on held-out scenes are stored in
   ``bitimage.json``. The generator's conditional accuracy is measured by
   ``erlgym image evaluate`` with the separate verifier (:mod:`erlgym.bitimage.verifier`).

The output folder becomes a model folder (:mod:`erlgym.bitimage.checkpoint`) plus a
``training/`` folder with the settings (``config.json``) and one state file per stage
(weights, optimizer state, step). A stage saves its state every ``save_every`` steps
and at its end, writing a temporary file and renaming it, so a killed run loses at most
``save_every`` steps and never leaves a half-written state. ``resume=True`` continues
from the saved steps.

Determinism: the random draws of step i depend only on the seed and i, never on earlier
steps, so a resumed run gives the same weights as an uninterrupted one. Equality holds
on one device with the same torch version and thread count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from erlgym.bitimage.checkpoint import (
    TOKENIZER_FOLDER,
    check_compatible,
    save_model,
    write_text_atomic,
)
from erlgym.bitimage.config import (  # noqa: F401  (re-exported: the training settings live in a torch-free module)
    GENERATOR_DERIVED_FIELDS,
    GENERATOR_OWN_FIELDS,
    MAX_SEED,
    MIN_LEARNING_RATE_FRACTION,
    RESUMABLE_FIELDS,
    REUSED_TOKENIZER_FOLDER,
    TRAINING_FOLDER,
    ImageTrainConfig,
    ImageTrainError,
)
from erlgym.bitimage.generator import BitGenerator, GeneratorConfig
from erlgym.bitimage.metrics import bit_usage, psnr
from erlgym.bitimage.scenes import scene_batch
from erlgym.bitimage.tokenizer import (
    BinaryTokenizer,
    TokenizerCheckpointError,
    TokenizerConfig,
    load_tokenizer,
    save_tokenizer,
)

logger = logging.getLogger(__name__)

TRAINING_CONFIG_FILE = "config.json"
STAGES = ("tokenizer", "generator")
STATE_FILES = {stage: f"{stage}.pt" for stage in STAGES}

LOSS_WINDOW = 50
"""Steps whose mean loss is stored as a stage's final loss."""


# Random streams. numpy's SeedSequence pads entropy shorter than four 32-bit words with
# zeros, so (s, 2) and (s, 2, 0) give the same stream. Every tuple below therefore
# differs from the others in a nonzero word, for any step >= 1 and seed < 2**32.
GENERATOR_DATA_STREAM = 1
"""Generator step i trains on scene_batch(seed=(seed, i, 1)).

Tokenizer step i uses (seed, i), as train_tokenizer does."""
HELD_OUT_STREAM = 2
"""The held-out evaluation scenes are scene_batch(seed=(seed, 0, 2))."""
GENERATOR_TORCH_STREAM = 3
"""Generator step i seeds torch's global generator from (seed, i, 3) for condition dropout and diffusion noise."""

@dataclass
class TrainProgress:
    """One progress report of ``train_image_model``.

    ``stage`` is "tokenizer", "generator" or "evaluate". A report with empty ``metrics``
    marks the start of a stage, and ``step`` is then the step it resumes after (0 for a
    fresh stage). Later reports come after each step, with the float ``metrics`` of that
    step: ``loss`` and others in the training stages, ``tokenizer_psnr_db`` for "evaluate".
    """

    stage: str
    step: int
    total_steps: int
    metrics: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[TrainProgress], None]


# ---------------------------------------------------------------------- entry point


def default_output_folder() -> Path:
    """Return ``runs/bitimage-<YYYYmmdd-HHMMSS>`` for the current local time."""
    return Path("runs") / f"bitimage-{time.strftime('%Y%m%d-%H%M%S')}"


def train_image_model(config: ImageTrainConfig | None = None, out: str | Path | None = None, resume: bool = False,
                      on_progress: ProgressCallback | None = None) -> Path:
    """Train the tokenizer and then the generator, write the model folder, and return its path.

    The folder is ``out``, else ``config.out``, else ``default_output_folder()``. A new
    run requires the folder to be missing or empty. With ``resume=True`` the folder must
    contain the ``training/`` state of an earlier run. The run then continues after the
    last saved step with the saved settings. When ``config`` is given, it must equal the
    saved settings except for the ``RESUMABLE_FIELDS`` (save_every, out, device, weights_dtype), which
    it sets. ``on_progress`` gets a :class:`TrainProgress` at the start of every stage
    and after every step. An exception it raises, such as KeyboardInterrupt, stops the
    run after the state of the last ``save_every`` boundary was saved.

    Raises:
        ImageTrainError: invalid settings, a non-empty folder without ``resume``, a
            missing or unreadable state with ``resume``, or settings that differ from
            the saved ones.
    """
    if out is not None:
        folder = Path(out)
    elif config is not None and config.out:
        folder = Path(config.out)
    else:
        folder = default_output_folder()
    training_folder = folder / TRAINING_FOLDER
    if resume:
        config = _resumed_config(folder, config)
        # The resumable fields may have changed; a later plain --resume keeps the new values.
        write_text_atomic(training_folder / TRAINING_CONFIG_FILE, json.dumps(_stored_settings(config), indent=2) + "\n")
    else:
        config = (config or ImageTrainConfig()).validate()
        _check_new_output(folder)
        training_folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(training_folder / TRAINING_CONFIG_FILE, json.dumps(_stored_settings(config), indent=2) + "\n")
    config = dataclasses.replace(config, out=str(folder))

    tokenizer_config = config.tokenizer_config()
    generator_config = config.generator_config(tokenizer_config)
    check_compatible(tokenizer_config, generator_config)
    device = torch.device(config.device)
    logger.info("training bitimage model in %s: %s", folder, config)

    if config.tokenizer_from is not None:
        tokenizer = _reused_tokenizer(config, tokenizer_config, device, training_folder)
        tokenizer_stage = StageResult(final_loss=math.nan, seconds=0.0)
    else:
        tokenizer, tokenizer_stage = _train_tokenizer(config, tokenizer_config, device, training_folder, on_progress)
    generator, generator_stage = _train_generator(config, generator_config, tokenizer, device, training_folder,
                                                  on_progress)

    if on_progress is not None:
        on_progress(TrainProgress("evaluate", 0, 1))
    metrics = evaluate_tokenizer(tokenizer, config.eval_images, config.seed, config.batch_size)
    # NaN, the loss of a stage without steps, is not valid JSON, so it is stored as null.
    metrics["tokenizer_loss"] = None if math.isnan(tokenizer_stage.final_loss) else tokenizer_stage.final_loss
    metrics["generator_loss"] = None if math.isnan(generator_stage.final_loss) else generator_stage.final_loss
    if on_progress is not None:
        on_progress(TrainProgress("evaluate", 1, 1, {"tokenizer_psnr_db": metrics["tokenizer_psnr_db"]}))

    info = {
        "training": _stored_settings(config),
        "steps": {"tokenizer": 0 if config.tokenizer_from is not None else config.tokenizer_steps,
                  "generator": config.generator_steps},
        "train_seconds": {"tokenizer": round(tokenizer_stage.seconds, 1),
                          "generator": round(generator_stage.seconds, 1)},
        "device": str(device),
        "torch_version": torch.__version__,
        "metrics": metrics,
    }
    save_model(folder, tokenizer, generator, info, weights_dtype=config.weights_dtype)
    logger.info("wrote bitimage model to %s: %s", folder, metrics)
    return folder


def _stored_settings(config: ImageTrainConfig) -> dict[str, Any]:
    """Return the settings to store, without ``out``, which is the folder they are stored in."""
    values = config.to_dict()
    values.pop("out")
    return values


def read_training_config(folder: str | Path) -> ImageTrainConfig:
    """Read the settings saved in ``folder/training/config.json`` by an earlier ``train_image_model`` run.

    Raises:
        ImageTrainError: the file is missing, corrupt or invalid.
    """
    path = Path(folder) / TRAINING_FOLDER / TRAINING_CONFIG_FILE
    if not path.is_file():
        raise ImageTrainError(f"no training state to resume in {folder}: {path} not found. "
                              f"Start a new run without --resume, or pass the folder of an earlier run")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ImageTrainError(f"corrupt training settings {path}: {error}") from error
    if not isinstance(values, dict):
        raise ImageTrainError(f"invalid training settings {path}: expected a JSON object")
    try:
        return ImageTrainConfig.from_dict({**values, "out": str(folder)}).validate()
    except TypeError as error:
        raise ImageTrainError(f"invalid training settings {path}: {error}") from error


def _resumed_config(folder: Path, config: ImageTrainConfig | None) -> ImageTrainConfig:
    saved = read_training_config(folder)
    if config is None:
        return saved
    config.validate()
    saved_values, given_values = saved.to_dict(), config.to_dict()
    differences = {name: (saved_values[name], given_values[name]) for name in saved_values
                   if name not in RESUMABLE_FIELDS and saved_values[name] != given_values[name]}
    if differences:
        listed = "; ".join(f"{name}: saved {old!r}, given {new!r}" for name, (old, new) in differences.items())
        raise ImageTrainError(f"the settings differ from those of the run in {folder} ({listed}). Resume with the "
                              f"saved settings, or start a new run in another folder")
    changes = {name: given_values[name] for name in RESUMABLE_FIELDS}
    return dataclasses.replace(saved, **changes)


def _check_new_output(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ImageTrainError(f"output folder {folder} is a file. Pass a new folder with --out")
    if folder.is_dir() and any(folder.iterdir()):
        raise ImageTrainError(f"output folder {folder} is not empty. Pass --resume to continue the run in it, "
                              f"or pass a new folder with --out")


# ---------------------------------------------------------------------- stages


@dataclass
class StageResult:
    """Summary of a finished stage."""

    final_loss: float
    """Mean loss over the last ``LOSS_WINDOW`` steps, NaN for a stage of 0 steps."""
    seconds: float
    """Training time, summed over the runs that resumed the stage."""


def _fork_rng(device: torch.device):
    """Return a context that restores torch's global random state of the CPU and of ``device`` on exit."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _stream_seed(seed: int, step: int, stream: int) -> int:
    """Return a 64-bit seed for ``torch.manual_seed`` that depends only on (seed, step, stream)."""
    return int(np.random.SeedSequence((seed, step, stream)).generate_state(1, dtype=np.uint64)[0])


def _train_tokenizer(config: ImageTrainConfig, tokenizer_config: TokenizerConfig, device: torch.device,
                     training_folder: Path,
                     on_progress: ProgressCallback | None) -> tuple[BinaryTokenizer, StageResult]:
    # The weights start from the seed as in train_tokenizer, without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = BinaryTokenizer(tokenizer_config)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.tokenizer_learning_rate)

    def train_step(step: int) -> dict[str, float]:
        images, _ = scene_batch(config.batch_size, seed=(config.seed, step), size=tokenizer_config.image_size)
        output = model(images.to(device))

        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        return {
            "loss": output.loss.item(),
            "reconstruction_loss": output.reconstruction_loss.item(),
            "batch_entropy": output.batch_entropy.item(),
        }

    result = _run_stage("tokenizer", config.tokenizer_steps, model, optimizer, train_step, config.save_every,
                        training_folder, device, on_progress)
    return model.eval(), result


def _reused_tokenizer(config: ImageTrainConfig, tokenizer_config: TokenizerConfig, device: torch.device,
                      training_folder: Path) -> BinaryTokenizer:
    """Return the tokenizer of ``config.tokenizer_from``, copied into the training folder on the first run.

    A resumed run reads the copy, so the generator keeps training on the same codes even
    if the source folder has changed since.
    """
    copy = training_folder / REUSED_TOKENIZER_FOLDER
    if not copy.is_dir():
        source = Path(config.tokenizer_from) / TOKENIZER_FOLDER
        try:
            tokenizer = load_tokenizer(source, device=device, expected_config=tokenizer_config)
        except (FileNotFoundError, TokenizerCheckpointError) as error:
            raise ImageTrainError(f"cannot reuse the tokenizer of {config.tokenizer_from}: {error}") from error
        temporary = training_folder / (REUSED_TOKENIZER_FOLDER + ".tmp")
        save_tokenizer(tokenizer, temporary)
        os.replace(temporary, copy)
        return tokenizer
    try:
        return load_tokenizer(copy, device=device, expected_config=tokenizer_config)
    except (FileNotFoundError, TokenizerCheckpointError) as error:
        raise ImageTrainError(f"cannot read the copied tokenizer {copy}: {error}. Delete the folder to copy it "
                              f"again from {config.tokenizer_from}") from error


def generator_learning_rate(step: int, config: ImageTrainConfig) -> float:
    """Return the generator's learning rate at ``step`` (from 1): linear warmup, then cosine decay."""
    peak = config.generator_learning_rate
    warmup = config.generator_warmup_steps
    if step <= warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, config.generator_steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * (MIN_LEARNING_RATE_FRACTION + (1 - MIN_LEARNING_RATE_FRACTION) * cosine)


def _train_generator(config: ImageTrainConfig, generator_config: GeneratorConfig, tokenizer: BinaryTokenizer,
                     device: torch.device, training_folder: Path,
                     on_progress: ProgressCallback | None) -> tuple[BitGenerator, StageResult]:
    tokenizer.eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = BitGenerator(generator_config)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.generator_learning_rate)
    image_size = tokenizer.config.image_size

    def train_step(step: int) -> dict[str, float]:
        # Training data: fresh scenes, encoded by the frozen tokenizer.
        images, conditions = scene_batch(config.batch_size, seed=(config.seed, step, GENERATOR_DATA_STREAM),
                                         size=image_size)
        with torch.no_grad():
            grid_bits = tokenizer.encode(images.to(device))  # (B, h, w, bits) in {-1, +1}

        learning_rate = generator_learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate

        # Condition dropout and the diffusion head's noise draw from torch's global generator,
        # which is seeded per step so that the step does not depend on earlier ones.
        with _fork_rng(device):
            torch.manual_seed(_stream_seed(config.seed, step, GENERATOR_TORCH_STREAM))
            loss = model.loss(grid_bits, conditions.to(device))

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "learning_rate": learning_rate}

    result = _run_stage("generator", config.generator_steps, model, optimizer, train_step, config.save_every,
                        training_folder, device, on_progress)
    return model.eval(), result


def _run_stage(stage: str, total_steps: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               train_step: Callable[[int], dict[str, float]], save_every: int, training_folder: Path,
               device: torch.device, on_progress: ProgressCallback | None) -> StageResult:
    """Run ``train_step`` for the steps after the saved one, saving the state every ``save_every`` steps and at the end.

    Progress is reported after the step's state is saved, so when ``on_progress`` raises
    after step s, the state of the last save boundary up to s is already on disk.
    """
    path = training_folder / STATE_FILES[stage]
    start_step, recent_losses, seconds = 0, [], 0.0
    if path.is_file():
        start_step, recent_losses, seconds = _load_state(path, model, optimizer, device, total_steps)
        logger.info("%s stage: resuming after step %d of %d", stage, start_step, total_steps)
    if on_progress is not None:
        on_progress(TrainProgress(stage, start_step, total_steps))

    started = time.perf_counter()
    for step in range(start_step + 1, total_steps + 1):
        metrics = train_step(step)
        recent_losses = (recent_losses + [metrics["loss"]])[-LOSS_WINDOW:]
        if step % save_every == 0 or step == total_steps:
            _save_state(path, model, optimizer, step, recent_losses, seconds + time.perf_counter() - started)
            logger.info("%s stage: saved step %d of %d, loss %.4f", stage, step, total_steps, metrics["loss"])
        if on_progress is not None:
            on_progress(TrainProgress(stage, step, total_steps, metrics))

    if not path.is_file():  # a stage of 0 steps
        _save_state(path, model, optimizer, total_steps, recent_losses, seconds)
    elapsed = seconds + time.perf_counter() - started
    final_loss = sum(recent_losses) / len(recent_losses) if recent_losses else math.nan
    return StageResult(final_loss=final_loss, seconds=elapsed)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                recent_losses: list[float], seconds: float) -> None:
    """Write the stage state to a temporary file, then rename it over ``path``."""
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "recent_losses": list(recent_losses), "seconds": seconds}
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                total_steps: int) -> tuple[int, list[float], float]:
    """Load a state written by ``_save_state`` into ``model`` and ``optimizer``; return step, recent losses, seconds."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    except (RuntimeError, OSError, KeyError, TypeError, ValueError, EOFError) as error:
        raise ImageTrainError(f"cannot read training state {path}: {error}. Delete the file to restart this stage "
                              f"from step 0") from error
    if not 0 <= step <= total_steps:
        raise ImageTrainError(f"training state {path} is at step {step}, outside 0 to {total_steps}")
    return step, [float(loss) for loss in state.get("recent_losses", [])], float(state.get("seconds", 0.0))


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_tokenizer(tokenizer: BinaryTokenizer, count: int, seed: int, batch_size: int = 64) -> dict[str, Any]:
    """Measure reconstruction and code usage of ``tokenizer`` on ``count`` held-out scenes.

    The scenes are ``scene_batch(count, seed=(seed, 0, HELD_OUT_STREAM))``, a stream no
    training step draws from. Returns ``tokenizer_psnr_db`` (mean per-image PSNR),
    ``mean_image_psnr_db`` (the PSNR of predicting every image by the mean of the held-out
    images, a baseline), ``bit_entropy_bits``, ``code_usage`` (per group),
    ``mean_code_usage``, ``mean_code_perplexity`` and ``held_out_images``.
    """
    if count < 1:
        raise ValueError(f"invalid count {count}: expected 1 or more")
    device = next(tokenizer.parameters()).device
    tokenizer.eval()
    images, _ = scene_batch(count, seed=(seed, 0, HELD_OUT_STREAM), size=tokenizer.config.image_size)
    reconstructions, codes = [], []
    for start in range(0, count, batch_size):
        batch_codes = tokenizer.encode(images[start:start + batch_size].to(device))  # (b, h, w, bits)
        reconstructions.append(tokenizer.decode(batch_codes).cpu())  # (b, 3, H, W)
        codes.append(batch_codes.cpu())
    reconstruction = torch.cat(reconstructions)
    usage = bit_usage(torch.cat(codes), group_size=tokenizer.config.group_size)
    mean_image = images.mean(dim=0, keepdim=True).expand_as(images)
    return {
        "tokenizer_psnr_db": psnr(images, reconstruction),
        "mean_image_psnr_db": psnr(images, mean_image),
        "bit_entropy_bits": usage["bit_entropy_bits"],
        "code_usage": usage["code_usage"],
        "mean_code_usage": usage["mean_code_usage"],
        "mean_code_perplexity": usage["mean_code_perplexity"],
        "held_out_images": count,
    }
