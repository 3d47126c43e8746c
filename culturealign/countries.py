"""Every country of GlobalOpinionQA as a `conf/country/<name>.yaml`, generated from the dataset's keys.

    python -m culturealign.countries                     # the pinned Hub file (or $CULTUREALIGN_DATASET)
    python -m culturealign.countries --dataset FILE.csv  # any GlobalOpinionQA CSV
    python -m culturealign.countries --check             # exit 1 if the committed files differ

A dataset key is a country name as the survey wrote it, sometimes with a sample suffix ('India (Current
national sample)', 'China (Non-national sample)'). Each key maps to one country of `COUNTRIES` by its
base name (several spellings may map to one: 'S. Korea' and 'South Korea'); a country's keys are listed
national sample first, then an old national sample, then a non-national one. A base name missing from
`COUNTRIES` and not on `EXCLUDED` stops the generator with one line naming it: add it to one of them.

The generator also writes `conf/experiment/world.yaml`: a sweep over every country with at least
`--min-questions` questions of `dataset.n_options` options in the file read (WORLD_MIN_QUESTIONS).
Hand-written country files (the paper's four) are kept as they are; the generator checks that their keys
are the ones the rules give.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from culturealign.dataset import Question, dataset_file, read_questions, select_questions
from culturealign.errors import CultureAlignError, DatasetError
from culturealign.spec import CountrySpec, DatasetSpec

# Sample suffixes, in order of preference (a national sample describes the population best).
SUFFIXES = ("", " (Current national sample)", " (Old national sample)", " (Non-national sample)")

# Base name as written in the dataset -> (label for tables, name as written in the prompt). Spellings of one
# country share the label: their keys end up in one file.
COUNTRIES: dict[str, tuple[str, str]] = {
    "Albania": ("Albania", "Albania"),
    "Andorra": ("Andorra", "Andorra"),
    "Angola": ("Angola", "Angola"),
    "Argentina": ("Argentina", "Argentina"),
    "Armenia": ("Armenia", "Armenia"),
    "Australia": ("Australia", "Australia"),
    "Austria": ("Austria", "Austria"),
    "Azerbaijan": ("Azerbaijan", "Azerbaijan"),
    "Bangladesh": ("Bangladesh", "Bangladesh"),
    "Belarus": ("Belarus", "Belarus"),
    "Bolivia": ("Bolivia", "Bolivia"),
    "Bosnia Herzegovina": ("Bosnia and Herzegovina", "Bosnia and Herzegovina"),
    "Brazil": ("Brazil", "Brazil"),
    "Britain": ("UK", "the United Kingdom"),  # Pew's spelling
    "Great Britain": ("UK", "the United Kingdom"),  # the World Values Survey's
    "Bulgaria": ("Bulgaria", "Bulgaria"),
    "Burkina Faso": ("Burkina Faso", "Burkina Faso"),
    "Canada": ("Canada", "Canada"),
    "Chile": ("Chile", "Chile"),
    "China": ("China", "China"),
    "Colombia": ("Colombia", "Colombia"),
    "Croatia": ("Croatia", "Croatia"),
    "Cyprus": ("Cyprus", "Cyprus"),
    "Czech Rep.": ("Czechia", "the Czech Republic"),
    "Czechia": ("Czechia", "the Czech Republic"),
    "Denmark": ("Denmark", "Denmark"),
    "Ecuador": ("Ecuador", "Ecuador"),
    "Egypt": ("Egypt", "Egypt"),
    "El Salvador": ("El Salvador", "El Salvador"),
    "Estonia": ("Estonia", "Estonia"),
    "Ethiopia": ("Ethiopia", "Ethiopia"),
    "Finland": ("Finland", "Finland"),
    "France": ("France", "France"),
    "Georgia": ("Georgia", "Georgia"),
    "Germany": ("Germany", "Germany"),
    "Ghana": ("Ghana", "Ghana"),
    "Greece": ("Greece", "Greece"),
    "Guatemala": ("Guatemala", "Guatemala"),
    "Honduras": ("Honduras", "Honduras"),
    "Hong Kong SAR": ("Hong Kong", "Hong Kong"),
    "Hungary": ("Hungary", "Hungary"),
    "Iceland": ("Iceland", "Iceland"),
    "India": ("India", "India"),
    "Indonesia": ("Indonesia", "Indonesia"),
    "Iran": ("Iran", "Iran"),
    "Iraq": ("Iraq", "Iraq"),
    "Israel": ("Israel", "Israel"),
    "Italy": ("Italy", "Italy"),
    "Ivory Coast": ("Ivory Coast", "Ivory Coast"),
    "Japan": ("Japan", "Japan"),
    "Jordan": ("Jordan", "Jordan"),
    "Kazakhstan": ("Kazakhstan", "Kazakhstan"),
    "Kenya": ("Kenya", "Kenya"),
    "Kuwait": ("Kuwait", "Kuwait"),
    "Kyrgyzstan": ("Kyrgyzstan", "Kyrgyzstan"),
    "Latvia": ("Latvia", "Latvia"),
    "Lebanon": ("Lebanon", "Lebanon"),
    "Libya": ("Libya", "Libya"),
    "Lithuania": ("Lithuania", "Lithuania"),
    "Macau SAR": ("Macau", "Macau"),
    "Malaysia": ("Malaysia", "Malaysia"),
    "Maldives": ("Maldives", "the Maldives"),
    "Mali": ("Mali", "Mali"),
    "Mexico": ("Mexico", "Mexico"),
    "Mongolia": ("Mongolia", "Mongolia"),
    "Montenegro": ("Montenegro", "Montenegro"),
    "Morocco": ("Morocco", "Morocco"),
    "Myanmar": ("Myanmar", "Myanmar"),
    "Netherlands": ("Netherlands", "the Netherlands"),
    "New Zealand": ("New Zealand", "New Zealand"),
    "Nicaragua": ("Nicaragua", "Nicaragua"),
    "Nigeria": ("Nigeria", "Nigeria"),
    "North Macedonia": ("North Macedonia", "North Macedonia"),
    "Northern Ireland": ("Northern Ireland", "Northern Ireland"),  # its own sample, not merged into the UK's
    "Norway": ("Norway", "Norway"),
    "Pakistan": ("Pakistan", "Pakistan"),
    "Palest. ter.": ("Palestinian territories", "the Palestinian territories"),
    "Peru": ("Peru", "Peru"),
    "Philippines": ("Philippines", "the Philippines"),
    "Poland": ("Poland", "Poland"),
    "Portugal": ("Portugal", "Portugal"),
    "Puerto Rico": ("Puerto Rico", "Puerto Rico"),
    "Romania": ("Romania", "Romania"),
    "Russia": ("Russia", "Russia"),
    "S. Africa": ("South Africa", "South Africa"),
    "S. Korea": ("South Korea", "South Korea"),
    "South Korea": ("South Korea", "South Korea"),
    "Senegal": ("Senegal", "Senegal"),
    "Serbia": ("Serbia", "Serbia"),
    "Singapore": ("Singapore", "Singapore"),
    "Slovakia": ("Slovakia", "Slovakia"),
    "Slovenia": ("Slovenia", "Slovenia"),
    "Spain": ("Spain", "Spain"),
    "Sweden": ("Sweden", "Sweden"),
    "Switzerland": ("Switzerland", "Switzerland"),
    "Taiwan ROC": ("Taiwan", "Taiwan"),
    "Tajikistan": ("Tajikistan", "Tajikistan"),
    "Tanzania": ("Tanzania", "Tanzania"),
    "Thailand": ("Thailand", "Thailand"),
    "Tunisia": ("Tunisia", "Tunisia"),
    "Turkey": ("Turkey", "Turkey"),
    "Uganda": ("Uganda", "Uganda"),
    "Ukraine": ("Ukraine", "Ukraine"),
    "United States": ("US", "the United States"),
    "Uruguay": ("Uruguay", "Uruguay"),
    "Uzbekistan": ("Uzbekistan", "Uzbekistan"),
    "Venezuela": ("Venezuela", "Venezuela"),
    "Vietnam": ("Vietnam", "Vietnam"),
    "Zimbabwe": ("Zimbabwe", "Zimbabwe"),
}

# Dataset keys deliberately given no country, each with the reason. Empty: every key of the rows checked so
# far (tests/data) is a country or territory with its own sample. A key goes here, not into COUNTRIES, when it
# names no population a prompt can address (a region, a pooled sample).
EXCLUDED: dict[str, str] = {}

# Config file names of the hand-written files (kept as they are); the others are the label in snake case.
HAND_WRITTEN = {"US": "us", "China": "china", "Japan": "japan", "India": "india"}
WORLD_MIN_QUESTIONS = 30  # experiment=world sweeps the countries with at least this many questions
GENERATED = "# Generated by `python -m culturealign.countries` from the dataset's keys: edit COUNTRIES there, not here."


@dataclass(frozen=True)
class Country:
    file: str  # config name: conf/country/<file>.yaml
    spec: CountrySpec


def split_key(key: str) -> tuple[str, int] | None:
    """'India (Old national sample)' -> ('India', 2): the base name and the suffix's rank of preference."""
    for rank, suffix in sorted(enumerate(SUFFIXES), key=lambda pair: -len(pair[1])):
        if key.endswith(suffix) and (suffix or "(" not in key):
            return key[: len(key) - len(suffix)], rank
    return None


