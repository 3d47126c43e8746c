"""Shared fixtures. Real GlobalOpinionQA rows come from CULTUREALIGN_TEST_DATA (set by .ci/run); when it is
set but missing, tests that need the rows fail rather than skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    configured = os.environ.get("CULTUREALIGN_TEST_DATA")
    path = Path(configured) if configured else DEFAULT_DATA
    if not path.is_dir():
        if configured:
            pytest.fail(f"CULTUREALIGN_TEST_DATA={configured} does not exist")
        pytest.skip("real GlobalOpinionQA rows not found; set CULTUREALIGN_TEST_DATA")
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
