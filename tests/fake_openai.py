"""A fake OpenAI-compatible chat-completions HTTP server (stdlib only).

Used by the test suite and by throughput benchmarks.  One asyncio event loop
serves every connection (HTTP/1.1 keep-alive, ``Content-Length`` bodies), so a
single process comfortably sustains thousands of requests per second with
hundreds of requests in flight.

Usage from Python::

    from tests.fake_openai import FakeOpenAIServer, FaultPlan, Policy

    with FakeOpenAIServer(policy=Policy(seed=0), latency=0.0) as server:
        client = openai.OpenAI(api_key="test", base_url=server.base_url)
        ...
        print(server.stats.as_dict())

Usage as a process::

    python tests/fake_openai.py --port 0 --latency 0.2 --seed 0 --error-rate 0.1

prints exactly one line ``READY http://127.0.0.1:PORT/v1`` (flushed) on stdout,
serves until SIGTERM/SIGINT, then prints one JSON line with the statistics.

The fake model understands the prompts of "Rethinking AI Cultural Alignment"
(Appendix B), recognised from the *last* user message:

* **judge** - content starts with ``You are tasked with classifying a
  response``: the text after ``"\\n\\nResponse: "`` is searched for the marker
  ``My answer: K``; the reply is ``{"reasoning": ..., "classification": "K"}``
  inside a ```` ```json ```` fence (``"0"`` when there is no marker).
* **classification** - content ends with ``Only output the number of the
  chosen option.``: the reply is just an option number (or a refusal).
* **free** (CoT / scenario) - anything else: a few sentences ending with
  ``My answer: K.`` (or, on a refusal, no marker at all).

Answers are sampled from :meth:`Policy.option_probs` keyed by
:func:`question_key`; subclass :class:`Policy` to change the behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    from tests.fake_batches import DROP, BatchPlan, FakeBatchAPI
except ImportError:  # run as a script: tests/ is on the path, the repository root may not be
    from fake_batches import DROP, BatchPlan, FakeBatchAPI

__all__ = [
    "BatchPlan",
    "FakeOpenAIServer",
    "FaultPlan",
    "Policy",
    "ServerStats",
    "FAULT_KINDS",
    "JUDGE_PREFIX",
    "CLASSIFICATION_SUFFIX",
    "ANSWER_MARKER",
    "REFUSAL_TEXT",
    "classify_request",
    "count_options",
    "question_key",
    "extract_marker",
]

JUDGE_PREFIX = "You are tasked with classifying a response"
CLASSIFICATION_SUFFIX = "Only output the number of the chosen option."
OPTIONS_HEADER = "Here are the options:"
RESPONSE_SEPARATOR = "\n\nResponse: "
ANSWER_MARKER = "My answer:"
REFUSAL_TEXT = "I cannot answer that."
DEFAULT_MODEL = "default"  # what `model=openai-compatible` asks for

_OPTION_LINE_RE = re.compile(r"^\d+\. ", re.M)
_MARKER_RE = re.compile(r"My answer:\s*(\d+)")
_COUNTRY_RE = re.compile(r"respond as someone from (.+?) would", re.I)

KIND_JUDGE = "judge"
KIND_CLASSIFICATION = "classification"
KIND_FREE = "free"
KIND_PROBE = "probe"  # culturealign's preflight request: counted in stats.probes, not in stats.requests
PROBE_PROMPT = "Reply with the digit 1."  # culturealign.models.openai_api.PROBE_PROMPT

# Order matters: this is the order in which the cumulative fault
# probabilities are laid out on [0, 1).
FAULT_KINDS: Tuple[str, ...] = (
    "429",
    "429_retry_after",
    "500",
    "503",
    "timeout",
    "drop",
    "malformed",
    "empty_choices",
)


# ---------------------------------------------------------------------------
# Prompt parsing helpers
# ---------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a message ``content`` (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def last_user_content(messages: Sequence[Dict[str, Any]]) -> str:
    """Content of the last ``user`` message (of the last message if none)."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    if messages and isinstance(messages[-1], dict):
        return _content_text(messages[-1].get("content"))
    return ""


def classify_request(content: str) -> str:
    """Return ``"judge"``, ``"classification"``, ``"probe"`` or ``"free"`` for a prompt."""
    if content == PROBE_PROMPT:
        return KIND_PROBE
    if content.lstrip().startswith(JUDGE_PREFIX):
        return KIND_JUDGE
    if content.rstrip().endswith(CLASSIFICATION_SUFFIX):
        return KIND_CLASSIFICATION
    return KIND_FREE


