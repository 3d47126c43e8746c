"""`culturealign` / `python -m culturealign`: one Hydra entry point for single runs and `--multirun` sweeps.

The composed config becomes a validated `JobSpec` here, before MLflow opens (so a bad config, or a secret
in it, is never logged) and before any request; nothing below this layer sees Hydra.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from culturealign import pipeline, planning, progress
from culturealign.app import context, record, schema
from culturealign.errors import CultureAlignError, NothingMeasured
from culturealign.redaction import redact
from culturealign.pipeline import RunResult
from culturealign.tracking.names import DRY_RUN_FILE

schema.register()
FULL_ERROR = "HYDRA_FULL_ERROR"
# Errors in what the user typed or runs against; anything else is a bug and keeps its traceback.
USER_ERRORS = (CultureAlignError, HydraException, OmegaConfBaseException)


def run_job(
    cfg: DictConfig, choices: dict[str, str], sweep_dir: Path | None = None, job_dir: Path | None = None,
    origin: record.Origin | None = None,
) -> RunResult:  # fmt: skip
    """Run one job and track it in MLflow (the run exists before the first request); `job_dir`, the job's
    output folder, keeps the result files too."""
    job = pipeline.prepare(schema.job_spec(cfg, choices))  # bad input fails here, before MLflow or a request
    spec = job.spec
    with record.open_run(spec, OmegaConf.to_yaml(cfg, resolve=True), sweep_dir, origin, job_dir) as run:
        record.log_dataset(run, spec, job.questions, job_dir)
        with progress.in_sweep(origin.position if origin else None):
            result = pipeline.execute(job)
        record.log_result(run, result, job_dir)  # counts, distributions and responses are kept either way
        if result.scores.similarity.n == 0:
            raise NothingMeasured(
                f"{spec.label}: nothing measured: none of the {len(result.scores.questions)} questions got a "
                f"classifiable answer ({result.scores.n_responses} responses); see responses.jsonl in run {run.run_id}"
            )
    print(summary(result, spec.label, run.url_hint()), flush=True)
    return result


def dry_run(cfg: DictConfig, choices: dict[str, str], job_dir: Path | None = None) -> planning.JobPlan:
    """Print what the job would send and spend, send nothing, track nothing (a sweep sums `job_dir` files)."""
    spec = schema.job_spec(cfg, choices)
    plan = planning.plan_job(spec)
    print(plan.describe(spec.label), flush=True)
    if job_dir is not None:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / DRY_RUN_FILE).write_text(json.dumps(plan.as_dict()))
    return plan


def summary(result: RunResult, label: str, where: str) -> str:
    s = result.scores
    unscored = f" ({len(s.unscored)} without any classifiable answer, excluded)" if s.unscored else ""
    return (
        f"{label}: Wasserstein similarity {s.similarity.value:.3f} "
        f"[{s.similarity.low:.3f}, {s.similarity.high:.3f}], unclassifiable {100 * s.unclassifiable_rate:.2f}%, "
        f"{len(s.questions)} questions{unscored}, {s.n_responses} responses\n"
        f"MLflow: {where}"
    )


@hydra.main(version_base="1.3", config_path=str(schema.conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.dry_run:
        dry_run(cfg, choices, job_dir if multirun else None)
        return
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    origin = job_origin(list(hydra_cfg.overrides.task), sweep_dir, int(hydra_cfg.job.get("num") or 0))
    run_job(cfg, choices, sweep_dir, job_dir, origin)


def job_origin(overrides: list[str], sweep_dir: Path | None, number: int = 0) -> record.Origin:
    """A single run: the command as typed. A sweep's job (`number`, 0-based): the values swept for it, the
    command that runs this job alone (the sweep's command line is on the parent run) and its place in the
    sweep for the progress line."""
    plan = context.SweepPlan.load(sweep_dir) if sweep_dir is not None else None
    if plan is None:
        return record.Origin(command=context.command_line(), tags=context.source_tags())
    values = context.override_values(overrides)
    swept = {key: values[key] for key in plan.swept if key in values}
    command = shlex.join([context.PROGRAM, *map(context.plain_override, overrides)])
    now = time.time()
    position = progress.SweepPosition(number + 1, plan.n_jobs, now - plan.started, now)
    return record.Origin(swept, command, plan.tags, position)


def main() -> None:
    """User errors (a bad value, an unknown choice, a server down) print one line and exit 1; a job in
    which nothing could be measured exits 3; Ctrl-C exits 130. HYDRA_FULL_ERROR=1 shows the traceback."""
    show_traceback = os.environ.get(FULL_ERROR) == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra then raises instead of printing its multi-line form
    if not show_traceback:
        sys.stderr = _WithoutJobEcho(sys.stderr)
    try:
        _hydra_main()
    except KeyboardInterrupt:
        print("culturealign: interrupted; answers received so far are cached, runs marked KILLED", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as error:
        if show_traceback:
            raise
        print(f"culturealign: error: {redact(schema.one_line(error))}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 1))


class _WithoutJobEcho:
    """Hydra writes `Error executing job with overrides: [...]` before re-raising a failed job: a second
    line, and one that would echo a key typed on the command line. The error itself is printed by main()."""

    ECHO = "Error executing job with overrides:"

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return len(text) if text.startswith(self.ECHO) else self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


if __name__ == "__main__":
    main()
