"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, a test server).

Retries 429 / 5xx / timeouts / dropped connections / malformed replies with exponential backoff and
honours Retry-After; asks for several samples per request (`n`) where the endpoint returns them and
falls back to one request per sample where it silently does not.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from typing import Sequence

import openai

from culturealign.models.base import Completion, GenerateConfig, Message, ModelError, UsageStats

_RETRYABLE = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)


class _MalformedReply(Exception):
    pass


class OpenAIClient:
    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str,
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 6,
        n_per_request: int = 1,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.identity = self.identity_for(base_url, model)
        self.max_concurrency = concurrency
        self.usage = UsageStats()
        self.n_per_request = max(1, n_per_request)
        self.honours_n = True  # set False the first time the endpoint returns fewer choices than asked
        self._max_retries = max_retries
        self._backoff = (backoff_base, backoff_max)
        self._slots = asyncio.Semaphore(concurrency)
        self._sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=0)

    @staticmethod
    def identity_for(base_url: str, model: str) -> str:
        """The cache identity of an endpoint and model (also computed by dry runs, which open no client)."""
        return f"openai:{base_url.rstrip('/')}:{model}"

    @property
    def samples_per_request(self) -> int:
        """How many samples one request asks for: `n_per_request` until the endpoint ignores `n`, then 1."""
        return self.n_per_request if self.honours_n else 1

    async def complete(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        indices = list(sample_indices)
        results: list[Completion] = []
        while indices:
            batch = self.samples_per_request
            chunk, indices = indices[:batch], indices[batch:]
            completions = await self._request(messages, config, chunk)
            if len(completions) < len(chunk):
                self.honours_n = False
                indices = chunk[len(completions) :] + indices
            results.extend(completions[: len(chunk)])
        return results

    async def _request(self, messages: Sequence[Message], config: GenerateConfig, chunk: list[int]) -> list[Completion]:
        kwargs: dict = {"model": self.model, "messages": list(messages), "temperature": config.temperature}
        kwargs["top_p"] = config.top_p
        if config.max_tokens is not None:
            kwargs["max_tokens"] = config.max_tokens
        if len(chunk) > 1:
            kwargs["n"] = len(chunk)
        if config.seed is not None:
            kwargs["seed"] = config.seed + chunk[0]
        if config.top_logprobs > 0:
            kwargs.update(logprobs=True, top_logprobs=config.top_logprobs)
        async with self._slots:
            return await self._with_retries(kwargs)

    async def _with_retries(self, kwargs: dict) -> list[Completion]:
        for attempt in range(self._max_retries + 1):
            try:
                self.usage.requests += 1
                response = await self._sdk.chat.completions.create(**kwargs)
                return self._parse(response)
            except (*_RETRYABLE, _MalformedReply, json.JSONDecodeError, openai.APIResponseValidationError) as error:
                self._count_error(error)
                if attempt == self._max_retries:
                    raise ModelError(
                        f"{self.base_url} ({self.model}): request failed after {attempt + 1} attempts: "
                        f"{_describe(error)}"
                    ) from None
                self.usage.retries += 1
                await asyncio.sleep(self._delay(attempt, error))
            except openai.APIStatusError as error:
                raise ModelError(f"{self.base_url} ({self.model}): {_describe(error)}{_hint(error)}") from None
        raise AssertionError("unreachable")

    def _parse(self, response) -> list[Completion]:
        choices = getattr(response, "choices", None)
        if not choices:
            raise _MalformedReply("reply has no choices")
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        share, rest = divmod(completion_tokens, len(choices))
        completions = []
        for position, choice in enumerate(sorted(choices, key=lambda c: c.index or 0)):
            completions.append(
                Completion(
                    text=_valid_utf8(choice.message.content or "") if choice.message else "",
                    prompt_tokens=prompt_tokens if position == 0 else 0,
                    completion_tokens=share + (1 if position < rest else 0),
                    first_token_logprobs=_first_token_logprobs(choice),
                    finish_reason=getattr(choice, "finish_reason", None),
                )
            )
        for completion in completions:
            self.usage.add_completion(completion)
        return completions

    def _count_error(self, error: Exception) -> None:
        name = str(getattr(error, "status_code", "") or type(error).__name__)
        self.usage.errors[name] = self.usage.errors.get(name, 0) + 1

    def _delay(self, attempt: int, error: Exception) -> float:
        base, cap = self._backoff
        retry_after = _retry_after_seconds(error)
        if retry_after is not None:
            return min(retry_after, cap)
        return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)

    async def aclose(self) -> None:
        await self._sdk.close()


def _valid_utf8(text: str) -> str:
    """JSON may carry lone surrogates (a reply cut inside an emoji); they would break the cache and logs."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _first_token_logprobs(choice) -> dict[str, float] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return {alt.token: alt.logprob for alt in (content[0].top_logprobs or [])}


def _retry_after_seconds(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    message = str(getattr(error, "message", "") or error).splitlines()[0][:200]
    return f"HTTP {status}: {message}" if status else f"{type(error).__name__}: {message}"


def _hint(error: openai.APIStatusError) -> str:
    return {
        401: "; the API key was rejected: check the env var named by model.api_key_env",
        403: "; access denied: check the key's permissions for this model",
        404: "; check model.name and model.base_url (the URL usually ends in /v1)",
    }.get(error.status_code, "")
