"""Lookup-free binary quantization (LFQ) with a grouped entropy loss.

Each latent channel is binarized independently with ``sign``, so a latent vector of
``bits`` channels becomes one of 2^bits binary codes without a codebook lookup. The
method is lookup-free quantization from MAGVIT-v2 (Yu et al., "Language Model Beats
Diffusion: Tokenizer Is Key to Visual Generation", arXiv 2310.05737), as used by the
BitDance binary tokenizer (arXiv 2602.14041, code at github.com/shallowdream204/BitDance,
``imagenet_gen/src/gfq.py``).

Losses, for a latent z and its code q = sign(z):

- Commitment loss: mean of (z − sg[q])², where sg is stop-gradient. It pulls z toward
  ±1 so that binarization loses little.
- Entropy loss (MAGVIT-v2): E[H(p(c | z))] − H(E[p(c | z)]). The bits are split
  into groups of g bits, and each group has 2^g codes c ∈ {−1, +1}^g. The soft
  assignment of a group z_g is p(c | z_g) = softmax_c(−‖z_g − c‖² / τ), which equals
  softmax_c(2 z_g·c / τ) because ‖c‖² = g for every code. The first term, the
  per-sample entropy, is low when each position is confidently one code. The second,
  the batch entropy of the mean assignment, is high when all codes are used. Both are
  in nats, lie in [0, g·ln 2], and are averaged over groups. BitDance's ``gfq.py``
  also averages the assignment over groups before it takes the batch entropy. Here
  each group gets its own batch entropy, so every group is pushed to use all its codes.

The codes are exact ±1 values carrying the straight-through gradient of z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TEMPERATURE = 0.1
"""Default τ of the soft code assignment.

With logits 2 z·c / τ the assignment factorizes per bit as p(bit = +1) = sigmoid(4 z / τ).
BitDance's ``gfq.py`` uses τ = 0.01, where the assignment is one-hot unless |z| < 0.01.
In 1,000-step ``train_tokenizer`` runs (hidden=(16, 32), batch 16, seed 0, commitment
and entropy weights 0.01), τ = 0.1 reached 28.1 dB PSNR on 256 held-out scenes and
τ = 0.01 reached 27.5 dB, both with every group code in use. At 500 steps with weights
0.02, τ = 1 reached 22.7 dB and τ = 0.1 25.6 dB. Single runs, so the gaps are rough.
"""

_MIN_PROBABILITY = 1e-12
"""Floor inside log p, so that codes with probability 0 give a finite gradient."""


@dataclass
class QuantizerOutput:
    """The result of ``BinaryQuantizer.forward``.

    ``codes`` has the input's shape and contains exactly ±1, with the gradient of z
    (straight-through). The losses and entropies are scalar tensors. ``loss`` is
    ``commitment_weight · commitment_loss + entropy_weight · entropy_loss``, and the
    other fields are unweighted. Entropies are in nats.
    """

    codes: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    entropy_loss: torch.Tensor
    per_sample_entropy: torch.Tensor
    batch_entropy: torch.Tensor


def binarize(z: torch.Tensor) -> torch.Tensor:
    """Return sign(z) as ±1 in z's dtype, with sign(0) = +1 and no gradient."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
    """Convert ±1 codes (..., g) to code indices (...,) in [0, 2^g).

    The first bit is the most significant, and +1 counts as a set bit, so
    ``(-1, -1, +1)`` is index 1 and ``(+1, -1, -1)`` is index 4.
    """
    group_size = bits.shape[-1]
    weights = 2 ** torch.arange(group_size - 1, -1, -1, device=bits.device)  # (g,)
    return ((bits > 0).long() * weights).sum(dim=-1)


def indices_to_bits(indices: torch.Tensor, group_size: int) -> torch.Tensor:
    """Convert code indices (...,) to float ±1 codes (..., group_size), the inverse of ``bits_to_indices``."""
    if group_size < 1:
        raise ValueError(f"invalid group size {group_size}: expected 1 or more")
    indices = torch.as_tensor(indices)
    shifts = torch.arange(group_size - 1, -1, -1, device=indices.device)  # (g,)
    set_bits = (indices.long().unsqueeze(-1) >> shifts) & 1  # (..., g)
    return set_bits.float() * 2 - 1


