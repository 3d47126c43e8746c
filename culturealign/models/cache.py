"""Durable response cache: every answer is stored the moment it arrives, so nothing is paid for twice.

SQLite in WAL mode, one short transaction per request, safe for the several processes of a parallel
sweep. The key covers everything that changes an answer: the endpoint and model (`identity`), the
messages, every generation setting and the sample index, so 100 samples at temperature 0.7 are 100
entries while the same sample asked again is a hit.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Sequence

from culturealign.errors import ConfigError
from culturealign.models.base import Completion, GenerateConfig, Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    first_token_logprobs TEXT,
    created REAL NOT NULL,
    finish_reason TEXT
)
"""


def cache_key(identity: str, messages: Sequence[Message], config: GenerateConfig, sample_index: int) -> str:
    payload = json.dumps([identity, list(messages), config.as_dict(), sample_index], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._add_missing_columns()
        except (sqlite3.DatabaseError, OSError) as error:
            raise ConfigError(
                f"cannot open the response cache {self.path} ({error}); delete the file or set cache.path elsewhere"
            ) from None

    def _add_missing_columns(self) -> None:
        """Caches written before `finish_reason` existed keep working (their answers read it as unknown)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "finish_reason" not in columns:
            try:
                self._db.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
            except sqlite3.OperationalError as error:  # another process added it first
                if "duplicate column" not in str(error):
                    raise

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                "SELECT key, text, prompt_tokens, completion_tokens, first_token_logprobs, finish_reason FROM responses "
                f"WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, text, prompt_tokens, completion_tokens, logprobs, finish_reason in rows:
                found[key] = Completion(
                    text,
                    prompt_tokens,
                    completion_tokens,
                    json.loads(logprobs) if logprobs else None,
                    cached=True,
                    finish_reason=finish_reason,
                )
        return found

    def lookup(
        self, identity: str, messages: Sequence[Message], config: GenerateConfig, sample_indices: Sequence[int]
    ) -> dict[int, Completion]:
        """The cached answers among `sample_indices`, by index (dry runs count what is missing)."""
        keys = {index: cache_key(identity, messages, config, index) for index in sample_indices}
        found = self.get_many(list(keys.values()))
        return {index: found[key] for index, key in keys.items() if key in found}

    def put_many(self, identity: str, entries: Sequence[tuple[str, Completion]]) -> None:
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
        with self._db:
            self._db.executemany(
                # only a duplicate key is ignored (another process stored it first); other errors surface
                "INSERT INTO responses (key, identity, text, prompt_tokens, completion_tokens, first_token_logprobs, "
                "created, finish_reason) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(key) DO NOTHING",
                rows,
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
