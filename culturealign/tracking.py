"""The one seam between Hydra and MLflow.

A multirun gets one parent run, created once in the launching process by `SweepCallback` (so parallel
workers never race on creating the store, the experiment or the parent); its id is left in the sweep
folder, where every job finds it and files its own run as a child. A single run is a run of its own.

A process killed with SIGKILL leaves its run RUNNING. Each run carries a `culturealign.job_key` tag (a
hash of the job's resolved config, or of a sweep's overrides); when the same job starts again, earlier
runs with its key still RUNNING are marked KILLED, so the UI shows them as interrupted, not as live.
(Two identical jobs started at the same moment would mark each other; the survivor still ends FINISHED.)
Dry runs (`dry_run=true`) create no run at all; a dry sweep prints the sum of its jobs' estimates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from culturealign.errors import TrackingError
from culturealign.reachability import unreachable_reason

log = logging.getLogger("culturealign")
PARENT_RUN_FILE = ".mlflow_parent_run_id"
DRY_RUN_FILE = "dry_run.json"
TAG_PREFIX = "culturealign."
MAX_LOGGED_CHARS = 20_000  # longer model / judge outputs are cut in responses.jsonl, with a note
CLIPPED_FIELDS = ("response", "judge_output")
JOB_KEY_TAG = f"{TAG_PREFIX}job_key"


def _mlflow():
    import mlflow  # heavy (~1 s): imported only when tracking starts

    return mlflow


def open_experiment(tracking_uri: str, experiment_name: str):
    """(client, experiment id), creating the SQLite store folder and the experiment if needed."""
    if tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    mlflow = _mlflow()
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri[len("sqlite:///") :])
        db_path.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db_path.parent.resolve() / "artifacts").as_uri()
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            return client, experiment.experiment_id
        try:
            return client, client.create_experiment(experiment_name, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            return client, client.get_experiment_by_name(experiment_name).experiment_id
    except Exception as error:  # mlflow raises many kinds for a bad URI: all mean the same to the user
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise TrackingError(
            f"cannot open MLflow at {tracking_uri!r} ({message}); check mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        ) from None


def _check_server(tracking_uri: str) -> None:
    """MLflow retries an unreachable server for minutes; a closed port should fail the job at once."""
    reason = unreachable_reason(tracking_uri)
    if reason:
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} is unreachable: {reason}; start it (see README, "
            "'Share one MLflow tracking server') or fix mlflow.tracking_uri / MLFLOW_TRACKING_URI"
        )


class SweepCallback(Callback):
    """Creates the sweep's parent run before any job starts and closes it when all have ended."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("dry_run"):
            return
        client, experiment_id = open_experiment(config.mlflow.tracking_uri, config.mlflow.experiment_name)
        sweep_dir = Path(config.hydra.sweep.dir)
        key = _hash(" ".join(config.hydra.overrides.task))
        mark_interrupted(client, experiment_id, key)
        run = client.create_run(
            experiment_id,
            run_name=f"sweep-{sweep_dir.name}",
            tags={f"{TAG_PREFIX}kind": "sweep", f"{TAG_PREFIX}sweep_dir": str(sweep_dir.resolve()), JOB_KEY_TAG: key},
        )
        client.log_batch(run.info.run_id, params=_params({"sweep.overrides": " ".join(config.hydra.overrides.task)}))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
        log.info(f"MLflow parent run {run.info.run_id} in experiment {config.mlflow.experiment_name!r}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Hydra skips on_multirun_end once a job has failed (bad input included), which would leave the
        sweep RUNNING: mark it FAILED as soon as one of its jobs fails."""
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        parent_id = parent_run_id(Path(config.hydra.sweep.dir))
        if parent_id is None:
            return
        try:
            client, _ = open_experiment(config.mlflow.tracking_uri, config.mlflow.experiment_name)
        except TrackingError:
            return  # the job failed on this very error, and reports it
        client.set_terminated(parent_id, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("dry_run"):
            print_dry_run_total(Path(config.hydra.sweep.dir))
            return
        parent_id = parent_run_id(Path(config.hydra.sweep.dir))
        if parent_id is None:
            return
        client, _ = open_experiment(config.mlflow.tracking_uri, config.mlflow.experiment_name)
        children = child_runs(client, parent_id)
        failed = [r for r in children if r.info.status != "FINISHED"]
        client.set_terminated(parent_id, status="FAILED" if failed else "FINISHED")
        report_sweep(config.mlflow.tracking_uri, parent_id, Path(config.hydra.sweep.dir) / "report")


def report_sweep(tracking_uri: str, parent_id: str, folder: Path) -> None:
    """Table 1 and the rest of the report at the end of a sweep; a report that fails never fails the sweep."""
    try:
        from culturealign.report.build import build_report

        report = build_report(tracking_uri, parent_id=parent_id, folder=folder)
    except Exception as error:  # noqa: BLE001 - the runs are safe in MLflow; the report can be rebuilt
        log.warning(f"no report for sweep {parent_id} ({error}); build it with: culturealign-report --parent-run {parent_id}")
        return
    print(report.markdown, flush=True)
    log.info(f"report in {folder} and in run {parent_id} under report/")


def print_dry_run_total(sweep_dir: Path) -> None:
    from culturealign.planning import JobPlan, total  # the planner imports the whole pipeline

    plans = [JobPlan.from_dict(json.loads(p.read_text())) for p in sorted(sweep_dir.rglob(DRY_RUN_FILE))]
    print(total(plans).describe(f"sweep total ({len(plans)} jobs)"), flush=True)


def mark_interrupted(client, experiment_id: str, key: str) -> None:
    """Earlier runs of the same job still RUNNING were killed (SIGKILL leaves no chance to say so)."""
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.`{JOB_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'"
    )
    for run in stale:
        client.set_tag(run.info.run_id, f"{TAG_PREFIX}error", "interrupted: the process ended without closing the run")
        client.set_terminated(run.info.run_id, "KILLED")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parent_run_id(sweep_dir: Path) -> str | None:
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


def child_runs(client, parent_id: str) -> list:
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000
    )


class JobRun:
    """One job's MLflow run: created before any request (so a bad URI fails fast), FINISHED on success,
    FAILED with the error as a tag otherwise. A killed process leaves it RUNNING, never FINISHED."""

    def __init__(self, cfg: DictConfig, choices: dict[str, str], sweep_dir: Path | None):
        self.client, experiment_id = open_experiment(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
        tags = {f"{TAG_PREFIX}{group}": str(choice) for group, choice in choices.items() if choice is not None}
        parent = parent_run_id(sweep_dir) if sweep_dir is not None else None
        if parent:
            tags["mlflow.parentRunId"] = parent
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
        tags[JOB_KEY_TAG] = _hash(resolved)
        mark_interrupted(self.client, experiment_id, tags[JOB_KEY_TAG])
        name = "-".join(str(choices.get(g)) for g in ("country", "style", "model") if choices.get(g))
        self.run = self.client.create_run(experiment_id, run_name=name or None, tags=tags)
        self.run_id = self.run.info.run_id
        self.experiment_id = experiment_id
        self.client.log_batch(self.run_id, params=_params(job_params(cfg, choices)))
        self.client.log_text(self.run_id, resolved, "config.yaml")

    def __enter__(self) -> "JobRun":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.client.set_terminated(self.run_id, "FINISHED")
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        message = str(error).splitlines()[0][:500] if str(error) else type(error).__name__
        self.client.set_tag(self.run_id, f"{TAG_PREFIX}error", message)
        self.client.set_terminated(self.run_id, status)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        mlflow = _mlflow()
        finite = {k: float(v) for k, v in metrics.items() if v is not None and not math.isinf(float(v))}
        batch = [mlflow.entities.Metric(k, v, now, 0) for k, v in finite.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_json(self, data: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=1, ensure_ascii=False), name)

    def log_jsonl(self, rows: list[dict], name: str) -> None:
        self.client.log_text(self.run_id, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), name)

    def url_hint(self, tracking_uri: str) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} ({tracking_uri})"


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


def job_params(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {group: choice for group, choice in choices.items() if not group.startswith("hydra")}
    for group in ("model", "judge"):
        for key, value in cfg[group].items():
            if not isinstance(value, (list, dict, DictConfig)) and not key.startswith("_"):
                params[f"{group}.{key}"] = value
    for key in ("samples", "seed", "concurrency", "estimator"):
        params[key] = cfg[key]
    for key in ("path", "limit", "n_options", "countries"):
        params[f"dataset.{key}"] = cfg.dataset[key]
    params["bootstrap.resamples"] = cfg.bootstrap.resamples
    params["bootstrap.confidence"] = cfg.bootstrap.confidence
    params["bootstrap.method"] = cfg.bootstrap.method
    return params


def _params(values: dict[str, Any]):
    mlflow = _mlflow()
    return [mlflow.entities.Param(key, str(value)[:6000]) for key, value in values.items()]
