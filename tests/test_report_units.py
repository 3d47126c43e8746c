"""The report's parts on hand-made runs (no MLflow): varying dimensions, paired comparisons with dropped
questions, grid subsets, LaTeX escaping, and the reference figures on the paper's 72 questions."""

import csv
import itertools

import numpy as np
import pytest

from culturealign.app.schema import load_country
from culturealign.dataset import read_questions, select_questions
from culturealign.metrics import wasserstein_similarity
from culturealign.report import baselines, compare, table
from culturealign.report.build import write_report
from culturealign.report.runs import RUN_KEY, RunRecord, Sweep, varying_keys

HUMANS = {"q1": [0.2, 0.8], "q2": [0.6, 0.4], "q3": [0.5, 0.5]}


def make_run(run_id, country="us", style="classification", counts=None, **params):
    counts = counts or {"q1": [1, 3], "q2": [2, 2], "q3": [4, 0]}
    questions = []
    for qid, human in HUMANS.items():
        total = sum(counts[qid])
        model = [c / total for c in counts[qid]] if total else None
        similarity = wasserstein_similarity(human, model) if model else None
        questions.append({"id": qid, "question": f"text {qid}", "options": ["yes", "no"], "human_distribution": human,
                          "model_counts": counts[qid], "model_distribution": model, "similarity": similarity,
                          "unclassifiable": 0, "responses": total})
    scored = [q["similarity"] for q in questions if q["similarity"] is not None]
    metrics = {"wasserstein_similarity": float(np.mean(scored)), "wasserstein_similarity_ci_low": 0.5,
               "wasserstein_similarity_ci_high": 0.9, "unclassifiable_rate": 0.01}
    base = {"country": country, "style": style, "model": "gpt-4o", "model.name": "gpt-4o", "seed": "0"}
    return RunRecord(run_id, len(run_id), base | params, metrics, country.upper(), questions)


def test_varying_keys_keep_only_what_separates_runs():
    runs = [
        make_run(f"r{i}", style=style, **{"model": model, "model.name": f"{model}-2024", "model.temperature": temp})
        for i, (style, model, temp) in enumerate(itertools.product(["classification", "cot"], ["a", "b"], ["0.3", "0.7"]))
    ]
    assert varying_keys(runs) == ["model", "model.temperature"]  # model.name goes with model
    assert varying_keys(runs[:2]) == ["model.temperature"]
    assert varying_keys([make_run("x1"), make_run("x2")]) == [RUN_KEY]  # identical params: the run tells them apart


def test_comparisons_along_every_dimension_with_dropped_questions():
    unscored = {"q1": [0, 0], "q2": [1, 1], "q3": [3, 1]}
    runs = [
        make_run("a1", style="classification", model="a"),
        make_run("a2", style="cot", model="a", counts=unscored),
        make_run("b1", style="classification", model="b"),
    ]
    sweep = Sweep("parent", runs, keys=varying_keys(runs))
    found = {c.metric_name: c for c in compare.comparisons(sweep)}
    assert set(found) == {"paired_diff_us_a_cot_minus_classification", "paired_diff_us_classification_b_minus_a"}
    styles = found["paired_diff_us_a_cot_minus_classification"]
    assert styles.dropped == 1 and styles.difference.n == 2
    a, b = runs[0].scores(), runs[1].scores()
    assert styles.difference.value == pytest.approx(np.mean([b[q] - a[q] for q in ("q2", "q3")]))
    assert set(styles.metrics()) == {styles.metric_name + s for s in ("", "_ci_low", "_ci_high", "_n")}
    assert compare.Comparison("style", ("us", "m=1"), *runs[:2], styles.difference, 0).metric_name.endswith(
        "us_m_1_cot_minus_classification"
    )


def test_report_on_a_grid_subset_with_an_extra_dimension(tmp_path):
    runs = [
        make_run("a1", country="us", style="classification", model="a"),
        make_run("a2", country="us", style="cot", model="a"),
        make_run("a3", country="japan", style="classification", model="a"),
        make_run("b1", country="us", style="classification", model="b"),
    ]
    sweep = Sweep("parent", runs, ["JAPAN/cot: FAILED"], varying_keys(runs))
    report = write_report(sweep, tmp_path)
    lines = (tmp_path / "table1.md").read_text().splitlines()
    assert lines[2].startswith("| model | Country | Similarity ↑: classification | Similarity ↑: cot |")
    assert lines[5] == "| a | JAPAN | 0.78 [0.50, 0.90] | – | 1.00% | – |"
    assert "Not included: JAPAN/cot: FAILED" in report.markdown
    assert [p.name for p in report.files if p.suffix == ".png"] == ["similarity.png", "option1_scatter.png",
                                                                    "unclassifiable.png"]
    with open(tmp_path / "table1.csv", newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["a", "a", "a", "b"]


def test_latex_escapes_and_keeps_the_paper_blocks():
    t = table.Table("50% & more_x", ["Country"], [("Similarity ↑", ["a_b"])], [["U.S. & co", "0.5"]], ["#1"])
    tex = table.latex(t)
    assert r"\multicolumn{1}{c}{Similarity $\uparrow$}" in tex
    assert r"U.S. \& co & 0.5 \\" in tex and r"a\_b" in tex and r"\caption{50\% \& more\_x. \#1}" in tex


def test_reference_figures_on_the_paper_questions(paper_csv):
    """The data README's numbers: uniform 0.79 (Japan) to 0.835 (India); human vs human 0.75 (US-China) to
    0.86 (US-Japan)."""
    names = ("us", "china", "japan", "india")
    countries = [load_country(name) for name in names]
    questions = select_questions(read_questions(paper_csv), countries)
    assert len(questions) == 72
    humans = {name: {q.id: q.human_distribution(c) for q in questions} for name, c in zip(names, countries)}
    uniform = {name: baselines.uniform_baseline(h) for name, h in humans.items()}
    assert min(uniform.values()) == pytest.approx(uniform["japan"]) == pytest.approx(0.79, abs=0.005)
    assert max(uniform.values()) == pytest.approx(uniform["india"]) == pytest.approx(0.835, abs=0.005)
    pairs = {(a, b): baselines.human_vs_human(humans[a], humans[b]) for a, b in itertools.combinations(names, 2)}
    assert min(pairs.values()) == pytest.approx(pairs[("us", "china")]) == pytest.approx(0.75, abs=0.005)
    assert max(pairs.values()) == pytest.approx(pairs[("us", "japan")]) == pytest.approx(0.86, abs=0.005)


def test_a_failing_report_never_fails_the_sweep(tmp_path, caplog):
    from culturealign.app.callbacks import report_sweep

    report_sweep(f"sqlite:///{tmp_path / 'gone.db'}", "abc", tmp_path / "report")
    assert "no report for sweep abc" in caplog.text and "culturealign-report --parent-run abc" in caplog.text
