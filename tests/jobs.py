"""Running jobs against the fake server (in-process as the CLI would, or a sweep through the CLI) and
reading their MLflow runs."""

from __future__ import annotations

from pathlib import Path

import mlflow

from culturealign.app.cli import run_job
from culturealign.pipeline import RunResult
from tests.helpers import fake_model_overrides, make_cfg, run_cli


def job_cfg(base_url: str, data: Path, workdir: Path, *overrides: str):
    """A small fast job: fake server, 2 questions, quick retries (tests override any of it)."""
    fast = ["model.retry_backoff=0.01", "dataset.limit=2", "samples=3", "style=classification"]
    return make_cfg(*fake_model_overrides(base_url, data, workdir), *fast, *overrides)


def run_in_process(cfg, style: str = "classification") -> RunResult:
    return run_job(cfg, {"model": "openai-compatible", "country": "us", "style": style})


def tracking_client(workdir: Path):
    return mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def only_run(workdir: Path):
    client = tracking_client(workdir)
    [run] = client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
    return client, run


def small_sweep(base_url: str, data: Path, workdir: Path, *overrides: str, env: dict | None = None):
    """`culturealign --multirun` of classification jobs (2 questions x 3 samples each), as a user runs it."""
    args = ["--multirun", *fake_model_overrides(base_url, data, workdir), "style=classification", "samples=3"]
    args += ["dataset.limit=2", f"hydra.sweep.dir={workdir / 'multirun'}", *overrides]
    return run_cli(args, cwd=workdir, env=env)
