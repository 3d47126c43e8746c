"""Every dataset key maps to a country config (or is excluded, with a reason); per-country question sets."""

from __future__ import annotations

import pytest

from culturealign import countries
from culturealign.app.schema import conf_dir, load_country
from culturealign.dataset import read_questions
from culturealign.errors import DatasetError
from culturealign.pipeline import load_questions
from tests.helpers import make_cfg, spec_of


@pytest.fixture(scope="module")
def rows(paper_csv, quirk_csv):
    return [*read_questions(paper_csv), *read_questions(quirk_csv)]


def config_keys() -> dict[str, list[str]]:
    """Dataset key -> the country configs (conf/country/*.yaml) that accept it."""
    accepted: dict[str, list[str]] = {}
    for path in sorted((conf_dir() / "country").glob("*.yaml")):
        for key in load_country(path.stem).keys:
            accepted.setdefault(key, []).append(path.stem)
    return accepted


def test_every_key_of_the_committed_rows_has_exactly_one_country_config(rows):
    keys = {key for question in rows for key in question.selections}
    accepted = config_keys()
    unmapped = sorted(key for key in keys if key not in accepted and key not in countries.EXCLUDED)
    assert not unmapped, f"dataset keys with no conf/country file and not in EXCLUDED: {unmapped}"
    twice = {key: files for key, files in accepted.items() if len(files) > 1}
    assert not twice, f"keys accepted by several country configs: {twice}"
    assert len(keys) == 127 and len({accepted[key][0] for key in keys}) == 106


def test_the_committed_files_are_what_the_generator_gives(paper_csv, quirk_csv, capsys):
    assert countries.main(["--dataset", str(paper_csv), "--dataset", str(quirk_csv), "--check"]) == 0, capsys.readouterr().err


def test_spellings_and_samples_share_one_country_national_first():
    assert load_country("south_korea").keys == ["S. Korea", "South Korea"]
    uk = load_country("uk")
    assert (uk.label, uk.name, uk.keys) == ("UK", "the United Kingdom", ["Britain", "Great Britain"])
    assert load_country("us").name == "the United States"
    assert load_country("india").keys == [
        "India (Current national sample)", "India (Old national sample)", "India (Non-national sample)",
    ]  # fmt: skip
    assert load_country("nigeria").keys == ["Nigeria", "Nigeria (Non-national sample)"]


def test_a_key_no_rule_maps_is_a_one_line_error_naming_it():
    with pytest.raises(DatasetError) as error:
        countries.countries(["France", "Atlantis (Non-national sample)", "Atlantis"])
    assert "'Atlantis'" in str(error.value) and "EXCLUDED" in str(error.value) and "\n" not in str(error.value)
    assert [c.file for c in countries.countries(["France", "Britain"])] == ["france", "uk"]


def test_per_country_selection_asks_every_question_the_country_answered(rows, paper_csv):
    counts = countries.question_counts(rows, countries.countries(k for q in rows for k in q.selections), 2)
    kenya = spec_of(make_cfg("country=kenya", "dataset.selection=per_country", f"dataset.path={paper_csv}"), "kenya")
    assert [c.label for c in kenya.selection] == ["Kenya"]
    assert len(load_questions(kenya, paper_csv)) == counts["kenya"] == 54
    shared = spec_of(make_cfg("country=kenya", f"dataset.path={paper_csv}"), "kenya")
    with pytest.raises(DatasetError, match="no human data for Kenya"):  # the paper's 72 include questions Kenya lacks
        load_questions(shared, paper_csv)
    us = spec_of(make_cfg("dataset.selection=per_country", f"dataset.path={paper_csv}"))
    assert len(load_questions(us, paper_csv)) == counts["us"] == 72


def test_the_world_experiment_sweeps_every_country_above_the_threshold(rows):
    cfg = make_cfg("experiment=world")
    found = countries.countries(k for q in rows for k in q.selections)
    counts = countries.question_counts(rows, found, 2)
    expected = sorted(name for name, n in counts.items() if n >= countries.WORLD_MIN_QUESTIONS)
    text = (conf_dir() / "experiment" / "world.yaml").read_text(encoding="utf-8")
    listed = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("country:"))
    assert listed.split(",") == expected and len(expected) == 35
    assert cfg.dataset.selection.value == "per_country" and cfg.dataset.limit == countries.WORLD_MIN_QUESTIONS
