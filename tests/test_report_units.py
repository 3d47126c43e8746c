"""The report's parts on hand-made runs (no MLflow): varying dimensions, paired comparisons with dropped
questions, grid subsets, LaTeX escaping, and the reference figures on the paper's 72 questions."""

import csv
import itertools
import shutil
import subprocess

import numpy as np
import pytest

from culturealign.app.schema import load_country
from culturealign.dataset import read_questions, select_questions
from culturealign.metrics import wasserstein_similarity
from culturealign.report import baselines, compare, table
from culturealign.report.build import write_report
from culturealign.report.runs import RUN_KEY, RunRecord, Sweep, varying_keys
from culturealign.tracking import names

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
    base = {"country": country, "style": style, "model": "gpt-4o", "model.name": "gpt-4o", "seed": "0",
            "bootstrap.confidence": "0.95"}
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
    found = {(c.dimension, c.held_fixed(), f"{c.b_label} − {c.a_label}"): c for c in compare.comparisons(sweep)}
    assert set(found) == {("style", "US, model=a", "CoT − Classification"), ("model", "US, Classification", "b − a")}
    styles = found[("style", "US, model=a", "CoT − Classification")]
    assert styles.dropped == 1 and styles.difference.n == 2
    a, b = runs[0].scores(), runs[1].scores()
    assert styles.difference.value == pytest.approx(np.mean([b[q] - a[q] for q in ("q2", "q3")]))


def test_parent_run_metrics_are_one_per_cell_not_paired_differences(tmp_path):
    runs = [make_run("a1", style="classification", model="a"), make_run("a2", style="cot", model="a"),
            make_run("b1", style="classification", model="b")]
    report = write_report(Sweep("parent", runs, keys=varying_keys(runs)), tmp_path)
    assert report.cells == {
        "similarity/us/classification/model_a": runs[0].metrics["wasserstein_similarity"],
        "similarity/us/cot/model_a": runs[1].metrics["wasserstein_similarity"],
        "similarity/us/classification/model_b": runs[2].metrics["wasserstein_similarity"],
        "unclassifiable/us/classification/model_a": 0.01,
        "unclassifiable/us/cot/model_a": 0.01,
        "unclassifiable/us/classification/model_b": 0.01,
    }
    assert names.cell_metric("similarity", "us", "cot") == "similarity/us/cot"
    assert names.cell_metric("similarity", "us", "cot", (("model.top_p", "0.9"), ("x", "a b"))) == \
        "similarity/us/cot/model.top_p_0.9/x_a_b"


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
    assert lines[2] == "|  |  | Average Wasserstein Similarity Score ↑ |  | Percentage of Unclassifiable Outputs ↓ |  |"
    assert lines[4] == "| **model** | **Country** | **Classification** | **CoT** | **Classification** | **CoT** |"
    assert lines[6] == "| a | JAPAN | 0.78 [0.50,0.90] | – | 1.00% | – |"
    assert "Not included: JAPAN/cot: FAILED." in report.text and "–: not run." in report.text
    assert [p.name for p in report.files if p.suffix == ".png"] == ["similarity.png", "option1_scatter.png",
                                                                    "unclassifiable.png"]
    with open(tmp_path / "table1.csv", newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["a", "a", "a", "b"]


def paper_grid(**extra):
    """The paper's 4 countries x 3 styles, each with the given extra params (e.g. a temperature)."""
    return [
        make_run(f"{country}-{style}-{i}", country=country, style=style, **{"model.name": "gpt-4o", "samples": "100"}
                 | {k: v[i] for k, v in extra.items()})
        for i in range(len(next(iter(extra.values()), [None])))
        for country in ("us", "china", "japan", "india")
        for style in ("classification", "cot", "scenarios")
    ]


def test_terminal_tables_fit_100_columns_with_the_papers_labels(tmp_path):
    for runs in (paper_grid(), paper_grid(**{"model.temperature": ["0.3", "0.7", "1.0"]})):
        report = write_report(Sweep("parent", runs, keys=varying_keys(runs)), tmp_path)
        lines = report.text.splitlines()
        assert max(map(len, lines)) <= 100, max(lines, key=len)
        assert "Average Wasserstein Similarity Score ↑" in report.text
        header = next(line for line in lines if line.startswith("Country"))
        assert header.split() == ["Country", "Classification", "CoT", "Scenarios", "Classification", "CoT", "Scenarios"]
        assert lines[0].startswith("Table 1: Cultural alignment by interaction style: model gpt-4o, ")
        assert "100 samples per question" in report.text
        us = next(line for line in lines if line.startswith("US "))
        assert us.split()[1:3] == ["0.78", "[0.50,0.90]"] and us.split()[-1] == "1.00%"
    assert "model.temperature = 0.7" in lines  # a key too wide for a column becomes a sub-heading


def test_latex_escapes_and_keeps_the_paper_blocks():
    t = table.Table("Table 1", "50% & more_x", ["Country"], [("Similarity ↑", ["a_b"])], [["U.S. & co", "0.5"]], ["#1"],
                    "tab:x")
    tex = table.latex(t)
    assert r"\multicolumn{1}{c}{Similarity $\uparrow$}" in tex
    assert r"U.S. \& co & 0.5 \\" in tex and r"a\_b" in tex and r"\caption{50\% \& more\_x. \#1}" in tex


def test_latex_table1_has_one_caption_a_label_and_compiles(tmp_path):
    runs = paper_grid()
    write_report(Sweep("parent", runs, keys=varying_keys(runs)), tmp_path)
    tex = (tmp_path / "table1.tex").read_text()
    first = tex.split(r"\end{table}")[0]
    assert first.startswith(r"% Requires \usepackage{booktabs} and \usepackage{graphicx}")
    assert first.count(r"\caption{") == 1 and "Table 1" not in first.split(r"\caption{")[1]
    assert r"\label{tab:cultural-alignment}" in first and r"\toprule" in first and r"\bottomrule" in first
    assert r"\multicolumn{3}{c}{Average Wasserstein Similarity Score $\uparrow$}" in first
    assert r"Classification & CoT & Scenarios & Classification & CoT & Scenarios \\" in first
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 2
    assert r"\label{tab:reference-points}" in tex
    pdflatex = shutil.which("pdflatex")
    assert pdflatex, "pdflatex not found: apt-get install texlive-latex-base texlive-latex-recommended (.ci/run does)"
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n"
        "\\input{table1.tex}\n\\end{document}\n"
    )
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").is_file() and "Overfull" not in (tmp_path / "doc.log").read_text()


