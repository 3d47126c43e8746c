"""What a job costs: the dry-run estimate before any request, and the USD price of tokens after a run.

A dry run plans every request exactly as a real run would (same prompts, same sample indices, same
n-batching) and looks each answer up in the response cache, so it counts only what would be sent:
- model requests: exact (one per batch of `n_per_request` samples with at least one answer not cached;
  assumes the endpoint honours `n`, else the run falls back to one request per sample);
- judge requests: exact for model answers already cached (their judge prompt is known and looked up);
  one per model answer not yet cached (an upper bound: identical answers are judged once);
- prompt tokens: characters / 4 of the actual prompts (a judge prompt of an answer not yet known counts
  the answer at the model's max_tokens);
- completion tokens: the max_tokens limit of each answer, so tokens and cost are upper bounds (worst case).

Each cost is shown at list prices (live requests) and at batch prices (list x `batch_price_factor`, the
Batch API); the headline `<= $` is the price the job would pay (batch for a role with `batch=true`).

The **expected** cost counts the same requests and prompts, with each answer at its expected length
instead of max_tokens: the mean completion tokens of the answers already cached for the same model and
style (any country of `dataset.countries`, same settings), or, when none is cached, a prior: the style's
`expected_tokens` (conf/style: classification 1, cot 300, scenarios 250) and JUDGE_PRIOR_TOKENS for the
judge. A judge prompt for an answer not known yet counts the answer at the model's expected length. The
line says which basis each role used. Priors are rough guesses, not measurements: a first small run
(`dataset.limit=5`) caches answers and makes the estimate measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from culturealign import pipeline
from culturealign.extraction import judge_messages
from culturealign.models.base import Completion, Message
from culturealign.models.model import Model
from culturealign.prompts import judge_prompt
from culturealign.spec import JobSpec

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 1024  # when no max_tokens limit is set
JUDGE_PRIOR_TOKENS = 80  # the judge's JSON (a sentence of reasoning and a classification), until measured


@dataclass
class RoleEstimate:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # worst case: every answer at max_tokens
    cost_usd: float = 0.0  # worst case at the price the job pays (batch prices for a batch role)
    worst_usd_live: float = 0.0
    worst_usd_batch: float = 0.0
    expected_prompt_tokens: int = 0
    expected_completion_tokens: int = 0
    expected_usd_live: float = 0.0
    expected_usd_batch: float = 0.0
    measured_answers: int = 0  # cached answers whose mean length gave the expected tokens
    measured_jobs: int = 0  # jobs (1 for a job) whose expected tokens were measured ...
    prior_jobs: int = 0  # ... or came from the prior
    prior_tokens: int = 0  # the prior per answer (of a job; the largest in a total)

    def add(self, prompt_chars: int, completion_tokens: int, expected_chars: int, expected_tokens: float) -> None:
        self.requests += 1
        self.prompt_tokens += -(-prompt_chars // CHARS_PER_TOKEN)
        self.completion_tokens += completion_tokens
        self.expected_prompt_tokens += -(-expected_chars // CHARS_PER_TOKEN)
        self.expected_completion_tokens += round(expected_tokens)

    def price(self, model: Model) -> None:
        worst = (self.prompt_tokens, self.completion_tokens)
        expected = (self.expected_prompt_tokens, self.expected_completion_tokens)
        self.worst_usd_live, self.worst_usd_batch = model.cost_usd(*worst), model.cost_usd(*worst, batch=True)
        self.expected_usd_live, self.expected_usd_batch = model.cost_usd(*expected), model.cost_usd(*expected, batch=True)
        self.cost_usd = self.worst_usd_batch if model.spec.batch else self.worst_usd_live

    def basis(self, role: str) -> str:
        """What the expected tokens rest on: the mean length of cached answers, or the prior."""
        measured = f"mean of {self.measured_answers} cached answers"
        jobs = self.measured_jobs + self.prior_jobs
        if jobs == 1:
            tokens = f"{self.prior_tokens} token{'s' * (self.prior_tokens != 1)}"
            return f"{role}: {measured}" if self.measured_jobs else f"{role}: prior of {tokens} per answer"
        if not self.prior_jobs:
            return f"{role}: {measured} (all {jobs} jobs)"
        if not self.measured_jobs:
            return f"{role}: priors (all {jobs} jobs)"
        return f"{role}: {measured} ({self.measured_jobs} jobs), priors ({self.prior_jobs} jobs)"


@dataclass(frozen=True)
class Expected:
    """Expected completion tokens per answer, and what they rest on."""

    tokens: float
    answers: int  # cached answers measured; 0: `tokens` is the prior

    @classmethod
    def of(cls, cached: list[Completion], prior: int, limit: int) -> "Expected":
        if cached:
            return cls(sum(c.completion_tokens for c in cached) / len(cached), len(cached))
        return cls(min(prior, limit), 0)

    def record(self, estimate: RoleEstimate) -> None:
        estimate.measured_answers, estimate.measured_jobs = self.answers, int(self.answers > 0)
        estimate.prior_jobs, estimate.prior_tokens = int(self.answers == 0), 0 if self.answers else round(self.tokens)


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
        prompt, completion, worst_live, worst_batch, expected_prompt, expected_completion, expected_live, expected_batch = (
            sum(getattr(r, name) for r in self.roles.values())
            for name in ("prompt_tokens", "completion_tokens", "worst_usd_live", "worst_usd_batch", "expected_prompt_tokens",
                         "expected_completion_tokens", "expected_usd_live", "expected_usd_batch")
        )  # fmt: skip
        basis = "; ".join(r.basis(role) for role, r in self.roles.items())
        return (
            f"{label}: dry run: {self.requests} requests ({parts}), ~{prompt} prompt tokens, "
            f"<= {completion} completion tokens, <= ${self.cost_usd:.2f}; {self.cached_answers} answers cached\n"
            f"  cost (live / batch): worst case ${worst_live:.2f} / ${worst_batch:.2f}; expected ${expected_live:.2f} / "
            f"${expected_batch:.2f} (~{expected_prompt} prompt, ~{expected_completion} completion tokens; {basis})"
        )


def total(plans: list[JobPlan]) -> JobPlan:
    summed = JobPlan()
    for plan in plans:
        summed.cached_answers += plan.cached_answers
        for role, estimate in plan.roles.items():
            into = summed.roles.setdefault(role, RoleEstimate())
            for name, value in asdict(estimate).items():
                summed_value = max(getattr(into, name), value) if name == "prior_tokens" else getattr(into, name) + value
                setattr(into, name, summed_value)
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
    expected = Expected.of(_cached_answers(job, model, config), job.spec.style.expected_tokens, per_answer)
    estimate, answers = RoleEstimate(), []
    for item in pipeline.planned_prompts(job):
        found = model.cached(item.prompt.messages, config, item.sample_indices)
        chars = _chars(item.prompt.messages)
        for start in range(0, len(item.sample_indices), per_request):
            missing = [i for i in item.sample_indices[start : start + per_request] if i not in found]
            if missing:
                estimate.add(chars, per_answer * len(missing), chars, expected.tokens * len(missing))
        answers += [(item.question, found.get(index)) for index in item.sample_indices]
    expected.record(estimate)
    plan = JobPlan({"model": estimate}, cached_answers=sum(answer is not None for _, answer in answers))
    if "judge" in models:
        plan.roles["judge"] = _plan_judge(job.spec, models["judge"], answers, per_answer, expected.tokens)
    for role, role_estimate in plan.roles.items():
        role_estimate.price(models[role])
    return plan


def _cached_answers(job: pipeline.Job, model: Model, config) -> list[Completion]:
    """The cached answers of this model and style (same settings) for every country of the dataset selection."""
    countries = {country.name: country for country in [job.spec.country, *job.spec.selection]}
    return [
        answer
        for country in countries.values()
        for item in pipeline.planned_prompts(job, country)
        for answer in model.cached(item.prompt.messages, config, item.sample_indices).values()
    ]


def _plan_judge(spec: JobSpec, judge: Model, answers: list, answer_tokens: int, expected_answer: float) -> RoleEstimate:
    config = pipeline.judge_config(spec)
    per_answer = config.max_tokens or DEFAULT_COMPLETION_TOKENS
    estimate, seen, judged = RoleEstimate(), set(), []
    pending = []  # (prompt characters, whether the judged answer is still to come and adds to them)
    for question, answer in answers:
        if answer is None:  # not known yet: a new, distinct answer (max_tokens long at worst)
            pending.append((len(judge_prompt(question.text, question.options, "")), True))
            continue
        pair = (question.text, tuple(question.options), answer.text)
        messages = judge_messages(*pair)
        if messages is None or pair in seen:
            continue
        seen.add(pair)
        cached = judge.cached(messages, config, [0])
        judged += cached.values()
        if not cached:
            pending.append((_chars(messages), False))
    expected = Expected.of(judged, JUDGE_PRIOR_TOKENS, per_answer)
    for chars, answer_to_come in pending:
        worst = chars + answer_tokens * CHARS_PER_TOKEN * answer_to_come
        likely = chars + round(expected_answer * CHARS_PER_TOKEN) * answer_to_come
        estimate.add(worst, per_answer, likely, expected.tokens)
    expected.record(estimate)
    return estimate


def _chars(messages: tuple[Message, ...]) -> int:
    return sum(len(m["content"]) for m in messages)
