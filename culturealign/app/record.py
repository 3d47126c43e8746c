"""A job's run in MLflow: its name, tags and params from the spec, its question set as a dataset input,
then its results as metrics, artifacts and a browsable table, all under the names of
`culturealign.tracking.names`. The job's own output folder keeps the same result files."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from culturealign.app import context
from culturealign.dataset import Question
from culturealign.pipeline import RunResult
from culturealign.progress import SweepPosition
from culturealign.redaction import redact
from culturealign.spec import JobSpec
from culturealign.tracking import names
from culturealign.tracking.store import JobRun, clip_record, job_key, parent_run_id

log = logging.getLogger("culturealign")
# What the UI's table shows first: the question, the answer and how it was read; then where it came from.
TABLE_COLUMNS = ("question", "response", "option", "option_text", "judge_output", "question_id", "variant",
                 "sample_index", "finish_reason", "cached")  # fmt: skip


@dataclass
class Origin:
    """Where a job comes from: the swept values that tell it apart from the other jobs of its sweep, the
    command that reproduces it, and the source tags (entry point, git commit, version)."""

    swept: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    position: SweepPosition | None = None  # the job's place in its sweep, for the progress line


def open_run(
    spec: JobSpec, config_text: str, sweep_dir: Path | None, origin: Origin | None = None, job_dir: Path | None = None,
) -> JobRun:  # fmt: skip
    """The job's run, created before any request; `config_text` is the resolved config (logged whole).
    `job_dir` first gets what `culturealign-log` needs to create the same run later."""
    origin = origin or Origin()
    tags = {**origin.tags, **{names.group_tag(group): choice for group, choice in spec.choices.items()}}
    if origin.command:
        tags[names.COMMAND_TAG] = origin.command
    name = context.run_name(spec.model.name, spec.country.label, spec.style.display, origin.swept)
    key, params = job_key(config_text), job_params(spec)
    if job_dir is not None:
        parent = parent_run_id(sweep_dir) if sweep_dir is not None else None
        save_pending(job_dir, tracking_uri=spec.mlflow.tracking_uri, experiment=spec.mlflow.experiment_name,
                     name=name, key=key, tags={k: redact(str(v)) for k, v in tags.items()},
                     params={k: redact(v) for k, v in params.items()}, config=redact(config_text), parent=parent)  # fmt: skip
    run = JobRun(spec.mlflow, name, key, tags, params, config_text, sweep_dir)
    if job_dir is not None:
        save_pending(job_dir, run_id=run.run_id)
        run.keep_hint = f"; the results are kept in {job_dir}: log them later with `culturealign-log {job_dir}`"
    return run


def save_pending(job_dir: Path, **values: Any) -> None:
    """Merge `values` into the job folder's record of its run (names.PENDING_RUN_FILE)."""
    path = job_dir / names.PENDING_RUN_FILE
    job_dir.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps(data | values, indent=1, ensure_ascii=False), encoding="utf-8")


def log_dataset(run: JobRun, spec: JobSpec, questions: list[Question], job_dir: Path | None = None) -> None:
    """The questions the job asked, as its dataset input: name, a digest of their content, the file or URL."""
    data = spec.dataset
    source = str(Path(data.path).expanduser().resolve()) if data.path else data.url
    profile = {"questions": len(questions), "n_options": data.n_options, "countries": list(data.countries),
               "selection": data.selection.value, "limit": data.limit}  # fmt: skip
    dataset = {"name": spec.choices.get("dataset") or "globalopinionqa", "digest": question_digest(questions),
               "source": source, "profile": profile}  # fmt: skip
    if job_dir is not None:
        save_pending(job_dir, dataset=dataset)
    try:
        run.log_dataset(**dataset)
    except Exception as error:  # noqa: BLE001 - the store failed after the run was created
        raise run.lost(error) from None


def question_digest(questions: list[Question]) -> str:
    """Changes when any selected question's text, options, source or survey shares change."""
    content = [[q.id, q.text, list(q.options), q.source, sorted(q.selections.items())] for q in questions]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def job_params(spec: JobSpec) -> dict[str, Any]:
    params: dict[str, Any] = {group: choice for group, choice in spec.choices.items() if not group.startswith("hydra")}
    for group in names.PARAM_GROUPS:
        params |= {f"{group}.{key}": value for key, value in asdict(getattr(spec, group)).items()}
    params[names.COUNTRY_LABEL_PARAM] = spec.country.label
    params[names.STYLE_LABEL_PARAM] = spec.style.display
    params |= {key: getattr(spec, key) for key in names.JOB_PARAMS}
    params |= {f"dataset.{key}": getattr(spec.dataset, key) for key in names.DATASET_PARAMS}
    params |= {f"bootstrap.{key}": getattr(spec.bootstrap, key) for key in names.BOOTSTRAP_PARAMS}
    params |= {f"extraction.{key}": getattr(spec.extraction, key) for key in names.EXTRACTION_PARAMS}
    return {key: plain(value) for key, value in params.items()}


