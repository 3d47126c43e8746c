"""A sweep logging to a shared MLflow tracking server over HTTP (as on a cluster), read back over HTTP."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from tests.fake_openai import FakeOpenAIServer
from tests.jobs import small_sweep
from tests.sweep_runs import parent_and_children, responses

STARTUP_SECONDS = 90  # a fresh SQLite store is migrated at start: ~20 s on 2 cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"mlflow server not healthy after {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def start_server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server` as a lab runs it: SQLite backend in `folder`, artifacts proxied by the server; healthy."""
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = folder / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("a") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, log)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, 15)  # the server forks uvicorn workers: stop the whole group it leads
        server.wait(60)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    server = start_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}", folder
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def remote_sweep(tracking_server, tmp_path_factory, paper_csv):
    url, _ = tracking_server
    workdir = tmp_path_factory.mktemp("remote_sweep")
    with FakeOpenAIServer() as model_server:
        result = small_sweep(
            model_server.base_url, paper_csv, workdir, "country=us,japan", "mlflow.tracking_uri=" + url
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return mlflow.MlflowClient(url), workdir


def test_sweep_lands_on_the_server_as_parent_and_children(remote_sweep):
    client, workdir = remote_sweep
    parent, children = parent_and_children(client)
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.params["country"] for r in children) == ["japan", "us"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["n_responses"] == 6 and 0 <= run.data.metrics["wasserstein_similarity"] <= 1
        assert run.data.params["samples"] == "3"
    assert not (workdir / "mlruns").exists(), "nothing may be logged locally when a server is set"


def test_artifacts_are_stored_by_the_server(remote_sweep, tracking_server, tmp_path):
    client, _ = remote_sweep
    _, server_folder = tracking_server
    _, children = parent_and_children(client)
    for run in children:
        logged = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "distributions.json", "responses.jsonl"} <= logged
        assert len(responses(client, run.info.run_id, tmp_path / run.info.run_id)) == 6
    assert len(list((server_folder / "artifacts").rglob("responses.jsonl"))) == 2
