"""Bootstrap confidence intervals for comparing methods over training seeds.

A method's result is a list of training seeds, each with the 0/1 outcomes (or any
scores) of its held-out evaluation episodes. Two sources of noise matter: which seeds
were trained, and which episodes were drawn. The two-level (hierarchical) bootstrap
resamples both: seeds with replacement, then episodes with replacement within each
resampled seed. The statistic of one resample is the mean over all its episodes, and
the interval is the percentile interval of that statistic over the resamples.

NOTE: with very few seeds (2 or 3) the resampled seeds vary little, so the interval
understates the variance between seeds and is too narrow. It becomes reliable only
with more seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resamples are drawn in chunks of at most this many episode draws, so that memory
# stays at a few tens of MB for any number of seeds, episodes and resamples.
_DRAWS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the interval, so the sign of the mean is significant."""
        return self.low > 0 or self.high < 0


def bootstrap_ci(
    values_by_seed: list[list[float]],
    confidence: float = 0.95,
    resamples: int = 10_000,
    rng_seed: int = 0,
) -> Interval:
    """Compute the two-level bootstrap interval of the mean over all episodes.

    ``values_by_seed[i]`` contains the episode values of seed i, and seeds may have
    different numbers of episodes. The point estimate is the mean over all episodes of all seeds.
    Raises ValueError for no seeds, a seed with no episodes, or a non-finite value.
    """
    _check_settings(confidence, resamples)
    values, counts = _pad_seeds(values_by_seed, "values_by_seed")
    rng = np.random.default_rng(rng_seed)

    means = np.empty(resamples)
    for start, stop in _chunks(resamples, values.size):
        size = stop - start
        seed_index = rng.integers(0, len(counts), size=(size, len(counts)))
        uniforms = rng.random((size, *values.shape))
        means[start:stop] = _resampled_means(values, counts, seed_index, uniforms)

    point = float(values.sum() / counts.sum())
    return _percentile_interval(point, means, confidence)


def bootstrap_difference_ci(
    a_by_seed: list[list[float]],
    b_by_seed: list[list[float]],
    confidence: float = 0.95,
    resamples: int = 10_000,
    rng_seed: int = 0,
    paired: bool = True,
) -> Interval:
    """Compute the two-level bootstrap interval of mean(a) − mean(b).

    Seed i of ``a`` and seed i of ``b`` must come from the same training seed. When
    ``paired`` is true, each resample draws the same seed indices for both methods.
    Within a seed where both have the same number of episodes, it also draws the same
    episode indices, because episode j is the same held-out task for both. With
    ``paired=False`` the two methods are resampled independently. Raises ValueError when
    the seed counts differ, and for the same invalid inputs as ``bootstrap_ci``.
    """
    _check_settings(confidence, resamples)
    values_a, counts_a = _pad_seeds(a_by_seed, "a_by_seed")
    values_b, counts_b = _pad_seeds(b_by_seed, "b_by_seed")
    if len(counts_a) != len(counts_b):
        raise ValueError(
            f"a_by_seed has {len(counts_a)} seeds and b_by_seed has {len(counts_b)}, but a "
            "paired comparison needs the same training seeds for both methods"
        )
    rng = np.random.default_rng(rng_seed)
    seeds = len(counts_a)
    width = max(values_a.shape[1], values_b.shape[1])
    same_count = counts_a == counts_b

    differences = np.empty(resamples)
    for start, stop in _chunks(resamples, 2 * seeds * width):
        size = stop - start
        seed_index_a = rng.integers(0, seeds, size=(size, seeds))
        uniforms_a = rng.random((size, seeds, width))
        seed_index_b = rng.integers(0, seeds, size=(size, seeds))
        uniforms_b = rng.random((size, seeds, width))
        if paired:
            seed_index_b = seed_index_a
            # Equal episode counts and equal uniforms give equal episode indices.
            shared = same_count[seed_index_a][..., np.newaxis]
            uniforms_b = np.where(shared, uniforms_a, uniforms_b)

        means_a = _resampled_means(values_a, counts_a, seed_index_a, uniforms_a[..., : values_a.shape[1]])
        means_b = _resampled_means(values_b, counts_b, seed_index_b, uniforms_b[..., : values_b.shape[1]])
        differences[start:stop] = means_a - means_b

    point = float(values_a.sum() / counts_a.sum() - values_b.sum() / counts_b.sum())
    return _percentile_interval(point, differences, confidence)


