"""Parsing and selecting GlobalOpinionQA on the real rows; downloading it from a local stand-in for the Hub."""

import csv
import hashlib

import pytest

from culturealign.app.schema import load_country
from culturealign.dataset import DatasetFile, dataset_file, read_questions, select_questions
from culturealign.errors import DatasetError
from culturealign.spec import DatasetSpec
from tests.fake_hub import FakeHub, HubRepo

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


COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO, FILE = "Anthropic/llm_global_opinions", "data/global_opinions.csv"


@pytest.fixture
def hub_env(monkeypatch):
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CULTUREALIGN_DATASET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no registry fetch into the real HF_HOME
    return monkeypatch


def hub_with(content: bytes, **options) -> FakeHub:
    return FakeHub({REPO: HubRepo({(COMMIT, FILE): content}, {"main": COMMIT}, **options)}, token=options.pop("token", None))


def spec(cache, revision=COMMIT, sha256=None, path=None) -> DatasetSpec:
    return DatasetSpec(path=path, revision=revision, sha256=sha256, cache_dir=str(cache), countries=["us"])


def test_hub_download_at_a_pinned_commit_is_checked_cached_and_works_offline(tmp_path, quirk_csv, hub_env):
    content = quirk_csv.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    hub = FakeHub({REPO: HubRepo({(COMMIT, FILE): content})}, token="hf_test_token")
    with hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(DatasetError, match=r"^could not download .* at revision 0123.*check the network, HF_ENDPOINT and HF_TOKEN"):
            dataset_file(spec(tmp_path / "hf"))  # the Hub says 401 without the token
        hub_env.setenv("HF_TOKEN", "hf_test_token")
        found = dataset_file(spec(tmp_path / "hf", sha256=digest.upper()))
    assert found.path.read_bytes() == content
    assert (found.sha256, found.revision) == (digest, COMMIT)
    resolve = f"/datasets/{REPO}/resolve/{COMMIT}/{FILE}"
    assert {(method, path) for method, path, _ in hub.requests[1:]} == {("HEAD", resolve), ("GET", resolve)}
    assert hub.requests[-1][2] == "Bearer hf_test_token"
    hub_env.setenv("HF_HUB_OFFLINE", "1")  # the Hub is gone: the cache serves the pinned file
    assert dataset_file(spec(tmp_path / "hf", sha256=digest)) == found
    with pytest.raises(DatasetError, match="^HF_HUB_OFFLINE is set and .* is not in the Hugging Face cache .*set dataset.path"):
        dataset_file(spec(tmp_path / "empty"))


def test_a_branch_resolves_to_the_commit_it_points_at(tmp_path, quirk_csv, hub_env):
    with hub_with(quirk_csv.read_bytes(), lfs=False) as hub:  # ETag: git blob sha1, as for a non-LFS file
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        found = dataset_file(spec(tmp_path / "hf", revision="main"))
        assert found.revision == COMMIT and found.path.read_bytes() == quirk_csv.read_bytes()
        with pytest.raises(DatasetError, match=r"^could not download .* at revision v9 .*Invalid rev id"):
            dataset_file(spec(tmp_path / "hf", revision="v9"))


def test_a_file_with_another_sha256_is_refused(tmp_path, quirk_csv, hub_env):
    with hub_with(quirk_csv.read_bytes()) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(DatasetError, match=r"^\S+global_opinions.csv has sha256 [0-9a-f]{64}, not the pinned dataset.sha256 0{64}: refusing"):
            dataset_file(spec(tmp_path / "hf", sha256="0" * 64))
    with pytest.raises(DatasetError, match="not the pinned dataset.sha256"):
        dataset_file(spec(tmp_path, path=str(quirk_csv), sha256="1" * 64))


def test_content_that_does_not_match_the_hubs_hash_is_refused(tmp_path, quirk_csv, hub_env):
    with hub_with(quirk_csv.read_bytes(), etag_override=hashlib.sha256(b"other").hexdigest()) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(DatasetError, match="does not match the hash the Hub gave for it .*corrupted or altered: delete"):
            dataset_file(spec(tmp_path / "hf"))


def test_a_local_path_is_read_as_is_and_its_digest_reported(tmp_path, quirk_csv, hub_env):
    found = dataset_file(spec(tmp_path, path=str(quirk_csv)))
    assert found == DatasetFile(quirk_csv, hashlib.sha256(quirk_csv.read_bytes()).hexdigest(), None)
    with pytest.raises(DatasetError, match="does not exist; set dataset.path"):
        dataset_file(spec(tmp_path, path=str(tmp_path / "nope.csv")))


def test_prepared_job_names_the_file_it_read(tmp_path, paper_csv, hub_env):
    from culturealign import pipeline
    from culturealign.app.record import job_params
    from tests.helpers import make_cfg, spec_of

    fake_model = ["model=openai-compatible", "model.base_url=http://127.0.0.1:9/v1", "dataset.limit=2"]
    with hub_with(paper_csv.read_bytes()) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        job = pipeline.prepare(spec_of(make_cfg(*fake_model, f"dataset.cache_dir={tmp_path}", f"dataset.revision={COMMIT}")))
    params = job_params(job.spec)
    assert params["dataset.revision"] == COMMIT and len(job.questions) == 2
    assert params["dataset.sha256"] == hashlib.sha256(paper_csv.read_bytes()).hexdigest()
    assert params["bootstrap.kind"] == "questions_and_answers"
    local = job_params(pipeline.prepare(spec_of(make_cfg(*fake_model, f"dataset.path={paper_csv}"))).spec)
    assert (local["dataset.revision"], local["dataset.sha256"]) == ("null", params["dataset.sha256"])


def test_the_default_dataset_is_pinned_to_a_commit():
    from tests.helpers import make_cfg

    data = make_cfg().dataset
    assert (data.repo_id, data.filename) == (REPO, FILE)
    assert len(data.revision) == 40 and int(data.revision, 16) >= 0