def test_csvs_share_keys_and_units(tmp_path):
    runs = paper_grid(**{"model.temperature": ["0.3", "0.7"]})
    for run in runs:
        run.metrics.update({"n_questions": 3.0, "n_scored_questions": 3.0, "n_responses": 12.0})
    sweep = Sweep("parent", runs, keys=varying_keys(runs))
    write_report(sweep, tmp_path)
    read = {name: list(csv.DictReader(open(tmp_path / name, newline=""))) for name in
            ("table1.csv", "paired.csv", "questions.csv")}
    ids = ["model.temperature", "country", "country_label", "style", "style_label"]
    for name, rows in read.items():
        header = list(rows[0])
        start = header.index("model.temperature")
        assert header[start : start + len(ids)] == ids, name
        assert {row["country_label"] for row in rows} <= {"US", "CHINA", "JAPAN", "INDIA", ""}, name
    table1 = read["table1.csv"]
    assert {row["n_questions"] for row in table1} == {"3"} and {row["n_responses"] for row in table1} == {"12"}
    questions = read["questions.csv"]
    assert {"option_1", "option_2", "human_p_1", "human_p_2", "model_p_1", "model_p_2"} <= set(questions[0])
    q1 = next(row for row in questions if row["question_id"] == "q1")
    assert (q1["option_1"], float(q1["human_p_1"]), float(q1["model_p_2"])) == ("yes", 0.2, 0.75)
    for row in questions:
        assert 0 <= float(row["unclassifiable_rate"]) <= 1 and row["n_responses"].isdigit()
    for row in read["paired.csv"]:
        compared = row["dimension"]
        assert row[compared] == "" and (compared != "style" or row["style_label"] == "")


