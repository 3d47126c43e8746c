"""The one interface between the pipeline and any language model.

A provider (hosted OpenAI-compatible API, in-process llama.cpp, ...) only generates: given a chat prompt,
the generation settings and the sample indices wanted, one request returns up to one `Completion` per
index, and the provider says whether an error is worth retrying. Everything else (the response cache,
`n` batching, concurrency, retries and backoff, usage and cost) belongs to one wrapper,
`culturealign.models.model.Model`, so every provider gets it the same way.

Sample indices make repeated samples of the same prompt distinct (for caching and for per-sample seeds)
while keeping the same sample re-requested identical.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Protocol, Sequence

from culturealign.errors import ModelError
from culturealign.prompts import Message
from culturealign.spec import ModelSpec

__all__ = ["Completion", "GenerateConfig", "MalformedReply", "Message", "ModelError", "Provider", "Usage", "gather_or_cancel"]


@dataclass(frozen=True)
class GenerateConfig:
    """Every setting that changes what a model returns (and so belongs in the cache key)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None  # sample i of a prompt is drawn with a seed derived from (seed, i)
    top_logprobs: int = 0  # >0: return the first token's top alternatives with log-probabilities
    json_output: bool = False  # ask for one JSON object (the judge), where the endpoint can be asked

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # First generated token's alternatives: token text -> natural-log probability (None if not requested).
    first_token_logprobs: dict[str, float] | None = None
    cached: bool = False
    finish_reason: str | None = None  # "stop", or "length" when max_tokens cut the answer


@dataclass
class Usage:
    """What a model has spent and survived so far; read by tracking and progress."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0  # 429 / 503 replies (each halved the endpoint's window, once per round trip)
    concurrency: list[int] = field(default_factory=list)  # the endpoint's window after each change
    # Batch API (culturealign.models.batch): its tokens are part of the totals above, at the batch price
    batches: int = 0  # batches created by this invocation
    batches_reattached: int = 0  # batches created by an earlier, interrupted invocation and finished by this one
    batch_requests: int = 0  # batch requests answered
    batch_resubmitted: int = 0  # batch requests that failed for a transient reason (expiry, 5xx, ...) and were sent again
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0

    def add_completions(self, completions: Sequence[Completion], batch: bool = False) -> None:
        prompt_tokens = sum(c.prompt_tokens for c in completions)
        completion_tokens = sum(c.completion_tokens for c in completions)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if batch:
            self.batch_prompt_tokens += prompt_tokens
            self.batch_completion_tokens += completion_tokens

    def add_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def error_kind(error: Exception) -> str:
    """How usage counts an error: its HTTP status ("429", "503", ...) or its type's name."""
    return str(getattr(error, "status_code", "") or type(error).__name__)


class MalformedReply(Exception):
    """A reply that cannot be read (no choices, bad JSON, impossible numbers): retried like a fault."""


class Provider(Protocol):
    """One way of reaching a model. Built only when a job sends (dry runs use the class methods)."""

    name: ClassVar[str]
    max_connections: int  # requests it can serve at once (the wrapper never exceeds it)
    role: str  # "model" or "judge": the config key that errors name
    endpoint: str  # where requests go, for error messages: "http://host/v1 (gpt-4o)"

    def __init__(self, spec: ModelSpec, role: str, logprobs: bool = False) -> None: ...

    @classmethod
    def identity(cls, spec: ModelSpec) -> str:
        """Names the endpoint and model, so caches never mix two models (computed without a connection)."""
        ...

    @classmethod
    def samples_per_request(cls, spec: ModelSpec) -> int:
        """How many sample indices one `generate` call may be given."""
        ...

    async def generate(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        """One request: a completion per index, in order (fewer when the endpoint ignored `n`)."""
        ...

    async def preflight(self, needs_logprobs: bool) -> None:
        """Before any sampling request: reachable, key accepted, model served, logprobs when needed; raises
        a ModelError naming the endpoint, the model and the config key to fix."""
        ...

    def should_retry(self, error: Exception) -> bool: ...

    def retry_after(self, error: Exception) -> float | None:
        """Seconds the server asked us to wait (Retry-After), if it said."""
        ...

    def describe(self, error: Exception) -> str:
        """One line: what went wrong and, where known, the config key to fix (the wrapper adds `endpoint`)."""
        ...

    async def aclose(self) -> None: ...


async def gather_or_cancel(coroutines) -> list:
    """Like gather, but the first failure cancels the rest instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
