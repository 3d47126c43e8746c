"""Every name a run is tracked under: params, metrics, tags, artifacts and sweep-folder files.

The job writer (`culturealign.app`) and the report (`culturealign.report`) both import these, so a name
is spelt once.
"""

from __future__ import annotations

# Tags
TAG_PREFIX = "culturealign."
KIND_TAG = f"{TAG_PREFIX}kind"  # "sweep" on a sweep's parent run
SWEEP_KIND = "sweep"
SWEEP_DIR_TAG = f"{TAG_PREFIX}sweep_dir"
JOB_KEY_TAG = f"{TAG_PREFIX}job_key"  # hash of the job's resolved config (or a sweep's overrides)
ERROR_TAG = f"{TAG_PREFIX}error"
PARENT_TAG = "mlflow.parentRunId"
INTERRUPTED = "interrupted: the process ended without closing the run"


def group_tag(group: str) -> str:
    """The tag holding a config group's choice (model, country, style, ...)."""
    return f"{TAG_PREFIX}{group}"


# Params (besides the config groups' choices, logged under the group's name)
SWEEP_OVERRIDES_PARAM = "sweep.overrides"
COUNTRY_LABEL_PARAM = "country.label"  # the display label (US, China, ...) for tables
PARAM_GROUPS = ("model", "judge")  # every scalar of these specs is logged as `group.key`
JOB_PARAMS = ("samples", "seed", "concurrency", "estimator")
DATASET_PARAMS = ("path", "limit", "n_options", "countries")
BOOTSTRAP_PARAMS = ("resamples", "confidence", "method")
EXTRACTION_PARAMS = ("classification",)

# Metrics of a job's run
SIMILARITY = "wasserstein_similarity"
SIMILARITY_LOW = "wasserstein_similarity_ci_low"
SIMILARITY_HIGH = "wasserstein_similarity_ci_high"
UNCLASSIFIABLE_RATE = "unclassifiable_rate"
N_QUESTIONS = "n_questions"
N_SCORED_QUESTIONS = "n_scored_questions"
N_RESPONSES = "n_responses"
PROMPT_TOKENS = "prompt_tokens"  # of the answers used, cached or not
COMPLETION_TOKENS = "completion_tokens"
COST_USD = "cost_usd"  # paid by this invocation (cache misses)
COST_USD_WORKLOAD = "cost_usd_workload"  # the answers used, as if none were cached
USAGE_METRICS = ("requests", "retries", "cache_hits", "cache_misses", "spent_prompt_tokens", "spent_completion_tokens")


def role_metric(role: str, name: str) -> str:
    """A per-model metric: `model_requests`, `judge_cost_usd`, `judge_errors_429`, ..."""
    return f"{role}_{name}"


def paired_metric(context: tuple[str, ...], b: str, a: str) -> str:
    """A parent run's paired difference b - a over the same questions, e.g. `paired_diff_us_cot_minus_classification`."""
    return "_".join(["paired_diff", *context, f"{b}_minus_{a}"])


# Artifacts
CONFIG_ARTIFACT = "config.yaml"  # the resolved config (params are truncated past 6000 characters)
DISTRIBUTIONS_ARTIFACT = "distributions.json"  # per question: human and model distributions, similarity
RESPONSES_ARTIFACT = "responses.jsonl"  # per answer: prompt, raw text, judge output, option
REPORT_ARTIFACT_DIR = "report"

# Files in a sweep folder
PARENT_RUN_FILE = ".mlflow_parent_run_id"
DRY_RUN_FILE = "dry_run.json"
