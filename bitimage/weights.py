"""Reading and writing the safetensors weight file of a bitimage model part.

The tokenizer, the generator and the verifier each store ``model.safetensors`` next to a
``config.json``. These helpers write the weights, and load them back with errors that
name the file and, for weights that do not fit, the config they were checked against.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from erlgym.bitimage.config import WEIGHT_DTYPES


def save_weights(model: nn.Module, path: Path, format_name: str, dtype: str = "float32") -> None:
    """Write the CPU copy of ``model``'s state dict to ``path``, with ``format_name`` in the file's metadata.

    Floating-point tensors are stored in ``dtype``, one of ``WEIGHT_DTYPES``. float16
    halves the file and rounds each weight to 11 significant bits, a relative change of
    at most 2^-11 (about 0.05%) for weights within float16's normal range. Loading
    casts the tensors back to the model's dtype.
    """
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"invalid weight dtype {dtype!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    target = getattr(torch, dtype)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        state[name] = (tensor.to(target) if tensor.is_floating_point() else tensor).contiguous()
    save_file(state, path, metadata={"format": format_name})
    # safetensors creates the file with mode 0600; give it the mode that open() gives other files.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_weights(model: nn.Module, path: Path, config_path: Path, part: str, error_type: type[Exception]) -> None:
    """Load the weights in ``path`` into ``model``, which was built from the config in ``config_path``.

    Raises:
        error_type: "corrupt <part> weights <path>" for an unreadable file, and
            "<part> weights <path> do not match the config in <config_path>" for missing,
            unexpected or differently shaped tensors.
    """
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise error_type(f"corrupt {part} weights {path}: {error}") from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise error_type(f"{part} weights {path} do not match the config in {config_path}: {error}") from error
