"""Answers done / planned, with rate, ETA and cache hits: a bar on a terminal, periodic log lines elsewhere.

Counted in answers (samples), not HTTP requests: with n-batching one request brings several, and a cache
hit brings one without any request.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("culturealign")


class Progress:
    def __init__(self, total: int, label: str, every_seconds: float = 10.0, stream=None):
        self.total, self.label, self.done, self.cached = total, label, 0, 0
        self._stream = stream or sys.stderr
        self._every = every_seconds
        self._start = self._last = time.monotonic()
        self._bar = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="answer", file=self._stream, dynamic_ncols=True)

    def advance(self, n: int = 1, cached: int = 0) -> None:
        self.done += n
        self.cached += cached
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(cached=self.cached, refresh=False)
        elif time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            log.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"{self.label}: {self.done}/{self.total} answers ({rate:.1f}/s, ETA {eta:.0f}s, "
            f"{self.cached} from cache)"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            log.info(self.line())
