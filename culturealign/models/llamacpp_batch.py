"""Many samples at once from one llama.cpp model: parallel sequences in one batch (issue 14).

`ParallelDecoder.run(jobs)` takes jobs (a prompt's token ids, the sampling settings, one seed per sample)
and returns one `Generation` per seed. It runs on its own llama.cpp context (beside the `Llama` object's
own one, sharing its weights) with a unified KV cache: a cell belongs to every sequence that shares it.

How it decodes:
- Jobs that fit together run as one round: their prompts are evaluated in one batch, once each, and all
  the samples of a prompt draw their first token from its last logits. The round's first prompt stays
  cached, and the next round evaluates only what follows the common prefix (the system prompt and the
  persona line are the same for every question of a job).
- Samples that have drawn the same tokens so far have the same next-token distribution, so they share
  one llama.cpp sequence (one set of KV cells, one row of logits). When they draw different tokens the
  sequence branches: the new branch gets the parent's cells by `llama_memory_seq_cp` (the unified cache
  only tags the cells) and its new token is decoded for it alone. Each batch holds the next token of
  every live branch of the round. The 100 samples of a classification prompt make a few dozen
  branches; free-text samples part after a few tokens and then each is a sequence of its own.
- Sampling is llama-cpp-python's for create_chat_completion with top_k=0, min_p=0, typical_p=1 and
  neutral penalties: llama.cpp's own top-k/typical/top-p/min-p/temperature samplers (so top-p is taken
  before temperature, as today), then the final draw of llama.cpp's `dist` sampler, reproduced here so
  that a branch's probabilities are computed once for all its samples: each sample has its own mt19937
  seeded with its seed and draws as llama.cpp's dist would (tests compare them token for token; only a
  last-bit difference between glibc's expf and a rounded exp could ever part them). Temperature 0 is
  greedy.
- A sample stops at an end-of-generation token (finish_reason "stop", the token not counted), at a stop
  string (text cut before it, "stop") or after max_tokens tokens ("length"), with llama-cpp-python's rule
  that a token ending inside a UTF-8 character does not end the sample (see its _create_completion; here
  for at most MULTIBYTE_SLACK tokens).

A sample's text depends only on the prompt, the settings and its seed, not on the other samples, jobs or
rounds. That needs a token's logits to be bit-identical whatever else the batch and the KV cache hold,
which on this llama.cpp build takes (measured): flash attention, physical batches of at most UBATCH
tokens (larger ones switch kernels), one thread for single-token batches, and each sequence's cells in
the order of their positions (flash attention sums over the cells in cell order). The last is why a
round frees no cell until it ends (see `_admit`). Tests check that runs, subsets, orders and company give
identical texts. `Llama`'s own context (sequential path) computes without flash attention in batches of
512: the same seed gives another sample there. Neither is more exact: this Q4 model's probabilities move
by a few points with any such change of arithmetic (see tests/test_llamacpp_batch.py).

Memory: the context has `n_ctx` KV cells (about 23 KB each for SmolLM2-135M) shared by all sequences. A
job's samples are split into chunks that fit: prompt + k x (max_tokens + MULTIBYTE_SLACK) cells and k <=
`n_parallel`; a round takes the chunks at the head of the queue while they fit beside the cached prompt.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

UBATCH = 32  # physical batch: at most ~48 tokens keeps logits independent of the rest of the batch
MULTIBYTE_SLACK = 3  # tokens allowed past max_tokens to finish a UTF-8 character (as llama-cpp-python)
_TWO_32 = 4294967296.0
_TWO_64 = 18446744073709551616.0


@dataclass(frozen=True)
class Sampling:
    """How one job samples. `stop` holds the stop strings the chat handler adds (e.g. the EOS text)."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    prompt_tokens: tuple[int, ...]
    seeds: tuple[int, ...]
    sampling: Sampling


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[int, ...]  # completion tokens (end-of-generation token excluded), as usage counts them
    finish_reason: str  # "stop" | "length"

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass(eq=False)
class _Chunk:
    """Some (or all) samples of one job, admitted together."""

    job: int
    prompt: tuple[int, ...]
    sampling: Sampling
    stop: tuple[bytes, ...]
    positions: list[int]  # index of each sample within its job
    seeds: list[int]

    @property
    def cells(self) -> int:
        return len(self.prompt) + len(self.seeds) * (self.sampling.max_tokens + MULTIBYTE_SLACK)


