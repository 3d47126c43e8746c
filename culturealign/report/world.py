"""The world report, for a sweep over many countries (`experiment=world`): countries ranked by similarity
with their intervals, one panel per interaction style, beside the uniform-model reference of each country;
the human-vs-human similarity of every swept country's population, as a heatmap ordered by hierarchical
clustering (average linkage on 1 − similarity); and CSVs of everything drawn.

Written by the report build when a sweep has at least WORLD_MIN_COUNTRIES countries, or when asked
(`culturealign-report --world`). No map: no well-kept offline map package is a dependency.
"""

from __future__ import annotations

import csv
import math
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from culturealign.report.baselines import References, human_vs_human
from culturealign.report.figures import SIMILARITY_LABEL, _colours, _figure, _metric, _title
from culturealign.report.runs import RunRecord, Sweep
from culturealign.report.table import questions_note
from culturealign.tracking import names

WORLD_MIN_COUNTRIES = 8  # a sweep over this many countries gets the world report without asking
RANKING_CSV, HUMANS_CSV, RANKING_TXT = "world_ranking.csv", "world_human_similarity.csv", "world_ranking.txt"
RANKING_PNG, HEATMAP_PNG = "world_ranking.png", "world_human_similarity.png"


def is_world(sweep: Sweep) -> bool:
    return len({run.country for run in sweep.runs}) >= WORLD_MIN_COUNTRIES


@dataclass(frozen=True)
class Ranked:
    """One country in one panel (a style, and a value of the other swept keys), best first."""

    rank: int
    run: RunRecord
    group: tuple[str, ...]
    uniform: float

    @property
    def similarity(self) -> tuple[float, float, float]:
        return tuple(_metric(self.run, name) for name in (names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH))


def panels(sweep: Sweep, references: dict[tuple, References]) -> list[tuple[str, tuple[str, ...], list[Ranked]]]:
    """(style, group, countries ranked by similarity, best first) for every style and group of the sweep."""
    result = []
    for group in sweep.groups():
        for style in sweep.styles():
            runs = [r for r in sweep.runs if r.style == style and sweep.group(r) == group]
            runs.sort(key=lambda r: (-_finite(_metric(r, names.SIMILARITY)), r.country_label))
            ranked = [Ranked(i + 1, r, group, references[(group, r.country)].uniform) for i, r in enumerate(runs)]
            result.append((style, group, ranked))
    return result


def _finite(value: float) -> float:
    return value if value == value else -math.inf


def human_matrix(sweep: Sweep) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Country labels in cluster order, their human-vs-human similarity matrix on the questions both were
    asked (NaN: none in common), and the number of such questions."""
    humans: dict[str, dict[str, list[float]]] = {}
    for row in sweep.rows():
        humans.setdefault(row.label, {}).update(row.humans())
    labels = list(humans)
    n = len(labels)
    matrix, shared = np.full((n, n), math.nan), np.zeros((n, n), dtype=int)
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            shared[i, j] = len(humans[a].keys() & humans[b].keys())
            if shared[i, j]:
                matrix[i, j] = human_vs_human(humans[a], humans[b])
    order = cluster_order(matrix)
    return [labels[i] for i in order], matrix[np.ix_(order, order)], shared[np.ix_(order, order)]


def cluster_order(matrix: np.ndarray) -> list[int]:
    """Leaf order of scipy's average-linkage clustering on distance 1 − similarity (pairs without a common
    question at the largest distance, 1)."""
    n = len(matrix)
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = np.nan_to_num(1.0 - matrix, nan=1.0)
    distance = np.clip((distance + distance.T) / 2, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), method="average"))]


def ranking_figure(sweep: Sweep, ranked_panels):
    """One panel per style (and group): countries top to bottom, best first; the point is the similarity,
    the bar its interval, the grey mark the uniform-random model on that country's questions."""
    n_countries = max(len(ranked) for _, _, ranked in ranked_panels)
    width = max(6.5, 13.0 / len(ranked_panels))  # room for the title's lines
    figure, axes = _figure(1, len(ranked_panels), width, max(3.0, 0.24 * n_countries + 1.6))
    colours = dict(zip(sweep.styles(), _colours(len(sweep.styles()))))
    labels = dict(zip(sweep.styles(), sweep.style_labels()))
    for axis, (style, group, ranked) in zip(axes[0], ranked_panels):
        y = np.arange(len(ranked))
        values, low, high = (np.array(column) for column in zip(*(r.similarity for r in ranked)))
        axis.errorbar(values, y, xerr=[np.nan_to_num(values - low), np.nan_to_num(high - values)], fmt="o",
                      color=colours[style], capsize=2, markersize=4, label="similarity [CI]")  # fmt: skip
        axis.scatter([r.uniform for r in ranked], y, marker="|", s=120, color="grey", zorder=3, label="uniform-random model")
        axis.set_yticks(y, [f"{r.rank}. {r.run.country_label}" for r in ranked], fontsize="small")
        axis.set_ylim(len(ranked) - 0.5, -0.5)  # best at the top
        axis.set_xlabel(SIMILARITY_LABEL)
        axis.set_title(", ".join(filter(None, [labels[style], sweep.group_label(group)])))
    handles, names_ = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, names_, loc="outside lower center", ncols=2, fontsize="small")
    detail = f"points: mean over each country's questions; bars: {sweep.interval()}; grey: uniform-random model. "
    wrapped = textwrap.fill(detail + questions_note(sweep), int(13 * width * len(ranked_panels)))
    _title(figure, "Countries ranked by " + SIMILARITY_LABEL, sweep, wrapped)
    return figure


