"""Provider name -> provider class, imported on first use: a missing optional SDK never breaks `import`."""

from __future__ import annotations

import importlib

from culturealign.spec import Provider

_PROVIDERS: dict[Provider, str] = {
    Provider.openai: "culturealign.models.openai_api:OpenAIProvider",
    Provider.llamacpp: "culturealign.models.llamacpp:LlamaCppProvider",
}


def provider_class(provider: Provider) -> type:
    module, _, name = _PROVIDERS[provider].partition(":")
    return getattr(importlib.import_module(module), name)
