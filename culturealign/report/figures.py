"""Figures (PNG, headless): similarity bars with CI whiskers and reference marks, human vs model
probability of option 1 per question, and unclassifiable rates. One panel row per extra dimension value.

matplotlib is imported inside the functions (it costs ~0.5 s) and only through `Figure`, which renders with
the Agg canvas and never touches a display or pyplot's global state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from culturealign.report.baselines import References
from culturealign.report.runs import Sweep
from culturealign.tracking import names

DPI = 120


def figures(sweep: Sweep, references: dict[tuple, References]) -> dict[str, "Figure"]:  # noqa: F821
    """File name -> the figure (tests read what is drawn from these)."""
    return {
        "similarity.png": similarity_bars(sweep, references),
        "option1_scatter.png": option1_scatter(sweep),
        "unclassifiable.png": unclassifiable_bars(sweep),
    }


def write_figures(sweep: Sweep, references: dict[tuple, References], folder: Path) -> list[Path]:
    paths = []
    for name, figure in figures(sweep, references).items():
        figure.savefig(folder / name)
        paths.append(folder / name)
    return paths


def _figure(n_rows: int, n_cols: int, width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_cols, height * n_rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    return figure, axes


def _colours(n: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def similarity_bars(sweep: Sweep, references: dict[tuple, References]):
    figure, panels = _bar_panels(sweep, 3.6)
    for axis, group, rows in panels:
        for i, style, colour, x, width, runs in _style_bars(rows, sweep.styles()):
            values = np.array([_metric(r, names.SIMILARITY) for r in runs])
            low = np.array([_metric(r, names.SIMILARITY_LOW) for r in runs])
            high = np.array([_metric(r, names.SIMILARITY_HIGH) for r in runs])
            axis.bar(x, values, width, color=colour, label=style,
                     yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], capsize=3)
            ceilings = [references[(row.group, row.country)].ceilings.get(style, math.nan) for row in rows]
            axis.scatter(x, ceilings, marker="v", s=30, color="black", zorder=3,
                         label="finite-sample ceiling" if i == 0 else None)
        for j, row in enumerate(rows):
            axis.hlines(references[(row.group, row.country)].uniform, j - 0.45, j + 0.45, colors="grey",
                        linestyles="dashed", label="uniform-random model" if j == 0 else None)
        axis.set_ylim(_lower_limit(sweep), 1.0)
        _finish_panel(axis, rows, "Wasserstein similarity",
                      sweep.group_label(group) or "Similarity to the population, by interaction style")
    return figure


def _bar_panels(sweep: Sweep, height: float):
    """The figure and its panels, one per value of the extra dimensions: (axis, group, Table 1 rows)."""
    groups = sweep.groups()
    figure, axes = _figure(len(groups), 1, max(6.0, 1.6 * len(sweep.rows()) / len(groups) + 2), height)
    rows = sweep.rows()
    return figure, [(axis, group, [r for r in rows if r.group == group]) for axis, group in zip(axes[:, 0], groups)]


def _style_bars(rows, styles: list[str]):
    """Per style: (index, style, colour, bar positions beside the other styles, width, its run per row or None)."""
    width = 0.8 / len(styles)
    for i, (style, colour) in enumerate(zip(styles, _colours(len(styles)))):
        x = np.arange(len(rows)) + (i - (len(styles) - 1) / 2) * width
        yield i, style, colour, x, width, [row.runs.get(style) for row in rows]


def _metric(run, name: str) -> float:
    return run.metrics.get(name, math.nan) if run is not None else math.nan


def _finish_panel(axis, rows, ylabel: str, title: str) -> None:
    axis.set_xticks(np.arange(len(rows)), [row.label for row in rows])
    axis.set_xlim(-0.5, len(rows) - 0.5)  # keeps room for styles not run (NaN bars do not autoscale)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)


def _lower_limit(sweep: Sweep) -> float:
    lows = [r.metrics.get(names.SIMILARITY_LOW, math.nan) for r in sweep.runs]
    finite = [v for v in lows if not math.isnan(v)]
    return max(0.0, math.floor((min(finite, default=0.5) - 0.1) * 10) / 10)


def option1_scatter(sweep: Sweep):
    styles, groups = sweep.styles(), sweep.groups()
    rows_by_country = list(dict.fromkeys(r.country_label for r in sweep.runs))
    colours = dict(zip(rows_by_country, _colours(len(rows_by_country))))
    figure, axes = _figure(len(groups), len(styles), 3.4, 3.4)
    for axes_row, group in zip(axes, groups):
        for axis, style in zip(axes_row, styles):
            for run in (r for r in sweep.runs if r.style == style and sweep.group(r) == group):
                points = [(q["human_distribution"][0], q["model_distribution"][0])
                          for q in run.questions if q.get("model_distribution")]
                if points:
                    x, y = zip(*points)
                    axis.scatter(x, y, s=14, alpha=0.7, color=colours[run.country_label], label=run.country_label)
            axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="dotted")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.set_aspect("equal")
            axis.set_xlabel("human P(option 1)")
            axis.set_ylabel("model P(option 1)")
            axis.set_title(", ".join(filter(None, [sweep.group_label(group), style])))
            if axis.collections:
                axis.legend(fontsize="x-small", loc="upper left")
            else:
                axis.text(0.5, 0.5, "not run", ha="center", va="center", color="grey")
    return figure


def unclassifiable_bars(sweep: Sweep):
    figure, panels = _bar_panels(sweep, 3.0)
    for axis, group, rows in panels:
        for _, style, colour, x, width, runs in _style_bars(rows, sweep.styles()):
            rates = [100 * _metric(run, names.UNCLASSIFIABLE_RATE) for run in runs]
            axis.bar_label(axis.bar(x, rates, width, color=colour, label=style), fmt="%.1f", fontsize="x-small")
        _finish_panel(axis, rows, "unclassifiable answers (%)",
                      sweep.group_label(group) or "Answers the parser or judge could not classify")
    return figure
