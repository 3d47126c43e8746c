"""Answers -> per-question distributions -> a run's scores: the counting rules, on hand-made questions
(cases found by mutation testing, tests/MUTATION.md)."""

import math

import pytest

from culturealign.dataset import Question
from culturealign.scoring import add, summarise, tally
from culturealign.spec import CountrySpec

US = CountrySpec(label="US", name="the United States", keys=["United States"])


def question(qid: str, shares: tuple[float, ...]) -> Question:
    return Question(qid, 1, f"{qid}?", tuple(f"option {i}" for i in range(1, len(shares) + 1)), "GAS",
                    {"United States": shares})  # fmt: skip


def test_every_answer_is_counted_once_classifiable_or_not():
    scores = tally([question("q1", (0.5, 0.5)), question("q2", (0.2, 0.8))], US,
                   [("q1", 1), ("q1", 2), ("q1", None), ("q2", 2)])  # fmt: skip
    q1, q2 = scores
    assert (q1.counts, q1.unclassifiable, q1.responses) == ([1.0, 1.0], 1.0, 3)
    assert (q2.counts, q2.unclassifiable, q2.responses) == ([0.0, 1.0], 0.0, 1)
    add(q2, {1: 0.25, 2: 0.5}, 1.0, responses=1)  # an expected count (logprobs): a quarter unclassifiable
    assert (q2.counts, q2.unclassifiable, q2.responses) == ([0.25, 1.5], 0.25, 2)


def test_a_question_without_a_classifiable_answer_is_named_and_left_out_of_the_mean():
    scores = tally([question("q1", (0.7, 0.3)), question("q2", (0.5, 0.5))], US,
                   [("q1", 1), ("q1", 1), ("q2", None), ("q2", None)])  # fmt: skip
    result = summarise(scores, 100, 0.95, "percentile", 0)
    assert scores[1].similarity is None and result.unscored == ["q2"]
    assert result.similarity.value == pytest.approx(0.7) and result.similarity.n == 1  # 1 - |0.7 - 1.0|
    assert result.unclassifiable_rate == 0.5 and result.n_responses == 4


def test_no_answers_at_all_is_nan_never_a_rate():
    result = summarise(tally([question("q1", (0.5, 0.5))], US, []), 100, 0.95, "percentile", 0)
    assert math.isnan(result.unclassifiable_rate) and math.isnan(result.similarity.value) and result.unscored == ["q1"]


def test_a_questions_record_is_what_the_report_reads():
    """distributions.json holds QuestionScore.as_dict(): the report and the audit read these fields."""
    [score] = tally([question("q1", (0.25, 0.75))], US, [("q1", 1), ("q1", 2), ("q1", 2), ("q1", None)])
    summarise([score], 100, 0.95, "percentile", 0)
    assert score.as_dict() == {
        "id": "q1", "row": 1, "question": "q1?", "options": ["option 1", "option 2"],
        "human_distribution": [0.25, 0.75], "model_counts": [1.0, 2.0],
        "model_distribution": [pytest.approx(1 / 3), pytest.approx(2 / 3)], "unclassifiable": 1.0, "responses": 4,
        "similarity": pytest.approx(1 - abs(0.25 - 1 / 3)),
    }  # fmt: skip
    assert tally([question("q2", (0.5, 0.5))], US, [("q2", None)])[0].as_dict()["model_distribution"] is None
