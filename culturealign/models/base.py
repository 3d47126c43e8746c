"""The one interface between the pipeline and any language model.

A provider (hosted OpenAI-compatible API, in-process llama.cpp, ...) implements `ModelClient.complete`:
given a chat prompt, the generation settings and the sample indices wanted, return one `Completion` per
index. Sample indices make repeated samples of the same prompt distinct (for caching and for per-sample
seeds) while keeping the same sample re-requested identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

from culturealign.errors import ModelError

__all__ = ["Completion", "GenerateConfig", "Message", "ModelClient", "ModelError", "UsageStats"]

Message = dict[str, str]  # {"role": "user" | "system" | "assistant", "content": "..."}


@dataclass(frozen=True)
class GenerateConfig:
    """Every setting that changes what a model returns (and so belongs in the cache key)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None
    top_logprobs: int = 0  # >0: return the first token's top alternatives with log-probabilities

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
class UsageStats:
    """What a client has spent and survived so far; read by tracking and progress."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add_completion(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens


class ModelClient(Protocol):
    """A chat model. `identity` names the endpoint and model so caches never mix two models."""

    identity: str
    max_concurrency: int
    usage: UsageStats

    async def complete(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        """One completion per sample index, in order."""
        ...

    async def aclose(self) -> None: ...
