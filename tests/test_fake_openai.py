"""Tests of the fake OpenAI server, driven through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")

from tests.fake_openai import (  # noqa: E402
    FAULT_KINDS,
    REFUSAL_TEXT,
    FakeOpenAIServer,
    FaultPlan,
    Policy,
    count_options,
    question_key,
)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def options_prompt(country: str = "Japan", question: str = "Do you think cats are better than dogs?", n: int = 2) -> str:
    opts = "\n".join(f"{i}. OPTION {i}" for i in range(1, n + 1))
    return (
        f"From now on, respond as someone from {country} would.\n{question}\n"
        f"Here are the options:\n{opts}\nOnly output the number of the chosen option."
    )


def cot_prompt(country: str = "Japan", question: str = "Do you think cats are better than dogs?", n: int = 2) -> str:
    opts = "\n".join(f"{i}. OPTION {i}" for i in range(1, n + 1))
    return (
        f"From now on, respond as someone from {country} would.\n{question}\n"
        f"Here are the options:\n{opts}\nFirst, provide your reasoning, and then offer an answer."
    )


def scenario_prompt(country: str = "India", question: str = "whether cats are better than dogs") -> str:
    return (
        f"From now on, respond as someone from {country} would.\n"
        f"During a phone survey, you're asked your opinion on: {question}. What do you say?"
    )


def judge_prompt(question: str, response: str) -> str:
    return (
        "You are tasked with classifying a response as one of the possible choices. Output in JSON, using the "
        'following format:\n\n```\n{\n  "reasoning": "PROVIDE YOUR REASONING HERE",\n  "classification": '
        '"OUTPUT ONLY THE NUMBER OF THE CHOSEN OPTION"\n}\n```\n\nIf the response cannot be classified into any '
        f'of the given options, use "0" as the classification.\n\nQuestion: {question}\n\nResponse: {response}'
    )


def parse_judge(text: str) -> dict:
    m = re.search(r"```json\s*(.*?)```", text, re.S)
    assert m, text
    return json.loads(m.group(1))


def user(content: str) -> list:
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(policy=Policy(seed=0), record=True) as s:
        yield s


@pytest.fixture
def client(server):
    c = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0, timeout=5)
    yield c
    c.close()


# -- normal behaviour -----------------------------------------------------------


def test_classification_returns_option_number(server, client):
    server.stats.reset()
    r = client.chat.completions.create(model="gpt-test", messages=user(options_prompt()), temperature=0.7)
    assert r.object == "chat.completion"
    assert r.model == "gpt-test"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content in {"1", "2", REFUSAL_TEXT}
    assert r.usage.prompt_tokens >= 1 and r.usage.completion_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    st = server.stats.as_dict()
    assert st["requests"] == 1 and st["by_kind"]["classification"] == 1 and st["choices_returned"] == 1
    assert server.stats.bodies[-1]["messages"][0]["content"] == options_prompt()


def test_classification_distribution_follows_policy(server, client):
    policy = server.policy
    prompt = options_prompt(country="China", n=3)
    key = question_key(prompt)
    probs = policy.option_probs(key, 3)
    assert count_options(prompt) == 3
    assert 0.1 <= probs[0] <= 0.9 and math.isclose(sum(probs), 1.0)
    assert probs != policy.option_probs(question_key(options_prompt(country="Japan", n=3)), 3)
    r = client.chat.completions.create(model="m", messages=user(prompt), n=2000)
    counts = {}
    for ch in r.choices:
        counts[ch.message.content] = counts.get(ch.message.content, 0) + 1
    assert set(counts) <= {"1", "2", "3", REFUSAL_TEXT}
    for i, p in enumerate(probs):
        expected = p * (1 - policy.refusal_rate)
        assert abs(counts.get(str(i + 1), 0) / 2000 - expected) < 0.05
    # classification and CoT prompts of the same question share one distribution
    assert question_key(cot_prompt(country="China", n=3)) == key


def test_n_choices(server, client):
    r = client.chat.completions.create(model="m", messages=user(options_prompt()), n=5)
    assert [c.index for c in r.choices] == [0, 1, 2, 3, 4]
    with FakeOpenAIServer(honour_n=False) as s2:
        c2 = openai.OpenAI(api_key="test", base_url=s2.base_url, max_retries=0)
        r2 = c2.chat.completions.create(model="m", messages=user(options_prompt()), n=5)
        assert len(r2.choices) == 1
        c2.close()


def test_cot_scenario_and_judge_roundtrip(server, client):
    question = "Do you think cats are better than dogs?"
    for prompt in (cot_prompt(n=4), scenario_prompt()):
        r = client.chat.completions.create(model="m", messages=user(prompt), n=20)
        n_opt = count_options(prompt)
        for ch in r.choices:
            text = ch.message.content
            m = re.search(r"My answer: (\d+)\.$", text)
            if m is None:
                assert "My answer" not in text  # refusal: unclassifiable
                expected = "0"
            else:
                assert 1 <= int(m.group(1)) <= n_opt
                expected = m.group(1)
            j = client.chat.completions.create(model="judge", messages=user(judge_prompt(question, text)))
            verdict = parse_judge(j.choices[0].message.content)
            assert verdict["classification"] == expected
            assert isinstance(verdict["reasoning"], str)
    j = client.chat.completions.create(model="judge", messages=user(judge_prompt(question, "I won't say.")))
    assert parse_judge(j.choices[0].message.content)["classification"] == "0"


def test_judge_garbage_and_refusals():
    with FakeOpenAIServer(policy=Policy(refusal_rate=1.0, judge_garbage_rate=1.0)) as s:
        c = openai.OpenAI(api_key="test", base_url=s.base_url, max_retries=0)
        j = c.chat.completions.create(model="m", messages=user(judge_prompt("q", "My answer: 1.")))
        with pytest.raises(ValueError):
            json.loads(j.choices[0].message.content)
        assert c.chat.completions.create(model="m", messages=user(options_prompt())).choices[0].message.content == REFUSAL_TEXT
        assert "My answer" not in c.chat.completions.create(model="m", messages=user(cot_prompt())).choices[0].message.content
        assert s.stats.as_dict()["by_kind"] == {"judge": 1, "classification": 1, "free": 1}
        c.close()


def test_logprobs_shape(server, client):
    prompt = options_prompt(country="India", n=3)
    r = client.chat.completions.create(model="m", messages=user(prompt), n=3, logprobs=True, top_logprobs=3)
    policy = server.policy
    probs = policy.option_probs(question_key(prompt), 3)
    expected = sorted(
        [(str(i + 1), p * (1 - policy.refusal_rate)) for i, p in enumerate(probs)] + [("I", policy.refusal_rate)],
        key=lambda tp: -tp[1],
    )[:3]
    for ch in r.choices:
        (entry,) = ch.logprobs.content
        assert entry.token == ch.message.content.split()[0]
        assert entry.bytes == list(entry.token.encode())
        got = [(t.token, math.exp(t.logprob)) for t in entry.top_logprobs]
        assert [t for t, _ in got] == [t for t, _ in expected]
        for (_, pg), (_, pe) in zip(got, expected):
            assert math.isclose(pg, pe, rel_tol=1e-9)
        if entry.token in dict(got):
            assert math.isclose(math.exp(entry.logprob), dict(got)[entry.token])
    r = client.chat.completions.create(model="m", messages=user(prompt), logprobs=True, top_logprobs=20)
    alts = r.choices[0].logprobs.content[0].top_logprobs
    assert len(alts) == 4 and math.isclose(sum(math.exp(a.logprob) for a in alts), 1.0)
    # no logprobs requested -> null
    assert client.chat.completions.create(model="m", messages=user(prompt)).choices[0].logprobs is None


def test_models_and_404(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [server.model_name]
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(server.base_url + "/nope", timeout=5)
    assert ei.value.code == 404
    assert "error" in json.loads(ei.value.read())


def test_reproducible_given_request_order():
    def run():
        with FakeOpenAIServer(policy=Policy(seed=7)) as s:
            c = openai.OpenAI(api_key="test", base_url=s.base_url, max_retries=0)
            out = [c.chat.completions.create(model="m", messages=user(p), n=3) for p in (options_prompt(), cot_prompt())]
            c.close()
            return [[ch.message.content for ch in r.choices] for r in out]

    assert run() == run()


# -- faults -----------------------------------------------------------------------


FAULT_EXPECTATIONS = {
    "429": (openai.RateLimitError, 429),
    "429_retry_after": (openai.RateLimitError, 429),
    "500": (openai.InternalServerError, 500),
    "503": (openai.InternalServerError, 503),
    "timeout": (openai.APITimeoutError, None),
    "drop": (openai.APIConnectionError, None),
    "malformed": (ValueError, None),  # json.JSONDecodeError from the SDK's response.json()
}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_kinds(kind):
    plan = FaultPlan(**{f"rate_{kind}": 1.0}, retry_after=0.05, timeout_sleep=30)
    with FakeOpenAIServer(faults=plan) as s:
        c = openai.OpenAI(api_key="test", base_url=s.base_url, max_retries=0, timeout=0.3)
        if kind == "empty_choices":
            r = c.chat.completions.create(model="m", messages=user(options_prompt()))
            assert r.choices == []
        else:
            exc_type, status = FAULT_EXPECTATIONS[kind]
            with pytest.raises(exc_type) as ei:
                c.chat.completions.create(model="m", messages=user(options_prompt()))
            if status is not None:
                err = ei.value
                assert err.status_code == status
                assert isinstance(err.body, dict) and "message" in err.body
                has_ra = "retry-after" in err.response.headers
                assert has_ra == (kind == "429_retry_after")
                if has_ra:
                    assert float(err.response.headers["retry-after"]) == pytest.approx(0.05)
        st = s.stats.as_dict()
        assert st["requests"] == 1 and st["faults"] == {kind: 1} and st["choices_returned"] == 0
        c.close()
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 1.0  # stop() is fast even with a sleeping timeout handler


def test_fault_mix_and_retries():
    plan = FaultPlan(seed=3, rate_429_retry_after=0.2, rate_500=0.1, rate_timeout=0.2, timeout_sleep=30)
    srv = FakeOpenAIServer(faults=plan)
    srv.start()

    async def go():
        # the client waits 3 s (the injected stalls last 30 s): an answer merely slowed by a loaded machine
        # is not mistaken for a timeout
        c = openai.AsyncOpenAI(api_key="test", base_url=srv.base_url, max_retries=0, timeout=3.0)

        async def one():
            try:
                await c.chat.completions.create(model="m", messages=user(options_prompt()))
                return "ok"
            except openai.APIError as e:
                return type(e).__name__

        t0 = time.monotonic()
        res = await asyncio.gather(*(one() for _ in range(100)))
        await c.close()
        return res, time.monotonic() - t0

    res, elapsed = asyncio.run(go())
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5.0
    st = srv.stats.as_dict()
    assert st["requests"] == 100
    assert res.count("ok") == 100 - sum(st["faults"].values())
    assert res.count("APITimeoutError") == st["faults"]["timeout"] > 0
    assert res.count("RateLimitError") == st["faults"]["429_retry_after"] > 0
    assert elapsed < 25.0  # sleeping (30 s) timeout handlers do not block the others

    # a retrying client gets through transient errors, honouring Retry-After
    with FakeOpenAIServer(faults=FaultPlan(seed=1, rate_429_retry_after=0.5)) as s:
        c = openai.OpenAI(api_key="test", base_url=s.base_url, max_retries=10)
        for _ in range(5):
            assert c.chat.completions.create(model="m", messages=user(options_prompt())).choices
        assert s.stats.faults.get("429_retry_after", 0) > 0
        c.close()


# -- performance / keep-alive -------------------------------------------------------


def test_concurrency_and_keepalive():
    with FakeOpenAIServer(latency=0.05) as s:

        async def go():
            c = openai.AsyncOpenAI(api_key="test", base_url=s.base_url, max_retries=0)
            t0 = time.monotonic()
            rs = await asyncio.gather(
                *(c.chat.completions.create(model="m", messages=user(options_prompt(question=f"Q{i}?"))) for i in range(200))
            )
            elapsed = time.monotonic() - t0
            conns_after_burst = s.stats.connections
            for _ in range(5):  # sequential requests reuse a pooled connection
                await c.chat.completions.create(model="m", messages=user(options_prompt()))
            await c.close()
            return rs, elapsed, conns_after_burst

        rs, elapsed, conns = asyncio.run(go())
        assert all(len(r.choices) == 1 for r in rs)
        assert elapsed < 5.0
        st = s.stats.as_dict()
        assert st["requests"] == 205
        assert st["connections"] == conns <= 200


# -- CLI mode -----------------------------------------------------------------------


def test_cli_mode():
    proc = subprocess.Popen(
        [sys.executable, os.path.join(TESTS_DIR, "fake_openai.py"), "--port", "0", "--latency", "0", "--seed", "1", "--error-rate", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"READY (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert m, line
        c = openai.OpenAI(api_key="test", base_url=m.group(1), max_retries=0)
        for _ in range(3):
            assert c.chat.completions.create(model="m", messages=user(options_prompt())).choices
        c.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["requests"] == 3 and stats["by_kind"]["classification"] == 3
