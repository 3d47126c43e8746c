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

DPI = 120


def write_figures(sweep: Sweep, references: dict[tuple, References], folder: Path) -> list[Path]:
    return [
        similarity_bars(sweep, references, folder / "similarity.png"),
        option1_scatter(sweep, folder / "option1_scatter.png"),
        unclassifiable_bars(sweep, folder / "unclassifiable.png"),
    ]


def _figure(n_rows: int, n_cols: int, width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_cols, height * n_rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    return figure, axes


def _colours(n: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def similarity_bars(sweep: Sweep, references: dict[tuple, References], path: Path) -> Path:
    styles, groups = sweep.styles(), sweep.groups()
    figure, axes = _figure(len(groups), 1, max(6.0, 1.6 * len(sweep.rows()) / len(groups) + 2), 3.6)
    width = 0.8 / len(styles)
    for axis, group in zip(axes[:, 0], groups):
        rows = [row for row in sweep.rows() if row.group == group]
        for i, (style, colour) in enumerate(zip(styles, _colours(len(styles)))):
            x = np.arange(len(rows)) + (i - (len(styles) - 1) / 2) * width
            runs = [row.runs.get(style) for row in rows]
            values = np.array([r.metrics["wasserstein_similarity"] if r else math.nan for r in runs])
            low = np.array([r.metrics.get("wasserstein_similarity_ci_low", math.nan) if r else math.nan for r in runs])
            high = np.array([r.metrics.get("wasserstein_similarity_ci_high", math.nan) if r else math.nan for r in runs])
            axis.bar(x, values, width, color=colour, label=style,
                     yerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], capsize=3)
            ceilings = [references[(row.group, row.country)].ceilings.get(style, math.nan) for row in rows]
            axis.scatter(x, ceilings, marker="v", s=30, color="black", zorder=3,
                         label="finite-sample ceiling" if i == 0 else None)
        for j, row in enumerate(rows):
            axis.hlines(references[(row.group, row.country)].uniform, j - 0.45, j + 0.45, colors="grey",
                        linestyles="dashed", label="uniform-random model" if j == 0 else None)
        axis.set_xticks(np.arange(len(rows)), [row.label for row in rows])
        axis.set_ylim(_lower_limit(sweep), 1.0)
        axis.set_ylabel("Wasserstein similarity")
        axis.set_title(sweep.group_label(group) or "Similarity to the population, by interaction style")
        axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=len(styles) + 2)
    figure.savefig(path)
    return path


def _lower_limit(sweep: Sweep) -> float:
    lows = [r.metrics.get("wasserstein_similarity_ci_low", math.nan) for r in sweep.runs]
    finite = [v for v in lows if not math.isnan(v)]
    return max(0.0, math.floor((min(finite, default=0.5) - 0.1) * 10) / 10)


def option1_scatter(sweep: Sweep, path: Path) -> Path:
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
    figure.savefig(path)
    return path


def unclassifiable_bars(sweep: Sweep, path: Path) -> Path:
    styles, groups = sweep.styles(), sweep.groups()
    figure, axes = _figure(len(groups), 1, max(6.0, 1.6 * len(sweep.rows()) / len(groups) + 2), 3.0)
    width = 0.8 / len(styles)
    for axis, group in zip(axes[:, 0], groups):
        rows = [row for row in sweep.rows() if row.group == group]
        for i, (style, colour) in enumerate(zip(styles, _colours(len(styles)))):
            x = np.arange(len(rows)) + (i - (len(styles) - 1) / 2) * width
            rates = [100 * row.runs[style].metrics["unclassifiable_rate"] if style in row.runs else math.nan
                     for row in rows]
            bars = axis.bar(x, rates, width, color=colour, label=style)
            axis.bar_label(bars, fmt="%.1f", fontsize="x-small")
        axis.set_xticks(np.arange(len(rows)), [row.label for row in rows])
        axis.set_ylabel("unclassifiable answers (%)")
        axis.set_title(sweep.group_label(group) or "Answers the parser or judge could not classify")
        axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=len(styles))
    figure.savefig(path)
    return path
