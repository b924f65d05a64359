"""Next-patch decoding order over a token grid, and the block-causal attention mask that goes with it.

A generator that predicts k = ``tokens_per_step`` tokens per step groups the h×w token
grid into √k×√k patches. The decoding order visits the patches in raster order (row
by row, left to right) and the tokens inside a patch in raster order, so the k tokens
decoded together are spatial neighbours. For k = 1 the order is plain raster order.

Grids have the layout (B, h, w, d) and sequences (B, N, d) with N = h·w, where d is
any feature size (the bits of a token, or a hidden width).
"""

from __future__ import annotations

import math

import torch


def valid_tokens_per_step(height: int, width: int) -> list[int]:
    """Return the patch sizes k that tile a height×width grid: k = s² for every s that divides both sides."""
    return [side * side for side in range(1, min(height, width) + 1) if height % side == 0 and width % side == 0]


def patch_order(height: int, width: int, tokens_per_step: int) -> torch.Tensor:
    """Return the raster indices of a height×width grid in next-patch decoding order, a LongTensor (height·width,).

    ``order[i]`` is the raster index (row·width + column) of the i-th token decoded.
    Tokens are grouped in √k×√k patches for k = ``tokens_per_step``, patches follow
    raster order, and tokens within a patch follow raster order. For a 4×4 grid and
    k = 4 the order is 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15.

    Raises:
        ValueError: if a side is not positive, or k is not a perfect square whose
            root divides both sides. The message lists the valid values of k.
    """
    if height < 1 or width < 1:
        raise ValueError(f"grid sides must be positive; got height={height}, width={width}")
    valid = valid_tokens_per_step(height, width)
    if tokens_per_step not in valid:
        raise ValueError(
            f"invalid tokens_per_step={tokens_per_step} for a {height}x{width} grid: it must be a perfect square "
            f"whose root divides both sides. Valid values: {', '.join(map(str, valid))}.")

    side = math.isqrt(tokens_per_step)
    raster = torch.arange(height * width).view(height // side, side, width // side, side)
    # (patch row, row in patch, patch column, column in patch) -> patches first, then tokens inside a patch
    return raster.permute(0, 2, 1, 3).reshape(-1)


def _check_order(order: torch.Tensor, num_tokens: int) -> None:
    if order.dim() != 1 or order.numel() != num_tokens:
        raise ValueError(f"order must be a 1-D permutation of {num_tokens} grid indices; "
                         f"got shape {tuple(order.shape)}")


def to_sequence(grid: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Flatten a grid (B, h, w, d) into a sequence (B, N, d) whose i-th entry is grid cell ``order[i]``."""
    if grid.dim() != 4:
        raise ValueError(f"grid must have shape (B, h, w, d); got shape {tuple(grid.shape)}")
    batch, height, width, features = grid.shape
    _check_order(order, height * width)
    return grid.reshape(batch, height * width, features)[:, order.to(grid.device)]  # (B, N, d)


def to_grid(sequence: torch.Tensor, order: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Place a sequence (B, N, d) in decoding order back on its grid (B, height, width, d), inverting to_sequence."""
    if sequence.dim() != 3:
        raise ValueError(f"sequence must have shape (B, N, d); got shape {tuple(sequence.shape)}")
    batch, num_tokens, features = sequence.shape
    if num_tokens != height * width:
        raise ValueError(f"sequence has {num_tokens} tokens but the grid is {height}x{width}")
    _check_order(order, num_tokens)
    order = order.to(sequence.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(num_tokens, device=order.device)
    return sequence[:, inverse].reshape(batch, height, width, features)


def block_causal_mask(num_blocks: int, block_size: int, prefix: int = 1) -> torch.Tensor:
    """Build the boolean attention mask (T, T) of a prefix followed by ``num_blocks`` blocks of ``block_size`` tokens.

    T = prefix + num_blocks·block_size, and ``mask[i, j]`` is True where query i may
    attend to key j, the convention of ``scaled_dot_product_attention``. The prefix
    (the condition token or tokens) attends to the whole prefix and nothing later. A
    token of block b attends to the prefix, every token of the blocks before b, and
    every token of block b. For ``block_size`` 1 this is the ordinary causal
    (lower-triangular) mask.
    """
    if num_blocks < 0 or block_size < 1 or prefix < 0:
        raise ValueError(f"need num_blocks >= 0, block_size >= 1 and prefix >= 0; "
                         f"got num_blocks={num_blocks}, block_size={block_size}, prefix={prefix}")
    block_ids = torch.cat([torch.full((prefix,), -1), torch.arange(num_blocks).repeat_interleave(block_size)])
    return block_ids[:, None] >= block_ids[None, :]  # (T, T)
