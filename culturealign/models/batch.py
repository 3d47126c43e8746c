"""The OpenAI Batch API as a way to run a job: the same answers as live requests, at the batch price.

`fill(model, requests)` runs before a job's live path (see `culturealign.pipeline`). It builds one batch
line per request the live path would send: the body from `OpenAIProvider.request`, the same n-batching
(a line may carry n > 1 samples), so the same seeds. It uploads the lines (`/v1/files`, purpose batch),
creates batches (`/v1/batches`, at most `batch_max_requests` lines and `batch_max_mb` each), polls them
with growing waits and a progress line, downloads their output and error files, and stores every answer
in the response cache under the key the live request would use. The live path then finds every answer
cached and sends nothing. Answers already cached (by live runs or other batches) are not asked again, so
batch and live runs share answers both ways.

Never pay twice: every batch is a *submission* in a journal kept in the cache's SQLite file (tables
`batch_submissions` and `batch_requests`), written before anything is uploaded: a token of ours (in the
uploaded file's name and in the batch's metadata), the cache keys of each line, and how far it got:
uploading -> uploaded -> creating -> submitted -> done (or failed, abandoned). A run killed at any point
leaves a row that the next run re-attaches to instead of submitting again:
- uploading: the file is looked up by its name and reused; if it never arrived nothing was submitted,
  and the submission is abandoned (its requests are planned again);
- creating: the batch is looked up by the token in its metadata, and created only if it is not there;
- submitted: the batch is polled to its end and its files read (again, harmlessly, if the run was killed
  while storing them).
A request covered by a live submission of another process (a parallel job asking the judge the same
question) waits for that submission instead of being sent twice.

Failures: requests that failed for a transient reason (expired or cancelled with their batch, timeouts,
429, 5xx, a reply that cannot be read) are submitted again in a new batch once theirs has ended, in up to
`max_retries + 1` more rounds. A request refused for good (another 4xx) or a batch that fails as a whole
fails the job with one line naming the batch id. A batch cancelled outside culturealign keeps the answers
it has and fails the job: run again to submit the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Sequence

from culturealign.errors import ModelError
from culturealign.models.base import Completion, GenerateConfig, MalformedReply, Message, error_kind, gather_or_cancel
from culturealign.models.cache import cache_key
from culturealign.models.model import BACKOFF_CAP, Model

log = logging.getLogger("culturealign")

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
TOKEN_KEY = "culturealign_submission"  # batch metadata key holding the submission's token
FILE_PREFIX = "culturealign-"
POLL_GROWTH, POLL_CAP = 1.5, 600.0  # each wait between status checks is 1.5x the last, at most 10 minutes
LOOKBACK = 3600  # seconds: how far before a submission's creation to look for its file or batch on the server
STALE_AFTER = 3600  # seconds: an upload or create by a process on another host, silent since, is taken over
TERMINAL = ("completed", "failed", "expired", "cancelled")
LIVE = ("uploading", "uploaded", "creating", "submitted")
TRANSIENT_CODES = ("batch_expired", "batch_cancelled", "request_timeout", "rate_limit_exceeded", "server_error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_submissions (
    token TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    requests INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS batch_requests (
    token TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (token, custom_id, position)
);
CREATE INDEX IF NOT EXISTS batch_requests_key ON batch_requests (key);
"""

Item = tuple[Sequence[Message], GenerateConfig, Sequence[int]]  # a prompt, its settings, its sample indices
Line = tuple[str, str]  # a batch line's custom_id and its JSONL text


@dataclass(frozen=True)
class Request:
    """One batch line: what a live request for these samples would send."""

    messages: Sequence[Message]
    config: GenerateConfig
    indices: tuple[int, ...]
    keys: tuple[str, ...]  # one cache key per sample index


@dataclass
class Submission:
    token: str
    state: str
    owner: str
    file_id: str | None
    batch_id: str | None
    created: float
    updated: float
    lines: list[str] | None = None  # the JSONL lines, known only to the process that planned them


@dataclass
class Harvest:
    """What one ended batch brought: answers stored, requests to send again, and why."""

    answered: int = 0
    transient: list[str] = field(default_factory=list)  # one-line reasons
    short: bool = False  # a reply carried fewer samples than asked (the endpoint ignores `n`)


