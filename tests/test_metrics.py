"""The maths against hand-computed cases and against scipy."""

import inspect
import math

import numpy as np
import pytest
from scipy import stats

from culturealign.metrics import (
    _question_arrays,
    _two_stage_means,
    distribution_from_counts,
    finite_sample_ceiling,
    mean_ci,
    normalise,
    paired_difference,
    two_stage_ci,
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


# --- Cases found by mutation testing (tests/MUTATION.md): each pins one rule a mutant broke unnoticed ---


@pytest.mark.parametrize("weights", [[1.5, -0.5], [0.0, 0.0], [[0.5, 0.5]]], ids=["negative", "zero", "2-d"])
def test_normalise_refuses_what_is_no_distribution(weights):
    with pytest.raises(ValueError, match="not a distribution"):
        normalise(weights)


@pytest.mark.parametrize("human, model", [([0.5, 0.5], [0.2, 0.3, 0.5]), ([1.0], [1.0])], ids=["lengths", "one option"])
def test_similarity_needs_two_distributions_over_the_same_options(human, model):
    with pytest.raises(ValueError, match="need two distributions over the same >= 2 options"):
        wasserstein_similarity(human, model)


def test_every_random_estimate_is_reproducible_from_its_seed():
    a, b = np.random.default_rng(0).random((2, 40))  # enough questions for resamples to differ by seed
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7) != paired_difference(a, b, seed=8)
    human = [0.2, 0.3, 0.5]
    assert finite_sample_ceiling(human, 10) == finite_sample_ceiling(human, 10)
    assert finite_sample_ceiling(human, 10, seed=1) != finite_sample_ceiling(human, 10, seed=2)


def test_a_ceiling_of_no_answers_is_nan_not_a_number():
    assert math.isnan(finite_sample_ceiling([0.2, 0.3, 0.5], 0)) and math.isnan(finite_sample_ceiling([0.4, 0.6], 0))


def test_two_stage_without_a_scored_question_is_nan_with_n_0():
    for human, answers in (([], []), ([[0.5, 0.5]], [[0, 0, 4]])):  # no question; only unclassifiable answers
        estimate = two_stage_ci(human, answers)
        assert all(math.isnan(v) for v in (estimate.value, estimate.low, estimate.high)) and estimate.n == 0


def test_two_stage_interval_is_the_basic_interval_of_its_bootstrap_means():
    """low = 2 * mean - q(1 - alpha/2), high = 2 * mean - q(alpha/2) over the two-stage resample means."""
    human = [[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]
    answers = [[3, 1, 0], [1, 2, 1], [2, 2, 0], [1, 3, 0]]
    for confidence in (0.8, 0.95):
        estimate = two_stage_ci(human, answers, resamples=500, confidence=confidence, seed=3)
        arrays = _question_arrays(human, answers)
        boot = _two_stage_means(*arrays, 500, np.random.default_rng(3))
        upper, lower = np.quantile(boot, [1 - (1 - confidence) / 2, (1 - confidence) / 2])
        assert estimate.n == 4 and estimate.value == pytest.approx(np.mean([1 - abs(h[0] - a[0] / (a[0] + a[1]))
                                                                            for h, a in zip(human, answers)]))  # fmt: skip
        assert estimate.low == pytest.approx(min(max(0.0, 2 * estimate.value - upper), estimate.value))
        assert estimate.high == pytest.approx(max(min(1.0, 2 * estimate.value - lower), estimate.value))


@pytest.mark.parametrize("confidence, method", [(0.8, "percentile"), (0.9, "basic"), (0.95, "BCa")])
def test_mean_ci_is_scipys_bootstrap_at_the_asked_level_and_method(confidence, method):
    values = np.random.default_rng(1).random(30)
    estimate = mean_ci(values, 400, confidence, method, seed=5)
    rng = {"rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state": np.random.default_rng(5)}
    expected = stats.bootstrap((values,), np.mean, n_resamples=400, confidence_level=confidence, method=method, **rng)
    assert (estimate.low, estimate.high) == pytest.approx((expected.confidence_interval.low, expected.confidence_interval.high))
    assert estimate.n == 30 and mean_ci([]).n == 0
