"""One job of a sweep: config -> dataset -> prompts -> model (cached) -> extraction -> scores.

Plain functions of a composed config, so tests and the CLI run exactly the same code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from culturealign import config as config_
from culturealign.dataset import Country, Question, ensure_downloaded, read_questions, select_questions
from culturealign.errors import DatasetError
from culturealign.extraction import Judge, parse_option_number
from culturealign.models import build_client
from culturealign.models.base import ModelClient, UsageStats
from culturealign.models.cache import CachedClient, ResponseCache
from culturealign.progress import Progress
from culturealign.sampling import Response, collect, plan
from culturealign.scoring import Scores, summarise, tally


@dataclass
class RunResult:
    scores: Scores
    records: list[dict]  # one per response: prompt, raw answer, judge output, extracted option
    usage: dict[str, UsageStats] = field(default_factory=dict)  # "model" / "judge" -> what was spent
    workload_tokens: tuple[int, int] = (0, 0)  # prompt, completion tokens of all responses used


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
    return ResponseCache(Path(cfg.cache.path)) if cfg.cache.enabled else None


def run(cfg: DictConfig, country_label: str = "") -> RunResult:
    config_.validate(cfg)
    style = config_.style_from(cfg)
    country = config_.country_from(cfg.country, country_label)
    questions = load_questions(cfg)
    check_country(questions, country)
    cache = open_cache(cfg)
    try:
        return asyncio.run(_run(cfg, style, country, questions, cache))
    finally:
        if cache is not None:
            cache.close()


async def _run(cfg, style, country, questions, cache) -> RunResult:
    client = open_client(cfg.model, cfg, cache, "model")
    judge_client = open_client(cfg.judge, cfg, cache, "judge") if style.extraction == "judge" else None
    try:
        templates = list(cfg.scenarios.templates) if style.instruction is None else []
        planned = plan(questions, country, style.instruction, templates, cfg.samples)
        generate = config_.generate_config(cfg.model, style, cfg.seed)
        per_request = getattr(client, "samples_per_request", 1)
        progress = Progress(sum(len(p.sample_indices) for p in planned), f"{country.label}/{style.name}")
        responses = await collect(client, planned, generate, per_request, progress)
        progress.close()
        options = await _extract(responses, judge_client, cfg)
    finally:
        await client.aclose()
        if judge_client is not None:
            await judge_client.aclose()
    scored = tally(questions, country, [(r.question.id, option) for r, (option, _) in zip(responses, options)])
    boot = cfg.bootstrap
    scores = summarise(scored, boot.resamples, boot.confidence, boot.method, cfg.seed)
    usage = {"model": client.usage} | ({"judge": judge_client.usage} if judge_client else {})
    workload = (
        sum(r.completion.prompt_tokens for r in responses),
        sum(r.completion.completion_tokens for r in responses),
    )
    return RunResult(scores, [_record(r, o, j) for r, (o, j) in zip(responses, options)], usage, workload)


async def _extract(responses: list[Response], judge_client: ModelClient | None, cfg) -> list[tuple[int | None, str | None]]:
    if judge_client is None:
        return [(parse_option_number(r.completion.text, len(r.question.options)), None) for r in responses]
    judge = Judge(judge_client, config_.generate_config(cfg.judge, None, cfg.seed))
    items = [(r.question.text, r.question.options, r.completion.text) for r in responses]
    progress = Progress(len({(q, r) for q, _, r in items}), "judge")
    extractions = await judge.classify(items, on_done=progress.advance)
    progress.close()
    return [(e.option, e.judge_output) for e in extractions]


def _record(response: Response, option: int | None, judge_output: str | None) -> dict:
    return {
        "question_id": response.question.id,
        "variant": response.variant,
        "sample_index": response.sample_index,
        "prompt": response.prompt,
        "response": response.completion.text,
        "judge_output": judge_output,
        "option": option,
        "cached": response.completion.cached,
    }
