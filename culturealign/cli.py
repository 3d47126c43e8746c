"""`culturealign` / `python -m culturealign`: one Hydra entry point for single runs and `--multirun` sweeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from culturealign import config, experiment, planning
from culturealign.config import conf_dir
from culturealign.experiment import RunResult
from culturealign.tracking import DRY_RUN_FILE, JobRun, clip_record

log = logging.getLogger("culturealign")


def run_job(cfg: DictConfig, choices: dict[str, str], sweep_dir: Path | None = None) -> RunResult:
    """Run one job and track it in MLflow (the run exists before the first request)."""
    config.validate(cfg)  # a bad config fails before MLflow logs it (or any secret in it)
    with JobRun(cfg, choices, sweep_dir) as tracked:
        result = experiment.run(cfg, country_label=choices.get("country", ""))
        log_result(tracked, result, cfg)
    print(summary(result, choices, tracked.url_hint(cfg.mlflow.tracking_uri)), flush=True)
    return result


def dry_run(cfg: DictConfig, choices: dict[str, str], job_dir: Path | None = None) -> planning.JobPlan:
    """Print what the job would send and spend, send nothing, track nothing (a sweep sums `job_dir` files)."""
    plan = planning.plan_job(cfg, country_label=choices.get("country", ""))
    print(plan.describe(job_label(choices) or "job"), flush=True)
    if job_dir is not None:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / DRY_RUN_FILE).write_text(json.dumps(plan.as_dict()))
    return plan


def log_result(tracked: JobRun, result: RunResult, cfg: DictConfig) -> None:
    scores = result.scores
    prompt_tokens, completion_tokens = result.workload_tokens
    metrics = {
        "wasserstein_similarity": scores.similarity.value,
        "wasserstein_similarity_ci_low": scores.similarity.low,
        "wasserstein_similarity_ci_high": scores.similarity.high,
        "unclassifiable_rate": scores.unclassifiable_rate,
        "n_questions": len(scores.questions),
        "n_scored_questions": scores.similarity.n,
        "n_responses": scores.n_responses,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
    metrics |= cost_metrics(result, cfg)
    for role, usage in result.usage.items():
        metrics |= {
            f"{role}_requests": usage.requests,
            f"{role}_retries": usage.retries,
            f"{role}_cache_hits": usage.cache_hits,
            f"{role}_cache_misses": usage.cache_misses,
            f"{role}_spent_prompt_tokens": usage.prompt_tokens,
            f"{role}_spent_completion_tokens": usage.completion_tokens,
        }
        metrics |= {f"{role}_errors_{kind}": count for kind, count in usage.errors.items()}
        if usage.retries:
            log.info(f"{role}: {usage.requests} requests, {usage.retries} retried after errors {usage.errors}")
    tracked.log_metrics(metrics)
    tracked.log_json([q.as_dict() for q in scores.questions], "distributions.json")
    tracked.log_jsonl([clip_record(record) for record in result.records], "responses.jsonl")


def cost_metrics(result: RunResult, cfg: DictConfig) -> dict[str, float]:
    """cost_usd: what this invocation paid (cache misses); cost_usd_workload: the answers used, uncached."""
    spent = {role: planning.cost_usd(cfg[role], u.prompt_tokens, u.completion_tokens) for role, u in result.usage.items()}
    workload = {role: planning.cost_usd(cfg[role], *tokens) for role, tokens in result.workload.items()}
    return (
        {"cost_usd": sum(spent.values()), "cost_usd_workload": sum(workload.values())}
        | {f"{role}_cost_usd": value for role, value in spent.items()}
        | {f"{role}_cost_usd_workload": value for role, value in workload.items()}
    )


def job_label(choices: dict[str, str]) -> str:
    return " / ".join(str(choices.get(g)) for g in ("model", "country", "style") if choices.get(g))


def summary(result: RunResult, choices: dict[str, str], where: str) -> str:
    s = result.scores
    label = job_label(choices)
    unscored = f" ({len(s.unscored)} without any classifiable answer, excluded)" if s.unscored else ""
    return (
        f"{label}: Wasserstein similarity {s.similarity.value:.3f} "
        f"[{s.similarity.low:.3f}, {s.similarity.high:.3f}], unclassifiable {100 * s.unclassifiable_rate:.2f}%, "
        f"{len(s.questions)} questions{unscored}, {s.n_responses} responses\n"
        f"MLflow: {where}"
    )


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.dry_run:
        dry_run(cfg, choices, Path(hydra_cfg.runtime.output_dir) if multirun else None)
        return
    run_job(cfg, choices, Path(hydra_cfg.sweep.dir) if multirun else None)


if __name__ == "__main__":
    main()