class Journal:
    """The submissions, in the response cache's SQLite file, written before each step they record."""

    def __init__(self, path) -> None:
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")  # synchronous stays FULL: a recorded step survives a crash
        self._db.executescript(_SCHEMA)

    def claim(
        self, identity: str, requests: list[Request], owner: str, chunks: Callable[[list[Request]], Iterable[list[Line]]]
    ) -> tuple[list[Submission], list[Submission]]:
        """In one transaction: the live submissions that cover any of `requests` (to re-attach to), and new
        submissions, recorded with their keys, for the requests none covers (`chunks` cuts their lines)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            covering = self._covering([key for request in requests for key in request.keys])
            uncovered = [r for r in requests if not any(key in covering for key in r.keys)]
            attached = [self.get(token) for token in sorted(set(covering.values()))]
            new, start = [], 0
            for lines in chunks(uncovered):
                new.append(self._insert(identity, owner, list(zip(uncovered[start:], lines))))
                start += len(lines)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return attached, new

    def _covering(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        states = ",".join("?" * len(LIVE))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT r.key, r.token FROM batch_requests r JOIN batch_submissions s ON s.token = r.token "
                f"WHERE s.state IN ({states}) AND r.key IN ({','.join('?' * len(chunk))})",
                (*LIVE, *chunk),
            )
            found.update(rows)
        return found

    def _insert(self, identity: str, owner: str, lines: list[tuple[Request, Line]]) -> Submission:
        now, token = time.time(), uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO batch_submissions (token, identity, state, owner, requests, created, updated) "
            "VALUES (?, ?, 'uploading', ?, ?, ?, ?)",
            (token, identity, owner, len(lines), now, now),
        )
        rows = [(token, cid, position, key) for r, (cid, _) in lines for position, key in enumerate(r.keys)]
        self._db.executemany("INSERT INTO batch_requests (token, custom_id, position, key) VALUES (?, ?, ?, ?)", rows)
        return Submission(token, "uploading", owner, None, None, now, now, [text for _, (_, text) in lines])

    def get(self, token: str) -> Submission:
        row = self._db.execute(
            "SELECT token, state, owner, file_id, batch_id, created, updated FROM batch_submissions WHERE token = ?",
            (token,),
        ).fetchone()
        return Submission(*row)

    def advance(self, token: str, state: str, expect: tuple[str, str] | None = None, **fields) -> bool:
        """Move a submission to `state` (setting `fields`); with `expect` = (state, owner), only if it is
        still there (compare-and-set between processes). Requests of an ended submission are dropped."""
        values = {"state": state, "updated": time.time(), **fields}
        sql = f"UPDATE batch_submissions SET {', '.join(f'{k} = ?' for k in values)} WHERE token = ?"
        params = [*values.values(), token]
        if expect is not None:
            sql += " AND state = ? AND owner = ?"
            params += list(expect)
        with self._db:
            changed = self._db.execute(sql, params).rowcount == 1
            if changed and state not in LIVE:
                self._db.execute("DELETE FROM batch_requests WHERE token = ?", (token,))
        return changed

    def keys(self, token: str) -> dict[str, list[str]]:
        """custom_id -> the cache keys of its samples, in order."""
        covered: dict[str, list[str]] = {}
        rows = self._db.execute("SELECT custom_id, key FROM batch_requests WHERE token = ? ORDER BY position", (token,))
        for custom_id, key in rows:
            covered.setdefault(custom_id, []).append(key)
        return covered

    def close(self) -> None:
        self._db.close()


async def fill(model: Model, items: Iterable[Item]) -> None:
    """Store in the cache, through the Batch API, every answer of `items` that is not cached yet."""
    runner = BatchRunner(model)
    try:
        await runner.fill(list(items))
    finally:
        runner.close()


class BatchRunner:
    def __init__(self, model: Model) -> None:
        if model.cache is None:
            raise ModelError(f"{model.role}.batch=true needs the response cache (cache.enabled=true)")
        self.model, self.spec, self.role = model, model.spec, model.role
        self.provider = model.provider
        self.sdk = self.provider.sdk
        self.journal = Journal(model.cache.path)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.per_request = model.samples_per_request
        self.progress = BatchProgress(f"{self.role} batch")
        self._wanted: set[str] = set()

    def close(self) -> None:
        self.journal.close()

    async def fill(self, items: list[Item]) -> None:
        reasons: list[str] = []
        for _ in range(self.spec.max_retries + 2):  # the first round, then max_retries + 1 more
            requests = self._missing(items)
            if not requests:
                return
            attached, new = self.journal.claim(self.model.identity, requests, self.owner, self._chunks)
            self._announce(requests, attached, new)
            harvests = await gather_or_cancel([self._drive(submission) for submission in attached + new])
            reasons = [reason for harvest in harvests for reason in harvest.transient] or reasons
            self.model.usage.batch_resubmitted += sum(len(harvest.transient) for harvest in harvests)
            if any(harvest.short for harvest in harvests):
                self.per_request = 1  # the endpoint ignores `n`: one sample per line from now on
        left = len(self._missing(items))
        if left:
            raise ModelError(
                f"{self.provider.endpoint}: {left} batch requests still unanswered after "
                f"{self.spec.max_retries + 2} rounds; last failure: {reasons[-1] if reasons else 'none reported'}"
            )

    def _missing(self, items: list[Item]) -> list[Request]:
        """The requests the live path would send now: per prompt, chunks of `n` samples with some not cached."""
        planned = []
        for messages, config, indices in items:
            for start in range(0, len(indices), self.per_request):
                chunk = tuple(indices[start : start + self.per_request])
                keys = tuple(cache_key(self.model.identity, messages, config, index) for index in chunk)
                planned.append((messages, config, chunk, keys))
        found = self.model.cache.get_many([key for *_, keys in planned for key in keys])
        requests = []
        for messages, config, chunk, keys in planned:
            missing = [(index, key) for index, key in zip(chunk, keys) if key not in found]
            if missing:
                indices, keys = zip(*missing)
                requests.append(Request(messages, config, indices, keys))
        self._wanted = {key for request in requests for key in request.keys}
        return requests

    def _chunks(self, requests: list[Request]) -> Iterable[list[Line]]:
        """The requests' JSONL lines, cut into batches within the request and size limits."""
        limit = int(self.spec.batch_max_mb * 1_000_000)
        lines: list[Line] = []
        size = 0
        for number, request in enumerate(requests):
            body = self.provider.request(request.messages, request.config, request.indices)
            text = json.dumps({"custom_id": str(number), "method": "POST", "url": ENDPOINT, "body": body}) + "\n"
            length = len(text.encode("utf-8"))
            if length > limit:
                limit_key = f"{self.role}.batch_max_mb={self.spec.batch_max_mb:g}"
                raise ModelError(f"a batch request of {length} bytes exceeds {limit_key}")
            if lines and (len(lines) == self.spec.batch_max_requests or size + length > limit):
                yield lines
                lines, size = [], 0
            lines.append((str(number), text))
            size += length
        if lines:
            yield lines

    def _announce(self, requests: list[Request], attached: list[Submission], new: list[Submission]) -> None:
        lines = sum(len(s.lines or ()) for s in new)
        reattached = [s.batch_id or s.token for s in attached]
        log.info(
            f"{self.role}: {len(requests)} requests to answer by batch: {lines} in {len(new)} new batch(es)"
            + (f", the rest in {len(attached)} already submitted ({', '.join(reattached)})" if attached else "")
        )

    # -- one submission, from wherever it stands to its end ---------------------------------------------

    async def _drive(self, submission: Submission) -> Harvest:
        lines, token = submission.lines, submission.token
        recovering = created = False  # taken over from a process that died; created by this process
        while True:
            current = self.journal.get(token)
            if current.state not in LIVE:
                return Harvest()
            if current.state in ("uploading", "creating") and current.owner != self.owner:
                if _alive(current.owner, current.updated):  # another process is at it: wait for it
                    await asyncio.sleep(self.spec.batch_poll_seconds)
                    continue
                recovering = self.journal.advance(token, current.state, (current.state, current.owner), owner=self.owner)
                continue
            if current.state == "uploading":
                file_id = await (self._find_file(current) if lines is None else self._upload(current, lines))
                if file_id is None:  # the killed run's upload never arrived: nothing was submitted
                    self.journal.advance(token, "abandoned", detail="upload interrupted; requests planned again")
                    return Harvest()
                self.journal.advance(token, "uploaded", file_id=file_id)
            elif current.state == "uploaded":  # no batch exists yet: whoever moves it on creates one
                recovering = False
                self.journal.advance(token, "creating", ("uploaded", current.owner), owner=self.owner)
            elif current.state == "creating":
                batch = (await self._find_batch(current)) if recovering else None
                if batch is None:
                    batch, created = await self._create(current), True
                self.journal.advance(token, "submitted", batch_id=batch.id)
            else:
                self.model.usage.batches += created
                self.model.usage.batches_reattached += not created
                return await self._finish(current)

    async def _upload(self, submission: Submission, lines: list[str]) -> str:
        data = "".join(lines).encode("utf-8")
        name = f"{FILE_PREFIX}{submission.token}.jsonl"
        uploaded = await self._call(
            "upload",
            lambda: self.sdk.files.create(file=(name, data, "application/jsonl"), purpose="batch"),
            lambda: self._find_file(submission),
        )
        return uploaded if isinstance(uploaded, str) else uploaded.id

    async def _find_file(self, submission: Submission) -> str | None:
        async def search():
            name = f"{FILE_PREFIX}{submission.token}.jsonl"
            async for found in self.sdk.files.list(purpose="batch", order="desc", limit=100):
                if found.filename == name:
                    return found.id
                if found.created_at < submission.created - LOOKBACK:
                    return None
            return None

        return await self._call("file lookup", search)

    async def _create(self, submission: Submission):
        return await self._call(
            "create",
            lambda: self.sdk.batches.create(
                input_file_id=submission.file_id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={TOKEN_KEY: submission.token},
            ),
            lambda: self._find_batch(submission),
        )

    async def _find_batch(self, submission: Submission):
        async def search():
            async for batch in self.sdk.batches.list(limit=100):
                if (batch.metadata or {}).get(TOKEN_KEY) == submission.token:
                    return batch
                if batch.created_at < submission.created - LOOKBACK:
                    return None
            return None

        return await self._call("lookup", search)

    async def _finish(self, submission: Submission) -> Harvest:
        batch_id, wait = submission.batch_id, self.spec.batch_poll_seconds
        while True:
            batch = await self._call(f"{batch_id} status", lambda: self.sdk.batches.retrieve(batch_id), absent_ok=True)
            if batch is None:  # not known at this endpoint (a cache copied from elsewhere): nothing to wait for
                self.journal.advance(submission.token, "abandoned", detail=f"batch {batch_id} not found at the endpoint")
                where = self.provider.endpoint
                log.warning(f"{self.role}: batch {batch_id} of the journal is unknown at {where}; its requests are planned again")
                return Harvest()
            self.progress.update(submission.token, batch)
            if batch.status in TERMINAL:
                break
            await asyncio.sleep(wait)
            wait = min(wait * POLL_GROWTH, POLL_CAP)
        if batch.status == "failed":
            reason = _batch_errors(batch)
            self.journal.advance(submission.token, "failed", detail=reason)
            raise ModelError(f"{self.provider.endpoint}: batch {batch_id} failed: {reason}; fix the cause and run again")
        harvest, fatal = await self._harvest(submission, batch)
        if fatal:
            raise ModelError(f"{self.provider.endpoint}: batch {batch_id}: {fatal}")
        if batch.status == "cancelled":
            raise ModelError(
                f"{self.provider.endpoint}: batch {batch_id} was cancelled; the answers of its {harvest.answered} "
                f"completed requests are cached, run again to submit the other {len(harvest.transient)}"
            )
        return harvest

    async def _harvest(self, submission: Submission, batch) -> tuple[Harvest, str | None]:
        """Store the answers of an ended batch; the requests to send again; the first fatal failure."""
        covered = self.journal.keys(submission.token)
        harvest, fatal, entries = Harvest(), None, []
        for file_id in (batch.output_file_id, batch.error_file_id):
            content = await self._call(f"{batch.id} download", lambda: self.sdk.files.content(file_id)) if file_id else None
            text = content.text if content is not None else ""
            for row in map(_json_object, filter(str.strip, text.splitlines())):
                keys = covered.pop(str(row.get("custom_id")), None)
                if keys is None:
                    continue
                answers, failure, transient = self._read(row, len(keys))
                entries += zip(keys, answers)
                harvest.answered += bool(answers)
                harvest.short |= 0 < len(answers) < len(keys)
                if failure and transient:
                    harvest.transient.append(f"batch {batch.id} request {row.get('custom_id')}: {failure}")
                elif failure:
                    fatal = fatal or f"request {row.get('custom_id')} failed: {failure}"
        harvest.transient += [f"batch {batch.id} request {custom_id}: no result" for custom_id in covered]
        self.model.cache.put_many(self.model.identity, entries)
        if self.journal.advance(submission.token, "done", ("submitted", submission.owner), detail=batch.status):
            self._account(entries, harvest.answered)
        return harvest, fatal

    def _read(self, row: dict, wanted: int) -> tuple[list[Completion], str | None, bool]:
        """One output or error line: its answers, else a one-line failure and whether it is transient."""
        response = row.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            try:
                return self.provider.parse_body(response.get("body") or {})[:wanted], None, False
            except MalformedReply as error:
                return [], str(error), True
        error = row.get("error") or (response.get("body") or {}).get("error") or {}
        code, message = error.get("code") or error.get("type"), str(error.get("message") or "")[:200]
        described = f"HTTP {status}: {message}" if status else f"{code}: {message}"
        transient = status in (408, 409, 429) or (status or 0) >= 500 or (not status and code in TRANSIENT_CODES)
        return [], described, transient

    def _account(self, entries: list[tuple[str, Completion]], requests: int) -> None:
        """Usage and cost of a harvest this process stored first. The live path reads its answers from the
        cache next and counts them as cache hits: count those this job uses as misses (answered now)."""
        usage = self.model.usage
        usage.add_completions([answer for _, answer in entries], batch=True)
        usage.batch_requests += requests
        used = sum(key in self._wanted for key, _ in entries)
        usage.cache_hits -= used
        usage.cache_misses += used

    async def _call(
        self, what: str, call: Callable[[], Awaitable], find: Callable[[], Awaitable] | None = None, absent_ok: bool = False
    ):
        """A Batch API call with the model's retries. Before repeating a call that may have reached the
        server (an upload, a create), `find` looks for its effect, so it is never done twice. With
        `absent_ok`, a 404 returns None."""
        for attempt in range(self.spec.max_retries + 1):
            try:
                return await call()
            except Exception as error:  # noqa: BLE001 - the provider says which ones are worth a retry
                if absent_ok and getattr(error, "status_code", None) == 404:
                    return None
                self.model.usage.add_error(error_kind(error))
                if not self.provider.should_retry(error) or attempt == self.spec.max_retries:
                    raise ModelError(f"{self.provider.endpoint}: batch {what} failed: {self.provider.describe(error)}") from None
                retry_after = self.provider.retry_after(error)
                backoff = retry_after if retry_after is not None else self.spec.retry_backoff * 2**attempt
                await asyncio.sleep(min(BACKOFF_CAP, backoff))
                found = await find() if find is not None else None
                if found is not None:
                    return found
        raise AssertionError("unreachable")


