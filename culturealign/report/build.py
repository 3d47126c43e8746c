"""One sweep -> a report folder (tables, paired differences, drill-down, figures), also logged to the parent run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from culturealign.report import baselines, compare, figures, table, world
from culturealign.report.runs import Sweep, latest_sweep_id, load_sweep, open_client
from culturealign.tracking import names

ARTIFACT_FOLDER = "report"


@dataclass(frozen=True)
class Report:
    parent_id: str
    folder: Path
    files: list[Path]
    text: str  # Table 1, its reference points and the paired differences, aligned for a terminal
    cells: dict[str, float]  # the parent run's metrics: one per cell of Table 1
    summary: str  # Table 1 in Markdown: the parent run's description in the MLflow UI


def default_folder(parent_id: str) -> Path:
    return Path("outputs") / "reports" / parent_id


def build_report(
    tracking_uri: str,
    experiment: str = "culturealign",
    parent_id: str | None = None,
    folder: Path | None = None,
    log_to_mlflow: bool = True,
    world_report: bool = False,
) -> Report:
    client = open_client(tracking_uri)
    parent_id = parent_id or latest_sweep_id(client, experiment)
    sweep = load_sweep(client, parent_id)
    folder = folder or default_folder(parent_id)
    folder.mkdir(parents=True, exist_ok=True)
    report = write_report(sweep, folder, world_report)
    if log_to_mlflow:
        log_report(client, report)
    return report


def write_report(sweep: Sweep, folder: Path, world_report: bool = False) -> Report:
    """The report's files; with the world report (`world.py`) when asked or when the sweep has many countries."""
    references = baselines.references(sweep)
    comparisons = compare.comparisons(sweep)
    world_report = world_report or world.is_world(sweep)  # its heatmap replaces the human-population columns
    shown = world.without_humans(references) if world_report else references
    tables = [table.table1(sweep), table.references_table(sweep, shown), table.paired_table(comparisons)]
    if world_report:
        tables[1].notes.append(f"Human populations are in {world.HEATMAP_PNG} and {world.HUMANS_CSV} (one column each would not fit).")
    text = "\n".join(table.text(t) for t in tables)
    files = {
        "table1.txt": text,
        "table1.md": "\n".join(table.markdown(t) for t in tables[:2]),
        "table1.tex": "\n".join(table.latex(t) for t in tables[:2]),
        "paired.md": table.markdown(tables[2]),
    }
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    table.write_runs_csv(sweep, references, folder / "table1.csv")
    table.write_paired_csv(sweep, comparisons, folder / "paired.csv")
    table.write_questions_csv(sweep, folder / "questions.csv")
    pictures = figures.write_figures(sweep, references, folder)
    written = [folder / name for name in (*files, "table1.csv", "paired.csv", "questions.csv")] + pictures
    if world_report:
        world_files, ranking = world.write_world(sweep, references, folder)
        written, text = written + world_files, f"{text}\n{ranking}"
    summary = table.markdown(tables[0]) + f"\nThe full report (reference points, paired differences, figures) is in {ARTIFACT_FOLDER}/.\n"
    return Report(sweep.parent_id, folder, written, text, cell_metrics(sweep), summary)


def cell_metrics(sweep: Sweep) -> dict[str, float]:
    """`similarity/us/cot` and `unclassifiable/us/cot` (plus any other swept values) for every run."""
    metrics = {}
    for run in sweep.runs:
        extra = tuple((key, run.key(key)) for key in sweep.keys)
        for kind, metric in ((names.CELL_SIMILARITY, names.SIMILARITY), (names.CELL_UNCLASSIFIABLE, names.UNCLASSIFIABLE_RATE)):
            value = run.metrics.get(metric)
            if value is not None and value == value:  # NaN: no measurement
                metrics[names.cell_metric(kind, run.country, run.style, extra)] = value
    return metrics


def log_report(client, report: Report) -> None:
    """Files under the parent run's `report/` artifacts, Table 1 as its description; one metric per cell of
    Table 1 (paired differences stay in the report: as metrics they would bury the headline numbers)."""
    from mlflow.entities import Metric

    for path in report.files:
        client.log_artifact(report.parent_id, str(path), ARTIFACT_FOLDER)
    client.set_tag(report.parent_id, names.DESCRIPTION_TAG, report.summary[: names.MAX_TAG_CHARS])
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, 0) for name, value in report.cells.items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(report.parent_id, metrics=metrics[start : start + 1000])
