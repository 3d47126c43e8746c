"""GlobalOpinionQA: read the file, pick the paper's question subset, and give human answer distributions.

The Hugging Face file `data/global_opinions.csv` has columns `question, selections, options, source`.
`selections` is the printed text of a Python defaultdict mapping a country key to one share per option,
`options` a Python list literal. Country keys vary ('India (Current national sample)', 'China
(Non-national sample)', ...), so each country config lists the keys it accepts in order of preference.

Selection rule (yields the paper's 72 questions on the full file): a question is used when it has exactly
`n_options` options, a non-empty text, and human data for every country in `dataset.countries`.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from culturealign.errors import DatasetError
from culturealign.spec import CountrySpec

REQUIRED_COLUMNS = ("question", "selections", "options", "source")
_DEFAULTDICT_PREFIX = "defaultdict(<class 'list'>, "

csv.field_size_limit(sys.maxsize)  # the last row of the file carries 90 countries in one field


@dataclass(frozen=True)
class Question:
    id: str
    row: int  # 1-based data row in the file
    text: str
    options: tuple[str, ...]
    source: str
    selections: dict[str, tuple[float, ...]]  # dataset key -> share per option

    def country_key(self, country: CountrySpec) -> str | None:
        return next((key for key in country.keys if key in self.selections), None)

    def human_distribution(self, country: CountrySpec) -> tuple[float, ...]:
        key = self.country_key(country)
        if key is None:
            available = ", ".join(sorted(self.selections)) or "none"
            raise DatasetError(
                f"question {self.id} (row {self.row}) has no human data for {country.label} "
                f"(accepted keys: {', '.join(country.keys)}; available: {available}); "
                f"add {country.label} to dataset.countries so such questions are not selected"
            )
        shares = self.selections[key]
        total = sum(shares)
        return tuple(share / total for share in shares)


def question_id(text: str, options: Sequence[str]) -> str:
    """Stable id from the content, so the same question has the same id in any copy of the file."""
    digest = hashlib.sha1("\x1f".join([text, *options]).encode("utf-8")).hexdigest()
    return f"q{digest[:10]}"


def read_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist; set dataset.path to a GlobalOpinionQA CSV")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path} is not GlobalOpinionQA: missing column(s) {', '.join(missing)} "
                f"(expected {', '.join(REQUIRED_COLUMNS)})"
            )
        return [_parse_row(row, number, path) for number, row in enumerate(reader, start=1)]


def _parse_row(row: dict[str, str], number: int, path: Path) -> Question:
    where = f"{path.name} row {number}"
    options = _literal(row["options"], list, f"{where}: 'options' is not a Python list literal")
    selections_text = row["selections"].strip()
    if selections_text.startswith(_DEFAULTDICT_PREFIX) and selections_text.endswith(")"):
        selections_text = selections_text[len(_DEFAULTDICT_PREFIX) : -1]
    raw = _literal(selections_text, dict, f"{where}: 'selections' is not a country -> shares mapping")
    selections: dict[str, tuple[float, ...]] = {}
    for key, shares in raw.items():
        if not isinstance(shares, (list, tuple)) or len(shares) != len(options):
            raise DatasetError(
                f"{where}: country {key!r} has {len(shares) if isinstance(shares, (list, tuple)) else 'no'} "
                f"shares for {len(options)} options; fix or drop that row"
            )
        try:
            values = tuple(float(share) for share in shares)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: country {key!r} has a non-numeric share; fix or drop that row") from None
        if any(v < 0 for v in values):
            raise DatasetError(f"{where}: country {key!r} has a negative share; fix or drop that row")
        selections[str(key)] = values
    text = row["question"].strip()
    options = tuple(str(option) for option in options)
    return Question(question_id(text, options), number, text, options, row["source"], selections)


def _literal(text: str, kind: type, message: str):
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DatasetError(message) from None
    if not isinstance(value, kind):
        raise DatasetError(message)
    return value


def select_questions(
    questions: Iterable[Question], countries: Sequence[CountrySpec], n_options: int = 2, limit: int | None = None
) -> list[Question]:
    """The paper's subset: `n_options` options, a text, and human data (positive mass) for every country."""

    def usable(question: Question) -> bool:
        if len(question.options) != n_options or not question.text:
            return False
        keys = [question.country_key(country) for country in countries]
        return all(key is not None and sum(question.selections[key]) > 0 for key in keys)

    selected = [question for question in questions if usable(question)]
    return selected[:limit] if limit is not None else selected


def ensure_downloaded(url: str, cache_dir: str | Path) -> Path:
    """Download `url` once into `cache_dir` (atomically) and reuse it afterwards."""
    target = Path(cache_dir).expanduser() / Path(url.split("?")[0]).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, tempfile.NamedTemporaryFile(
            dir=target.parent, delete=False
        ) as tmp:
            shutil.copyfileobj(response, tmp)
    except OSError as error:
        raise DatasetError(
            f"could not download the dataset from {url} ({error}); set dataset.path to a local copy"
        ) from None
    os.replace(tmp.name, target)
    return target
