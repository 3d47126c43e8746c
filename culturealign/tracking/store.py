"""Runs in MLflow: the store and experiment, a sweep's parent run, one job's run. Knows nothing of Hydra
or of the pipeline: callers hand it names (from `names`), values and texts.

A multirun gets one parent run, created once in the launching process (so parallel workers never race on
creating the store, the experiment or the parent); its id is left in the sweep folder, where every job
finds it and files its own run as a child. A single run is a run of its own.

A process killed with SIGKILL leaves its run RUNNING. Each run carries a `culturealign.job_key` tag (a
hash of the job's resolved config, or of a sweep's overrides); when the same job starts again, earlier
runs with its key still RUNNING are marked KILLED, so the UI shows them as interrupted, not as live.
(Two identical jobs started at the same moment would mark each other; the survivor still ends FINISHED.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from culturealign.errors import TrackingError
from culturealign.reachability import unreachable_reason
from culturealign.redaction import redact
from culturealign.spec import TrackingSpec
from culturealign.tracking.names import (
    CONFIG_ARTIFACT,
    DATASET_CONTEXT,
    ERROR_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    INTERRUPTED,
    JOB_KEY_TAG,
    KIND_TAG,
    PARENT_RUN_FILE,
    PARENT_TAG,
    SHARED_VIEW_TAG_PREFIX,
    SWEEP_DIR_TAG,
    SWEEP_KIND,
    SWEEP_OVERRIDES_PARAM,
)

log = logging.getLogger("culturealign")
MAX_LOGGED_CHARS = 20_000  # longer model / judge outputs are cut in responses.jsonl, with a note
CLIPPED_FIELDS = ("prompt", "response", "judge_output")


def _mlflow():
    import mlflow  # heavy (~1 s): imported only when tracking starts

    quiet_mlflow()
    return mlflow


def quiet_mlflow() -> None:
    """MLflow and its migrations log store creation at INFO ("Creating initial MLflow database tables..."):
    noise on a researcher's terminal. Warnings and errors still show."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A database error is logged here over several lines, then raised: we say it in one line (TrackingError).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def open_experiment(tracking_uri: str, experiment_name: str):
    """(client, experiment id), creating the SQLite store folder and the experiment if needed."""
    if tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    mlflow = _mlflow()
    artifact_location, lock = None, contextlib.nullcontext()
    local = tracking_uri.startswith("sqlite:///")
    if local:
        db_path = Path(tracking_uri[len("sqlite:///") :])
        db_path.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db_path.parent.resolve() / "artifacts").as_uri()
        lock = file_lock(db_path.with_name(db_path.name + ".lock"))  # a fresh store: one creator at a time
    try:
        with lock:
            return _experiment(mlflow, tracking_uri, experiment_name, artifact_location, local)
    except Exception as error:  # mlflow raises many kinds for a bad URI: all mean the same to the user
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise TrackingError(
            f"cannot open MLflow at {tracking_uri!r} ({message}); check mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        ) from None


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True):
    """An exclusive lock on `path` across processes (released when the holder exits, even if killed)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment(mlflow, tracking_uri: str, experiment_name: str, artifact_location: str | None, local: bool):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return client, experiment.experiment_id
    try:
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location, tags=tags)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another process (an http store)
        return client, client.get_experiment_by_name(experiment_name).experiment_id
    if local:
        hide_empty_default_experiment(client)
    return client, experiment_id


def hide_empty_default_experiment(client) -> None:
    """MLflow creates an experiment "Default" in every new store; in ours it stays empty and would be the
    first thing the UI lists. Deleted (MLflow keeps it in the trash), never when it holds a run. Only for
    local SQLite stores: a shared server's experiments are not ours to touch."""
    default = client.get_experiment_by_name("Default")
    if default is None or default.lifecycle_stage != "active":
        return
    if client.search_runs([default.experiment_id], max_results=1, run_view_type=_mlflow().entities.ViewType.ALL):
        return
    try:
        client.delete_experiment(default.experiment_id)
    except Exception:  # noqa: BLE001 - deleted meanwhile by another job of the sweep
        pass


