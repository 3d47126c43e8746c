"""Durable response cache: every answer is stored the moment it arrives, so nothing is paid for twice.

One short transaction per request with insert-if-absent, safe for any number of processes: in a SQLite file
(the default) or, for a cluster, in a PostgreSQL database every node shares (`cache.url`, see
cache_store.py). The key covers everything that changes an answer: the endpoint and model (`identity`), the
messages, every generation setting and the sample index, so 100 samples at temperature 0.7 are 100
entries while the same sample asked again is a hit.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

from culturealign.models.base import Completion, GenerateConfig, Message
from culturealign.models.cache_store import CONFIG_NAMES, Row, SettingNames, open_store


def cache_key(identity: str, messages: Sequence[Message], config: GenerateConfig, sample_index: int) -> str:
    payload = json.dumps([identity, list(messages), config.as_dict(), sample_index], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """`url`: a path, `sqlite:///PATH` or `postgresql://USER@HOST[:PORT]/DATABASE` (no password in it: libpq's
    PGPASSWORD / ~/.pgpass, or the variable `password_env` names). create=False: it must exist already."""

    def __init__(
        self,
        url: str | Path,
        password_env: str | None = None,
        *,
        create: bool = True,
        names: SettingNames = CONFIG_NAMES,
    ):
        self._store = open_store(url, password_env, create=create, names=names)
        self.url = self._store.display  # never holds a password
        self.path = self._store.path  # the SQLite file, None for a database server

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        return {
            key: Completion(
                text,
                prompt_tokens,
                completion_tokens,
                json.loads(logprobs) if logprobs else None,
                cached=True,
                finish_reason=finish_reason,
            )
            for key, text, prompt_tokens, completion_tokens, logprobs, finish_reason in self._store.fetch(keys)
        }

    def lookup(
        self, identity: str, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> dict[int, Completion]:
        """The cached answers among `sample_indices`, by index (dry runs count what is missing)."""
        keys = {index: cache_key(identity, messages, config, index) for index in sample_indices}
        found = self.get_many(list(keys.values()))
        return {index: found[key] for index, key in keys.items() if key in found}

    def put_many(self, identity: str, entries: Sequence[tuple[str, Completion]]) -> int:
        """Store answers not stored yet (one transaction); returns how many were new."""
        now = time.time()  # set here: SQLite < 3.42 has no unixepoch('subsec'), a NULL default broke inserts
        rows = [
            (
                key,
                identity,
                c.text,
                c.prompt_tokens,
                c.completion_tokens,
                json.dumps(c.first_token_logprobs) if c.first_token_logprobs is not None else None,
                now,
                c.finish_reason,
            )
            for key, c in entries
        ]
        return self._store.insert(rows)

    def rows(self, batch: int = 1000) -> Iterator[list[Row]]:
        """Every stored row (all columns of cache_store.COLUMNS), in key order, `batch` at a time."""
        after = ""
        while chunk := self._store.scan(after, batch):
            yield chunk
            after = chunk[-1][0]

    def insert_rows(self, rows: Sequence[Row]) -> int:
        """Store whole rows as they are (identity and time included) unless their key is stored; how many were new."""
        return self._store.insert(rows)

    def __len__(self) -> int:
        return self._store.count()

    def close(self) -> None:
        self._store.close()

