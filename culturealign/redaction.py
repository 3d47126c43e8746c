"""Keys never leave the environment: the values of the API-key variables in use are cut out of every
string the project writes or prints (error messages quoting a server's reply, answers that echo a key,
MLflow params and tags, artifacts, the cache, logs)."""

from __future__ import annotations

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 6  # shorter values ("", "x") would redact ordinary text
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """A key read from the environment; from now on it is redacted wherever `redact` is applied."""
    if value and len(value) >= MIN_SECRET_CHARS:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
