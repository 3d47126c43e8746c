"""Table 1 as in the paper (rows countries, columns interaction styles: similarity [CI] | unclassifiable %),
with a reference-points table beside it, in Markdown, LaTeX and a tidy CSV (one line per run).

Extra varying dimensions (model, temperature, ...) become leading row-key columns.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from culturealign.report.baselines import References
from culturealign.report.compare import Comparison
from culturealign.report.runs import Row, Sweep
from culturealign.tracking import names

DASH = "–"  # a cell of the grid that was not run


@dataclass(frozen=True)
class Table:
    """Row-key columns, then blocks of columns under a title (the paper's two side-by-side blocks)."""

    title: str
    key_columns: list[str]
    blocks: list[tuple[str, list[str]]]
    rows: list[list[str]]
    notes: list[str]


def format_similarity(value: float, low: float, high: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} [{low:.2f}, {high:.2f}]"


def format_percent(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{100 * rate:.2f}%"


def format_number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def table1(sweep: Sweep) -> Table:
    styles = sweep.styles()
    rows = []
    for row in sweep.rows():
        runs = [row.runs.get(style) for style in styles]
        similarity = [_similarity_cell(run.metrics) if run else DASH for run in runs]
        unclassifiable = [format_percent(run.metrics[names.UNCLASSIFIABLE_RATE]) if run else DASH for run in runs]
        rows.append([*_keys(row), *similarity, *unclassifiable])
    notes = [
        "Similarity: mean over questions of 1 - W1/(options - 1) between the human and the model answer "
        "distribution (Wasserstein), [bootstrap CI over questions]. Unclassifiable: share of all answers "
        "that gave no option.",
        *(f"Not included: {s}" for s in sweep.skipped),
    ]
    return Table(
        "Table 1: cultural alignment by interaction style",
        [*sweep.keys, "Country"],
        [("Similarity ↑", styles), ("Unclassifiable ↓", styles)],
        rows,
        notes,
    )


def references_table(sweep: Sweep, references: dict[tuple, References]) -> Table:
    styles = sweep.styles()
    others = list(dict.fromkeys(label for refs in references.values() for label in refs.humans))
    rows = []
    for row in sweep.rows():
        refs = references[(row.group, row.country)]
        humans = [format_number(refs.humans[label]) if label in refs.humans else DASH for label in others]
        ceilings = [format_number(refs.ceilings[style]) if style in refs.ceilings else DASH for style in styles]
        rows.append([*_keys(row), format_number(refs.uniform), *humans, *ceilings])
    notes = [
        "Uniform: a model answering every option equally often. Human: that country's survey population "
        "against this one, on the questions both answered. Ceiling: a perfectly aligned model observed through "
        "the classifiable answers each question actually got.",
    ]
    blocks = [("", ["Uniform model"]), ("Human population", others), ("Finite-sample ceiling", styles)]
    return Table("Reference points for Table 1 (same similarity scale)", [*sweep.keys, "Country"], blocks, rows, notes)


def _similarity_cell(metrics: dict[str, float]) -> str:
    return format_similarity(
        metrics[names.SIMILARITY],
        metrics.get(names.SIMILARITY_LOW, math.nan),
        metrics.get(names.SIMILARITY_HIGH, math.nan),
    )


def _keys(row: Row) -> list[str]:
    return [*row.group, row.label]


def markdown(table: Table) -> str:
    header = [*table.key_columns, *(f"{title}: {c}" if title else c for title, columns in table.blocks for c in columns)]
    lines = [f"### {table.title}", "", _md_row(header), _md_row(["---"] * len(header))]
    lines += [_md_row(row) for row in table.rows]
    lines += ["", *(f"{note}  " for note in table.notes)]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def latex(table: Table) -> str:
    """A booktabs table with the blocks as multicolumn headers, as in the paper."""
    n_keys = len(table.key_columns)
    widths = [len(columns) for _, columns in table.blocks]
    spans, rules, start = [], [], n_keys + 1
    for (title, _), width in zip(table.blocks, widths):
        spans.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex(title)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    subheader = [*table.key_columns, *(column for _, columns in table.blocks for column in columns)]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\begin{{tabular}}{{{'l' * n_keys}{'c' * sum(widths)}}}",
        r"\toprule",
        " & ".join([""] * n_keys + spans) + r" \\",
        "".join(rules),
        " & ".join(_tex(cell) for cell in subheader) + r" \\",
        r"\midrule",
        *(" & ".join(_tex(cell) for cell in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{_tex(table.title)}. {_tex(' '.join(table.notes))}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(char, char) for char in text)


def write_runs_csv(sweep: Sweep, references: dict[tuple, References], path: Path) -> None:
    """Table 1 in tidy form: one line per run with its metrics and reference points, for further analysis."""
    others = list(dict.fromkeys(label for refs in references.values() for label in refs.humans))
    metrics = [
        names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH,
        names.UNCLASSIFIABLE_RATE, names.N_QUESTIONS, names.N_SCORED_QUESTIONS, names.N_RESPONSES,
    ]
    header = [
        *sweep.keys, "country", "country_label", "style", "run_id", *metrics,
        "uniform_similarity", "finite_sample_ceiling", *(f"human_similarity_{label}" for label in others),
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for run in sweep.runs:
            refs = references[(sweep.group(run), run.country)]
            writer.writerow([
                *sweep.group(run), run.country, run.country_label, run.style, run.run_id,
                *(run.metrics.get(name, "") for name in metrics),
                refs.uniform, refs.ceilings[run.style], *(refs.humans.get(label, "") for label in others),
            ])


def paired_table(comparisons: list[Comparison]) -> Table:
    rows = [
        [
            c.dimension,
            ", ".join(c.context),
            f"{c.b_value} − {c.a_value}",
            _signed_cell(c),
            str(c.difference.n),
            str(c.dropped),
        ]
        for c in comparisons
    ]
    notes = [
        "Mean over shared questions of (similarity of the later minus the earlier), with a paired bootstrap CI "
        "(both runs resampled on the same questions). * marks a CI that excludes 0. Dropped: questions not "
        "scored in both runs.",
    ]
    columns = ["Compared", "Held fixed", "Difference", "Mean [CI]", "Questions", "Dropped"]
    return Table("Paired differences", columns, [], rows, notes)


def _signed_cell(comparison: Comparison) -> str:
    d = comparison.difference
    if math.isnan(d.value):
        return "n/a"
    star = " *" if d.low > 0 or d.high < 0 else ""
    return f"{d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{star}"


def write_paired_csv(comparisons: list[Comparison], path: Path) -> None:
    header = [
        "dimension", "held_fixed", "a", "b", "a_run_id", "b_run_id", "mean_difference_b_minus_a",
        "ci_low", "ci_high", "n_questions", "dropped_questions", "metric",
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for c in comparisons:
            d = c.difference
            writer.writerow([
                c.dimension, " ".join(c.context), c.a_value, c.b_value, c.a.run_id, c.b.run_id,
                d.value, d.low, d.high, d.n, c.dropped, c.metric_name,
            ])


def write_questions_csv(sweep: Sweep, path: Path) -> None:
    """Per question and run: the distributions side by side, worst-aligned first (unscored questions last)."""
    header = [
        *sweep.keys, "country", "style", "run_id", "question_id", "question", "options",
        "human_distribution", "model_distribution", "similarity", "unclassifiable", "responses",
    ]
    lines = []
    for run in sweep.runs:
        for q in run.questions:
            lines.append([
                *sweep.group(run), run.country_label, run.style, run.run_id, q["id"], q["question"],
                " | ".join(q["options"]), _distribution(q["human_distribution"]),
                _distribution(q.get("model_distribution")), q.get("similarity"), q.get("unclassifiable"),
                q.get("responses"),
            ])
    similarity = header.index("similarity")
    lines.sort(key=lambda line: (line[similarity] is None, line[similarity] or 0.0))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)


def _distribution(values: list[float] | None) -> str:
    return "" if values is None else " ".join(f"{v:.4f}" for v in values)
