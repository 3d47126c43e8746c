"""Figures (PNG, headless): the Average Wasserstein Similarity Score with its CIs and reference marks, the
percentage of unclassifiable outputs, and survey vs model share of option 1 per question (one panel per
country). Every figure names the model, the question and sample counts, and what its intervals are.

A swept numeric setting (temperature, top-p, samples, ...) becomes the x axis: one line per interaction
style, one panel per country. Otherwise bars per country and style, one panel row per value of the other
swept parameters.

matplotlib is imported inside the functions (it costs ~0.5 s) and only through `Figure`, which renders with
the Agg canvas and never touches a display or pyplot's global state.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from culturealign.report.baselines import References
from culturealign.report.runs import Row, RunRecord, Sweep
from culturealign.report.table import SIMILARITY_TITLE, UNCLASSIFIABLE_TITLE
from culturealign.tracking import names

DPI = 120
SIMILARITY_LABEL = SIMILARITY_TITLE[:-2]
UNCLASSIFIABLE_LABEL = UNCLASSIFIABLE_TITLE[:-2]  # a percentage already


def figures(sweep: Sweep, references: dict[tuple, References]) -> dict[str, "Figure"]:  # noqa: F821
    """File name -> the figure (tests read what is drawn from these)."""
    axis_key = numeric_key(sweep)
    if axis_key:
        similarity = similarity_lines(sweep, references, axis_key)
        unclassifiable = unclassifiable_lines(sweep, axis_key)
    else:
        similarity, unclassifiable = similarity_bars(sweep, references), unclassifiable_bars(sweep)
    return {"similarity.png": similarity, "option1_scatter.png": option1_scatter(sweep), "unclassifiable.png": unclassifiable}


def write_figures(sweep: Sweep, references: dict[tuple, References], folder: Path) -> list[Path]:
    paths = []
    for name, figure in figures(sweep, references).items():
        figure.savefig(folder / name)
        paths.append(folder / name)
    return paths


def numeric_key(sweep: Sweep) -> str | None:
    """The first swept parameter whose values are all numbers (model.temperature, samples, ...)."""
    for key in sweep.keys:
        values = {run.key(key) for run in sweep.runs}
        if len(values) > 1 and all(_number(value) is not None for value in values):
            return key
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _figure(n_rows: int, n_cols: int, width: float, height: float):
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # "building the font cache" at first use
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_cols, height * n_rows + 0.6), dpi=DPI, layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    return figure, axes


def _colours(n: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def _title(figure, what: str, sweep: Sweep, detail: str) -> None:
    figure.suptitle(f"{what}: {sweep.setting()}\n{detail}", fontsize="medium")


def _metric(run: RunRecord | None, name: str) -> float:
    return run.metrics.get(name, math.nan) if run is not None else math.nan


# --- A numeric setting on the x axis ----------------------------------------------------------------


def _line_panels(sweep: Sweep, axis_key: str, height: float):
    """One panel per country (columns) and per value of the other swept keys (rows): (axis, group, runs)."""
    others = [k for k in sweep.keys if k != axis_key]
    groups = list(dict.fromkeys(tuple(run.key(k) for k in others) for run in sweep.runs))
    countries = list(dict.fromkeys(run.country for run in sweep.runs))
    figure, axes = _figure(len(groups), len(countries), 4.2, height)
    panels = []
    for axes_row, group in zip(axes, groups):
        for axis, country in zip(axes_row, countries):
            runs = [r for r in sweep.runs if r.country == country and tuple(r.key(k) for k in others) == group]
            label = runs[0].country_label if runs else country
            axis.set_title(", ".join([label, *(f"{k}={v}" for k, v in zip(others, group))]))
            panels.append((axis, runs))
    return figure, panels


def _style_lines(sweep: Sweep, runs: list[RunRecord], axis_key: str, dodge: bool = False):
    """Per style: (label, colour, x values sorted, its runs in that order). `dodge` shifts each style a
    little sideways so that error bars at the same setting do not hide each other."""
    styles = sweep.styles()
    settings = [_number(r.key(axis_key)) for r in sweep.runs]
    step = 0.012 * (max(settings) - min(settings)) if dodge else 0.0
    for i, (style, label, colour) in enumerate(zip(styles, sweep.style_labels(), _colours(len(styles)))):
        chosen = sorted((r for r in runs if r.style == style), key=lambda r: _number(r.key(axis_key)))
        if chosen:
            x = np.array([_number(r.key(axis_key)) for r in chosen]) + (i - (len(styles) - 1) / 2) * step
            yield label, colour, x, chosen


def _legend_below(axis) -> None:
    axis.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)


def similarity_lines(sweep: Sweep, references: dict[tuple, References], axis_key: str):
    figure, panels = _line_panels(sweep, axis_key, 3.6)
    for axis, runs in panels:
        for label, colour, x, chosen in _style_lines(sweep, runs, axis_key, dodge=True):
            values = np.array([_metric(r, names.SIMILARITY) for r in chosen])
            low = np.array([_metric(r, names.SIMILARITY_LOW) for r in chosen])
            high = np.array([_metric(r, names.SIMILARITY_HIGH) for r in chosen])
            axis.errorbar(x, values, yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], color=colour,
                          marker="o", capsize=3, label=label)  # fmt: skip
        uniform = {references[(sweep.group(r), r.country)].uniform for r in runs}
        if len(uniform) == 1:
            axis.axhline(uniform.pop(), color="grey", linestyle="dashed", linewidth=1, label="uniform-random model")
        axis.set_xlabel(axis_key)
        axis.set_ylabel(SIMILARITY_LABEL if axis.get_subplotspec().is_first_col() else "")
        axis.set_ylim(_lower_limit(sweep), 1.0)
        _legend_below(axis)
    _title(figure, SIMILARITY_LABEL, sweep, f"points: mean over questions; error bars: {sweep.interval()}")
    return figure


def unclassifiable_lines(sweep: Sweep, axis_key: str):
    figure, panels = _line_panels(sweep, axis_key, 3.0)
    for axis, runs in panels:
        for label, colour, x, chosen in _style_lines(sweep, runs, axis_key):
            rates = [100 * _metric(r, names.UNCLASSIFIABLE_RATE) for r in chosen]
            axis.plot(x, rates, color=colour, marker="o", label=label)
        axis.set_xlabel(axis_key)
        axis.set_ylabel(UNCLASSIFIABLE_LABEL if axis.get_subplotspec().is_first_col() else "")
        axis.set_ylim(bottom=0)
        _legend_below(axis)
    _title(figure, UNCLASSIFIABLE_LABEL, sweep, "share of all answers that named no option")
    return figure


# --- Bars per country and style ---------------------------------------------------------------------


def similarity_bars(sweep: Sweep, references: dict[tuple, References]):
    figure, panels = _bar_panels(sweep, 3.6)
    for axis, group, rows in panels:
        for i, label, colour, x, width, runs in _style_bars(rows, sweep):
            values = np.array([_metric(r, names.SIMILARITY) for r in runs])
            low = np.array([_metric(r, names.SIMILARITY_LOW) for r in runs])
            high = np.array([_metric(r, names.SIMILARITY_HIGH) for r in runs])
            axis.bar(x, values, width, color=colour, label=label,
                     yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], capsize=3)  # fmt: skip
            style = sweep.styles()[i]
            ceilings = [references[(row.group, row.country)].ceilings.get(style, math.nan) for row in rows]
            axis.scatter(x, ceilings, marker="v", s=30, color="black", zorder=3,
                         label="finite-sample ceiling" if i == 0 else None)  # fmt: skip
        for j, row in enumerate(rows):
            axis.hlines(references[(row.group, row.country)].uniform, j - 0.45, j + 0.45, colors="grey",
                        linestyles="dashed", label="uniform-random model" if j == 0 else None)  # fmt: skip
        axis.set_ylim(_lower_limit(sweep), 1.0)
        _finish_panel(axis, rows, SIMILARITY_LABEL, sweep.group_label(group))
    _title(figure, SIMILARITY_LABEL, sweep, f"bars: mean over questions; whiskers: {sweep.interval()}")
    return figure


def _bar_panels(sweep: Sweep, height: float):
    """The figure and its panels, one per value of the extra dimensions: (axis, group, Table 1 rows)."""
    groups = sweep.groups()
    figure, axes = _figure(len(groups), 1, max(6.0, 1.6 * len(sweep.rows()) / len(groups) + 2), height)
    rows = sweep.rows()
    return figure, [(axis, group, [r for r in rows if r.group == group]) for axis, group in zip(axes[:, 0], groups)]


def _style_bars(rows: list[Row], sweep: Sweep):
    """Per style: (index, label, colour, bar positions beside the other styles, width, its run per row or None)."""
    styles = sweep.styles()
    width = 0.8 / len(styles)
    for i, (style, label, colour) in enumerate(zip(styles, sweep.style_labels(), _colours(len(styles)))):
        x = np.arange(len(rows)) + (i - (len(styles) - 1) / 2) * width
        yield i, label, colour, x, width, [row.runs.get(style) for row in rows]


def _finish_panel(axis, rows: list[Row], ylabel: str, title: str) -> None:
    axis.set_xticks(np.arange(len(rows)), [row.label for row in rows])
    axis.set_xlim(-0.5, len(rows) - 0.5)  # keeps room for styles not run (NaN bars do not autoscale)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)


def _lower_limit(sweep: Sweep) -> float:
    lows = [r.metrics.get(names.SIMILARITY_LOW, math.nan) for r in sweep.runs]
    finite = [v for v in lows if not math.isnan(v)]
    return max(0.0, math.floor((min(finite, default=0.5) - 0.1) * 10) / 10)


def unclassifiable_bars(sweep: Sweep):
    figure, panels = _bar_panels(sweep, 3.0)
    for axis, group, rows in panels:
        for _, label, colour, x, width, runs in _style_bars(rows, sweep):
            rates = [100 * _metric(run, names.UNCLASSIFIABLE_RATE) for run in runs]
            axis.bar_label(axis.bar(x, rates, width, color=colour, label=label), fmt="%.1f", fontsize="x-small")
        _finish_panel(axis, rows, UNCLASSIFIABLE_LABEL, sweep.group_label(group))
    _title(figure, UNCLASSIFIABLE_LABEL, sweep, "share of all answers that named no option")
    return figure


# --- Per question -------------------------------------------------------------------------------------


def option1_scatter(sweep: Sweep):
    """Survey vs model share of option 1, one point per question; one panel per country (and per value of
    the other swept parameters), one colour per interaction style."""
    groups = sweep.groups()
    countries = list(dict.fromkeys(run.country for run in sweep.runs))
    colours = dict(zip(sweep.styles(), _colours(len(sweep.styles()))))
    figure, axes = _figure(len(groups), len(countries), 3.4, 3.6)
    for axes_row, group in zip(axes, groups):
        for axis, country in zip(axes_row, countries):
            runs = [r for r in sweep.runs if r.country == country and sweep.group(r) == group]
            for run in runs:
                points = [(q["human_distribution"][0], q["model_distribution"][0])
                          for q in run.questions if q.get("model_distribution")]  # fmt: skip
                if points:
                    x, y = zip(*points)
                    axis.scatter(x, y, s=14, alpha=0.7, color=colours[run.style], label=run.style_label)
            axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="dotted")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.set_aspect("equal")
            axis.set_xlabel("survey P(option 1)")
            axis.set_ylabel("model P(option 1)")
            label = runs[0].country_label if runs else country
            axis.set_title(", ".join(filter(None, [label, sweep.group_label(group)])))
            if axis.collections:
                axis.legend(fontsize="x-small", loc="upper left")
            else:
                axis.text(0.5, 0.5, "not run", ha="center", va="center", color="grey")
    _title(figure, "Share answering option 1, per question", sweep, "points: questions with a classifiable answer")
    return figure
