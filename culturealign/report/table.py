"""Table 1 as in the paper (rows countries; "Average Wasserstein Similarity Score" [CI] and "Percentage of
Unclassifiable Outputs" by interaction style), a reference-points table beside it, and the paired
differences: as aligned text for a terminal (at most 100 columns), Markdown, LaTeX (booktabs), and tidy CSVs
that share their key columns and units (rates in [0, 1], counts as integers, one column per option).

Extra varying dimensions (model, temperature, ...) become leading row-key columns, or sub-headings when a
column would not fit the terminal.
"""

from __future__ import annotations

import csv
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from culturealign.report.baselines import References
from culturealign.report.compare import Comparison
from culturealign.report.runs import Row, RunRecord, Sweep
from culturealign.tracking import names

DASH = "–"  # a cell of the grid that was not run
WIDTH = 100  # terminal columns
GAP = "  "
SIMILARITY_TITLE = "Average Wasserstein Similarity Score ↑"
UNCLASSIFIABLE_TITLE = "Percentage of Unclassifiable Outputs ↓"
RUN_METRICS = (
    names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH, names.UNCLASSIFIABLE_RATE,
    names.N_QUESTIONS, names.N_SCORED_QUESTIONS, names.N_RESPONSES,
)  # fmt: skip


@dataclass(frozen=True)
class Table:
    """Row-key columns, then blocks of columns under a title (the paper's two side-by-side blocks)."""

    number: str  # "Table 1", or "" for an unnumbered table
    caption: str  # one sentence naming what is shown; LaTeX numbers it, Markdown and text prefix `number`
    key_columns: list[str]
    blocks: list[tuple[str, list[str]]]
    rows: list[list[str]]
    notes: list[str]  # the footnote: what the numbers are, which cells are missing
    label: str = ""  # LaTeX \label
    groups: list[tuple[str, ...]] = field(default_factory=list)  # per row: values of the extra keys
    group_keys: list[str] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return f"{self.number}: {self.caption}" if self.number else self.caption


def format_similarity(value: float, low: float, high: float) -> str:
    """As in the paper: `0.66 [0.62,0.71]`."""
    return "n/a" if math.isnan(value) else f"{value:.2f} [{low:.2f},{high:.2f}]"


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
        rows.append([row.label, *similarity, *unclassifiable])
    labels = sweep.style_labels()
    notes = [
        f"{SIMILARITY_TITLE[:-2]}: mean over the scored questions of 1 − W1/(options − 1) between the survey's and "
        f"the model's answer distributions (Wasserstein-1 over option positions); [{sweep.interval()}"
        f"{_resamples(sweep)}]. {UNCLASSIFIABLE_TITLE[:-2]}: share of all answers that named no option "
        f"({_unclassifiable_rule(sweep)}).",
    ]
    if any(DASH in row for row in rows):
        notes.append(f"{DASH}: not run.")
    notes += [f"Not included: {s}." for s in sweep.skipped]
    notes.append(questions_note(sweep))
    return Table(
        "Table 1",
        f"Cultural alignment by interaction style: {sweep.setting()}{_judge(sweep)}",
        ["Country"],
        [(SIMILARITY_TITLE, labels), (UNCLASSIFIABLE_TITLE, labels)],
        rows,
        notes,
        "tab:cultural-alignment",
        [row.group for row in sweep.rows()],
        list(sweep.keys),
    )


def questions_note(sweep: Sweep) -> str:
    """Which question set the runs used (dataset.selection), and how many questions each country contributed."""
    modes = sorted({run.params.get(names.SELECTION_PARAM) or "shared" for run in sweep.runs})
    counts: dict[str, int] = {}
    for run in sweep.runs:
        n = run.metrics.get(names.N_QUESTIONS)
        if n is not None and n == n:
            counts[run.country_label] = max(counts.get(run.country_label, 0), int(n))
    if modes == ["shared"] and len(set(counts.values())) <= 1:
        countries = sweep.constant("dataset.countries") or "dataset.countries"
        n = f"{next(iter(counts.values()))} " if counts else ""
        return f"Questions: dataset.selection=shared, the same {n}for every country (answered by all of {countries})."
    if len(set(counts.values())) == 1:
        return f"Questions: dataset.selection={'/'.join(modes)}; {next(iter(counts.values()))} questions per country."
    per_country = ", ".join(f"{label} {n}" for label, n in counts.items())
    return f"Questions: dataset.selection={'/'.join(modes)}; questions per country: {per_country}."