def heatmap_figure(sweep: Sweep, labels: list[str], matrix: np.ndarray):
    size = max(4.0, 0.28 * len(labels) + 2.0)
    figure, axes = _figure(1, 1, size, size)
    axis = axes[0, 0]
    image = axis.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=np.nanmin(matrix), vmax=1.0)
    ticks = np.arange(len(labels))
    axis.set_xticks(ticks, labels, rotation=90, fontsize="x-small")
    axis.set_yticks(ticks, labels, fontsize="x-small")
    figure.colorbar(image, ax=axis, shrink=0.8, label="human vs human " + SIMILARITY_LABEL)
    figure.suptitle(
        "Survey populations against each other (1 − W1 / (options − 1), mean over the questions both were asked)\n"
        "order: hierarchical clustering (average linkage on 1 − similarity); blank: no question in common",
        fontsize="medium",
    )
    return figure


def ranking_text(sweep: Sweep, ranked_panels) -> str:
    labels = dict(zip(sweep.styles(), sweep.style_labels()))
    lines = [f"World ranking: {sweep.setting()}", questions_note(sweep), ""]
    for style, group, ranked in ranked_panels:
        lines.append(", ".join(filter(None, [labels[style], sweep.group_label(group)])))
        for r in ranked:
            value, low, high = r.similarity
            n = int(_metric(r.run, names.N_QUESTIONS))
            lines.append(f"{r.rank:>4}. {r.run.country_label:<28} {value:.3f} [{low:.3f},{high:.3f}]  "
                         f"uniform {r.uniform:.3f}  {n} questions")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def without_humans(references: dict[tuple, References]) -> dict[tuple, References]:
    """The reference points without the other populations (for the reference table of a world sweep: one
    column per country would not fit; the heatmap and its CSV show them)."""
    return {key: replace(refs, humans={}) for key, refs in references.items()}


def write_world(sweep: Sweep, references: dict[tuple, References], folder: Path) -> tuple[list[Path], str]:
    """The world report's files in `folder` (the two figures, the ranking as text and the CSVs of what they
    draw), and the ranking's text."""
    ranked_panels = panels(sweep, references)
    labels, matrix, shared = human_matrix(sweep)
    ranking_figure(sweep, ranked_panels).savefig(folder / RANKING_PNG)
    heatmap_figure(sweep, labels, matrix).savefig(folder / HEATMAP_PNG)
    text = ranking_text(sweep, ranked_panels)
    (folder / RANKING_TXT).write_text(text, encoding="utf-8")
    with (folder / RANKING_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*sweep.keys, "style", "style_label", "rank", "country", "country_label", "run_id",
                         names.SIMILARITY, names.SIMILARITY_LOW, names.SIMILARITY_HIGH, "uniform_similarity",
                         names.N_QUESTIONS, names.SELECTION_PARAM])  # fmt: skip
        for style, group, ranked in ranked_panels:
            for r in ranked:
                writer.writerow([*group, style, r.run.style_label, r.rank, r.run.country, r.run.country_label,
                                 r.run.run_id, *r.similarity, r.uniform, int(_metric(r.run, names.N_QUESTIONS)),
                                 r.run.params.get(names.SELECTION_PARAM, "shared")])  # fmt: skip
    with (folder / HUMANS_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cluster_order", "country_label", "other_country_label", "human_similarity", "n_questions"])
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                writer.writerow([i + 1, a, b, "" if math.isnan(matrix[i, j]) else matrix[i, j], int(shared[i, j])])
    return [folder / name for name in (RANKING_TXT, RANKING_CSV, HUMANS_CSV, RANKING_PNG, HEATMAP_PNG)], text
