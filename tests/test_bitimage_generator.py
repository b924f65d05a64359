"""Tests of the binary-token generator: decoding order, masks, causality, KV-cache decoding and the heads."""

from __future__ import annotations

import pytest
import torch

from erlgym.bitimage.generator import BitGenerator, GeneratorConfig
from erlgym.bitimage.heads import BernoulliHead, BinaryDiffusionHead
from erlgym.bitimage.ordering import block_causal_mask, patch_order, to_grid, to_sequence

CONDITIONS = torch.tensor([[0, 1, 2, 1], [3, 5, 4, 0], [2, 0, 1, 1]])


def tiny_config(**overrides) -> GeneratorConfig:
    settings = dict(bits=8, grid=(4, 4), width=32, depth=2, heads=2, head_width=32, head_depth=2,
                    head_attention_heads=2, head_steps=8, head_noise_samples=2, condition_dropout=0.0)
    settings.update(overrides)
    return GeneratorConfig(**settings)


def make_generator(seed: int = 0, **overrides) -> BitGenerator:
    """Build a tiny generator whose samples depend strongly on the condition and the earlier tokens."""
    torch.manual_seed(seed)
    model = BitGenerator(tiny_config(**overrides))
    # At initialization the diffusion head's output layers are zero and the residual
    # projections are small, so samples would barely depend on the condition and the
    # tokens, and every sampling comparison would pass trivially.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0.0, 0.2)
    return model


def random_grids(batch: int, config: GeneratorConfig, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *config.grid, config.bits)
    return torch.where(torch.rand(shape, generator=generator) < 0.5, 1.0, -1.0)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- ordering


@pytest.mark.parametrize("tokens_per_step", [1, 4, 16])
def test_patch_order_is_permutation(tokens_per_step):
    order = patch_order(8, 8, tokens_per_step)

    assert order.dtype == torch.long
    assert torch.equal(order.sort().values, torch.arange(64))


def test_patch_order_k1_is_raster():
    assert torch.equal(patch_order(8, 8, 1), torch.arange(64))
    assert torch.equal(patch_order(3, 5, 1), torch.arange(15))


def test_patch_order_4x4_grid_k4():
    # Grid indices:      Patches in raster order, tokens in raster order inside each:
    #  0  1  2  3         [0 1 4 5] [2 3 6 7]
    #  4  5  6  7         [8 9 12 13] [10 11 14 15]
    #  8  9 10 11
    # 12 13 14 15
    expected = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]

    assert patch_order(4, 4, 4).tolist() == expected


def test_patch_order_8x8_grid_k16():
    order = patch_order(8, 8, 16)

    assert order[:16].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]
    assert order[16:20].tolist() == [4, 5, 6, 7]
    assert order[32:36].tolist() == [32, 33, 34, 35]


def test_patch_order_rectangular_grid():
    # 2x4 grid with 2x2 patches: two patches side by side.
    assert patch_order(2, 4, 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]


@pytest.mark.parametrize("tokens_per_step", [0, 2, 3, 8, 9, 100])
def test_patch_order_rejects_invalid_k(tokens_per_step):
    with pytest.raises(ValueError) as error:
        patch_order(8, 8, tokens_per_step)

    assert f"tokens_per_step={tokens_per_step}" in str(error.value)
    assert "Valid values: 1, 4, 16, 64" in str(error.value)


def test_patch_order_rejects_root_not_dividing_grid():
    with pytest.raises(ValueError, match="Valid values: 1, 4"):
        patch_order(6, 4, 16)


def test_config_rejects_invalid_tokens_per_step():
    with pytest.raises(ValueError, match="tokens_per_step=2"):
        GeneratorConfig(tokens_per_step=2)


