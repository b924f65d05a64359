"""Output heads that turn the k hidden states of one block into the k binary tokens of that block.

Both heads share one interface. ``loss(hidden, bits)`` takes hidden states (M, k, width)
and target tokens (M, k, bits) with values in {−1, +1} and returns a scalar training
loss. ``sample(hidden, hidden_null, guidance_scale, generator)`` returns tokens
(M, k, bits) in {−1, +1}. M counts blocks (batch × blocks per image), k is the number
of tokens decoded per step, and width is the transformer's hidden width.

:class:`BinaryDiffusionHead` models the k·bits values of a block jointly with a
rectified flow in continuous space and binarizes the result with the sign, as in the
binary diffusion head of BitDance (Ai et al., "BitDance: Scaling Autoregressive
Generative Models with Binary Tokens", arXiv 2602.14041; reference code at
github.com/shallowdream204/BitDance, imagenet_gen/src/diff_head_parallel.py).
:class:`BernoulliHead` is the baseline that samples every bit independently from its
own sigmoid, so it cannot represent correlations between bits.

Classifier-free guidance follows one convention in both heads: with conditional output
o_c, unconditional output o_u and scale s, the guided output is o_c + s·(o_c − o_u), so
s = 0 is plain conditional sampling. The diffusion head guides its prediction of x1,
the Bernoulli head its logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Embed flow times t ∈ [0, 1] of shape (M,) as sinusoids (M, dim), with t scaled by 1000 like diffusion steps."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * frequencies[None]  # (M, dim/2)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding.to(t.dtype)  # (M, dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def _guide(conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    return conditional + guidance_scale * (conditional - unconditional)


def _check_head_inputs(hidden: torch.Tensor, tokens_per_step: int, width: int) -> None:
    if hidden.dim() != 3 or hidden.shape[1:] != (tokens_per_step, width):
        raise ValueError(f"hidden must have shape (M, {tokens_per_step}, {width}); got {tuple(hidden.shape)}")


def _check_targets(hidden: torch.Tensor, bits: torch.Tensor, bits_per_token: int) -> None:
    expected = (*hidden.shape[:2], bits_per_token)
    if tuple(bits.shape) != expected:
        raise ValueError(f"target tokens must have shape {expected} to match the hidden states; "
                         f"got {tuple(bits.shape)}")


def _check_guidance(hidden: torch.Tensor, hidden_null: torch.Tensor | None, guidance_scale: float) -> None:
    if hidden_null is None and guidance_scale != 0:
        raise ValueError(f"guidance_scale={guidance_scale} requires hidden_null, the hidden states under the null "
                         f"condition; pass them or use guidance_scale=0")
    if hidden_null is not None and hidden_null.shape != hidden.shape:
        raise ValueError(f"hidden_null has shape {tuple(hidden_null.shape)} but hidden has {tuple(hidden.shape)}")


class _BlockSelfAttention(nn.Module):
    """Full (unmasked) multi-head self-attention over the k tokens of one block."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, tokens, channels = x.shape  # (M, k, C)
        q, k, v = self.qkv(x).split(channels, dim=-1)
        q, k, v = (z.view(rows, tokens, self.num_heads, -1).transpose(1, 2) for z in (q, k, v))  # (M, H, k, C/H)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(rows, tokens, channels)  # (M, k, C)
        return self.proj(y)


