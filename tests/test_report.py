"""Acceptance: the report of a real mini multirun (2 countries x 3 styles x 4 questions x 6 samples, fake server),
checked cell by cell against the runs' metrics, a paired difference and the baselines computed by hand."""

import csv
import json
import math

import mlflow
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from culturealign.app.schema import load_country
from culturealign.dataset import read_questions, select_questions
from culturealign.report.cli import audit_main, report_main
from tests.conftest import MINI_SWEEP_COUNTRIES, MINI_SWEEP_QUESTIONS, MINI_SWEEP_SAMPLES
from tests.test_ui import get, start_ui, stop_ui, wait_for

COUNTRIES = MINI_SWEEP_COUNTRIES
STYLES = ("classification", "cot", "scenarios")
QUESTIONS, SAMPLES = MINI_SWEEP_QUESTIONS, MINI_SWEEP_SAMPLES
FILES = [
    "table1.md", "table1.tex", "table1.csv", "paired.md", "paired.csv", "questions.csv",
    "similarity.png", "option1_scatter.png", "unclassifiable.png",
]


@pytest.fixture(scope="module")
def sweep(mini_sweep):
    client = mini_sweep.client
    experiment = client.get_experiment_by_name("culturealign")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("culturealign.kind") == "sweep")
    children = {(r.data.params["country"], r.data.params["style"]): r for r in runs if r is not parent}
    return mini_sweep.workdir, mini_sweep.uri, client, parent.info.run_id, children, mini_sweep.result.stdout


@pytest.fixture(scope="module")
def report(sweep):
    """The CLI with its defaults (latest sweep), into an explicit folder."""
    workdir, uri, *_ = sweep
    out = workdir / "report"
    assert report_main(["--tracking-uri", uri, "--out", str(out)]) == 0
    return out


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def distributions(client, run, tmp_path):
    path = client.download_artifacts(run.info.run_id, "distributions.json", str(tmp_path / run.info.run_id))
    return json.load(open(path))


def test_sweep_ends_with_table1_printed_and_logged(sweep):
    workdir, _, client, parent_id, _, stdout = sweep
    assert "### Table 1" in stdout and "### Paired differences" in stdout
    logged = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert logged == {f"report/{name}" for name in FILES}
    assert all((workdir / "multirun" / "report" / name).is_file() for name in FILES)


def test_every_cell_matches_the_runs_metrics(sweep, report):
    _, _, _, _, children, _ = sweep
    lines = (report / "table1.md").read_text().splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["Country", *(f"Similarity ↑: {s}" for s in STYLES), *(f"Unclassifiable ↓: {s}" for s in STYLES)]
    body = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[4:6])}
    assert set(body) == {"US", "India"}
    for (country, style), run in children.items():
        m = run.data.metrics
        cells = body[{"us": "US", "india": "India"}[country]]
        similarity = f"{m['wasserstein_similarity']:.2f} [{m['wasserstein_similarity_ci_low']:.2f}, " \
                     f"{m['wasserstein_similarity_ci_high']:.2f}]"
        assert cells[1 + STYLES.index(style)] == similarity
        assert cells[4 + STYLES.index(style)] == f"{100 * m['unclassifiable_rate']:.2f}%"
    rows = read_csv(report / "table1.csv")
    assert len(rows) == len(children) == 6
    for row in rows:
        metrics = children[(row["country"], row["style"])].data.metrics
        for name in ("wasserstein_similarity", "wasserstein_similarity_ci_low", "unclassifiable_rate", "n_responses"):
            assert float(row[name]) == metrics[name]
    assert "multicolumn{3}{c}{Similarity $\\uparrow$}" in (report / "table1.tex").read_text()


