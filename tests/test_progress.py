"""Progress degrades to periodic log lines (with cache hits) when its stream is not a terminal."""

import io
import logging

from culturealign.progress import Progress


def test_non_terminal_progress_logs_periodic_lines_with_cache_hits(caplog):
    caplog.set_level(logging.INFO, logger="culturealign")
    progress = Progress(10, "us/classification", every_seconds=0.0, stream=io.StringIO())
    progress.advance(2, cached=2)
    progress.advance(3)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("us/classification: 2/10 answers (") and lines[0].endswith("2 from cache)")
    assert lines[1].startswith("us/classification: 5/10 answers (")
    assert len(lines) == 3  # close() logs the final line


def test_non_terminal_progress_stays_quiet_between_periods(caplog):
    caplog.set_level(logging.INFO, logger="culturealign")
    progress = Progress(100, "judge", every_seconds=3600, stream=io.StringIO())
    for _ in range(50):
        progress.advance()
    assert caplog.records == []
    progress.close()
    assert [r.getMessage() for r in caplog.records][0].startswith("judge: 50/100 answers")
