"""Chaos, issue 10 family B: `culturealign-report`, `culturealign-audit` and `culturealign-ui` keep the
promises of `culturealign`: one line and a non-zero exit on bad input, nothing a person typed or labelled
is overwritten, and the numbers that matter come from the tracked run, never from a file a person edits.

One small real sweep (US x {classification, cot}, fake server) serves every case; each case asserts the
exit code, the one-line message, and what was (not) written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow
import pytest

from culturealign.report.cli import audit_main, report_main
from culturealign.tracking import names
from tests.fake_openai import FakeOpenAIServer
from tests.helpers import fake_model_overrides, run_cli
from tests.test_tracking_server import free_port
from tests.test_ui import UI_SCRIPT


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, paper_csv):
    """(workdir, tracking uri, client, {style: child run}, parent id) of a finished two-job sweep."""
    workdir = tmp_path_factory.mktemp("commands_sweep")
    with FakeOpenAIServer() as server:
        args = ["--multirun", *fake_model_overrides(server.base_url, paper_csv, workdir), "country=us",
                "style=classification,cot", "samples=3", "dataset.limit=2", f"hydra.sweep.dir={workdir / 'multirun'}"]  # fmt: skip
        result = run_cli(args, cwd=workdir, env={"MPLCONFIGDIR": str(workdir / "mplconfig")})
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("culturealign").experiment_id])
    parent = next(r for r in runs if r.data.tags.get(names.KIND_TAG) == names.SWEEP_KIND)
    children = {r.data.params["style"]: r for r in runs if r is not parent}
    return workdir, uri, client, children, parent.info.run_id


def one_error(capsys, program: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), captured.err
    return lines[0]


def artifact_path(workdir: Path, run, name: str) -> Path:
    path = Path(urllib.parse.urlparse(run.info.artifact_uri).path) / name
    assert path.is_file() and path.is_relative_to(workdir), path
    return path


# --- culturealign-report ---


def test_report_names_a_run_without_distributions_and_reports_the_rest(sweep, tmp_path, capsys):
    workdir, uri, _, children, parent_id = sweep
    broken = artifact_path(workdir, children["cot"], names.DISTRIBUTIONS_ARTIFACT)
    aside = tmp_path / "aside.json"
    shutil.move(broken, aside)
    try:
        capsys.readouterr()
        assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "report"), "--no-log"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert (f"Not included: run {children['cot'].info.run_id[:8]} (us/cot): its distributions.json artifact is "
                "missing.") in captured.out  # fmt: skip
        with open(tmp_path / "report" / "table1.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["style"] for row in rows] == ["classification"]
        assert float(rows[0][names.SIMILARITY]) == children["classification"].data.metrics[names.SIMILARITY]
        # No run readable: one line, no report folder.
        other = artifact_path(workdir, children["classification"], names.DISTRIBUTIONS_ARTIFACT)
        original = other.read_bytes()
        other.write_text("{not json", encoding="utf-8")
        try:
            assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "none"), "--no-log"]) == 1
        finally:
            other.write_bytes(original)
        error = one_error(capsys, "culturealign-report")
        assert f"run {parent_id}: none of its 2 finished child runs can be read" in error
        assert "distributions.json artifact is unreadable" in error
        assert not (tmp_path / "none").exists()
    finally:
        shutil.move(aside, broken)


def test_report_against_a_closed_tracking_port_fails_at_once(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert report_main(["--tracking-uri", url, "--out", str(tmp_path / "report")]) == 1
    error = one_error(capsys, "culturealign-report")
    assert f"MLflow tracking server {url} is unreachable: cannot connect to 127.0.0.1" in error
    assert not (tmp_path / "report").exists()


# --- culturealign-audit ---


def test_audit_export_never_overwrites_a_sheet(sweep, tmp_path, capsys):
    _, uri, _, children, _ = sweep
    run_id = children["cot"].info.run_id
    sheet = tmp_path / "audit.csv"
    sheet.write_text("item,label\n1,2\n", encoding="utf-8")  # a person's labels
    assert audit_main(["export", "--run", run_id, "--out", str(sheet), "--tracking-uri", uri]) == 1
    assert f"{sheet} already exists; pass another --out" in one_error(capsys, "culturealign-audit")
    assert sheet.read_text(encoding="utf-8") == "item,label\n1,2\n"
    assert not (tmp_path / "audit.judge.csv").exists()
    # Only its judge file is there: refused as well, the judge file untouched.
    other = tmp_path / "other.csv"
    (tmp_path / "other.judge.csv").write_text("kept", encoding="utf-8")
    assert audit_main(["export", "--run", run_id, "--out", str(other), "--tracking-uri", uri]) == 1
    assert "other.judge.csv already exists" in one_error(capsys, "culturealign-audit")
    assert (tmp_path / "other.judge.csv").read_text() == "kept" and not other.exists()


def test_audit_score_takes_the_judges_verdicts_from_the_run(sweep, tmp_path, capsys):
    """Labels that all disagree with the judge, and a judge file edited to agree with them: 0%, not 100%."""
    _, uri, client, children, _ = sweep
    run_id = children["cot"].info.run_id
    sheet = tmp_path / "audit.csv"
    assert audit_main(["export", "--run", run_id, "--n", "4", "--out", str(sheet), "--tracking-uri", uri]) == 0
    with open(sheet, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    responses = client.download_artifacts(run_id, names.RESPONSES_ARTIFACT, str(tmp_path))
    options = {(r["question_id"], str(r["sample_index"])): r["option"] or 0 for r in map(json.loads, open(responses))}
    labels = [2 if options[(row["question_id"], row["sample_index"])] == 1 else 1 for row in rows]  # never the judge's
    for row, label in zip(rows, labels):
        row["label"] = str(label)
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    judge = tmp_path / "audit.judge.csv"
    with open(judge, newline="", encoding="utf-8") as handle:
        verdicts = list(csv.DictReader(handle))
    with open(judge, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(verdicts[0]))
        writer.writeheader()
        writer.writerows(v | {"judge_option": str(label)} for v, label in zip(verdicts, labels))
    capsys.readouterr()
    assert audit_main(["score", "--run", run_id, str(sheet), "--tracking-uri", uri]) == 0
    assert "accuracy 0.000" in capsys.readouterr().out
    assert client.get_run(run_id).data.metrics["judge_audit_accuracy"] == 0.0
    # A row moved to a response the run does not have: one line, nothing logged.
    rows[0]["sample_index"] = "999"
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert audit_main(["score", "--run", run_id, str(sheet), "--tracking-uri", uri]) == 1
    assert "line 2: the run has no response" in one_error(capsys, "culturealign-audit")


# --- culturealign-ui ---


def run_ui(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`culturealign-ui` as a user runs it; a server that did start would outlive the timeout: a failure."""
    return subprocess.run([sys.executable, "-c", UI_SCRIPT, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ})  # fmt: skip