def _unclassifiable_rule(sweep: Sweep) -> str:
    """What made an answer unclassifiable, for the styles in the table, from the runs' settings."""
    labels = dict(zip(sweep.styles(), sweep.style_labels()))
    parts = []
    if "classification" in labels:
        classification = [r for r in sweep.runs if r.style == "classification"]
        rules = {(r.params.get("estimator"), r.params.get("extraction.classification")) for r in classification}
        texts = {
            ("logprobs", None): "probability of a first token that is no option number",
            ("sample", "leading"): "not starting with an option number",
        }
        parts.append(f"{labels['classification']}: " + "; ".join(
            texts.get((estimator, None if estimator == "logprobs" else rule), "not exactly an option number")
            for estimator, rule in sorted(rules, key=str)
        ))  # fmt: skip
    judged = [label for style, label in labels.items() if style != "classification"]
    if judged:
        parts.append(f"{', '.join(judged)}: the judge found none")
    return "; ".join(parts)


def _judge(sweep: Sweep) -> str:
    judged = [run for run in sweep.runs if run.params.get("style") in ("cot", "scenarios")]
    judges = {run.params.get("judge.name") for run in judged} - {None}
    return f"; CoT and Scenarios answers judged by {judges.pop()}" if len(judges) == 1 else ""


def _resamples(sweep: Sweep) -> str:
    resamples, method = sweep.constant("bootstrap.resamples"), sweep.constant("bootstrap.method")
    parts = [f"{resamples} resamples" if resamples else "", method or ""]
    text = ", ".join(part for part in parts if part)
    return f", {text}" if text else ""


def references_table(sweep: Sweep, references: dict[tuple, References]) -> Table:
    styles = sweep.styles()
    others = list(dict.fromkeys(label for refs in references.values() for label in refs.humans))
    rows = []
    for row in sweep.rows():
        refs = references[(row.group, row.country)]
        humans = [format_number(refs.humans[label]) if label in refs.humans else DASH for label in others]
        ceilings = [format_number(refs.ceilings[style]) if style in refs.ceilings else DASH for style in styles]
        rows.append([row.label, format_number(refs.uniform), *humans, *ceilings])
    notes = [
        "On the same similarity scale. Uniform: a model answering every option equally often. Human population: "
        "that country's survey answers against this one's, on the questions both answered. Ceiling: a perfectly "
        "aligned model observed through the classifiable answers each question actually got.",
    ]
    blocks = [("", ["Uniform model"]), ("Human population", others), ("Finite-sample ceiling", sweep.style_labels())]
    blocks = [block for block in blocks if block[1]]  # one country: no other population
    return Table(
        "", "Reference points for Table 1", ["Country"], blocks, rows, notes, "tab:reference-points",
        [row.group for row in sweep.rows()], list(sweep.keys),
    )  # fmt: skip


def _similarity_cell(metrics: dict[str, float]) -> str:
    return format_similarity(
        metrics[names.SIMILARITY],
        metrics.get(names.SIMILARITY_LOW, math.nan),
        metrics.get(names.SIMILARITY_HIGH, math.nan),
    )


# --- Markdown ---------------------------------------------------------------------------------------


def markdown(table: Table) -> str:
    """A Markdown table; blocks with titles get the paper's two header lines (titles, then columns in bold)."""
    keys = [*table.group_keys, *table.key_columns]
    columns = [column for _, block in table.blocks for column in block]
    if any(title for title, _ in table.blocks):
        titles = [""] * len(keys) + [title if i == 0 else "" for title, block in table.blocks for i in range(len(block))]
        header = [titles, [f"**{cell}**" for cell in [*keys, *columns]]]
    else:
        header = [[*keys, *columns]]
    lines = [f"### {table.heading}", "", _md_row(header[0]), _md_row(["---"] * len(header[0]))]
    lines += [_md_row(row) for row in header[1:]]
    lines += [_md_row([*group, *row]) for group, row in _with_groups(table)]
    lines += ["", *(f"{note}  " for note in table.notes)]
    return "\n".join(lines) + "\n"


