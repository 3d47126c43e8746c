"""Helpers shared by tests: compose a config, run the CLI, read MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from culturealign import pipeline
from culturealign.app import schema
from culturealign.app.schema import conf_dir

REPO = Path(__file__).resolve().parent.parent


def make_cfg(*overrides: str):
    schema.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    command = [str(Path(sys.executable).with_name("culturealign")), *args]
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def fake_model_overrides(base_url: str, data: Path, workdir: Path) -> list[str]:
    return [
        "model=openai-compatible",
        f"model.base_url={base_url}",
        f"dataset.path={data}",
        f"cache.url={workdir / 'cache.sqlite'}",
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
    ]


def spec_of(cfg, country: str = "us", **choices):
    """The validated JobSpec of a composed config, as the CLI builds it."""
    return schema.job_spec(cfg, {"country": country, **choices})


def run_pipeline(cfg, country: str = "us"):
    """One job through the pipeline (no MLflow), as the CLI runs it."""
    return pipeline.run(spec_of(cfg, country))
