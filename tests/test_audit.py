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
    """A blind sheet and, beside it, the judge file (the `judge_option` of each row, joined by item);
    returns the run's records the rows were taken from (the judge's options as tracked)."""
    rows = [{"item": str(i), "sample_index": str(i)} | row for i, row in enumerate(rows, start=1)]
    for target, columns in ((path, COLUMNS), (judge_file(path), JUDGE_COLUMNS)):
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    return [{"question_id": row.get("question_id"), "variant": None, "sample_index": int(row["sample_index"]),
             "option": int(row.get("judge_option") or 0) or None} for row in rows]  # fmt: skip


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
    records = write(path, [{"run_id": "r", "question_id": "q1", "judge_option": "1", "label": " 1 "},
                           {"run_id": "r", "question_id": "q2", "judge_option": "0", "label": "3"}])
    labels, judged = read_labels(path, "r", QUESTIONS, records)
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
    records = write(path, [{"run_id": "r", "judge_option": "1"} | row for row in rows])
    with pytest.raises(ReportError, match=re.escape(message)):
        read_labels(path, "r", QUESTIONS, records)


def test_missing_file_or_columns(tmp_path):
    with pytest.raises(ReportError, match="does not exist; create it with `culturealign-audit export`"):
        read_labels(tmp_path / "none.csv", "r", QUESTIONS, [])
    (tmp_path / "x.csv").write_text("run_id,label\nr,1\n")
    with pytest.raises(ReportError, match="lacks column"):
        read_labels(tmp_path / "x.csv", "r", QUESTIONS, [])


def test_the_judges_options_come_from_the_run_not_from_the_files(tmp_path):
    """An edited sheet or judge file cannot change the judge's accuracy: the verdicts are the run's."""
    path = tmp_path / "audit.csv"
    records = write(path, [{"run_id": "r", "question_id": "q1", "judge_option": "2", "label": "1"}])
    judge_file(path).unlink()  # not needed to score
    assert read_labels(path, "r", QUESTIONS, records)[1].tolist() == [2]
    text = judge_file(path)
    text.write_text("item,run_id,question_id,variant,sample_index,judge_output,judge_option\n1,r,q1,,1,x,1\n")
    assert read_labels(path, "r", QUESTIONS, records)[1].tolist() == [2]  # the edited judge file is ignored
    edited = path.read_text().replace(",q1,,1,", ",q1,,7,")  # a row moved to a response the run does not have
    path.write_text(edited)
    with pytest.raises(ReportError, match=re.escape("line 2: the run has no response q1 variant '' sample '7'")):
        read_labels(path, "r", QUESTIONS, records)