def plain(value: Any) -> str:
    """A param as a person would type it: `null`, `0.7`, `us,china`, `sample` (not Python reprs)."""
    if value is None:
        return "null"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return ",".join(plain(item) for item in value)
    return str(value)


def log_result(run: JobRun, result: RunResult, job_dir: Path | None = None) -> None:
    """Metrics, the result files and the answers as a table: first into `job_dir`, the job's output folder
    (so nothing computed is lost when the store fails), then to the run."""
    metrics = result_metrics(result)
    # the endpoint's window of requests in flight, change by change
    series = {names.role_metric(role, names.CONCURRENCY): usage.concurrency for role, usage in result.usage.items()}
    files = result_files(result, metrics)
    rows = response_rows(result)
    if job_dir is not None:
        save_results(job_dir, files, series, rows)
    run.check_reachable()
    try:
        upload(run, metrics, series, files, rows)
    except Exception as error:  # noqa: BLE001 - any store failure: one line, the job folder keeps it all
        raise run.lost(error) from None


def save_results(job_dir: Path, files: dict[str, str], series: dict[str, list[float]], rows: list[dict]) -> None:
    """The job folder's copies, as redacted as the MLflow ones: enough for `culturealign-log` to log them."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (job_dir / name).write_text(redact(text), encoding="utf-8")
    (job_dir / names.SERIES_FILE).write_text(json.dumps(series), encoding="utf-8")
    clean = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    (job_dir / names.RESPONSES_TABLE).write_text(json.dumps(clean, ensure_ascii=False), encoding="utf-8")


def upload(run: JobRun, metrics: dict[str, float], series: dict[str, list[float]], files: dict[str, str], rows: list[dict]) -> None:
    run.log_metrics(metrics)
    for name, values in series.items():
        run.log_series(name, values)
    for name, text in files.items():
        run.log_text(text, name)
    run.log_table(rows, names.RESPONSES_TABLE)


def result_files(result: RunResult, metrics: dict[str, float]) -> dict[str, str]:
    records = [clip_record(record.as_dict()) for record in result.records]
    return {
        names.SCORES_ARTIFACT: json.dumps(metrics, indent=1),
        names.DISTRIBUTIONS_ARTIFACT: json.dumps([q.as_dict() for q in result.scores.questions], indent=1, ensure_ascii=False),
        names.RESPONSES_ARTIFACT: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
    }


def response_rows(result: RunResult) -> list[dict]:
    """One row per answer for the MLflow table: the question, the raw answer, how it was read."""
    questions = {q.question.id: q.question for q in result.scores.questions}
    rows = []
    for record in result.records:
        row = clip_record(record.as_dict())
        question = questions.get(record.question_id)
        row["question"] = question.text if question else ""
        options = question.options if question else ()
        row["option_text"] = options[record.option - 1] if record.option and record.option <= len(options) else ""
        rows.append({column: row.get(column) for column in TABLE_COLUMNS})
    return rows


def result_metrics(result: RunResult) -> dict[str, float]:
    """Every metric of a job; a similarity that does not exist (no question scored) is left out, never NaN."""
    scores = result.scores
    model_cost = result.costs["model"]
    metrics = {
        names.SIMILARITY: scores.similarity.value,
        names.SIMILARITY_LOW: scores.similarity.low,
        names.SIMILARITY_HIGH: scores.similarity.high,
        names.UNCLASSIFIABLE_RATE: scores.unclassifiable_rate,
        names.N_QUESTIONS: len(scores.questions),
        names.N_SCORED_QUESTIONS: scores.similarity.n,
        names.N_RESPONSES: scores.n_responses,
        names.PROMPT_TOKENS: model_cost.workload_tokens[0],
        names.COMPLETION_TOKENS: model_cost.workload_tokens[1],
        names.COST_USD: sum(cost.spent_usd for cost in result.costs.values()),
        names.COST_USD_WORKLOAD: sum(cost.workload_usd for cost in result.costs.values()),
    }
    for role, cost in result.costs.items():
        metrics[names.role_metric(role, names.COST_USD)] = cost.spent_usd
        metrics[names.role_metric(role, names.COST_USD_WORKLOAD)] = cost.workload_usd
    metrics = {name: value for name, value in metrics.items() if value == value}  # drop NaN
    for role, usage in result.usage.items():
        values = (usage.requests, usage.retries, usage.cache_hits, usage.cache_misses, usage.prompt_tokens, usage.completion_tokens)
        metrics |= {names.role_metric(role, name): value for name, value in zip(names.USAGE_METRICS, values)}
        metrics |= {names.role_metric(role, f"errors_{kind}"): count for kind, count in usage.errors.items()}
        metrics[names.role_metric(role, names.RATE_LIMITED)] = usage.rate_limited
        if usage.batches or usage.batches_reattached or usage.batch_requests:
            metrics |= {names.role_metric(role, name): getattr(usage, name) for name in names.BATCH_USAGE_METRICS}
        if usage.retries:
            log.info(f"{role}: {usage.requests} requests, {usage.retries} retried after errors {usage.errors}")
    return metrics