def _check_server(tracking_uri: str) -> None:
    """MLflow retries an unreachable server for minutes; a closed port should fail the job at once."""
    reason = unreachable_reason(tracking_uri)
    if reason:
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} is unreachable: {reason}; start it (see README, "
            "'Share one MLflow tracking server') or fix mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        )


def open_sweep(
    tracking: TrackingSpec, sweep_dir: Path, overrides: str, name: str | None = None, tags: dict[str, str] | None = None,
    columns: tuple[list[str], list[str]] = ([], []),
) -> tuple[str, str]:  # fmt: skip
    """Create a sweep's parent run (marking an earlier, killed run of the same sweep KILLED), leave its id in
    the sweep folder for the jobs, and save a UI view of its child runs showing `columns` (params, metrics).
    Returns (experiment id, parent run id)."""
    client, experiment_id = open_experiment(tracking.tracking_uri, tracking.experiment_name)
    key = job_key(overrides)
    mark_interrupted(client, experiment_id, key)
    tags = {**_redacted(tags or {}), KIND_TAG: SWEEP_KIND, SWEEP_DIR_TAG: str(sweep_dir.resolve()), JOB_KEY_TAG: key}
    run = client.create_run(experiment_id, run_name=name or f"sweep-{sweep_dir.name}", tags=tags)
    client.log_batch(run.info.run_id, params=_params({SWEEP_OVERRIDES_PARAM: overrides}))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + run.info.run_id, sweep_view(run.info.run_id, *columns))
    return experiment_id, run.info.run_id


def sweep_view(parent_id: str, params: list[str], metrics: list[str]) -> str:
    """The MLflow UI's shared view state (`#/experiments/<id>/runs?viewStateShareKey=<parent id>`): the
    sweep's child runs, best aligned first, with the given params and then metrics as the first columns (the
    dataset and git commit, the same for every job, are on each run's page). A search filter also lists
    the children flat instead of folded under the parent."""
    columns = [f"params.`{name}`" for name in params] + [f"metrics.`{name}`" for name in metrics]
    state = {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_id}'",
        "orderByKey": f"metrics.`{metrics[0]}`" if metrics else "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
    }
    return json.dumps(state)


def close_sweep(tracking: TrackingSpec, parent_id: str, failed: bool | None = None) -> None:
    """FAILED when a job failed (`failed`, or judged from the children when None), else FINISHED."""
    client, _ = open_experiment(tracking.tracking_uri, tracking.experiment_name)
    try:
        if failed is None:
            failed = any(r.info.status != "FINISHED" for r in child_runs(client, parent_id))
        client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    except Exception as error:  # noqa: BLE001 - the store failed mid-sweep: one line, the job folders keep the results
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise TrackingError(
            f"MLflow at {tracking.tracking_uri} failed while closing the sweep's parent run {parent_id} ({redact(reason)}); "
            "each finished job's folder keeps its results: log them with `culturealign-log <job folder>`"
        ) from None