class BatchProgress:
    """One log line each time a batch's status or counts change: requests completed / failed, elapsed."""

    def __init__(self, label: str) -> None:
        self.label, self.start = label, time.monotonic()
        self.batches: dict[str, tuple[str, int, int, int]] = {}

    def update(self, token: str, batch) -> None:
        counts = batch.request_counts
        numbers = (counts.completed, counts.failed, counts.total) if counts else (0, 0, 0)
        state = (batch.status, *numbers)
        if self.batches.get(token) != state:
            self.batches[token] = state
            log.info(self.line())

    def line(self) -> str:
        statuses = sorted({status for status, *_ in self.batches.values()})
        completed, failed, total = (sum(state[i] for state in self.batches.values()) for i in (1, 2, 3))
        elapsed = int(time.monotonic() - self.start)
        return (
            f"{self.label}: {len(self.batches)} batch(es) {'/'.join(statuses)}, {completed}/{total} requests "
            f"completed, {failed} failed, {elapsed // 60}m{elapsed % 60:02d}s elapsed"
        )


def _batch_errors(batch) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    if not errors:
        return "no reason given"
    first = errors[0]
    line = f" (line {first.line})" if getattr(first, "line", None) else ""
    return f"{first.code}: {first.message}{line}"


def _json_object(line: str) -> dict:
    """One line of an output or error file ({} when unreadable: its request then counts as unanswered)."""
    try:
        row = json.loads(line)
    except ValueError:
        return {}
    return row if isinstance(row, dict) else {}


def _alive(owner: str, updated: float) -> bool:
    """Whether the process that owns an upload or a create may still be at it."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return time.time() - updated < STALE_AFTER
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


