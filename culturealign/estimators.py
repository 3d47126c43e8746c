"""How a job turns model answers into per-question answer distributions: two estimators, one interface.

`SampleEstimator` (the paper's): `samples` sampled answers per question, each mapped to an option by the
classification rule or by a judge; the distribution is the share of each option among classifiable answers.

`LogprobEstimator`: one request per (country, question) instead of `samples` sampled answers. The model is
asked for its first answer token with `top_logprobs` at temperature 1 (so the cache entry serves every
temperature), and the answer distribution at the configured temperature T is computed from it, as
sampling would draw it:
1. probabilities p of the returned alternatives are tempered, p^(1/T), and renormalised over the returned
   alternatives (mass outside the top alternatives is unknown and ignored); T = 0 puts all mass on the
   most likely token;
2. if top_p < 1, nucleus truncation is applied to the tempered distribution (the smallest set of most
   likely tokens whose mass reaches top_p, renormalised), as samplers do after temperature;
3. a token whose stripped text is an option number "1".."n" counts for that option; all other mass is
   the unclassifiable share (a refusal, prose, ...).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Protocol, Sequence

from culturealign.dataset import Question
from culturealign.errors import ModelError
from culturealign.extraction import Judge, parse_option_number
from culturealign.models.base import Completion, GenerateConfig
from culturealign.progress import Progress
from culturealign.sampling import Response
from culturealign.scoring import QuestionScore, add, tally
from culturealign.spec import ClassificationRule, CountrySpec, Estimator as EstimatorName, JobSpec

MAX_TOP_LOGPROBS = 20  # OpenAI's limit


def logprobs_config(config: GenerateConfig) -> GenerateConfig:
    """The request of the logprob estimator: one token, its top alternatives, untempered."""
    return replace(config, temperature=1.0, top_p=1.0, max_tokens=1, top_logprobs=MAX_TOP_LOGPROBS)


def tempered(logprobs: dict[str, float], temperature: float, top_p: float = 1.0) -> dict[str, float]:
    """Token -> probability at `temperature` and `top_p`, over the returned alternatives."""
    if not logprobs:
        return {}
    if temperature == 0:
        best = max(logprobs, key=logprobs.get)
        return {best: 1.0}
    scaled = {token: lp / temperature for token, lp in logprobs.items()}
    top = max(scaled.values())
    weights = {token: math.exp(value - top) for token, value in scaled.items()}
    total = sum(weights.values())
    probs = {token: w / total for token, w in weights.items()}
    return _nucleus(probs, top_p) if top_p < 1 else probs


def _nucleus(probs: dict[str, float], top_p: float) -> dict[str, float]:
    kept, mass = {}, 0.0
    for token, p in sorted(probs.items(), key=lambda item: -item[1]):
        kept[token] = p
        mass += p
        if mass >= top_p:
            break
    return {token: p / mass for token, p in kept.items()}


def option_mass(logprobs: dict[str, float], n_options: int, temperature: float, top_p: float = 1.0) -> dict[int, float]:
    """Option number -> share of answers; 1 - the sum is the unclassifiable share."""
    mass: dict[int, float] = {}
    for token, p in tempered(logprobs, temperature, top_p).items():
        option = parse_option_number(token, n_options)  # the same rule as a sampled answer
        if option is not None:
            mass[option] = mass.get(option, 0.0) + p
    return mass


def add_estimate(score: QuestionScore, completion: Completion, temperature: float, top_p: float) -> dict[int, float]:
    """Add one logprob request's answer distribution to a question's score; returns the option mass."""
    if completion.first_token_logprobs is None:
        raise ModelError(
            "estimator=logprobs: the endpoint returned no logprobs; use an endpoint that supports "
            "`logprobs`/`top_logprobs` or estimator=sample"
        )
    mass = option_mass(completion.first_token_logprobs, len(score.question.options), temperature, top_p)
    add(score, mass, 1.0, responses=1)
    return mass


@dataclass(frozen=True)
class ResponseRecord:
    """One model answer as logged: the prompt, the raw text and how it was read."""

    question_id: str
    variant: str
    sample_index: int
    prompt: str
    response: str
    finish_reason: str | None
    judge_output: str | None
    option: int | None  # 1-based; None = unclassifiable (or, for logprobs, see option_mass)
    cached: bool
    first_token_logprobs: dict[str, float] | None = None
    option_mass: dict[int, float] | None = None

    @classmethod
    def of(cls, response: Response, option: int | None, judge_output: str | None = None, **extra) -> "ResponseRecord":
        c = response.completion
        return cls(
            response.question.id, response.variant, response.sample_index, response.prompt, c.text,
            c.finish_reason, judge_output, option, c.cached, **extra,
        )  # fmt: skip

    def as_dict(self) -> dict:
        record = asdict(self)
        if self.first_token_logprobs is None:
            del record["first_token_logprobs"], record["option_mass"]
        return record


@dataclass
class Tally:
    """An estimator's result: per-question counts (not yet scored) and one record per answer."""

    scored: list[QuestionScore]
    records: list[ResponseRecord]