def group_entropies(
    z: torch.Tensor, group_size: int, temperature: float = DEFAULT_TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the per-sample and batch entropy of the soft code assignment, in nats.

    ``z`` is a channels-last tensor (N, bits) of latent vectors, with ``bits`` a
    multiple of ``group_size``. The module docstring gives the formulas.

    Returns:
        per_sample_entropy: mean over positions and groups of H(p(c | z_g)).
        batch_entropy: mean over groups of H(mean over positions of p(c | z_g)).
    """
    count, bits = z.shape
    groups = bits // group_size
    codebook = indices_to_bits(torch.arange(2**group_size, device=z.device), group_size).to(z.dtype)  # (K, g)

    z_groups = z.reshape(count, groups, group_size)  # (N, G, g)
    logits = 2 * (z_groups @ codebook.T) / temperature  # (N, G, K)
    log_probs = F.log_softmax(logits, dim=-1)  # (N, G, K)
    probs = log_probs.exp()

    per_sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    mean_probs = probs.mean(dim=0)  # (G, K)
    batch_entropy = -(mean_probs * mean_probs.clamp_min(_MIN_PROBABILITY).log()).sum(dim=-1).mean()
    return per_sample_entropy, batch_entropy


class BinaryQuantizer(nn.Module):
    """Sign quantizer for latents (B, bits, h, w) with commitment and grouped entropy losses.

    Args:
        bits: latent channels, one bit each.
        group_size: bits per entropy group, which has 2^group_size codes. The entropy
            loss averages over bits / group_size groups, so ``bits`` must be a multiple
            of it. BitDance's ``gfq.py`` splits its bits into groups in the same way,
            since an entropy over all 2^bits codes needs a softmax over 2^bits entries.
        commitment_weight: weight of the commitment loss in ``loss``.
        entropy_weight: weight of the entropy loss in ``loss``.
        temperature: τ of the soft assignment, explained at ``DEFAULT_TEMPERATURE``.

    The default weights are those of ``TokenizerConfig``, which explains them.
    """

    def __init__(
        self,
        bits: int,
        group_size: int = 4,
        commitment_weight: float = 0.02,
        entropy_weight: float = 0.02,
        temperature: float = DEFAULT_TEMPERATURE,
    ):
        super().__init__()
        if bits < 1:
            raise ValueError(f"invalid bits {bits}: expected 1 or more")
        if group_size < 1 or bits % group_size != 0:
            raise ValueError(f"invalid group size {group_size}: expected a divisor of bits ({bits})")
        if temperature <= 0:
            raise ValueError(f"invalid temperature {temperature}: expected a positive number")
        self.bits = bits
        self.group_size = group_size
        self.commitment_weight = commitment_weight
        self.entropy_weight = entropy_weight
        self.temperature = temperature

    @property
    def groups(self) -> int:
        return self.bits // self.group_size

    @property
    def max_entropy(self) -> float:
        """Upper bound of both entropy terms, ln 2^group_size nats."""
        return self.group_size * math.log(2)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Binarize ``z`` (B, bits, h, w) and compute the quantizer losses."""
        if z.dim() != 4 or z.shape[1] != self.bits:
            raise ValueError(f"expected latents of shape (B, {self.bits}, h, w), got {tuple(z.shape)}")

        # Straight-through estimator: the value is exactly sign(z), the gradient is identity.
        # Written as q + (z - sg[z]) instead of z + sg[q - z] so rounding cannot move it off ±1.
        hard = binarize(z)  # (B, bits, h, w)
        codes = hard + (z - z.detach())

        commitment_loss = F.mse_loss(z, hard)

        z_vectors = z.permute(0, 2, 3, 1).reshape(-1, self.bits)  # (B·h·w, bits)
        per_sample_entropy, batch_entropy = group_entropies(z_vectors, self.group_size, self.temperature)
        entropy_loss = per_sample_entropy - batch_entropy

        loss = self.commitment_weight * commitment_loss + self.entropy_weight * entropy_loss
        return QuantizerOutput(
            codes=codes,
            loss=loss,
            commitment_loss=commitment_loss,
            entropy_loss=entropy_loss,
            per_sample_entropy=per_sample_entropy,
            batch_entropy=batch_entropy,
        )

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, group_size={self.group_size}, commitment_weight={self.commitment_weight}, "
            f"entropy_weight={self.entropy_weight}, temperature={self.temperature}"
        )
