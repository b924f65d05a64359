"""Tests of the two-level bootstrap intervals and the significance sentence."""

from __future__ import annotations

import time

import numpy as np
import pytest

from erlgym.eval.stats import Interval, bootstrap_ci, bootstrap_difference_ci, describe_difference


def outcomes(rng: np.random.Generator, rates: list[float], episodes: int) -> list[list[float]]:
    """Draw 0/1 episode outcomes for each seed's success rate."""
    return [(rng.random(episodes) < rate).astype(float).tolist() for rate in rates]


def test_interval_contains_mean():
    values = outcomes(np.random.default_rng(1), [0.3, 0.5, 0.4], 64)

    interval = bootstrap_ci(values)

    assert interval.mean == pytest.approx(np.mean(np.concatenate(values)))
    assert interval.low < interval.mean < interval.high
    assert interval.confidence == 0.95


def test_interval_pools_unequal_seeds():
    interval = bootstrap_ci([[1.0, 1.0, 1.0], [0.0]])

    assert interval.mean == pytest.approx(0.75)
    assert interval.low == 0.0
    assert interval.high == 1.0


def test_interval_narrows_with_more_episodes():
    rng = np.random.default_rng(2)

    few = bootstrap_ci(outcomes(rng, [0.5, 0.5, 0.5], 16))
    many = bootstrap_ci(outcomes(rng, [0.5, 0.5, 0.5], 256))

    assert many.high - many.low < 0.6 * (few.high - few.low)


def test_one_seed_bootstraps_episodes():
    interval = bootstrap_ci([[1, 0, 1, 0, 1, 0, 1, 0]])

    assert interval.mean == 0.5
    assert interval.low < 0.5 < interval.high


def test_higher_confidence_widens_interval():
    values = outcomes(np.random.default_rng(3), [0.4, 0.6], 64)

    narrow = bootstrap_ci(values, confidence=0.8)
    wide = bootstrap_ci(values, confidence=0.99)

    assert wide.low < narrow.low
    assert wide.high > narrow.high


def test_same_rng_seed_gives_same_interval():
    values = outcomes(np.random.default_rng(4), [0.2, 0.7, 0.5], 64)
    other = outcomes(np.random.default_rng(5), [0.3, 0.6, 0.5], 64)

    assert bootstrap_ci(values, rng_seed=7) == bootstrap_ci(values, rng_seed=7)
    assert bootstrap_difference_ci(values, other, rng_seed=7) == bootstrap_difference_ci(values, other, rng_seed=7)
    assert bootstrap_ci(values, rng_seed=7) != bootstrap_ci(values, rng_seed=8)


def test_bootstrap_runs_fast():
    rng = np.random.default_rng(6)
    a = outcomes(rng, [0.5, 0.6, 0.4], 64)
    b = outcomes(rng, [0.4, 0.5, 0.3], 64)

    started = time.perf_counter()
    bootstrap_ci(a, resamples=10_000)
    bootstrap_difference_ci(a, b, resamples=10_000)

    assert time.perf_counter() - started < 1.0


def test_empty_input_raises():
    with pytest.raises(ValueError, match="values_by_seed is empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"values_by_seed\[1\] has no episodes"):
        bootstrap_ci([[1.0], []])
    with pytest.raises(ValueError, match="b_by_seed is empty"):
        bootstrap_difference_ci([[1.0]], [])


def test_invalid_values_and_settings_raise():
    with pytest.raises(ValueError, match="NaN or infinite"):
        bootstrap_ci([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        bootstrap_ci([[1.0]], confidence=95)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        bootstrap_ci([[1.0]], resamples=0)


def test_clear_difference_is_significant():
    rng = np.random.default_rng(7)
    a = outcomes(rng, [0.9, 0.9, 0.9], 64)
    b = outcomes(rng, [0.1, 0.1, 0.1], 64)

    difference = bootstrap_difference_ci(a, b)

    assert difference.mean == pytest.approx(np.mean(np.concatenate(a)) - np.mean(np.concatenate(b)))
    assert difference.low > 0.6
    assert difference.excludes_zero


def test_identical_pair_is_not_significant():
    values = outcomes(np.random.default_rng(8), [0.5, 0.3, 0.6], 64)

    difference = bootstrap_difference_ci(values, values)

    assert difference.mean == 0.0
    assert not difference.excludes_zero


def test_pairing_narrows_correlated_difference():
    # Seed effects shared by both methods: the seeds differ a lot, the methods little.
    rng = np.random.default_rng(9)
    seed_rates = [0.1, 0.5, 0.9]
    a = outcomes(rng, [rate + 0.05 for rate in seed_rates], 64)
    b = outcomes(rng, seed_rates, 64)

    paired = bootstrap_difference_ci(a, b, paired=True)
    unpaired = bootstrap_difference_ci(a, b, paired=False)

    assert paired.mean == pytest.approx(unpaired.mean)
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)


def test_paired_episodes_cancel_shared_outcomes():
    # Method a solves exactly the episodes b solves plus episode 0 of each seed, so every
    # jointly drawn resample has a difference in [0, draws of episode 0 / episodes].
    b = [[0.0, 1.0, 0.0, 1.0] * 8 for _ in range(2)]
    a = [[1.0] + seed[1:] for seed in b]

    difference = bootstrap_difference_ci(a, b)

    assert difference.low >= 0.0
    assert difference.mean == pytest.approx(1 / 32)


def test_seed_count_mismatch_raises():
    with pytest.raises(ValueError, match="a_by_seed has 2 seeds and b_by_seed has 3"):
        bootstrap_difference_ci([[1.0], [0.0]], [[1.0], [0.0], [1.0]])


def test_unequal_episode_counts_are_resampled():
    difference = bootstrap_difference_ci([[1.0, 1.0, 0.0]], [[0.0, 1.0]])

    assert difference.mean == pytest.approx(2 / 3 - 1 / 2)
    assert difference.low < difference.mean < difference.high


def test_excludes_zero_at_bounds():
    assert Interval(mean=0.1, low=0.01, high=0.2, confidence=0.95).excludes_zero
    assert Interval(mean=-0.1, low=-0.2, high=-0.01, confidence=0.95).excludes_zero
    assert not Interval(mean=0.1, low=0.0, high=0.2, confidence=0.95).excludes_zero
    assert not Interval(mean=0.0, low=-0.1, high=0.1, confidence=0.95).excludes_zero


def test_sentence_for_nonsignificant_difference():
    interval = Interval(mean=0.042, low=-0.031, high=0.115, confidence=0.95)

    sentence = describe_difference(interval, "ERL \N{MINUS SIGN} GRPO")

    assert sentence == (
        "ERL \N{MINUS SIGN} GRPO: +4.2 points (95% CI \N{MINUS SIGN}3.1 to +11.5); "
        "not significant: the interval includes 0."
    )


def test_sentence_for_significant_difference():
    interval = Interval(mean=-0.2, low=-0.3, high=-0.1, confidence=0.9)

    sentence = describe_difference(interval, "a \N{MINUS SIGN} b")

    assert sentence == (
        "a \N{MINUS SIGN} b: \N{MINUS SIGN}20.0 points (90% CI \N{MINUS SIGN}30.0 to \N{MINUS SIGN}10.0); "
        "significant at 90%: the interval excludes 0."
    )
