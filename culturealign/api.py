"""The Python API: one job from Python or a notebook, and a tracked sweep as a DataFrame.

    from culturealign import evaluate, load_sweep

    result = evaluate("model=openai-compatible", "model.base_url=http://127.0.0.1:8080/v1", "style=cot")
    result.similarity, result.questions      # Estimate; one row per question (pandas)
    runs = load_sweep()                      # the latest sweep: one row per run

`evaluate` takes the command line's overrides, composed by Hydra with the same config files and schema, so
a job means the same thing in both places. It runs from plain Python and from inside a running event loop
(Jupyter, an async application): there the job runs on a loop of its own in a worker thread, and
`await evaluate_async(...)` runs it on the caller's loop instead. `track=True` records the run in MLflow
as the CLI does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from culturealign import pipeline
from culturealign.app import record, schema
from culturealign.metrics import Estimate
from culturealign.pipeline import RunResult
from culturealign.spec import JobSpec

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Evaluation:
    """One job's results: the spec it ran (with the dataset revision and sha256 read), its scores, and the
    MLflow run id when tracked."""

    spec: JobSpec
    result: RunResult
    run_id: Optional[str] = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def similarity(self) -> Estimate:
        """Mean Wasserstein similarity over scored questions, with its interval (`spec.bootstrap`)."""
        return self.result.scores.similarity

    @property
    def unclassifiable_rate(self) -> float:
        return self.result.scores.unclassifiable_rate

    @property
    def questions(self) -> "pd.DataFrame":
        """One row per question: id, row, question, options, human and model distributions, counts,
        unclassifiable answers, responses, similarity (None when no answer was classifiable)."""
        import pandas as pd

        return pd.DataFrame([score.as_dict() for score in self.result.scores.questions])


def evaluate(*overrides: str, track: bool = False) -> Evaluation:
    """Run one job, e.g. `evaluate("model=openai-compatible", "model.base_url=...", "style=cot")`.
    Bad input raises a one-line `CultureAlignError` (or Hydra's error for an unknown key or choice)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(evaluate_async(*overrides, track=track))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="culturealign") as worker:
        return worker.submit(asyncio.run, evaluate_async(*overrides, track=track)).result()


async def evaluate_async(*overrides: str, track: bool = False) -> Evaluation:
    """`evaluate` on the running event loop: `await evaluate_async(...)` in a notebook cell."""
    spec, config_text = schema.compose_job(list(overrides))
    job = pipeline.prepare(spec)  # bad input fails here, before MLflow or a request
    if not track:
        return Evaluation(job.spec, await pipeline.execute_async(job))
    with record.open_run(job.spec, config_text, None) as run:
        result = await pipeline.execute_async(job)
        record.log_result(run, result)
    return Evaluation(job.spec, result, run.run_id)


def load_sweep(
    parent_run: Optional[str] = None,
    *,
    tracking_uri: Optional[str] = None,
    experiment: str = "culturealign",
    per_question: bool = False,
) -> "pd.DataFrame":
    """A tracked sweep's finished runs (default: the experiment's latest sweep), one row per run: `run_id`,
    `start_time`, `country_label`, every param (`model`, `country`, `style`, `samples`, `bootstrap.kind`,
    `dataset.sha256`, ...) and every metric (`wasserstein_similarity`, its `_ci_low` / `_ci_high`, ...).
    `per_question=True`: one row per run and question instead, with the run's `run_id`, `country`,
    `style` and the params that vary across the sweep, then the question's scores. `frame.attrs` holds
    `parent_run`, `varying` (the params besides country and style that differ across runs) and `skipped`
    (unfinished runs, described)."""
    import pandas as pd

    from culturealign.report import runs

    client = runs.open_client(tracking_uri or runs.default_tracking_uri())
    sweep = runs.load_sweep(client, parent_run or runs.latest_sweep_id(client, experiment))
    if per_question:
        frame = pd.DataFrame([row for run in sweep.runs for row in _question_rows(sweep, run)])
    else:
        frame = pd.DataFrame([_run_row(run) for run in sweep.runs])
    frame.attrs |= {"parent_run": sweep.parent_id, "varying": list(sweep.keys), "skipped": list(sweep.skipped)}
    return frame


def _run_row(run) -> dict:
    import pandas as pd

    row = {"run_id": run.run_id, "start_time": pd.to_datetime(run.start_time, unit="ms"), "country_label": run.country_label}
    row |= run.params
    row |= {(f"metrics.{name}" if name in row else name): value for name, value in run.metrics.items()}
    return row


def _question_rows(sweep, run) -> list[dict]:
    keys = {"run_id": run.run_id, "country": run.country, "country_label": run.country_label, "style": run.style}
    keys |= {name: run.key(name) for name in sweep.keys}
    return [{**keys, **question} for question in run.questions]
