"""Real endpoints: a judge that works on any server, a preflight before any paid request, and a window of
requests in flight that adapts to rate limits (issue 11)."""

from __future__ import annotations

import re

import pytest

from culturealign.errors import ModelError
from tests.fake_openai import FakeOpenAIServer, FaultPlan
from tests.helpers import run_pipeline, spec_of
from tests.jobs import job_cfg, run_in_process, small_sweep, tracking_client

VLLM = ["model.name=llama-3-8b"]


@pytest.mark.parametrize("style", ["cot", "scenarios"])
def test_vllm_style_job_is_judged_by_the_served_model(paper_csv, tmp_path, style):
    with FakeOpenAIServer(served_models=["llama-3-8b"], record=True) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, f"style={style}", *VLLM)
        spec = spec_of(cfg)
        result = run_pipeline(cfg)
        judged = [b for b in server.stats.bodies if b["messages"][0]["content"].startswith("You are tasked")]
    assert (spec.judge.name, spec.judge.base_url, spec.judge.temperature) == ("llama-3-8b", server.base_url, 0.0)
    assert judged and {b["model"] for b in judged} == {"llama-3-8b"}
    assert result.scores.n_responses == 6 and result.costs["judge"].workload_usd == 0 == result.costs["model"].spent_usd


def test_prices_apply_only_at_the_priced_hosted_api(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:  # gpt-4o's list prices, sent to a local server: nothing to pay
        result = run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "model=gpt-4o", f"model.base_url={server.base_url}", "model.api_key_env=null"))
    assert result.costs["model"].workload_tokens[0] > 0 and result.costs["model"].workload_usd == 0


def preflight_fails(server, cfg, pattern: str) -> None:
    server.stats.reset()
    with pytest.raises(ModelError) as raised:
        run_pipeline(cfg)
    assert re.search(pattern, str(raised.value)), str(raised.value)
    assert "\n" not in str(raised.value) and "sk-" not in str(raised.value)
    assert server.stats.requests == 0, "preflight failures send nothing for sampling"


def test_model_name_not_served(paper_csv, tmp_path):
    with FakeOpenAIServer(served_models=["llama-3-8b"]) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "model.name=llama-3-70b")
        preflight_fails(server, cfg, r"model 'llama-3-70b' is not served there \(it serves: llama-3-8b\); fix model\.name")


def test_judge_name_not_served_names_the_judge_key(paper_csv, tmp_path):
    with FakeOpenAIServer(served_models=["llama-3-8b"]) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "style=cot", *VLLM, "judge=openai-compatible", "judge.name=gpt-4")
        preflight_fails(server, cfg, r"model 'gpt-4' is not served there .*; fix judge\.name")


def test_server_without_a_model_list_is_probed(paper_csv, tmp_path):
    with FakeOpenAIServer(served_models=["llama-3-8b"], list_models=False) as server:
        preflight_fails(server, job_cfg(server.base_url, paper_csv, tmp_path, "model.name=other"), r"model 'other' is not served there; fix model\.name")
        run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, *VLLM))  # the right name passes the probe
        assert server.stats.probes >= 1 and server.stats.requests == 6


def test_rejected_key_names_the_variable(paper_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("CULTUREALIGN_TEST_KEY", "sk-wrong")
    with FakeOpenAIServer(api_key="sk-right") as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "model.api_key_env=CULTUREALIGN_TEST_KEY")
        preflight_fails(server, cfg, r"HTTP 401: .*the API key was rejected: check the env var named by model\.api_key_env")
        monkeypatch.setenv("CULTUREALIGN_TEST_KEY", "sk-right")
        assert run_pipeline(cfg).scores.n_responses == 6


def test_endpoint_without_logprobs_fails_before_sampling(paper_csv, tmp_path):
    with FakeOpenAIServer(logprobs=False) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "estimator=logprobs", "model.name=no-logprobs")
        preflight_fails(server, cfg, r"returns no logprobs for 'no-logprobs'; use estimator=sample")


def test_a_sweep_checks_each_endpoint_once(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        result = small_sweep(server.base_url, paper_csv, tmp_path, "seed=1,2,3")
        assert result.returncode == 0, result.stderr[-2000:]
        assert server.stats.model_lists == 1 and server.stats.requests == 18


def test_window_adapts_to_a_rate_limit(paper_csv, tmp_path):
    """A server that answers 429 past 4 requests in flight: the job still completes, and once the window
    has come down, rate-limit replies stay under 10% of requests; the run logs the window and the 429s."""
    with FakeOpenAIServer(max_in_flight=4, latency=0.01) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "concurrency=32", "samples=100", "dataset.limit=10", "model.max_retries=20")
        result = run_in_process(cfg)
        limited = server.stats.faults.get("rate_limit", 0)
    assert result.scores.n_responses == 1000
    total = result.usage["model"].requests
    assert limited == result.usage["model"].rate_limited and limited < 0.10 * total, (limited, total)
    windows = result.usage["model"].concurrency
    assert windows[0] == 32 and min(windows) <= 4
    client = tracking_client(tmp_path)
    [run] = client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
    history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "model_concurrency"), key=lambda m: m.step)]
    assert history == windows and run.data.metrics["model_rate_limited"] == limited


@pytest.mark.parametrize("retry_after", ["0.05", "soon"], ids=["seconds", "unreadable"])
def test_retry_after_is_honoured_or_ignored_when_unreadable(paper_csv, tmp_path, retry_after):
    with FakeOpenAIServer(max_in_flight=1, latency=0.01, retry_after=retry_after) as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "concurrency=8", "samples=10", "model.max_retries=30", "model.retry_backoff=0.01")
        assert run_pipeline(cfg).scores.n_responses == 20


def test_retry_after_as_an_http_date(paper_csv, tmp_path):
    faults = FaultPlan(rate_429_retry_after=0.3, retry_after=1.0, retry_after_as_date=True, seed=3)
    with FakeOpenAIServer(faults=faults) as server:
        result = run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "samples=5", "model.max_retries=10"))
    assert result.scores.n_responses == 10 and result.usage["model"].errors.get("429", 0) > 0


def test_requests_per_minute_spaces_the_requests(paper_csv, tmp_path):
    import time

    with FakeOpenAIServer() as server:
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "samples=5", "model.requests_per_minute=600", "cache.enabled=false")
        started = time.monotonic()
        run_pipeline(cfg)
        elapsed = time.monotonic() - started
    assert elapsed >= 9 * 0.1  # 10 requests at least 0.1 s apart (a lower bound: sleeps never end early)
