"""One job, end to end: spec -> dataset -> prompts -> model (cached) -> extraction -> scores.

Takes a validated `JobSpec` and returns typed results; knows nothing of Hydra or MLflow, so the CLI, the
Python API and the tests run exactly the same code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

from culturealign.dataset import Question, dataset_file, read_questions, select_questions
from culturealign.errors import DatasetError
from culturealign.estimators import Estimator, ResponseRecord, estimator_for
from culturealign.extraction import Judge, judge_messages
from culturealign.models import batch
from culturealign.models.base import GenerateConfig, Usage
from culturealign.models.cache import ResponseCache
from culturealign.models.model import Model
from culturealign.progress import Progress
from culturealign.sampling import PlannedPrompt, Response, collect, plan
from culturealign.scoring import Scores, summarise
from culturealign.spec import CountrySpec, Estimator as EstimatorName, JobSpec, Selection as SelectionMode, StyleKind


@dataclass(frozen=True)
class RoleCost:
    """What one model (the model or the judge) cost: `spent` this invocation (cache misses) and the
    `workload` of every answer used (cached or not), in tokens and USD."""

    spent_tokens: tuple[int, int]
    workload_tokens: tuple[int, int]
    spent_usd: float
    workload_usd: float


@dataclass
class RunResult:
    scores: Scores
    records: list[ResponseRecord]  # one per response: prompt, raw answer, judge output, extracted option
    usage: dict[str, Usage] = field(default_factory=dict)  # "model" / "judge" -> requests, retries, hits
    costs: dict[str, RoleCost] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """A validated job with its questions loaded."""

    spec: JobSpec
    questions: list[Question]
    estimator: Estimator


def load_questions(spec: JobSpec, path: Path) -> list[Question]:
    """The selected questions of the dataset file at `path`."""
    data = spec.dataset
    questions = select_questions(read_questions(path), spec.selection, data.n_options, data.limit)
    if not questions:
        countries, key = ", ".join(data.countries), "dataset.countries"
        if data.selection is SelectionMode.per_country:
            countries, key = spec.country.label, "the country (dataset.selection=per_country)"
        raise DatasetError(
            f"no question in {path} has {data.n_options} options and human data for {countries}; "
            f"check dataset.path and {key}"
        )
    for question in questions:
        question.human_distribution(spec.country)  # raises a DatasetError naming the keys available
    return questions


def prepare(spec: JobSpec) -> Job:
    """Validate the spec and load the questions; raises before any request is planned. The job's spec says
    which file was read: `dataset.revision` (the Hub commit, null for dataset.path) and `dataset.sha256`."""
    spec.validate()
    found = dataset_file(spec.dataset)
    spec = replace(spec, dataset=replace(spec.dataset, revision=found.revision, sha256=found.sha256))
    return Job(spec, load_questions(spec, found.path), estimator_for(spec))


def open_cache(spec: JobSpec) -> ResponseCache | None:
    return ResponseCache(spec.cache.url, spec.cache.password_env) if spec.cache.enabled else None


def models(spec: JobSpec, cache: ResponseCache | None) -> dict[str, Model]:
    """The job's models, not yet connected: "model", and "judge" for styles read by a judge."""
    logprobs, throttles = spec.estimator is EstimatorName.logprobs, {}  # one throttle per server, shared
    built = {"model": Model(spec.model, "model", cache, spec.concurrency, logprobs, throttles)}
    if spec.uses_judge:
        built["judge"] = Model(spec.judge, "judge", cache, spec.concurrency, throttles=throttles)
    return built


def planned_prompts(job: Job, country: CountrySpec | None = None) -> list[PlannedPrompt]:
    """Every prompt with its sample indices (for `country`, by default the job's)."""
    spec = job.spec
    templates = spec.scenarios.templates if spec.style.kind is StyleKind.scenarios else []
    return plan(job.questions, country or spec.country, spec.style, templates, job.estimator.samples(spec.samples))


