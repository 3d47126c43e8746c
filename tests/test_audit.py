"""Judge audit statistics and label checks (no MLflow; the end-to-end audit of a real run is in test_report.py)."""

import csv
import re

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from culturealign.errors import ReportError
from culturealign.report.audit import COLUMNS, JUDGE_COLUMNS, agreement, cohen_kappa, judge_file, read_labels

QUESTIONS = {"q1": {"options": ["yes", "no"]}, "q2": {"options": ["a", "b", "c"]}}


def write(path, rows):
    """A blind sheet and, beside it, the judge file (the `judge_option` of each row, joined by item)."""
    rows = [{"item": str(i)} | row for i, row in enumerate(rows, start=1)]
    for target, columns in ((path, COLUMNS), (judge_file(path), JUDGE_COLUMNS)):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows({c: row.get(c, "") for c in columns} for row in rows)


def test_the_sheet_is_blind():
    assert not {"judge_output", "judge_option"} & set(COLUMNS)
    assert {"judge_output", "judge_option", "item"} <= set(JUDGE_COLUMNS) and "item" in COLUMNS


def test_agreement_statistics():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    judged = np.where(rng.random(200) < 0.8, labels, rng.integers(0, 3, 200))
    assert cohen_kappa(labels, judged) == pytest.approx(cohen_kappa_score(labels, judged))
    score = agreement(labels, judged, seed=0)
    assert score.accuracy.value == pytest.approx(np.mean(labels == judged))
    assert score.accuracy.low < score.accuracy.value < score.accuracy.high
    assert 0 < score.kappa.high - score.kappa.low < 0.2  # 200 responses pin kappa down
    assert agreement(labels, judged, seed=0) == score  # seeded
    assert agreement(labels, judged, seed=1) != score
    assert cohen_kappa(np.ones(5), np.ones(5)) == 1.0  # one category, full agreement: not 0/0
    perfect = agreement(np.array([1, 2, 0, 1]), np.array([1, 2, 0, 1]))
    assert (perfect.accuracy.value, perfect.kappa.low, perfect.kappa.high) == (1.0, 1.0, 1.0)


def test_labels_are_read_with_the_judges_options(tmp_path):
    path = tmp_path / "audit.csv"
    write(path, [{"run_id": "r", "question_id": "q1", "judge_option": "1", "label": " 1 "},
                 {"run_id": "r", "question_id": "q2", "judge_option": "0", "label": "3"}])
    labels, judged = read_labels(path, "r", QUESTIONS)
    assert labels.tolist() == [1, 3] and judged.tolist() == [1, 0]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"question_id": "q1", "label": "1"}, {"question_id": "q1", "label": ""}], "1 of 2 rows have no label (line 3)"),
        ([{"question_id": "q1", "label": "3"}], "label '3' is not an option number 1..2 or 0"),
        ([{"question_id": "q1", "label": "yes"}], "label 'yes' is not an option number"),
        ([{"question_id": "q9", "label": "1"}], "question q9 is not in the run"),
        ([{"question_id": "q1", "label": "1", "run_id": "other"}], "exported from run other, not r; pass --run other"),
        ([], "has no responses"),
    ],
)
def test_bad_label_files_name_the_fix(tmp_path, rows, message):
    path = tmp_path / "audit.csv"
    write(path, [{"run_id": "r", "judge_option": "1"} | row for row in rows])
    with pytest.raises(ReportError, match=re.escape(message)):
        read_labels(path, "r", QUESTIONS)


def test_missing_file_or_columns(tmp_path):
    with pytest.raises(ReportError, match="does not exist; create it with `culturealign-audit export`"):
        read_labels(tmp_path / "none.csv", "r", QUESTIONS)
    (tmp_path / "x.csv").write_text("run_id,label\nr,1\n")
    with pytest.raises(ReportError, match="lacks column"):
        read_labels(tmp_path / "x.csv", "r", QUESTIONS)


def test_the_judge_file_is_joined_by_item(tmp_path):
    path = tmp_path / "audit.csv"
    write(path, [{"run_id": "r", "question_id": "q1", "judge_option": "2", "label": "2"}])
    elsewhere = tmp_path / "kept" / "verdicts.csv"
    elsewhere.parent.mkdir()
    judge_file(path).rename(elsewhere)
    with pytest.raises(ReportError, match="judge file .* does not exist"):
        read_labels(path, "r", QUESTIONS)
    assert read_labels(path, "r", QUESTIONS, judge=elsewhere)[1].tolist() == [2]
    elsewhere.write_text("item,run_id,question_id,judge_option\n7,r,q1,1\n")
    with pytest.raises(ReportError, match="no verdict for item 1 .*--judge"):
        read_labels(path, "r", QUESTIONS, judge=elsewhere)
