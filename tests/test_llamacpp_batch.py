"""The batched llama.cpp sampler (culturealign.models.llamacpp_batch) against the real SmolLM2-135M model.

Everything here is deterministic (fixed seeds) and takes seconds; no test depends on timing.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from culturealign.dataset import read_questions
from culturealign.errors import ConfigError
from culturealign.models.base import GenerateConfig, ModelError
from culturealign.models.llamacpp import derive_seed, smollm2_path
from culturealign.models.model import Model
from culturealign.spec import ModelSpec, Provider
from culturealign.models.llamacpp_batch import Job, ParallelDecoder, Sampling, SeedStream, chat_prompt
from culturealign.prompts import options_prompt, user
from tests.helpers import make_cfg, spec_of


def LlamaCppClient(path=None, **settings) -> Model:  # noqa: N802 - reads like the provider it wraps
    """The llama.cpp provider behind the one Model wrapper (usage, errors), as a job uses it."""
    spec = ModelSpec(provider=Provider.llamacpp, name="smollm2-135m", path=str(path) if path else None,
                     n_threads_batch=None, **settings)
    return Model(spec, "model", concurrency=1)

llama_cpp = pytest.importorskip("llama_cpp")

INSTRUCTION = "Only output the number of the chosen option."
FREE_TEXT = [{"role": "user", "content": "From now on, respond as someone from Japan would.\nDescribe your ideal weekend."}]


@pytest.fixture(scope="module")
def llm():
    return LlamaCppClient(smollm2_path()).open().provider.llama


@pytest.fixture(scope="module")
def own_llm():
    """A Llama of its own, so evaluating a prompt on its context leaves the shared model's cache alone."""
    llm = llama_cpp.Llama(model_path=str(smollm2_path()), n_ctx=512, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def decoder(llm):
    decoder = ParallelDecoder(llm.model, n_parallel=128, n_ctx=8192)
    yield decoder
    decoder.close()


@pytest.fixture(scope="module")
def real_prompts(paper_csv) -> list[list[dict[str, str]]]:
    """Classification prompts of the main job for three real GlobalOpinionQA questions."""
    questions = read_questions(paper_csv)[:3]
    return [list(user(options_prompt("Japan", q.text, q.options, INSTRUCTION))) for q in questions]


def job(llm, messages, seeds, temperature=0.7, top_p=1.0, max_tokens=3) -> Job:
    prompt, stop = chat_prompt(llm, messages)
    return Job(tuple(prompt), tuple(seeds), Sampling(temperature, top_p, max_tokens, stop))


def texts(generations) -> list[str]:
    return [g.text for g in generations]


# -- the prompt: exactly what create_chat_completion builds ----------------------------------------------------


def captured_by_create_chat_completion(llm, messages, monkeypatch):
    """Run the real create_chat_completion and catch what its chat handler hands to create_completion."""
    seen = {}

    class Stop(Exception):
        pass

    def create_completion(prompt, **kwargs):
        seen.update(prompt=list(prompt), stop=list(kwargs.get("stop") or []))
        raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(llm, "create_completion", create_completion)
        with pytest.raises(Stop):
            llm.create_chat_completion(messages=messages, max_tokens=3)
    return seen["prompt"], seen["stop"]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hello"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tabs\tand “quotes”…\n1. Yes"}],
        FREE_TEXT,
    ],
)
def test_prompt_tokens_are_those_of_create_chat_completion(llm, messages, monkeypatch):
    tokens, stop = chat_prompt(llm, messages)
    assert (list(tokens), list(stop)) == captured_by_create_chat_completion(llm, messages, monkeypatch)