class SeedStream:
    """The random numbers of llama.cpp's dist sampler seeded with `seed`: std::mt19937(seed) read through
    std::uniform_real_distribution<double>(0, 1), which libstdc++ builds from two 32-bit draws."""

    def __init__(self, seed: int):
        self.seed = seed
        self._rng: Any = None  # numpy's legacy RandomState is the same mt19937, seeded the same way

    def uniform(self) -> float:
        if self._rng is None:
            self._rng = np.random.RandomState(self.seed)
        low, high = self._rng.randint(0, 2**32, size=2, dtype=np.uint64)
        value = (float(low) + float(high) * _TWO_32) / _TWO_64
        return value if value < 1.0 else float(np.nextafter(1.0, 0.0))


@dataclass(eq=False)
class _Sample:
    chunk: _Chunk
    position: int
    stream: SeedStream
    tokens: list[int] = field(default_factory=list)
    text: bytes = b""
    multibyte_fix: int = 0


@dataclass(eq=False)
class _Branch:
    """One llama.cpp sequence: the samples that drew the same tokens so far."""

    seq_id: int
    pos: int  # position of its last token (the one whose logits it samples from)
    samples: list[_Sample]
    token: int = -1  # token to decode at pos (roots: their prompt is in the batch instead)
    out: int = -1  # its row of logits in the current batch
    start: int = 0  # roots: first prompt position to evaluate (the rest comes from the cached prompt)


