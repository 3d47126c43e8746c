"""Paired comparisons: is one interaction style (or model, temperature, ...) really better than another?

Two runs of the same country are compared on the questions both scored, bootstrapping those questions
jointly, so the CI is that of the difference itself (the paper only compared overlapping CIs).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from culturealign.metrics import Estimate, paired_difference
from culturealign.report.runs import RUN_KEY, RunRecord, Sweep


@dataclass(frozen=True)
class Comparison:
    dimension: str  # "style" or one of Sweep.keys
    others: tuple[str, ...]  # the other dimensions, held fixed (with the country)
    a: RunRecord
    b: RunRecord
    difference: Estimate  # mean of b - a over the shared scored questions
    dropped: int  # questions of either run not scored in both

    @property
    def a_value(self) -> str:
        return self.a.key(self.dimension)

    @property
    def b_value(self) -> str:
        return self.b.key(self.dimension)

    @property
    def a_label(self) -> str:
        return self.a.style_label if self.dimension == "style" else self.a_value

    @property
    def b_label(self) -> str:
        return self.b.style_label if self.dimension == "style" else self.b_value

    def held_fixed(self) -> str:
        """`US, CoT` or `US, model.temperature=0.7`: what both runs share."""
        parts = [self.a.country_label]
        for name in self.others:
            parts.append(self.a.style_label if name == "style" else f"{name}={self.a.key(name)}")
        return ", ".join(parts)


def comparisons(sweep: Sweep) -> list[Comparison]:
    """Every pair of values of every dimension (style and each extra key), other dimensions held fixed;
    the later value in sweep order minus the earlier one."""
    dimensions = ["style", *(k for k in sweep.keys if k != RUN_KEY)]
    result = []
    for dimension in dimensions:
        others = tuple(k for k in dimensions if k != dimension)
        cells: dict[tuple, list[RunRecord]] = {}
        for run in sweep.runs:
            cells.setdefault((run.country, *(run.key(k) for k in others)), []).append(run)
        for runs in cells.values():
            result.extend(compare(dimension, others, a, b) for a, b in combinations(runs, 2))
    return result


def compare(dimension: str, others: tuple[str, ...], a: RunRecord, b: RunRecord) -> Comparison:
    scores_a, scores_b = a.scores(), b.scores()
    shared = [q for q in scores_a if q in scores_b]
    every = {q["id"] for q in a.questions} | {q["id"] for q in b.questions}
    params = a.params
    difference = paired_difference(
        [scores_b[q] for q in shared],
        [scores_a[q] for q in shared],
        resamples=int(params.get("bootstrap.resamples", 1000)),
        confidence=float(params.get("bootstrap.confidence", 0.95)),
        method=params.get("bootstrap.method", "percentile"),
        seed=int(params.get("seed", 0)),
    )
    return Comparison(dimension, others, a, b, difference, len(every) - len(shared))