@pytest.mark.parametrize("tokens_per_step", [1, 4, 16])
def test_to_grid_inverts_to_sequence(tokens_per_step):
    order = patch_order(8, 8, tokens_per_step)
    grid = torch.randn(3, 8, 8, 5)

    sequence = to_sequence(grid, order)

    assert sequence.shape == (3, 64, 5)
    assert torch.equal(to_grid(sequence, order, 8, 8), grid)


def test_to_sequence_follows_order():
    order = patch_order(4, 4, 4)
    grid = torch.arange(16.0).view(1, 4, 4, 1)

    sequence = to_sequence(grid, order)

    assert sequence[0, :, 0].tolist() == [float(index) for index in order.tolist()]


def test_block_causal_mask_two_blocks_of_two():
    # Rows are queries, columns keys: condition, block 0 (two tokens), block 1 (two tokens).
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ], dtype=torch.bool)

    mask = block_causal_mask(2, 2, prefix=1)

    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_block_causal_mask_k1_is_tril():
    mask = block_causal_mask(6, 1, prefix=1)

    assert torch.equal(mask, torch.ones(7, 7, dtype=torch.bool).tril())


def test_block_causal_mask_prefix_attends_within_prefix():
    mask = block_causal_mask(1, 2, prefix=2)

    assert mask[:2, :2].all()
    assert not mask[:2, 2:].any()
    assert mask[2:].all()


# ---------------------------------------------------------------------- causality