def test_paired_difference_matches_a_hand_computation(sweep, report, tmp_path):
    _, _, client, parent_id, children, _ = sweep
    by_id = []
    for style in ("classification", "cot"):
        scores = {}
        for q in distributions(client, children[("us", style)], tmp_path):
            counts = q["model_counts"]
            if sum(counts):  # two options: similarity = 1 - |p1 - q1|
                scores[q["id"]] = 1 - abs(q["human_distribution"][0] - counts[0] / sum(counts))
        by_id.append(scores)
    shared = [q for q in by_id[0] if q in by_id[1]]
    differences = np.array([by_id[1][q] - by_id[0][q] for q in shared])
    ci = stats.bootstrap(
        (differences,), np.mean, n_resamples=1000, confidence_level=0.95, method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    row = next(r for r in read_csv(report / "paired.csv") if r["metric"] == "paired_diff_us_cot_minus_classification")
    assert float(row["mean_difference_b_minus_a"]) == pytest.approx(differences.mean(), abs=1e-12)
    assert int(row["n_questions"]) == len(shared) and int(row["dropped_questions"]) == QUESTIONS - len(shared)
    if np.ptp(differences) > 0:
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((ci.low, ci.high), abs=1e-12)
    metrics = client.get_run(parent_id).data.metrics
    assert metrics["paired_diff_us_cot_minus_classification"] == pytest.approx(differences.mean(), abs=1e-12)
    assert metrics["paired_diff_us_cot_minus_classification_ci_low"] == pytest.approx(float(row["ci_low"]))
    expected = {f"paired_diff_{c}_{b}_minus_{a}" for c in COUNTRIES for i, a in enumerate(STYLES) for b in STYLES[i + 1 :]}
    assert {r["metric"] for r in read_csv(report / "paired.csv")} == expected


def test_reference_points_match_the_dataset(sweep, report, paper_csv, tmp_path):
    _, _, client, _, children, _ = sweep
    countries = [load_country(name) for name in ("us", "china", "japan", "india")]
    questions = select_questions(read_questions(paper_csv), countries, limit=QUESTIONS)
    us, india = (np.array([q.human_distribution(countries[i])[0] for q in questions]) for i in (0, 3))
    expected_uniform = {"us": np.mean(1 - abs(us - 0.5)), "india": np.mean(1 - abs(india - 0.5))}
    expected_human = np.mean(1 - abs(us - india))
    for row in read_csv(report / "table1.csv"):
        assert float(row["uniform_similarity"]) == pytest.approx(expected_uniform[row["country"]], abs=1e-12)
        other = "India" if row["country"] == "us" else "US"
        assert float(row[f"human_similarity_{other}"]) == pytest.approx(expected_human, abs=1e-12)
        assert row[f"human_similarity_{row['country_label']}"] == ""
        ceilings = []
        for q in distributions(client, children[(row["country"], row["style"])], tmp_path):
            n, p = round(sum(q["model_counts"])), q["human_distribution"][0]
            if n:
                ceilings.append(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) * (1 - abs(k / n - p)) for k in range(n + 1)))
        assert float(row["finite_sample_ceiling"]) == pytest.approx(np.mean(ceilings), abs=1e-9)


