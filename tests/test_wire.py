"""Settings reach the wire: what the config says is what each model receives, for the model and the judge,
in every style, over HTTP (the fake server records each request body) and in-process (llama.cpp's call
arguments)."""

from __future__ import annotations

import pytest

from culturealign.prompts import JUDGE_PROMPT
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import make_cfg, run_pipeline
from tests.jobs import job_cfg

JUDGE_OPENING = JUDGE_PROMPT.split("\n")[0]
STYLE_LIMITS = {"classification": 3, "cot": 1024, "scenarios": 1024}
MODEL = ["model.temperature=0.3", "model.top_p=0.9", "model.n_per_request=2", "seed=7", "samples=4"]
JUDGE = ["judge.temperature=0.1", "judge.top_p=0.8", "judge.max_tokens=77"]


def is_judge(body: dict) -> bool:
    return body["messages"][0]["content"].startswith(JUDGE_OPENING)


@pytest.mark.parametrize("style", ["classification", "cot", "scenarios"])
def test_openai_requests_carry_the_configured_settings(paper_csv, tmp_path, style):
    with FakeOpenAIServer(record=True) as server:
        run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, f"style={style}", "dataset.limit=1", *MODEL, *JUDGE))
        bodies = list(server.stats.bodies)
    model = [b for b in bodies if not is_judge(b)]
    judge = [b for b in bodies if is_judge(b)]
    assert model and (judge if style != "classification" else not judge)
    for body in model:
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, STYLE_LIMITS[style])
        assert body["model"] == "default" and "logprobs" not in body
    # the seed is seed + the first sample index of the request; 4 samples over 10 scenario templates are
    # one sample each for templates 1-4, so no `n` there
    expected = {(7, 2), (9, 2)} if style != "scenarios" else {(7, None), (8, None), (9, None), (10, None)}
    assert {(b["seed"], b.get("n")) for b in model} == expected and len(model) == len(expected)
    for body in judge:
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.1, 0.8, 77, 7)
        assert "n" not in body and body["response_format"] == {"type": "json_object"}


def test_judge_falls_back_to_plain_text_where_json_mode_is_refused(paper_csv, tmp_path):
    with FakeOpenAIServer(record=True, json_mode=False) as server:
        result = run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "style=cot", "dataset.limit=1"))
        judge = [b for b in server.stats.bodies if is_judge(b)]
    assert result.scores.n_responses == 3 and all(r.judge_output for r in result.records)
    refused = [b for b in judge if "response_format" in b]  # asked in JSON mode, refused with 400
    plain = [b for b in judge if "response_format" not in b]
    assert refused and len(plain) == len({r.response for r in result.records})  # every answer judged once, in text


def test_scenario_samples_spread_over_templates_one_per_request(paper_csv, tmp_path):
    with FakeOpenAIServer(record=True) as server:
        run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "style=scenarios", "dataset.limit=1", *MODEL, "samples=20"))
        model = [b for b in server.stats.bodies if not is_judge(b)]
    assert len(model) == 10 and all(b["n"] == 2 for b in model)  # 10 templates x 2 samples, one request each
    assert sorted(b["seed"] for b in model) == [7 + i for i in range(10)]  # sample i of template i: indices i, i+10


def test_model_max_tokens_overrides_the_style_limit_and_logprobs_ask_for_one_token(paper_csv, tmp_path):
    with FakeOpenAIServer(record=True) as server:
        run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "dataset.limit=1", "model.max_tokens=9"))
        assert {b["max_tokens"] for b in server.stats.bodies} == {9}
        server.stats.reset()
        server.stats.bodies.clear()
        run_pipeline(job_cfg(server.base_url, paper_csv, tmp_path, "dataset.limit=1", "estimator=logprobs", "model.temperature=0.3"))
        [body] = server.stats.bodies
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_logprobs"], body["logprobs"]) == (1, 1.0, 1.0, 20, True)


class Recorder:
    """Wraps a callable and keeps the arguments of every call."""

    def __init__(self, original):
        self.original, self.calls = original, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.original(*args, **kwargs)


OVERRIDES = ["model.temperature=0.4", "model.top_p=0.85", "seed=11", "samples=3", "dataset.limit=1", "model.max_tokens=5"]
OVERRIDES += ["judge=smollm2-135m", "judge.max_tokens=6", "cache.enabled=false"]


@pytest.mark.parametrize("style", ["classification", "cot"])
def test_llama_cpp_batched_jobs_carry_the_configured_settings(paper_csv, monkeypatch, style):
    """The batched path (the default): each prompt's samples are one job of the parallel decoder."""
    from culturealign.models.llamacpp import derive_seed
    from culturealign.models.llamacpp_batch import ParallelDecoder

    recorder = Recorder(ParallelDecoder.run)
    monkeypatch.setattr(ParallelDecoder, "run", lambda self, jobs: recorder(self, jobs))
    run_pipeline(make_cfg(f"style={style}", *OVERRIDES, f"dataset.path={paper_csv}"))
    jobs = [job for (_, jobs), _ in recorder.calls for job in jobs]
    sampled = [job for job in jobs if job.sampling.max_tokens == 5]
    judged = [job for job in jobs if job.sampling.max_tokens == 6]
    assert [job.seeds for job in sampled] == [tuple(derive_seed(11, i) for i in range(3))]
    assert (sampled[0].sampling.temperature, sampled[0].sampling.top_p) == (0.4, 0.85)
    assert bool(judged) == (style == "cot")
    for job in judged:
        assert (job.sampling.temperature, job.seeds) == (0.0, (derive_seed(11, 0),))


@pytest.mark.parametrize("style", ["classification", "cot"])
def test_llama_cpp_sequential_calls_carry_the_configured_settings(paper_csv, monkeypatch, style):
    """The sequential path (n_parallel=0): one create_chat_completion call per sample."""
    from culturealign.models.llamacpp import LlamaCppProvider, derive_seed
    from culturealign.spec import ModelSpec, Provider

    llm = LlamaCppProvider(ModelSpec(provider=Provider.llamacpp, name="smollm2-135m"), "model").llama
    recorder = Recorder(llm.create_chat_completion)
    monkeypatch.setattr(llm, "create_chat_completion", recorder)
    sequential = ["model.n_parallel=0", "judge.n_parallel=0"]
    run_pipeline(make_cfg(f"style={style}", *OVERRIDES, *sequential, f"dataset.path={paper_csv}"))
    calls = [kwargs for _, kwargs in recorder.calls]
    sampled = [c for c in calls if c.get("seed") is not None and c["max_tokens"] == 5]
    judged = [c for c in calls if c.get("seed") is not None and c["max_tokens"] == 6]
    assert [c["seed"] for c in sampled] == [derive_seed(11, i) for i in range(3)]
    for call in sampled:
        assert (call["temperature"], call["top_p"], call["top_k"], call["min_p"]) == (0.4, 0.85, 0, 0.0)
    assert bool(judged) == (style == "cot")
    for call in judged:
        assert (call["temperature"], call["seed"]) == (0.0, derive_seed(11, 0))