def _with_groups(table: Table):
    groups = table.groups or [()] * len(table.rows)
    return zip(groups, table.rows)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


# --- Aligned text -----------------------------------------------------------------------------------


def text(table: Table, width: int = WIDTH) -> str:
    """The table for a terminal: block titles over their columns, at most `width` columns where possible.
    Extra keys become columns if they fit, else sub-headings; blocks that still do not fit go one below
    the other."""
    keyed = _text_body(table, table.group_keys, table.blocks, width)
    if max(map(len, keyed)) <= width or not table.group_keys:
        body = keyed
    else:
        body = _text_body(table, [], table.blocks, width)
    if max(map(len, body)) > width and len(table.blocks) > 1:
        body = [line for block in table.blocks for line in [*_text_body(table, [], [block], width), ""]][:-1]
    notes = [wrapped for note in table.notes for wrapped in textwrap.wrap(note, width)]
    return "\n".join([*textwrap.wrap(table.heading, width), "", *body, "", *notes]) + "\n"


def _text_body(table: Table, key_columns: list[str], blocks: list[tuple[str, list[str]]], width: int) -> list[str]:
    """Header lines and rows; the groups of the rows are columns when `key_columns`, else sub-headings."""
    starts, offset = [], len(table.key_columns)
    for _, columns in table.blocks:
        starts.append(offset)
        offset += len(columns)
    chosen = [(title, columns, starts[table.blocks.index((title, columns))]) for title, columns in blocks]
    headers = [*key_columns, *table.key_columns] + [c for _, columns, _ in chosen for c in columns]
    keys = len(key_columns) + len(table.key_columns)

    def cells(group: tuple[str, ...], row: list[str]) -> list[str]:
        picked = [cell for _, columns, start in chosen for cell in row[start : start + len(columns)]]
        return [*(group if key_columns else ()), *row[: len(table.key_columns)], *picked]

    grouped = list(_with_groups(table))
    headings = bool(table.group_keys) and not key_columns
    if headings:  # rows of one group together, groups in order of first appearance
        order = list(dict.fromkeys(group for group, _ in grouped))
        grouped.sort(key=lambda pair: order.index(pair[0]))
    body = [cells(group, row) for group, row in grouped]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    _widen_for_titles(widths, keys, chosen, width)
    lines = _title_lines(widths, keys, chosen)
    lines.append(_text_row(headers, widths, keys))
    previous = None
    for (group, _), row in zip(grouped, body):
        if headings and group != previous:
            lines.append(", ".join(f"{k} = {v}" for k, v in zip(table.group_keys, group)))
            previous = group
        lines.append(_text_row(row, widths, keys))
    return [line.rstrip() for line in lines]


def _widen_for_titles(widths: list[int], keys: int, chosen, limit: int = WIDTH) -> None:
    """A block is as wide as its title when the whole line stays within `limit`, else at least as wide as
    the title's longest word; the extra width goes to the block's last column."""
    total = sum(widths) + len(GAP) * (len(widths) - 1)
    start = keys
    for title, columns, _ in chosen:
        last = start + len(columns) - 1
        span = sum(widths[start : last + 1]) + len(GAP) * (len(columns) - 1)
        words = max((len(word) for word in _unbreakable(title).split()), default=0)
        need = len(title) if total + len(title) - span <= limit else words
        if need > span:
            widths[last] += need - span
            total += need - span
        start += len(columns)


def _unbreakable(title: str) -> str:
    """An arrow stays on the line of the word before it."""
    return title.replace(" ↑", "\u00a0↑").replace(" ↓", "\u00a0↓")


