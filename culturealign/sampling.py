"""Plan every request of a job and send them concurrently through one model client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

from culturealign.dataset import Country, Question
from culturealign.models.base import Completion, GenerateConfig, ModelClient
from culturealign.progress import Progress
from culturealign.prompts import Prompt, options_prompt, scenario_prompt, user


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
    questions: Sequence[Question],
    country: Country,
    instruction: str | None,
    templates: Sequence[str],
    samples: int,
) -> list[PlannedPrompt]:
    """Options styles: one prompt per question with `samples` samples. Scenarios: sample i uses template
    i mod T, so samples spread evenly over the templates (100 samples, 10 templates: 10 x 10)."""
    planned = []
    for question in questions:
        if instruction is not None:
            text = options_prompt(country.name, question.text, question.options, instruction)
            planned.append(PlannedPrompt(question, Prompt("options", user(text)), tuple(range(samples))))
            continue
        for number, template in enumerate(templates):
            indices = tuple(range(number, samples, len(templates)))
            if indices:
                text = scenario_prompt(country.name, question.text, template)
                planned.append(PlannedPrompt(question, Prompt(f"scenario_{number + 1}", user(text)), indices))
    return planned


def requests_needed(planned: Sequence[PlannedPrompt], samples_per_request: int) -> int:
    return sum(-(-len(p.sample_indices) // samples_per_request) for p in planned)


async def collect(
    client: ModelClient,
    planned: Sequence[PlannedPrompt],
    config: GenerateConfig,
    samples_per_request: int = 1,
    progress: Progress | None = None,
) -> list[Response]:
    """Every planned sample, one task per request; each request is cached (if the client caches) as soon as
    it returns, so an interrupted job loses at most the requests in flight."""

    async def one_request(item: PlannedPrompt, indices: tuple[int, ...]) -> list[Response]:
        completions = await client.complete(item.prompt.messages, config, indices)
        if progress is not None:
            progress.advance(len(completions), cached=sum(c.cached for c in completions))
        text = item.prompt.messages[-1]["content"]
        return [
            Response(item.question, item.prompt.variant, index, text, completion)
            for index, completion in zip(indices, completions)
        ]

    tasks = [
        one_request(item, item.sample_indices[start : start + samples_per_request])
        for item in planned
        for start in range(0, len(item.sample_indices), samples_per_request)
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
