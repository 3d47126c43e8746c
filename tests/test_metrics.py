"""The maths against hand-computed cases and against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from culturealign.metrics import (
    distribution_from_counts,
    finite_sample_ceiling,
    mean_ci,
    paired_difference,
    uniform_similarity,
    wasserstein_similarity,
)


@pytest.mark.parametrize(
    "human, model, expected",
    [
        ([0.5, 0.5], [0.5, 0.5], 1.0),
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([0.7, 0.3], [0.4, 0.6], 0.7),  # binary: 1 - |p - q|
        ([1, 0, 0], [0, 0, 1], 0.0),
        ([1, 0, 0], [0, 1, 0], 0.5),  # one step of two
        ([0.2, 0.3, 0.5], [0.5, 0.3, 0.2], 1 - (0.3 + 0.3) / 2),
    ],
)
def test_wasserstein_similarity_hand_computed(human, model, expected):
    assert wasserstein_similarity(human, model) == pytest.approx(expected)


def test_wasserstein_similarity_matches_scipy_on_random_distributions():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 7):
        for _ in range(20):
            p, q = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
            positions = np.arange(n)
            expected = 1 - stats.wasserstein_distance(positions, positions, p, q) / (n - 1)
            assert wasserstein_similarity(p, q) == pytest.approx(expected)
            # equivalently, the L1 distance between the CDFs
            assert wasserstein_similarity(p, q) == pytest.approx(1 - np.abs(np.cumsum(p - q)).sum() / (n - 1))


def test_counts_are_normalised_and_inputs_checked():
    assert list(distribution_from_counts([3, 1])) == [0.75, 0.25]
    assert distribution_from_counts([0, 0]) is None
    assert wasserstein_similarity([2, 2], [3, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        wasserstein_similarity([1, 0], [1, 0, 0])
    with pytest.raises(ValueError):
        wasserstein_similarity([0, 0], [1, 0])


def test_mean_ci_matches_scipy_bootstrap():
    values = np.random.default_rng(2).uniform(0.4, 0.9, size=72)
    estimate = mean_ci(values, resamples=1000, confidence=0.95, seed=7)
    reference = stats.bootstrap(
        (values,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert estimate.value == pytest.approx(values.mean())
    assert (estimate.low, estimate.high) == pytest.approx((reference.low, reference.high))
    assert estimate.low < estimate.value < estimate.high
    assert mean_ci(values, seed=7) == estimate  # seeded: reproducible


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_mean_ci_never_nan_on_degenerate_data(method):
    for values in ([0.8], [0.8, 0.8, 0.8], [0.5] * 20 + [0.6]):
        estimate = mean_ci(values, method=method)
        assert not any(math.isnan(x) for x in (estimate.value, estimate.low, estimate.high))
        assert estimate.low <= estimate.value <= estimate.high
    assert math.isnan(mean_ci([]).value)


def test_paired_difference_is_mean_of_differences_with_paired_ci():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 0.9, 50)
    b = a - 0.05 + rng.normal(0, 0.01, 50)
    diff = paired_difference(a, b, seed=1)
    assert diff.value == pytest.approx(np.mean(a - b))
    assert 0.04 < diff.low < diff.value < diff.high < 0.06  # pairing removes the between-question spread
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])


def test_baselines():
    assert uniform_similarity([0.8, 0.2]) == pytest.approx(0.7)
    # A perfectly aligned model seen through n answers: exact binomial expectation.
    p, n = 0.3, 4
    expected = sum(stats.binom.pmf(k, n, p) * (1 - abs(k / n - p)) for k in range(n + 1))
    assert finite_sample_ceiling([p, 1 - p], n) == pytest.approx(expected)
    assert finite_sample_ceiling([p, 1 - p], 10_000) > 0.99
    three = finite_sample_ceiling([0.2, 0.3, 0.5], 20, draws=4000)
    assert 0.85 < three < 1.0
