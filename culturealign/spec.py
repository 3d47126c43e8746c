"""The typed job spec: one dataclass per config group, plus the job that holds them.

These dataclasses are both Hydra's schema (registered with the ConfigStore by `culturealign.app.schema`, so
a value of the wrong type is a composition error before anything runs) and the objects every stage below
the application layer takes. Types are checked at composition; ranges and cross-field rules live here, in
`validate()`, called once at the edge. Upper bounds stop values that would exhaust memory or money.
Nothing here imports Hydra, OmegaConf or any other culturealign module.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional

from culturealign.errors import ConfigError

MISSING = "???"  # OmegaConf's marker for a value that must be given (a group choice, a model name)

MAX_SAMPLES = 10_000  # answers per prompt and question: 100 in the paper
MAX_CONCURRENCY = 1_024
MAX_RESAMPLES = 100_000
MAX_TOKENS = 32_768
MAX_N_PER_REQUEST = 128  # OpenAI's limit for `n`
MAX_SEED = 2**31 - 1
MAX_PARALLEL = 254  # llama.cpp's 256 sequence ids, less the batched sampler's cached prompt and retired branches
PRICED_HOSTS = ("api.openai.com",)  # endpoints whose list prices are charged (set model.priced otherwise)
BATCH_MAX_REQUESTS = 50_000  # OpenAI's limits for one Batch API input file
BATCH_MAX_MB = 200.0
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Provider(Enum):
    """How a model is reached; `culturealign.models.registry` maps each to its (lazily imported) class."""

    openai = "openai"  # any OpenAI-compatible chat-completions endpoint
    llamacpp = "llamacpp"  # a GGUF file run in this process


class StyleKind(Enum):
    options = "options"  # the question with numbered options and an instruction (B.2, B.3)
    scenarios = "scenarios"  # open-ended scenario templates (B.4, B.5)


class Extraction(Enum):
    option_number = "option_number"  # the answer itself names an option (classification)
    judge = "judge"  # a judge model maps free text to an option (B.1)


class ClassificationRule(Enum):
    strict = "strict"  # the paper's rule: the answer is exactly an option number
    leading = "leading"  # the answer starts with an option number followed by a non-digit ("2. Disagree")


class Estimator(Enum):
    sample = "sample"  # the paper's: `samples` sampled answers per question
    logprobs = "logprobs"  # classification only: one request, first-token probabilities


class Selection(Enum):
    """Which questions a job asks (README: "Question sets")."""

    shared = "shared"  # the paper's: questions answered by every country of dataset.countries (same set for all jobs)
    per_country = "per_country"  # every question the job's own country answered (dataset.countries unused)


class BootstrapMethod(Enum):
    percentile = "percentile"
    basic = "basic"
    bca = "bca"


class BootstrapKind(Enum):
    """What the confidence interval resamples (see `culturealign.metrics`)."""

    questions = "questions"  # the paper's: each question's similarity taken as exact
    questions_and_answers = "questions_and_answers"  # then each question's sampled answers (two-stage)


@dataclass
class ModelSpec:
    """A model to ask (the `model` group) or to judge with (the `judge` group): one schema for both."""

    provider: Provider = Provider.openai
    name: str = MISSING
    base_url: Optional[str] = None  # openai: the endpoint, usually ending in /v1
    api_key_env: Optional[str] = None  # NAME of the environment variable holding the key; null: none needed
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: Optional[int] = None  # null: the style's limit
    n_per_request: int = 1  # samples asked per request (`n`); cache entries stay per sample
    timeout: float = 120.0
    max_retries: int = 6
    retry_backoff: float = 0.5  # seconds before the first retry, doubled each time (Retry-After wins)
    price_input_per_mtok: float = 0.0  # USD per million tokens
    price_output_per_mtok: float = 0.0
    priced: Optional[bool] = None  # null: prices apply only at a priced hosted API (PRICED_HOSTS)
    json_mode: Optional[bool] = None  # judge replies as one JSON object (response_format); null: try, and
    # fall back to plain text where the endpoint refuses it (the original GPT-4 does)
    requests_per_minute: Optional[float] = None  # an account's limits: the sweep stays under them
    tokens_per_minute: Optional[float] = None
    path: Optional[str] = None  # llamacpp: the GGUF file (null: the provider's default model)
    n_ctx: int = 2048
    n_threads: int = 1
    n_threads_batch: Optional[int] = 1  # null: all cores
    n_parallel: int = 128  # llamacpp: samples decoded together as parallel sequences (0: one after another)
    n_ctx_parallel: int = 4096  # llamacpp: KV cells the parallel samples share (bounds their memory)
    # openai: true sends the job through the Batch API (culturealign/models/batch.py): answers within 24 h,
    # billed at the list prices x batch_price_factor (OpenAI: 0.5)
    batch: bool = False
    batch_price_factor: float = 0.5
    batch_poll_seconds: float = 30.0  # first wait between two status checks, then 1.5x longer each time
    batch_max_requests: int = BATCH_MAX_REQUESTS  # requests per batch; more are split across batches
    batch_max_mb: float = BATCH_MAX_MB  # size of one batch's input file (MB, 10^6 bytes)

    def validate(self, group: str) -> None:
        _require(self.name not in ("", MISSING), f"{group}.name must name the model to ask")
        _range(self.temperature, 0, 2, f"{group}.temperature", "a number in [0, 2]")
        _require(0 < self.top_p <= 1, f"{group}.top_p must be a number in (0, 1], got {self.top_p}")
        if self.max_tokens is not None:
            _range(self.max_tokens, 1, MAX_TOKENS, f"{group}.max_tokens", f"null or an integer in [1, {MAX_TOKENS}]")
        _range(self.n_per_request, 1, MAX_N_PER_REQUEST, f"{group}.n_per_request", f"an integer in [1, {MAX_N_PER_REQUEST}]")
        _require(self.timeout > 0 and math.isfinite(self.timeout), f"{group}.timeout must be a number of seconds > 0, got {self.timeout}")
        _range(self.max_retries, 0, 100, f"{group}.max_retries", "an integer in [0, 100]")
        _range(self.retry_backoff, 0, 600, f"{group}.retry_backoff", "a number of seconds in [0, 600]")
        for price in ("price_input_per_mtok", "price_output_per_mtok"):
            _range(getattr(self, price), 0, 10_000, f"{group}.{price}", "a price in USD per million tokens >= 0")
        for budget in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, budget) is not None:
                _range(getattr(self, budget), 1, 1e9, f"{group}.{budget}", "null or a number >= 1")
        _range(self.n_ctx, 64, 1_048_576, f"{group}.n_ctx", "an integer in [64, 1048576]")
        _range(self.n_threads, 1, 1024, f"{group}.n_threads", "an integer >= 1")
        if self.n_threads_batch is not None:
            _range(self.n_threads_batch, 1, 1024, f"{group}.n_threads_batch", "null or an integer >= 1")
        _range(self.n_parallel, 0, MAX_PARALLEL, f"{group}.n_parallel", f"an integer from 0 to {MAX_PARALLEL}")
        _range(self.n_ctx_parallel, 256, 1_048_576, f"{group}.n_ctx_parallel", "an integer >= 256")
        self._check_endpoint(group)
        self._check_batch(group)

    def _check_batch(self, group: str) -> None:
        _range(self.batch_price_factor, 0, 1, f"{group}.batch_price_factor", "a number in [0, 1] (batch price / list price)")
        _range(self.batch_poll_seconds, 0.001, 3600, f"{group}.batch_poll_seconds", "a number of seconds in (0, 3600]")
        _range(self.batch_max_requests, 1, BATCH_MAX_REQUESTS, f"{group}.batch_max_requests", f"an integer in [1, {BATCH_MAX_REQUESTS}]")
        _range(self.batch_max_mb, 0.001, BATCH_MAX_MB, f"{group}.batch_max_mb", f"a size in MB in (0, {BATCH_MAX_MB:g}]")
        if self.batch and self.provider is not Provider.openai:
            raise ConfigError(f"{group}.batch=true needs an OpenAI-compatible Batch API ({group}.provider=openai); set {group}.batch=false")

    def _check_endpoint(self, group: str) -> None:
        if self.api_key_env is not None and not _ENV_VAR_NAME.fullmatch(self.api_key_env):
            raise ConfigError(
                f"{group}.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "not the key itself; export the key and pass its variable name"
            )
        if self.provider is not Provider.openai:
            return
        url = self.base_url or ""
        _require(url.startswith(("http://", "https://")), f"{group}.base_url must be an http(s) URL, got {self.base_url!r}")
        parts = urllib.parse.urlsplit(url)
        if parts.password or parts.username or parts.query:
            what = "a password" if parts.password else "a user name" if parts.username else "query parameters"
            raise ConfigError(
                f"{group}.base_url carries {what}; remove it (it would be logged) and put the key in the "
                f"environment variable named by {group}.api_key_env"
            )

    @property
    def is_priced(self) -> bool:
        """Prices apply at a priced hosted API; a local or self-hosted server costs nothing per token."""
        if self.priced is not None:
            return self.priced
        host = urllib.parse.urlsplit(self.base_url or "").hostname or ""
        return self.provider is Provider.openai and host in PRICED_HOSTS

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        """Price of tokens at this model's list prices, or at its batch prices (0 when unset or when the
        endpoint is not a priced one)."""
        if not self.is_priced:
            return 0.0
        usd = (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6
        return usd * self.batch_price_factor if batch else usd


@dataclass
class CountrySpec:
    """A population to imitate: `name` goes into the prompt, `keys` are its dataset keys by preference."""

    label: str = MISSING  # short name for tables and run names (US, China, ...)
    name: str = MISSING  # as written in the prompt: "From now on, respond as someone from {name} would."
    keys: List[str] = field(default_factory=list)

    def validate(self, where: str = "country") -> None:
        _require(bool(self.label.strip()) and bool(self.name.strip()), f"{where} needs a `label` and a `name`")
        _require(bool(self.keys), f"{where}.keys must list at least one dataset key")


@dataclass
class StyleSpec:
    """An interaction style: what the prompt asks and how an answer becomes an option."""

    name: str = MISSING
    label: Optional[str] = None  # as in the paper's tables (Classification, CoT, Scenarios); null: the name
    kind: StyleKind = StyleKind.options
    instruction: Optional[str] = None  # options styles: the last line of B.2 / B.3
    extraction: Extraction = Extraction.option_number
    max_tokens: int = 1024
    expected_tokens: int = 256  # the dry run's prior answer length until answers of the model and style are cached

    @property
    def display(self) -> str:
        return self.label or self.name

    def validate(self) -> None:
        if self.kind is StyleKind.options:
            _require(bool(self.instruction), f"style {self.name}: an options style needs an `instruction`")
        else:
            _require(self.instruction is None, f"style {self.name}: a scenarios style takes its prompts from `scenarios`, not `instruction`")
            _require(self.extraction is Extraction.judge, f"style {self.name}: scenario answers are free text: use extraction: judge")
        _range(self.max_tokens, 1, MAX_TOKENS, "style.max_tokens", f"an integer in [1, {MAX_TOKENS}]")
        _range(self.expected_tokens, 1, MAX_TOKENS, "style.expected_tokens", f"an integer in [1, {MAX_TOKENS}]")


@dataclass
class ScenariosSpec:
    templates: List[str] = field(default_factory=list)  # each contains {question}

    def validate(self) -> None:
        _require(bool(self.templates), "scenarios.templates is empty; give at least one template containing {question}")
        for number, template in enumerate(self.templates, start=1):
            _require("{question}" in template, f"scenario template {number} has no {{question}} placeholder: {template[:60]!r}")


# GlobalOpinionQA on the Hugging Face Hub. The commit is the repository's latest as published (its dataset
# card shows commit cb28804, "Update README.md"; a public research note downloads the file at this full sha);
# it could not be checked against the Hub from the machines this was written on: see README, "The dataset".
GOQA_REPO = "Anthropic/llm_global_opinions"
GOQA_FILE = "data/global_opinions.csv"
GOQA_REVISION = "cb2880488749218abb81802a94c2c62ebfde2f35"
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass
class DatasetSpec:
    """Where the questions come from. After `pipeline.prepare`, `revision` and `sha256` describe the file
    actually read: the Hub commit it came from (null for `path`) and its digest."""

    path: Optional[str] = None  # a local CSV (offline use); null: download from the Hub
    repo_id: str = GOQA_REPO  # a Hugging Face dataset repository
    filename: str = GOQA_FILE
    revision: Optional[str] = GOQA_REVISION  # a commit sha (reproducible) or a branch / tag (the file may change)
    sha256: Optional[str] = None  # the file's expected sha256: any other file is refused; null: not checked
    cache_dir: Optional[str] = None  # null: huggingface_hub's cache (HF_HUB_CACHE, HF_HOME)
    n_options: int = 2
    countries: List[str] = field(default_factory=list)  # country configs whose human data every question needs
    selection: Selection = Selection.shared  # per_country: the job's own country's questions, not dataset.countries
    limit: Optional[int] = None  # first N selected questions only

    def validate(self) -> None:
        _require(
            bool(self.countries) or self.selection is Selection.per_country,
            "dataset.countries must list at least one country (or set dataset.selection=per_country)",
        )
        _range(self.n_options, 2, 100, "dataset.n_options", "an integer in [2, 100]")
        if self.limit is not None:
            _range(self.limit, 1, 1_000_000, "dataset.limit", "null or > 0")
        if self.sha256 is not None:
            _require(
                len(self.sha256) == 64 and bool(_HEX.fullmatch(self.sha256)),
                f"dataset.sha256 must be null or 64 hex digits (a sha256 digest), got {self.sha256!r}",
            )
        if not self.path:
            _require(bool(self.repo_id.strip()) and bool(self.filename.strip()), "dataset.repo_id and dataset.filename must name the Hub file")
            _require(bool((self.revision or "").strip()), "dataset.revision must be a commit sha, a branch or a tag")

    @property
    def pinned(self) -> bool:
        """A full commit sha: the same file on every download."""
        return len(self.revision or "") == 40 and bool(_HEX.fullmatch(self.revision or ""))


@dataclass
class BootstrapSpec:
    resamples: int = 1000
    confidence: float = 0.95
    method: BootstrapMethod = BootstrapMethod.basic
    kind: BootstrapKind = BootstrapKind.questions_and_answers

    def validate(self) -> None:
        _range(self.resamples, 10, MAX_RESAMPLES, "bootstrap.resamples", f"an integer in [10, {MAX_RESAMPLES}]")
        _require(0 < self.confidence < 1, f"bootstrap.confidence must be in (0, 1), got {self.confidence}")
        _require(
            self.kind is BootstrapKind.questions or self.method is BootstrapMethod.basic,
            f"bootstrap.kind=questions_and_answers takes bootstrap.method=basic (its {self.method.value} interval "
            "would not correct the bias of similarities from finitely many answers); for the paper's "
            f"interval over questions alone set bootstrap.kind=questions",
        )


@dataclass
class TrackingSpec:
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment_name: str = "culturealign"

    def validate(self) -> None:
        _require(bool(self.experiment_name.strip()), "mlflow.experiment_name must not be empty")


CACHE_URL_FORMS = "a path, sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"
_CACHE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


@dataclass
class CacheSpec:
    enabled: bool = True
    url: str = "outputs/cache/responses.sqlite"  # CACHE_URL_FORMS; postgresql: one cache for a whole cluster
    password_env: Optional[str] = None  # the variable holding the database password (None: PGPASSWORD, ~/.pgpass)

    def validate(self) -> None:
        """The URL's form, and no password in it (the config is logged); the store is opened by the pipeline."""
        url = self.url.strip()
        _require(bool(url), f"cache.url must not be empty: give {CACHE_URL_FORMS}")
        if "://" in url:
            scheme = url.split("://", 1)[0].lower()
            _require(scheme in _CACHE_SCHEMES, f"cache.url: unsupported scheme {scheme}://; give {CACHE_URL_FORMS}")
            parts = urllib.parse.urlsplit(url)
            in_query = any(key.lower() == "password" for key in urllib.parse.parse_qs(parts.query))
            _require(
                parts.password is None and not in_query,  # never echoed
                "cache.url must not contain a password (the config is logged): remove it and set PGPASSWORD, use "
                "~/.pgpass, or name an environment variable holding it in cache.password_env",
            )
        _require(
            self.password_env is None or bool(_ENV_VAR_NAME.fullmatch(self.password_env)),
            "cache.password_env must be the NAME of an environment variable (e.g. CULTUREALIGN_CACHE_PASSWORD), not "
            "the password itself; export the password and pass its variable name",
        )