def test_ui_on_a_port_in_use_exits_non_zero(sweep, tmp_path):
    _, uri, *_ = sweep
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_ui("--tracking-uri", uri, "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"culturealign-ui: error: cannot serve on 127.0.0.1:{port} (Address already in use); pass a free --port"
    ]


def test_ui_on_a_file_that_is_no_store_exits_non_zero_and_leaves_it(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_text("my notes, not a database\n", encoding="utf-8")
    result = run_ui("--tracking-uri", f"sqlite:///{store}", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"culturealign-ui: error: cannot read the MLflow store at sqlite:///{store} (")
    assert store.read_text(encoding="utf-8") == "my notes, not a database\n"


def test_report_and_audit_on_a_file_that_is_no_store_are_one_line_and_leave_it(tmp_path, capsys):
    store = tmp_path / "mlflow.db"
    store.write_text("my notes, not a database\n", encoding="utf-8")
    uri = f"sqlite:///{store}"
    assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 1
    assert f"cannot read the MLflow store at {uri} (" in one_error(capsys, "culturealign-report")
    assert audit_main(["export", "--run", "0" * 32, "--out", str(tmp_path / "a.csv"), "--tracking-uri", uri]) == 1
    assert f"cannot read the MLflow store at {uri} (" in one_error(capsys, "culturealign-audit")
    assert store.read_text(encoding="utf-8") == "my notes, not a database\n"
    assert not (tmp_path / "report").exists() and not (tmp_path / "a.csv").exists()
