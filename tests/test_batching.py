"""n-choices batching through the response cache, and the fallback for endpoints that ignore `n`."""

import pytest

from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, make_cfg, run_pipeline, spec_of

QUESTIONS, SAMPLES = 3, 10


def job_cfg(server, paper_csv, workdir, *extra):
    return make_cfg(
        *fake_model_overrides(server.base_url, paper_csv, workdir),
        f"dataset.limit={QUESTIONS}",
        f"samples={SAMPLES}",
        "bootstrap.resamples=100",
        *extra,
    )


def sample_indices_per_question(result):
    indices = {}
    for record in result.records:
        indices.setdefault(record.question_id, []).append(record.sample_index)
    return {question: sorted(found) for question, found in indices.items()}


def test_five_samples_per_request_halve_requests_per_prompt(paper_csv, tmp_path):
    with FakeOpenAIServer(record=True) as server:
        result = run_pipeline(job_cfg(server, paper_csv, tmp_path, "model.n_per_request=5"))
        assert server.stats.requests == QUESTIONS * 2
        assert all(body["n"] == 5 for body in server.stats.bodies)
    assert result.scores.n_responses == QUESTIONS * SAMPLES
    assert all(found == list(range(SAMPLES)) for found in sample_indices_per_question(result).values())
    assert result.usage["model"].cache_misses == QUESTIONS * SAMPLES


def test_endpoint_ignoring_n_falls_back_to_single_requests(paper_csv, tmp_path):
    with FakeOpenAIServer(honour_n=False) as server:
        result = run_pipeline(job_cfg(server, paper_csv, tmp_path, "model.n_per_request=5"))
        # each of the 6 batched requests returns one choice; the 4 missing samples of each are asked singly
        assert server.stats.requests == QUESTIONS * SAMPLES
    assert result.scores.n_responses == QUESTIONS * SAMPLES
    assert all(found == list(range(SAMPLES)) for found in sample_indices_per_question(result).values())
    assert len({r.response for r in result.records if r.question_id == result.records[0].question_id}) > 1


def test_cache_entries_stay_per_sample_whatever_the_batch_size(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        first = run_pipeline(job_cfg(server, paper_csv, tmp_path, "model.n_per_request=5"))
        server.stats.reset()
        again = run_pipeline(job_cfg(server, paper_csv, tmp_path, "model.n_per_request=1"))
        assert server.stats.requests == 0
    assert again.usage["model"].cache_hits == QUESTIONS * SAMPLES
    assert [r.response for r in again.records] == [r.response for r in first.records]
    assert again.scores.similarity.value == pytest.approx(first.scores.similarity.value)