class Estimator(Protocol):
    def samples(self, configured: int) -> int:
        """Answers to request per question."""
        ...

    def generate_config(self, config: GenerateConfig) -> GenerateConfig:
        """The settings its requests are sent with."""
        ...

    async def estimate(
        self, questions: Sequence[Question], country: CountrySpec, responses: list[Response], judge: Judge | None
    ) -> Tally: ...


class SampleEstimator:
    """Each sampled answer chooses one option (parsed, or read by the judge) or is unclassifiable."""

    def __init__(self, rule: ClassificationRule = ClassificationRule.strict) -> None:
        self.rule = rule

    def samples(self, configured: int) -> int:
        return configured

    def generate_config(self, config: GenerateConfig) -> GenerateConfig:
        return config

    async def estimate(self, questions, country, responses, judge) -> Tally:
        options = await self._extract(responses, judge)
        scored = tally(questions, country, [(r.question.id, option) for r, (option, _) in zip(responses, options)])
        return Tally(scored, [ResponseRecord.of(r, o, j) for r, (o, j) in zip(responses, options)])

    async def _extract(self, responses: list[Response], judge: Judge | None) -> list[tuple[int | None, str | None]]:
        if judge is None:
            return [(self._parse(r), None) for r in responses]
        items = [(r.question.text, r.question.options, r.completion.text) for r in responses]
        progress = Progress(len({(q, r) for q, _, r in items}), "judge")
        usage = judge.model.usage

        def judged() -> None:  # the judge reports no per-item hit: show its model's running count
            progress.advance(1, cached=usage.cache_hits - progress.cached)

        extractions = await judge.classify(items, on_done=judged)
        progress.close()
        return [(e.option, e.judge_output) for e in extractions]

    def _parse(self, response: Response) -> int | None:
        truncated = response.completion.finish_reason == "length"
        return parse_option_number(response.completion.text, len(response.question.options), truncated, self.rule)


class LogprobEstimator:
    """One response per question: its first-token probabilities become fractional option counts."""

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature, self.top_p = temperature, top_p

    def samples(self, configured: int) -> int:
        return 1

    def generate_config(self, config: GenerateConfig) -> GenerateConfig:
        return logprobs_config(config)

    async def estimate(self, questions, country, responses, judge) -> Tally:
        scored = {score.question.id: score for score in tally(questions, country, [])}
        records = []
        for response in responses:
            mass = add_estimate(scored[response.question.id], response.completion, self.temperature, self.top_p)
            logprobs = response.completion.first_token_logprobs
            records.append(ResponseRecord.of(response, None, first_token_logprobs=logprobs, option_mass=mass))
        return Tally(list(scored.values()), records)


def estimator_for(spec: JobSpec) -> Estimator:
    if spec.estimator is EstimatorName.logprobs:
        return LogprobEstimator(spec.model.temperature, spec.model.top_p)
    return SampleEstimator(spec.extraction.classification)