def country_of(key: str) -> tuple[str, str] | None:
    """The (label, prompt name) of a dataset key, or None when no rule maps it."""
    parts = split_key(key)
    return COUNTRIES.get(parts[0]) if parts else None


def file_name(label: str) -> str:
    return HAND_WRITTEN.get(label) or re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def countries(keys) -> list[Country]:
    """Every country the keys map to, sorted by label, with its keys in order of preference. Raises a one-line
    DatasetError naming the keys that map to nothing and are not in EXCLUDED."""
    keys = sorted(set(keys))
    unmapped = [key for key in keys if country_of(key) is None and key not in EXCLUDED]
    if unmapped:
        raise DatasetError(
            f"dataset key(s) {', '.join(map(repr, unmapped))} map to no country: add the base name to "
            "COUNTRIES (or the key to EXCLUDED, with the reason) in culturealign/countries.py"
        )
    found: dict[str, tuple[str, list[tuple[int, str]]]] = {}
    for key in keys:
        if key in EXCLUDED:
            continue
        label, name = country_of(key)
        found.setdefault(label, (name, []))[1].append((split_key(key)[1], key))
    result = []
    for label, (name, ranked) in sorted(found.items()):
        spec = CountrySpec(label=label, name=name, keys=[key for _, key in sorted(ranked)])
        result.append(Country(file_name(label), spec))
    return result


