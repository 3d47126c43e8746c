"""`culturealign` / `python -m culturealign`: one Hydra entry point for single runs and `--multirun` sweeps.

The composed config becomes a validated `JobSpec` here, before MLflow opens (so a bad config, or a secret
in it, is never logged) and before any request; nothing below this layer sees Hydra.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from culturealign import pipeline, planning
from culturealign.app import record, schema
from culturealign.errors import CultureAlignError
from culturealign.pipeline import RunResult
from culturealign.tracking.names import DRY_RUN_FILE

schema.register()
FULL_ERROR = "HYDRA_FULL_ERROR"
# Errors in what the user typed or runs against; anything else is a bug and keeps its traceback.
USER_ERRORS = (CultureAlignError, HydraException, OmegaConfBaseException)


def run_job(cfg: DictConfig, choices: dict[str, str], sweep_dir: Path | None = None) -> RunResult:
    """Run one job and track it in MLflow (the run exists before the first request)."""
    job = pipeline.prepare(schema.job_spec(cfg, choices))  # bad input fails here, before MLflow or a request
    spec = job.spec
    with record.open_run(spec, OmegaConf.to_yaml(cfg, resolve=True), sweep_dir) as run:
        result = pipeline.execute(job)
        record.log_result(run, result)
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
    if cfg.dry_run:
        dry_run(cfg, choices, Path(hydra_cfg.runtime.output_dir) if multirun else None)
        return
    run_job(cfg, choices, Path(hydra_cfg.sweep.dir) if multirun else None)


def main() -> None:
    """User errors (a bad value, an unknown choice, a server down) print one line and exit 1; Ctrl-C exits
    130. HYDRA_FULL_ERROR=1 shows the full traceback instead."""
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
        print(f"culturealign: error: {schema.one_line(error)}", file=sys.stderr)
        sys.exit(1)


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
