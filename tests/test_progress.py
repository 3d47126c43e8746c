"""Progress degrades to periodic log lines (with cache hits, model and judge) when its stream is not a terminal."""

import io
import logging

import math

from culturealign.progress import Progress, SweepPosition, duration, in_sweep
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, make_cfg, run_pipeline, spec_of


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


def test_rerun_progress_shows_model_and_judge_answers_from_cache(paper_csv, tmp_path, caplog):
    with FakeOpenAIServer() as server:
        overrides = fake_model_overrides(server.base_url, paper_csv, tmp_path)
        cfg = make_cfg(*overrides, "style=cot", "samples=2", "dataset.limit=2", "bootstrap.resamples=100")
        run_pipeline(cfg)
        caplog.set_level(logging.INFO, logger="culturealign")
        run_pipeline(cfg)
    lines = [r.getMessage() for r in caplog.records]
    model_line = next(line for line in lines if line.startswith("US/cot:"))
    judge_line = next(line for line in lines if line.startswith("judge:"))
    assert model_line.startswith("US/cot: 4/4 answers") and model_line.endswith("4 from cache)")
    judged = judge_line.split()[1].split("/")[0]
    assert judge_line.endswith(f"{judged} from cache)") and int(judged) > 0


def test_sweep_eta_adds_the_remaining_jobs_at_the_average_job_length():
    # job 3 of 12: the first two took 100 s, this one has run 20 s and needs 30 s more -> 50 s per job
    position = SweepPosition(3, 12, before=100.0, started=0.0)
    assert position.eta(job_elapsed=20.0, job_remaining=30.0) == 30.0 + 9 * 50.0
    assert SweepPosition(12, 12, 500.0, 0.0).eta(10.0, 5.0) == 5.0  # the last job: only its own rest
    assert math.isnan(SweepPosition(1, None, 0.0, 0.0).eta(1.0, 1.0))  # an uncounted sweep has no ETA
    assert [duration(s) for s in (0.4, 45, 500, 7500, math.nan)] == ["0s", "45s", "8m20s", "2h05m", "?"]


def test_progress_in_a_sweep_says_which_job_and_the_sweep_eta(caplog):
    caplog.set_level(logging.INFO, logger="culturealign")
    with in_sweep(SweepPosition(3, 12, before=100.0, started=0.0)):
        progress = Progress(10, "US/cot", every_seconds=3600, stream=io.StringIO())
    progress.advance(10)
    progress.close()
    line = caplog.records[-1].getMessage()
    assert line.startswith("US/cot: 10/10 answers (") and "; job 3 of 12, sweep ETA " in line
    outside = Progress(10, "US/cot", every_seconds=3600, stream=io.StringIO())
    assert "job" not in outside.line()  # the position belongs to the block it was set in
