"""Reconstruction and code-usage metrics for binary tokenizers."""

from __future__ import annotations

import math
from typing import Any

import torch

from erlgym.bitimage.quantizer import bits_to_indices

MIN_MSE = 1e-10
"""Floor on the per-image mean squared error, so identical images score
10·log10(max_value² / 1e-10) dB (100 dB for max_value 1) and not infinity."""


def psnr(reference: torch.Tensor, reconstruction: torch.Tensor, max_value: float = 1.0) -> float:
    """Return the mean over images of the per-image PSNR, in dB.

    Both tensors have shape (B, C, H, W), or (C, H, W) for one image. The PSNR of an
    image is 10·log10(max_value² / MSE) with the MSE over all its values, floored at
    ``MIN_MSE``.
    """
    reference = torch.as_tensor(reference)
    reconstruction = torch.as_tensor(reconstruction)
    if reference.shape != reconstruction.shape:
        raise ValueError(
            f"reference and reconstruction shapes differ: {tuple(reference.shape)} and {tuple(reconstruction.shape)}"
        )
    if reference.dim() == 3:
        reference = reference.unsqueeze(0)
        reconstruction = reconstruction.unsqueeze(0)
    if reference.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W) or (C, H, W), got {tuple(reference.shape)}")

    error = (reference.double() - reconstruction.double()).pow(2)  # (B, C, H, W)
    mse = error.flatten(start_dim=1).mean(dim=1).clamp_min(MIN_MSE)  # (B,)
    per_image = 10 * torch.log10(max_value**2 / mse)  # (B,)
    return per_image.mean().item()


def _binary_entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of Bernoulli(p), elementwise, with 0·log 0 = 0."""
    return (torch.special.entr(p) + torch.special.entr(1 - p)) / math.log(2)


def bit_usage(codes: torch.Tensor, group_size: int = 4) -> dict[str, Any]:
    """Measure how evenly ±1 codes (..., bits) use each bit and each group's codes.

    Every leading position is one token. Returns a dict of:

    - ``plus_fraction``: list of the fraction of +1 for each bit.
    - ``bit_entropy_bits``: mean over bits of the binary entropy of that fraction, in
      bits. 1.0 means every bit is +1 half of the time, and 0.0 that every bit is constant.
    - ``code_usage``: list, for each group of ``group_size`` bits, of the fraction of its
      2^group_size codes that occur at least once.
    - ``code_perplexity``: list, for each group, of exp(entropy) of its empirical code
      distribution, between 1 and 2^group_size.
    - ``mean_code_usage`` and ``mean_code_perplexity``: their means over groups.

    Each group's codes are numbered by ``bits_to_indices``.
    """
    codes = torch.as_tensor(codes)
    bits = codes.shape[-1]
    if group_size < 1 or bits % group_size != 0:
        raise ValueError(f"invalid group size {group_size}: expected a divisor of the code length {bits}")
    tokens = codes.reshape(-1, bits)  # (N, bits)
    if tokens.shape[0] == 0:
        raise ValueError("expected at least one token, got an empty codes tensor")

    plus_fraction = (tokens > 0).double().mean(dim=0)  # (bits,)
    bit_entropy = _binary_entropy_bits(plus_fraction).mean().item()

    groups = bits // group_size
    code_count = 2**group_size
    indices = bits_to_indices(tokens.reshape(-1, groups, group_size))  # (N, groups)
    code_usage = []
    code_perplexity = []
    for group in range(groups):
        counts = torch.bincount(indices[:, group], minlength=code_count).double()  # (2^g,)
        frequencies = counts / counts.sum()
        entropy = torch.special.entr(frequencies).sum().item()
        code_usage.append((counts > 0).double().mean().item())
        code_perplexity.append(math.exp(entropy))

    return {
        "plus_fraction": plus_fraction.tolist(),
        "bit_entropy_bits": bit_entropy,
        "code_usage": code_usage,
        "code_perplexity": code_perplexity,
        "mean_code_usage": sum(code_usage) / groups,
        "mean_code_perplexity": sum(code_perplexity) / groups,
    }