def count_options(content: str) -> int:
    """Number of ``^\\d+\\. `` lines after ``Here are the options:`` (2 if none)."""
    idx = content.find(OPTIONS_HEADER)
    if idx < 0:
        return 2
    n = len(_OPTION_LINE_RE.findall(content, idx + len(OPTIONS_HEADER)))
    return n if n > 0 else 2


def question_key(content: str, system: str = "") -> str:
    """Key identifying a (country, question) pair in a prompt.

    It is the prompt text *including* its first line ("From now on, respond as
    someone from X would."), so countries and questions get different
    distributions.  When the prompt has an options list, any instruction lines
    after the last option ("Only output the number..." / "First, provide your
    reasoning...") are dropped, so the classification and the CoT prompt of the
    same country and question share one distribution.  Scenario prompts are
    keyed by their whole text.  System messages, if any, are prepended (some
    callers put the persona line there).
    """
    text = content.strip()
    idx = text.find(OPTIONS_HEADER)
    if idx >= 0:
        last_end = -1
        for m in _OPTION_LINE_RE.finditer(text, idx + len(OPTIONS_HEADER)):
            eol = text.find("\n", m.end())
            last_end = len(text) if eol < 0 else eol
        if last_end >= 0:
            text = text[:last_end].rstrip()
    if system:
        return system.strip() + "\n" + text
    return text


def extract_marker(text: str) -> Optional[int]:
    """The ``K`` of the last ``My answer: K`` marker in ``text`` (None if absent)."""
    matches = _MARKER_RE.findall(text)
    if not matches:
        return None
    return int(matches[-1])


def _word_count(text: str) -> int:
    return max(1, len(text.split()))


# ---------------------------------------------------------------------------
# Policy: what the fake model answers
# ---------------------------------------------------------------------------

_FREE_SENTENCES = (
    "This is a question that people around me discuss quite often.",
    "I have thought about it in light of my own experience and upbringing.",
    "There are reasonable arguments on more than one side.",
    "Tradition and community expectations shape how I see this.",
    "Economic realities also play an important role in my view.",
    "Most of my friends and family would probably agree with me.",
    "Weighing everything, one option clearly fits my values better.",
    "I try to be practical rather than idealistic about such matters.",
)

_REFUSAL_FREE = (
    "This is a complex and sensitive topic with many perspectives. "
    "I would rather not take a side; reasonable people disagree about it."
)

_JUDGE_GARBAGE = (
    "Hmm, the response is rather hard to pin down; it seems to lean one way "
    "but I would not want to commit to anything here."
)


