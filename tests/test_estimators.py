"""estimator=logprobs: first-token probabilities -> answer distribution, checked against known probabilities."""

import math

import pytest
from scipy.stats import chi2

from culturealign.errors import ModelError
from culturealign.estimators import add_estimate, option_mass, tempered
from culturealign.models.base import Completion
from tests.fake_openai import REFUSAL_TEXT, FakeOpenAIServer, Policy, question_key
from tests.helpers import fake_model_overrides, make_cfg, run_pipeline, spec_of

QUESTIONS = 6
REFUSAL_TOKEN = REFUSAL_TEXT.split()[0]


def logs(probs: dict[str, float]) -> dict[str, float]:
    return {token: math.log(p) for token, p in probs.items()}


def test_temperature_one_keeps_the_distribution_and_lower_sharpens_it():
    probs = {"1": 0.6, "2": 0.3, "I": 0.1}
    assert tempered(logs(probs), 1.0) == pytest.approx(probs)
    sharp = tempered(logs(probs), 0.5)
    z = 0.36 + 0.09 + 0.01
    assert sharp == pytest.approx({"1": 0.36 / z, "2": 0.09 / z, "I": 0.01 / z})
    assert tempered(logs(probs), 0.0) == {"1": 1.0}


def test_top_p_truncates_after_tempering_and_renormalises():
    probs = {"1": 0.6, "2": 0.3, "I": 0.1}
    assert tempered(logs(probs), 1.0, top_p=0.85) == pytest.approx({"1": 2 / 3, "2": 1 / 3})
    assert tempered(logs(probs), 1.0, top_p=0.5) == pytest.approx({"1": 1.0})


def test_option_tokens_are_stripped_numbers_in_range_and_the_rest_is_unclassifiable():
    probs = {"1": 0.4, " 1": 0.1, "2": 0.2, "3": 0.2, "Sure": 0.1}
    assert option_mass(logs(probs), 2, 1.0) == pytest.approx({1: 0.5, 2: 0.2})


def test_an_answer_without_logprobs_is_a_clear_error():
    with pytest.raises(ModelError, match="estimator=sample"):
        add_estimate(None, Completion("1"), 0.7, 1.0)


def logprob_cfg(server, paper_csv, workdir, *extra):
    return make_cfg(
        *fake_model_overrides(server.base_url, paper_csv, workdir),
        f"dataset.limit={QUESTIONS}",
        "bootstrap.resamples=100",
        "estimator=logprobs",
        *extra,
    )


def test_one_request_per_question_recovers_the_known_distribution(paper_csv, tmp_path):
    policy = Policy(seed=0, refusal_rate=0.05)
    with FakeOpenAIServer(policy=policy, record=True) as server:
        result = run_pipeline(logprob_cfg(server, paper_csv, tmp_path, "model.temperature=1.0", "samples=100"))
        assert server.stats.requests == QUESTIONS
        body = server.stats.bodies[0]
        assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert result.scores.n_responses == QUESTIONS
    for score, record in zip(result.scores.questions, result.records):
        p1, p2 = policy.option_probs(question_key(record.prompt), 2)
        assert score.counts == pytest.approx([0.95 * p1, 0.95 * p2])
        assert score.unclassifiable == pytest.approx(0.05)
    assert result.scores.unclassifiable_rate == pytest.approx(0.05)


class TemperedSampling(Policy):
    """A model with known first-token probabilities (top_logprobs, temperature 1) sampled at 0.7."""

    temperature = 0.7

    def classification_answer(self, rng, key, n_options):
        alternatives = self.top_logprobs(key, n_options)
        weights = [p ** (1 / self.temperature) for _, p in alternatives]
        token = rng.choices([t for t, _ in alternatives], weights)[0]
        return REFUSAL_TEXT if token == REFUSAL_TOKEN else token


def test_sample_and_logprob_estimators_agree_within_sampling_error(paper_csv, tmp_path):
    samples = 400
    deterministic = ["model.temperature=0.7", "concurrency=1", "model.n_per_request=100"]
    with FakeOpenAIServer(policy=TemperedSampling(seed=3, refusal_rate=0.1)) as server:
        sampled = run_pipeline(logprob_cfg(server, paper_csv, tmp_path, *deterministic, "estimator=sample", f"samples={samples}"))
        estimated = run_pipeline(logprob_cfg(server, paper_csv, tmp_path, *deterministic, f"samples={samples}"))
        assert server.stats.requests == QUESTIONS * samples // 100 + QUESTIONS
    z_scores = []
    for by_sampling, by_logprobs in zip(sampled.scores.questions, estimated.scores.questions):
        p = by_logprobs.model_distribution[0]
        standard_error = math.sqrt(p * (1 - p) / sum(by_sampling.counts))
        z_scores.append((by_sampling.model_distribution[0] - p) / standard_error)
    assert max(abs(z) for z in z_scores) <= 4
    assert sum(z * z for z in z_scores) <= chi2.ppf(0.999, QUESTIONS)  # jointly, not only one by one
    unclassifiable = estimated.scores.unclassifiable_rate
    pooled_error = math.sqrt(unclassifiable * (1 - unclassifiable) / (QUESTIONS * samples))
    assert abs(sampled.scores.unclassifiable_rate - unclassifiable) <= 4 * pooled_error
    assert abs(sampled.scores.similarity.value - estimated.scores.similarity.value) < 0.03
