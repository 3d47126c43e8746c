"""Resume: a finished sweep re-run sends nothing; a job killed with SIGKILL re-runs to completion, repeating
at most the requests in flight, and MLflow shows the killed run as KILLED rather than live or finished."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, run_cli

CONCURRENCY = 4


def runs(workdir: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])


def test_rerun_of_a_finished_sweep_sends_no_request(paper_csv, tmp_path):
    with FakeOpenAIServer() as server:
        for attempt in ("first", "again"):
            args = [
                "--multirun",
                *fake_model_overrides(server.base_url, paper_csv, tmp_path),
                "style=classification,cot",
                "samples=3",
                "dataset.limit=2",
                f"hydra.sweep.dir={tmp_path / attempt}",
            ]
            server.stats.reset()
            result = run_cli(args, cwd=tmp_path)
            assert result.returncode == 0, result.stderr[-3000:]
            if attempt == "first":  # 2 jobs x 6 answers; the judge reads each distinct CoT answer once
                kinds = server.stats.by_kind
                assert kinds["classification"] == kinds["free"] == 6 and 0 < kinds["judge"] <= 6
        assert server.stats.requests == 0
    assert all(run.info.status == "FINISHED" for run in runs(tmp_path))


def job_args(server, paper_csv, workdir) -> list[str]:
    return [*fake_model_overrides(server.base_url, paper_csv, workdir), "samples=20", "dataset.limit=10",
            f"concurrency={CONCURRENCY}", f"hydra.run.dir={workdir / 'run'}"]


def test_job_killed_mid_way_resumes_repeating_at_most_the_requests_in_flight(paper_csv, tmp_path):
    planned = 10 * 20
    with FakeOpenAIServer(latency=0.1) as server:
        command = [str(Path(sys.executable).with_name("culturealign")), *job_args(server, paper_csv, tmp_path)]
        job = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while server.stats.requests < 40 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.02)
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
        before = server.stats.requests
        assert 40 <= before < planned
        [killed] = runs(tmp_path)
        assert killed.info.status == "RUNNING"  # nobody could close it: not FINISHED
        server.latency = 0.0
        result = run_cli(job_args(server, paper_csv, tmp_path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.stats.requests <= planned + CONCURRENCY
    assert "200 responses" in result.stdout
    statuses = {run.info.run_id: run.info.status for run in runs(tmp_path)}
    assert statuses.pop(killed.info.run_id) == "KILLED"
    assert list(statuses.values()) == ["FINISHED"]
