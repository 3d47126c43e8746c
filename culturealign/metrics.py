"""The maths: answer distributions, Wasserstein similarity, bootstrap confidence intervals.

Pure functions on numbers; nothing here knows about models, prompts or MLflow.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap confidence interval (low <= value <= high unless n == 0)."""

    value: float
    low: float
    high: float
    n: int


def normalise(weights: Sequence[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=float)
    total = array.sum()
    if array.ndim != 1 or total <= 0 or np.any(array < 0):
        raise ValueError(f"not a distribution: {list(weights)}")
    return array / total


def distribution_from_counts(counts: Sequence[int]) -> np.ndarray | None:
    """Share of each option among the classifiable answers; None when there are none."""
    return normalise(counts) if sum(counts) > 0 else None


def wasserstein_similarity(human: Sequence[float], model: Sequence[float]) -> float:
    """1 - W1 / (n - 1): the earth mover's distance between two distributions over option positions
    0..n-1, scaled to [0, 1] (1 = identical, 0 = all mass at opposite ends)."""
    if len(human) != len(model) or len(human) < 2:
        raise ValueError(f"need two distributions over the same >= 2 options, got {len(human)} and {len(model)}")
    # W1 on positions 0..n-1 one apart is the summed gap between the two CDFs (equal to
    # scipy.stats.wasserstein_distance, checked in the tests, without importing scipy.stats: ~1 s)
    distance = np.abs(np.cumsum(normalise(human) - normalise(model))[:-1]).sum()
    return float(1.0 - distance / (len(human) - 1))


def _stats():
    from scipy import stats  # heavy (~1 s): only when an interval is computed

    return stats


def _rng_argument(seed: int) -> dict:
    # scipy >= 1.15 calls it `rng`; older releases `random_state`.
    name = "rng" if "rng" in inspect.signature(_stats().bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _interval(data: tuple, statistic, paired: bool, resamples: int, confidence: float, method: str, seed: int):
    result = _stats().bootstrap(
        data,
        statistic,
        n_resamples=resamples,
        confidence_level=confidence,
        method=method,
        paired=paired,
        vectorized=True,
        **_rng_argument(seed),
    ).confidence_interval
    low, high = float(result.low), float(result.high)
    if math.isnan(low) or math.isnan(high):  # BCa on near-degenerate data: fall back to percentile
        return _interval(data, statistic, paired, resamples, confidence, "percentile", seed)
    return low, high


def mean_ci(
    values: Sequence[float], resamples: int = 1000, confidence: float = 0.95, method: str = "percentile", seed: int = 0
) -> Estimate:
    """Mean over questions with a bootstrap CI over questions. Degenerate data (one value, or all equal)
    gets the zero-width interval at the mean instead of NaN; no data gives NaN everywhere."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if array.size < 2 or np.ptp(array) == 0:
        return Estimate(mean, mean, mean, int(array.size))
    low, high = _interval((array,), _mean, False, resamples, confidence, method, seed)
    return Estimate(mean, min(low, mean), max(high, mean), int(array.size))


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 1000,
    confidence: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> Estimate:
    """Mean of a - b over the same questions, bootstrapping questions jointly (paired)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    return mean_ci(a - b, resamples, confidence, method, seed)


def _mean(sample, axis=-1):
    return np.mean(sample, axis=axis)


def uniform_similarity(human: Sequence[float]) -> float:
    """Similarity of a model that picks every option equally often."""
    return wasserstein_similarity(human, [1.0] * len(human))


def finite_sample_ceiling(human: Sequence[float], n_samples: int, draws: int = 2000, seed: int = 0) -> float:
    """Expected similarity of a perfectly aligned model observed through `n_samples` answers: even a model
    that answers exactly like the population scores below 1 because its sample distribution is noisy."""
    if n_samples <= 0:
        return math.nan
    p = normalise(human)
    if p.size == 2:  # exact: sum over the binomial
        k = np.arange(n_samples + 1)
        weights = _stats().binom.pmf(k, n_samples, p[0])
        return float(np.sum(weights * (1.0 - np.abs(k / n_samples - p[0]))))
    counts = np.random.default_rng(seed).multinomial(n_samples, p, size=draws)
    return float(np.mean([wasserstein_similarity(p, row) for row in counts]))
