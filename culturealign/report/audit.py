"""Judge audit, as the paper did by hand (98% on 50 responses per setting), as a feature.

`export` writes a seeded random sample of a judged run's free-text responses with the question, options,
the judge's output and option, and an empty `label` column; a person fills each label with the option
number the response takes (0: none / unclassifiable). `score` then measures the judge against those
labels: accuracy and Cohen's kappa with bootstrap CIs over the audited responses, logged to the run.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from culturealign.errors import ReportError
from culturealign.metrics import Estimate
from culturealign.report.runs import SWEEP_TAG, get_run
from culturealign.tracking import names

COLUMNS = [
    "run_id", "question_id", "variant", "sample_index", "question", "options",
    "response", "judge_output", "judge_option", "label",
]
UNCLASSIFIABLE = 0
AUDIT_ARTIFACT = "judge_audit.csv"


@dataclass(frozen=True)
class AuditScore:
    accuracy: Estimate
    kappa: Estimate

    def metrics(self) -> dict[str, float]:
        values = {}
        for name, estimate in (("accuracy", self.accuracy), ("kappa", self.kappa)):
            prefix = f"judge_audit_{name}"
            values |= {prefix: estimate.value, f"{prefix}_ci_low": estimate.low, f"{prefix}_ci_high": estimate.high}
        return values | {"judge_audit_n": self.accuracy.n}

    def summary(self) -> str:
        a, k = self.accuracy, self.kappa
        return (
            f"judge vs human labels on {a.n} responses: accuracy {a.value:.3f} [{a.low:.3f}, {a.high:.3f}], "
            f"Cohen's kappa {k.value:.3f} [{k.low:.3f}, {k.high:.3f}]"
        )


def _artifact(client, run_id: str, name: str, folder: str) -> Path:
    try:
        return Path(client.download_artifacts(run_id, name, folder))
    except Exception:
        raise ReportError(f"run {run_id} has no {name} artifact; audit a run made by culturealign") from None


def judged_responses(client, run_id: str) -> tuple[list[dict], dict[str, dict]]:
    """(responses.jsonl records, questions by id) of a run whose answers a judge read."""
    run = get_run(client, run_id)
    if run.data.tags.get(SWEEP_TAG) == "sweep":
        raise ReportError(f"run {run_id} is a sweep's parent run; audit one of its cot or scenarios child runs")
    with tempfile.TemporaryDirectory() as folder:
        records = [json.loads(line) for line in _artifact(client, run_id, names.RESPONSES_ARTIFACT, folder).open()]
        questions = json.loads(_artifact(client, run_id, names.DISTRIBUTIONS_ARTIFACT, folder).read_text(encoding="utf-8"))
    if not any(record.get("judge_output") for record in records):
        style = run.data.params.get("style", "this")
        raise ReportError(
            f"run {run_id} ({style} style) has no judge outputs: its answers were parsed as option numbers, not "
            "judged; audit a cot or scenarios run"
        )
    return records, {q["id"]: q for q in questions}


def export_sample(client, run_id: str, n: int, seed: int, out: Path) -> int:
    """Write a seeded random sample of `n` judged responses (all of them if fewer) to `out`."""
    if n < 1:
        raise ReportError(f"--n must be at least 1, got {n}")
    records, questions = judged_responses(client, run_id)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=min(n, len(records)), replace=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for index in chosen:
            record = records[index]
            question = questions[record["question_id"]]
            writer.writerow({
                "run_id": run_id,
                "question_id": record["question_id"],
                "variant": record.get("variant"),
                "sample_index": record.get("sample_index"),
                "question": question["question"],
                "options": "\n".join(f"{i}. {text}" for i, text in enumerate(question["options"], start=1)),
                "response": record["response"],
                "judge_output": record.get("judge_output"),
                "judge_option": record.get("option") or UNCLASSIFIABLE,
                "label": "",
            })
    return len(chosen)


def read_labels(path: Path, run_id: str, questions: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    """(human labels, judge options) from a filled-in audit file; every problem is one line naming the fix."""
    if not path.is_file():
        raise ReportError(f"audit file {path} does not exist; create it with `culturealign-audit export`")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("run_id", "question_id", "judge_option", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportError(f"{path} lacks column(s) {', '.join(missing)}; use a file from `culturealign-audit export`")
        rows = list(reader)
    if not rows:
        raise ReportError(f"{path} has no responses; export a sample with `culturealign-audit export`")
    foreign = {row["run_id"] for row in rows} - {run_id}
    if foreign:
        raise ReportError(f"{path} was exported from run {sorted(foreign)[0]}, not {run_id}; pass --run {sorted(foreign)[0]}")
    unlabeled = [str(line) for line, row in enumerate(rows, start=2) if not row["label"].strip()]
    if unlabeled:
        raise ReportError(
            f"{path}: {len(unlabeled)} of {len(rows)} rows have no label "
            f"(line{'s' if len(unlabeled) > 1 else ''} {', '.join(unlabeled[:10])}); "
            "fill each with the option number the response takes, or 0 if it takes none"
        )
    labels = [_label(row, line, path, questions) for line, row in enumerate(rows, start=2)]
    return np.array(labels), np.array([int(row["judge_option"]) for row in rows])


def _label(row: dict, line: int, path: Path, questions: dict[str, dict]) -> int:
    question = questions.get(row["question_id"])
    if question is None:
        raise ReportError(f"{path} line {line}: question {row['question_id']} is not in the run; re-export the file")
    n_options = len(question["options"])
    text = row["label"].strip()
    if not text.isdigit() or int(text) > n_options:
        raise ReportError(
            f"{path} line {line}: label {text!r} is not an option number 1..{n_options} or 0 (unclassifiable)"
        )
    return int(text)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement beyond chance. Both raters using one single category is perfect agreement (1), not 0/0."""
    observed = float(np.mean(a == b))
    categories = np.union1d(a, b)
    expected = float(sum(np.mean(a == c) * np.mean(b == c) for c in categories))
    return 1.0 if math.isclose(expected, 1.0) else (observed - expected) / (1.0 - expected)


def agreement(labels: np.ndarray, judged: np.ndarray, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> AuditScore:
    """Accuracy and kappa of the judge against the labels, with percentile CIs from one paired bootstrap
    over the audited responses (both statistics see the same resamples)."""
    rows = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    accuracies = np.mean(labels[rows] == judged[rows], axis=1)
    kappas = np.array([cohen_kappa(labels[i], judged[i]) for i in rows])
    tail = 100 * (1 - confidence) / 2
    estimates = []
    for value, sample in ((float(np.mean(labels == judged)), accuracies), (cohen_kappa(labels, judged), kappas)):
        low, high = np.percentile(sample, [tail, 100 - tail])
        estimates.append(Estimate(value, min(float(low), value), max(float(high), value), len(labels)))
    return AuditScore(*estimates)


def score_audit(client, run_id: str, path: Path, seed: int = 0) -> AuditScore:
    """Score the judge against the labels in `path` and log the result (and the labelled file) to the run."""
    _, questions = judged_responses(client, run_id)
    labels, judged = read_labels(path, run_id, questions)
    score = agreement(labels, judged, seed=seed)
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in score.metrics().items()])
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / AUDIT_ARTIFACT
        copy.write_bytes(path.read_bytes())
        client.log_artifact(run_id, str(copy))
    return score
