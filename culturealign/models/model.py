"""`Model`: one model as the pipeline sees it, whatever provider reaches it.

The provider only generates; this wrapper owns everything around a request, once for every provider:
- the response cache: answers already stored are returned without a request, and each request's answers
  are stored the moment they arrive (an interrupted job loses at most the requests in flight);
- `n` batching: the caller sends `samples_per_request` indices at a time; an endpoint that returns fewer
  choices than asked is detected and asked one sample per request from then on;
- concurrency: a per-endpoint window of requests in flight, at most `concurrency` (and never more than
  the provider serves), halved by 429 / 503 replies and grown back by successes (`throttle.Throttle`),
  within the spec's requests- and tokens-per-minute budgets;
- a preflight before any sampling (key, model name, logprobs), once per endpoint and process;
- retries with exponential backoff and jitter, honouring Retry-After, for errors the provider calls
  retryable; any other error, or the last retry, fails with one line naming the endpoint;
- usage (requests, retries, errors, tokens spent, cache hits) and cost at the spec's prices.
Built without a connection (dry runs read `identity` and `samples_per_request`); `open()` connects.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import replace
from typing import Sequence

from culturealign.errors import ModelError
from culturealign.models.base import Completion, GenerateConfig, Message, Provider, Usage, error_kind
from culturealign.models.cache import ResponseCache, cache_key
from culturealign.models.registry import provider_class
from culturealign.models.throttle import Throttle
from culturealign.redaction import redact
from culturealign.spec import ModelSpec

BACKOFF_CAP = 30.0  # seconds: the longest wait between two attempts
OVERLOAD_STATUSES = ("429", "503")  # "slow down": shrink the endpoint's window
_PREFLIGHT_PASSED: set[tuple] = set()  # (identity, needs logprobs, key digest) checked in this process


class Model:
    def __init__(
        self,
        spec: ModelSpec,
        role: str,
        cache: ResponseCache | None = None,
        concurrency: int = 16,
        logprobs: bool = False,
        throttles: dict[str, Throttle] | None = None,
    ) -> None:
        """`throttles`: endpoint -> throttle, shared by the models of a job that talk to the same server."""
        self.spec, self.role, self.cache = spec, role, cache
        self._throttles = throttles if throttles is not None else {}
        self._provider_class = provider_class(spec.provider)
        self.identity: str = self._provider_class.identity(spec)
        self.usage = Usage()
        self.served = [0, 0]  # prompt and completion tokens of every answer returned, cached or not
        self._concurrency, self._logprobs = concurrency, logprobs
        self._per_request = max(1, self._provider_class.samples_per_request(spec))
        self._provider: Provider | None = None

    def open(self) -> "Model":
        """Connect (API key, reachability, model file): raises before any request when one is wrong."""
        if self._provider is None:
            self._provider = self._provider_class(self.spec, self.role, logprobs=self._logprobs)
        return self

    async def preflight(self) -> None:
        """Check the endpoint once per process (a sweep's jobs in one process share the result)."""
        provider = self.open()._provider
        key = (self.identity, self._logprobs, hashlib.sha256(repr(vars(self.spec)).encode()).hexdigest())
        if key not in _PREFLIGHT_PASSED:
            await provider.preflight(self._logprobs)
            _PREFLIGHT_PASSED.add(key)

    @property
    def throttle(self) -> Throttle:
        provider = self.open()._provider
        if provider.endpoint not in self._throttles:
            limit = min(self._concurrency, provider.max_connections)
            self._throttles[provider.endpoint] = Throttle(limit, self.spec.requests_per_minute, self.spec.tokens_per_minute)
        return self._throttles[provider.endpoint]

    @property
    def samples_per_request(self) -> int:
        return self._per_request

    @property
    def provider(self) -> Provider:
        """The connected provider (the Batch API builds its request bodies and reaches its endpoint)."""
        return self.open()._provider

    def cached(self, messages: Sequence[Message], config: GenerateConfig, indices: Sequence[int]) -> dict[int, Completion]:
        """The answers already stored among `indices` (dry runs count what is missing)."""
        return self.cache.lookup(self.identity, messages, config, indices) if self.cache is not None else {}

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        return self.spec.cost_usd(prompt_tokens, completion_tokens, batch)

    async def complete(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        """One completion per sample index, in order: from the cache where stored, else requested."""
        found = self.cached(messages, config, sample_indices)
        missing = [index for index in sample_indices if index not in found]
        self.usage.cache_hits += len(found)
        self.usage.cache_misses += len(missing)
        while missing:
            chunk = missing[: self._per_request]
            fresh = (await self._request(messages, config, chunk))[: len(chunk)]
            if not fresh:
                raise ModelError(f"{self.identity}: a reply with no answer in it; check {self.role}.base_url")
            if len(fresh) < len(chunk):
                self._per_request = 1  # the endpoint ignores `n`: one sample per request from now on
            self._store(messages, config, chunk, fresh)
            found.update(zip(chunk, fresh))
            missing = missing[len(fresh) :]
        answers = [found[index] for index in sample_indices]
        self.served[0] += sum(c.prompt_tokens for c in answers)
        self.served[1] += sum(c.completion_tokens for c in answers)
        return answers

    def _store(self, messages, config: GenerateConfig, indices: Sequence[int], fresh: list[Completion]) -> None:
        self.usage.add_completions(fresh)
        if self.cache is not None:
            entries = [(cache_key(self.identity, messages, config, i), c) for i, c in zip(indices, fresh)]
            self.cache.put_many(self.identity, entries)

    async def _request(self, messages, config: GenerateConfig, indices: list[int]) -> list[Completion]:
        provider, throttle = self.open()._provider, self.throttle
        for attempt in range(self.spec.max_retries + 1):
            async with throttle.slot():
                started = time.monotonic()
                try:
                    self.usage.requests += 1
                    fresh = [_redacted(c) for c in await provider.generate(messages, config, indices)]
                    throttle.succeeded(sum(c.prompt_tokens + c.completion_tokens for c in fresh))
                    return fresh
                except Exception as error:  # noqa: BLE001 - the provider says which ones are worth a retry
                    kind, retry_after = error_kind(error), provider.retry_after(error)
                    self.usage.add_error(kind)
                    if kind in OVERLOAD_STATUSES:
                        throttle.overloaded(retry_after, time.monotonic() - started)
                    if not provider.should_retry(error):
                        raise ModelError(redact(f"{provider.endpoint}: {provider.describe(error)}")) from None
                    if attempt == self.spec.max_retries:
                        cause = provider.describe(error)
                        raise ModelError(redact(f"{provider.endpoint}: request failed after {attempt + 1} attempts: {cause}")) from None
                    self.usage.retries += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, BACKOFF_CAP)
        return min(BACKOFF_CAP, self.spec.retry_backoff * 2**attempt) * (0.5 + random.random() / 2)

    async def aclose(self) -> None:
        if self._provider is not None:
            trace = self.throttle.trace
            self.usage.rate_limited, self.usage.concurrency = trace.overloaded, list(trace.windows)
            await self._provider.aclose()


def _redacted(completion: Completion) -> Completion:
    """An answer that echoes a key is stored and logged without it."""
    text = redact(completion.text)
    return completion if text == completion.text else replace(completion, text=text)


