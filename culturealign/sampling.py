"""Plan every request of a job and send them concurrently through one model client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

from culturealign.dataset import Question
from culturealign.models.base import Completion, GenerateConfig
from culturealign.models.model import Model
from culturealign.progress import Progress
from culturealign.prompts import Prompt, options_prompt, scenario_prompt, user
from culturealign.spec import CountrySpec, StyleKind, StyleSpec


@dataclass(frozen=True)
class PlannedPrompt:
    question: Question
    prompt: Prompt
    sample_indices: tuple[int, ...]


@dataclass(frozen=True)
class Response:
    question: Question
    variant: str
    sample_index: int
    prompt: str
    completion: Completion


def plan(
    questions: Sequence[Question], country: CountrySpec, style: StyleSpec, templates: Sequence[str], samples: int
) -> list[PlannedPrompt]:
    """Options styles: one prompt per question with `samples` samples. Scenarios: sample i uses template
    i mod T, so samples spread evenly over the templates (100 samples, 10 templates: 10 x 10)."""
    planned = []
    for question in questions:
        if style.kind is StyleKind.options:
            text = options_prompt(country.name, question.text, question.options, style.instruction)
            planned.append(PlannedPrompt(question, Prompt("options", user(text)), tuple(range(samples))))
            continue
        for number, template in enumerate(templates):
            indices = tuple(range(number, samples, len(templates)))
            if indices:
                text = scenario_prompt(country.name, question.text, template)
                planned.append(PlannedPrompt(question, Prompt(f"scenario_{number + 1}", user(text)), indices))
    return planned


async def collect(
    model: Model, planned: Sequence[PlannedPrompt], config: GenerateConfig, progress: Progress | None = None
) -> list[Response]:
    """Every planned sample, one task per request of `model.samples_per_request` samples; the model caches
    each request's answers as soon as they arrive, so an interrupted job loses at most those in flight."""

    async def one_request(item: PlannedPrompt, indices: tuple[int, ...]) -> list[Response]:
        completions = await model.complete(item.prompt.messages, config, indices)
        if progress is not None:
            progress.advance(len(completions), cached=sum(c.cached for c in completions))
        text = item.prompt.messages[-1]["content"]
        return [
            Response(item.question, item.prompt.variant, index, text, completion)
            for index, completion in zip(indices, completions)
        ]

    per_request = model.samples_per_request
    tasks = [
        one_request(item, item.sample_indices[start : start + per_request])
        for item in planned
        for start in range(0, len(item.sample_indices), per_request)
    ]
    batches = await _gather_or_cancel(tasks)
    return [response for batch in batches for response in batch]


async def _gather_or_cancel(coroutines) -> list:
    """Like gather, but the first failure cancels the rest instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
