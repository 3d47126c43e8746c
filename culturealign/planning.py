"""What a job costs: the dry-run estimate before any request, and the USD price of tokens after a run.

A dry run plans every request exactly as a real run would (same prompts, same sample indices, same
n-batching) and looks each answer up in the response cache, so it counts only what would be sent:
- model requests: exact (one per batch of `n_per_request` samples with at least one answer not cached;
  assumes the endpoint honours `n`, else the run falls back to one request per sample);
- judge requests: exact for model answers already cached (their judge prompt is known and looked up);
  one per model answer not yet cached (an upper bound: identical answers are judged once);
- prompt tokens: characters / 4 of the actual prompts (a judge prompt of an answer not yet known counts
  the answer at the model's max_tokens);
- completion tokens: the max_tokens limit of each answer, so tokens and cost are upper bounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from culturealign import pipeline
from culturealign.extraction import judge_messages
from culturealign.models.base import Message
from culturealign.models.model import Model
from culturealign.prompts import judge_prompt
from culturealign.spec import JobSpec

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 1024  # when no max_tokens limit is set


@dataclass
class RoleEstimate:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, prompt_chars: int, completion_tokens: int) -> None:
        self.requests += 1
        self.prompt_tokens += -(-prompt_chars // CHARS_PER_TOKEN)
        self.completion_tokens += completion_tokens


@dataclass
class JobPlan:
    roles: dict[str, RoleEstimate] = field(default_factory=dict)
    cached_answers: int = 0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.roles.values())

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.roles.values())

    def as_dict(self) -> dict:
        return {"roles": {role: asdict(r) for role, r in self.roles.items()}, "cached_answers": self.cached_answers}

    @classmethod
    def from_dict(cls, data: dict) -> "JobPlan":
        return cls({role: RoleEstimate(**r) for role, r in data["roles"].items()}, data["cached_answers"])

    def describe(self, label: str) -> str:
        parts = ", ".join(f"{role} {r.requests}" for role, r in self.roles.items())
        prompt = sum(r.prompt_tokens for r in self.roles.values())
        completion = sum(r.completion_tokens for r in self.roles.values())
        return (
            f"{label}: dry run: {self.requests} requests ({parts}), ~{prompt} prompt tokens, "
            f"<= {completion} completion tokens, <= ${self.cost_usd:.2f}; {self.cached_answers} answers cached"
        )


def total(plans: list[JobPlan]) -> JobPlan:
    summed = JobPlan()
    for plan in plans:
        summed.cached_answers += plan.cached_answers
        for role, estimate in plan.roles.items():
            into = summed.roles.setdefault(role, RoleEstimate())
            for name, value in asdict(estimate).items():
                setattr(into, name, getattr(into, name) + value)
    return summed


def plan_job(spec: JobSpec) -> JobPlan:
    """The requests, tokens and cost a real run of `spec` would spend now, sending nothing."""
    job = pipeline.prepare(spec)
    cache = pipeline.open_cache(spec)
    try:
        return _plan(job, pipeline.models(spec, cache))
    finally:
        if cache is not None:
            cache.close()


def _plan(job: pipeline.Job, models: dict[str, Model]) -> JobPlan:
    """Asks the job's own (unconnected) models for their cache identity and samples per request."""
    model = models["model"]
    config = pipeline.model_config(job)
    per_answer = config.max_tokens or DEFAULT_COMPLETION_TOKENS
    per_request = model.samples_per_request
    estimate, answers = RoleEstimate(), []
    for item in pipeline.planned_prompts(job):
        found = model.cached(item.prompt.messages, config, item.sample_indices)
        for start in range(0, len(item.sample_indices), per_request):
            missing = [i for i in item.sample_indices[start : start + per_request] if i not in found]
            if missing:
                estimate.add(_chars(item.prompt.messages), per_answer * len(missing))
        answers += [(item.question, found.get(index)) for index in item.sample_indices]
    plan = JobPlan({"model": estimate}, cached_answers=sum(answer is not None for _, answer in answers))
    if "judge" in models:
        plan.roles["judge"] = _plan_judge(job.spec, models["judge"], answers, per_answer)
    for role, role_estimate in plan.roles.items():
        role_estimate.cost_usd = models[role].cost_usd(role_estimate.prompt_tokens, role_estimate.completion_tokens)
    return plan


def _plan_judge(spec: JobSpec, judge: Model, answers: list, answer_tokens: int) -> RoleEstimate:
    config = pipeline.judge_config(spec)
    per_answer = config.max_tokens or DEFAULT_COMPLETION_TOKENS
    estimate, seen = RoleEstimate(), set()
    for question, answer in answers:
        if answer is None:  # not known yet: assume a new, distinct answer of max_tokens length
            blank = judge_prompt(question.text, question.options, "")
            estimate.add(len(blank) + answer_tokens * CHARS_PER_TOKEN, per_answer)
            continue
        pair = (question.text, tuple(question.options), answer.text)
        messages = judge_messages(*pair)
        if messages is None or pair in seen:
            continue
        seen.add(pair)
        if not judge.cached(messages, config, [0]):
            estimate.add(_chars(messages), per_answer)
    return estimate


def _chars(messages: tuple[Message, ...]) -> int:
    return sum(len(m["content"]) for m in messages)
