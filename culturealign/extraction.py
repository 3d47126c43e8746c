"""From raw model text to a chosen option (1..n) or None (unclassifiable).

Classification answers must be exactly an option number (or, with extraction.classification=leading,
start with one). Free text (chain of thought, scenarios) goes
to a judge model with the paper's prompt B.1; its JSON is parsed leniently (code fences, prose around it),
and "0", an out-of-range number or unreadable output means unclassifiable. The raw judge output is kept.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Sequence

from culturealign.models.base import GenerateConfig
from culturealign.models.model import Model
from culturealign.prompts import judge_prompt, user
from culturealign.spec import ClassificationRule

_LEADING_NUMBER = re.compile(r"([0-9]{1,6})(?![0-9])")  # longer digit runs are no option number
_CLASSIFICATION_FIELD = re.compile(r'"classification"\s*:\s*"?\s*(-?\d+)', re.IGNORECASE)
MAX_JUDGED_CHARS = 20_000  # longer responses are cut for the judge (the count keeps them)


@dataclass(frozen=True)
class Extraction:
    option: int | None  # 1-based option number, None = unclassifiable
    judge_output: str | None = None


def parse_option_number(
    text: str, n_options: int, truncated: bool = False, rule: ClassificationRule = ClassificationRule.strict
) -> int | None:
    """Classification style. `strict` (the paper's rule): the whole answer is one option number
    (whitespace allowed); an answer cut by max_tokens (`truncated`) was longer than what we saw, so it is
    not a bare number. `leading`: the answer starts with an option number followed by a non-digit
    ("2. Disagree"); a cut answer counts only when the number visibly ended before the cut."""
    stripped = text.strip()
    if rule is ClassificationRule.leading:
        match = _LEADING_NUMBER.match(stripped)
        ended = match is not None and (match.end() < len(stripped) or not truncated)
        number = int(match.group(1)) if ended else 0
    else:
        bare = not truncated and len(stripped) <= 6 and stripped.isascii() and stripped.isdigit()
        number = int(stripped) if bare else 0
    return number if 1 <= number <= n_options else None


def parse_judge_output(text: str, n_options: int) -> int | None:
    """The judge's classification, or None for "0", out-of-range numbers and unreadable output."""
    value = _classification_value(text)
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= n_options else None


def _classification_value(text: str):
    """The last top-level JSON object carrying "classification": a judge may quote the response it
    classifies (JSON and all) before giving its own answer. Objects inside an object are part of it."""
    decoder, found = json.JSONDecoder(), None
    position = text.find("{")
    while position >= 0:
        try:
            data, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position = text.find("{", position + 1)
            continue
        if isinstance(data, dict) and "classification" in data:
            found = data["classification"]
        position = text.find("{", end)
    if found is not None:
        return found
    matches = _CLASSIFICATION_FIELD.findall(text)  # e.g. truncated JSON or unescaped quotes in reasoning
    return matches[-1] if matches else None


def judge_messages(question: str, options: Sequence[str], response: str):
    """The judge request for one response (its first MAX_JUDGED_CHARS), or None for an empty response,
    which is unclassifiable without asking."""
    if not response.strip():
        return None
    return user(judge_prompt(question, options, response[:MAX_JUDGED_CHARS]))


class Judge:
    """Asks a judge model once per distinct (question, response) pair."""

    def __init__(self, model: Model, config: GenerateConfig):
        self.model = model
        self.config = config

    async def classify(
        self, items: Sequence[tuple[str, Sequence[str], str]], on_done=lambda: None
    ) -> list[Extraction]:
        """items: (question, options, response) triples; returns one Extraction per item."""
        distinct = {item[:1] + (tuple(item[1]),) + item[2:]: None for item in items}
        keys = list(distinct)
        outputs = await asyncio.gather(*(self._ask(*key, on_done) for key in keys))
        by_key = dict(zip(keys, outputs))
        return [by_key[(q, tuple(o), r)] for q, o, r in items]

    async def _ask(self, question: str, options: tuple[str, ...], response: str, on_done) -> Extraction:
        messages = judge_messages(question, options, response)
        if messages is None:
            on_done()
            return Extraction(None, None)
        [completion] = await self.model.complete(messages, self.config, [0])
        on_done()
        return Extraction(parse_judge_output(completion.text, len(options)), completion.text)