def test_figures_are_png_files(report):
    for name in ("similarity.png", "option1_scatter.png", "unclassifiable.png"):
        data = (report / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_questions_drill_down_worst_first(report):
    rows = read_csv(report / "questions.csv")
    assert len(rows) == 6 * QUESTIONS
    scores = [float(r["similarity"]) for r in rows if r["similarity"]]
    assert scores == sorted(scores)
    assert {"question", "options", "human_distribution", "model_distribution", "unclassifiable"} <= set(rows[0])


def test_report_errors_are_one_line(sweep, tmp_path, capsys):
    _, uri, *_ = sweep
    assert report_main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 1
    assert report_main(["--tracking-uri", uri, "--parent-run", "0" * 32, "--out", str(tmp_path)]) == 1
    assert report_main(["--tracking-uri", uri, "--experiment", "nope"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("culturealign-report: error: ") for line in errors)
    assert "no MLflow store" in errors[0] and "not found" in errors[1] and "no experiment 'nope'" in errors[2]


def audit(uri, *argv):
    return audit_main([*argv, "--tracking-uri", uri])


def test_judge_audit_of_a_real_run(sweep, tmp_path, capsys):
    _, uri, client, _, children, _ = sweep
    run_id = children[("us", "cot")].info.run_id
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert audit(uri, "export", "--run", run_id, "--n", "10", "--seed", str(seed), "--out", str(tmp_path / name)) == 0
    a, b, c = (read_csv(tmp_path / name) for name in "abc")
    assert a == b and a != c and len(a) == 10
    local = client.download_artifacts(run_id, "responses.jsonl", str(tmp_path))
    records = {(r["question_id"], r["sample_index"]): r for r in map(json.loads, open(local))}
    assert len({(r["question_id"], r["sample_index"]) for r in a}) == 10  # no response twice
    for row in a:
        record = records[(row["question_id"], int(row["sample_index"]))]
        assert row["response"] == record["response"] and row["judge_output"] == record["judge_output"]
        assert int(row["judge_option"]) == (record["option"] or 0) and row["label"] == ""
    # A human agrees with the judge on 8 of 10 responses.
    judged = [int(r["judge_option"]) for r in a]
    labels = [(j % 2) + 1 if i < 2 else j for i, j in enumerate(judged)]
    with open(tmp_path / "labelled.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(a[0]))
        writer.writeheader()
        writer.writerows(r | {"label": str(label)} for r, label in zip(a, labels))
    capsys.readouterr()
    assert audit(uri, "score", "--run", run_id, str(tmp_path / "labelled.csv")) == 0
    assert "accuracy 0.800" in capsys.readouterr().out
    metrics = client.get_run(run_id).data.metrics
    assert metrics["judge_audit_accuracy"] == pytest.approx(0.8) and metrics["judge_audit_n"] == 10
    assert metrics["judge_audit_kappa"] == pytest.approx(cohen_kappa_score(labels, judged))
    assert metrics["judge_audit_accuracy_ci_low"] <= 0.8 <= metrics["judge_audit_accuracy_ci_high"]
    assert metrics["judge_audit_kappa_ci_low"] <= metrics["judge_audit_kappa"] <= metrics["judge_audit_kappa_ci_high"]
    assert "judge_audit.csv" in {f.path for f in client.list_artifacts(run_id)}


def test_judge_audit_refuses_runs_without_a_judge(sweep, tmp_path, capsys):
    _, uri, _, parent_id, children, _ = sweep
    out = str(tmp_path / "x.csv")
    cases = [
        (children[("us", "classification")].info.run_id, "parsed as option numbers, not judged; audit a cot or scenarios run"),
        (parent_id, "is a sweep's parent run"),
        ("f" * 32, "not found"),
    ]
    capsys.readouterr()
    for run_id, message in cases:
        assert audit(uri, "export", "--run", run_id, "--out", out) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("culturealign-audit: error: ") and message in error and "\n" not in error


def test_ui_shows_the_sweep_and_its_report(sweep, tmp_path):
    _, uri, _, parent_id, _, _ = sweep
    process, base = start_ui(uri, tmp_path)
    try:
        wait_for(f"{base}/health", process)
        status, body = get(f"{base}/ajax-api/2.0/mlflow/runs/get?run_id={parent_id}")
        assert status == 200 and json.loads(body)["run"]["info"]["run_id"] == parent_id
        status, body = get(f"{base}/get-artifact?path=report/table1.md&run_uuid={parent_id}")
        assert status == 200 and body.startswith("### Table 1".encode())
    finally:
        stop_ui(process)


def test_figures_draw_the_tracked_numbers(sweep):
    """What each figure draws, read back from the figure: bar heights, whiskers and points are the runs'
    metrics and per-question distributions, not merely some PNG."""
    from matplotlib.container import BarContainer

    from culturealign.report import baselines, figures
    from culturealign.report.runs import load_sweep

    _, _, client, parent_id, children, _ = sweep
    loaded = load_sweep(client, parent_id)
    drawn = figures.figures(loaded, baselines.references(loaded))
    metrics = [run.data.metrics for run in children.values()]

    def bars(figure):
        containers = [c for axis in figure.axes for c in axis.containers if isinstance(c, BarContainer)]
        return containers, sorted(round(p.get_height(), 9) for c in containers for p in c.patches)

    containers, heights = bars(drawn["similarity.png"])
    assert heights == sorted(round(m["wasserstein_similarity"], 9) for m in metrics)
    whiskers = sorted(
        (round(low, 9), round(high, 9))
        for c in containers
        for (_, low), (_, high) in c.errorbar.lines[2][0].get_segments()
    )
    assert whiskers == sorted(
        (round(m["wasserstein_similarity_ci_low"], 9), round(m["wasserstein_similarity_ci_high"], 9)) for m in metrics
    )
    _, rates = bars(drawn["unclassifiable.png"])
    assert rates == sorted(round(100 * m["unclassifiable_rate"], 9) for m in metrics)
    points = sorted(
        (round(x, 9), round(y, 9))
        for axis in drawn["option1_scatter.png"].axes
        for collection in axis.collections
        for x, y in collection.get_offsets()
    )
    expected = sorted(
        (round(q["human_distribution"][0], 9), round(q["model_distribution"][0], 9))
        for run in loaded.runs
        for q in run.questions
        if q.get("model_distribution")
    )
    assert points == expected and points