def mark_interrupted(client, experiment_id: str, key: str) -> None:
    """Earlier runs of the same job still RUNNING were killed (SIGKILL leaves no chance to say so)."""
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.`{JOB_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'"
    )
    for run in stale:
        client.set_tag(run.info.run_id, ERROR_TAG, INTERRUPTED)
        client.set_terminated(run.info.run_id, "KILLED")


def job_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parent_run_id(sweep_dir: Path) -> str | None:
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


def child_runs(client, parent_id: str) -> list:
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=10000
    )


class JobRun:
    """One job's MLflow run: created before any request (so a bad URI fails fast), FINISHED on success,
    FAILED with the error as a tag otherwise, KILLED on Ctrl-C. A killed process leaves it RUNNING; the
    next run of the same job (same `key`) marks it KILLED."""

    def __init__(
        self, tracking: TrackingSpec, name: str, key: str, tags: dict[str, str], params: dict[str, Any], config_text: str,
        sweep_dir: Path | None = None, parent: str | None = None,
    ) -> None:  # fmt: skip
        self.client, self.experiment_id = open_experiment(tracking.tracking_uri, tracking.experiment_name)
        self.tracking_uri = tracking.tracking_uri
        self.keep_hint = ""  # where the results are kept when the store fails (said in the error)
        tags = {**_redacted(tags), JOB_KEY_TAG: key}
        parent = parent or (parent_run_id(sweep_dir) if sweep_dir is not None else None)
        if parent:
            tags[PARENT_TAG] = parent
        mark_interrupted(self.client, self.experiment_id, key)
        self.run_id = self.client.create_run(self.experiment_id, run_name=name or None, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=_params(params))
        self.client.log_text(self.run_id, config_text, CONFIG_ARTIFACT)

    def __enter__(self) -> "JobRun":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.check_reachable()
            try:
                self.client.set_terminated(self.run_id, "FINISHED")
            except Exception as lost:  # noqa: BLE001 - any store failure: one line
                raise self.lost(lost) from None
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        message = str(error).splitlines()[0][:500] if str(error) else type(error).__name__
        try:  # the job's own error is what the user must see, even when the store is gone too
            self.check_reachable()
            self.client.set_tag(self.run_id, ERROR_TAG, redact(message))
            self.client.set_terminated(self.run_id, status)
        except Exception:  # noqa: BLE001
            log.debug(f"could not mark run {self.run_id} {status} in {self.tracking_uri}")

    def check_reachable(self) -> None:
        """A tracking server that went away mid-job: fail at once (MLflow would retry for minutes)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            reason = unreachable_reason(self.tracking_uri)
            if reason:
                raise self.lost(TrackingError(reason))

    def lost(self, error: BaseException) -> TrackingError:
        """The store failed after the run was created: one line (the job folder keeps the results)."""
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        return TrackingError(
            f"MLflow at {self.tracking_uri} failed after run {self.run_id} was created ({redact(reason)}){self.keep_hint}"
        )

    def log_metrics(self, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        mlflow = _mlflow()
        finite = {k: float(v) for k, v in metrics.items() if v is not None and not math.isinf(float(v))}
        batch = [mlflow.entities.Metric(k, v, now, 0) for k, v in finite.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_series(self, name: str, values: list[float]) -> None:
        """One metric with a step per value (the MLflow UI draws it over steps)."""
        now = int(time.time() * 1000)
        metric = _mlflow().entities.Metric
        if values:
            self.client.log_batch(self.run_id, metrics=[metric(name, float(v), now, step) for step, v in enumerate(values)])

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, redact(text), name)

    def log_table(self, rows: list[dict], name: str) -> None:
        """Rows as an MLflow table artifact: the run page shows it as a table, not as text."""
        import pandas as pd

        clean = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        self.client.log_table(self.run_id, pd.DataFrame(clean), name)

    def log_dataset(self, name: str, digest: str, source: str, profile: dict[str, Any]) -> None:
        """The question set as the run's dataset input (MLflow's Dataset column and run page show it)."""
        entities = _mlflow().entities
        remote = source.startswith(("http://", "https://"))
        source_type, location = ("http", {"url": source}) if remote else ("local", {"uri": source})
        dataset = entities.Dataset(name, digest, source_type, json.dumps(location), profile=json.dumps(profile))
        context = entities.InputTag("mlflow.data.context", DATASET_CONTEXT)
        self.client.log_inputs(self.run_id, [entities.DatasetInput(dataset, [context])])

    def url_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} ({self.tracking_uri})"


def clip_record(record: dict, limit: int = MAX_LOGGED_CHARS) -> dict:
    """A response record fit for logging: overlong texts keep their first `limit` characters and say so."""
    clipped = dict(record)
    for field in CLIPPED_FIELDS:
        text = record.get(field)
        if isinstance(text, str) and len(text) > limit:
            clipped[field] = text[:limit]
            clipped[f"{field}_truncated"] = True
            clipped[f"{field}_chars"] = len(text)
    return clipped


def _redacted(tags: dict[str, str]) -> dict[str, str]:
    """Tags as logged: a key that reached a command line or a name is cut out."""
    return {key: redact(str(value)) for key, value in tags.items()}


def _params(values: dict[str, Any]):
    mlflow = _mlflow()
    return [mlflow.entities.Param(key, redact(str(value))[:6000]) for key, value in values.items()]
