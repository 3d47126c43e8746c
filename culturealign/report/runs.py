"""MLflow -> plain records: a sweep's finished child runs with their params, metrics and per-question scores.

Also finds which parameters vary across the sweep besides country and style (model, temperature, ...),
so tables and comparisons pick up any new dimension without code changes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from culturealign.errors import ReportError
from culturealign.reachability import unreachable_reason
from culturealign.tracking import names

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "culturealign"
SWEEP_TAG = names.KIND_TAG  # "sweep" on a sweep's parent run
FIXED_KEYS = ("country", "style")
# Hydra group choices first: a group choice explains the `group.*` params that change with it.
PREFERRED_KEYS = ("model", "judge", "scenarios", "dataset", "experiment")
RUN_KEY = "run"  # last-resort key when two runs agree on every param
# Labels of runs made before styles carried a `label` (the paper's spelling)
STYLE_LABELS = {"classification": "Classification", "cot": "CoT", "scenarios": "Scenarios"}


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def open_client(tracking_uri: str):
    """An MlflowClient on an existing store (never creates one: a report of nothing is a mistake)."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        raise ReportError(
            f"no MLflow store at {tracking_uri}; run from the folder where culturealign ran, "
            "or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    if tracking_uri.startswith(("http://", "https://")):  # MLflow would retry a closed port for minutes
        reason = unreachable_reason(tracking_uri)
        if reason:
            raise ReportError(f"MLflow tracking server {tracking_uri} is unreachable: {reason}; start it or fix --tracking-uri")
    import mlflow  # heavy: only when a report is actually built

    from culturealign.tracking.store import quiet_mlflow

    quiet_mlflow()

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file read is noise

    try:  # a file that is no MLflow store, a database that refuses us: one line, not a traceback
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - mlflow raises many kinds; all mean the same to the user
        reason = " ".join(str(error).split())[:200] if str(error) else type(error).__name__
        raise ReportError(f"cannot read the MLflow store at {tracking_uri} ({reason}); check --tracking-uri") from None
    return client


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ReportError(f"run {run_id!r} not found in {client.tracking_uri}; check the run id and --tracking-uri") from None