class ParallelDecoder:
    """A llama.cpp context for batched sampling from `model` (a `llama_model_p`, e.g. `Llama.model`)."""

    def __init__(self, model: Any, n_parallel: int, n_ctx: int, n_threads_batch: int = 1):
        import llama_cpp

        self._c = llama_cpp
        max_seq = llama_cpp.llama_max_parallel_sequences()
        if not 1 <= n_parallel <= max_seq - 2:
            raise ValueError(f"n_parallel must be between 1 and {max_seq - 2}, got {n_parallel}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # what one llama_decode call may hold: at most one token per cell
        params.n_ubatch = UBATCH
        params.n_seq_max = n_parallel + 2  # and two more: the cached prompt, the retired branches
        params.kv_unified = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_threads, params.n_threads_batch = 1, n_threads_batch
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context with n_ctx={n_ctx}, n_parallel={n_parallel}")
        self.ctx = ctx
        self.n_parallel = n_parallel
        self.n_ctx = llama_cpp.llama_n_ctx(ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        self._cache_seq, self._retired_seq = n_parallel, n_parallel + 1
        self._cached: tuple[int, ...] = ()
        self._free_ids = list(range(n_parallel - 1, -1, -1))
        token_data = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
        assert token_data.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._cand = np.zeros(self._n_vocab, dtype=token_data)
        self._cand_ptr = self._cand.ctypes.data_as(llama_cpp.llama_token_data_p)
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        self._chains: dict[tuple[float, float], Any] = {}
        self._piece = ctypes.create_string_buffer(64)
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        if self.ctx is not None:
            for chain in self._chains.values():
                self._c.llama_sampler_free(chain)
            self._chains.clear()
            self._c.llama_batch_free(self._batch)
            self._c.llama_free(self.ctx)
            self.ctx = None

    def capacity(self, prompt_len: int, max_tokens: int) -> int:
        """How many samples of one prompt can run together (0: not even one fits)."""
        return max(0, min(self.n_parallel, (self.n_ctx - prompt_len) // (max_tokens + MULTIBYTE_SLACK)))

    def run(self, jobs: Sequence[Job]) -> list[list[Generation]]:
        """One list of generations per job, one generation per seed, in order."""
        if self.ctx is None:
            raise RuntimeError("the parallel decoder is closed")
        results: list[list[Generation | None]] = [[None] * len(job.seeds) for job in jobs]
        queue: deque[_Chunk] = deque()
        for number, job in enumerate(jobs):
            if not job.seeds:
                continue
            if not job.prompt_tokens:
                raise ValueError("empty prompt")
            if job.sampling.max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {job.sampling.max_tokens}")
            size = self.capacity(len(job.prompt_tokens), job.sampling.max_tokens)
            if size == 0:
                raise ValueError(
                    f"a prompt of {len(job.prompt_tokens)} tokens with max_tokens={job.sampling.max_tokens} "
                    f"does not fit in {self.n_ctx} KV cells"
                )
            stop = tuple(s.encode("utf-8") for s in job.sampling.stop)
            for start in range(0, len(job.seeds), size):
                positions = list(range(start, min(start + size, len(job.seeds))))
                seeds = [job.seeds[i] for i in positions]
                queue.append(_Chunk(number, tuple(job.prompt_tokens), job.sampling, stop, positions, seeds))
        try:
            self._loop(queue, results)
        except BaseException:
            self._c.llama_memory_clear(self._mem, True)
            self._cached = ()
            self._free_ids = list(range(self.n_parallel - 1, -1, -1))
            raise
        return results  # type: ignore[return-value]

    # -- the decoding loop ------------------------------------------------------------------------------------

    def _loop(self, queue: deque[_Chunk], results: list[list[Generation | None]]) -> None:
        while queue:
            self._round(self._admit(queue), results)

    def _admit(self, queue: deque[_Chunk]) -> list[tuple[_Chunk, _Branch]]:
        """Start a round: the chunks at the head of the queue that fit together (at least one).

        Cell layout (what keeps logits bit-identical, see UBATCH): at the start of a round the only cells
        in use are the cached prompt's, at [0, len); cutting it to the part the first chunk shares moves
        llama.cpp's next free cell right after that part, and no cell is freed during the round (a branch
        that ends hands its cells to the retired sequence). So cells are taken in order from there on, and
        every sequence sees its cells in the order of their positions, whatever else is running."""
        first = queue[0]
        shared = min(_common_prefix(self._cached, first.prompt), len(first.prompt) - 1)
        if shared == 0:  # also resets llama.cpp's next free cell to 0
            self._c.llama_memory_clear(self._mem, True)
        else:
            self._c.llama_memory_seq_rm(self._mem, self._cache_seq, shared, -1)
        self._cached = self._cached[:shared]
        used, running = shared, 0
        admitted: list[tuple[_Chunk, _Branch]] = []
        while queue:
            chunk = queue[0]
            shared = min(_common_prefix(self._cached, chunk.prompt), len(chunk.prompt) - 1)
            need = chunk.cells - shared
            if admitted and (running + len(chunk.seeds) > self.n_parallel or used + need > self.n_ctx):
                break
            queue.popleft()
            used += need
            running += len(chunk.seeds)
            root = _Branch(self._free_ids.pop(), len(chunk.prompt) - 1, [], start=shared)
            if shared:
                self._c.llama_memory_seq_cp(self._mem, self._cache_seq, root.seq_id, 0, shared)
            admitted.append((chunk, root))
        return admitted

    def _round(self, admitted: list[tuple[_Chunk, _Branch]], results: list[list[Generation | None]]) -> None:
        """Decode the admitted chunks until every sample has ended, then free all but the cached prompt."""
        self._fill_batch(admitted, [])
        self._decode()
        chunk, root = admitted[0]  # its prompt is cached from now on, in cells [0, len(prompt))
        self._c.llama_memory_seq_cp(self._mem, root.seq_id, self._cache_seq, len(self._cached), -1)
        self._cached = chunk.prompt
        branches = []
        for chunk, root in admitted:
            root.samples = [_Sample(chunk, i, SeedStream(seed)) for i, seed in zip(chunk.positions, chunk.seeds)]
            branches.append(root)
        while branches:
            next_branches: list[_Branch] = []
            for branch in branches:
                self._advance(branch, next_branches, results)
            branches = next_branches
            if branches:
                self._fill_batch([], branches)
                self._decode()
        self._c.llama_memory_seq_rm(self._mem, self._retired_seq, -1, -1)

    def _decode(self) -> None:
        status = self._c.llama_decode(self.ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} ({self._batch.n_tokens} tokens)")

    def _fill_batch(self, admitted: list[tuple[_Chunk, _Branch]], branches: list[_Branch]) -> None:
        batch = self._batch
        i = 0
        for chunk, root in admitted:
            last = len(chunk.prompt) - 1
            for pos in range(root.start, len(chunk.prompt)):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = chunk.prompt[pos], pos, 1
                batch.seq_id[i][0] = root.seq_id
                batch.logits[i] = pos == last
                i += 1
            root.out = i - 1
        for branch in branches:
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = branch.token, branch.pos, 1
            batch.seq_id[i][0] = branch.seq_id
            batch.logits[i] = True
            branch.out = i
            i += 1
        batch.n_tokens = i

    def _advance(self, branch: _Branch, next_branches: list[_Branch], results: list[list[Generation | None]]) -> None:
        """Every sample of the branch draws its next token; the samples going on regroup by token."""
        groups: dict[int, list[_Sample]] = {}
        for sample, token in zip(branch.samples, self._draw(branch)):
            generation = self._accept(sample, token)
            if generation is None:
                groups.setdefault(token, []).append(sample)
            else:
                results[sample.chunk.job][sample.position] = generation
        if not groups:  # retire the sequence: its cells stay taken until the round ends
            self._c.llama_memory_seq_cp(self._mem, branch.seq_id, self._retired_seq, -1, -1)
            self._c.llama_memory_seq_rm(self._mem, branch.seq_id, -1, -1)
            self._free_ids.append(branch.seq_id)
            return
        for number, (token, samples) in enumerate(groups.items()):
            if number == 0:
                seq_id = branch.seq_id
            else:
                seq_id = self._free_ids.pop()
                self._c.llama_memory_seq_cp(self._mem, branch.seq_id, seq_id, -1, -1)
            next_branches.append(_Branch(seq_id, branch.pos + 1, samples, token))

    def _draw(self, branch: _Branch) -> list[int]:
        """The next token of each sample of the branch (all see the same logits)."""
        logits = self._c.llama_get_logits_ith(self.ctx, branch.out)
        sampling = branch.samples[0].chunk.sampling
        return self.sample_tokens(
            np.ctypeslib.as_array(logits, shape=(self._n_vocab,)), sampling, [s.stream for s in branch.samples]
        )

    def sample_tokens(self, logits: np.ndarray, sampling: Sampling, streams: Sequence[SeedStream]) -> list[int]:
        """One token per stream from one row of logits, each as llama-cpp-python's sampler chain seeded
        with that stream's seed would pick it (and advancing the stream as that chain's RNG)."""
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        array = self._c.llama_token_data_array(self._cand_ptr, self._n_vocab, -1, False)
        self._c.llama_sampler_apply(self._chain(sampling), ctypes.byref(array))
        size, presorted = int(array.size), bool(array.sorted)
        ids, kept = cand["id"][:size], cand["logit"][:size]
        if sampling.temperature == 0.0:  # llama.cpp's greedy sampler: the first highest logit
            return [int(ids[int(np.argmax(kept))])] * len(streams)
        if size == 1:  # llama.cpp's dist takes the only candidate without drawing
            return [int(ids[0])] * len(streams)
        # llama.cpp's dist: p_i = expf(logit_i - max) as float, summed in double in candidate order; the
        # token is the first whose running sum reaches sum * u (computed once for every stream)
        top = kept[0] if presorted else kept.max()
        probs = np.exp((kept - top).astype(np.float64)).astype(np.float32)
        cumulative = np.cumsum(probs.astype(np.float64))
        total = cumulative[-1]
        return [int(ids[int(np.searchsorted(cumulative, total * s.uniform(), side="left"))]) for s in streams]

    def _chain(self, sampling: Sampling) -> Any:
        """The deterministic part of `Llama._init_sampler`'s chain (top_k=0, typical_p=1, min_p=0; the
        neutral penalties change nothing); the final draw is `_draw`'s."""
        key = (sampling.temperature, sampling.top_p)
        chain = self._chains.get(key)
        if chain is None:
            c = self._c
            chain = c.llama_sampler_chain_init(c.llama_sampler_chain_default_params())
            if sampling.temperature > 0.0:
                c.llama_sampler_chain_add(chain, c.llama_sampler_init_top_k(0))
                c.llama_sampler_chain_add(chain, c.llama_sampler_init_typical(1.0, 1))
                c.llama_sampler_chain_add(chain, c.llama_sampler_init_top_p(sampling.top_p, 1))
                c.llama_sampler_chain_add(chain, c.llama_sampler_init_min_p(0.0, 1))
                c.llama_sampler_chain_add(chain, c.llama_sampler_init_temp(sampling.temperature))
            self._chains[key] = chain
        return chain

    def _accept(self, sample: _Sample, token: int) -> Generation | None:
        """llama-cpp-python's _create_completion loop for one token: a Generation if the sample ends."""
        if self._c.llama_vocab_is_eog(self._vocab, token):
            return Generation(_text(sample.text), tuple(sample.tokens), "stop")
        sample.tokens.append(token)
        sample.text += self._piece_of(token)
        for k, char in enumerate(sample.text[-3:]):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    sample.multibyte_fix = num - k
        if sample.multibyte_fix > 0:
            sample.multibyte_fix -= 1
            if len(sample.tokens) < sample.chunk.sampling.max_tokens + MULTIBYTE_SLACK:
                return None
        for stop in sample.chunk.stop:
            if stop in sample.text:
                return Generation(_text(sample.text[: sample.text.index(stop)]), tuple(sample.tokens), "stop")
        if len(sample.tokens) >= sample.chunk.sampling.max_tokens:
            return Generation(_text(sample.text), tuple(sample.tokens), "length")
        return None

    def _piece_of(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            n = self._c.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
            if n < 0:
                raise RuntimeError(f"token {token} does not fit a {len(self._piece)}-byte piece")
            piece = self._pieces[token] = bytes(self._piece[:n])
        return piece


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Captured(Exception):
    def __init__(self, prompt: list[int], stop: list[str]):
        self.prompt, self.stop = prompt, stop


class _Capture:
    """Stands in for the `Llama` a chat handler is given: tokenizes through the real one, and stops the
    handler at the point it would generate, keeping the prompt tokens and stop strings it built."""

    def __init__(self, llm: Any):
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, prompt: Any, stop: Any = None, **_: Any) -> Any:
        if not isinstance(prompt, list):  # _create_completion's own tokenization is not reproduced here
            raise TypeError(f"chat handler of {self._llm.chat_format!r} passes a text prompt, not token ids")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        raise _Captured([int(t) for t in prompt], stop)


def chat_prompt(llm: Any, messages: Sequence[dict[str, str]]) -> tuple[list[int], tuple[str, ...]]:
    """The prompt token ids and stop strings `llm.create_chat_completion(messages=...)` generates from:
    the same chat handler (`Llama.create_chat_completion` picks it the same way), run up to the call that
    would start generating."""
    from llama_cpp import llama_chat_format

    handler = (
        llm.chat_handler
        or llm._chat_handlers.get(llm.chat_format)
        or llama_chat_format.get_chat_completion_handler(llm.chat_format)
    )
    try:
        handler(llama=_Capture(llm), messages=list(messages))
    except _Captured as captured:
        return captured.prompt, tuple(captured.stop)
    raise RuntimeError(f"the chat handler of {llm.chat_format!r} returned without asking for a completion")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="ignore")
