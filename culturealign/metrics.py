"""The maths: answer distributions, Wasserstein similarity, bootstrap confidence intervals.

Pure functions on numbers; nothing here knows about models, prompts or MLflow.

Two intervals for the mean similarity over questions:
- `mean_ci` (bootstrap.kind=questions, the paper's): resamples questions, taking each question's
  similarity as exact.
- `two_stage_ci` (bootstrap.kind=questions_and_answers): resamples questions, then each question's answers
  (multinomially from its observed counts, unclassifiable answers included) and recomputes its similarity.
  A similarity computed from finitely many answers is biased low (a model that answers exactly like the
  population still scores below 1, see `finite_sample_ceiling`); the answer stage reproduces that bias in
  the resamples, and the basic interval (2 x estimate - quantiles) moves the interval up by it (a percentile
  interval of the same resamples would add the bias a second time). Measured on simulated questions
  (tests/test_coverage.py: 72 questions, human shares uniform in [0.1, 0.9], true model shares within
  N(0, 0.1) of them, 10% unclassifiable answers, nominal 95%): with 100 answers per question the
  questions-only interval covers the true mean similarity 82% of the time, the two-stage one 93% (its
  percentile variant 51%); with 20 answers 3% and 86%. Neither is right for a model whose distributions are
  within a few points of the humans' on every question (true similarity near 1): there the bias is larger
  than one bootstrap can estimate.
"""

from __future__ import annotations

import inspect
import math
import warnings
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


def similarities(human: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Vectorised `wasserstein_similarity` over the last axis: `human` shares and `counts` per option
    (same shape, broadcastable); NaN where a row of counts is all zero."""
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        model = counts / total
    gaps = np.abs(np.cumsum(model, axis=-1) - np.cumsum(human, axis=-1))[..., :-1]
    return 1.0 - gaps.sum(axis=-1) / (human.shape[-1] - 1)


TWO_STAGE_CHUNK = 500  # resamples drawn at once: bounds memory at resamples x questions x options


def two_stage_ci(
    human: Sequence[Sequence[float]],
    answers: Sequence[Sequence[int]],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean similarity over questions with a two-stage bootstrap (questions, then answers) basic interval.

    human[q]: the population's shares per option; answers[q]: the count of sampled answers per option
    followed by the unclassifiable count. A question without any classifiable answer is left out of the
    mean, in the data as in a resample. The interval is clipped to [0, 1] and always contains the estimate."""
    if len(human) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    human_array, counts = _question_arrays(human, answers)
    observed = similarities(human_array, counts[:, :-1])
    scored = ~np.isnan(observed)
    if not scored.any():
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(observed[scored].mean())
    boot = _two_stage_means(human_array, counts, resamples, np.random.default_rng(seed))
    if boot.size == 0:  # every resample drew unscored questions only
        return Estimate(mean, mean, mean, int(scored.sum()))
    alpha = (1 - confidence) / 2
    upper, lower = np.quantile(boot, [1 - alpha, alpha])
    low, high = max(0.0, 2 * mean - upper), min(1.0, 2 * mean - lower)
    return Estimate(mean, min(low, mean), max(high, mean), int(scored.sum()))


def _question_arrays(human, answers) -> tuple[np.ndarray, np.ndarray]:
    human_array = np.asarray(human, dtype=float)
    counts = np.asarray(answers, dtype=float)
    if human_array.ndim != 2 or counts.shape != (human_array.shape[0], human_array.shape[1] + 1):
        raise ValueError(
            f"need one human distribution over n options and n + 1 answer counts per question, "
            f"got shapes {human_array.shape} and {counts.shape}"
        )
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("answer counts must be non-negative integers (sampled answers, not expected counts)")
    return human_array / human_array.sum(axis=1, keepdims=True), counts


def _two_stage_means(human: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` bootstrap means: questions with replacement, then each one's answers multinomially."""
    totals = counts.sum(axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals[:, None] > 0, counts / np.maximum(totals, 1)[:, None], 0.0)
    means = []
    for start in range(0, resamples, TWO_STAGE_CHUNK):
        picked = rng.integers(0, len(counts), size=(min(TWO_STAGE_CHUNK, resamples - start), len(counts)))
        redrawn = rng.multinomial(totals[picked], shares[picked])
        values = similarities(human[picked], redrawn[..., :-1])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample of unscored questions only: NaN
            means.append(np.nanmean(values, axis=1))
    means = np.concatenate(means)
    return means[~np.isnan(means)]


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
