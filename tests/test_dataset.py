"""Parsing and selecting GlobalOpinionQA on the real rows."""

import csv
import functools
import http.server
import threading

import pytest

from culturealign.app.schema import load_country
from culturealign.dataset import ensure_downloaded, read_questions, select_questions
from culturealign.errors import DatasetError

PAPER = [load_country(name) for name in ("us", "china", "japan", "india")]


def test_paper_subset_yields_the_papers_72_questions(paper_csv):
    questions = read_questions(paper_csv)
    assert len(questions) == 72
    selected = select_questions(questions, PAPER)
    assert len(selected) == 72
    assert len({q.id for q in selected}) == 72
    for question in selected:
        assert len(question.options) == 2
        for country in PAPER:
            assert sum(question.human_distribution(country)) == pytest.approx(1.0)


def test_country_keys_follow_preference(paper_csv):
    questions = read_questions(paper_csv)
    china, india = load_country("china"), load_country("india")
    both = [q for q in questions if "China" in q.selections and "China (Non-national sample)" in q.selections]
    assert both and all(q.country_key(china) == "China" for q in both)
    non_national = [q for q in questions if set(q.selections) & {"China"} == set()]
    assert len(non_national) == 58
    assert all(q.country_key(india).startswith("India (") for q in questions)


def test_quirk_rows_parse_and_are_not_selected(quirk_csv):
    questions = read_questions(quirk_csv)
    assert [len(q.options) for q in questions] == [7, 6]
    assert "\n\nSexual assault/rape" in questions[0].text
    assert len(questions[1].selections) == 90
    assert select_questions(questions, PAPER) == []
    assert select_questions(questions, [load_country("us")], n_options=6)[0].row == 2


def test_limit_takes_the_first_questions(paper_csv):
    questions = read_questions(paper_csv)
    assert select_questions(questions, PAPER, limit=3) == select_questions(questions, PAPER)[:3]


def test_missing_country_error_names_country_and_keys(paper_csv):
    question = read_questions(paper_csv)[0]
    atlantis = type(PAPER[0])("Atlantis", "Atlantis", ("Atlantis",))
    with pytest.raises(DatasetError, match=r"no human data for Atlantis \(accepted keys: Atlantis; available: .*Japan"):
        question.human_distribution(atlantis)


def write_rows(path, rows, header=("question", "selections", "options", "source")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD_SELECTIONS = "defaultdict(<class 'list'>, {'United States': [0.4, 0.6]})"


@pytest.mark.parametrize(
    "row, message",
    [
        (["Q?", "{'United States': [0.4, 0.6", "['a', 'b']", "GAS"], "row 1: 'selections' is not"),
        (["Q?", GOOD_SELECTIONS, "a, b", "GAS"], "row 1: 'options' is not a Python list"),
        (["Q?", "defaultdict(<class 'list'>, {'United States': [0.4]})", "['a', 'b']", "GAS"], "has 1 shares for 2"),
        (["Q?", "{'United States': ['x', 0.6]}", "['a', 'b']", "GAS"], "non-numeric share"),
        (["Q?", "{'United States': [-0.4, 0.6]}", "['a', 'b']", "GAS"], "negative share"),
        (["Q?", "[1, 2]", "['a', 'b']", "GAS"], "'selections' is not a country"),
    ],
)
def test_malformed_rows_are_reported_with_their_row(tmp_path, row, message):
    path = write_rows(tmp_path / "bad.csv", [row])
    with pytest.raises(DatasetError, match=message):
        read_questions(path)


def test_wrong_columns_and_missing_file(tmp_path):
    path = write_rows(tmp_path / "other.csv", [["x", "y"]], header=("prompt", "answer"))
    with pytest.raises(DatasetError, match="is not GlobalOpinionQA: missing column"):
        read_questions(path)
    with pytest.raises(DatasetError, match="does not exist; set dataset.path"):
        read_questions(tmp_path / "nope.csv")


def test_download_once_and_reuse(tmp_path, quirk_csv):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(quirk_csv.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{quirk_csv.name}"
    try:
        first = ensure_downloaded(url, tmp_path / "cache")
        assert first.read_bytes() == quirk_csv.read_bytes()
        with pytest.raises(DatasetError, match="could not download the dataset .* set dataset.path"):
            ensure_downloaded(url.replace(quirk_csv.name, "other.csv"), tmp_path / "cache2")
    finally:
        server.shutdown()
        server.server_close()
    assert ensure_downloaded(url, tmp_path / "cache") == first  # server gone: served from the cache
    assert list((tmp_path / "cache2").iterdir()) == []  # a failed download leaves nothing behind
