"""GlobalOpinionQA: read the file, pick the paper's question subset, and give human answer distributions.

The Hugging Face file `data/global_opinions.csv` has columns `question, selections, options, source`.
`selections` is the printed text of a Python defaultdict mapping a country key to one share per option,
`options` a Python list literal. Country keys vary ('India (Current national sample)', 'China
(Non-national sample)', ...), so each country config lists the keys it accepts in order of preference.

Selection rule (yields the paper's 72 questions on the full file): a question is used when it has exactly
`n_options` options, a non-empty text, and human data for every country in `dataset.countries`.

The file comes from the Hugging Face Hub at a pinned revision (`dataset_file`), through `huggingface_hub`
and its cache, honouring HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN; or from `dataset.path`. Either way its
sha256 is computed, checked against `dataset.sha256` when that is set, and reported with the run.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from culturealign.errors import DatasetError
from culturealign.spec import CountrySpec, DatasetSpec

log = logging.getLogger("culturealign")
REQUIRED_COLUMNS = ("question", "selections", "options", "source")
_DEFAULTDICT_PREFIX = "defaultdict(<class 'list'>, "

MAX_FIELD_CHARS = 1_000_000  # the longest field of the real file (90 countries' shares) is ~4,000
MAX_SHARE = 1e6  # shares are fractions (or, in some copies, percentages): anything larger is broken
_BINARY_MAGIC = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive", b"BZh": "bzip2-compressed"}


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
    _refuse_binary(path)
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:  # utf-8-sig: a byte-order mark (as some editors save) is read, not taken for part of a column name
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(
                    f"{path} is not GlobalOpinionQA: missing column(s) {', '.join(missing)} "
                    f"(expected {', '.join(REQUIRED_COLUMNS)})"
                )
            return [_parse_row(row, number, path) for number, row in enumerate(reader, start=1)]
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except csv.Error as error:
        raise DatasetError(f"{path} is not a readable CSV ({error}); give the GlobalOpinionQA CSV") from None


def _refuse_binary(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8192)
    kind = next((name for magic, name in _BINARY_MAGIC.items() if head.startswith(magic)), None)
    if kind or b"\x00" in head:
        raise DatasetError(f"{path} is {kind or 'a binary file'}, not a CSV; give the uncompressed GlobalOpinionQA CSV")


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
        if not all(math.isfinite(v) and v <= MAX_SHARE for v in values):
            raise DatasetError(f"{where}: country {key!r} has a share that is not a finite fraction; fix or drop that row")
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

    selected = unique([question for question in questions if usable(question)])
    return selected[:limit] if limit is not None else selected


def unique(questions: Sequence[Question]) -> list[Question]:
    """The first of each question (same text and options): a repeated row would share its samples' cache
    keys with the first and be scored twice. Later copies are dropped with a warning."""
    kept: dict[str, Question] = {}
    for question in questions:
        if question.id in kept:
            log.warning(f"dataset row {question.row} repeats row {kept[question.id].row} (same question and options): dropped")
        else:
            kept[question.id] = question
    return list(kept.values())


@dataclass(frozen=True)
class DatasetFile:
    """The file a job reads: where it is, its sha256, and the Hub commit it came from (None: dataset.path)."""

    path: Path
    sha256: str
    revision: str | None


_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "on", "yes", "true"}


def dataset_file(data: DatasetSpec) -> DatasetFile:
    """`dataset.path`, or the Hub file at `dataset.revision`; refused when its sha256 is not `dataset.sha256`."""
    if data.path:
        path = Path(data.path).expanduser()
        if not path.is_file():
            raise DatasetError(f"dataset file {path} does not exist; set dataset.path to a GlobalOpinionQA CSV")
        found = DatasetFile(path, file_sha256(path), None)
    else:
        if not data.pinned:
            log.warning(f"dataset.revision={data.revision} is not a commit sha: the file may change; pin a commit")
        found = download(data.repo_id, data.filename, data.revision, data.cache_dir)
    if data.sha256 and found.sha256 != data.sha256.lower():
        raise DatasetError(
            f"{found.path} has sha256 {found.sha256}, not the pinned dataset.sha256 {data.sha256}: refusing a file "
            "that differs from the one pinned; check dataset.revision / dataset.path, or update dataset.sha256"
        )
    return found


def download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None) -> DatasetFile:
    """The file from the Hub dataset `repo_id` at `revision`, through huggingface_hub's cache (once).
    HF_HUB_OFFLINE=1 uses the cache only; HF_ENDPOINT picks the Hub (or a mirror); HF_TOKEN authenticates."""
    from huggingface_hub import hf_hub_download  # imported only when the dataset is downloaded

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at huggingface_hub's import
    where = f"{repo_id}/{filename} at revision {revision}"
    try:
        local = hf_hub_download(
            repo_id, filename, repo_type="dataset", revision=revision, local_files_only=offline,
            endpoint=endpoint, cache_dir=str(Path(cache_dir).expanduser()) if cache_dir else None,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - network, HTTP, auth, offline cache miss: all mean the same here
        raise DatasetError(_download_error(where, endpoint, offline, error)) from None
    path = Path(local)
    found = DatasetFile(path, file_sha256(path), _snapshot_commit(path) or revision)
    _check_hub_hash(found)
    log.info(f"dataset {where}: commit {found.revision}, sha256 {found.sha256}")
    return found


def _download_error(where: str, endpoint: str | None, offline: bool, error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = " ".join(lines[:3])[:300] or type(error).__name__  # "404 Client Error. Revision Not Found for url: ..."
    if offline:
        return (
            f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache ({reason}); "
            "download it once with HF_HUB_OFFLINE unset, or set dataset.path to a local copy"
        )
    return (
        f"could not download {where} from {endpoint or 'the Hugging Face Hub'} ({reason}); check the network, "
        "HF_ENDPOINT and HF_TOKEN, or set dataset.path to a local copy"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _snapshot_commit(path: Path) -> str | None:
    """huggingface_hub keeps a file at `.../snapshots/<commit>/<filename>`: the commit it resolved."""
    parts = path.parts
    commits = [parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "snapshots"]
    return commits[-1] if commits and _COMMIT.fullmatch(commits[-1]) else None


def _check_hub_hash(found: DatasetFile) -> None:
    """The cache names each blob by the hash the Hub gave for it (sha256 for LFS files, the git blob sha1
    otherwise); huggingface_hub does not check the bytes against it, so a corrupted or altered cache
    entry would go unnoticed. Skipped where the cache holds copies instead of links to blobs."""
    blob = found.path.resolve()
    if blob.parent.name != "blobs":
        return
    if _SHA256.fullmatch(blob.name):
        expected, actual = blob.name, found.sha256
    elif _COMMIT.fullmatch(blob.name):
        expected, actual = blob.name, _git_blob_sha1(blob)
    else:
        return
    if actual != expected:
        raise DatasetError(
            f"{found.path} does not match the hash the Hub gave for it ({expected}); the cached copy is "
            f"corrupted or altered: delete {blob} and run again"
        )


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
