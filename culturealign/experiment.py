"""One job of a sweep: config -> dataset -> prompts -> model (cached) -> extraction -> scores.

Plain functions of a composed config, so tests and the CLI run exactly the same code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from omegaconf import DictConfig

from culturealign import config as config_
from culturealign.dataset import Country, Question, ensure_downloaded, read_questions, select_questions
from culturealign.errors import DatasetError
from culturealign.estimators import add_estimate, logprobs_config
from culturealign.extraction import Judge, parse_option_number
from culturealign.models import build_client
from culturealign.models.base import GenerateConfig, ModelClient, UsageStats
from culturealign.models.cache import CachedClient, ResponseCache
from culturealign.progress import Progress
from culturealign.sampling import PlannedPrompt, Response, collect, plan
from culturealign.scoring import Scores, summarise, tally


@dataclass
class RunResult:
    scores: Scores
    records: list[dict]  # one per response: prompt, raw answer, judge output, extracted option
    usage: dict[str, UsageStats] = field(default_factory=dict)  # "model" / "judge" -> what was spent
    workload: dict[str, tuple[int, int]] = field(default_factory=dict)  # role -> tokens of the answers used

    @property
    def workload_tokens(self) -> tuple[int, int]:
        """Prompt and completion tokens of the model answers used (cached or not)."""
        return self.workload.get("model", (0, 0))


@dataclass(frozen=True)
class Job:
    """A validated job: what to ask, of whom, in which style."""

    cfg: DictConfig
    style: config_.Style
    country: Country
    questions: list[Question]


def load_questions(cfg: DictConfig) -> list[Question]:
    """The selected questions: `dataset.path`, or the Hugging Face file downloaded once and reused."""
    data = cfg.dataset
    path = data.path or ensure_downloaded(data.url, data.cache_dir)
    countries = [config_.load_country(name) for name in data.countries]
    questions = select_questions(read_questions(path), countries, data.n_options, data.limit)
    if not questions:
        raise DatasetError(
            f"no question in {path} has {data.n_options} options and human data for "
            f"{', '.join(data.countries)}; check dataset.path and dataset.countries"
        )
    return questions


def check_country(questions: list[Question], country: Country) -> None:
    for question in questions:
        question.human_distribution(country)  # raises a DatasetError naming the keys available


def open_client(model_cfg: DictConfig, cfg: DictConfig, cache: ResponseCache | None, group: str) -> ModelClient:
    client = build_client(model_cfg, cfg.concurrency, seed=cfg.seed, logprobs=cfg.estimator == "logprobs", group=group)
    return CachedClient(client, cache) if cache is not None else client


def open_cache(cfg: DictConfig) -> ResponseCache | None:
    return ResponseCache(cfg.cache.url, cfg.cache.get("password_env")) if cfg.cache.enabled else None


def prepare(cfg: DictConfig, country_label: str = "") -> Job:
    """Validate the config and load the questions; raises before any request is planned."""
    config_.validate(cfg)
    country = config_.country_from(cfg.country, country_label)
    questions = load_questions(cfg)
    check_country(questions, country)
    return Job(cfg, config_.style_from(cfg), country, questions)


def planned_prompts(job: Job) -> list[PlannedPrompt]:
    """Every prompt with its sample indices; the logprob estimator asks each prompt once."""
    templates = list(job.cfg.scenarios.templates) if job.style.instruction is None else []
    samples = 1 if job.cfg.estimator == "logprobs" else job.cfg.samples
    return plan(job.questions, job.country, job.style.instruction, templates, samples)


def model_config(job: Job) -> GenerateConfig:
    generate = config_.generate_config(job.cfg.model, job.style, job.cfg.seed)
    return logprobs_config(generate) if job.cfg.estimator == "logprobs" else generate


def judge_config(cfg: DictConfig) -> GenerateConfig:
    return config_.generate_config(cfg.judge, None, cfg.seed)


def run(cfg: DictConfig, country_label: str = "") -> RunResult:
    job = prepare(cfg, country_label)
    cache = open_cache(cfg)
    try:
        return asyncio.run(_run(job, cache))
    finally:
        if cache is not None:
            cache.close()


async def _run(job: Job, cache: ResponseCache | None) -> RunResult:
    cfg = job.cfg
    clients = {"model": open_client(cfg.model, cfg, cache, "model")}
    if job.style.extraction == "judge":
        clients["judge"] = open_client(cfg.judge, cfg, cache, "judge")
    try:
        responses = await _collect(job, clients["model"])
        if cfg.estimator == "logprobs":
            scored, records = _logprob_scores(job, responses)
        else:
            scored, records = await _sample_scores(job, responses, clients.get("judge"))
    finally:
        for client in clients.values():
            await client.aclose()
    boot = cfg.bootstrap
    scores = summarise(scored, boot.resamples, boot.confidence, boot.method, cfg.seed)
    usage = {role: client.usage for role, client in clients.items()}
    workload = {role: _served_tokens(client) for role, client in clients.items()}
    return RunResult(scores, records, usage, workload)


async def _collect(job: Job, client: ModelClient) -> list[Response]:
    planned = planned_prompts(job)
    progress = Progress(sum(len(p.sample_indices) for p in planned), f"{job.country.label}/{job.style.name}")
    per_request = getattr(client, "samples_per_request", 1)
    responses = await collect(client, planned, model_config(job), per_request, progress)
    progress.close()
    return responses


async def _sample_scores(job: Job, responses: list[Response], judge_client: ModelClient | None):
    options = await _extract(responses, judge_client, job.cfg)
    scored = tally(job.questions, job.country, [(r.question.id, option) for r, (option, _) in zip(responses, options)])
    return scored, [_record(r, o, j) for r, (o, j) in zip(responses, options)]


def _logprob_scores(job: Job, responses: list[Response]):
    """One response per question: its first-token probabilities become fractional option counts."""
    scored = {score.question.id: score for score in tally(job.questions, job.country, [])}
    temperature, top_p = float(job.cfg.model.temperature), float(job.cfg.model.top_p)
    records = []
    for response in responses:
        mass = add_estimate(scored[response.question.id], response.completion, temperature, top_p)
        records.append(
            _record(response, None, None)
            | {"first_token_logprobs": response.completion.first_token_logprobs, "option_mass": mass}
        )
    return list(scored.values()), records


def _served_tokens(client: ModelClient) -> tuple[int, int]:
    """Tokens of every answer the job used: the cache knows them; without it, everything was spent."""
    served = getattr(client, "served_tokens", None)
    return tuple(served) if served is not None else (client.usage.prompt_tokens, client.usage.completion_tokens)


async def _extract(responses: list[Response], judge_client: ModelClient | None, cfg) -> list[tuple[int | None, str | None]]:
    if judge_client is None:
        return [(parse_option_number(r.completion.text, len(r.question.options), _truncated(r)), None) for r in responses]
    judge = Judge(judge_client, judge_config(cfg))
    items = [(r.question.text, r.question.options, r.completion.text) for r in responses]
    progress = Progress(len({(q, r) for q, _, r in items}), "judge")
    usage = judge_client.usage

    def judged() -> None:  # the judge reports no per-item hit: show its client's running count
        progress.advance(1, cached=usage.cache_hits - progress.cached)

    extractions = await judge.classify(items, on_done=judged)
    progress.close()
    return [(e.option, e.judge_output) for e in extractions]


def _truncated(response: Response) -> bool:
    return response.completion.finish_reason == "length"


def _record(response: Response, option: int | None, judge_output: str | None) -> dict:
    return {
        "question_id": response.question.id,
        "variant": response.variant,
        "sample_index": response.sample_index,
        "prompt": response.prompt,
        "response": response.completion.text,
        "finish_reason": response.completion.finish_reason,
        "judge_output": judge_output,
        "option": option,
        "cached": response.completion.cached,
    }
