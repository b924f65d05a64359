"""Autoregressive transformer over binary image tokens, with next-patch decoding and a KV cache.

The model generates an h×w grid of tokens, each a vector of ``bits`` values in
{−1, +1}, conditioned on one integer id per image attribute. It follows BitDance
(Ai et al., "BitDance: Scaling Autoregressive Generative Models with Binary Tokens",
arXiv 2602.14041): a causal transformer whose hidden states feed a binary diffusion
head (:mod:`erlgym.bitimage.heads`), and next-patch decoding, which predicts the
k = ``tokens_per_step`` tokens of a √k×√k patch in one step
(:mod:`erlgym.bitimage.ordering`).

Sequence layout
---------------
With N = h·w tokens in patch order and N/k blocks of k tokens, the transformer reads
T = 1 + N positions::

    position 0                 condition token
    positions 1 + b·k + i      slot i of block b, for b < N/k and i < k

The condition token is the sum of one learned embedding per attribute, or a learned
null embedding when the condition is dropped (for classifier-free guidance). The
slots of block 0 contain k learned start embeddings. The slots of block b ≥ 1 contain
the tokens of block b − 1, each embedded by Linear(bits → width), so the input is the
token sequence shifted right by one block. The output at slot i of block b predicts
token i of block b, and the head samples all k tokens of the block jointly from the k
output hidden states.

Attention is block-causal (:func:`~erlgym.bitimage.ordering.block_causal_mask`): a
slot of block b attends to the condition, every slot of earlier blocks, and every slot
of block b. Those slots contain only tokens of blocks before b, so no prediction can see
its own token, a token of its own block, or any later token. With k = 1 the mask is
lower-triangular, the order is raster order, and the input is the token sequence
shifted by one behind a start token, which is ordinary next-token prediction.

Why this design: the sequence stays 1 + N long, as long as plain next-token
prediction, and sampling appends exactly k positions to the KV cache per step. The
BitDance reference code (github.com/shallowdream204/BitDance,
imagenet_gen/src/model_parallel.py) shifts by one block in the same way, with its last
class token and k − 1 learned query tokens as block 0. The alternative, separate query
positions for every block next to the token positions, doubles the training sequence
and no longer reduces to next-token prediction for k = 1.

Positions
---------
Attention uses 2D rotary position embeddings. In each head, the first half of the
rotary pairs rotate by the row and the second half by the column of the grid cell
that a slot predicts (its target, not the token it contains). The condition token is
not rotated, which is the same as position (0, 0). Only its content distinguishes it
from the slot that predicts cell (0, 0).

Sampling
--------
:meth:`BitGenerator.sample` decodes block by block. With the cache, each step feeds
only the new block's k inputs (the first step also feeds the condition) and reuses
the keys and values of earlier positions. Without it, each step recomputes the whole
prefix, which gives the same result up to float rounding. Classifier-free guidance
runs the conditional and the null-condition rows in one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erlgym.bitimage.heads import BernoulliHead, BinaryDiffusionHead
from erlgym.bitimage.ordering import block_causal_mask, patch_order, to_grid, to_sequence

HEADS = ("diffusion", "bernoulli")


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass
class GeneratorConfig:
    """Settings of a :class:`BitGenerator`.

    Groups: the tokens and conditions it generates (bits, grid, condition_sizes), the
    transformer (width, depth, heads, mlp_ratio, rope_base), decoding
    (tokens_per_step, condition_dropout) and the output head (head and the ``head_*``
    fields). The defaults give a model of 1.47M parameters (0.83M with the Bernoulli
    head) that trains on a CPU.
    """

    # Tokens and conditions
    bits: int = field(default=16, metadata=_help("Bits per token; a token is a vector in {-1, +1}^bits."))
    grid: tuple[int, int] = field(default=(8, 8), metadata=_help("Token grid (height, width)."))
    condition_sizes: tuple[int, ...] = field(
        default=(4, 6, 5, 2),
        metadata=_help("Vocabulary size of each condition attribute; a condition has one integer id per attribute."))

    # Transformer
    width: int = field(default=128, metadata=_help("Hidden width of the transformer (d_model)."))
    depth: int = field(default=4, metadata=_help("Number of transformer layers."))
    heads: int = field(default=4, metadata=_help("Attention heads; width / heads must be a multiple of 4 for 2D RoPE."))
    mlp_ratio: float = field(
        default=8 / 3,
        metadata=_help("SwiGLU hidden width as a multiple of width. 8/3 gives the parameter count of a 4x GELU MLP."))
    rope_base: float = field(
        default=100.0,
        metadata=_help("Base of the rotary frequencies. With the text default of 10000, half the rotary pairs of "
                       "a 32-channel head would turn less than 0.25 rad across 8 grid positions."))

    # Decoding
    tokens_per_step: int = field(
        default=1,
        metadata=_help("Tokens predicted per step (k), fixed per model: a perfect square whose root divides both "
                       "grid sides. 1 is raster-order next-token prediction."))
    condition_dropout: float = field(
        default=0.1,
        metadata=_help("Probability in training of replacing a whole condition by the learned null condition, "
                       "which classifier-free guidance needs."))

    # Output head
    head: str = field(default="diffusion", metadata=_help(f"Output head, one of {', '.join(HEADS)}."))
    head_width: int = field(default=128, metadata=_help("Channels of the head's layers."))
    head_depth: int = field(default=2, metadata=_help("Layers of the head."))
    head_attention_heads: int = field(
        default=4, metadata=_help("Attention heads of the diffusion head's attention over a block's tokens."))
    head_steps: int = field(default=16, metadata=_help("Euler steps of the diffusion head when sampling."))
    head_time_mean: float = field(
        default=0.0, metadata=_help("Mean of n in the diffusion head's training times t = sigmoid(n)."))
    head_time_std: float = field(
        default=1.0, metadata=_help("Standard deviation of n in the diffusion head's training times t = sigmoid(n)."))
    head_noise_samples: int = field(
        default=4, metadata=_help("Noise and time draws per block in one diffusion-head loss evaluation."))
    head_min_gap: float = field(
        default=0.05, metadata=_help("Lower bound on 1 - t when the diffusion head divides by it."))

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        self.condition_sizes = tuple(self.condition_sizes)
        self._validate()

    def _validate(self) -> None:
        if len(self.grid) != 2:
            raise ValueError(f"grid must be (height, width); got {self.grid}")
        patch_order(*self.grid, self.tokens_per_step)  # raises ValueError naming the valid values
        if self.bits < 1:
            raise ValueError(f"bits must be at least 1; got {self.bits}")
        if not self.condition_sizes or min(self.condition_sizes) < 1:
            raise ValueError(f"condition_sizes must be a non-empty list of positive sizes; got {self.condition_sizes}")
        if self.depth < 1 or self.heads < 1 or self.width % self.heads:
            raise ValueError(f"need depth >= 1 and heads dividing width; got depth={self.depth}, "
                             f"width={self.width}, heads={self.heads}")
        if (self.width // self.heads) % 4:
            raise ValueError(f"width / heads = {self.width // self.heads} must be a multiple of 4, because 2D RoPE "
                             f"splits each head into rotary pairs for rows and for columns")
        if not 0 <= self.condition_dropout < 1:
            raise ValueError(f"condition_dropout must be in [0, 1); got {self.condition_dropout}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}; got {self.head!r}")

    @property
    def num_tokens(self) -> int:
        """Tokens per image, N = height · width."""
        return self.grid[0] * self.grid[1]

    @property
    def num_blocks(self) -> int:
        """Decoding steps per image, N / k."""
        return self.num_tokens // self.tokens_per_step


# ---------------------------------------------------------------------- transformer


def rotary_angles(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """Return 2D rotary angles (T, head_dim/2) for token rows and columns (T,).

    The first half of the rotary pairs turn by the row and the second half by the column.
    """
    quarter = head_dim // 4
    frequencies = base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (head_dim/4,)
    return torch.cat([rows[:, None] * frequencies, cols[:, None] * frequencies], dim=-1)  # (T, head_dim/2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the consecutive channel pairs of x (B, H, T, D) by the angles whose cos and sin are (T, D/2)."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, T, D/2) each
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # (B, H, T, D/2, 2)
    return rotated.flatten(-2)


class KVCache:
    """Keys and values of one attention layer for the rows being sampled, preallocated to the full sequence."""

    def __init__(self, batch: int, heads: int, max_length: int, head_dim: int, device: torch.device,
                 dtype: torch.dtype):
        self.keys = torch.zeros(batch, heads, max_length, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys and values (B, H, T, D) after the cached ones and return all of them (B, H, length, D)."""
        end = self.length + keys.shape[2]
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention with 2D RoPE and an explicit boolean mask."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        batch, length, channels = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(channels, dim=-1)
        q, k, v = (z.view(batch, length, self.heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D) with S = cached + T
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D), mask (T, S)
        y = y.transpose(1, 2).reshape(batch, length, channels)  # (B, T, C)
        return self.proj(y)


