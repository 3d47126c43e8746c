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

from omegaconf import DictConfig

from culturealign import experiment
from culturealign.extraction import judge_messages
from culturealign.models.base import Completion, GenerateConfig, Message
from culturealign.models.cache import ResponseCache
from culturealign.prompts import judge_prompt

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 1024  # when no max_tokens limit is set


def cost_usd(model_cfg: DictConfig, prompt_tokens: int, completion_tokens: int) -> float:
    """Price of tokens at the model config's list prices (USD per million tokens; 0 when unset)."""
    price_in = float(model_cfg.get("price_input_per_mtok") or 0.0)
    price_out = float(model_cfg.get("price_output_per_mtok") or 0.0)
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


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


def plan_job(cfg: DictConfig, country_label: str = "") -> JobPlan:
    """The requests, tokens and cost a real run of `cfg` would spend now, sending nothing."""
    job = experiment.prepare(cfg, country_label)
    cache = experiment.open_cache(cfg)
    try:
        return _plan(job, cache)
    finally:
        if cache is not None:
            cache.close()


def _plan(job: experiment.Job, cache: ResponseCache | None) -> JobPlan:
    cfg = job.cfg
    config = experiment.model_config(job)
    per_answer = config.max_tokens or DEFAULT_COMPLETION_TOKENS
    per_request = int(cfg.model.get("n_per_request") or 1) if cfg.model.provider == "openai" else 1
    identity = _identity(cfg.model, cfg, "model")
    model, answers = RoleEstimate(), []
    for item in experiment.planned_prompts(job):
        found = _lookup(cache, identity, item.prompt.messages, config, item.sample_indices)
        for start in range(0, len(item.sample_indices), per_request):
            missing = [i for i in item.sample_indices[start : start + per_request] if i not in found]
            if missing:
                model.add(_chars(item.prompt.messages), per_answer * len(missing))
        answers += [(item.question, found.get(index)) for index in item.sample_indices]
    plan = JobPlan({"model": model}, cached_answers=sum(answer is not None for _, answer in answers))
    if job.style.extraction == "judge":
        plan.roles["judge"] = _plan_judge(cfg, cache, answers, per_answer)
    for role, estimate in plan.roles.items():
        estimate.cost_usd = cost_usd(cfg[role], estimate.prompt_tokens, estimate.completion_tokens)
    return plan


def _plan_judge(cfg: DictConfig, cache: ResponseCache | None, answers: list, answer_tokens: int) -> RoleEstimate:
    config = experiment.judge_config(cfg)
    per_answer = config.max_tokens or DEFAULT_COMPLETION_TOKENS
    identity = _identity(cfg.judge, cfg, "judge")
    judge, seen = RoleEstimate(), set()
    for question, answer in answers:
        if answer is None:  # not known yet: assume a new, distinct answer of max_tokens length
            blank = judge_prompt(question.text, question.options, "")
            judge.add(len(blank) + answer_tokens * CHARS_PER_TOKEN, per_answer)
            continue
        pair = (question.text, tuple(question.options), answer.text)
        messages = judge_messages(*pair)
        if messages is None or pair in seen:
            continue
        seen.add(pair)
        if not _lookup(cache, identity, messages, config, [0]):
            judge.add(_chars(messages), per_answer)
    return judge


def _lookup(cache, identity: str, messages, config: GenerateConfig, indices) -> dict[int, Completion]:
    return cache.lookup(identity, messages, config, indices) if cache is not None else {}


def _chars(messages: tuple[Message, ...]) -> int:
    return sum(len(m["content"]) for m in messages)


def _identity(model_cfg: DictConfig, cfg: DictConfig, group: str) -> str:
    """The cache identity of a model, without opening a network client (no API key needed)."""
    if model_cfg.provider == "openai":
        from culturealign.models.openai_api import OpenAIClient

        return OpenAIClient.identity_for(model_cfg.base_url, model_cfg.name)
    return experiment.open_client(model_cfg, cfg, None, group).identity
