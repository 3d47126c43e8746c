"""Progress degrades to periodic log lines (with cache hits, model and judge) when its stream is not a terminal."""

import io
import logging

from culturealign.progress import Progress
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
