"""The OpenAI Batch API of the fake server: `/v1/files` and `/v1/batches`, driven by polls, not by time.

`FakeOpenAIServer` hands every `/v1/files...` and `/v1/batches...` request to a `FakeBatchAPI`:

* ``POST /v1/files`` (multipart: ``purpose``, ``file``), ``GET /v1/files`` (newest first, ``purpose``,
  ``limit``, ``after``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``;
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``),
  ``GET /v1/batches`` (newest first, ``limit``, ``after``), ``GET /v1/batches/{id}``,
  ``POST /v1/batches/{id}/cancel``.

A batch moves one step per retrieve, so tests never depend on timing: created ``validating``; the first
retrieve validates the input file (a bad line, more than ``max_requests`` lines or ``max_bytes`` bytes,
or a queued whole-batch failure: ``failed`` with ``errors``) and starts it (``in_progress``, running
``lines_per_poll`` lines); each later retrieve runs that many more lines, then ``finalizing``, then
``completed`` with an output file (status 200 lines) and an error file (failed lines). A line is answered
by the server's own chat-completions code (same policy, same seeded answers as a live request).
``BatchPlan`` adds partial failures (the first N lines run fail, with a 500 by default), expiry (a batch still
running after K retrieves expires: its remaining lines get ``batch_expired``) and whole-batch failures.
``cancel`` moves a batch to ``cancelling``; the next retrieve cancels it (remaining lines:
``batch_cancelled``).

``hold(point)`` freezes the server at one phase, so a test can kill the client there: the matching
request waits (without answering) until ``release()``, and ``held(point)`` is set when it arrives.
Points: ``after_upload`` (file stored, reply withheld), ``before_create`` (released: dropped unanswered,
as if it never arrived), ``after_create`` (batch created, reply withheld), ``in_progress`` (a retrieve of a
running batch), ``before_download`` (an output file's content).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import math
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

HOLD_POINTS = ("after_upload", "before_create", "after_create", "in_progress", "before_download")
TERMINAL = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
DROP = 0  # a status meaning: close the connection without replying


@dataclass
class BatchPlan:
    lines_per_poll: Optional[int] = None  # lines run per retrieve while in progress; None: half the batch
    fail_first_lines: int = 0  # the first N lines run (server-wide) fail with HTTP `fail_status` (error file)
    fail_status: int = 500
    expire_after_polls: Optional[int] = None  # a batch in progress after this many retrieves expires
    fail_batches: int = 0  # the next N batches fail as a whole when validated
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES


@dataclass
class BatchStats:
    files_uploaded: int = 0
    batches_created: int = 0
    batches_cancelled: int = 0
    lines_run: int = 0  # batch lines answered or failed (what a provider would bill, failures aside)
    lines_by_custom_id: Dict[str, int] = field(default_factory=dict)  # "batch:custom_id" -> times run
    lines_by_kind: Dict[str, int] = field(default_factory=dict)


def _now() -> int:
    return int(time.time())


def _error(message: str, code: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}).encode()


class FakeBatchAPI:
    def __init__(self, run_line: Callable[[Dict[str, Any]], Dict[str, Any]], plan: Optional[BatchPlan] = None):
        self.run_line = run_line  # chat-completions body -> (kind, completion dict); raises on a bad body
        self.plan = plan if plan is not None else BatchPlan()
        self.stats = BatchStats()
        self.files: Dict[str, Dict[str, Any]] = {}
        self.contents: Dict[str, bytes] = {}
        self.batches: Dict[str, Dict[str, Any]] = {}
        self._state: Dict[str, Dict[str, Any]] = {}  # batch id -> lines, next line, polls, outputs, errors
        self._failed_lines = 0
        self._lock = threading.Lock()
        self._holds: Dict[str, int] = {}  # point -> occurrence to hold at (1 = the first)
        self._seen: Dict[str, int] = {}
        self._held: Dict[str, threading.Event] = {p: threading.Event() for p in HOLD_POINTS}
        self._release: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- holds ------------------------------------------------------------------

    def hold(self, point: str, occurrence: int = 1) -> None:
        """Withhold the reply of the `occurrence`-th request reaching `point` from now until `release()`."""
        assert point in HOLD_POINTS, point
        with self._lock:
            self._holds[point], self._seen[point] = occurrence, 0

    def held(self, point: str, timeout: float) -> bool:
        """Wait until a request is being held at `point`."""
        return self._held[point].wait(timeout)

    def release(self) -> None:
        with self._lock:
            self._holds.clear()
        loop, event = self._loop, self._release
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def _gate(self, point: str) -> bool:
        """Whether this request was held (until released)."""
        with self._lock:
            self._seen[point] = self._seen.get(point, 0) + 1
            hold = self._holds.get(point) == self._seen[point]
        if not hold:
            return False
        self._loop = asyncio.get_running_loop()
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()
        release = self._release
        self._held[point].set()
        await release.wait()
        return True

    # -- dispatch ---------------------------------------------------------------

    async def dispatch(self, method: str, path: str, query: str, headers: Dict[str, str], body: bytes):
        """(status, payload) for a files or batches request (status DROP: close without a reply), or None
        when the path is not one of them."""
        params = dict(urllib.parse.parse_qsl(query))
        parts = path.strip("/").split("/")[1:]  # without "v1"
        if not parts or parts[0] not in ("files", "batches"):
            return None
        if parts[0] == "files":
            return await self._files(method, parts[1:], params, headers, body)
        return await self._batches(method, parts[1:], params, body)

    async def _files(self, method, rest, params, headers, body):
        if method == "POST" and not rest:
            return await self._upload(headers, body)
        if method == "GET" and not rest:
            files = [f for f in reversed(self.files.values()) if params.get("purpose") in (None, f["purpose"])]
            return 200, self._page(files, params)
        if not rest or rest[0] not in self.files:
            return 404, _error(f"No such File object: {rest[0] if rest else ''}", "not_found")
        if method == "GET" and len(rest) == 1:
            return 200, json.dumps(self.files[rest[0]]).encode()
        if method == "GET" and rest[1:] == ["content"]:
            if self.files[rest[0]]["purpose"] == "batch_output":
                await self._gate("before_download")
            return 200, self.contents[rest[0]]
        return 405, _error(f"Method {method} not allowed")

    async def _upload(self, headers, body):
        head = f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode("latin-1")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return 400, _error("expected multipart/form-data")
        fields, filename, content = {}, None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                filename, content = part.get_filename(), part.get_payload(decode=True)
            else:
                fields[name] = part.get_payload(decode=True).decode("utf-8")
        if content is None or fields.get("purpose") != "batch":
            return 400, _error("a `file` and purpose=batch are required")
        record = self._store(filename or "upload.jsonl", content, "batch")
        self.stats.files_uploaded += 1
        await self._gate("after_upload")
        return 200, json.dumps(record).encode()

    def _store(self, filename: str, content: bytes, purpose: str) -> Dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        record = {"id": file_id, "object": "file", "bytes": len(content), "created_at": _now(),
                  "filename": filename, "purpose": purpose, "status": "processed"}  # fmt: skip
        self.files[file_id], self.contents[file_id] = record, content
        return record

    async def _batches(self, method, rest, params, body):
        if method == "POST" and not rest:
            return await self._create(body)
        if method == "GET" and not rest:
            return 200, self._page(list(reversed(self.batches.values())), params)
        if not rest or rest[0] not in self.batches:
            return 404, _error(f"No such Batch object: {rest[0] if rest else ''}", "not_found")
        batch = self.batches[rest[0]]
        if method == "GET" and len(rest) == 1:
            if batch["status"] == "in_progress":
                await self._gate("in_progress")
            self._advance(batch)
            return 200, json.dumps(batch).encode()
        if method == "POST" and rest[1:] == ["cancel"]:
            if batch["status"] not in TERMINAL:
                batch.update(status="cancelling", cancelling_at=_now())
            return 200, json.dumps(batch).encode()
        return 405, _error(f"Method {method} not allowed")

    async def _create(self, body: bytes):
        try:
            request = json.loads(body)
        except ValueError:
            return 400, _error("body is not JSON")
        file_id = request.get("input_file_id")
        if file_id not in self.files:
            return 400, _error(f"input_file_id {file_id!r} not found")
        if request.get("completion_window") != "24h" or not str(request.get("endpoint", "")).startswith("/v1/"):
            return 400, _error("completion_window must be 24h and endpoint a /v1/ path")
        if await self._gate("before_create"):
            return DROP, b""
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        now = _now()
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": request["endpoint"], "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": request.get("metadata"),
        }  # fmt: skip
        self._state[batch_id] = {"lines": [], "next": 0, "polls": 0, "outputs": [], "errors": []}
        self.stats.batches_created += 1
        await self._gate("after_create")
        return 200, json.dumps(self.batches[batch_id]).encode()

    @staticmethod
    def _page(items: List[Dict[str, Any]], params: Dict[str, str]) -> bytes:
        """One page of a list, newest first (`items` are in that order), from the cursor `after`."""
        ids = [item["id"] for item in items]
        start = ids.index(params["after"]) + 1 if params.get("after") in ids else 0
        limit = int(params.get("limit", 20))
        page = items[start : start + limit]
        return json.dumps({"object": "list", "data": page, "has_more": start + limit < len(items),
                           "first_id": page[0]["id"] if page else None,
                           "last_id": page[-1]["id"] if page else None}).encode()  # fmt: skip

    # -- the state machine --------------------------------------------------------

    def _advance(self, batch: Dict[str, Any]) -> None:
        state, status = self._state[batch["id"]], batch["status"]
        if status == "validating":
            self._validate(batch, state)
        elif status == "in_progress":
            state["polls"] += 1
            expire = self.plan.expire_after_polls
            if expire is not None and state["polls"] >= expire and state["next"] < len(state["lines"]):
                self._end(batch, state, "expired", "batch_expired")
                return
            self._run(batch, state)
            if state["next"] >= len(state["lines"]):
                batch.update(status="finalizing", finalizing_at=_now())
        elif status == "finalizing":
            self._end(batch, state, "completed", None)
        elif status == "cancelling":
            self._end(batch, state, "cancelled", "batch_cancelled")
            self.stats.batches_cancelled += 1

    def _validate(self, batch: Dict[str, Any], state: Dict[str, Any]) -> None:
        content = self.contents[batch["input_file_id"]]
        problem = self._problem(content, batch["endpoint"], state)
        if problem is None and self.plan.fail_batches > 0:
            self.plan.fail_batches -= 1
            problem = ("token_limit_exceeded", "Enqueued token limit reached for this model (fake).", None)
        if problem is not None:
            code, message, line = problem
            errors = {"object": "list", "data": [{"code": code, "message": message, "param": None, "line": line}]}
            batch.update(status="failed", failed_at=_now(), errors=errors)
            return
        batch.update(status="in_progress", in_progress_at=_now())
        batch["request_counts"]["total"] = len(state["lines"])
        self._run(batch, state)

    def _problem(self, content: bytes, endpoint: str, state: Dict[str, Any]):
        if len(content) > self.plan.max_bytes:
            return "file_too_large", f"input file is larger than {self.plan.max_bytes} bytes", None
        lines, seen, models = content.decode("utf-8").splitlines(), set(), set()
        if len(lines) > self.plan.max_requests:
            return "too_many_requests", f"input file has more than {self.plan.max_requests} requests", None
        for number, text in enumerate(lines, start=1):
            try:
                line = json.loads(text)
                custom_id, body = line["custom_id"], line["body"]
                assert line["method"] == "POST" and line["url"] == endpoint
                assert isinstance(body, dict) and isinstance(body.get("messages"), list) and body.get("model")
            except (ValueError, KeyError, AssertionError, TypeError):
                return "invalid_request", f"line {number} is not a valid {endpoint} request", number
            if custom_id in seen:
                return "duplicate_custom_id", f"custom_id {custom_id!r} appears twice", number
            seen.add(custom_id)
            models.add(body["model"])
            state["lines"].append(line)
        if len(models) > 1:
            return "mixed_models", "every line of a batch must name the same model", None
        return None

    def _run(self, batch: Dict[str, Any], state: Dict[str, Any]) -> None:
        total = len(state["lines"])
        count = self.plan.lines_per_poll or max(1, math.ceil(total / 2))
        for line in state["lines"][state["next"] : state["next"] + count]:
            self._run_line(batch, state, line)
            state["next"] += 1

    def _run_line(self, batch, state, line) -> None:
        self.stats.lines_run += 1
        key = f"{batch['id']}:{line['custom_id']}"
        self.stats.lines_by_custom_id[key] = self.stats.lines_by_custom_id.get(key, 0) + 1
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        counts = batch["request_counts"]
        if self._failed_lines < self.plan.fail_first_lines:
            self._failed_lines += 1
            status = self.plan.fail_status
            kind = "server_error" if status >= 500 else "invalid_request_error"
            body = {"error": {"message": f"request failed with {status} (fake).", "type": kind, "code": None}}
            state["errors"].append(self._line(line, {"status_code": status, "request_id": request_id, "body": body}, None))
            counts["failed"] += 1
            return
        kind, completion = self.run_line(line["body"])
        self.stats.lines_by_kind[kind] = self.stats.lines_by_kind.get(kind, 0) + 1
        state["outputs"].append(self._line(line, {"status_code": 200, "request_id": request_id, "body": completion}, None))
        counts["completed"] += 1

    @staticmethod
    def _line(line, response, error) -> Dict[str, Any]:
        return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"], "response": response, "error": error}

    def _end(self, batch: Dict[str, Any], state: Dict[str, Any], status: str, code: Optional[str]) -> None:
        """Finish a batch: lines not run get `code` (expired, cancelled); write the output and error files."""
        for line in state["lines"][state["next"] :]:
            message = f"This request could not be executed before the batch ended ({status})."
            state["errors"].append(self._line(line, None, {"code": code, "message": message}))
            batch["request_counts"]["failed"] += 1
        state["next"] = len(state["lines"])
        for kind, rows in (("output_file_id", state["outputs"]), ("error_file_id", state["errors"])):
            if rows:
                content = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
                batch[kind] = self._store(f"{batch['id']}_{kind[:-8]}.jsonl", content, "batch_output")["id"]
        batch.update(status=status, **{f"{status}_at": _now()})