def test_perturbed_token_hides_from_own_block():
    model = make_generator(tokens_per_step=4)
    config = model.config
    grids = random_grids(2, config)
    conditions = CONDITIONS[:2]
    k = config.tokens_per_step
    with torch.no_grad():
        reference = model(grids, conditions)  # (B, blocks, k, width)

    for position, cell in enumerate(model.order.tolist()):
        block = position // k
        perturbed = grids.clone()
        perturbed[:, cell // 4, cell % 4] *= -1
        with torch.no_grad():
            hidden = model(perturbed, conditions)

        assert torch.allclose(hidden[:, :block + 1], reference[:, :block + 1], atol=1e-6), (
            f"flipping token {position} (block {block}) changed the hidden states of block {block} or earlier")
        if block + 1 < config.num_blocks:
            assert not torch.allclose(hidden[:, block + 1], reference[:, block + 1], atol=1e-4), (
                f"flipping token {position} did not change block {block + 1}, so the test cannot detect leaks")


def test_gradients_come_from_earlier_blocks():
    model = make_generator(tokens_per_step=4)
    config = model.config
    k = config.tokens_per_step
    grids = random_grids(2, config).requires_grad_()
    hidden = model(grids, CONDITIONS[:2])
    projection = torch.randn(hidden.shape[2:])

    for block in range(config.num_blocks):
        (gradient,) = torch.autograd.grad((hidden[:, block] * projection).sum(), grids, retain_graph=True)
        per_token = to_sequence(gradient.abs(), model.order).sum(dim=(0, 2))  # (N,)

        assert torch.all(per_token[block * k:] == 0), f"block {block} has gradient from its own or later tokens"
        if block > 0:
            assert torch.all(per_token[(block - 1) * k:block * k] > 0), f"block {block} ignores block {block - 1}"


def test_k1_is_next_token_prediction():
    model = make_generator(tokens_per_step=1)
    config = model.config
    grids = random_grids(2, config)
    conditions = CONDITIONS[:2]

    assert torch.equal(model.order, torch.arange(config.num_tokens))
    assert torch.equal(model.attention_mask, torch.ones(17, 17, dtype=torch.bool).tril())

    with torch.no_grad():
        reference = model(grids, conditions)[:, :, 0]  # (B, N, width), raster order
    for token in range(config.num_tokens):
        perturbed = grids.clone()
        perturbed[:, token // 4, token % 4] *= -1
        with torch.no_grad():
            hidden = model(perturbed, conditions)[:, :, 0]
        changed = [index for index in range(config.num_tokens)
                   if not torch.allclose(hidden[:, index], reference[:, index], atol=1e-6)]

        assert changed == list(range(token + 1, config.num_tokens)), f"flipping token {token} changed {changed}"


def test_condition_changes_every_prediction():
    model = make_generator(tokens_per_step=4)
    grids = random_grids(1, model.config)
    with torch.no_grad():
        first = model(grids, CONDITIONS[:1])
        second = model(grids, CONDITIONS[1:2])

    for block in range(model.config.num_blocks):
        assert not torch.allclose(first[:, block], second[:, block], atol=1e-4)


# ---------------------------------------------------------------------- decoding


def test_k1_sampling_is_raster_decoding():
    model = make_generator(tokens_per_step=1)
    config = model.config
    height, width = config.grid
    expected = model.sample(CONDITIONS, generator=seeded(3))

    grids = torch.zeros(len(CONDITIONS), height, width, config.bits)
    generator = seeded(3)
    with torch.no_grad():
        for index in range(height * width):
            row, column = divmod(index, width)
            hidden = model(grids, CONDITIONS)[:, index]  # (B, 1, width): token index, raster order
            grids[:, row, column] = model.head.sample(hidden, generator=generator)[:, 0]

    assert torch.equal(grids, expected)


def test_k4_sampling_is_teacher_forced_decoding():
    model = make_generator(tokens_per_step=4)
    config = model.config
    k = config.tokens_per_step
    height, width = config.grid
    expected = model.sample(CONDITIONS, generator=seeded(4))

    grids = torch.zeros(len(CONDITIONS), height, width, config.bits)
    generator = seeded(4)
    order = patch_order(height, width, k).tolist()
    with torch.no_grad():
        for block in range(config.num_blocks):
            tokens = model.head.sample(model(grids, CONDITIONS)[:, block], generator=generator)  # (B, k, bits)
            for slot, cell in enumerate(order[block * k:(block + 1) * k]):
                grids[:, cell // width, cell % width] = tokens[:, slot]

    assert torch.equal(grids, expected)


@pytest.mark.parametrize(("tokens_per_step", "head", "guidance_scale"), [
    (1, "diffusion", 0.0),
    (4, "diffusion", 0.0),
    (4, "diffusion", 2.0),
    (1, "bernoulli", 0.0),
    (4, "bernoulli", 1.5),
    (16, "diffusion", 0.0),
])
def test_cached_sampling_matches_recomputation(tokens_per_step, head, guidance_scale):
    model = make_generator(tokens_per_step=tokens_per_step, head=head)

    cached = model.sample(CONDITIONS, guidance_scale, generator=seeded(5), use_cache=True)
    recomputed = model.sample(CONDITIONS, guidance_scale, generator=seeded(5), use_cache=False)
    other_conditions = model.sample(CONDITIONS.flip(0), guidance_scale, generator=seeded(5))

    assert cached.shape == (3, 4, 4, 8)
    assert set(cached.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(cached, recomputed)
    assert not torch.equal(cached, other_conditions), "samples ignore the condition, so the comparison is vacuous"


def test_sampling_repeats_with_same_seed():
    model = make_generator(tokens_per_step=4)

    first = model.sample(CONDITIONS, generator=seeded(6))
    second = model.sample(CONDITIONS, generator=seeded(6))
    third = model.sample(CONDITIONS, generator=seeded(7))

    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("head", ["diffusion", "bernoulli"])
def test_guidance_noop_when_null_equals_condition(head):
    # When the null condition embeds like the condition, o_cond = o_null, so any scale gives conditional sampling.
    model = make_generator(tokens_per_step=4, head=head)
    conditions = CONDITIONS[:1].repeat(2, 1)
    with torch.no_grad():
        model.null_condition.copy_(model.embed_conditions(conditions[:1])[0, 0])

    plain = model.sample(conditions, 0.0, generator=seeded(8))
    guided = model.sample(conditions, 3.0, generator=seeded(8))

    assert torch.equal(plain, guided)


@pytest.mark.parametrize("head", ["diffusion", "bernoulli"])
def test_guidance_scale_changes_samples(head):
    model = make_generator(tokens_per_step=4, head=head)
    with torch.no_grad():
        model.null_condition.normal_(0.0, 1.0)

    plain = model.sample(CONDITIONS, 0.0, generator=seeded(9))
    guided = model.sample(CONDITIONS, 4.0, generator=seeded(9))

    assert not torch.equal(plain, guided)


@pytest.mark.parametrize("head_class", [BinaryDiffusionHead, BernoulliHead])
def test_head_guidance_scale_zero_is_conditional(head_class):
    torch.manual_seed(0)
    head = head_class(16, 4, 4, head_width=32, depth=2)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0.0, 0.2)
    hidden = torch.randn(5, 4, 16)
    hidden_null = torch.randn(5, 4, 16)

    conditional = head.sample(hidden, generator=seeded(10))
    guided = head.sample(hidden, hidden_null, 0.0, generator=seeded(10))
    strongly_guided = head.sample(hidden, hidden_null, 5.0, generator=seeded(10))

    assert torch.equal(conditional, guided)
    assert not torch.equal(conditional, strongly_guided)


def test_head_sample_rejects_scale_without_null():
    head = BernoulliHead(16, 4, 4)

    with pytest.raises(ValueError, match="hidden_null"):
        head.sample(torch.randn(2, 4, 16), guidance_scale=1.0)


# ---------------------------------------------------------------------- conditions and loss


def test_embed_conditions_uses_null_for_dropped_rows():
    model = make_generator()
    drop = torch.tensor([False, True, False])

    embedded = model.embed_conditions(CONDITIONS, drop)[:, 0]  # (B, width)
    expected_first = sum(table.weight[CONDITIONS[0, column]]
                         for column, table in enumerate(model.condition_embeddings))

    assert torch.allclose(embedded[0], expected_first)
    assert torch.equal(embedded[1], model.null_condition)
    assert not torch.allclose(embedded[2], model.null_condition)


def test_condition_dropout_only_in_training():
    model = make_generator(condition_dropout=0.9)
    grids = random_grids(16, model.config)
    conditions = CONDITIONS[torch.arange(16) % 3]

    model.eval()
    model.loss(grids, conditions).backward()
    eval_gradient = model.null_condition.grad
    model.zero_grad()
    model.train()
    torch.manual_seed(11)
    model.loss(grids, conditions).backward()

    assert eval_gradient is None or torch.all(eval_gradient == 0)
    assert model.null_condition.grad.abs().sum() > 0


@pytest.mark.parametrize(("conditions", "message"), [
    (torch.tensor([[0, 6, 0, 0]]), r"conditions\[:, 1\] must be in \[0, 6\)"),
    (torch.tensor([[-1, 0, 0, 0]]), r"conditions\[:, 0\]"),
    (torch.tensor([[0, 0, 0]]), r"shape \(B, 4\)"),
    (torch.tensor([[0.0, 0.0, 0.0, 0.0]]), "integer ids"),
])
def test_invalid_conditions_raise(conditions, message):
    model = make_generator()

    with pytest.raises(ValueError, match=message):
        model.sample(conditions)


def test_loss_rejects_wrong_grid_shape():
    model = make_generator()

    with pytest.raises(ValueError, match=r"grid_bits must have shape \(B, 4, 4, 8\)"):
        model.loss(torch.ones(1, 4, 4, 16), CONDITIONS[:1])


@pytest.mark.parametrize("head", ["diffusion", "bernoulli"])
def test_tiny_generator_overfits_four_grids(head):
    torch.manual_seed(0)
    config = tiny_config(tokens_per_step=4, head=head)
    model = BitGenerator(config)
    grids = random_grids(4, config, seed=1)
    conditions = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 0], [3, 3, 3, 1]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.arange(4).repeat(4)

    model.train()
    first_loss = model.loss(grids[batch], conditions[batch]).item()
    for _ in range(200 if head == "diffusion" else 100):
        loss = model.loss(grids[batch], conditions[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    samples = model.sample(conditions.repeat(4, 1), generator=seeded(12))
    bit_accuracy = (samples == grids.repeat(4, 1, 1, 1)).float().mean().item()

    assert loss.item() < first_loss / 10
    assert bit_accuracy >= 0.9, f"samples match their training grid in {bit_accuracy:.1%} of bits"


# ---------------------------------------------------------------------- heads on toy targets


def train_head(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, steps: int, seed: int) -> None:
    """Train a head on rows drawn with replacement from (hidden, targets)."""
    generator = seeded(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3)
    for _ in range(steps):
        rows = torch.randint(0, hidden.shape[0], (64,), generator=generator)
        loss = head.loss(hidden[rows], targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_diffusion_head_learns_class_patterns():
    # Four hidden-state classes map to four patterns of k * bits = 16 correlated bits.
    torch.manual_seed(0)
    k, bits, width = 4, 4, 32
    patterns = torch.tensor([[1.0] * 16, [-1.0] * 16, [1.0, -1.0] * 8, [1.0] * 8 + [-1.0] * 8]).view(4, k, bits)
    class_hidden = torch.randn(4, k, width)
    head = BinaryDiffusionHead(width, bits, k, head_width=32, depth=2, num_heads=2, noise_samples=2)

    train_head(head, class_hidden, patterns, steps=150, seed=1)
    classes = torch.arange(4).repeat(32)
    samples = head.sample(class_hidden[classes], generator=seeded(2))
    bit_accuracy = (samples == patterns[classes]).float().mean().item()
    exact = (samples == patterns[classes]).flatten(1).all(dim=1).float().mean().item()

    assert bit_accuracy >= 0.9, f"samples match their class pattern in {bit_accuracy:.1%} of bits"
    assert exact >= 0.75, f"only {exact:.1%} of samples match their class pattern exactly"


def test_joint_head_keeps_bit_correlation():
    # The target block is all +1 or all -1 with equal odds, for one fixed hidden state.
    torch.manual_seed(0)
    k, bits, width = 4, 4, 32
    hidden = torch.randn(1, k, width).expand(256, k, width)
    signs = torch.where(torch.rand(256, generator=seeded(3)) < 0.5, 1.0, -1.0)
    targets = signs[:, None, None].expand(256, k, bits)
    diffusion = BinaryDiffusionHead(width, bits, k, head_width=32, depth=2, num_heads=2, noise_samples=2)
    bernoulli = BernoulliHead(width, bits, k, head_width=32, depth=2)

    train_head(diffusion, hidden, targets, steps=150, seed=4)
    train_head(bernoulli, hidden, targets, steps=150, seed=4)
    joint = diffusion.sample(hidden, generator=seeded(5)).flatten(1)  # (256, 16)
    independent = bernoulli.sample(hidden, generator=seeded(5)).flatten(1)
    joint_all_equal = ((joint == 1).all(1) | (joint == -1).all(1)).float().mean().item()
    joint_all_plus = (joint == 1).all(1).float().mean().item()
    independent_all_equal = ((independent == 1).all(1) | (independent == -1).all(1)).float().mean().item()
    bit_probability = torch.sigmoid(bernoulli.logits(hidden[:1])).mean().item()

    assert joint_all_equal >= 0.8, f"only {joint_all_equal:.1%} of joint samples are all-equal"
    assert 0.25 <= joint_all_plus <= 0.75, f"joint samples are all +1 in {joint_all_plus:.1%}: a mode is missing"
    assert 0.4 <= bit_probability <= 0.6, f"the Bernoulli head's mean bit probability is {bit_probability:.2f}"
    assert independent_all_equal <= 0.1, f"{independent_all_equal:.1%} of independent samples are all-equal"
