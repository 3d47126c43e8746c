"""`culturealign-ui`: the MLflow UI on our store, bound to 127.0.0.1, light enough for a laptop, and links
that open the latest sweep: its runs table and its parent run's report.

One server worker and no job-execution workers (~0.5 GB instead of ~3 GB with mlflow's defaults). A bare
`mlflow ui` would open ./mlflow.db, not the store culturealign writes to.

MLflow 3.17's UI opens an experiment on its GenAI overview unless the address says
`workflowType=machine_learning` (the sidebar's "Model training" switch; it ignores the experiment's
`mlflow.experimentKind` tag), so the links carry it.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
from pathlib import Path

from culturealign.errors import ReportError
from culturealign.tracking import names

HOST = "127.0.0.1"
REPORT_PAGE = "report/table1.txt"


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


def check_port_free(port: int) -> None:
    """The server would log a traceback and leave this command's exit code to chance: a taken port is one line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise ReportError(f"cannot serve on {HOST}:{port} ({error.strerror or error}); pass a free --port") from None


def server_environment() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def sweep_links(base: str, experiment_id: str, parent_id: str, shared_view: bool) -> dict[str, str]:
    """The sweep's runs table (its child runs, headline columns) and its parent run's report page."""
    if shared_view:  # saved by the sweep: columns chosen, children listed flat
        query = {"viewStateShareKey": parent_id}
    else:  # a sweep from before the view was saved: the same runs, MLflow's default columns
        query = {"searchFilter": f"tags.`{names.PARENT_TAG}` = '{parent_id}'",
                 "orderByKey": f"metrics.`{names.SIMILARITY}`", "orderByAsc": "false"}  # fmt: skip
    query["workflowType"] = "machine_learning"
    runs = f"{base}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"
    report = f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/{REPORT_PAGE}?workflowType=machine_learning"
    return {"runs table": runs, "report": report}


def latest_links(tracking_uri: str, experiment: str, base: str) -> dict[str, str]:
    """Links for the experiment's latest sweep; the experiment's runs table when it has none."""
    from culturealign.report.runs import latest_sweep_id, open_client

    client = open_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    try:
        parent_id = latest_sweep_id(client, experiment)
    except ReportError:  # single runs only
        return {"runs table": f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"}
    shared = f"{names.SHARED_VIEW_TAG_PREFIX}{parent_id}" in found.tags
    return sweep_links(base, found.experiment_id, parent_id, shared)


def serve(tracking_uri: str, port: int, experiment: str = "culturealign") -> None:
    """Print where to look, then replace this process by the server (Ctrl-C stops it directly)."""
    command = server_command(tracking_uri, port)
    check_port_free(port)
    base = f"http://{HOST}:{port}"
    try:
        links = latest_links(tracking_uri, experiment, base)
    except ReportError:
        raise
    except Exception as error:  # noqa: BLE001 - not a store MLflow can read: the server could not serve it
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ReportError(f"cannot read the MLflow store at {tracking_uri} ({reason}); pass --tracking-uri") from None
    print(f"MLflow UI for {tracking_uri} at {base} (Ctrl-C stops it)", flush=True)
    for what, url in links.items():
        print(f"  latest sweep, {what}: {url}", flush=True)
    os.execve(command[0], command, server_environment())
