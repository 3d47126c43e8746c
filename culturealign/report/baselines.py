"""Reference points that give a similarity its meaning: a model answering uniformly at random, another
country's population answering the same questions, and a perfectly aligned model observed through the
number of classifiable samples actually obtained (finite-sample ceiling)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from culturealign.metrics import finite_sample_ceiling, uniform_similarity, wasserstein_similarity
from culturealign.report.runs import RunRecord, Sweep


@dataclass(frozen=True)
class References:
    uniform: float  # uniform-random model against this country, over the row's questions
    humans: dict[str, float]  # other country's label -> its population against this one, on shared questions
    ceilings: dict[str, float]  # style -> finite-sample ceiling of that run


def references(sweep: Sweep) -> dict[tuple, References]:
    """(group, country) -> reference points, for every row of Table 1."""
    rows = sweep.rows()
    result = {}
    for row in rows:
        humans = row.humans()
        others = [other for other in rows if other.group == row.group and other.country != row.country]
        result[(row.group, row.country)] = References(
            uniform=uniform_baseline(humans),
            humans={other.label: human_vs_human(humans, other.humans()) for other in others},
            ceilings={style: sample_ceiling(run) for style, run in row.runs.items()},
        )
    return result


def uniform_baseline(humans: dict[str, list[float]]) -> float:
    return _mean(uniform_similarity(human) for human in humans.values())


def human_vs_human(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Mean similarity of two populations' answer distributions on the questions both answered."""
    return _mean(wasserstein_similarity(a[q], b[q]) for q in a if q in b)


def sample_ceiling(run: RunRecord) -> float:
    """Mean over the run's scored questions of the similarity a perfectly aligned model would reach with
    that question's number of classifiable answers. Exact distributions (logprobs) have no sampling noise."""
    if run.params.get("estimator") == "logprobs":
        return 1.0
    return _mean(
        _ceiling(tuple(q["human_distribution"]), round(sum(q["model_counts"])))
        for q in run.questions
        if q.get("similarity") is not None
    )


@lru_cache(maxsize=4096)  # runs of one sweep share questions and sample counts
def _ceiling(human: tuple[float, ...], n_samples: int) -> float:
    return finite_sample_ceiling(human, n_samples)


def _mean(values) -> float:
    array = np.fromiter(values, dtype=float)
    return float(array.mean()) if array.size else math.nan