def test_a_swept_numeric_setting_becomes_the_x_axis(tmp_path):
    from matplotlib.lines import Line2D

    from culturealign.report import figures

    runs = paper_grid(**{"model.temperature": ["0.3", "0.7", "1.0"]})
    for run, value in zip(runs, np.linspace(0.6, 0.8, len(runs))):
        run.metrics["wasserstein_similarity"] = float(value)
    sweep = Sweep("parent", runs, keys=varying_keys(runs))
    drawn = figures.figures(sweep, baselines.references(sweep))
    similarity = drawn["similarity.png"]
    assert [axis.get_title() for axis in similarity.axes] == ["US", "CHINA", "JAPAN", "INDIA"]
    assert {axis.get_xlabel() for axis in similarity.axes} == {"model.temperature"}
    drawn_lines = {(axis.get_title(), c.get_label()): c for axis in similarity.axes for c in axis.containers}
    assert len(drawn_lines) == 12  # one line per style in each country's panel
    us_cot = drawn_lines[("US", "CoT")]
    chosen = [r for r in runs if r.country == "us" and r.style == "cot"]
    assert list(us_cot.lines[0].get_ydata()) == pytest.approx([r.metrics["wasserstein_similarity"] for r in chosen])
    assert list(np.round(us_cot.lines[0].get_xdata(), 1)) == [0.3, 0.7, 1.0]  # dodged sideways by < 0.05
    whiskers = [bound for (_, low), (_, high) in us_cot.lines[2][0].get_segments() for bound in (low, high)]
    assert whiskers == pytest.approx([0.5, 0.9] * 3)  # the runs' CIs
    title = similarity.get_suptitle()
    assert "model gpt-4o" in title and "100 samples per question" in title and "95% bootstrap CI over questions" in title
    unclassifiable = drawn["unclassifiable.png"]
    assert all(isinstance(line, Line2D) for axis in unclassifiable.axes for line in axis.get_lines())
    assert len(unclassifiable.axes) == 4


def test_option1_scatter_has_one_panel_per_country():
    from culturealign.report import figures

    runs = paper_grid()
    sweep = Sweep("parent", runs, keys=varying_keys(runs))
    scatter = figures.option1_scatter(sweep)
    assert [axis.get_title() for axis in scatter.axes] == ["US", "CHINA", "JAPAN", "INDIA"]
    for axis in scatter.axes:
        assert [text.get_text() for text in axis.get_legend().get_texts()] == ["Classification", "CoT", "Scenarios"]


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


def test_the_footnote_describes_the_table_it_is_under():
    runs = paper_grid()
    note = table.table1(Sweep("parent", runs, keys=varying_keys(runs))).notes
    assert "[95% bootstrap CI over questions]" in note[0]
    assert "(Classification: not exactly an option number; CoT, Scenarios: the judge found none)" in note[0]
    assert note[1].startswith("Questions: dataset.selection=shared, the same for every country")
    assert len(note) == 2  # every cell run: no "not run" line
    for run in runs:
        run.params.update({"estimator": "sample", "extraction.classification": "leading", "bootstrap.confidence": "0.9",
                           "bootstrap.resamples": "500", "bootstrap.method": "bca"})
    subset = [r for r in runs if r.style != "scenarios" and not (r.country == "us" and r.style == "cot")]
    note = table.table1(Sweep("parent", subset, keys=varying_keys(subset))).notes
    assert "[90% bootstrap CI over questions, 500 resamples, bca]" in note[0]
    assert "(Classification: not starting with an option number; CoT: the judge found none)" in note[0]
    assert note[1] == "–: not run."
    classification_only = [r for r in runs if r.style == "classification"]
    assert "judge" not in table.table1(Sweep("parent", classification_only, keys=[])).notes[0]