@dataclass
class ExtractionSpec:
    classification: ClassificationRule = ClassificationRule.strict


@dataclass
class JobSpec:
    """One job: a model x a country x an interaction style, and how to sample, score and track it."""

    model: ModelSpec = MISSING  # type: ignore[assignment]
    judge: ModelSpec = MISSING  # type: ignore[assignment]
    country: CountrySpec = MISSING  # type: ignore[assignment]
    style: StyleSpec = MISSING  # type: ignore[assignment]
    scenarios: ScenariosSpec = field(default_factory=ScenariosSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    samples: int = 100
    concurrency: int = 16
    seed: int = 0
    estimator: Estimator = Estimator.sample
    dry_run: bool = False
    extraction: ExtractionSpec = field(default_factory=ExtractionSpec)
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    mlflow: TrackingSpec = field(default_factory=TrackingSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    # Filled at the edge, never in YAML: the countries whose human data every question needs (those named by
    # dataset.countries; with dataset.selection=per_country, the job's own country), and the group choices.
    selection: List[CountrySpec] = field(default_factory=list)
    choices: Dict[str, str] = field(default_factory=dict)

    def validate(self) -> "JobSpec":
        """Every range and cross-field rule; raises a one-line ConfigError naming the key to fix."""
        self.model.validate("model")
        if self.uses_judge:
            self.judge.validate("judge")
        self.country.validate()
        self.style.validate()
        if self.style.kind is StyleKind.scenarios:
            self.scenarios.validate()
        self.dataset.validate()
        for country in self.selection:
            country.validate(f"dataset.countries: {country.label}")
        self.bootstrap.validate()
        self.mlflow.validate()
        if self.cache.enabled:
            self.cache.validate()
        _range(self.samples, 1, MAX_SAMPLES, "samples", f"a positive integer <= {MAX_SAMPLES}")
        _range(self.concurrency, 1, MAX_CONCURRENCY, "concurrency", f"a positive integer <= {MAX_CONCURRENCY}")
        _range(self.seed, 0, MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]")
        for role in self.batch_roles:
            _require(self.cache.enabled, f"{role}.batch=true stores the batch's answers in the response cache: set cache.enabled=true")
            _require(
                not self.cache.url.lower().startswith("postgresql"),
                f"{role}.batch=true keeps its batch journal in a SQLite cache file: give cache.url a path "
                "(a PostgreSQL cache can be seeded from it afterwards with culturealign-cache copy)",
            )
        _require(
            self.estimator is Estimator.sample or self.style.extraction is Extraction.option_number,
            "estimator=logprobs works only with style=classification (free text needs sampling and a judge)",
        )
        return self

    @property
    def resamples_answers(self) -> bool:
        """The interval's second stage: each question's sampled answers. The logprob estimator reads a
        question's distribution from probabilities, with no sampled answers to resample."""
        return self.bootstrap.kind is BootstrapKind.questions_and_answers and self.estimator is Estimator.sample

    @property
    def uses_judge(self) -> bool:
        return self.style.extraction is Extraction.judge

    @property
    def batch_roles(self) -> list[str]:
        """The roles ("model", "judge") this job sends through the Batch API."""
        roles = ["model"] if self.model.batch else []
        return roles + (["judge"] if self.uses_judge and self.judge.batch else [])

    @property
    def label(self) -> str:
        """The job in a few words: model / country / style, as chosen."""
        parts = [
            self.choices.get("model") or self.model.name,
            self.choices.get("country") or self.country.label,
            self.choices.get("style") or self.style.name,
        ]
        return " / ".join(str(part) for part in parts if part)


def _range(value, low, high, key: str, what: str) -> None:
    finite = not isinstance(value, float) or math.isfinite(value)
    _require(finite and low <= value <= high, f"{key} must be {what}, got {value!r}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
