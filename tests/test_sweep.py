"""A real --multirun through the installed CLI against the fake OpenAI-compatible server, checked in MLflow."""

import json

import mlflow
import pytest

from tests.conftest import MINI_SWEEP_QUESTIONS as QUESTIONS, MINI_SWEEP_SAMPLES as SAMPLES

METRICS = [
    "wasserstein_similarity",
    "wasserstein_similarity_ci_low",
    "wasserstein_similarity_ci_high",
    "unclassifiable_rate",
    "n_questions",
    "n_responses",
    "prompt_tokens",
    "completion_tokens",
]


@pytest.fixture(scope="module")
def sweep(mini_sweep):
    return mini_sweep.workdir, mini_sweep.result, mini_sweep.client, mini_sweep.requests


def test_sweep_has_one_parent_and_six_children(sweep):
    _, _, client, _ = sweep
    experiment = client.get_experiment_by_name("culturealign")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("culturealign.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6 == len(runs) - 1
    combos = {(r.data.params["country"], r.data.params["style"]) for r in children}
    assert combos == {(c, s) for c in ("us", "india") for s in ("classification", "cot", "scenarios")}


def test_every_child_has_metrics_params_and_artifacts(sweep, tmp_path):
    workdir, result, client, requests = sweep
    children = [r for r in client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    for run in children:
        metrics, params = run.data.metrics, run.data.params
        assert run.info.status == "FINISHED"
        assert set(METRICS) <= set(metrics)
        assert metrics["wasserstein_similarity_ci_low"] <= metrics["wasserstein_similarity"]
        assert metrics["wasserstein_similarity"] <= metrics["wasserstein_similarity_ci_high"]
        assert 0 <= metrics["unclassifiable_rate"] <= 1
        assert metrics["n_questions"] == QUESTIONS and metrics["n_responses"] == QUESTIONS * SAMPLES
        assert params["model.temperature"] == "0.7" and params["model.top_p"] == "1.0"
        assert params["samples"] == str(SAMPLES) and params["model"] == "openai-compatible"
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
        distributions = json.load(open(f"{local}/distributions.json"))
        assert len(distributions) == QUESTIONS
        assert {"id", "question", "options", "human_distribution", "model_counts", "similarity"} <= set(distributions[0])
        responses = [json.loads(line) for line in open(f"{local}/responses.jsonl")]
        assert len(responses) == QUESTIONS * SAMPLES
        assert {"prompt", "response", "judge_output", "option"} <= set(responses[0])
        if params["style"] != "classification":
            assert all(r["judge_output"] for r in responses)
        # The metric is what the artifact says: mean over scored questions.
        scored = [d["similarity"] for d in distributions if d["similarity"] is not None]
        assert metrics["wasserstein_similarity"] == pytest.approx(sum(scored) / len(scored))
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # one model request per sample; the judge once per distinct (question, response) of the 4 free-text jobs
    model_requests = 6 * QUESTIONS * SAMPLES
    assert model_requests < requests <= model_requests + 4 * QUESTIONS * SAMPLES


def test_summary_printed_for_each_job(sweep):
    _, result, _, _ = sweep
    assert result.stdout.count("Wasserstein similarity") == 6
    assert result.stdout.count("MLflow: experiment") == 6
