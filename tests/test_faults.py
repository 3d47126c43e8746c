"""Flaky endpoints: 429 (with and without Retry-After), 5xx, timeouts, dropped connections, malformed
replies. A job still gets every planned sample exactly once, counts its retries, and a request that fails
for good fails its job clearly without losing answers already paid for."""

import logging

import pytest

from culturealign.errors import ModelError
from culturealign.models.cache import ResponseCache
from tests.fake_openai import FakeOpenAIServer, FaultPlan
from tests.jobs import job_cfg, only_run, run_in_process, small_sweep, tracking_client
from tests.sweep_runs import parent_and_children, responses

QUESTIONS, SAMPLES = 3, 40
FLAKY = FaultPlan(  # ~10% errors of every kind and 2% dropped connections
    seed=7,
    rate_429=0.02,
    rate_429_retry_after=0.02,
    retry_after=0.05,
    rate_500=0.02,
    rate_503=0.02,
    rate_malformed=0.01,
    rate_empty_choices=0.01,
    rate_drop=0.02,
)


def assert_every_sample_once(client, run, folder, questions: int, samples: int) -> None:
    rows = responses(client, run.info.run_id, folder)
    pairs = [(row["question_id"], row["sample_index"]) for row in rows]
    assert len(pairs) == len(set(pairs)) == questions * samples
    by_question: dict[str, set[int]] = {}
    for question, index in pairs:
        by_question.setdefault(question, set()).add(index)
    assert len(by_question) == questions and all(indices == set(range(samples)) for indices in by_question.values())


def test_flaky_server_every_sample_once_and_retries_counted(tmp_path, paper_csv, caplog):
    caplog.set_level(logging.INFO, logger="culturealign")
    with FakeOpenAIServer(faults=FLAKY) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, f"dataset.limit={QUESTIONS}", f"samples={SAMPLES}")
        result = run_in_process(cfg)
        faults, requests = dict(server.stats.faults), server.stats.requests
    client, run = only_run(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["n_responses"] == QUESTIONS * SAMPLES
    assert_every_sample_once(client, run, tmp_path / "artifacts", QUESTIONS, SAMPLES)
    assert {"429", "429_retry_after", "500", "503", "drop"} <= set(faults)
    metrics = run.data.metrics
    assert metrics["model_retries"] == sum(faults.values()) == result.usage["model"].retries > 0
    assert metrics["model_requests"] == requests == QUESTIONS * SAMPLES + sum(faults.values())
    assert metrics["model_errors_429"] == faults["429"] + faults["429_retry_after"]
    assert metrics["model_errors_APIConnectionError"] == faults["drop"]
    assert f"{sum(faults.values())} retried after errors" in caplog.text
    assert len(ResponseCache(cfg.cache.url)) == QUESTIONS * SAMPLES


def test_timeouts_are_retried(tmp_path, paper_csv):
    # a generous client timeout: only the injected stalls (60 s) time out, never a request that is merely
    # slow on a loaded machine
    faults = FaultPlan(seed=3, rate_timeout=0.05, timeout_sleep=60.0)
    with FakeOpenAIServer(faults=faults) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "samples=30", "model.timeout=4")
        run_in_process(cfg)
        timeouts = server.stats.faults.get("timeout", 0)
    client, run = only_run(tmp_path)
    assert run.info.status == "FINISHED" and timeouts > 0
    assert run.data.metrics["model_retries"] == timeouts == run.data.metrics["model_errors_APITimeoutError"]
    assert_every_sample_once(client, run, tmp_path / "artifacts", 2, 30)


def test_failure_beyond_retry_budget_keeps_cached_answers(tmp_path, paper_csv):
    planned = QUESTIONS * SAMPLES
    overrides = [f"dataset.limit={QUESTIONS}", f"samples={SAMPLES}", "model.max_retries=0", "concurrency=1"]
    with FakeOpenAIServer(faults=FaultPlan(seed=5, rate_500=0.03)) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, *overrides)
        with pytest.raises(ModelError, match=rf"{server.base_url} \(default\): .*HTTP 500"):
            run_in_process(cfg)
        client, failed = only_run(tmp_path)
        assert failed.info.status == "FAILED" and "HTTP 500" in failed.data.tags["culturealign.error"]
        paid_for = len(ResponseCache(cfg.cache.url))
        assert 0 < paid_for < planned
        server.faults = FaultPlan()  # the outage is over
        server.stats.reset()
        result = run_in_process(cfg)
        assert server.stats.requests == planned - paid_for  # only what was missing
    assert result.usage["model"].cache_hits == paid_for and result.scores.n_responses == planned


def test_sweep_job_failing_for_good_is_reported_and_the_others_still_run(tmp_path, paper_csv):
    """Hydra's basic launcher runs every job, then exits with the first failure."""
    with FakeOpenAIServer(faults=FaultPlan(rate_500=1.0)) as down, FakeOpenAIServer() as up:
        urls = f"model.base_url={down.base_url},{up.base_url}"  # job 0 fails, job 1 must still run
        result = small_sweep(up.base_url, paper_csv, tmp_path, urls, "model.max_retries=2", "model.retry_backoff=0.01")
        assert down.stats.requests >= 3 and up.stats.requests == 6
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "HTTP 500" in line]
    assert error_lines and f"{down.base_url} (default): request failed after 3 attempts" in error_lines[0]
    parent, children = parent_and_children(tracking_client(tmp_path))
    by_url = {run.data.params["model.base_url"]: run for run in children}
    assert by_url[down.base_url].info.status == "FAILED"
    assert down.base_url in by_url[down.base_url].data.tags["culturealign.error"]
    assert by_url[up.base_url].info.status == "FINISHED"
    assert parent.info.status == "FAILED"
