"""The sweep's side of a multirun: one parent run before any job starts, closed when all have ended, then
the report; for a dry sweep, the sum of the jobs' estimates. Runs in the launching process, so parallel
workers never race on creating the MLflow store, the experiment or the parent run."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from culturealign.app.context import SweepPlan, override_values
from culturealign.errors import ConfigError, CultureAlignError, TrackingError
from culturealign.spec import TrackingSpec
from culturealign.tracking import names, store
from culturealign.tracking.names import DRY_RUN_FILE, REPORT_ARTIFACT_DIR, SWEEP_LOCK_FILE

log = logging.getLogger("culturealign")
SHOWN_METRICS = (names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH, names.UNCLASSIFIABLE_RATE,
                 names.N_SCORED_QUESTIONS)  # fmt: skip


def _sweeper_params(config: DictConfig) -> dict[str, str]:
    params = OmegaConf.select(config, "hydra.sweeper.params")
    return {str(k): str(v) for k, v in params.items()} if params else {}


class SweepCallback(Callback):
    def __init__(self) -> None:
        self._held = contextlib.ExitStack()  # the sweep folder's lock, held until the sweep ends

    def __getstate__(self) -> dict:
        """Launchers (joblib, submitit) pickle the callbacks with each job: the lock stays here."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra only warns about an exception in a callback and goes on with the jobs: a sweep that must
        not start (its folder in use, MLflow unreachable) prints one line and exits instead."""
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            self._lock_folder(sweep_dir)
            if config.dry_run:
                return
            plan = SweepPlan.of(_sweeper_params(config), list(config.hydra.overrides.task))
            plan.save(sweep_dir)
            overrides = " ".join(config.hydra.overrides.task)
            tags = {**plan.tags, names.COMMAND_TAG: plan.command, names.SWEPT_TAG: ",".join(plan.swept)}
            models = "several models" if {"model", "model.name"} & set(plan.swept) else config.model.name
            name = f"{models}: {plan.describe()} {sweep_dir.name}"
            columns = (plan.swept, list(SHOWN_METRICS))  # the swept keys are params of the child runs
            _, parent_id = store.open_sweep(_tracking(config), sweep_dir, overrides, name, tags, columns)
        except CultureAlignError as error:
            print(f"culturealign: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        log.info(f"MLflow parent run {parent_id} in experiment {config.mlflow.experiment_name!r}: {name}")
        JobEcho.install(plan)

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

    def _lock_folder(self, sweep_dir: Path) -> None:
        """Two sweeps in one folder would share a parent run and mix their jobs: the second is refused."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._held.enter_context(store.file_lock(sweep_dir / SWEEP_LOCK_FILE, blocking=False))
        except BlockingIOError:
            raise ConfigError(
                f"another sweep is running in {sweep_dir} (started in the same second?); wait for it, or give "
                "this one its own folder: hydra.sweep.dir=outputs/multirun/<name>"
            ) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._end(config)
        finally:
            self._held.close()

    def _end(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.dry_run:
            print_dry_run_total(sweep_dir)
            return
        parent_id = store.parent_run_id(sweep_dir)
        if parent_id is None:
            return
        store.close_sweep(_tracking(config), parent_id)
        report_sweep(config.mlflow.tracking_uri, parent_id, sweep_dir / REPORT_ARTIFACT_DIR)


class JobEcho(logging.Filter):
    """Hydra's launchers echo each job's whole override list (`#0 : country=us style=cot model=...
    model.base_url=http\\://...`); shown instead: `job 1 of 12: country=us style=cot`, the swept values.
    Joblib's line of all its settings becomes `Launching 12 jobs with joblib, 2 at a time`."""

    LAUNCHER_LOGGERS = (
        "hydra._internal.core_plugins.basic_launcher",
        "hydra_plugins.hydra_joblib_launcher._core",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    )
    ECHO = re.compile(r"^\t#(\d+) : (.*)$", re.DOTALL)
    JOBLIB = re.compile(r"^Joblib\.Parallel\(.*\bn_jobs=([^,]*),.*\) is launching (\d+) jobs$")

    def __init__(self, plan: SweepPlan) -> None:
        super().__init__()
        self.plan = plan

    @classmethod
    def install(cls, plan: SweepPlan) -> None:
        for name in cls.LAUNCHER_LOGGERS:
            logger = logging.getLogger(name)
            for old in [f for f in logger.filters if isinstance(f, cls)]:
                logger.removeFilter(old)
            logger.addFilter(cls(plan))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if match := self.ECHO.match(message):
            record.msg, record.args = self.shorten(int(match.group(1)), match.group(2)), ()
        elif match := self.JOBLIB.match(message):  # joblib's whole settings line
            record.msg, record.args = f"Launching {match.group(2)} jobs with joblib, {match.group(1)} at a time", ()
        return True

    def shorten(self, index: int, overrides: str) -> str:
        values = override_values(re.split(r"(?<!\\) ", overrides))
        swept = " ".join(f"{key}={values[key]}" for key in self.plan.swept if key in values)
        total = f" of {self.plan.n_jobs}" if self.plan.n_jobs is not None else ""
        return f"job {index + 1}{total}: {swept or overrides}"


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
    print(report.text, flush=True)
    log.info(f"report in {folder} and in run {parent_id} under {REPORT_ARTIFACT_DIR}/")


def print_dry_run_total(sweep_dir: Path) -> None:
    from culturealign.planning import JobPlan, total

    plans = [JobPlan.from_dict(json.loads(p.read_text())) for p in sorted(sweep_dir.rglob(DRY_RUN_FILE))]
    print(total(plans).describe(f"sweep total ({len(plans)} jobs)"), flush=True)
