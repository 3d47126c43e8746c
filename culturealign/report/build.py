"""One sweep -> a report folder (tables, paired differences, drill-down, figures), also logged to the parent run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from culturealign.report import baselines, compare, figures, table
from culturealign.report.runs import Sweep, latest_sweep_id, load_sweep, open_client

ARTIFACT_FOLDER = "report"


@dataclass(frozen=True)
class Report:
    parent_id: str
    folder: Path
    files: list[Path]
    markdown: str  # Table 1, its reference points and the paired differences, as printed
    comparisons: list[compare.Comparison]


def default_folder(parent_id: str) -> Path:
    return Path("outputs") / "reports" / parent_id


def build_report(
    tracking_uri: str,
    experiment: str = "culturealign",
    parent_id: str | None = None,
    folder: Path | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    client = open_client(tracking_uri)
    parent_id = parent_id or latest_sweep_id(client, experiment)
    sweep = load_sweep(client, parent_id)
    folder = folder or default_folder(parent_id)
    folder.mkdir(parents=True, exist_ok=True)
    report = write_report(sweep, folder)
    if log_to_mlflow:
        log_report(client, report)
    return report


def write_report(sweep: Sweep, folder: Path) -> Report:
    references = baselines.references(sweep)
    comparisons = compare.comparisons(sweep)
    main_tables = [table.table1(sweep), table.references_table(sweep, references)]
    markdown = "\n".join(table.markdown(t) for t in main_tables)
    paired = table.paired_table(comparisons)
    files = {
        "table1.md": markdown,
        "table1.tex": "\n".join(table.latex(t) for t in main_tables),
        "paired.md": table.markdown(paired),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    table.write_runs_csv(sweep, references, folder / "table1.csv")
    table.write_paired_csv(comparisons, folder / "paired.csv")
    table.write_questions_csv(sweep, folder / "questions.csv")
    pictures = figures.write_figures(sweep, references, folder)
    written = [folder / name for name in (*files, "table1.csv", "paired.csv", "questions.csv")] + pictures
    return Report(sweep.parent_id, folder, written, markdown + "\n" + table.markdown(paired), comparisons)


def log_report(client, report: Report) -> None:
    """Files under the parent run's `report/` artifacts, paired differences as its metrics."""
    from mlflow.entities import Metric

    for path in report.files:
        client.log_artifact(report.parent_id, str(path), ARTIFACT_FOLDER)
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(value), now, 0)
        for comparison in report.comparisons
        for name, value in comparison.metrics().items()
        if value == value  # NaN (no shared question) is no measurement
    ]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(report.parent_id, metrics=metrics[start : start + 1000])
