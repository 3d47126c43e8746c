"""A batch job through the installed CLI: killed with SIGKILL at each phase of its batch and started again,
it re-attaches to what it had submitted and submits nothing twice; the paper's sweep runs end to end by
batch, pays the batch price, and its dry run shows live, batch, expected and worst-case costs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, run_cli
from tests.jobs import tracking_client
from tests.sweep_runs import parent_and_children

FAST = ["model.batch_poll_seconds=0.001", "judge.batch_poll_seconds=0.001"]
QUESTIONS, SAMPLES = 3, 4


def job_args(server, paper_csv, workdir, style: str) -> list[str]:
    return [
        *fake_model_overrides(server.base_url, paper_csv, workdir),
        f"style={style}", f"samples={SAMPLES}", f"dataset.limit={QUESTIONS}", "model.n_per_request=2",
        "model.batch=true", "judge.batch=true", *FAST, f"hydra.run.dir={workdir / 'run'}",
    ]  # fmt: skip


def kill_when_held(server, args: list[str], workdir: Path, point: str) -> None:
    """Start the job, wait until the server holds it at `point`, kill -9 it there."""
    command = [str(Path(sys.executable).with_name("culturealign")), *args]
    log = workdir / f"killed_at_{point}.log"
    with open(log, "w") as stderr:
        job = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr)
        held = False
        while not held and job.poll() is None:
            held = server.batches.held(point, timeout=0.2)
        assert held, f"the job ended before reaching {point}: {log.read_text()[-2000:]}"
        os.kill(job.pid, signal.SIGKILL)
        job.wait()


def test_a_batch_job_killed_at_every_phase_in_turn_submits_nothing_twice(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        args, stats = job_args(server, paper_csv, tmp_path, "classification"), server.batches.stats
        for point, on_server in [  # where each run is killed: (files, batches) the server holds by then
            ("after_upload", (1, 0)),  # uploaded, the reply never read: the next run finds the file by name
            ("before_create", (1, 0)),  # the create never arrived: the next run looks for the batch, then creates it
            ("after_create", (1, 1)),  # created, the reply never read: the next run finds it by its metadata
            ("in_progress", (1, 1)),  # running: the next run polls it
            ("before_download", (1, 1)),  # completed, output not read: the next run downloads it
        ]:
            server.batches.hold(point)
            kill_when_held(server, args, tmp_path, point)
            server.batches.release()
            assert (stats.files_uploaded, stats.batches_created) == on_server, point
        assert 0 < stats.lines_run == len(stats.lines_by_custom_id)  # ran before the last kill, each line once
        result = run_cli(args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (stats.files_uploaded, stats.batches_created, server.stats.requests) == (1, 1, 0)
    assert set(stats.lines_by_custom_id.values()) == {1} and f"{QUESTIONS * SAMPLES} responses" in result.stdout
    metrics = finished_run(tmp_path, killed=5).data.metrics
    assert (metrics["model_batches"], metrics["model_batches_reattached"], metrics["model_batch_requests"]) == (0, 1, 6)
    assert metrics["model_cache_misses"] == QUESTIONS * SAMPLES  # answered (and paid) by this run's harvest


def test_a_job_killed_after_creating_its_judge_batch_re_attaches_to_it(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        args = job_args(server, paper_csv, tmp_path, "cot")
        server.batches.hold("after_create", occurrence=2)  # the model's batch, then the judge's
        kill_when_held(server, args, tmp_path, "after_create")
        server.batches.release()
        result = run_cli(args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        stats = server.batches.stats
        assert (stats.files_uploaded, stats.batches_created, server.stats.requests) == (2, 2, 0)
    assert set(stats.lines_by_custom_id.values()) == {1}
    metrics = finished_run(tmp_path, killed=1).data.metrics
    assert "model_batches" not in metrics and metrics["model_cache_hits"] == QUESTIONS * SAMPLES  # cached by the killed run
    assert (metrics["judge_batches"], metrics["judge_batches_reattached"]) == (0, 1)


def finished_run(workdir: Path, killed: int):
    """The run of the job that ended (those of the killed ones are marked KILLED)."""
    client = tracking_client(workdir)
    runs = client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] + ["KILLED"] * killed
    [run] = [r for r in runs if r.info.status == "FINISHED"]
    return run


def test_the_paper_sweep_runs_by_batch_at_the_batch_price_and_its_dry_run_shows_every_cost(paper_csv, tmp_path):
    with FakeOpenAIServer(seeded=True) as server:
        common = [
            "experiment=table1", "model.batch=true", "judge.batch=true", *FAST, f"model.base_url={server.base_url}",
            "country=us,india", "samples=4", "dataset.limit=3", f"dataset.path={paper_csv}",
            "model.priced=true", "judge.priced=true",  # list prices, though the fake server is no priced host
            f"cache.url={tmp_path / 'cache.sqlite'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        ]  # fmt: skip
        env = {"OPENAI_API_KEY": "sk-test"}  # the table1 models are OpenAI's: the fake takes any key
        dry = run_cli(["--multirun", *common, "dry_run=true", f"hydra.sweep.dir={tmp_path / 'dry'}"], cwd=tmp_path)
        swept = run_cli(["--multirun", *common, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env)
        again = run_cli(["--multirun", *common, "dry_run=true", f"hydra.sweep.dir={tmp_path / 'again'}"], cwd=tmp_path)
        assert server.stats.requests == 0
        stats = server.batches.stats
    assert dry.returncode == swept.returncode == again.returncode == 0, (dry.stderr + swept.stderr)[-3000:]
    total = dry.stdout.splitlines()[-2:]
    assert total[0].startswith("sweep total (6 jobs): dry run: ")
    assert "cost (live / batch): worst case $" in total[1] and "expected $" in total[1]
    assert "model: priors (all 6 jobs); judge: priors (all 4 jobs)" in total[1]
    assert stats.batches_created == 6 + 4  # a model batch per job, a judge batch per free-text job
    _, children = parent_and_children(tracking_client(tmp_path))
    assert len(children) == 6 and all(run.info.status == "FINISHED" for run in children)
    for run in children:
        metrics = run.data.metrics
        tokens = (metrics["model_batch_prompt_tokens"], metrics["model_batch_completion_tokens"])
        assert metrics["model_cost_usd"] == pytest.approx((tokens[0] * 2.50 + tokens[1] * 10.00) / 1e6 * 0.5)
        assert metrics["model_requests"] == 0 and metrics["model_batch_requests"] > 0
    after = again.stdout.splitlines()[-2:]
    assert after[0].startswith("sweep total (6 jobs): dry run: 0 requests (model 0, judge 0)")
    assert "model: mean of" in after[1] and "(all 6 jobs)" in after[1]

