"""experiment=world end to end against the fake server on the committed rows, and the world report's figures
read back: the ranking draws each run's tracked similarity, interval and uniform reference; the heatmap
draws the human-vs-human similarities in scipy's cluster order."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from culturealign import countries
from culturealign.app.schema import conf_dir, load_country
from culturealign.dataset import read_questions
from culturealign.errors import DatasetError
from culturealign.pipeline import load_questions
from tests.helpers import make_cfg, spec_of

QUESTIONS, SAMPLES = 3, 2


def world_countries() -> list[str]:
    text = (conf_dir() / "experiment" / "world.yaml").read_text(encoding="utf-8")
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("country:")).split(",")


@pytest.fixture(scope="module")
def world_sweep(tmp_path_factory, paper_csv):
    """`culturealign --multirun experiment=world` over every country it lists (35 on the committed rows),
    classification, 3 questions x 2 samples each, through the installed CLI."""
    import mlflow

    from tests.fake_openai import FakeOpenAIServer
    from tests.helpers import fake_model_overrides, run_cli

    workdir = tmp_path_factory.mktemp("world")
    with FakeOpenAIServer() as server:
        args = [
            "--multirun", "experiment=world", *fake_model_overrides(server.base_url, paper_csv, workdir),
            "model.name=gpt-4o-fake", f"samples={SAMPLES}", f"dataset.limit={QUESTIONS}", "bootstrap.resamples=50",
            f"hydra.sweep.dir={workdir / 'multirun'}",
        ]  # fmt: skip
        result = run_cli(args, cwd=workdir, env={"MPLCONFIGDIR": str(workdir / "mplconfig")}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    return workdir, mlflow.MlflowClient(uri), result.stdout


def test_every_generated_country_gets_its_own_questions(paper_csv, quirk_csv):
    """The mechanism covers every country config: with dataset.selection=per_country each one asks exactly
    the two-option questions its keys answer, or fails in one line naming it when it has none."""
    rows = [*read_questions(paper_csv), *read_questions(quirk_csv)]
    found = countries.countries(k for q in rows for k in q.selections)
    counts = countries.question_counts(rows, found, 2)
    assert len(found) == 106
    for country in found:
        spec = spec_of(make_cfg(f"country={country.file}", "dataset.selection=per_country"), country.file)
        assert spec.country == load_country(country.file) and spec.selection == [spec.country]
        if counts[country.file]:
            assert len(load_questions(spec, paper_csv)) == counts[country.file], country.file
        else:  # only the 6- and 7-option loader rows name it
            with pytest.raises(DatasetError, match=f"human data for {spec.country.label};") as error:
                load_questions(spec, paper_csv)
            assert "\n" not in str(error.value)


def test_the_world_sweep_ranks_every_swept_country(world_sweep):
    workdir, _, printed = world_sweep
    swept = world_countries()
    labels = {load_country(name).label for name in swept}
    folder = next((workdir / "multirun" / "report").glob("world_ranking.csv")).parent
    with (folder / "world_ranking.csv").open(encoding="utf-8") as handle:
        ranking = list(csv.DictReader(handle))
    assert {row["country_label"] for row in ranking} == labels and len(ranking) == len(swept) == 35
    assert [int(row["rank"]) for row in ranking] == list(range(1, 36))
    values = [float(row["wasserstein_similarity"]) for row in ranking]
    assert values == sorted(values, reverse=True)
    assert {row["dataset.selection"] for row in ranking} == {"per_country"}
    assert {row["n_questions"] for row in ranking} == {str(QUESTIONS)}
    text = (folder / "world_ranking.txt").read_text(encoding="utf-8")
    assert all(f". {label} " in text for label in labels)
    assert f"dataset.selection=per_country; {QUESTIONS} questions per country." in text
    table1 = (folder / "table1.txt").read_text(encoding="utf-8")
    assert "dataset.selection=per_country" in table1 and "Palestinian" in table1
    assert "Human populations are in world_human_similarity.png" in table1
    assert max(len(line) for line in table1.splitlines()) <= 110  # no column per other country
    assert "World ranking: " in printed and all(f". {label} " in printed for label in labels)  # the sweep's last words
    with (folder / "world_human_similarity.csv").open(encoding="utf-8") as handle:
        pairs = list(csv.DictReader(handle))
    assert len(pairs) == 35 * 35 and {row["country_label"] for row in pairs} == labels


def test_world_figures_draw_the_tracked_numbers(world_sweep):
    from culturealign.metrics import wasserstein_similarity
    from culturealign.report import baselines, world
    from culturealign.report.runs import latest_sweep_id, load_sweep

    _, client, _ = world_sweep
    sweep = load_sweep(client, latest_sweep_id(client, "culturealign"))
    references = baselines.references(sweep)
    panels = world.panels(sweep, references)
    assert [style for style, _, _ in panels] == ["classification"]
    figure = world.ranking_figure(sweep, panels)
    (axis,) = figure.axes
    by_label = {run.country_label: run for run in sweep.runs}
    ticks = [tick.get_text().split(". ", 1)[1] for tick in axis.get_yticklabels()]
    assert sorted(ticks) == sorted(by_label)
    points = axis.collections[-1]  # the uniform-model ticks, drawn after the intervals
    line = axis.lines[0]
    drawn = dict(zip(ticks, line.get_xdata()))
    assert drawn == pytest.approx({label: run.metrics["wasserstein_similarity"] for label, run in by_label.items()})
    bars = [c for c in axis.collections if c is not points][0]
    spans = {ticks[round(seg[0][1])]: (round(seg[0][0], 9), round(seg[1][0], 9)) for seg in bars.get_segments()}
    assert spans == {
        label: (round(run.metrics["wasserstein_similarity_ci_low"], 9), round(run.metrics["wasserstein_similarity_ci_high"], 9))
        for label, run in by_label.items()
    }
    uniform = {ticks[round(y)]: x for x, y in points.get_offsets()}
    assert uniform == pytest.approx({run.country_label: baselines.uniform_baseline(run.humans()) for run in sweep.runs})

    labels, matrix, _ = world.human_matrix(sweep)
    heat = world.heatmap_figure(sweep, labels, matrix)
    image = heat.axes[0].images[0]
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == labels
    data = np.ma.filled(image.get_array().astype(float), np.nan)
    humans = {run.country_label: run.humans() for run in sweep.runs}
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            common = humans[a].keys() & humans[b].keys()
            if not common:
                assert math.isnan(data[i, j])
            else:
                expected = np.mean([wasserstein_similarity(humans[a][q], humans[b][q]) for q in common])
                assert data[i, j] == pytest.approx(expected)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    unordered = [run.country_label for run in sweep.runs]
    square = np.array([[data[labels.index(a), labels.index(b)] for b in unordered] for a in unordered])
    distance = np.nan_to_num(1 - square, nan=1.0)
    np.fill_diagonal(distance, 0.0)
    order = leaves_list(linkage(squareform(distance, checks=False), method="average"))
    assert [unordered[i] for i in order] == labels


def test_the_footnote_names_the_selection_and_each_countrys_question_count():
    from culturealign.report.runs import RunRecord, Sweep
    from culturealign.report.table import questions_note

    def run(country: str, label: str, n: int, mode: str) -> RunRecord:
        params = {"country": country, "style": "classification", "dataset.selection": mode, "dataset.countries": "us,china"}
        return RunRecord(country, 0, params, {"n_questions": n}, label, [])

    mixed = Sweep("p", [run("us", "US", 72, "per_country"), run("kenya", "Kenya", 54, "per_country")])
    assert questions_note(mixed) == "Questions: dataset.selection=per_country; questions per country: US 72, Kenya 54."
    shared = Sweep("p", [run("us", "US", 72, "shared"), run("china", "China", 72, "shared")])
    assert questions_note(shared) == (
        "Questions: dataset.selection=shared, the same 72 for every country (answered by all of us,china)."
    )


def test_the_report_flag_adds_the_world_report_to_a_small_sweep(mini_sweep, tmp_path):
    """Two countries (the Table 1 mini sweep) get no world report unless asked; asked, one panel per style."""
    from culturealign.report.cli import report_main

    plain, world_dir = tmp_path / "plain", tmp_path / "world"
    assert report_main(["--tracking-uri", mini_sweep.uri, "--out", str(plain), "--no-log"]) == 0
    assert (plain / "table1.txt").is_file() and not list(plain.glob("world_*"))
    assert report_main(["--tracking-uri", mini_sweep.uri, "--out", str(world_dir), "--no-log", "--world"]) == 0
    with (world_dir / "world_ranking.csv").open(encoding="utf-8") as handle:
        ranking = list(csv.DictReader(handle))
    assert sorted((row["style"], row["rank"]) for row in ranking) == sorted(
        (style, rank) for style in ("classification", "cot", "scenarios") for rank in ("1", "2")
    )
    assert {row["country_label"] for row in ranking} == {"US", "India"}
    assert {row["dataset.selection"] for row in ranking} == {"shared"}
    assert (world_dir / "world_ranking.png").stat().st_size > 0 and (world_dir / "world_human_similarity.png").is_file()
