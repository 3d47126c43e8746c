"""`culturealign-ui`: the server command, and a helper that runs it. The server itself is started on the
mini sweep's store in test_report.py (a store costs seconds to create)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from culturealign.errors import ReportError
from culturealign.report.ui import server_command

UI_SCRIPT = "import sys; from culturealign.report.cli import ui_main; sys.exit(ui_main())"  # the console script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_ui(uri: str, cwd) -> tuple[subprocess.Popen, str]:
    """`culturealign-ui` on a free port, in a process group of its own (the server forks a worker)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", UI_SCRIPT, "--tracking-uri", uri, "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def stop_ui(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_ui_command_is_light_and_local(tmp_path):
    database = tmp_path / "mlruns" / "mlflow.db"
    database.parent.mkdir()
    database.touch()
    uri = f"sqlite:///{database}"
    command = server_command(uri, 5001)
    assert command[1:4] == ["-m", "mlflow", "server"]
    options = dict(zip(command[4::2], command[5::2]))
    assert options["--host"] == "127.0.0.1" and options["--workers"] == "1" and options["--port"] == "5001"
    assert options["--default-artifact-root"] == (tmp_path / "mlruns" / "artifacts").as_uri()
    with pytest.raises(ReportError, match="no MLflow store"):
        server_command(f"sqlite:///{tmp_path / 'elsewhere.db'}", 5000)
    with pytest.raises(ReportError, match="already a tracking server"):
        server_command("http://127.0.0.1:5000", 5000)
