"""Judge audit, as the paper did by hand (98% on 50 responses per setting), as a feature.

`export` writes a seeded random sample of a judged run's free-text responses with the question and options
and an empty `label` column: a blind sheet, without the judge's verdict, so it cannot sway the labeller.
The judge's output and option for each item go to a separate file beside it (`<sheet>.judge.csv`). A
person fills each label with the option number the response takes (0: none / unclassifiable); `score`
takes the judge's verdicts from the run's tracked responses (not from any file a person can edit) and
measures the judge against the labels: accuracy and Cohen's kappa
with bootstrap CIs over the audited responses, logged to the run.
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

ID_COLUMNS = ["item", "run_id", "question_id", "variant", "sample_index"]
COLUMNS = [*ID_COLUMNS, "question", "options", "response", "label"]  # the blind sheet
JUDGE_COLUMNS = [*ID_COLUMNS, "judge_output", "judge_option"]  # the key, kept apart
UNCLASSIFIABLE = 0
AUDIT_ARTIFACT = "judge_audit.csv"
JUDGE_SUFFIX = ".judge.csv"


def judge_file(sheet: Path) -> Path:
    """Where the judge's verdicts for an audit sheet are kept: `audit.csv` -> `audit.judge.csv`."""
    return sheet.with_name(sheet.stem + JUDGE_SUFFIX)


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
    """Write a seeded random sample of `n` judged responses (all of them if fewer) to the blind sheet `out`,
    and the judge's verdicts on them to `judge_file(out)`."""
    if n < 1:
        raise ReportError(f"--n must be at least 1, got {n}")
    taken = [str(p) for p in (out, judge_file(out)) if p.exists()]
    if taken:  # a sheet may hold a person's labels: never written over
        raise ReportError(f"{taken[0]} already exists; pass another --out (an audit sheet may hold labels)")
    records, questions = judged_responses(client, run_id)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=min(n, len(records)), replace=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet, key = [], []
    for item, index in enumerate(chosen, start=1):
        record = records[index]
        question = questions[record["question_id"]]
        ids = {"item": item, "run_id": run_id, "question_id": record["question_id"],
               "variant": record.get("variant"), "sample_index": record.get("sample_index")}  # fmt: skip
        options = "\n".join(f"{i}. {text}" for i, text in enumerate(question["options"], start=1))
        sheet.append(ids | {"question": question["question"], "options": options, "response": record["response"], "label": ""})
        key.append(ids | {"judge_output": record.get("judge_output"), "judge_option": record.get("option") or UNCLASSIFIABLE})
    _write(out, COLUMNS, sheet)
    _write(judge_file(out), JUDGE_COLUMNS, key)
    return len(chosen)


def _write(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def _read(path: Path, required: list[str], what: str) -> list[dict]:
    if not path.is_file():
        raise ReportError(f"{what} {path} does not exist; create it with `culturealign-audit export`")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportError(f"{path} lacks column(s) {', '.join(missing)}; use the files from `culturealign-audit export`")
        return list(reader)


def record_key(question_id, variant, sample_index) -> tuple[str, str, str]:
    """How a sheet row names a response of the run: CSV cells are text, an absent value is empty."""
    return tuple("" if value is None else str(value) for value in (question_id, variant, sample_index))


def run_verdicts(records: list[dict], rows: list[dict], path: Path) -> np.ndarray:
    """The judge's option for each labelled row, taken from the run's own responses (never from a file a
    person can edit: a sheet or judge file changed by hand cannot change the judge's accuracy)."""
    verdicts = {record_key(r.get("question_id"), r.get("variant"), r.get("sample_index")): r for r in records}
    options = []
    for line, row in enumerate(rows, start=2):
        record = verdicts.get(record_key(row["question_id"], row.get("variant"), row.get("sample_index")))
        if record is None:
            raise ReportError(
                f"{path} line {line}: the run has no response {row['question_id']} variant {row.get('variant')!r} "
                f"sample {row.get('sample_index')!r}; re-export the sheet (do not edit its id columns)"
            )
        options.append(record.get("option") or UNCLASSIFIABLE)
    return np.array(options)


def read_labels(path: Path, run_id: str, questions: dict[str, dict], records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(human labels, judge options) from a filled-in audit sheet and the run's responses; every problem
    is one line naming the fix."""
    rows = _read(path, ID_COLUMNS + ["label"], "audit file")
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
    return np.array(labels), run_verdicts(records, rows, path)


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
    """Score the judge (its verdicts as tracked in the run) against the labels in `path` and log the result
    (and the labelled file) to the run."""
    records, questions = judged_responses(client, run_id)
    labels, judged = read_labels(path, run_id, questions, records)
    score = agreement(labels, judged, seed=seed)
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in score.metrics().items()])
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / AUDIT_ARTIFACT
        copy.write_bytes(path.read_bytes())
        client.log_artifact(run_id, str(copy))
    return score