class Policy:
    """Behaviour of the fake model.  Subclass and override to customise.

    Parameters
    ----------
    seed:
        Seed of the server's sampling RNG (``random.Random(seed)``).
    refusal_rate:
        Probability that a classification answer is ``"I cannot answer that."``
        and that a free-text answer carries no ``My answer: K`` marker.
    judge_garbage_rate:
        Probability that the judge answers non-JSON garbage.
    """

    def __init__(self, seed: int = 0, refusal_rate: float = 0.05, judge_garbage_rate: float = 0.0):
        if not 0.0 <= refusal_rate <= 1.0:
            raise ValueError("refusal_rate must be in [0, 1]")
        if not 0.0 <= judge_garbage_rate <= 1.0:
            raise ValueError("judge_garbage_rate must be in [0, 1]")
        self.seed = seed
        self.refusal_rate = refusal_rate
        self.judge_garbage_rate = judge_garbage_rate

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(seed={self.seed!r}, refusal_rate={self.refusal_rate!r}, "
            f"judge_garbage_rate={self.judge_garbage_rate!r})"
        )

    # -- distributions ------------------------------------------------------

    def option_probs(self, question_key: str, n_options: int) -> List[float]:
        """Probability of each option (1..n_options), summing to 1.

        Default: a deterministic function of sha256(question_key); p(option 1)
        is in [0.1, 0.9], the rest is split among the other options with
        hash-derived weights.
        """
        n_options = max(1, int(n_options))
        if n_options == 1:
            return [1.0]
        digest = hashlib.sha256(question_key.encode("utf-8")).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        p1 = 0.1 + 0.8 * u
        rest = 1.0 - p1
        if n_options == 2:
            return [p1, rest]
        weights = []
        for i in range(n_options - 1):
            b = digest[8 + (i % 24)] if i < 24 else hashlib.sha256(digest + bytes([i % 256])).digest()[0]
            weights.append(1.0 + b / 255.0)
        total = sum(weights)
        return [p1] + [rest * w / total for w in weights]

    # -- sampling helpers ---------------------------------------------------

    def sample_option(self, rng: random.Random, question_key: str, n_options: int) -> int:
        probs = self.option_probs(question_key, n_options)
        u = rng.random()
        acc = 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                return i + 1
        return len(probs)

    # -- answers ------------------------------------------------------------

    def classification_answer(self, rng: random.Random, question_key: str, n_options: int) -> str:
        """Content of one classification choice."""
        if self.refusal_rate > 0 and rng.random() < self.refusal_rate:
            return REFUSAL_TEXT
        return str(self.sample_option(rng, question_key, n_options))

    def free_answer(self, rng: random.Random, question_key: str, n_options: int, prompt: str) -> str:
        """Content of one CoT / scenario choice."""
        m = _COUNTRY_RE.search(prompt)
        if self.refusal_rate > 0 and rng.random() < self.refusal_rate:
            return _REFUSAL_FREE
        k = self.sample_option(rng, question_key, n_options)
        opener = f"Speaking as someone from {m.group(1)}, here is my view." if m else "Here is my view."
        body = " ".join(rng.sample(_FREE_SENTENCES, rng.randint(2, 3)))
        return f"{opener} {body} {ANSWER_MARKER} {k}."

    def judge_answer(self, rng: random.Random, response_text: str, prompt: str) -> str:
        """Content of one judge choice, given the judged response text."""
        if self.judge_garbage_rate > 0 and rng.random() < self.judge_garbage_rate:
            return _JUDGE_GARBAGE
        k = extract_marker(response_text)
        if k is None:
            obj = {"reasoning": "The response does not commit to any of the options.", "classification": "0"}
        else:
            obj = {"reasoning": f"The response explicitly states option {k}.", "classification": str(k)}
        return "```json\n" + json.dumps(obj, indent=2) + "\n```"

    def top_logprobs(self, question_key: str, n_options: int) -> List[Tuple[str, float]]:
        """True (temperature-1) first-token distribution of a classification answer,
        as ``(token, probability)`` sorted by decreasing probability.  Tokens with
        zero probability are omitted."""
        r = self.refusal_rate
        alts = [(str(i + 1), p * (1.0 - r)) for i, p in enumerate(self.option_probs(question_key, n_options))]
        alts.append((REFUSAL_TEXT.split()[0], r))
        alts = [(t, p) for t, p in alts if p > 0]
        alts.sort(key=lambda tp: -tp[1])
        return alts


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Per-request fault probabilities (drawn from a RNG seeded with ``seed``).

    * ``rate_429``: 429 rate-limit error without a Retry-After header.
    * ``rate_429_retry_after``: 429 with ``Retry-After: <retry_after>``.
    * ``rate_500`` / ``rate_503``: server errors.
    * ``rate_timeout``: sleep ``timeout_sleep`` seconds, then answer normally.
    * ``rate_drop``: close the connection without any response.
    * ``rate_malformed``: 200 whose body is not valid JSON.
    * ``rate_empty_choices``: 200 with ``"choices": []``.
    """

    seed: int = 0
    rate_429: float = 0.0
    rate_429_retry_after: float = 0.0
    retry_after: float = 0.05
    retry_after_as_date: bool = False  # send Retry-After as an HTTP date instead of seconds
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0
    timeout_sleep: float = 30.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    rate_empty_choices: float = 0.0

    def __post_init__(self) -> None:
        rates = self.rates()
        for kind, rate in rates:
            if rate < 0:
                raise ValueError(f"fault rate for {kind} must be >= 0")
        if sum(r for _, r in rates) > 1.0 + 1e-9:
            raise ValueError("fault rates sum to more than 1")

    def rates(self) -> List[Tuple[str, float]]:
        return [(kind, float(getattr(self, "rate_" + kind))) for kind in FAULT_KINDS]

    @property
    def total_rate(self) -> float:
        return sum(r for _, r in self.rates())

    def draw(self, rng: random.Random) -> Optional[str]:
        """Draw the fault of one request (None = no fault)."""
        u = rng.random()
        acc = 0.0
        for kind, rate in self.rates():
            if rate <= 0:
                continue
            acc += rate
            if u < acc:
                return kind
        return None


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


class ServerStats:
    """Thread-safe live counters of a :class:`FakeOpenAIServer`.

    Attributes
    ----------
    requests:        chat-completion requests received (faulted ones included)
    by_kind:         {"judge"|"classification"|"free": count} of those requests
    choices_returned: choices actually sent back in successful responses
    faults:          {fault kind: count}
    bodies:          parsed JSON request bodies (only if ``record=True``)
    connections:     TCP connections accepted (few => keep-alive works)
    http_requests:   all HTTP requests (including /v1/models, 404s, ...)
    authorizations:  distinct ``Authorization`` header values received
    """

    def __init__(self, record: bool = False):
        self._lock = threading.Lock()
        self.record = record
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_kind: Dict[str, int] = {KIND_JUDGE: 0, KIND_CLASSIFICATION: 0, KIND_FREE: 0}
            self.choices_returned = 0
            self.faults: Dict[str, int] = {}
            self.bodies: List[Any] = []
            self.connections = 0
            self.http_requests = 0
            self.model_lists = 0  # GET /v1/models (a preflight)
            self.probes = 0  # preflight chat requests (not in `requests`, which counts sampling and judging)
            self.authorizations: set = set()

    # mutators (called from the server loop)
    def _inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def _chat(self, kind: Optional[str], body: Any) -> None:
        with self._lock:
            if kind == KIND_PROBE:
                self.probes += 1
                return
            self.requests += 1
            if kind is not None:
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if self.record:
                self.bodies.append(body)

    def _authorization(self, value: Optional[str]) -> None:
        if value is not None:
            with self._lock:
                self.authorizations.add(value)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def as_dict(self) -> Dict[str, Any]:
        """Consistent snapshot (without ``bodies``)."""
        with self._lock:
            return {
                "requests": self.requests,
                "by_kind": dict(self.by_kind),
                "choices_returned": self.choices_returned,
                "faults": dict(self.faults),
                "connections": self.connections,
                "http_requests": self.http_requests,
            }

    def __repr__(self) -> str:
        return f"ServerStats({self.as_dict()!r})"


# ---------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_MAX_HEADER = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


HOSTILE_MODES = (
    "nan_logprobs",  # first-token logprobs NaN
    "positive_logprobs",  # a log-probability of +3
    "negative_usage",  # usage.completion_tokens = -5
    "huge_usage",  # usage.prompt_tokens = 10**12
    "float_usage",  # usage.prompt_tokens = 12.5
    "html",  # 200 with an HTML page instead of JSON
    "invalid_bytes",  # 200 with bytes that are not UTF-8
    "number_content",  # message.content is a number
    "echo_key_error",  # 500 whose message quotes the caller's key
    "echo_key_answer",  # an answer that contains the caller's key
)


def _hostile_reply(mode: str, resp: Dict[str, Any], req: Dict[str, Any], key: Optional[str]):
    """A reply to a well-formed request that a careless client would take at face value."""
    choice = resp["choices"][0]
    if mode in ("nan_logprobs", "positive_logprobs"):
        bad = float("nan") if mode == "nan_logprobs" else 3.0
        choice["logprobs"] = {"content": [{"token": "1", "logprob": bad, "bytes": [49], "top_logprobs": [
            {"token": "1", "logprob": bad, "bytes": [49]}, {"token": "2", "logprob": -1.0, "bytes": [50]}]}]}
        return 200, json.dumps(resp).encode(), None  # json.dumps writes NaN, as a broken server would
    if mode == "negative_usage":
        resp["usage"]["completion_tokens"] = -5
    elif mode == "huge_usage":
        resp["usage"]["prompt_tokens"] = 10**12
    elif mode == "float_usage":
        resp["usage"]["prompt_tokens"] = 12.5
    elif mode == "html":
        return 200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", None
    elif mode == "invalid_bytes":
        return 200, b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "\xff\xfe"}}]}', None
    elif mode == "number_content":
        choice["message"]["content"] = 12
    elif mode == "echo_key_error":
        return 500, _error_body(f"upstream refused key {key} for this model", "server_error", None), None
    elif mode == "echo_key_answer":
        choice["message"]["content"] = f"My key is {key}. " + (choice["message"]["content"] or "")
    return 200, json.dumps(resp).encode(), None


class _BadRequest(Exception):
    pass


def _error_body(message: str, type_: str, code: Any) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class FakeOpenAIServer:
    """Fake OpenAI chat-completions server running on its own asyncio loop thread.

    Parameters
    ----------
    policy:     :class:`Policy` deciding answers (its ``seed`` seeds the sampling RNG).
    latency:    seconds slept by every request before it is answered.
    faults:     :class:`FaultPlan` of injected failures.
    honour_n:   if False, return a single choice whatever ``n`` is.
    port:       TCP port (0 = pick a free one).
    host:       bind address.
    record:     keep every parsed request body in ``stats.bodies``.
    model_name: model id listed by ``GET /v1/models``.
    served_models: if given, the only model ids served (and listed); any other gets 404 ``model_not_found``,
                as OpenAI and vLLM answer. None: any name is answered (as llama.cpp's server does).
    api_key:    if given, a request without ``Authorization: Bearer <api_key>`` gets 401.
    max_in_flight: if given, a chat request arriving while this many are being answered gets 429 (with
                ``Retry-After: retry_after`` when that is set): a rate limit to adapt to.
    list_models: False: ``GET /v1/models`` answers 404 (servers without the route).
    logprobs:   False: ``logprobs`` requests are answered without logprobs (servers that do not support them).
    json_mode:  False: ``response_format`` gets 400, as the original GPT-4 answers.
    hostile:    a broken or hostile way of answering every sampling and judge request: one of
                :data:`HOSTILE_MODES` (NaN logprobs, impossible usage, HTML, invalid bytes, a key echoed...).

    seeded:     answer a request that carries a ``seed`` from an RNG seeded by (seed, messages), so the
                same request gets the same answers whatever the order of arrival, live or in a batch.
    batch_plan: :class:`BatchPlan` of the Batch API (``self.batches``, see ``tests/fake_batches.py``).

    Like a real server, ``max_tokens`` cuts an answer (one word = one token) and says
    ``finish_reason: "length"`` (``enforce_max_tokens=False``: a hostile server that ignores the limit).
    """

    def __init__(
        self,
        policy: Optional[Policy] = None,
        latency: float = 0.0,
        faults: Optional[FaultPlan] = None,
        honour_n: bool = True,
        port: int = 0,
        host: str = "127.0.0.1",
        record: bool = False,
        model_name: str = DEFAULT_MODEL,
        served_models: Optional[Sequence[str]] = None,
        api_key: Optional[str] = None,
        max_in_flight: Optional[int] = None,
        retry_after: Optional[str] = None,
        list_models: bool = True,
        logprobs: bool = True,
        enforce_max_tokens: bool = True,
        json_mode: bool = True,
        hostile: Optional[str] = None,
        seeded: bool = False,
        batch_plan: Optional[BatchPlan] = None,
    ):
        self.policy = policy if policy is not None else Policy()
        self.latency = float(latency)
        self.faults = faults if faults is not None else FaultPlan()
        self.honour_n = honour_n
        self.host = host
        self.port = port
        self.model_name = model_name
        self.served_models = list(served_models) if served_models is not None else None
        self.api_key = api_key
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.list_models = list_models
        self.supports_logprobs = logprobs
        self.enforce_max_tokens = enforce_max_tokens
        self.json_mode = json_mode
        self.hostile = hostile
        self.in_flight = 0
        self.stats = ServerStats(record=record)
        self.rng = random.Random(self.policy.seed)
        self.fault_rng = random.Random(self.faults.seed)
        self.seeded = seeded
        self.batches = FakeBatchAPI(self._batch_line, batch_plan)
        # Called once, at the first chat request, before it is answered: a test breaks something mid-job
        # (stops the tracking store, fills the cache's disk) at a point the job cannot race past.
        self.on_first_chat: Optional[Any] = None

        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._stop_requested = False
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._conn_tasks: set = set()
        self._writers: set = set()
        self._created = int(time.time())

    # -- lifecycle ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start serving in a daemon thread; return the base URL (``.../v1``)."""
        if self._thread is not None:
            return self.base_url
        self._ready.clear()
        self._stop_requested = False
        self._thread = threading.Thread(target=self._thread_main, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("fake OpenAI server did not start")
        if self._start_error is not None:
            self._thread.join(1.0)
            self._thread = None
            raise RuntimeError("fake OpenAI server failed to start") from self._start_error
        return self.base_url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (pending handlers, even sleeping ones, are cancelled)."""
        thread = self._thread
        if thread is None:
            return
        self.request_stop()
        thread.join(timeout)
        self._thread = None
        self._loop = None
        self._stop_event = None

    def __enter__(self) -> "FakeOpenAIServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve())
        except BaseException as e:  # noqa: BLE001 - reported through start()
            if not self._ready.is_set():
                self._start_error = e
                self._ready.set()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def serve(self, on_ready: Any = None) -> None:
        """Serve on the current loop until :meth:`request_stop` / :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        self._server = await asyncio.start_server(
            self._handle_conn, self.host, self.port, limit=_MAX_HEADER, backlog=1024
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._ready.set()
        if on_ready is not None:
            on_ready(self.base_url)
        try:
            await self._stop_event.wait()
        finally:
            self._server.close()
            for w in list(self._writers):
                w.close()
            tasks = [t for t in self._conn_tasks if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2.0)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass

    def request_stop(self) -> None:
        """Thread-safe request to stop :meth:`serve` (also before it has started)."""
        self._stop_requested = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed meanwhile
                pass

    # -- connection handling ----------------------------------------------------

    async def _handle_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conn_tasks.add(task)
        self._writers.add(writer)
        self.stats._inc("connections")
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # client closed the connection
                except asyncio.LimitOverrunError:
                    await self._write(writer, 413, _error_body("headers too large", "invalid_request_error", None), close=True)
                    return
                try:
                    method, target, headers = self._parse_head(head)
                    body = await self._read_body(reader, headers)
                except _BadRequest as e:
                    await self._write(writer, 400, _error_body(str(e), "invalid_request_error", None), close=True)
                    return
                except asyncio.IncompleteReadError:
                    return
                keep_alive = headers.get("connection", "").lower() != "close"
                self.stats._inc("http_requests")
                self.stats._authorization(headers.get("authorization"))
                path, _, query = target.partition("?")
                if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
                    result = 401, _error_body("Incorrect API key provided (fake).", "invalid_request_error", "invalid_api_key"), None
                else:
                    result = await self._dispatch(method, path, body, query, headers)
                if result is None:  # "drop" fault
                    return
                status, payload, extra = result
                await self._write(writer, status, payload, extra, close=not keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conn_tasks.discard(task)
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _parse_head(head: bytes) -> Tuple[str, str, Dict[str, str]]:
        try:
            text = head.decode("latin-1")
        except Exception as e:  # pragma: no cover
            raise _BadRequest("undecodable request head") from e
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest("malformed request line")
        method, target, _version = parts
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest("malformed header line")
            headers[name.strip().lower()] = value.strip()
        return method.upper(), target, headers

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: Dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            total = 0
            while True:
                line = await reader.readuntil(b"\r\n")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as e:
                    raise _BadRequest("bad chunk size") from e
                if size == 0:
                    # trailers until an empty line
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return b"".join(chunks)
                total += size
                if total > _MAX_BODY:
                    raise _BadRequest("body too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        cl = headers.get("content-length")
        if not cl:
            return b""
        try:
            n = int(cl)
        except ValueError as e:
            raise _BadRequest("bad Content-Length") from e
        if n < 0 or n > _MAX_BODY:
            raise _BadRequest("bad Content-Length")
        return await reader.readexactly(n) if n else b""

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        extra: Optional[Dict[str, str]] = None,
        close: bool = False,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"x-request-id: req_{uuid.uuid4().hex[:16]}",
        ]
        if extra:
            head.extend(f"{k}: {v}" for k, v in extra.items())
        head.append("Connection: close" if close else "Connection: keep-alive")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()

    # -- request dispatch ---------------------------------------------------------

    async def _dispatch(self, method: str, path: str, body: bytes, query: str = "", headers: Optional[Dict[str, str]] = None):
        path = path.rstrip("/") or "/"
        batch_api = await self.batches.dispatch(method, path, query, headers or {}, body)
        if batch_api is not None:
            status, payload = batch_api
            return (status, payload, None) if status != DROP else None
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return 405, _error_body(f"Method {method} not allowed", "invalid_request_error", None), None
            return await self._chat(body)
        if path in ("/v1/models", "/models") and method == "GET" and self.list_models:
            self.stats._inc("model_lists")
            ids = self.served_models if self.served_models is not None else [self.model_name]
            models = [{"id": i, "object": "model", "created": self._created, "owned_by": "fake-openai"} for i in ids]
            return 200, json.dumps({"object": "list", "data": models}).encode(), None
        return 404, _error_body(f"Unknown request URL: {method} {path}", "invalid_request_error", "unknown_url"), None

    async def _chat(self, raw: bytes):
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            self.stats._chat(None, None)
            return 400, _error_body(f"Invalid JSON body: {e}", "invalid_request_error", None), None
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            self.stats._chat(None, req)
            return 400, _error_body("'messages' must be a non-empty list", "invalid_request_error", None), None

        content = last_user_content(messages)
        kind = classify_request(content)
        self.stats._chat(kind, req)
        hook, self.on_first_chat = self.on_first_chat, None
        if hook is not None:
            hook()
        if self.served_models is not None and req.get("model") not in self.served_models:
            message = f"The model `{req.get('model')}` does not exist or you do not have access to it."
            return 404, _error_body(message, "invalid_request_error", "model_not_found"), None
        if req.get("response_format") and not self.json_mode:
            message = "Invalid parameter: 'response_format' of type 'json_object' is not supported with this model."
            return 400, _error_body(message, "invalid_request_error", None), None
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            self.stats._fault("rate_limit")
            extra = {"Retry-After": self.retry_after} if self.retry_after else None
            return 429, _error_body("Rate limit reached: too many requests in flight (fake).", "requests", "rate_limit_exceeded"), extra
        self.in_flight += 1
        try:
            return await self._answer(req, messages, content, kind)
        finally:
            self.in_flight -= 1

    async def _answer(self, req: Dict[str, Any], messages: List[Any], content: str, kind: str):
        fault = self.faults.draw(self.fault_rng)
        if fault is not None:
            self.stats._fault(fault)
            if fault == "timeout":
                await asyncio.sleep(self.faults.timeout_sleep)
            else:
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                return self._fault_response(fault, req)
        if self.latency > 0:
            await asyncio.sleep(self.latency)

        if req.get("stream"):
            return 400, _error_body("stream=true is not supported by the fake server", "invalid_request_error", None), None
        try:
            resp = self._completion(req, messages, content, kind)
        except Exception as e:  # noqa: BLE001 - a buggy Policy subclass shows as a 500
            return 500, _error_body(f"fake server error: {type(e).__name__}: {e}", "server_error", None), None
        self.stats._inc("choices_returned", len(resp["choices"]))
        if self.hostile and kind != KIND_PROBE:
            return _hostile_reply(self.hostile, resp, req, self.api_key)
        return 200, json.dumps(resp).encode(), None

    def _fault_response(self, fault: str, req: Dict[str, Any]):
        if fault == "429":
            return 429, _error_body("Rate limit reached (fake).", "requests", "rate_limit_exceeded"), None
        if fault == "429_retry_after":
            ra = self.faults.retry_after
            header = f"{ra:g}"
            if self.faults.retry_after_as_date:  # RFC 9110 allows an HTTP date as well
                header = email.utils.formatdate(time.time() + ra, usegmt=True)
            return (
                429,
                _error_body("Rate limit reached (fake), retry later.", "requests", "rate_limit_exceeded"),
                {"Retry-After": header},
            )
        if fault == "500":
            return 500, _error_body("The server had an error while processing your request (fake).", "server_error", None), None
        if fault == "503":
            return 503, _error_body("The engine is currently overloaded (fake).", "server_error", "service_unavailable"), None
        if fault == "drop":
            return None
        if fault == "malformed":
            return 200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess', None
        if fault == "empty_choices":
            resp = self._envelope(req, [], 1, 0)
            return 200, json.dumps(resp).encode(), None
        raise AssertionError(fault)

    # -- completion construction ----------------------------------------------

    def _envelope(self, req: Dict[str, Any], choices: List[Dict[str, Any]], prompt_tokens: int, completion_tokens: int):
        completion_tokens = max(1, completion_tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or self.model_name,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _rng_for(self, req: Dict[str, Any], messages: List[Any]) -> random.Random:
        if not self.seeded or req.get("seed") is None:
            return self.rng
        digest = hashlib.sha256(json.dumps([self.policy.seed, req["seed"], messages], sort_keys=True).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _batch_line(self, body: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        """One line of a batch, answered exactly as the same live request would be."""
        messages = body["messages"]
        content = last_user_content(messages)
        kind = classify_request(content)
        return kind, self._completion(body, messages, content, kind)

    def _completion(self, req: Dict[str, Any], messages: List[Any], content: str, kind: str) -> Dict[str, Any]:
        n = req.get("n") or 1
        try:
            n = max(1, int(n))
        except (TypeError, ValueError):
            n = 1
        if not self.honour_n:
            n = 1
        policy, rng = self.policy, self._rng_for(req, messages)

        want_logprobs = bool(req.get("logprobs")) and self.supports_logprobs
        top_k = req.get("top_logprobs") or 0
        try:
            top_k = max(0, int(top_k))
        except (TypeError, ValueError):
            top_k = 0

        if kind == KIND_JUDGE:
            _, sep, response_text = content.partition(RESPONSE_SEPARATOR)
            if not sep:
                response_text = ""
            texts = [policy.judge_answer(rng, response_text, content) for _ in range(n)]
            alts = None
        else:
            system = "\n".join(
                _content_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "system"
            )
            key = question_key(content, system)
            n_opt = count_options(content)
            if kind == KIND_CLASSIFICATION:
                texts = [policy.classification_answer(rng, key, n_opt) for _ in range(n)]
                alts = policy.top_logprobs(key, n_opt) if want_logprobs else None
            else:
                texts = [policy.free_answer(rng, key, n_opt, content) for _ in range(n)]
                alts = [((texts[0].split() or [""])[0], 1.0)] if want_logprobs else None

        choices = []
        completion_tokens = 0
        limit = req.get("max_tokens") if isinstance(req.get("max_tokens"), int) and self.enforce_max_tokens else None
        for i, text in enumerate(texts):
            finish_reason = "stop"
            if limit is not None and _word_count(text) > limit:
                text, finish_reason = " ".join(text.split()[:limit]), "length"
            logprobs = None
            if want_logprobs and alts is not None:
                tok = text.split()[0] if text.split() else text
                chosen_lp = next((math.log(p) for t, p in alts if t == tok), -9999.0)
                logprobs = {
                    "content": [
                        {
                            "token": tok,
                            "logprob": chosen_lp,
                            "bytes": list(tok.encode("utf-8")),
                            "top_logprobs": [
                                {"token": t, "logprob": math.log(p), "bytes": list(t.encode("utf-8"))}
                                for t, p in alts[:top_k]
                            ],
                        }
                    ],
                    "refusal": None,
                }
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": finish_reason,
                }
            )
            completion_tokens += _word_count(text)

        prompt_tokens = max(
            1, sum(len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))
        )
        return self._envelope(req, choices, prompt_tokens, completion_tokens)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible chat-completions server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds slept per request")
    p.add_argument("--seed", type=int, default=0, help="policy sampling seed")
    p.add_argument("--refusal-rate", type=float, default=0.05)
    p.add_argument("--judge-garbage-rate", type=float, default=0.0)
    p.add_argument("--no-honour-n", dest="honour_n", action="store_false", help="always return one choice")
    p.add_argument("--model-name", default=DEFAULT_MODEL)
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="shorthand: spread this rate evenly over 429-with-Retry-After, 500 and 503 (added to the explicit rates)",
    )
    for kind in FAULT_KINDS:
        p.add_argument(f"--rate-{kind.replace('_', '-')}", dest=f"rate_{kind}", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=0.05)
    p.add_argument("--timeout-sleep", type=float, default=30.0)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    rates = {f"rate_{k}": getattr(args, f"rate_{k}") for k in FAULT_KINDS}
    if args.error_rate:
        share = args.error_rate / 3.0
        for k in ("rate_429_retry_after", "rate_500", "rate_503"):
            rates[k] += share
    faults = FaultPlan(seed=args.fault_seed, retry_after=args.retry_after, timeout_sleep=args.timeout_sleep, **rates)
    policy = Policy(seed=args.seed, refusal_rate=args.refusal_rate, judge_garbage_rate=args.judge_garbage_rate)
    server = FakeOpenAIServer(
        policy=policy,
        latency=args.latency,
        faults=faults,
        honour_n=args.honour_n,
        port=args.port,
        host=args.host,
        model_name=args.model_name,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, server.request_stop)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
                pass

        def ready(url: str) -> None:
            sys.stdout.write(f"READY {url}\n")
            sys.stdout.flush()

        await server.serve(on_ready=ready)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    sys.stdout.write(json.dumps(server.stats.as_dict()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
