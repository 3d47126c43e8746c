"""Extracted answers -> per-question answer distributions -> the run's scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from culturealign.dataset import Question
from culturealign.spec import CountrySpec
from culturealign.metrics import Estimate, distribution_from_counts, mean_ci, wasserstein_similarity


@dataclass
class QuestionScore:
    question: Question
    human: tuple[float, ...]
    counts: list[float]  # per option; expected counts under the logprob estimator
    unclassifiable: float = 0.0
    similarity: float | None = None  # None when every answer was unclassifiable
    responses: int = 0

    @property
    def model_distribution(self) -> list[float] | None:
        distribution = distribution_from_counts(self.counts)
        return None if distribution is None else [float(p) for p in distribution]

    def as_dict(self) -> dict:
        return {
            "id": self.question.id,
            "row": self.question.row,
            "question": self.question.text,
            "options": list(self.question.options),
            "human_distribution": list(self.human),
            "model_counts": self.counts,
            "model_distribution": self.model_distribution,
            "unclassifiable": self.unclassifiable,
            "responses": self.responses,
            "similarity": self.similarity,
        }


@dataclass
class Scores:
    questions: list[QuestionScore]
    similarity: Estimate
    unclassifiable_rate: float
    n_responses: int
    unscored: list[str] = field(default_factory=list)  # ids of questions with no classifiable answer


def tally(questions: Sequence[Question], country: CountrySpec, answers: Sequence[tuple[str, int | None]]) -> list[QuestionScore]:
    """answers: (question id, option 1..n or None) for every response."""
    by_id = {q.id: QuestionScore(q, q.human_distribution(country), [0.0] * len(q.options)) for q in questions}
    for question_id, option in answers:
        add(by_id[question_id], {option: 1.0} if option else {}, 1.0)
    return list(by_id.values())


def add(score: QuestionScore, option_mass: dict[int, float], total: float, responses: int = 1) -> None:
    """Add `total` answers of which `option_mass[k]` chose option k; the rest were unclassifiable."""
    for option, mass in option_mass.items():
        score.counts[option - 1] += mass
    score.unclassifiable += total - sum(option_mass.values())
    score.responses += responses


def summarise(scored: list[QuestionScore], resamples: int, confidence: float, method: str, seed: int) -> Scores:
    for score in scored:
        model = score.model_distribution
        score.similarity = None if model is None else wasserstein_similarity(score.human, model)
    values = [s.similarity for s in scored if s.similarity is not None]
    answered = sum(sum(s.counts) + s.unclassifiable for s in scored)
    unclassifiable = sum(s.unclassifiable for s in scored)
    return Scores(
        questions=scored,
        similarity=mean_ci(values, resamples, confidence, method, seed),
        unclassifiable_rate=unclassifiable / answered if answered else math.nan,
        n_responses=sum(s.responses for s in scored),
        unscored=[s.question.id for s in scored if s.similarity is None],
    )
