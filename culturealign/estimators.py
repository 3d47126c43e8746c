"""The logprob estimator: one request per (country, question) instead of `samples` sampled answers.

The model is asked for its first answer token with `top_logprobs` at temperature 1 (so the cache entry
serves every temperature), and the answer distribution at the configured temperature T is computed
from it, as sampling would draw it:
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
from dataclasses import replace

from culturealign.errors import ModelError
from culturealign.extraction import parse_option_number
from culturealign.models.base import Completion, GenerateConfig
from culturealign.scoring import QuestionScore, add

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
