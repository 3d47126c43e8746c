"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, a test server).

Only sends: retries, backoff, concurrency and the cache belong to `culturealign.models.model.Model`. It
asks for several samples per request (`n`) and returns what came back; an endpoint that silently returns
fewer is detected by the wrapper. The key comes only from the environment variable the config names.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from typing import Sequence

import openai

from culturealign.errors import ConfigError, ModelError
from culturealign.models.base import Completion, GenerateConfig, MalformedReply, Message
from culturealign.reachability import unreachable_reason
from culturealign.spec import ModelSpec

_RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIResponseValidationError,
    MalformedReply,
    json.JSONDecodeError,
)
NO_KEY = "not-needed"  # local OpenAI-compatible servers accept any key


class OpenAIProvider:
    name = "openai"

    def __init__(self, spec: ModelSpec, role: str, logprobs: bool = False) -> None:
        self.spec, self.role = spec, role
        self.model = spec.name
        self.base_url = str(spec.base_url).rstrip("/")
        self.endpoint = f"{self.base_url} ({self.model})"
        self.max_connections = 1 << 30  # the endpoint decides; the job's `concurrency` bounds it
        key = api_key(spec, role)
        check_reachable(self.base_url, role)
        self._sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=key, timeout=spec.timeout, max_retries=0)

    @classmethod
    def identity(cls, spec: ModelSpec) -> str:
        return f"openai:{str(spec.base_url).rstrip('/')}:{spec.name}"

    @classmethod
    def samples_per_request(cls, spec: ModelSpec) -> int:
        return spec.n_per_request

    async def generate(
        self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> list[Completion]:
        response = await self._sdk.chat.completions.create(**self.request(messages, config, sample_indices))
        return _parse(response)

    def request(self, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]) -> dict:
        """The request body (without the key) for these samples."""
        body: dict = {"model": self.model, "messages": list(messages), "temperature": config.temperature}
        body["top_p"] = config.top_p
        if config.max_tokens is not None:
            body["max_tokens"] = config.max_tokens
        if len(sample_indices) > 1:
            body["n"] = len(sample_indices)
        if config.seed is not None:
            body["seed"] = config.seed + sample_indices[0]
        if config.top_logprobs > 0:
            body.update(logprobs=True, top_logprobs=config.top_logprobs)
        return body

    def should_retry(self, error: Exception) -> bool:
        return isinstance(error, _RETRYABLE)

    def retry_after(self, error: Exception) -> float | None:
        response = getattr(error, "response", None)
        value = response.headers.get("retry-after") if response is not None else None
        return _seconds(value) if value else None

    def describe(self, error: Exception) -> str:
        status = getattr(error, "status_code", None)
        message = str(getattr(error, "message", "") or error).splitlines()[0][:200] if str(error) else ""
        described = f"HTTP {status}: {message}" if status else f"{type(error).__name__}: {message}"
        return f"{described}{self._hint(status)}"

    def _hint(self, status: int | None) -> str:
        return {
            401: f"; the API key was rejected: check the env var named by {self.role}.api_key_env",
            403: f"; access denied: check the key's permissions for {self.role}.name",
            404: f"; check {self.role}.name and {self.role}.base_url (the URL usually ends in /v1)",
        }.get(status or 0, "")

    async def aclose(self) -> None:
        await self._sdk.close()


def api_key(spec: ModelSpec, role: str) -> str:
    """The key comes only from the environment variable the config names, never from the config itself."""
    name = spec.api_key_env
    if not name:
        return NO_KEY
    key = os.environ.get(name)
    if not key:
        raise ConfigError(
            f"environment variable {name} is not set; export it with your API key for {spec.base_url} "
            f"(or set {role}.api_key_env=null for a local server that needs no key)"
        )
    return key


def check_reachable(base_url: str, role: str) -> None:
    """Before the first request: a server that is down fails the job now, not after every retry."""
    reason = unreachable_reason(base_url)
    if reason:
        raise ModelError(f"{role}.base_url {base_url} is unreachable: {reason}; start the server or fix {role}.base_url")


def _parse(response) -> list[Completion]:
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedReply("reply has no choices")
    usage = getattr(response, "usage", None)
    prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
    completion_tokens = getattr(usage, "completion_tokens", 0) or 0
    share, rest = divmod(completion_tokens, len(choices))
    return [
        Completion(
            text=_valid_utf8(choice.message.content or "") if choice.message else "",
            prompt_tokens=prompt_tokens if position == 0 else 0,
            completion_tokens=share + (1 if position < rest else 0),
            first_token_logprobs=_first_token_logprobs(choice),
            finish_reason=getattr(choice, "finish_reason", None),
        )
        for position, choice in enumerate(sorted(choices, key=lambda c: c.index or 0))
    ]


def _valid_utf8(text: str) -> str:
    """JSON may carry lone surrogates (a reply cut inside an emoji); they would break the cache and logs."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _first_token_logprobs(choice) -> dict[str, float] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return {alt.token: alt.logprob for alt in (content[0].top_logprobs or [])}


def _seconds(value: str) -> float | None:
    """Retry-After as seconds or as an HTTP date; None when unreadable (the wrapper then backs off)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None