def describe_difference(interval: Interval, label: str, scale: float = 100.0, unit: str = "points") -> str:
    """Write a difference interval and its significance as one plain-English sentence.

    ``scale`` converts the interval's values to ``unit``: the default turns a
    difference of success rates into percentage points. Example: "erl − grpo: +4.2
    points (95% CI −3.1 to +11.5); not significant: the interval includes 0."
    """
    level = f"{interval.confidence * 100:g}%"
    estimate = (
        f"{label}: {_signed(interval.mean * scale)} {unit} "
        f"({level} CI {_signed(interval.low * scale)} to {_signed(interval.high * scale)})"
    )
    if interval.excludes_zero:
        return f"{estimate}; significant at {level}: the interval excludes 0."
    return f"{estimate}; not significant: the interval includes 0."


def _signed(value: float) -> str:
    """Format a number with one decimal, an explicit sign and a typographic minus."""
    return f"{value:+.1f}".replace("-", "\N{MINUS SIGN}")


def _check_settings(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _pad_seeds(values_by_seed: list[list[float]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack the seeds' episode values into a zero-padded array and return it with the counts.

    Shapes: values (seeds, max episodes), counts (seeds,).
    """
    if len(values_by_seed) == 0:
        raise ValueError(f"{name} is empty: the bootstrap needs at least one seed with episodes")
    rows = [np.asarray(values, dtype=float).ravel() for values in values_by_seed]
    for seed, row in enumerate(rows):
        if row.size == 0:
            raise ValueError(f"{name}[{seed}] has no episodes: every seed needs at least one")
        if not np.all(np.isfinite(row)):
            raise ValueError(f"{name}[{seed}] contains NaN or infinite values: {row.tolist()}")

    counts = np.array([row.size for row in rows])
    values = np.zeros((len(rows), counts.max()))
    for seed, row in enumerate(rows):
        values[seed, : row.size] = row
    return values, counts


def _chunks(resamples: int, draws_per_resample: int) -> list[tuple[int, int]]:
    """Split range(resamples) into (start, stop) chunks that bound the draws held in memory."""
    size = max(1, _DRAWS_PER_CHUNK // max(1, draws_per_resample))
    return [(start, min(start + size, resamples)) for start in range(0, resamples, size)]


def _resampled_means(
    values: np.ndarray, counts: np.ndarray, seed_index: np.ndarray, uniforms: np.ndarray
) -> np.ndarray:
    """Return the mean over all episodes of each resample.

    values (S, E) zero-padded episode values, counts (S,) episodes per seed,
    seed_index (B, S) the resampled seeds, uniforms (B, S, E) in [0, 1).
    Resampled seed k of resample b draws counts[seed] episode indices
    floor(u * counts[seed]) from the first counts[seed] uniforms of row (b, k).
    """
    seed_counts = counts[seed_index]  # (B, S)
    episode_index = (uniforms * seed_counts[..., np.newaxis]).astype(np.int64)  # (B, S, E)
    drawn = values[seed_index[..., np.newaxis], episode_index]  # (B, S, E)
    in_seed = np.arange(values.shape[1]) < seed_counts[..., np.newaxis]  # (B, S, E)
    totals = np.where(in_seed, drawn, 0.0).sum(axis=(1, 2))  # (B,)
    return totals / seed_counts.sum(axis=1)


def _percentile_interval(point: float, statistics: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(statistics, [tail, 1 - tail])
    return Interval(mean=point, low=float(low), high=float(high), confidence=confidence)