def latest_sweep_id(client, experiment_name: str) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ReportError(f"no experiment {experiment_name!r} in {client.tracking_uri}; check --experiment")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{names.SWEEP_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise ReportError(
            f"experiment {experiment_name!r} has no sweep; run `culturealign --multirun ...` first "
            "or pass --parent-run"
        )
    return parents[0].info.run_id


@dataclass(frozen=True)
class RunRecord:
    """One finished job: its params, metrics, and per-question scores from distributions.json."""

    run_id: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    country_label: str
    questions: list[dict]

    @property
    def country(self) -> str:
        return self.params.get("country", "")

    @property
    def style(self) -> str:
        return self.params.get("style", "")

    @property
    def style_label(self) -> str:
        return self.params.get(names.STYLE_LABEL_PARAM) or STYLE_LABELS.get(self.style, self.style)

    @property
    def model_name(self) -> str:
        return self.params.get("model.name") or self.params.get("model", "")

    def key(self, name: str) -> str:
        return self.run_id[:8] if name == RUN_KEY else self.params.get(name, "")

    def scores(self) -> dict[str, float]:
        """Question id -> similarity, for questions with at least one classifiable answer."""
        return {q["id"]: q["similarity"] for q in self.questions if q.get("similarity") is not None}

    def humans(self) -> dict[str, list[float]]:
        return {q["id"]: q["human_distribution"] for q in self.questions}


@dataclass
class Sweep:
    parent_id: str
    runs: list[RunRecord]  # finished children, in start order
    skipped: list[str] = field(default_factory=list)  # unfinished children, described
    keys: list[str] = field(default_factory=list)  # extra varying params, besides country and style

    def group(self, run: RunRecord) -> tuple[str, ...]:
        return tuple(run.key(k) for k in self.keys)

    def styles(self) -> list[str]:
        return _in_order(r.style for r in self.runs)

    def style_labels(self) -> list[str]:
        labels = {r.style: r.style_label for r in self.runs}
        return [labels[style] for style in self.styles()]

    def constant(self, param: str) -> str | None:
        """The value every run has for `param`, or None when it differs (or is missing)."""
        values = {run.params.get(param) for run in self.runs}
        return values.pop() if len(values) == 1 else None

    def constant_metric(self, metric: str) -> int | None:
        values = {run.metrics.get(metric) for run in self.runs}
        value = values.pop() if len(values) == 1 else None
        return None if value is None or value != value else int(value)

    def setting(self) -> str:
        """What every run shares, for titles: `model gpt-4o, 72 questions, 100 samples per question`."""
        model = self.constant("model.name")
        parts = [f"model {model}" if model else "several models"]
        questions = self.constant_metric(names.N_QUESTIONS)
        if questions is not None:
            parts.append(f"{questions} questions")
        samples = self.constant("samples")
        if samples is not None:
            parts.append(f"{samples} samples per question")
        return ", ".join(parts)

    def interval(self) -> str:
        """What the CIs are, from the runs' bootstrap settings: `95% bootstrap CI over questions`."""
        confidence = self.constant("bootstrap.confidence")
        level = f"{100 * float(confidence):g}%" if confidence else "bootstrap"
        return f"{level} bootstrap CI over questions" if confidence else "bootstrap CI over questions"

    def groups(self) -> list[tuple[str, ...]]:
        return _in_order(self.group(r) for r in self.runs)

    def group_label(self, group: tuple[str, ...]) -> str:
        return ", ".join(f"{k}={v}" for k, v in zip(self.keys, group))

    def rows(self) -> list["Row"]:
        """One row per (extra keys, country), its runs by style, in sweep order."""
        rows: dict[tuple, Row] = {}
        for run in self.runs:
            group = self.group(run)
            row = rows.setdefault((group, run.country), Row(group, run.country, run.country_label, {}))
            row.runs[run.style] = run
        return list(rows.values())


@dataclass
class Row:
    group: tuple[str, ...]  # values of Sweep.keys
    country: str  # config choice, e.g. "us"
    label: str  # display label, e.g. "US"
    runs: dict[str, RunRecord]  # style -> run

    def humans(self) -> dict[str, list[float]]:
        """Question id -> the country's survey distribution, over every question of the row's runs."""
        merged: dict[str, list[float]] = {}
        for run in self.runs.values():
            merged.update(run.humans())
        return merged


def load_sweep(client, parent_id: str) -> Sweep:
    parent = get_run(client, parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{names.PARENT_TAG}` = '{parent_id}'", max_results=10000
    )
    children = sorted(children, key=lambda run: run.info.start_time)
    finished = [r for r in children if r.info.status == "FINISHED" and names.SIMILARITY in r.data.metrics]
    if not finished:
        raise ReportError(
            f"run {parent_id} has no finished child runs ({len(children)} children); "
            "pass the parent run of a sweep that completed at least one job"
        )
    finished_ids = {r.info.run_id for r in finished}
    skipped = [f"{_describe(r)}: {r.info.status}" for r in children if r.info.run_id not in finished_ids]
    runs, broken = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run in finished:
            try:
                runs.append(_load_run(client, run, Path(scratch)))
            except ReportError as error:  # a broken run is named, the rest are reported
                broken.append(f"{_describe(run)}: {error}")
    if not runs:
        raise ReportError(f"run {parent_id}: none of its {len(finished)} finished child runs can be read ({'; '.join(broken)})")
    skipped += broken
    return Sweep(parent_id, runs, skipped, varying_keys(runs))


def _load_run(client, run, scratch: Path) -> RunRecord:
    run_id = run.info.run_id
    folder = scratch / run_id
    folder.mkdir()
    try:
        distributions = client.download_artifacts(run_id, names.DISTRIBUTIONS_ARTIFACT, str(folder))
        with open(distributions, encoding="utf-8") as handle:
            questions = json.load(handle)
    except Exception as error:  # noqa: BLE001 - missing, unreadable or not JSON: the same to the reader
        kind = "unreadable" if isinstance(error, ValueError) else "missing"
        raise ReportError(f"its {names.DISTRIBUTIONS_ARTIFACT} artifact is {kind}") from None
    return RunRecord(
        run_id=run_id,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        country_label=run.data.params.get(names.COUNTRY_LABEL_PARAM) or run.data.params.get("country", ""),
        questions=questions,
    )


def _describe(run) -> str:
    params = run.data.params
    return f"run {run.info.run_id[:8]} ({params.get('country', '?')}/{params.get('style', '?')})"


def varying_keys(runs: list[RunRecord]) -> list[str]:
    """Params that split the runs further than country and style do, most explanatory first.

    A param is kept only if it separates runs the keys chosen so far do not, so `model.name` is dropped
    when `model` already varies with it. If runs still collide, their run id becomes a key."""
    names = {name for run in runs for name in run.params} - set(FIXED_KEYS)
    candidates = sorted(
        names,
        key=lambda n: (n not in PREFERRED_KEYS, PREFERRED_KEYS.index(n) if n in PREFERRED_KEYS else 0, n),
    )
    keys: list[str] = []
    parts = _partition_size(runs, FIXED_KEYS)
    for name in candidates:
        size = _partition_size(runs, (*FIXED_KEYS, *keys, name))
        if size > parts:
            keys.append(name)
            parts = size
    if parts < len(runs):
        keys.append(RUN_KEY)
    return keys


def _partition_size(runs: list[RunRecord], names) -> int:
    return len({tuple(run.key(name) for name in names) for run in runs})


def _in_order(values) -> list:
    """Distinct values in order of first appearance (the sweep's order)."""
    return list(dict.fromkeys(values))
