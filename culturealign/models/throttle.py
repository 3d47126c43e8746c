"""How many requests one endpoint gets at once, adapted to what it says (AIMD), within an account's budgets.

- A window of requests in flight starts at the job's `concurrency`. A rate-limit or overload reply (429,
  503) halves it (at most once per round trip, so a burst of 429s from one window counts once) and
  remembers the window that overloaded the endpoint. Every success grows the window by 1/window (a full
  window of successes adds one request) below that remembered ceiling, and ten times more slowly past it,
  so the endpoint's limit is probed now and then, not every few requests; never beyond `concurrency`.
- Retry-After pauses every new request to the endpoint until that moment, not only the one retried.
- `requests_per_minute` spaces request starts at least 60/rpm seconds apart; `tokens_per_minute` keeps a
  bucket of ten seconds' worth of tokens, refilled continuously and debited with each reply's usage:
  a request waits while the bucket is empty.
A job keeps one throttle per endpoint (base URL), shared by the model and the judge on the same server.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

BUCKET_SECONDS = 10.0  # the token budget's burst: this many seconds of tokens_per_minute
PROBE_SLOWDOWN = 10.0  # growth past the last window that overloaded the endpoint is this much slower


@dataclass
class ThrottleTrace:
    """What a run logs: the window after each change, and how many replies said "slow down"."""

    windows: list[int] = field(default_factory=list)
    overloaded: int = 0


class Throttle:
    def __init__(self, limit: int, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        self.limit = max(1, limit)
        self.window = float(self.limit)
        self.in_flight = 0
        self.trace = ThrottleTrace([self.limit])
        self._changed = asyncio.Condition()
        self._paused_until = 0.0
        self._last_cut = 0.0  # when the window was last halved
        self._ceiling = float("inf")  # the last window that overloaded the endpoint
        self._spacing = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_start = 0.0
        self._tokens_per_second = tokens_per_minute / 60.0 if tokens_per_minute else 0.0
        self._tokens = self._tokens_per_second * BUCKET_SECONDS
        self._refilled = time.monotonic()

    @asynccontextmanager
    async def slot(self):
        """Hold one of the window's places for a request (waits for a place and for the budgets)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.window))
            self.in_flight += 1
        try:
            await self._wait_for_budget()
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def _wait_for_budget(self) -> None:
        while True:
            now = time.monotonic()
            self._refill(now)
            start = max(now, self._paused_until, self._next_start)
            if self._tokens_per_second and self._tokens <= 0:
                start = max(start, now - self._tokens / self._tokens_per_second)
            if start <= now:
                self._next_start = now + self._spacing
                return
            await asyncio.sleep(start - now)

    def _refill(self, now: float) -> None:
        if self._tokens_per_second:
            capacity = self._tokens_per_second * BUCKET_SECONDS
            self._tokens = min(capacity, self._tokens + (now - self._refilled) * self._tokens_per_second)
        self._refilled = now

    def succeeded(self, tokens: int = 0) -> None:
        self._tokens -= tokens if self._tokens_per_second else 0
        if self.window < self.limit:
            step = 1.0 / self.window if self.window + 1 < self._ceiling else 1.0 / (self.window * PROBE_SLOWDOWN)
            self._set_window(min(self.limit, self.window + step))

    def overloaded(self, retry_after: float | None, round_trip: float) -> None:
        """A 429 / 503: halve the window (once per round trip) and pause for Retry-After."""
        now = time.monotonic()
        self.trace.overloaded += 1
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if now - self._last_cut >= round_trip:
            self._last_cut = now
            self._ceiling = int(self.window)
            self._set_window(max(1.0, self.window / 2))

    def _set_window(self, window: float) -> None:
        """A grown window wakes waiters when the request that grew it releases its place."""
        if int(window) != int(self.window):
            self.trace.windows.append(int(window))
        self.window = window
