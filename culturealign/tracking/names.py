"""Every name a run is tracked under: params, metrics, tags, artifacts and sweep-folder files.

The job writer (`culturealign.app`) and the report (`culturealign.report`) both import these, so a name
is spelt once.
"""

from __future__ import annotations

import re

# Tags
TAG_PREFIX = "culturealign."
KIND_TAG = f"{TAG_PREFIX}kind"  # "sweep" on a sweep's parent run
SWEEP_KIND = "sweep"
SWEEP_DIR_TAG = f"{TAG_PREFIX}sweep_dir"
JOB_KEY_TAG = f"{TAG_PREFIX}job_key"  # hash of the job's resolved config (or a sweep's overrides)
ERROR_TAG = f"{TAG_PREFIX}error"
VERSION_TAG = f"{TAG_PREFIX}version"  # the culturealign package version
COMMAND_TAG = f"{TAG_PREFIX}command"  # the command line that reproduces the run (a sweep: the whole sweep)
SWEPT_TAG = f"{TAG_PREFIX}swept"  # a sweep's swept keys, comma-separated
PARENT_TAG = "mlflow.parentRunId"
# MLflow's own tags, shown by its UI (run page "Source", "Git commit", "User")
SOURCE_NAME_TAG = "mlflow.source.name"  # the entry point (console script)
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
GIT_DIRTY_TAG = "mlflow.source.git.dirty"  # "true" when tracked files differed from the commit
USER_TAG = "mlflow.user"
DESCRIPTION_TAG = "mlflow.note.content"  # a run's description (Markdown) on its page
MAX_TAG_CHARS = 8000  # MLflow's limit for a tag value
# Experiment tags: MLflow UIs that honour it open the runs table, not the GenAI overview; and one shared
# view per sweep (`viewStateShareKey=<parent run id>`): its child runs, with the headline columns.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
INTERRUPTED = "interrupted: the process ended without closing the run"


def group_tag(group: str) -> str:
    """The tag holding a config group's choice (model, country, style, ...)."""
    return f"{TAG_PREFIX}{group}"


# Params (besides the config groups' choices, logged under the group's name)
SWEEP_OVERRIDES_PARAM = "sweep.overrides"
COUNTRY_LABEL_PARAM = "country.label"  # the display label (US, China, ...) for tables
STYLE_LABEL_PARAM = "style.label"  # the paper's label (Classification, CoT, Scenarios) for tables
PARAM_GROUPS = ("model", "judge")  # every scalar of these specs is logged as `group.key`
JOB_PARAMS = ("samples", "seed", "concurrency", "estimator")
DATASET_PARAMS = (
    "path", "limit", "n_options", "countries", "selection", "repo_id", "filename", "revision", "sha256",
)  # revision, sha256: of the file read; selection: shared | per_country (which questions a job asks)
SELECTION_PARAM = "dataset.selection"
BOOTSTRAP_PARAMS = ("resamples", "confidence", "method", "kind")  # kind: questions | questions_and_answers
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
COST_USD = "cost_usd"  # paid by this invocation (cache misses; batch requests at the batch price)
COST_USD_WORKLOAD = "cost_usd_workload"  # the answers used, as if none were cached (at the batch price in batch mode)
RATE_LIMITED = "rate_limited"  # per role: 429 / 503 replies from its endpoint
CONCURRENCY = "concurrency"  # per role: the endpoint's window of requests in flight, one step per change
USAGE_METRICS = ("requests", "retries", "cache_hits", "cache_misses", "spent_prompt_tokens", "spent_completion_tokens")
# Batch API usage of a role, when it sent anything that way (named as the `Usage` fields they log):
# batches created, batches of an interrupted run finished, requests answered, requests sent again after a
# transient failure, and the tokens among the spent ones that were paid at the batch price.
BATCH_USAGE_METRICS = (
    "batches",
    "batches_reattached",
    "batch_requests",
    "batch_resubmitted",
    "batch_prompt_tokens",
    "batch_completion_tokens",
)


def role_metric(role: str, name: str) -> str:
    """A per-model metric: `model_requests`, `judge_cost_usd`, `judge_errors_429`, ..."""
    return f"{role}_{name}"


# Metrics of a sweep's parent run: one per cell of Table 1 (paired differences live in the report only)
CELL_SIMILARITY = "similarity"
CELL_UNCLASSIFIABLE = "unclassifiable"
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def cell_metric(kind: str, country: str, style: str, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """A parent-run metric for one cell of the sweep's table: `similarity/us/cot`, or with other swept
    values `similarity/us/cot/model.temperature_0.7` (MLflow names allow letters, digits, _-./ and space)."""
    parts = [country, style, *(f"{key}_{value}" for key, value in extra)]
    return "/".join([kind, *(_METRIC_UNSAFE.sub("_", part) for part in parts)])


# Artifacts
CONFIG_ARTIFACT = "config.yaml"  # the resolved config (params are truncated past 6000 characters)
DISTRIBUTIONS_ARTIFACT = "distributions.json"  # per question: human and model distributions, similarity
RESPONSES_ARTIFACT = "responses.jsonl"  # per answer: prompt, raw text, judge output, option
RESPONSES_TABLE = "responses_table.json"  # the same answers as an MLflow table (browsable in the UI)
SCORES_ARTIFACT = "scores.json"  # the run's metrics, also kept in the job's output folder
DATASET_CONTEXT = "eval"  # the question set is a run input with this context
REPORT_ARTIFACT_DIR = "report"

# Files in a sweep folder
PARENT_RUN_FILE = ".mlflow_parent_run_id"
SWEEP_FILE = ".culturealign_sweep.json"  # what every job of a sweep needs to know about the sweep
DRY_RUN_FILE = "dry_run.json"

# Files in a job's output folder, beside the result artifacts: what `culturealign-log` needs to log a job
# whose tracking store failed (the run's name, tags, params, config and dataset; the metric series)
PENDING_RUN_FILE = "mlflow_run.json"
SERIES_FILE = "metric_series.json"
LOGGED_FROM_TAG = "culturealign.logged_from"  # on a run logged later from a job folder: that folder
SWEEP_LOCK_FILE = ".sweep.lock"  # held by the sweep's launching process while it runs