def _title_lines(widths: list[int], keys: int, chosen) -> list[str]:
    """The block titles over their columns, wrapped to the block's width."""
    spans, start = [], keys
    for title, columns, _ in chosen:
        span = sum(widths[start : start + len(columns)]) + len(GAP) * (len(columns) - 1)
        wrapped = [line.replace("\u00a0", " ") for line in textwrap.wrap(_unbreakable(title), span)] if title else []
        spans.append((wrapped, span))
        start += len(columns)
    height = max((len(lines) for lines, _ in spans), default=0)
    indent = sum(widths[:keys]) + len(GAP) * keys
    out = []
    for i in range(height):
        parts = [(lines[i] if i < len(lines) else "").ljust(span) for lines, span in spans]
        out.append(" " * indent + GAP.join(parts))
    return out


def _text_row(cells: list[str], widths: list[int], keys: int) -> str:
    return GAP.join(cell.ljust(w) if i < keys else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))


# --- LaTeX ------------------------------------------------------------------------------------------


def latex(table: Table) -> str:
    """A table environment that compiles as given with `\\usepackage{booktabs}` and `graphicx` (it is shrunk
    to the text width when wider): blocks as multicolumn headers, as in the paper, one caption (LaTeX adds
    "Table N:") and a label."""
    keys = [*table.group_keys, *table.key_columns]
    n_keys = len(keys)
    widths = [len(columns) for _, columns in table.blocks]
    spans, rules, start = [], [], n_keys + 1
    for (title, _), width in zip(table.blocks, widths):
        spans.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex(title)}}}")
        if title:
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    subheader = [*keys, *(column for _, columns in table.blocks for column in columns)]
    lines = [
        r"% Requires \usepackage{booktabs} and \usepackage{graphicx} in the preamble.",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%  shrunk to the text width if wider",
        rf"\begin{{tabular}}{{{'l' * n_keys}{'c' * sum(widths)}}}",
        r"\toprule",
        " & ".join([""] * n_keys + spans) + r" \\",
        "".join(rules),
        " & ".join(_tex(cell) for cell in subheader) + r" \\",
        r"\midrule",
        *(" & ".join(_tex(cell) for cell in [*group, *row]) + r" \\" for group, row in _with_groups(table)),
        r"\bottomrule",
        r"\end{tabular}}",
        rf"\caption{{{_tex(table.caption)}. {_tex(' '.join(table.notes))}}}",
        *([rf"\label{{{table.label}}}"] if table.label else []),
        r"\end{table}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "−": "$-$", "*": r"$^{*}$",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(char, char) for char in text)


# --- Paired differences ---------------------------------------------------------------------------


def paired_table(comparisons: list[Comparison]) -> Table:
    rows = [
        [c.held_fixed(), f"{c.b_label} − {c.a_label}", _signed_cell(c), str(c.difference.n), str(c.dropped)]
        for c in comparisons
    ]
    level = comparisons[0].a.params.get("bootstrap.confidence") if comparisons else None
    ci = f"{100 * float(level):g}% paired bootstrap CI" if level else "paired bootstrap CI"
    notes = [
        f"Mean over the questions both runs scored of the difference in similarity shown, with a {ci} "
        "(both runs resampled on the same questions). * marks a CI that excludes 0. n: questions scored in both "
        "runs; dropped: questions scored in only one.",
    ]
    columns = ["Held fixed", "Difference", "Mean [CI]", "n", "Dropped"]
    groups = [(c.dimension,) for c in comparisons]
    return Table("", "Paired differences in Average Wasserstein Similarity Score", columns, [], rows, notes,
                 "tab:paired-differences", groups, ["Compared"])  # fmt: skip


def _signed_cell(comparison: Comparison) -> str:
    d = comparison.difference
    if math.isnan(d.value):
        return "n/a"
    star = " *" if d.low > 0 or d.high < 0 else ""
    return f"{d.value:+.3f} [{d.low:+.3f},{d.high:+.3f}]{star}"


# --- CSV --------------------------------------------------------------------------------------------
# Every CSV starts with the same identifying columns: the extra keys, then country, country_label, style,
# style_label. Similarities and rates are in [0, 1]; counts are integers.


def id_columns(sweep: Sweep) -> list[str]:
    return [*sweep.keys, "country", "country_label", "style", "style_label"]


def id_values(sweep: Sweep, run: RunRecord, blank: str = "") -> list[str]:
    """The run's identifying values; the column named `blank` (a compared dimension) left empty."""
    values = dict(zip(id_columns(sweep), [*sweep.group(run), run.country, run.country_label, run.style, run.style_label]))
    if blank:
        values[blank] = ""
        if blank in ("style", "country"):
            values[f"{blank}_label"] = ""
    return list(values.values())


def write_runs_csv(sweep: Sweep, references: dict[tuple, References], path: Path) -> None:
    """Table 1 in tidy form: one line per run with its metrics and reference points, for further analysis."""
    others = list(dict.fromkeys(label for refs in references.values() for label in refs.humans))
    header = [
        *id_columns(sweep), "run_id", *RUN_METRICS,
        "uniform_similarity", "finite_sample_ceiling", *(f"human_similarity_{label}" for label in others),
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for run in sweep.runs:
            refs = references[(sweep.group(run), run.country)]
            writer.writerow([
                *id_values(sweep, run), run.run_id, *(_value(name, run.metrics.get(name)) for name in RUN_METRICS),
                refs.uniform, refs.ceilings[run.style], *(refs.humans.get(label, "") for label in others),
            ])  # fmt: skip


def _value(name: str, value: float | None):
    """Counts (`n_*`) as integers, missing values empty."""
    if value is None or value != value:
        return ""
    return int(value) if name.startswith("n_") else value


def write_paired_csv(sweep: Sweep, comparisons: list[Comparison], path: Path) -> None:
    """One line per comparison: the dimension compared (its own column left empty), the values held fixed
    in the same columns as the other CSVs, a and b, and the mean difference b − a with its CI."""
    header = [
        "dimension", *id_columns(sweep), "a", "b", "a_run_id", "b_run_id", "mean_difference",
        "ci_low", "ci_high", "n_questions", "n_dropped_questions",
    ]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for c in comparisons:
            d = c.difference
            writer.writerow([
                c.dimension, *id_values(sweep, c.a, blank=c.dimension), c.a_value, c.b_value, c.a.run_id,
                c.b.run_id, d.value, d.low, d.high, d.n, c.dropped,
            ])  # fmt: skip


def write_questions_csv(sweep: Sweep, path: Path) -> None:
    """Per question and run: the options and both distributions one column per option, worst-aligned first
    (unscored questions last)."""
    n_options = max((len(q["options"]) for run in sweep.runs for q in run.questions), default=0)
    per_option = [f"{prefix}_{i}" for prefix in ("option", "human_p", "model_p") for i in range(1, n_options + 1)]
    header = [
        *id_columns(sweep), "run_id", "question_id", "question", *per_option,
        names.SIMILARITY, names.UNCLASSIFIABLE_RATE, names.N_RESPONSES,
    ]  # fmt: skip
    lines = []
    for run in sweep.runs:
        for q in run.questions:
            model = q.get("model_distribution") or []
            lines.append([
                *id_values(sweep, run), run.run_id, q["id"], q["question"],
                *_padded(q["options"], n_options), *_padded(q["human_distribution"], n_options),
                *_padded(model, n_options), _blank(q.get("similarity")), _question_rate(q), int(q.get("responses") or 0),
            ])  # fmt: skip
    similarity = header.index(names.SIMILARITY)
    lines.sort(key=lambda line: (line[similarity] == "", line[similarity] or 0.0))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)


def _padded(values, n: int) -> list:
    return list(values) + [""] * (n - len(values))


def _blank(value):
    return "" if value is None else value


def _question_rate(q: dict) -> float | str:
    """Unclassifiable answers as a share of the question's answers (expected answers for logprobs)."""
    answered = sum(q.get("model_counts") or []) + (q.get("unclassifiable") or 0)
    return (q.get("unclassifiable") or 0) / answered if answered else ""
