"""Shared fixtures. Real GlobalOpinionQA rows are committed under tests/data (see tests/data/NOTICE), so the
suite runs complete in a fresh clone; CULTUREALIGN_TEST_DATA points the tests at another copy of them."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    configured = os.environ.get("CULTUREALIGN_TEST_DATA")
    path = Path(configured) if configured else DEFAULT_DATA
    if not path.is_dir():
        pytest.fail(f"real GlobalOpinionQA rows not found in {path}")
    return path


@pytest.fixture(scope="session")
def paper_csv(data_dir) -> Path:
    path = data_dir / "goqa_paper_subset.csv"
    assert path.is_file(), f"{path} missing"
    return path


@pytest.fixture(scope="session")
def quirk_csv(data_dir) -> Path:
    path = data_dir / "goqa_quirk_rows.csv"
    assert path.is_file(), f"{path} missing"
    return path


MINI_SWEEP_COUNTRIES = ("us", "india")
MINI_SWEEP_QUESTIONS, MINI_SWEEP_SAMPLES = 4, 6


@pytest.fixture(scope="session")
def mini_sweep(tmp_path_factory, paper_csv):
    """One real `culturealign --multirun experiment=table1` (2 countries x 3 styles x 4 questions x 6 samples)
    through the installed CLI against the fake server; shared by the sweep and report tests."""
    import mlflow

    from tests.fake_openai import FakeOpenAIServer
    from tests.helpers import fake_model_overrides, run_cli

    workdir = tmp_path_factory.mktemp("mini_sweep")
    with FakeOpenAIServer() as server:
        args = [
            "--multirun",
            "experiment=table1",
            *fake_model_overrides(server.base_url, paper_csv, workdir),
            f"country={','.join(MINI_SWEEP_COUNTRIES)}",
            f"samples={MINI_SWEEP_SAMPLES}",
            f"dataset.limit={MINI_SWEEP_QUESTIONS}",
            f"hydra.sweep.dir={workdir / 'multirun'}",
        ]
        # A fresh matplotlib config folder: the report's first figure builds the font cache, as on a new machine.
        result = run_cli(args, cwd=workdir, env={"MPLCONFIGDIR": str(workdir / "mplconfig")})
        requests = server.stats.requests
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    return SimpleNamespace(workdir=workdir, uri=uri, client=mlflow.MlflowClient(uri), result=result, requests=requests,
                           args=args)