def test_prompt_is_the_smollm2_chat_template(llm, real_prompts):
    tokens, stop = chat_prompt(llm, real_prompts[0])
    text = llm.detokenize(tokens, special=True).decode()
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{real_prompts[0][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert stop == ("<|im_end|>",)


# -- sampling: llama-cpp-python's chain, token for token ---------------------------------------------------------


def reference_chain(llm, sampling: Sampling, seed: int):
    """The chain Llama._init_sampler builds for create_chat_completion with our settings."""
    c = llama_cpp
    chain = c.llama_sampler_chain_init(c.llama_sampler_chain_default_params())
    steps = [c.llama_sampler_init_penalties(llm.n_vocab(), 64, 1.0, 0.0, 0.0)]
    if sampling.temperature == 0.0:
        steps.append(c.llama_sampler_init_greedy())
    else:
        steps += [
            c.llama_sampler_init_top_k(0),
            c.llama_sampler_init_typical(1.0, 1),
            c.llama_sampler_init_top_p(sampling.top_p, 1),
            c.llama_sampler_init_min_p(0.0, 1),
            c.llama_sampler_init_temp(sampling.temperature),
            c.llama_sampler_init_dist(seed),
        ]
    for step in steps:
        c.llama_sampler_chain_add(chain, step)
    return chain


@pytest.mark.parametrize("temperature,top_p", [(0.7, 1.0), (1.0, 1.0), (1.5, 0.9), (0.7, 0.3), (0.0, 1.0)])
def test_draws_are_llama_cpps_sampler_chain_token_for_token(own_llm, decoder, real_prompts, temperature, top_p):
    """Three successive draws per seed from real logits: the decoder's shared-probability draw picks what
    a llama.cpp chain seeded with the same seed picks (top_p=0.3 leaves a single candidate here)."""
    llm, sampling = own_llm, Sampling(temperature, top_p, 3)
    prompt, _ = chat_prompt(llm, real_prompts[1])
    llm.reset()
    llm.eval(prompt)  # the Llama's own context: its logits row is the last evaluated token
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    seeds = [derive_seed(11, i) for i in range(100)]
    streams = [SeedStream(seed) for seed in seeds]
    mine = [decoder.sample_tokens(logits, sampling, streams) for _ in range(3)]
    theirs = []
    for seed in seeds:
        chain = reference_chain(llm, sampling, seed)
        theirs.append([llama_cpp.llama_sampler_sample(chain, llm.ctx, -1) for _ in range(3)])
        llama_cpp.llama_sampler_free(chain)
    assert [list(draws) for draws in zip(*mine)] == theirs
    if temperature > 0 and top_p == 1.0:  # the check means something: the seeds draw different tokens
        assert len({draws[0] for draws in theirs}) > 3


# -- determinism: a sample depends on its seed only ------------------------------------------------------------


def test_same_texts_whatever_the_order_subset_company_or_chunking(llm, decoder, real_prompts):
    seeds = [derive_seed(5, i) for i in range(100)]
    full = decoder.run([job(llm, real_prompts[0], seeds)])[0]
    assert len(set(texts(full))) > 5  # a real spread of answers, not one repeated text
    assert texts(decoder.run([job(llm, real_prompts[0], seeds[::-1])])[0]) == texts(full)[::-1]
    subset = [7, 3, 99, 50]
    assert texts(decoder.run([job(llm, real_prompts[0], [seeds[i] for i in subset])])[0]) == [full[i].text for i in subset]
    # next to other prompts in the same batch, after another prompt filled the cache
    together = decoder.run([job(llm, real_prompts[1], seeds[:30]), job(llm, real_prompts[0], seeds)])
    assert texts(together[1]) == texts(full)
    # a small decoder: 8 samples at a time, prompt re-read for each chunk
    small = ParallelDecoder(llm.model, n_parallel=8, n_ctx=512)
    try:
        assert texts(small.run([job(llm, real_prompts[0], seeds)])[0]) == texts(full)
    finally:
        small.close()


def test_answers_ending_at_different_times_are_the_same_alone_or_together(llm, decoder, real_prompts):
    """Hot sampling, up to 16 tokens: some samples end early while others go on, so branches retire
    mid-run; a sample's text must not depend on that (freeing their KV cells mid-run breaks this)."""
    seeds = [derive_seed(4, i) for i in range(40)]
    together = decoder.run([job(llm, real_prompts[0], seeds, temperature=1.2, max_tokens=16)])[0]
    lengths = [g.completion_tokens for g in together]
    assert min(lengths) < 8 and max(lengths) >= 16 and len(set(texts(together))) > 30
    alone = [decoder.run([job(llm, real_prompts[0], [seeds[i]], temperature=1.2, max_tokens=16)])[0][0] for i in (0, 9, 17, 33)]
    assert alone == [together[i] for i in (0, 9, 17, 33)]
    backwards = decoder.run([job(llm, real_prompts[0], seeds[::-1][:20], temperature=1.2, max_tokens=16)])[0]
    assert backwards == together[::-1][:20]


def test_memory_bound_sets_how_many_run_at_once(llm):
    prompt, _ = chat_prompt(llm, FREE_TEXT)
    small = ParallelDecoder(llm.model, n_parallel=64, n_ctx=256)
    try:
        assert small.capacity(len(prompt), 20) == (256 - len(prompt)) // 23 < 12
        assert small.capacity(len(prompt), 1024) == 0
        with pytest.raises(ValueError, match="does not fit in 256 KV cells"):
            small.run([job(llm, FREE_TEXT, [1], max_tokens=1024)])
        seeds = [derive_seed(2, i) for i in range(12)]
        chunked = small.run([job(llm, FREE_TEXT, seeds, temperature=1.0, max_tokens=20)])[0]
    finally:
        small.close()
    roomy = ParallelDecoder(llm.model, n_parallel=64, n_ctx=4096)
    try:
        assert roomy.run([job(llm, FREE_TEXT, seeds, temperature=1.0, max_tokens=20)])[0] == chunked
    finally:
        roomy.close()


# -- what a sample reports: text, token counts, finish reason --------------------------------------------------


def test_finish_reasons_and_token_counts(llm, decoder, real_prompts):
    seeds = [derive_seed(3, i) for i in range(40)]
    gens = [g for p in real_prompts for g in decoder.run([job(llm, p, seeds, temperature=1.0, max_tokens=6)])[0]]
    assert Counter(g.finish_reason for g in gens).keys() == {"stop", "length"}
    for g in gens:
        assert llm.detokenize(list(g.tokens)).decode("utf-8", errors="ignore") == g.text
        if g.finish_reason == "length":
            assert g.completion_tokens >= 6  # more only to finish a UTF-8 character, as llama-cpp-python
        else:  # the end-of-turn token ended it and is not counted
            assert g.completion_tokens < 6


def test_client_reports_prompt_tokens_as_create_chat_completion(real_prompts):
    messages = real_prompts[2]
    batched = LlamaCppClient(smollm2_path())
    sequential = LlamaCppClient(smollm2_path(), n_parallel=0)
    config = GenerateConfig(temperature=0.7, max_tokens=3, seed=4)
    got = asyncio.run(batched.complete(messages, config, [0, 1, 2]))
    reference = asyncio.run(sequential.complete(messages, config, [0]))[0]
    assert {c.prompt_tokens for c in got} == {reference.prompt_tokens} and reference.prompt_tokens > 50
    assert batched.usage.requests == 1  # one request: the three samples decoded together
    assert batched.usage.prompt_tokens == 3 * reference.prompt_tokens
    assert batched.usage.completion_tokens == sum(c.completion_tokens for c in got)


def test_client_subset_of_indices_gives_the_same_texts(real_prompts):
    client = LlamaCppClient(smollm2_path())
    config = GenerateConfig(temperature=0.7, max_tokens=3, seed=8)
    full = asyncio.run(client.complete(real_prompts[0], config, list(range(100))))
    resumed = asyncio.run(LlamaCppClient(smollm2_path()).complete(real_prompts[0], config, [42, 7]))
    assert [c.text for c in resumed] == [full[42].text, full[7].text]


def test_config_keys_reach_the_client_and_are_bounded():
    client = Model(spec_of(make_cfg("model.n_parallel=7", "model.n_ctx_parallel=1024")).model, "model").open()
    assert (client.provider.n_parallel, client.provider.n_ctx_parallel, client.samples_per_request) == (7, 1024, 7)
    assert Model(spec_of(make_cfg("model.n_parallel=0")).model, "model").samples_per_request == 1
    for bad in ({"n_parallel": 255}, {"n_parallel": -1}, {"n_ctx_parallel": 100}):
        with pytest.raises(ConfigError, match="n_parallel|n_ctx_parallel"):
            ModelSpec(provider=Provider.llamacpp, name="m", **bad).validate("model")


def test_too_few_kv_cells_for_one_sample_names_the_setting(real_prompts):
    client = LlamaCppClient(smollm2_path(), n_ctx_parallel=256)
    with pytest.raises(ModelError, match="does not fit in model.n_ctx_parallel=256 KV cells"):
        asyncio.run(client.complete(real_prompts[0], GenerateConfig(max_tokens=1024), [0]))
    assert len(asyncio.run(client.complete(real_prompts[0], GenerateConfig(max_tokens=3), [0, 1]))) == 2


def test_a_prompt_longer_than_the_context_fails_clearly():
    client = LlamaCppClient(smollm2_path(), n_ctx=256)
    long_prompt = [{"role": "user", "content": "Tell me about Japan. " * 80}]
    with pytest.raises(ModelError, match=r"Requested tokens \(\d+\) exceed context window of 256"):
        asyncio.run(client.complete(long_prompt, GenerateConfig(max_tokens=3), [0]))
    assert client.usage.errors == {"ValueError": 1}


# -- the same distribution as the sequential path -------------------------------------------------------------


def leading_option(text: str) -> str:
    """The option number an answer starts with ('2. Other' -> '2'), or '-' when it starts otherwise."""
    match = re.match(r"\s*(\d+)", text)
    return match.group(1) if match else "-"


def option_table(a: list[str], b: list[str]) -> np.ndarray:
    """2 x k counts of the leading options; options seen fewer than 10 times in all pooled as '-'."""
    counts = Counter(a + b)
    common = sorted(option for option, n in counts.items() if n >= 10 and option != "-")
    table = np.array([[xs.count(o) for o in common] + [sum(x not in common for x in xs)] for xs in (a, b)])
    return table[:, table.sum(axis=0) > 0]


@pytest.mark.parametrize("question", [0, 2])
def test_batched_and_sequential_options_have_the_same_distribution(real_prompts, question):
    """Chi-square test of homogeneity of the option an answer starts with (T=0.7), 300 sequential samples
    (create_chat_completion) vs 1500 batched ones; fixed seeds make it deterministic. The first token
    decides the option, so max_tokens=1 keeps the sequential side fast. As a check that the test can
    fail, a batched run at T=0.9 must be told apart from the sequential one at 0.7.

    Not bit-for-bit: this Q4 model's probabilities move by several points with the arithmetic (flash
    attention or not, physical batch size, f16 or f32 cache: P(first token is a digit) ranges over
    0.51-0.60 on question 1 across such llama.cpp settings), the sequential path's included; p_same is
    0.20 and 0.10 on these two questions, p for T=0.9 below 1e-5."""
    messages = real_prompts[question]
    config = GenerateConfig(temperature=0.7, top_p=1.0, max_tokens=1, seed=21)
    sequential = asyncio.run(LlamaCppClient(smollm2_path(), n_parallel=0).complete(messages, config, range(300)))
    batched_client = LlamaCppClient(smollm2_path())
    batched = asyncio.run(batched_client.complete(messages, config, range(1000, 2500)))
    seq_options = [leading_option(c.text) for c in sequential]
    batch_options = [leading_option(c.text) for c in batched]
    assert len(set(seq_options)) >= 2  # two options at least: a distribution, not a constant
    _, p_same, _, _ = chi2_contingency(option_table(seq_options, batch_options))
    assert p_same > 0.001, (Counter(seq_options), Counter(batch_options))
    hotter = GenerateConfig(temperature=0.9, top_p=1.0, max_tokens=1, seed=21)
    hot_options = [leading_option(c.text) for c in asyncio.run(batched_client.complete(messages, hotter, range(1500)))]
    _, p_hot, _, _ = chi2_contingency(option_table(seq_options, hot_options))
    assert p_hot < 0.001, (Counter(seq_options), Counter(hot_options))