class SwiGLU(nn.Module):
    """Gated MLP: down(silu(gate(x)) · up(x))."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, hidden) each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer layer: RMSNorm, attention, RMSNorm, SwiGLU, each with a residual connection."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(config.width, eps=1e-6)
        self.attn = SelfAttention(config)
        self.norm2 = nn.RMSNorm(config.width, eps=1e-6)
        self.mlp = SwiGLU(config.width, round(config.mlp_ratio * config.width))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask, cache)
        x = x + self.mlp(self.norm2(x))
        return x


def build_head(config: GeneratorConfig) -> BinaryDiffusionHead | BernoulliHead:
    """Build the output head that ``config.head`` names."""
    if config.head == "diffusion":
        return BinaryDiffusionHead(
            config.width, config.bits, config.tokens_per_step, head_width=config.head_width, depth=config.head_depth,
            num_heads=config.head_attention_heads, steps=config.head_steps, time_mean=config.head_time_mean,
            time_std=config.head_time_std, noise_samples=config.head_noise_samples, min_gap=config.head_min_gap)
    return BernoulliHead(config.width, config.bits, config.tokens_per_step, head_width=config.head_width,
                         depth=config.head_depth)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


# ---------------------------------------------------------------------- generator


class BitGenerator(nn.Module):
    """Class-conditional autoregressive generator of binary token grids.

    Train with :meth:`loss` on token grids (B, h, w, bits) in {−1, +1} and conditions
    (B, A) of integer ids, one column per attribute in ``config.condition_sizes``.
    Generate with :meth:`sample`. :meth:`forward` returns the hidden states that the
    head reads, one (k, width) block per decoding step. The module docstring describes
    the sequence layout, the mask and the positions.
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        config = config or GeneratorConfig()
        self.config = config
        height, width = config.grid
        k = config.tokens_per_step

        order = patch_order(height, width, k)
        self.register_buffer("order", order, persistent=False)
        # Position 0 (the condition) is not rotated. Position 1 + p turns by its target cell order[p].
        rows = torch.cat([torch.zeros(1), (order // width).float()])  # (T,)
        cols = torch.cat([torch.zeros(1), (order % width).float()])
        angles = rotary_angles(rows, cols, config.width // config.heads, config.rope_base)  # (T, D/2)
        self.register_buffer("rotary_cos", angles.cos(), persistent=False)
        self.register_buffer("rotary_sin", angles.sin(), persistent=False)
        self.register_buffer("attention_mask", block_causal_mask(config.num_blocks, k, prefix=1), persistent=False)

        self.condition_embeddings = nn.ModuleList(nn.Embedding(size, config.width) for size in config.condition_sizes)
        self.null_condition = nn.Parameter(torch.randn(config.width) * 0.02)
        self.start_queries = nn.Parameter(torch.randn(k, config.width) * 0.02)
        self.token_embedding = nn.Linear(config.bits, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.final_norm = nn.RMSNorm(config.width, eps=1e-6)
        self.head = build_head(config)

        for module in (self.condition_embeddings, self.token_embedding, self.blocks):
            module.apply(_init_weights)
        # Projections into the residual stream start smaller, so its variance does not grow with depth.
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * config.depth))
            nn.init.normal_(block.mlp.down.weight, std=0.02 / math.sqrt(2 * config.depth))

    # -------------------------------------------------------------- inputs

    def _check_conditions(self, conditions: torch.Tensor) -> None:
        sizes = self.config.condition_sizes
        if conditions.dim() != 2 or conditions.shape[1] != len(sizes):
            raise ValueError(f"conditions must have shape (B, {len(sizes)}); got {tuple(conditions.shape)}")
        if conditions.dtype.is_floating_point or conditions.dtype == torch.bool:
            raise ValueError(f"conditions must be integer ids; got dtype {conditions.dtype}")
        for column, size in enumerate(sizes):
            ids = conditions[:, column]
            if ids.numel() and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(f"conditions[:, {column}] must be in [0, {size}); got values from "
                                 f"{ids.min().item()} to {ids.max().item()}")

    def _check_grid(self, grid_bits: torch.Tensor) -> None:
        expected = (*self.config.grid, self.config.bits)
        if grid_bits.dim() != 4 or tuple(grid_bits.shape[1:]) != expected:
            raise ValueError(f"grid_bits must have shape (B, {', '.join(map(str, expected))}); "
                             f"got {tuple(grid_bits.shape)}")

    def embed_conditions(self, conditions: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Return condition tokens (B, 1, width) for ids (B, A), with the null condition where ``drop`` (B,) is True."""
        self._check_conditions(conditions)
        embedding = sum(table(conditions[:, column]) for column, table in enumerate(self.condition_embeddings))
        if drop is not None:
            embedding = torch.where(drop[:, None], self.null_condition, embedding)  # (B, width)
        return embedding[:, None]

    def _transform(self, inputs: torch.Tensor, begin: int, caches: list[KVCache] | None) -> torch.Tensor:
        """Run the layers on inputs (B, T, width) at sequence positions [begin, begin + T) and return (B, T, width).

        Without caches the inputs must be the whole prefix (begin = 0). With caches,
        positions before ``begin`` come from the caches, which this call extends.
        """
        end = begin + inputs.shape[1]
        if caches is None and begin != 0:
            raise ValueError(f"without a KV cache the inputs must start at position 0; got begin={begin}")
        cos, sin = self.rotary_cos[begin:end], self.rotary_sin[begin:end]  # (T, D/2)
        mask = self.attention_mask[begin:end, :end]  # (T, end)
        x = inputs
        for index, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, None if caches is None else caches[index])
        return self.final_norm(x)

    # -------------------------------------------------------------- training

    def forward(self, grid_bits: torch.Tensor, conditions: torch.Tensor,
                drop_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Return the teacher-forced hidden states (B, N/k, k, width) of token grids (B, h, w, bits).

        Entry [:, b] contains the k hidden states from which the head predicts block b of
        the decoding order. They depend on the condition and the tokens of blocks
        before b only. ``drop_condition`` (B,) bool selects rows that get the null
        condition.
        """
        self._check_grid(grid_bits)
        config = self.config
        batch, k = grid_bits.shape[0], config.tokens_per_step
        tokens = to_sequence(grid_bits.to(self.start_queries.dtype), self.order)  # (B, N, bits)

        condition = self.embed_conditions(conditions, drop_condition)  # (B, 1, width)
        start = self.start_queries.expand(batch, -1, -1)  # (B, k, width)
        # Block b - 1 feeds the slots of block b, so the last block is never an input.
        shifted = self.token_embedding(tokens[:, :config.num_tokens - k])  # (B, N - k, width)
        inputs = torch.cat([condition, start, shifted], dim=1)  # (B, 1 + N, width)

        hidden = self._transform(inputs, 0, None)[:, 1:]  # (B, N, width)
        return hidden.reshape(batch, config.num_blocks, k, config.width)

    def loss(self, grid_bits: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Return the head's training loss (a scalar) for token grids (B, h, w, bits) and conditions (B, A).

        In training mode each row's condition is replaced by the null condition with
        probability ``config.condition_dropout``.
        """
        config = self.config
        batch = grid_bits.shape[0]
        drop = None
        if self.training and config.condition_dropout > 0:
            drop = torch.rand(batch, device=grid_bits.device) < config.condition_dropout

        hidden = self(grid_bits, conditions, drop)  # (B, N/k, k, width)
        targets = to_sequence(grid_bits, self.order)  # (B, N, bits)
        k = config.tokens_per_step
        return self.head.loss(hidden.reshape(-1, k, config.width), targets.reshape(-1, k, config.bits))

    # -------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, conditions: torch.Tensor, guidance_scale: float = 0.0, generator: torch.Generator | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """Generate token grids (B, h, w, bits) in {−1, +1} for conditions (B, A), k tokens per step.

        With ``guidance_scale`` s ≠ 0, the null-condition rows run in the same batch
        and the head guides its output o as o_cond + s·(o_cond − o_null), so s = 0 is
        plain conditional sampling. All randomness comes from ``generator`` (the
        global generator if None), and the head draws the same tensors in the same
        order with or without the cache. ``use_cache=False`` recomputes the whole
        prefix every step, as a reference for the cached path.
        """
        self._check_conditions(conditions)
        config = self.config
        batch, k = conditions.shape[0], config.tokens_per_step
        dtype = self.start_queries.dtype

        guided = guidance_scale != 0
        if guided:
            drop = torch.arange(2 * batch, device=conditions.device) >= batch
            condition = self.embed_conditions(conditions.repeat(2, 1), drop)  # (R, 1, width), R = 2B
        else:
            condition = self.embed_conditions(conditions)  # (R, 1, width), R = B
        rows = condition.shape[0]
        start = self.start_queries.expand(rows, -1, -1)  # (R, k, width)
        caches = None
        if use_cache:
            caches = [KVCache(rows, config.heads, 1 + config.num_tokens, config.width // config.heads,
                              condition.device, dtype) for _ in self.blocks]

        def embed_tokens(tokens: torch.Tensor) -> torch.Tensor:
            return self.token_embedding(tokens).repeat(rows // batch, 1, 1)  # (R, n, width)

        tokens = torch.zeros(batch, config.num_tokens, config.bits, device=condition.device, dtype=dtype)
        for block in range(config.num_blocks):
            if block == 0:
                inputs = torch.cat([condition, start], dim=1)  # (R, 1 + k, width)
            elif use_cache:
                inputs = embed_tokens(tokens[:, (block - 1) * k:block * k])  # (R, k, width)
            else:
                known = embed_tokens(tokens[:, :block * k])  # (R, b·k, width)
                inputs = torch.cat([condition, start, known], dim=1)  # (R, 1 + (b+1)·k, width)
            end = 1 + (block + 1) * k
            hidden = self._transform(inputs, end - inputs.shape[1], caches)[:, -k:]  # (R, k, width)

            if guided:
                new_tokens = self.head.sample(hidden[:batch], hidden[batch:], guidance_scale, generator)
            else:
                new_tokens = self.head.sample(hidden, generator=generator)
            tokens[:, block * k:(block + 1) * k] = new_tokens  # (B, k, bits)

        return to_grid(tokens, self.order, *config.grid)
