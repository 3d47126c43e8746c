"""`culturealign-ui`: the MLflow UI on our store, bound to 127.0.0.1, light enough for a laptop.

One server worker and no job-execution workers (~0.5 GB instead of ~3 GB with mlflow's defaults). A bare
`mlflow ui` would open ./mlflow.db, not the store culturealign writes to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from culturealign.errors import ReportError

HOST = "127.0.0.1"


def server_command(tracking_uri: str, port: int) -> list[str]:
    if tracking_uri.startswith(("http://", "https://")):
        raise ReportError(f"{tracking_uri} is already a tracking server: open it in a browser")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///") :])
        if not database.is_file():
            raise ReportError(
                f"no MLflow store at {tracking_uri}; run from the folder where culturealign ran, "
                "or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
            )
        # Experiments made through the UI keep their artifacts where culturealign puts them.
        artifacts = (database.resolve().parent / "artifacts").as_uri()
        command += ["--default-artifact-root", artifacts, "--no-serve-artifacts"]
    return command


def server_environment() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def serve(tracking_uri: str, port: int) -> None:
    """Replace this process by the server (Ctrl-C stops it directly)."""
    command = server_command(tracking_uri, port)
    print(f"MLflow UI for {tracking_uri} at http://{HOST}:{port} (Ctrl-C stops it)", flush=True)
    os.execve(command[0], command, server_environment())
