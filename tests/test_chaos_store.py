"""Chaos, issue 10 family A: nothing computed is lost when the tracking store fails mid-job.

A job writes its results into its own folder before it talks to the store; when the store breaks after
the run was created, the job fails with one line naming the folder, and `culturealign-log FOLDER` logs the
same run later. The store is broken for real at the first model request (the fake server's hook, so the
job cannot race past it): its SQLite file and the run's artifact folder are made immutable with
`chattr +i` (root ignores permission bits, not the immutable flag), or its `mlflow server` is stopped. The response cache is broken the same way (immutable file and WAL).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import mlflow
import pytest

from culturealign.app import relog
from culturealign.app.cli import run_job
from culturealign.errors import CacheError, TrackingError
from culturealign.tracking import names
from tests.fake_openai import FakeOpenAIServer
from tests.jobs import job_cfg
from tests.test_tracking_server import free_port, start_server, stop_server

CHOICES = {"model": "openai-compatible", "country": "us", "style": "classification"}
KEPT = (names.SCORES_ARTIFACT, names.DISTRIBUTIONS_ARTIFACT, names.RESPONSES_ARTIFACT, names.RESPONSES_TABLE,
        names.SERIES_FILE, names.PENDING_RUN_FILE)  # fmt: skip
ARTIFACTS = {names.CONFIG_ARTIFACT, names.SCORES_ARTIFACT, names.DISTRIBUTIONS_ARTIFACT, names.RESPONSES_ARTIFACT,
             names.RESPONSES_TABLE}  # fmt: skip


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def freezer():
    """Makes paths immutable; undoes it whatever happens (pytest must be able to delete tmp_path)."""
    frozen: list[Path] = []

    def freeze(*paths: Path) -> None:
        for path in paths:
            chattr("+i", path)
            frozen.append(path)

    assert shutil.which("chattr"), "these tests need chattr (e2fsprogs), root and a filesystem with +i (ext4, xfs)"
    yield freeze
    for path in reversed(frozen):
        chattr("-i", path)


def one_line(raised) -> str:
    message = str(raised.value)
    assert "\n" not in message, message
    return message


def runs_of(uri: str):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("culturealign")
    return client, {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}


def assert_logged_like_a_normal_run(client, logged, reference, job_dir: Path, tmp_path: Path) -> None:
    """The run logged later has the job's params and name, the numbers its folder kept, and the same
    similarity and distributions as the same job tracked normally."""
    assert logged.info.status == "FINISHED" and logged.info.run_name == reference.info.run_name
    assert logged.data.params == reference.data.params
    kept = json.loads((job_dir / names.SCORES_ARTIFACT).read_text())
    series = json.loads((job_dir / names.SERIES_FILE).read_text())
    assert {name: logged.data.metrics[name] for name in kept} == pytest.approx(kept)
    assert set(logged.data.metrics) == set(kept) | set(series) == set(reference.data.metrics)
    for metric in (names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH, names.UNCLASSIFIABLE_RATE, names.N_RESPONSES):
        assert logged.data.metrics[metric] == reference.data.metrics[metric]
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == ARTIFACTS
    for run, folder in ((logged, "logged"), (reference, "reference")):
        path = client.download_artifacts(run.info.run_id, names.DISTRIBUTIONS_ARTIFACT, str(tmp_path / folder))
        assert Path(path).read_text() == (job_dir / names.DISTRIBUTIONS_ARTIFACT).read_text()
    assert logged.data.tags[names.LOGGED_FROM_TAG] == str(job_dir.resolve())
    assert len(logged.inputs.dataset_inputs) == 1


def test_a_store_made_read_only_mid_job_keeps_the_results_to_log_later(tmp_path, paper_csv, freezer, capsys):
    job_dir, uri = tmp_path / "job", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    database = tmp_path / "mlruns" / "mlflow.db"

    def freeze_the_store() -> None:
        [config] = (tmp_path / "mlruns" / "artifacts").rglob(names.CONFIG_ARTIFACT)  # the run exists by now
        freezer(database, config.parent)

    with FakeOpenAIServer() as server:
        server.on_first_chat = freeze_the_store
        cfg = job_cfg(server.base_url, paper_csv, tmp_path)
        with pytest.raises(TrackingError) as raised:
            run_job(cfg, CHOICES, job_dir=job_dir)
        assert server.stats.requests > 0 and server.on_first_chat is None  # broken mid-job, not before it
        message = one_line(raised)
        assert f"MLflow at {uri} failed after run " in message
        assert message.endswith(f"the results are kept in {job_dir}: log them later with `culturealign-log {job_dir}`")
        assert all((job_dir / name).is_file() for name in KEPT)
        # Logging into a store that is still read-only fails in one line and changes nothing in the folder.
        before = {name: (job_dir / name).read_bytes() for name in KEPT}
        assert relog.main([str(job_dir)]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("culturealign-log: error: ") and "\n" not in error
        assert {name: (job_dir / name).read_bytes() for name in KEPT} == before
        for path in (database, *(tmp_path / "mlruns" / "artifacts").rglob(names.CONFIG_ARTIFACT)):
            chattr("-i", path if path == database else path.parent)
        client, runs = runs_of(uri)
        [created] = runs.values()
        assert names.SIMILARITY not in created.data.metrics  # the store never got the numbers
        assert relog.main([str(job_dir)]) == 0
        assert capsys.readouterr().out.startswith(f"Logged {job_dir} to MLflow: experiment ")
        # The same job tracked normally (its answers now come from the cache): the reference.
        run_job(cfg, CHOICES, job_dir=tmp_path / "again")
    client, runs = runs_of(uri)
    assert len(runs) == 3 and runs[created.info.run_id].info.status == "KILLED"  # the job's own run, left behind
    pending = json.loads((job_dir / names.PENDING_RUN_FILE).read_text())
    logged = client.get_run(pending["logged_run_id"])
    reference = next(r for i, r in runs.items() if i not in (created.info.run_id, logged.info.run_id))
    assert_logged_like_a_normal_run(client, logged, reference, job_dir, tmp_path)
    # A folder is logged once.
    assert relog.main([str(job_dir)]) == 1
    assert f"is already logged as run {logged.info.run_id}" in capsys.readouterr().err


def test_log_refuses_a_folder_that_is_not_a_finished_job(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / names.PENDING_RUN_FILE).write_text("{}")
    assert relog.main([str(tmp_path)]) == 1
    assert relog.main([str(tmp_path / "half")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        f"culturealign-log: error: {tmp_path} has no {names.PENDING_RUN_FILE}: not the output folder of a culturealign job",
        f"culturealign-log: error: {tmp_path / 'half'} has no {names.SCORES_ARTIFACT}: the job did not finish, "
        "there is nothing to log",
    ]


def test_a_tracking_server_gone_mid_job_fails_at_once_and_is_logged_later(tmp_path, paper_csv):
    folder, job_dir = tmp_path / "server", tmp_path / "job"
    folder.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(folder, port)
    try:
        with FakeOpenAIServer() as model_server:
            model_server.on_first_chat = lambda: stop_server(server)
            cfg = job_cfg(model_server.base_url, paper_csv, tmp_path, f"mlflow.tracking_uri={url}")
            with pytest.raises(TrackingError) as raised:  # at once: no minutes of MLflow retries
                run_job(cfg, CHOICES, job_dir=job_dir)
        message = one_line(raised)
        assert message.startswith(f"MLflow at {url} failed after run ") and "cannot connect to 127.0.0.1" in message
        assert message.endswith(f"log them later with `culturealign-log {job_dir}`")
        assert all((job_dir / name).is_file() for name in KEPT)
        server = start_server(folder, port)  # the server is back
        assert relog.main([str(job_dir)]) == 0
        client, runs = runs_of(url)
        logged = client.get_run(json.loads((job_dir / names.PENDING_RUN_FILE).read_text())["logged_run_id"])
        [created] = [run for run_id, run in runs.items() if run_id != logged.info.run_id]
        assert created.info.status == "KILLED" and names.SIMILARITY not in created.data.metrics
        assert logged.data.params == created.data.params
        kept = json.loads((job_dir / names.SCORES_ARTIFACT).read_text())
        assert {name: logged.data.metrics[name] for name in kept} == pytest.approx(kept)
        assert {a.path for a in client.list_artifacts(logged.info.run_id)} == ARTIFACTS
    finally:
        stop_server(server)


# --- The response cache cannot be written mid-job ---


def cached_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {key for (key,) in db.execute("SELECT key FROM responses")}


def test_a_cache_that_cannot_be_written_stops_the_job_and_keeps_what_was_stored(tmp_path, paper_csv, freezer):
    """The cache file (and its WAL) made immutable after two answers were stored: the next answer cannot be
    written, the job stops at once with one line, and every answer stored before is still there and used."""
    cache = tmp_path / "cache.sqlite"
    stored_before: set[str] = set()

    with FakeOpenAIServer() as server:
        def freeze_after_two(count=[0]) -> None:  # re-armed until the third request arrives
            count[0] += 1
            if count[0] < 3:
                server.on_first_chat = freeze_after_two
                return
            stored_before.update(cached_keys(cache))
            freezer(cache, cache.with_name(cache.name + "-wal"))

        server.on_first_chat = freeze_after_two
        # one request at a time, one sample per request: 2 questions x 3 samples = 6 requests when nothing fails
        cfg = job_cfg(server.base_url, paper_csv, tmp_path, "concurrency=1", "model.n_per_request=1")
        with pytest.raises(CacheError) as raised:
            run_job(cfg, CHOICES, job_dir=tmp_path / "job")
        # stopped at once: the third answer could not be stored; the one request that may have been sent while
        # it was being stored (concurrency=1 releases its place before the answer is stored) was cancelled
        first = server.stats.requests
        assert 3 <= first <= 4
        message = one_line(raised)
        assert message.startswith(f"the response cache {cache} failed while storing answers (")
        assert "every answer stored before is kept" in message
        for path in (cache, cache.with_name(cache.name + "-wal")):
            chattr("-i", path)
        assert len(stored_before) == 2 and cached_keys(cache) == stored_before  # both answers received before, kept
        result = run_job(cfg, CHOICES, job_dir=tmp_path / "again")  # the same command, the cache fixed
        assert result.usage["model"].cache_hits == 2 and server.stats.requests == first + 4
    assert len(cached_keys(cache)) == 6