def model_config(job: Job) -> GenerateConfig:
    spec = job.spec
    generate = GenerateConfig(
        temperature=spec.model.temperature,
        top_p=spec.model.top_p,
        max_tokens=spec.model.max_tokens or spec.style.max_tokens,
        seed=spec.seed,
    )
    return job.estimator.generate_config(generate)


def judge_config(spec: JobSpec) -> GenerateConfig:
    judge = spec.judge
    return GenerateConfig(
        temperature=judge.temperature, top_p=judge.top_p, max_tokens=judge.max_tokens, seed=spec.seed, json_output=True
    )


def run(spec: JobSpec) -> RunResult:
    return execute(prepare(spec))


def execute(job: Job) -> RunResult:
    """Sample, extract and score a prepared job (starts its own event loop: not from a running one)."""
    return asyncio.run(execute_async(job))


async def execute_async(job: Job) -> RunResult:
    """`execute` on the running event loop (a notebook's, an application's)."""
    cache = open_cache(job.spec)
    try:
        return await _run(job, cache)
    finally:
        if cache is not None:
            cache.close()


async def _run(job: Job, cache: ResponseCache | None) -> RunResult:
    spec = job.spec
    opened = {role: model.open() for role, model in models(spec, cache).items()}  # fail before any request
    try:
        for model in opened.values():
            await model.preflight()
        if spec.model.batch:  # the Batch API fills the cache first; the live path then finds every answer
            await batch.fill(opened["model"], model_requests(job))
        responses = await _collect(job, opened["model"])
        judge = Judge(opened["judge"], judge_config(spec)) if "judge" in opened else None
        if judge is not None and spec.judge.batch:
            await batch.fill(judge.model, judge_requests(responses, judge.config))
        tallied = await job.estimator.estimate(job.questions, spec.country, responses, judge)
    finally:
        for model in opened.values():
            await model.aclose()
    boot = spec.bootstrap
    scores = summarise(tallied.scored, boot.resamples, boot.confidence, boot.method.value, spec.seed, spec.resamples_answers)
    usage = {role: model.usage for role, model in opened.items()}
    return RunResult(scores, tallied.records, usage, {role: _cost(model) for role, model in opened.items()})


async def _collect(job: Job, model: Model):
    planned = planned_prompts(job)
    progress = Progress(sum(len(p.sample_indices) for p in planned), f"{job.spec.country.label}/{job.spec.style.name}")
    responses = await collect(model, planned, model_config(job), progress)
    progress.close()
    return responses


def model_requests(job: Job) -> list[batch.Item]:
    """The model's requests, as the live path plans them: every prompt with its sample indices."""
    config = model_config(job)
    return [(item.prompt.messages, config, item.sample_indices) for item in planned_prompts(job)]


def judge_requests(responses: list[Response], config: GenerateConfig) -> list[batch.Item]:
    """The judge's requests for these answers: one per distinct (question, answer), as `Judge` asks them."""
    pairs = dict.fromkeys((r.question.text, tuple(r.question.options), r.completion.text) for r in responses)
    asked = (judge_messages(*pair) for pair in pairs)
    return [(messages, config, (0,)) for messages in asked if messages is not None]


def _cost(model: Model) -> RoleCost:
    """Spent: live tokens at list prices, batch tokens at batch prices. Workload: at the price this job pays."""
    usage = model.usage
    spent = (usage.prompt_tokens, usage.completion_tokens)
    live = (usage.prompt_tokens - usage.batch_prompt_tokens, usage.completion_tokens - usage.batch_completion_tokens)
    spent_usd = model.cost_usd(*live) + model.cost_usd(usage.batch_prompt_tokens, usage.batch_completion_tokens, batch=True)
    served = (model.served[0], model.served[1])
    return RoleCost(spent, served, spent_usd, model.cost_usd(*served, batch=model.spec.batch))
