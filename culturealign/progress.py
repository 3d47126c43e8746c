"""Answers done / planned, with rate, ETA and cache hits: a bar on a terminal, periodic log lines elsewhere.
Inside a sweep, both also say which job this is and when the whole sweep should end.

Counted in answers (samples), not HTTP requests: with n-batching one request brings several, and a cache
hit brings one without any request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass

log = logging.getLogger("culturealign")


@dataclass(frozen=True)
class SweepPosition:
    """Job `number` of `total` in a sweep whose earlier jobs took `before` seconds in all; this job started
    at `started` (time.time()). Jobs are taken to run one after another: with parallel workers the sweep
    ETA is an upper bound."""

    number: int  # 1-based
    total: int | None  # None: unknown (a sweep Hydra counts only while it runs)
    before: float
    started: float

    def eta(self, job_elapsed: float, job_remaining: float) -> float:
        """Seconds until the sweep ends: the rest of this job, then the remaining jobs at the average
        duration of the jobs so far (this one counted at its projected length)."""
        if self.total is None or math.isnan(job_remaining):
            return math.nan
        average = (self.before + job_elapsed + job_remaining) / self.number
        return job_remaining + (self.total - self.number) * average

    def describe(self, job_remaining: float) -> str:
        if self.total is None:
            return f"job {self.number}"
        eta = self.eta(time.time() - self.started, job_remaining)
        return f"job {self.number} of {self.total}, sweep ETA {duration(eta)}"


_position: SweepPosition | None = None


@contextlib.contextmanager
def in_sweep(position: SweepPosition | None):
    """Progress shown inside the block says where the job is in its sweep."""
    global _position
    previous, _position = _position, position
    try:
        yield
    finally:
        _position = previous


def duration(seconds: float) -> str:
    """`45s`, `8m20s`, `2h05m`; `?` when unknown."""
    if math.isnan(seconds) or math.isinf(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, label: str, every_seconds: float = 10.0, stream=None):
        self.total, self.label, self.done, self.cached = total, label, 0, 0
        self._stream = stream or sys.stderr
        self._every = every_seconds
        self._start = self._last = time.monotonic()
        self._position = _position
        self._bar = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._desc(), unit="answer", file=self._stream, dynamic_ncols=True)

    def advance(self, n: int = 1, cached: int = 0) -> None:
        self.done += n
        self.cached += cached
        if self._bar is not None:
            self._bar.set_description_str(self._desc(), refresh=False)
            self._bar.set_postfix(cached=self.cached, refresh=False)
            self._bar.update(n)
        elif time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            log.info(self.line())

    def _timing(self) -> tuple[float, float, float]:
        """(elapsed s, answers per s, remaining s)"""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        return elapsed, rate, (self.total - self.done) / rate if rate > 0 else float("nan")

    def _sweep(self) -> str:
        return self._position.describe(self._timing()[2]) if self._position else ""

    def _desc(self) -> str:
        sweep = self._sweep()
        return f"{self.label} [{sweep}]" if sweep else self.label

    def line(self) -> str:
        _, rate, eta = self._timing()
        sweep = f"; {self._sweep()}" if self._position else ""
        return (
            f"{self.label}: {self.done}/{self.total} answers ({rate:.1f}/s, ETA {eta:.0f}s, "
            f"{self.cached} from cache){sweep}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            log.info(self.line())
