"""The sweep's side of a multirun: one parent run before any job starts, closed when all have ended, then
the report; for a dry sweep, the sum of the jobs' estimates. Runs in the launching process, so parallel
workers never race on creating the MLflow store, the experiment or the parent run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from culturealign.errors import TrackingError
from culturealign.spec import TrackingSpec
from culturealign.tracking import store
from culturealign.tracking.names import DRY_RUN_FILE, REPORT_ARTIFACT_DIR

log = logging.getLogger("culturealign")


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.dry_run:
            return
        overrides = " ".join(config.hydra.overrides.task)
        parent_id = store.open_sweep(_tracking(config), Path(config.hydra.sweep.dir), overrides)
        log.info(f"MLflow parent run {parent_id} in experiment {config.mlflow.experiment_name!r}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Hydra skips on_multirun_end once a job has failed (bad input included), which would leave the
        sweep RUNNING: mark it FAILED as soon as one of its jobs fails."""
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        parent_id = store.parent_run_id(Path(config.hydra.sweep.dir))
        if parent_id is None:
            return
        try:
            store.close_sweep(_tracking(config), parent_id, failed=True)
        except TrackingError:
            pass  # the job failed on this very error, and reports it

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.dry_run:
            print_dry_run_total(sweep_dir)
            return
        parent_id = store.parent_run_id(sweep_dir)
        if parent_id is None:
            return
        store.close_sweep(_tracking(config), parent_id)
        report_sweep(config.mlflow.tracking_uri, parent_id, sweep_dir / REPORT_ARTIFACT_DIR)


def _tracking(config: DictConfig) -> TrackingSpec:
    return TrackingSpec(**OmegaConf.to_container(config.mlflow, resolve=True))


def report_sweep(tracking_uri: str, parent_id: str, folder: Path) -> None:
    """Table 1 and the rest of the report at the end of a sweep; a report that fails never fails the sweep."""
    try:
        from culturealign.report.build import build_report

        report = build_report(tracking_uri, parent_id=parent_id, folder=folder)
    except Exception as error:  # noqa: BLE001 - the runs are safe in MLflow; the report can be rebuilt
        log.warning(f"no report for sweep {parent_id} ({error}); build it with: culturealign-report --parent-run {parent_id}")
        return
    print(report.markdown, flush=True)
    log.info(f"report in {folder} and in run {parent_id} under {REPORT_ARTIFACT_DIR}/")


def print_dry_run_total(sweep_dir: Path) -> None:
    from culturealign.planning import JobPlan, total

    plans = [JobPlan.from_dict(json.loads(p.read_text())) for p in sorted(sweep_dir.rglob(DRY_RUN_FILE))]
    print(total(plans).describe(f"sweep total ({len(plans)} jobs)"), flush=True)