class _AdaLNBlock(nn.Module):
    """Transformer block over a block's tokens whose norms are shifted, scaled and gated by a per-token condition."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False)
        self.attn = _BlockSelfAttention(channels, num_heads)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels))
        self.modulation = nn.Linear(channels, 6 * channels)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        # x, condition and each chunk below: (M, k, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition).chunk(6, dim=-1)
        x = x + gate1 * self.attn(_modulate(self.norm1(x), shift1, scale1))
        x = x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x


class BinaryDiffusionHead(nn.Module):
    """Rectified-flow head that samples the k·bits values of a block jointly, then binarizes them.

    Flow: x1 is the block's tokens (±1), x0 ~ N(0, I) and x_t = t·x1 + (1 − t)·x0 for
    t ∈ [0, 1]. The network predicts x̂1 from (x_t, t, hidden states), and the velocity
    is v̂ = (x̂1 − x_t) / max(1 − t, ``min_gap``). Training minimizes the mean squared
    error between v̂ and v = (x1 − x_t) / max(1 − t, ``min_gap``), which equals the
    straight-line velocity x1 − x0 whenever 1 − t ≥ ``min_gap``. Near t = 1 the clamp
    turns the loss into a scaled error of x̂1, as in the BitDance reference code,
    instead of dividing by a vanishing 1 − t. Training times are logit-normal,
    t = sigmoid(n) with n ~ N(``time_mean``, ``time_std``).

    Sampling runs ``steps`` Euler steps of dx/dt = v̂ from x0 ~ N(0, I) at t = 0 to
    t = 1, then takes the sign of every value (0 maps to +1).

    Network: the block is a sequence of k tokens. Token i enters as
    Linear(bits → head_width)(x_t[i]) plus a learned embedding of its index i in the
    block. Its condition is SiLU(Linear(width → head_width)(hidden[i]) + time
    embedding), which shifts, scales and gates the norms of every layer (adaLN). Each
    of the ``depth`` layers runs self-attention across the k tokens and an MLP, so every
    output value depends on all k·bits inputs. This is why the k tokens of a block are
    sampled jointly. The modulation and output layers start at zero, so x̂1 = 0 before
    training.

    Args:
        width: hidden width of the transformer that produces ``hidden``.
        bits: bits per token.
        tokens_per_step: tokens per block, k.
        head_width: channels of the head's layers.
        depth: number of adaLN transformer layers.
        num_heads: attention heads in each layer; must divide ``head_width``.
        steps: Euler steps in :meth:`sample`.
        time_mean, time_std: mean and standard deviation of n in t = sigmoid(n) for training.
        noise_samples: (t, x0) draws per block in one :meth:`loss` call. The head is
            small next to the transformer, so several draws lower the loss variance cheaply.
        min_gap: lower bound on 1 − t in the velocity.
    """

    def __init__(self, width: int, bits: int, tokens_per_step: int, head_width: int = 128, depth: int = 2,
                 num_heads: int = 4, steps: int = 16, time_mean: float = 0.0, time_std: float = 1.0,
                 noise_samples: int = 4, min_gap: float = 0.05):
        super().__init__()
        if head_width % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide head_width={head_width}")
        if steps < 1 or noise_samples < 1 or not 0 < min_gap < 1:
            raise ValueError(f"need steps >= 1, noise_samples >= 1 and 0 < min_gap < 1; "
                             f"got steps={steps}, noise_samples={noise_samples}, min_gap={min_gap}")
        self.width = width
        self.bits = bits
        self.tokens_per_step = tokens_per_step
        self.steps = steps
        self.time_mean = time_mean
        self.time_std = time_std
        self.noise_samples = noise_samples
        self.min_gap = min_gap
        self.head_width = head_width

        self.input_proj = nn.Linear(bits, head_width)
        self.slot_embedding = nn.Parameter(torch.randn(tokens_per_step, head_width) * 0.02)
        self.condition_proj = nn.Linear(width, head_width)
        self.time_mlp = nn.Sequential(nn.Linear(head_width, head_width), nn.SiLU(), nn.Linear(head_width, head_width))
        self.layers = nn.ModuleList(_AdaLNBlock(head_width, num_heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(head_width, elementwise_affine=False)
        self.final_modulation = nn.Linear(head_width, 2 * head_width)
        self.output_proj = nn.Linear(head_width, bits)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for linear in self.time_mlp:
            if isinstance(linear, nn.Linear):
                nn.init.normal_(linear.weight, std=0.02)
        zero_init = [layer.modulation for layer in self.layers] + [self.final_modulation, self.output_proj]
        for linear in zero_init:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def predict_x1(self, x_t: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Predict clean tokens x̂1 (M, k, bits) from x_t (M, k, bits), times t (M,) and hidden (M, k, width)."""
        time = self.time_mlp(timestep_embedding(t, self.head_width))  # (M, C)
        condition = F.silu(self.condition_proj(hidden) + time[:, None])  # (M, k, C)
        x = self.input_proj(x_t) + self.slot_embedding  # (M, k, C)
        for layer in self.layers:
            x = layer(x, condition)
        shift, scale = self.final_modulation(condition).chunk(2, dim=-1)
        return self.output_proj(_modulate(self.final_norm(x), shift, scale))  # (M, k, bits)

    def loss(self, hidden: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Return the velocity loss (a scalar) of hidden states (M, k, width) for tokens (M, k, bits) in {−1, +1}."""
        _check_head_inputs(hidden, self.tokens_per_step, self.width)
        _check_targets(hidden, bits, self.bits)
        hidden = hidden.repeat(self.noise_samples, 1, 1)  # (S·M, k, width)
        x1 = bits.to(hidden.dtype).repeat(self.noise_samples, 1, 1)  # (S·M, k, bits)

        t = torch.sigmoid(self.time_mean + self.time_std * torch.randn(x1.shape[0], device=x1.device, dtype=x1.dtype))
        x0 = torch.randn_like(x1)
        t_ = t[:, None, None]
        x_t = t_ * x1 + (1 - t_) * x0
        gap = (1 - t_).clamp_min(self.min_gap)

        x1_pred = self.predict_x1(x_t, t, hidden)
        velocity_pred = (x1_pred - x_t) / gap
        velocity = (x1 - x_t) / gap
        return F.mse_loss(velocity_pred, velocity)

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, hidden_null: torch.Tensor | None = None, guidance_scale: float = 0.0,
               generator: torch.Generator | None = None, steps: int | None = None) -> torch.Tensor:
        """Sample tokens (M, k, bits) in {−1, +1} with Euler steps from t = 0 to 1, then the sign.

        ``hidden_null`` (M, k, width) contains the hidden states under the null
        condition. When it is given, every step evaluates both halves in one batch at
        the same x_t and guides x̂1 with ``guidance_scale``. Noise comes from
        ``generator`` (the global generator if None), one draw of shape (M, k, bits).
        ``steps`` overrides the number of Euler steps set at construction.
        """
        _check_head_inputs(hidden, self.tokens_per_step, self.width)
        _check_guidance(hidden, hidden_null, guidance_scale)
        steps = self.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be at least 1; got {steps}")
        rows = hidden.shape[0]
        x = torch.randn((rows, self.tokens_per_step, self.bits), generator=generator, device=hidden.device,
                        dtype=hidden.dtype)  # x0, (M, k, bits)
        if hidden_null is not None:
            hidden = torch.cat([hidden, hidden_null])  # (2M, k, width)

        for step in range(steps):
            t = step / steps
            t_rows = torch.full((hidden.shape[0],), t, device=x.device, dtype=x.dtype)
            x_in = x if hidden_null is None else torch.cat([x, x])
            x1_pred = self.predict_x1(x_in, t_rows, hidden)
            if hidden_null is not None:
                x1_pred = _guide(x1_pred[:rows], x1_pred[rows:], guidance_scale)
            velocity = (x1_pred - x) / max(1 - t, self.min_gap)
            x = x + velocity / steps
        return torch.where(x >= 0, 1.0, -1.0).to(hidden.dtype)


class BernoulliHead(nn.Module):
    """Baseline head that predicts one independent sigmoid per bit and samples each bit on its own.

    An MLP with ``depth`` hidden layers of ``head_width`` channels maps each token's
    hidden state (width) to ``bits`` logits. Training minimizes binary cross-entropy,
    and sampling draws every bit from its own Bernoulli distribution. The hidden states
    of a block have already attended to each other in the transformer, so each marginal
    can depend on the whole block. The joint distribution, however, is a product of
    marginals: a target that is all +1 or all −1 with equal odds comes out as
    independent fair coins.

    Args:
        width: hidden width of the transformer that produces ``hidden``.
        bits: bits per token.
        tokens_per_step: tokens per block, k.
        head_width: channels of the MLP's hidden layers.
        depth: number of hidden layers.
    """

    def __init__(self, width: int, bits: int, tokens_per_step: int, head_width: int = 128, depth: int = 2):
        super().__init__()
        self.width = width
        self.bits = bits
        self.tokens_per_step = tokens_per_step
        layers: list[nn.Module] = []
        in_features = width
        for _ in range(depth):
            layers += [nn.Linear(in_features, head_width), nn.SiLU()]
            in_features = head_width
        layers.append(nn.Linear(in_features, bits))
        self.mlp = nn.Sequential(*layers)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return the logit of P(bit = +1) for every bit, (M, k, bits), from hidden states (M, k, width)."""
        return self.mlp(hidden)

    def loss(self, hidden: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Return the mean binary cross-entropy of hidden states (M, k, width) for tokens (M, k, bits) in {−1, +1}."""
        _check_head_inputs(hidden, self.tokens_per_step, self.width)
        _check_targets(hidden, bits, self.bits)
        targets = (bits.to(hidden.dtype) + 1) / 2  # {−1, +1} -> {0, 1}
        return F.binary_cross_entropy_with_logits(self.logits(hidden), targets)

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, hidden_null: torch.Tensor | None = None, guidance_scale: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample tokens (M, k, bits) in {−1, +1}, each bit on its own, from logits guided by ``guidance_scale``.

        ``hidden_null`` (M, k, width) contains the hidden states under the null
        condition. When it is given, both halves run in one batch. Uniform draws come from
        ``generator`` (the global generator if None), one draw of shape (M, k, bits).
        """
        _check_head_inputs(hidden, self.tokens_per_step, self.width)
        _check_guidance(hidden, hidden_null, guidance_scale)
        rows = hidden.shape[0]
        if hidden_null is None:
            logits = self.logits(hidden)
        else:
            both = self.logits(torch.cat([hidden, hidden_null]))  # (2M, k, bits)
            logits = _guide(both[:rows], both[rows:], guidance_scale)
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        return torch.where(uniform < torch.sigmoid(logits), 1.0, -1.0).to(hidden.dtype)