def question_counts(questions: list[Question], found: list[Country], n_options: int) -> dict[str, int]:
    """Config name -> number of questions with `n_options` options that country answered (per_country)."""
    return {c.file: len(select_questions(questions, [c.spec], n_options)) for c in found}


def country_yaml(spec: CountrySpec) -> str:
    keys = ", ".join(_yaml_string(key) for key in spec.keys)
    return (
        f"{GENERATED}\nlabel: {_yaml_string(spec.label)}\nname: {_yaml_string(spec.name)}   # as written in the prompt\n"
        f"keys: [{keys}]   # dataset keys, in order of preference\n"
    )


def _yaml_string(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z][A-Za-z .\-()]*[A-Za-z.)]", text) and ": " not in text else f'"{text}"'


def world_yaml(counts: dict[str, int], min_questions: int, source: str) -> str:
    swept = [name for name, count in sorted(counts.items()) if count >= min_questions]
    if not swept:
        raise DatasetError(f"no country has {min_questions} questions in {source}; lower --min-questions")
    left = sorted(name for name, count in counts.items() if count < min_questions)
    counted = f"Counted on {source}: {len(swept)} of {len(counts)} countries; fewer questions: {', '.join(left) or 'none'}."
    return f"""# @package _global_
# Every country with at least {min_questions} two-option questions (dataset.selection=per_country), ranked by the
# world report. {GENERATED[2:]}
{textwrap.fill(counted, 110, initial_indent="# ", subsequent_indent="#   ")}
# Run with: culturealign --multirun experiment=world   (README: "The whole world")
defaults:
  - override /model: gpt-4o-mini

samples: 20
dataset:
  selection: per_country   # each country's own questions
  limit: {min_questions}   # the first {min_questions} of them: every country contributes the same number

hydra:
  sweeper:
    params:
      country: {','.join(swept)}
      style: classification
"""


def generate(questions: list[Question], conf: Path, min_questions: int, source: str, n_options: int = 2) -> dict[Path, str]:
    """Path -> content of every generated file (hand-written country files are checked, not rewritten)."""
    found = countries(key for question in questions for key in question.selections)
    files: dict[Path, str] = {}
    for country in found:
        if country.file in HAND_WRITTEN.values():
            _check_hand_written(conf / "country" / f"{country.file}.yaml", country.spec)
        else:
            files[conf / "country" / f"{country.file}.yaml"] = country_yaml(country.spec)
    counts = question_counts(questions, found, n_options)
    files[conf / "experiment" / "world.yaml"] = world_yaml(counts, min_questions, source)
    return files


def _check_hand_written(path: Path, spec: CountrySpec) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    keys = re.search(r"^keys: \[(.*)\]", text, re.MULTILINE)
    listed = [key.strip() for key in keys.group(1).split(",")] if keys else []
    if not set(spec.keys) <= set(listed):
        raise DatasetError(f"{path} lists keys {listed}, the dataset has {spec.keys} for {spec.label}: add them there")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m culturealign.countries", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, action="append", default=None,
                        help="a GlobalOpinionQA CSV, repeatable (default: the pinned Hub file)")  # fmt: skip
    parser.add_argument("--conf", type=Path, default=Path(__file__).resolve().parent.parent / "conf",
                        help="the config folder to write into (default: the repository's conf/)")  # fmt: skip
    parser.add_argument("--min-questions", type=int, default=WORLD_MIN_QUESTIONS,
                        help="questions a country needs to be in experiment=world (default: %(default)s)")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)
    try:
        paths = args.dataset or [os.environ.get("CULTUREALIGN_DATASET")]
        found = [dataset_file(DatasetSpec(path=str(path) if path else None)) for path in paths]
        source = " + ".join(f.path.name + (f" at commit {f.revision}" if f.revision else "") for f in found)
        questions = [question for f in found for question in read_questions(f.path)]
        files = generate(questions, args.conf, args.min_questions, source)
    except CultureAlignError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    changed = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for path in changed:
            print(f"{path} differs from what the dataset gives", file=sys.stderr)
        return 1 if changed else 0
    for path in changed:
        path.write_text(files[path], encoding="utf-8")
    print(f"{len(files) - 1} generated country files and experiment=world in {args.conf}: {len(changed)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
