"""A job's run in MLflow: its name, tags and params from the spec, then its results as metrics and
artifacts, all under the names of `culturealign.tracking.names`."""

from __future__ import annotations

import logging
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

from culturealign.pipeline import RunResult
from culturealign.spec import JobSpec
from culturealign.tracking import names
from culturealign.tracking.store import JobRun, clip_record, job_key

log = logging.getLogger("culturealign")
RUN_NAME_GROUPS = ("country", "style", "model")


def open_run(spec: JobSpec, config_text: str, sweep_dir: Path | None) -> JobRun:
    """The job's run, created before any request; `config_text` is the resolved config (logged whole)."""
    tags = {names.group_tag(group): choice for group, choice in spec.choices.items()}
    name = "-".join(spec.choices[g] for g in RUN_NAME_GROUPS if spec.choices.get(g))
    return JobRun(spec.mlflow, name, job_key(config_text), tags, job_params(spec), config_text, sweep_dir)


def job_params(spec: JobSpec) -> dict[str, Any]:
    params: dict[str, Any] = {group: choice for group, choice in spec.choices.items() if not group.startswith("hydra")}
    for group in names.PARAM_GROUPS:
        params |= {f"{group}.{key}": value for key, value in asdict(getattr(spec, group)).items()}
    params[names.COUNTRY_LABEL_PARAM] = spec.country.label
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


def log_result(run: JobRun, result: RunResult) -> None:
    run.log_metrics(result_metrics(result))
    run.log_json([q.as_dict() for q in result.scores.questions], names.DISTRIBUTIONS_ARTIFACT)
    run.log_jsonl([clip_record(record.as_dict()) for record in result.records], names.RESPONSES_ARTIFACT)


def result_metrics(result: RunResult) -> dict[str, float]:
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
    for role, usage in result.usage.items():
        values = (usage.requests, usage.retries, usage.cache_hits, usage.cache_misses, usage.prompt_tokens, usage.completion_tokens)
        metrics |= {names.role_metric(role, name): value for name, value in zip(names.USAGE_METRICS, values)}
        metrics |= {names.role_metric(role, f"errors_{kind}"): count for kind, count in usage.errors.items()}
        if usage.retries:
            log.info(f"{role}: {usage.requests} requests, {usage.retries} retried after errors {usage.errors}")
    return metrics
