"""The Batch API as a way to run a job, in process against the fake server: the same answers and scores
as live requests, shared through the cache both ways, split across batches, failures resubmitted, a
failed batch named, the batch price paid, and the dry run's live / batch / expected costs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading

import openai
import pytest

from culturealign import pipeline, planning
from culturealign.app import record
from culturealign.errors import ModelError
from culturealign.models import batch as batch_api
from culturealign.models.cache import cache_key
from tests.fake_openai import BatchPlan, FakeOpenAIServer
from tests.helpers import fake_model_overrides, make_cfg, run_pipeline, spec_of

FAST = ("model.batch_poll_seconds=0.001", "judge.batch_poll_seconds=0.001", "model.retry_backoff=0.001")
PRICES = ("model.price_input_per_mtok=1000", "model.price_output_per_mtok=2000", "model.priced=true")  # a fake server is no priced host


def cfg_for(server, paper_csv, workdir, *extra, batch=True, samples=4):
    """A small job (3 questions x `samples`), sent by batch unless `batch=False`."""
    mode = [f"model.batch={batch}", f"judge.batch={batch}", f"samples={samples}"]
    overrides = fake_model_overrides(server.base_url, paper_csv, workdir)
    return make_cfg(*overrides, "dataset.limit=3", "bootstrap.resamples=100", *FAST, *mode, *extra)


def scores(result):
    s = result.scores
    return (s.similarity.value, s.similarity.low, s.similarity.high, s.unclassifiable_rate, s.n_responses)


def journal_states(workdir) -> list[tuple[str, str]]:
    with sqlite3.connect(workdir / "cache.sqlite") as db:
        return db.execute("SELECT state, batch_id FROM batch_submissions ORDER BY created").fetchall()


@pytest.mark.parametrize("style", ["classification", "cot", "scenarios"])
def test_a_batched_job_scores_as_the_live_one_and_sends_no_live_request(paper_csv, tmp_path, style):
    with FakeOpenAIServer(seeded=True) as server:
        extra = (f"style={style}", "model.n_per_request=3")
        live = run_pipeline(cfg_for(server, paper_csv, tmp_path / "live", *extra, batch=False))
        server.stats.reset()
        batched = run_pipeline(cfg_for(server, paper_csv, tmp_path / "batch", *extra))
        assert server.stats.requests == 0  # every answer came by batch; the live path found them cached
        stats = server.batches.stats
    assert scores(batched) == scores(live)
    assert [r.response for r in batched.records] == [r.response for r in live.records]
    assert [r.judge_output for r in batched.records] == [r.judge_output for r in live.records]
    usage = batched.usage["model"]
    assert usage.batches == 1 and usage.batch_requests == live.usage["model"].requests  # the live path's requests
    assert usage.batch_requests == (6 if style != "scenarios" else 12)  # 4 samples: 3 + 1 per prompt (scenarios: 1)
    assert (usage.cache_hits, usage.cache_misses) == (0, 12)
    if style != "classification":
        judge = batched.usage["judge"]
        assert judge.batches == 1 and judge.batch_requests == live.usage["judge"].requests
    assert stats.batches_created == len(batched.usage) and max(stats.lines_by_custom_id.values()) == 1


def test_batch_and_live_runs_share_answers_both_ways(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        run_pipeline(cfg_for(server, paper_csv, tmp_path, "style=cot", batch=False))
        live_requests = server.stats.requests
        again = run_pipeline(cfg_for(server, paper_csv, tmp_path, "style=cot"))
        assert server.batches.stats.files_uploaded == 0 and server.stats.requests == live_requests
        assert again.usage["model"].cache_hits == 12
        more = run_pipeline(cfg_for(server, paper_csv, tmp_path, "style=cot", samples=6))  # 6 new answers by batch
        assert server.batches.stats.batches_created == 2 and more.usage["model"].batch_requests == 6
        run_pipeline(cfg_for(server, paper_csv, tmp_path, "style=cot", samples=6, batch=False))
        assert server.stats.requests == live_requests


def test_requests_beyond_one_batch_s_limits_are_split(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(max_requests=5)) as server:  # the fake refuses more
        by_count = run_pipeline(cfg_for(server, paper_csv, tmp_path / "count", "model.batch_max_requests=5"))
        assert server.batches.stats.batches_created == 3  # 12 requests: 5 + 5 + 2
        server.batches.plan.max_bytes = 2000
        by_size = run_pipeline(cfg_for(server, paper_csv, tmp_path / "size", "model.batch_max_mb=0.002"))
        sizes = [f["bytes"] for f in list(server.batches.files.values()) if f["purpose"] == "batch"][3:]
    assert by_count.scores.n_responses == by_size.scores.n_responses == 12
    assert max(sizes) <= 2000 < sum(sizes) and len(sizes) == server.batches.stats.batches_created - 3 >= 2


def test_partial_failures_are_resubmitted_once_their_batch_ends(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(fail_first_lines=3)) as server:
        result = run_pipeline(cfg_for(server, paper_csv, tmp_path))
        assert server.batches.stats.batches_created == 2 and server.stats.requests == 0
    assert result.usage["model"].batch_resubmitted == 3 and result.scores.n_responses == 12
    assert [state for state, _ in journal_states(tmp_path)] == ["done", "done"]


def test_expired_requests_are_resubmitted(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(expire_after_polls=1)) as server:
        result = run_pipeline(cfg_for(server, paper_csv, tmp_path))  # each batch runs half, then expires
        assert server.batches.stats.batches_created == 4  # 12 requests: 6 + 3 + 2 + 1 answered
    assert result.usage["model"].batch_resubmitted == 6 + 3 + 1 and result.scores.n_responses == 12


def test_an_endpoint_ignoring_n_is_asked_one_sample_per_line(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, honour_n=False) as server:
        result = run_pipeline(cfg_for(server, paper_csv, tmp_path, "model.n_per_request=4"))
        assert server.batches.stats.batches_created == 2 and server.stats.requests == 0
    assert result.scores.n_responses == 12 and result.usage["model"].batch_requests == 3 + 9


def test_a_batch_that_fails_as_a_whole_fails_the_job_naming_it(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(fail_batches=1)) as server:
        cfg = cfg_for(server, paper_csv, tmp_path)
        with pytest.raises(ModelError) as failed:
            run_pipeline(cfg)
        [(state, batch_id)] = journal_states(tmp_path)
        assert state == "failed" and f"batch {batch_id} failed: token_limit_exceeded" in str(failed.value)
        assert "\n" not in str(failed.value)
        assert run_pipeline(cfg).scores.n_responses == 12  # run again: submitted anew


def test_a_request_refused_for_good_fails_the_job_after_keeping_the_rest(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(fail_first_lines=1, fail_status=400)) as server:
        with pytest.raises(ModelError, match=r"batch batch_\w+: request 0 failed: HTTP 400"):
            run_pipeline(cfg_for(server, paper_csv, tmp_path))
        assert server.batches.stats.batches_created == 1
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 12 - 1


def test_a_batch_cancelled_outside_keeps_its_answers_and_fails_the_job(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True, batch_plan=BatchPlan(lines_per_poll=5)) as server:
        server.batches.hold("in_progress")
        cfg = cfg_for(server, paper_csv, tmp_path)
        outcome = {}
        job = threading.Thread(target=lambda: outcome.update(error=_error_of(lambda: run_pipeline(cfg))))
        job.start()
        assert server.batches.held("in_progress", timeout=120)
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        [batch] = client.batches.list()
        client.batches.cancel(batch.id)
        server.batches.release()
        job.join(120)
        assert f"batch {batch.id} was cancelled; the answers of its 5 completed requests are cached" in outcome["error"]
        server.batches.stats.batches_created = 0
        assert run_pipeline(cfg).usage["model"].batch_requests == 12 - 5
        assert server.batches.stats.batches_created == 1


def _error_of(call) -> str:
    try:
        call()
    except ModelError as error:
        return str(error)
    return "no error"


def test_a_journal_batch_unknown_at_the_endpoint_is_abandoned_and_its_requests_submitted_anew(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        cfg = cfg_for(server, paper_csv, tmp_path)
        job = pipeline.prepare(spec_of(cfg))
        identity, config = pipeline.models(job.spec, None)["model"].identity, pipeline.model_config(job)
        first = pipeline.planned_prompts(job)[0]
        keys = tuple(cache_key(identity, first.prompt.messages, config, i) for i in first.sample_indices)
        covering = batch_api.Request(first.prompt.messages, config, first.sample_indices, keys)
        journal = batch_api.Journal(tmp_path / "cache.sqlite")  # e.g. a cache copied from another account
        _, [stale] = journal.claim(identity, [covering], "elsewhere:1", lambda requests: [[("0", "{}\n")]])
        journal.advance(stale.token, "submitted", batch_id="batch_unknown")
        journal.close()
        result = run_pipeline(cfg)
        # the other prompts go in a batch at once; the first, once the stale batch is found unknown
        assert server.batches.stats.batches_created == 2 and result.scores.n_responses == 12
    assert [state for state, _ in journal_states(tmp_path)] == ["abandoned", "done", "done"]
    assert journal_states(tmp_path)[0][1] == "batch_unknown"


def test_cost_is_paid_at_the_batch_price(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        live = record.result_metrics(run_pipeline(cfg_for(server, paper_csv, tmp_path / "live", *PRICES, batch=False)))
        batched = record.result_metrics(run_pipeline(cfg_for(server, paper_csv, tmp_path / "batch", *PRICES)))
        half = record.result_metrics(run_pipeline(cfg_for(server, paper_csv, tmp_path / "batch", *PRICES)))
    assert live["cost_usd"] > 0 and batched["cost_usd"] == pytest.approx(live["cost_usd"] / 2)
    assert batched["model_batch_prompt_tokens"] == batched["model_spent_prompt_tokens"] > 0
    assert batched["cost_usd_workload"] == pytest.approx(live["cost_usd_workload"] / 2)
    assert half["cost_usd"] == 0 and "model_batches" not in half  # a re-run finds everything cached


def test_the_dry_run_shows_live_batch_and_expected_costs_from_the_prior_then_from_the_cache(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        extra = ("style=cot", *PRICES, "judge.price_input_per_mtok=10", "judge.priced=true")
        cfg = cfg_for(server, paper_csv, tmp_path, *extra)
        before = planning.plan_job(spec_of(cfg))
        assert "model: prior of 300 tokens per answer; judge: prior of 80 tokens per answer" in before.describe("job")
        model = before.roles["model"]
        assert model.expected_completion_tokens == 12 * 300 and model.completion_tokens == 12 * 1024
        assert model.cost_usd == model.worst_usd_batch == pytest.approx(model.worst_usd_live / 2)
        assert model.expected_usd_live > 0 and model.expected_usd_batch == pytest.approx(model.expected_usd_live / 2)
        result = run_pipeline(cfg)
        later = planning.plan_job(spec_of(cfg_for(server, paper_csv, tmp_path, *extra, samples=8)))
        assert server.stats.requests == 0
    model, judge = later.roles["model"], later.roles["judge"]
    mean = result.costs["model"].workload_tokens[1] / 12
    assert model.measured_answers == 12 and model.expected_completion_tokens == pytest.approx(12 * mean, abs=12)
    assert judge.measured_answers == result.usage["judge"].batch_requests and judge.prior_jobs == 0
    line = later.describe("job")
    assert "model: mean of 12 cached answers; judge: mean of" in line and "cost (live / batch): worst case $" in line


def test_batch_needs_an_openai_endpoint_and_the_cache():
    from culturealign.errors import ConfigError

    with pytest.raises(ConfigError, match="model.batch=true needs an OpenAI-compatible Batch API"):
        spec_of(make_cfg("model=smollm2-135m", "model.batch=true"))
    with pytest.raises(ConfigError, match="model.batch=true stores the batch's answers in the response cache"):
        spec_of(make_cfg("model=gpt-4o", "model.batch=true", "cache.enabled=false"))
    with pytest.raises(ConfigError, match="model.batch_max_requests must be an integer in"):
        spec_of(make_cfg("model=gpt-4o", "model.batch_max_requests=50001"))
    assert spec_of(make_cfg("model=gpt-4o", "judge.batch=true", "style=classification")).batch_roles == []


def test_an_upload_or_create_is_left_alone_while_its_process_lives():
    own = f"{batch_api.socket.gethostname()}:{os.getpid()}"
    assert batch_api._alive(own, updated=0)
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert not batch_api._alive(f"{batch_api.socket.gethostname()}:{ended.pid}", updated=0)
    now = batch_api.time.time()
    assert batch_api._alive("elsewhere:1", updated=now) and not batch_api._alive("elsewhere:1", updated=now - 7200)
