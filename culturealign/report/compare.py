"""Paired comparisons: is one interaction style (or model, temperature, ...) really better than another?

Two runs of the same country are compared on the questions both scored, bootstrapping those questions
jointly, so the CI is that of the difference itself (the paper only compared overlapping CIs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

from culturealign.metrics import Estimate, paired_difference
from culturealign.report.runs import RUN_KEY, RunRecord, Sweep
from culturealign.tracking import names

_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


@dataclass(frozen=True)
class Comparison:
    dimension: str  # "style" or one of Sweep.keys
    context: tuple[str, ...]  # the values held fixed: country, then the other dimensions
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
    def metric_name(self) -> str:
        """e.g. paired_diff_us_cot_minus_classification (MLflow metric names allow letters, digits, _-./ and space)."""
        name = names.paired_metric(self.context, self.b_value, self.a_value)
        return _METRIC_UNSAFE.sub("_", name)

    def metrics(self) -> dict[str, float]:
        name, d = self.metric_name, self.difference
        return {name: d.value, f"{name}_ci_low": d.low, f"{name}_ci_high": d.high, f"{name}_n": d.n}


def comparisons(sweep: Sweep) -> list[Comparison]:
    """Every pair of values of every dimension (style and each extra key), other dimensions held fixed;
    the later value in sweep order minus the earlier one."""
    dimensions = ["style", *(k for k in sweep.keys if k != RUN_KEY)]
    result = []
    for dimension in dimensions:
        others = [k for k in dimensions if k != dimension]
        cells: dict[tuple, list[RunRecord]] = {}
        for run in sweep.runs:
            cells.setdefault((run.country, *(run.key(k) for k in others)), []).append(run)
        for context, runs in cells.items():
            result.extend(compare(dimension, context, a, b) for a, b in combinations(runs, 2))
    return result


def compare(dimension: str, context: tuple[str, ...], a: RunRecord, b: RunRecord) -> Comparison:
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
    return Comparison(dimension, context, a, b, difference, len(every) - len(shared))
