"""Do the intervals cover the truth as often as they claim? Simulated questions with known model
distributions, observed through finitely many answers, as a job observes them.

The estimand is the one a bootstrap over questions stands for: the mean similarity between the humans'
and the model's TRUE answer distributions over the population of questions that the asked ones are a sample
of. Each replication draws fresh questions (human shares, the model's true shares, 10% unclassifiable
answers) and fresh answers, then asks both intervals, exactly as `summarise` does, whether they contain it.
"""

import math

import numpy as np
import pytest

from culturealign.metrics import mean_ci, similarities, two_stage_ci, wasserstein_similarity

QUESTIONS = 72  # the paper's question set
REPLICATIONS = 300
RESAMPLES = 400
SPREAD = 0.1  # true model share = human share + N(0, SPREAD), clipped to [0, 1]
UNCLASSIFIABLE = 0.1


def population(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(human shares, model's true answer shares incl. unclassifiable last) for `size` binary questions."""
    human = rng.uniform(0.1, 0.9, size)
    model = np.clip(human + rng.normal(0.0, SPREAD, size), 0.0, 1.0)
    classifiable = 1.0 - UNCLASSIFIABLE
    return np.stack([human, 1 - human], 1), np.stack([model * classifiable, (1 - model) * classifiable, np.full(size, UNCLASSIFIABLE)], 1)


def true_mean_similarity() -> float:
    human, model = population(np.random.default_rng(12345), 2_000_000)
    return float(similarities(human, model[:, :2]).mean())


def coverage(answers_per_question: int) -> dict[str, float]:
    truth = true_mean_similarity()
    rng = np.random.default_rng(answers_per_question)
    hits = {"questions": 0, "questions_and_answers": 0}
    for replication in range(REPLICATIONS):
        human, model = population(rng, QUESTIONS)
        answers = rng.multinomial(answers_per_question, model)
        observed = similarities(human, answers[:, :2])
        one = mean_ci(observed[~np.isnan(observed)], RESAMPLES, 0.95, "percentile", seed=replication)
        two = two_stage_ci(human, answers, RESAMPLES, 0.95, seed=replication)
        hits["questions"] += one.low <= truth <= one.high
        hits["questions_and_answers"] += two.low <= truth <= two.high
    return {kind: count / REPLICATIONS for kind, count in hits.items()}


def test_two_stage_interval_covers_near_nominal_where_questions_only_does_not():
    """100 answers per question (the paper's samples). Measured: questions only 0.82, two-stage 0.93."""
    measured = coverage(100)
    print(f"coverage at 100 answers per question (nominal 0.95): {measured}")
    assert measured["questions"] <= 0.88  # its interval sits below the truth: the plug-in bias it ignores
    assert 0.90 <= measured["questions_and_answers"] <= 0.99


def test_with_few_answers_two_stage_is_far_better_but_below_nominal():
    """20 answers per question (a cheap run). Measured: questions only 0.03, two-stage 0.86: one bootstrap
    estimates only part of the bias of a similarity from ~18 classifiable answers."""
    measured = coverage(20)
    print(f"coverage at 20 answers per question (nominal 0.95): {measured}")
    assert measured["questions"] <= 0.10
    assert 0.80 <= measured["questions_and_answers"] <= 0.95


def test_vectorised_similarity_matches_the_scalar_one():
    rng = np.random.default_rng(4)
    for n in (2, 3, 5):
        human = rng.dirichlet(np.ones(n), 20)
        counts = rng.multinomial(30, rng.dirichlet(np.ones(n), 20))
        expected = [wasserstein_similarity(h, c) if c.sum() else math.nan for h, c in zip(human, counts)]
        np.testing.assert_allclose(similarities(human, counts), expected)
    assert math.isnan(similarities(np.array([0.5, 0.5]), np.array([0, 0])))


def test_two_stage_estimate_is_the_mean_over_scored_questions():
    human = [[0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]]
    answers = [[60, 30, 10], [50, 50, 0], [0, 0, 100], [10, 90, 0]]  # question 3: nothing classifiable
    estimate = two_stage_ci(human, answers, resamples=500, seed=3)
    expected = np.mean([1 - abs(60 / 90 - 0.7), 1.0, 1 - abs(10 / 100 - 0.6)])
    assert estimate.value == pytest.approx(expected)
    assert estimate.n == 3
    assert 0.0 <= estimate.low < estimate.value < estimate.high <= 1.0
    assert two_stage_ci(human, answers, resamples=500, seed=3) == estimate  # seeded: reproducible
    assert two_stage_ci(human, answers, resamples=500, seed=4) != estimate


def test_two_stage_degenerate_and_invalid_inputs():
    certain = two_stage_ci([[1.0, 0.0]] * 5, [[40, 0, 0]] * 5, resamples=100)
    assert (certain.value, certain.low, certain.high, certain.n) == (1.0, 1.0, 1.0, 5)
    assert math.isnan(two_stage_ci([[0.5, 0.5]], [[0, 0, 7]]).value)  # nothing classifiable anywhere
    with pytest.raises(ValueError, match="n \\+ 1 answer counts"):
        two_stage_ci([[0.5, 0.5]], [[1, 2]])
    with pytest.raises(ValueError, match="non-negative integers"):
        two_stage_ci([[0.5, 0.5]], [[0.4, 0.6, 0.0]])


def test_summarise_and_the_spec_pick_the_configured_interval(paper_csv):
    from culturealign.dataset import read_questions
    from culturealign.scoring import summarise, tally
    from tests.helpers import make_cfg, spec_of

    spec = spec_of(make_cfg(f"dataset.path={paper_csv}", "model=openai-compatible", "model.base_url=http://127.0.0.1:9/v1"))
    assert spec.bootstrap.kind.value == "questions_and_answers" and spec.resamples_answers  # the default
    questions = read_questions(paper_csv)[:6]
    answers = [(q.id, 1 + (i + j) % 3 // 2) for i, q in enumerate(questions) for j in range(10)] + [(questions[0].id, None)]
    scored = tally(questions, spec.country, answers)
    two = summarise(scored, 200, 0.95, "basic", 5, resample_answers=True).similarity
    human = [s.human for s in scored]
    assert two == two_stage_ci(human, [[*s.counts, s.unclassifiable] for s in scored], 200, 0.95, 5)
    one = summarise(scored, 200, 0.95, "basic", 5).similarity
    values = [wasserstein_similarity(s.human, s.counts) for s in scored]
    assert one == mean_ci(values, 200, 0.95, "basic", 5) and one.value == pytest.approx(two.value)

    for overrides in (["bootstrap.kind=questions"], ["estimator=logprobs"]):  # logprobs: no sampled answers
        cfg = make_cfg(f"dataset.path={paper_csv}", "model=openai-compatible", "model.base_url=http://127.0.0.1:9/v1", *overrides)
        assert not spec_of(cfg).resamples_answers
