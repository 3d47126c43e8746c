"""Model providers behind one protocol (`base.ModelClient`), chosen by `model.provider` in the config.

Providers import their SDKs lazily, so a missing optional dependency never breaks `import culturealign`.
"""

from __future__ import annotations

import os

from culturealign.errors import ConfigError
from culturealign.models.base import Completion, GenerateConfig, ModelClient, ModelError, UsageStats
from culturealign.reachability import unreachable_reason

PROVIDERS = ("openai", "llamacpp")

__all__ = ["PROVIDERS", "Completion", "GenerateConfig", "ModelClient", "ModelError", "UsageStats", "build_client"]


def build_client(
    model_cfg, concurrency: int, seed: int = 0, logprobs: bool = False, group: str = "model"
) -> ModelClient:
    """A client for the `model` (or `judge`: `group`) config group entry."""
    provider = model_cfg.provider
    if provider == "openai":
        from culturealign.models.openai_api import OpenAIClient

        key = api_key(model_cfg, group)
        check_reachable(model_cfg.base_url, group)
        return OpenAIClient(
            model=model_cfg.name,
            base_url=model_cfg.base_url,
            api_key=key,
            concurrency=concurrency,
            timeout=model_cfg.timeout,
            max_retries=model_cfg.max_retries,
            n_per_request=model_cfg.n_per_request,
            backoff_base=model_cfg.get("retry_backoff", 0.5),
        )
    if provider == "llamacpp":
        from culturealign.models.llamacpp import LlamaCppClient, smollm2_path

        path = model_cfg.path or smollm2_path()
        return LlamaCppClient(
            path,
            n_ctx=model_cfg.n_ctx,
            n_threads=model_cfg.get("n_threads") or 1,
            n_threads_batch=model_cfg.get("n_threads_batch"),
            logprobs=logprobs,
            seed=seed,
        )
    raise ConfigError(f"unknown model.provider {provider!r}; use one of {', '.join(PROVIDERS)}")


def check_reachable(base_url: str, group: str = "model") -> None:
    """Before the first request: a server that is down fails the job now, not after every retry."""
    reason = unreachable_reason(base_url)
    if reason:
        raise ModelError(
            f"{group}.base_url {base_url} is unreachable: {reason}; start the server or fix {group}.base_url"
        )


def api_key(model_cfg, group: str = "model") -> str:
    """The key comes only from the environment variable the config names, never from the config itself."""
    name = model_cfg.api_key_env
    if not name:
        return "not-needed"  # local OpenAI-compatible servers accept any key
    key = os.environ.get(name)
    if not key:
        raise ConfigError(
            f"environment variable {name} is not set; export it with your API key for {model_cfg.base_url} "
            f"(or set {group}.api_key_env=null for a local server that needs no key)"
        )
    return key

